#!/usr/bin/env bash
# `make test-roles`: the Bacalhau roles on real Linux test hosts with the stand-in release.
#   1. molecule test for each role (create, converge, idempotence, verify, destroy)
#   2. pytest tests/roles: an orchestrator + two compute nodes connect, a second converge changes
#      nothing, a wrong token / an unreachable orchestrator / a bad signature fail clearly.
# Needs root (network namespaces, systemd-nspawn); installs its host packages with
# tests/hosts/install-deps.sh. The first run builds the cached rootfs (about a minute).
# Ends with a pytest-style "N passed, N failed" line; exits non-zero on any failure.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT" || exit 1
export PATH="$ROOT/.venv/bin:$PATH"
export ANSIBLE_CONFIG="$ROOT/ansible.cfg" ANSIBLE_FORCE_COLOR=0 NO_COLOR=1 PY_COLORS=0
export BACALHAU_TESTHOSTS_STATE=${BACALHAU_TESTHOSTS_STATE:-/tmp/bacalhau-testhosts}
export BACALHAU_ROLES_TEST_DIR=${BACALHAU_ROLES_TEST_DIR:-/tmp/bacalhau-roles-test}
export BACALHAU_ROLES_E2E=1
LOGS=${BACALHAU_ROLES_LOGS:-$ROOT/build/test-roles}
read -r -a ROLES <<<"${BACALHAU_ROLES:-bacalhau_node bacalhau_orchestrator bacalhau_compute}"

if [[ $(id -u) != 0 ]]; then
  echo "test-roles: needs root (network namespaces and systemd-nspawn)" >&2
  echo "0 passed, 1 failed"
  exit 1
fi

cleanup() { tests/roles/env.sh down >/dev/null 2>&1 || true; }
trap cleanup EXIT
trap 'exit 130' INT TERM

rm -rf "$LOGS" && mkdir -p "$LOGS"
passed=0 failed=0 failures=()
t_all=$SECONDS

tests/hosts/install-deps.sh || { echo "test-roles: tests/hosts/install-deps.sh failed"; echo "0 passed, 1 failed"; exit 1; }
t=$SECONDS
if tests/hosts/testhosts.sh build >"$LOGS/rootfs.log" 2>&1; then
  echo "test-roles: test-host rootfs ready ($((SECONDS - t)) s)"
else
  cat "$LOGS/rootfs.log"; echo "0 passed, 1 failed"; exit 1
fi
cleanup  # leftovers of an interrupted run

for role in "${ROLES[@]}"; do
  t=$SECONDS
  if (cd "roles/$role" && molecule test) >"$LOGS/molecule-$role.log" 2>&1; then
    passed=$((passed + 1)); echo "PASSED molecule $role ($((SECONDS - t)) s)"
  else
    failed=$((failed + 1)); failures+=("molecule $role")
    echo "FAILED molecule $role ($((SECONDS - t)) s); last lines of $LOGS/molecule-$role.log:"
    tail -40 "$LOGS/molecule-$role.log" | sed 's/^/    /'
  fi
  cleanup
done

t=$SECONDS
pytest -p no:cacheprovider -q -rfE --junitxml="$LOGS/pytest.xml" tests/roles 2>&1 | tee "$LOGS/pytest.log"
rc=${PIPESTATUS[0]}
p=$(grep -oE '[0-9]+ passed' "$LOGS/pytest.log" | tail -1 | cut -d' ' -f1)
f=$(grep -oE '[0-9]+ (failed|error)' "$LOGS/pytest.log" | awk '{s+=$1} END {print s+0}')
passed=$((passed + ${p:-0})); failed=$((failed + ${f:-0}))
if [[ $rc != 0 && ${f:-0} == 0 ]]; then failed=$((failed + 1)); failures+=("pytest tests/roles (exit $rc)"); fi
((${f:-0})) && failures+=("pytest tests/roles: ${f} failed")
echo "test-roles: pytest tests/roles took $((SECONDS - t)) s"

echo "==================== test-roles summary ($((SECONDS - t_all)) s) ===================="
for x in "${failures[@]}"; do echo "FAILED $x"; done
echo "$passed passed, $failed failed"
((failed == 0))
