#!/usr/bin/env bash
# Test environment for the Bacalhau roles: N test hosts (tests/hosts/testhosts.sh) and the
# stand-in release (tests/standin) served on loopback for the controller to download.
#   tests/roles/env.sh up N     build + serve the stand-in release, bring up testhost1..N
#   tests/roles/env.sh down     stop the release server and the hosts
# Writes $BACALHAU_TESTHOSTS_STATE/inventory.yml and $BACALHAU_ROLES_TEST_DIR/vars.yml
# (release URL, test public key) for the playbooks.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
export BACALHAU_TESTHOSTS_STATE=${BACALHAU_TESTHOSTS_STATE:-/tmp/bacalhau-testhosts}
DIR=${BACALHAU_ROLES_TEST_DIR:-/tmp/bacalhau-roles-test}
PORT=${BACALHAU_STANDIN_PORT:-18799}
TAG=${BACALHAU_STANDIN_TAG:-v1.9.3}
PY=${PYTHON:-python3}

release_up() {
  mkdir -p "$DIR"
  "$PY" "$ROOT/tests/standin/build_release.py" --tag "$TAG" --out "$DIR/release/good" --keydir "$DIR/keys" >/dev/null
  "$PY" "$ROOT/tests/standin/build_release.py" --tag "$TAG" --out "$DIR/release/bad" --keydir "$DIR/keys" --tamper >/dev/null
  if ! { [[ -f $DIR/http.pid ]] && kill -0 "$(cat "$DIR/http.pid")" 2>/dev/null; }; then
    setsid "$PY" -m http.server --bind 127.0.0.1 --directory "$DIR/release" "$PORT" >"$DIR/http.log" 2>&1 </dev/null &
    echo $! >"$DIR/http.pid"
    for _ in $(seq 1 50); do
      curl -fsS -o /dev/null "http://127.0.0.1:$PORT/good/test-release-public.pem" 2>/dev/null && break
      sleep 0.1
    done
  fi
  {
    echo "# Written by tests/roles/env.sh: the stand-in release (tests only)."
    echo "bacalhau_node_version: $TAG"
    echo "bacalhau_node_release_url: http://127.0.0.1:$PORT/good"
    echo "bacalhau_node_cache_dir: $DIR/cache"
    echo "bacalhau_node_release_pubkey: |"
    sed 's/^/  /' "$DIR/keys/test-release-public.pem"
  } >"$DIR/vars.yml"
}

case ${1:-} in
  up)
    release_up
    "$ROOT/tests/hosts/testhosts.sh" up "${2:-3}"
    ;;
  down)
    if [[ -f $DIR/http.pid ]]; then kill "$(cat "$DIR/http.pid")" 2>/dev/null || true; fi
    "$ROOT/tests/hosts/testhosts.sh" down
    rm -rf "$DIR"
    ;;
  *) echo "usage: $0 {up N|down}" >&2; exit 2 ;;
esac
