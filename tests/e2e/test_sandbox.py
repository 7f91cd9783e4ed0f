"""The offline demo end to end: `python -m tests.sandbox` (what `make sandbox` runs).

Boots test hosts, runs the real create.yml twice (the second must change nothing; both prove with a
smoke job that every compute node runs a container in its real Docker), a user's first job with
`bacalhau docker run --wait` over SSH, create.yml against a node whose Docker is stopped (it must fail
naming that node),
status.yml, a spot interruption whose test host powers off (status.yml with
reap_disconnected=true must report it and make the orchestrator forget its node),
create.yml again to replace it, and destroy.yml against the emulator, then checks nothing is left behind.
Needs root (systemd-nspawn, network namespaces); run by `make test-sandbox`.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the sandbox boots systemd-nspawn hosts: needs root")


def test_sandbox_end_to_end(tmp_path):
    state = tmp_path / "sandbox"
    env = dict(os.environ, BACALHAU_SANDBOX_STATE=str(state), ANSIBLE_FORCE_COLOR="0")
    proc = subprocess.run([sys.executable, "-m", "tests.sandbox"], cwd=REPO, env=env, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=2400)
    out = proc.stdout
    (tmp_path / "sandbox.log").write_text(out)
    assert proc.returncode == 0, out[-6000:]
    assert ("cluster created, unchanged on re-run, healthy, no secret in a -vvv run, compute nodes joined over TLS, "
            "every compute node ran the smoke job, your first job printed its output, a node without Docker named, "
            "interruption reported, its node forgotten and replaced, destroyed") in out
    # destroy.yml removes the cluster's API key from the controller
    key_files = list((Path.home() / ".config/bacalhau.aws_spot").glob("sandbox/api-key"))
    assert not key_files, "destroy.yml must remove the sandbox cluster's API key"
    # the user's batch job ran in a test host's real Docker and its output came back
    # (its own line: the command that asked for it is printed too, with `$(uname -m)` unexpanded)
    assert re.search(r"^hello from a Bacalhau job on (x86_64|aarch64)$", out, re.M), out[-6000:]
    # every compute node connected, both regions, Bacalhau alive on every node
    assert "us-east-1" in out and "eu-west-1" in out
    # nothing left: no nspawn machine, no netns, no bridge
    assert not subprocess.run(["pgrep", "-f", "systemd-nspawn.*bacalhau"], capture_output=True).stdout
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert "bacalhau" not in netns
    assert subprocess.run(["ip", "link", "show", "bacbr0"], capture_output=True).returncode != 0
    assert not (Path.home() / ".config/bacalhau.aws_spot/sandbox").exists(), "destroy.yml must remove the cluster's directory"
