#!/usr/bin/env bash
# Host packages needed by tests/hosts/testhosts.sh and tests/roles/run.sh, and Java for ansible-rulebook
# (Debian/Ubuntu, as root).
# Idempotent: installs only what is missing. docker-registry is the binary testhosts.sh runs for each
# environment's registry; the package's own system service (all addresses, port 5000) is not
# needed, so when this script installs the package it stops and disables that service.
set -euo pipefail
pkgs=(debootstrap systemd-container iptables iproute2 zstd openssl openssh-client
      python3 curl ca-certificates util-linux procps docker-registry
      openjdk-17-jre-headless)  # Java 17: ansible-rulebook's engine (the autoheal rulebook's tests)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
  if [[ " ${missing[*]} " == *" docker-registry "* ]] && [[ -d /run/systemd/system ]]; then
    systemctl disable --now docker-registry.service >/dev/null 2>&1 || true
  fi
fi
echo "install-deps: ok (${#missing[@]} installed)"
