#!/usr/bin/env bash
# Host packages needed by tests/hosts/testhosts.sh and tests/roles/run.sh (Debian/Ubuntu, as root).
# Idempotent: installs only what is missing.
set -euo pipefail
pkgs=(debootstrap systemd-container iptables iproute2 zstd openssl openssh-client
      python3 curl ca-certificates util-linux procps)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
echo "install-deps: ok (${#missing[@]} installed)"
