"""Fixtures shared by every test: the offline AWS world and ways to run our modules.

* ``emulator`` (session): one moto-based emulator process on loopback.
* ``aws``: the emulator, reset, with this process's environment pointed at it
  (``AWS_ENDPOINT_URL``/``AWS_URL``, fake credentials, no profiles). When the test ends,
  every API action that our modules and playbooks (this collection's clients, and
  amazon.aws's in our playbooks) called must be allowed by ``docs/iam-policy.json``: the
  policy users are told to give is checked by every test.
* ``run_module``: run one of our modules in-process, as Ansible would, and get its
  result dict (failed or not). Fast enough to call hundreds of times. ``run_local_module``
  is the same without the emulator, for modules that call no AWS API.
* ``playbook``: run ``ansible-playbook`` from the repository root against the emulator, with
  ``HOME`` a directory of the test's own (``playbook.home``), so that what the playbooks keep
  on the controller (``~/.config/bacalhau.aws_spot/<cluster>/``) is the test's alone.
"""
from __future__ import annotations

import contextlib
import importlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
COLLECTIONS = REPO / ".collections"
# our collection (via make setup's symlink) beside amazon.aws from the venv; both are
# namespace packages under ansible_collections, so Python merges them.
if str(COLLECTIONS) not in sys.path:
    sys.path.insert(0, str(COLLECTIONS))

from tests.emulator import Emulator  # noqa: E402
from tests.emulator.client import SCRUBBED_VARS  # noqa: E402
from tests.policy import actions_not_in_policy  # noqa: E402


@pytest.fixture(scope="session")
def emulator():
    emu = Emulator.start()
    try:
        yield emu
    finally:
        emu.stop()


@pytest.fixture
def aws(emulator, monkeypatch):
    emulator.reset()
    for var in SCRUBBED_VARS:
        monkeypatch.delenv(var, raising=False)
    for key, value in emulator.env.items():
        monkeypatch.setenv(key, value)
    yield emulator
    emulator.clear_faults()
    missing = actions_not_in_policy(emulator.calls()["log"])
    assert not missing, f"docs/iam-policy.json does not allow {sorted(missing)}, which the test's run called"


class ModuleResult(dict):
    @property
    def failed(self) -> bool:
        return bool(self.get("failed"))

    @property
    def changed(self) -> bool:
        return bool(self.get("changed"))


def _run_module(name: str, args: dict[str, Any], check_mode: bool = False, diff: bool = False) -> ModuleResult:
    from ansible.module_utils import basic

    module = importlib.import_module(f"ansible_collections.bacalhau.aws_spot.plugins.modules.{name}")
    full = dict(args)
    full["_ansible_check_mode"] = check_mode
    full["_ansible_diff"] = diff
    full.setdefault("_ansible_remote_tmp", "/tmp")
    basic._ANSIBLE_ARGS = json.dumps({"ANSIBLE_MODULE_ARGS": full}).encode()
    basic._ANSIBLE_PROFILE = "legacy"
    basic._PARSED_MODULE_ARGS = None
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        try:
            module.main()
        except SystemExit:
            pass
    text = out.getvalue().strip()
    try:
        return ModuleResult(json.loads(text.splitlines()[-1]))
    except (ValueError, IndexError) as exc:
        raise AssertionError(f"module {name} printed no JSON result: {text!r}") from exc


@pytest.fixture
def run_module(aws, tmp_path, monkeypatch):
    # what spot_cluster keeps on the controller (the pool history) is the test's alone
    (tmp_path / "home").mkdir(exist_ok=True)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return _run_module


@pytest.fixture
def run_local_module():
    """run_module for modules that call no AWS API (bacalhau_job): no emulator needed."""
    return _run_module


def playbook_env(emulator: Emulator) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in SCRUBBED_VARS}
    env.update(emulator.env)
    env["ANSIBLE_CONFIG"] = str(REPO / "ansible.cfg")
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
    env.setdefault("ANSIBLE_NOCOLOR", "1")
    env["ANSIBLE_FORCE_COLOR"] = "0"
    return env


@pytest.fixture
def playbook(aws, tmp_path):
    """Run ``ansible-playbook`` with the emulator's environment; returns CompletedProcess."""
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)  # run_module's HOME too, when a test uses both

    def _run(path: str | Path, *args: str, extra_vars: dict[str, Any] | None = None,
             check: bool = False, timeout: int = 600, cwd: Path = REPO,
             env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        cmd = [str(Path(sys.executable).parent / "ansible-playbook"), str(path), *args]
        if extra_vars:
            cmd += ["-e", json.dumps(extra_vars)]
        if check:
            cmd.append("--check")
        full_env = playbook_env(aws)
        full_env["HOME"] = str(home)
        full_env.update(env or {})
        return subprocess.run(cmd, cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout)

    _run.home = home
    return _run
