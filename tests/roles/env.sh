#!/usr/bin/env bash
# Test environment for the Bacalhau roles: N test hosts (tests/hosts/testhosts.sh) and the
# stand-in release (tests/standin) served on the bridge's controller side, 10.213.S.1:PORT, where
# the nodes download it themselves (bacalhau_node_release_source node) and the controller too
# (release_source controller).
#   tests/roles/env.sh up N     bring up testhost1..N, build + serve the stand-in release
#   tests/roles/env.sh down     stop the release server and the hosts
# Writes $BACALHAU_TESTHOSTS_STATE/inventory.yml and $BACALHAU_ROLES_TEST_DIR/vars.yml
# (release URL, test public key) for the playbooks. The release server's tree:
#   good/stable/<tag>/   the signed release, real size, where Bacalhau's publish workflow puts it
#                        (.github/workflows/_s3_publish.yml): vars.yml's URL is .../good
#   flat/                the same files (hard links), flat, as install.sh reads them
#   bad/stable/<tag>/    archives changed after signing, for <tag> and v1.9.2 (small size)
# BACALHAU_STANDIN_RELEASE_SIZE=small builds the good release without its padding (tens of kB).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
export BACALHAU_TESTHOSTS_STATE=${BACALHAU_TESTHOSTS_STATE:-/tmp/bacalhau-testhosts}
DIR=${BACALHAU_ROLES_TEST_DIR:-/tmp/bacalhau-roles-test}
PORT=${BACALHAU_STANDIN_PORT:-18799}
TAG=${BACALHAU_STANDIN_TAG:-v1.9.3}
SIZE=${BACALHAU_STANDIN_RELEASE_SIZE:-real}
PY=${PYTHON:-python3}
# the bridge's address on this machine (tests/hosts/testhosts.sh: bacbrS = 10.213.S.1/24)
ADDR=10.213.${BACALHAU_TESTHOSTS_SUBNET:-7}.1

release_up() {
  mkdir -p "$DIR"
  local good=$DIR/release/good/stable/$TAG
  [[ $TAG =~ ^v[0-9]+\.[0-9]+\.[0-9]+$ ]] || good=$DIR/release/good/pre/$TAG
  if [[ ! -f $good/bacalhau_${TAG}_linux_amd64.tar.gz || $(cat "$DIR/release/size" 2>/dev/null) != "$SIZE" ]]; then
    rm -rf "$DIR/release"
    "$PY" "$ROOT/tests/standin/build_release.py" --tag "$TAG" --out "$DIR/release/good" --keydir "$DIR/keys" \
      --size "$SIZE" >/dev/null
    mkdir -p "$DIR/release/flat"
    ln "$good"/* "$DIR/release/flat/"
    for tag in "$TAG" v1.9.2; do
      "$PY" "$ROOT/tests/standin/build_release.py" --tag "$tag" --out "$DIR/release/bad" --keydir "$DIR/keys" \
        --tamper --size small >/dev/null
    done
    echo "$SIZE" >"$DIR/release/size"
  fi
  if ! { [[ -f $DIR/http.pid ]] && kill -0 "$(cat "$DIR/http.pid")" 2>/dev/null; }; then
    # another server on the port would answer in ours' stead, with other files (or none)
    if (exec 3<>"/dev/tcp/$ADDR/$PORT") 2>/dev/null; then
      echo "tests/roles/env.sh: $ADDR:$PORT is in use by another process; stop it, or set BACALHAU_STANDIN_PORT" >&2
      exit 1
    fi
    setsid "$PY" -m http.server --bind "$ADDR" --directory "$DIR/release" "$PORT" >"$DIR/http.log" 2>&1 </dev/null &
    echo $! >"$DIR/http.pid"
    for _ in $(seq 1 50); do
      curl -fsS -o /dev/null "http://$ADDR:$PORT/flat/test-release-public.pem" 2>/dev/null && break
      sleep 0.1
    done
    if ! kill -0 "$(cat "$DIR/http.pid")" 2>/dev/null; then
      echo "tests/roles/env.sh: the release server did not start on $ADDR:$PORT:" >&2
      cat "$DIR/http.log" >&2
      exit 1
    fi
  fi
  {
    echo "# Written by tests/roles/env.sh: the stand-in release (tests only)."
    echo "bacalhau_node_version: $TAG"
    echo "bacalhau_node_release_url: http://$ADDR:$PORT/good"
    echo "bacalhau_node_cache_dir: $DIR/cache"
    echo "bacalhau_node_release_pubkey: |"
    sed 's/^/  /' "$DIR/keys/test-release-public.pem"
  } >"$DIR/vars.yml"
}

case ${1:-} in
  up)
    # the hosts first: the release server listens on their bridge, which testhosts.sh makes
    "$ROOT/tests/hosts/testhosts.sh" up "${2:-3}"
    release_up
    ;;
  down)
    if [[ -f $DIR/http.pid ]]; then kill "$(cat "$DIR/http.pid")" 2>/dev/null || true; fi
    "$ROOT/tests/hosts/testhosts.sh" down
    rm -rf "$DIR"
    ;;
  *) echo "usage: $0 {up N|down}" >&2; exit 2 ;;
esac
