"""The rulebook bacalhau.aws_spot.autoheal under a real ansible-rulebook, against the emulator:
a tick and an interruption run the heal through the lock, and the reclaim's heal brings the
node back, nobody running heal.yml by hand.

Opt-in (not in CI yet): it runs where ``ansible-rulebook`` (1.3.2, with Java 17) is found, on
``PATH`` or as ``$BACALHAU_RULEBOOK``; it needs ``ansible-galaxy`` and this venv's
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
                                 reason="ansible-rulebook and Java 17 are not installed (opt-in test)")]


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
    cluster_file.write_text(json.dumps(dict(cluster, cluster_file=str(cluster_file), autoheal_tick_seconds=3600)))
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
