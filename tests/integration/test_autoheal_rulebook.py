"""The rulebook bacalhau.aws_spot.autoheal under a real ansible-rulebook, against the emulator:
a tick and an interruption run the heal through the lock, and the reclaim's heal brings the
node back, nobody running heal.yml by hand.

It runs where ``ansible-rulebook`` (1.3.2, with Java 17) is found, on ``PATH`` or as
``$BACALHAU_RULEBOOK`` (``make test``: requirements-dev.txt has it, tests/hosts/install-deps.sh Java); it needs ``ansible-galaxy`` and this venv's
``ansible-playbook`` first on ``PATH`` (as conftest's playbook environment has them)."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time

import pytest

from ansible_collections.bacalhau.aws_spot.plugins.module_utils._events import path
from tests.conftest import REPO, playbook_env
from tests.integration.test_create_destroy import CREATE, cluster_vars, instances, ssh_key  # noqa: F401
from tests.unit.test_events_path import our_client

RULEBOOK = os.environ.get("BACALHAU_RULEBOOK") or shutil.which("ansible-rulebook")
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not RULEBOOK or not shutil.which("java"),
                                 reason="ansible-rulebook and Java 17 are not installed (make setup; tests/hosts/install-deps.sh)")]


def wait_for(condition, timeout: float, what: str, log) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen in {timeout}s; the rulebook said:\n{log.read_text()[-6000:]}")
        time.sleep(1)


def test_events_run_the_heal_and_the_reclaim_brings_the_node_back(playbook, aws, ssh_key, tmp_path):  # noqa: F811
    cluster = cluster_vars(ssh_key, cluster_name="it-rulebook",
                           cluster_regions=[{"region": "eu-west-1", "count": 1, "instance_types": ["t4g.small"]}])
    made = playbook(CREATE, extra_vars=cluster)
    assert made.returncode == 0, made.stdout[-4000:]
    for region in ("eu-west-1", "us-east-1"):
        path.ensure(our_client("events", region), our_client("sqs", region), "it-rulebook", region)
    cluster_file = tmp_path / "it-rulebook.yml"
    # no cluster_file line: the source names the file ansible-rulebook was started with
    cluster_file.write_text(json.dumps(dict(cluster, autoheal_tick_seconds=3600)))
    env = playbook_env(aws)
    env["HOME"] = str(playbook.home)
    log = tmp_path / "rulebook.log"
    with open(log, "w") as out:
        rulebook = subprocess.Popen(
            [RULEBOOK, "-r", "bacalhau.aws_spot.autoheal", "-e", str(cluster_file),
             "-i", str(REPO / "inventory" / "localhost.yml"), "--print-events"],
            cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for(lambda: "Heal of cluster it-rulebook" in log.read_text(), 180, "the tick's heal", log)
        [victim] = [i["InstanceId"] for i in instances("eu-west-1", "it-rulebook")]
        aws.interrupt("eu-west-1", [victim], notice_seconds=20)
        wait_for(lambda: f"instances to drain: {victim}" in log.read_text(), 120, "the warning's heal", log)
        wait_for(lambda: any(i["InstanceId"] != victim for i in instances("eu-west-1", "it-rulebook")), 240,
                 "a replacement", log)
    finally:
        os.killpg(rulebook.pid, signal.SIGTERM)
        rulebook.wait(90)
    said = log.read_text()
    assert "'kind': 'interruption'" in said and "'kind': 'state'" in said
    assert "BEGIN OPENSSH PRIVATE KEY" not in said


def _start(cluster_file, env, log):
    out = open(log, "a")  # noqa: SIM115 (closed with the process, below)
    proc = subprocess.Popen(
        [RULEBOOK, "-r", "bacalhau.aws_spot.autoheal", "-e", str(cluster_file),
         "-i", str(REPO / "inventory" / "localhost.yml"), "--print-events"],
        cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    return proc, out


def _stop(proc, out, sig=signal.SIGTERM) -> None:
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass
    proc.wait(90)
    out.close()


def _kill_heals(marker: str) -> int:
    """SIGKILL every process of this test whose command line names ``marker`` (its own temporary
    HOME's state directory): ansible-runner may start the heal in a session of its own."""
    killed = 0
    for _round in range(3):
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as handle:
                    cmdline = handle.read().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if marker in cmdline and int(entry) != os.getpid():
                try:
                    os.kill(int(entry), signal.SIGKILL)
                    killed += 1
                except ProcessLookupError:
                    pass
        time.sleep(0.2)
    return killed


def test_a_rulebook_killed_mid_heal_is_finished_by_the_next_start(playbook, aws, ssh_key, tmp_path):  # noqa: F811
    """The rulebook and its heal killed (SIGKILL, the whole process group) while the warning's heal runs:
    the next start's tick runs that heal again, with the instance to drain, and finishes it."""
    cluster = cluster_vars(ssh_key, cluster_name="it-killed",
                           cluster_regions=[{"region": "eu-west-1", "count": 1, "instance_types": ["t4g.small"]}])
    made = playbook(CREATE, extra_vars=cluster)  # makes the event path too (cluster_autoheal)
    assert made.returncode == 0, made.stdout[-4000:]
    cluster_file = tmp_path / "it-killed.yml"
    # no tick at start: the first run hears the warning only
    cluster_file.write_text(json.dumps(dict(cluster, cluster_file=str(cluster_file), autoheal_tick_seconds=3600)))
    env = playbook_env(aws)
    env["HOME"] = str(playbook.home)
    state = playbook.home / ".config/bacalhau.aws_spot/it-killed/autoheal"
    log = tmp_path / "rulebook.log"
    [victim] = [i["InstanceId"] for i in instances("eu-west-1", "it-killed")]

    first, out = _start(cluster_file, env, log)
    try:
        # the tick at start heals a healthy cluster; then the warning
        wait_for(lambda: "Heal of cluster it-killed" in log.read_text(), 180, "the tick's heal", log)
        aws.interrupt("eu-west-1", [victim], notice_seconds=600)
        wait_for(lambda: (state / "running.json").exists(), 120, "the warning's heal starting", log)
        assert victim in (state / "running.json").read_text()
    finally:
        _stop(first, out, signal.SIGKILL)  # mid-heal
        assert _kill_heals(str(state)), "no heal was running to kill"  # and the heal with it, wherever it runs
    assert (state / "running.json").exists()  # cut short: left for the next start

    second, out = _start(cluster_file, env, log)
    try:
        wait_for(lambda: not (state / "running.json").exists()
                 and victim not in [i["InstanceId"] for i in instances("eu-west-1", "it-killed")], 300,
                 "the next start's tick finishing the heal (replacement up, the drained node let go)", log)
    finally:
        _stop(second, out)
    live = [i["InstanceId"] for i in instances("eu-west-1", "it-killed")]
    assert len(live) == 1 and live[0] != victim, live
    said = log.read_text()
    assert f"instances to drain: {victim}" in said
    assert "BEGIN OPENSSH PRIVATE KEY" not in said
