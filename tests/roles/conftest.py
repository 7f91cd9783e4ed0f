"""Fixtures for the roles' end-to-end tests on real test hosts (see tests/roles/run.sh)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
STATE = Path(os.environ.get("BACALHAU_TESTHOSTS_STATE", "/tmp/bacalhau-testhosts"))
TEST_DIR = Path(os.environ.get("BACALHAU_ROLES_TEST_DIR", "/tmp/bacalhau-roles-test"))
VENV_BIN = ROOT / ".venv" / "bin"
# 10.213.<SUBNET>.0/24: tests/hosts/testhosts.sh's BACALHAU_TESTHOSTS_SUBNET
NET = f"10.213.{os.environ.get('BACALHAU_TESTHOSTS_SUBNET', '7')}"



class Env:
    def __init__(self) -> None:
        self.inventory = STATE / "inventory.yml"
        self.vars = TEST_DIR / "vars.yml"
        self.token_file = TEST_DIR / "auth-token"

    def playbook(self, name: str, *extra: str, timeout: int = 600) -> subprocess.CompletedProcess:
        exe = VENV_BIN / "ansible-playbook"
        cmd = [str(exe if exe.exists() else "ansible-playbook"), "-i", str(self.inventory),
               "-e", f"@{self.vars}", "-e", f"bacalhau_orchestrator_auth_token_file={self.token_file}",
               str(ROOT / "tests" / "roles" / "playbooks" / name), *extra]
        env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_FORCE_COLOR="0",
                   ANSIBLE_NOCOLOR="1")
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
        proc.output = proc.stdout + proc.stderr  # type: ignore[attr-defined]
        return proc

    @staticmethod
    def ip(host: str) -> str:
        """testhostI's address, 10.213.<SUBNET>.(10+I)."""
        return f"{NET}.{10 + int(host.removeprefix('testhost'))}"

    def ssh(self, host: str, command: str) -> str:
        ip = self.ip(host)
        return subprocess.run(
            ["ssh", "-n", "-i", str(STATE / "id_ed25519"), "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
             "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", f"ubuntu@{ip}", command],
            check=True, capture_output=True, text=True, timeout=60).stdout

    def nodes(self) -> list[dict]:
        return json.loads(self.ssh("testhost1", "bacalhau node list --output json"))


@pytest.fixture(scope="session")
def env():
    if os.environ.get("BACALHAU_ROLES_E2E") != "1":
        pytest.skip("end-to-end role tests bring up test hosts: run tests/roles/run.sh (make test-roles)")
    if os.geteuid() != 0:
        pytest.skip("the test hosts need root")
    subprocess.run([str(ROOT / "tests" / "roles" / "env.sh"), "up", "3"], check=True, timeout=900)
    try:
        yield Env()
    finally:
        subprocess.run([str(ROOT / "tests" / "roles" / "env.sh"), "down"], check=False, timeout=300)
