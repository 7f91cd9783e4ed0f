"""``extensions/eda/autoheal_runner.py``: one heal at a time on a host, requests coalesced,
a heal cut short finished by the next request. The heal is a stand-in command that records
when it ran and with what."""
from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

RUNNER = Path(__file__).resolve().parents[2] / "extensions" / "eda" / "autoheal_runner.py"

FAKE_HEAL = r'''
import json, os, sys, time
log, seconds, rc = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
args = sys.argv[4:]
given = [args[n + 1] for n, a in enumerate(args) if a == "-e"]
vars_file = given[-2][1:]
record = {"pid": os.getpid(), "start": time.time(), "args": args, "files": [g[1:] for g in given[:-2]],
          "vars": json.load(open(vars_file)), "vars_mode": oct(os.stat(vars_file).st_mode & 0o777),
          "drain": json.loads(given[-1])["heal_drain_instance_ids"],
          "interrupted": json.loads(given[-1])["heal_interrupted_instance_ids"]}
time.sleep(seconds)
record["end"] = time.time()
with open(log, "a") as f:
    f.write(json.dumps(record) + "\n")
sys.exit(rc)
'''


@pytest.fixture
def world(tmp_path):
    fake = tmp_path / "fake_heal.py"
    fake.write_text(FAKE_HEAL)
    return {"state": tmp_path / "state" / "autoheal", "log": tmp_path / "heals.jsonl", "fake": fake}


def start(world, drain: list[str] = (), seconds: float = 0.0, rc: int = 0,
          variables: dict | None = None, vars_file: str = "", interrupted: list[str] = ()) -> subprocess.Popen:
    cmd = [sys.executable, str(RUNNER), "--state-dir", str(world["state"]), "--drain", ",".join(drain),
           "--interrupted", ",".join(interrupted), "--vars-file", vars_file, "--",
           sys.executable, str(world["fake"]), str(world["log"]), str(seconds), str(rc)]
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    proc.stdin.write(json.dumps(variables or {"cluster_name": "alpha"}))
    proc.stdin.close()
    proc.stdin = None  # communicate() would flush it again
    return proc


def heals(world) -> list[dict]:
    if not world["log"].exists():
        return []
    return [json.loads(line) for line in world["log"].read_text().splitlines()]


def wait_for(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_one_heal_at_a_time_and_requests_during_a_heal_join_the_next(world):
    first = start(world, ["i-1"], seconds=1.5)
    wait_for(lambda: (world["state"] / "running.json").exists())  # the first heal runs
    others = [start(world, [f"i-{n}"], seconds=0.5) for n in range(2, 7)]
    outputs = [p.communicate(timeout=30)[0] for p in [first] + others]
    assert [p.returncode for p in [first] + others] == [0] * 6
    done = heals(world)
    assert len(done) == 2, done  # the first, then one for the five that came meanwhile
    assert done[0]["drain"] == ["i-1"]
    assert sorted(done[1]["drain"]) == ["i-2", "i-3", "i-4", "i-5", "i-6"]
    assert done[1]["start"] >= done[0]["end"]  # never two at once
    said = "\n".join(outputs)
    assert said.count("healing for") == 2
    assert "goes with that one" in said or "coalesced" in said
    assert not (world["state"] / "running.json").exists()


def test_interruption_warnings_are_told_from_rebalance_recommendations_across_joined_requests(world):
    first = start(world, ["i-1"], seconds=1.5, interrupted=["i-1"])
    wait_for(lambda: (world["state"] / "running.json").exists())
    others = [start(world, ["i-2"], seconds=0.2), start(world, ["i-3"], seconds=0.2, interrupted=["i-3"])]
    assert [p.wait(30) for p in [first] + others] == [0, 0, 0]
    done = heals(world)
    assert [(h["drain"], h["interrupted"]) for h in done][0] == (["i-1"], ["i-1"])
    assert sorted(done[1]["drain"]) == ["i-2", "i-3"] and done[1]["interrupted"] == ["i-3"]  # i-2: a recommendation


def test_the_variables_go_in_a_private_file_never_on_the_command_line(world):
    secret = {"cluster_name": "alpha", "cluster_api_key": "s3cr3t-key"}
    proc = start(world, variables=secret)
    assert proc.communicate(timeout=30)[0] and proc.returncode == 0
    [heal] = heals(world)
    assert heal["vars"] == secret and heal["vars_mode"] == "0o600"
    assert "s3cr3t-key" not in " ".join(heal["args"])
    assert not list(world["state"].glob("vars-*"))  # removed after the heal
    assert stat.S_IMODE(os.stat(world["state"]).st_mode) == 0o700


def test_the_cluster_file_is_given_to_the_heal_first(world):
    proc = start(world, vars_file="/etc/bacalhau/my-cluster.yml")
    assert proc.wait(30) == 0
    [heal] = heals(world)
    assert heal["files"] == ["/etc/bacalhau/my-cluster.yml"]


def test_a_failed_heal_is_run_again_by_the_next_request_with_its_instances(world):
    failed = start(world, ["i-1"], rc=3)
    assert failed.wait(30) == 3
    tick = start(world)  # a tick: nothing of its own to drain
    assert tick.wait(30) == 0
    assert [h["drain"] for h in heals(world)] == [["i-1"], ["i-1"]]
    assert not (world["state"] / "running.json").exists()


def test_a_heal_cut_short_is_finished_by_the_next_request(world):
    killed = start(world, ["i-9"], seconds=30)
    wait_for(lambda: (world["state"] / "running.json").exists())
    time.sleep(0.3)
    os.killpg(killed.pid, signal.SIGKILL)  # the rulebook (and its heal) killed
    killed.wait(10)
    tick = start(world)
    assert tick.wait(30) == 0
    assert [h["drain"] for h in heals(world)] == [["i-9"]]  # the killed one never logged; the tick drained i-9


def test_without_a_command_it_says_how(world):
    out = subprocess.run([sys.executable, str(RUNNER), "--state-dir", str(world["state"])], capture_output=True,
                         text=True, timeout=30)
    assert out.returncode == 2 and "after --" in out.stderr


def test_the_heal_does_not_inherit_ansible_runners_output_callback():
    import importlib.util

    spec = importlib.util.spec_from_file_location("autoheal_runner", RUNNER)
    runner = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(runner)
    env = runner.child_environment({"ANSIBLE_STDOUT_CALLBACK": "awx_display", "RUNNER_OMIT_EVENTS": "False",
                                    "ANSIBLE_CALLBACK_PLUGINS": "/x/ansible_runner/display_callback/callback",
                                    "AWX_ISOLATED_DATA_DIR": "/tmp/x", "ANSIBLE_CONFIG": "/etc/ansible.cfg",
                                    "AWS_PROFILE": "p"})
    assert env == {"ANSIBLE_CONFIG": "/etc/ansible.cfg", "AWS_PROFILE": "p"}
    assert runner.child_environment({"ANSIBLE_STDOUT_CALLBACK": "yaml"}) == {"ANSIBLE_STDOUT_CALLBACK": "yaml"}


def hold(world, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(RUNNER), "--state-dir", str(world["state"]), *args],
                          capture_output=True, text=True, timeout=60)


def test_destroy_holds_heals_off_after_the_running_one_and_create_lets_them_run(world):
    # destroy.yml's --hold: the heal running now ends first (it may be launching), then no heal runs
    running = start(world, ["i-1"], seconds=2)
    wait_for(lambda: heals(world) == [] and (world["state"] / "running.json").exists())
    held = hold(world, "--hold")
    assert held.returncode == 0 and "waiting for the heal running now" in held.stdout
    assert running.wait(10) == 0 and [h["drain"] for h in heals(world)] == [["i-1"]]
    assert heals(world)[0]["end"] <= time.time()
    late = start(world, ["i-2"])  # an event, or a tick, while the cluster is taken down
    out, _ = late.communicate(timeout=30)
    assert late.returncode == 0 and "held off" in out and len(heals(world)) == 1
    # create.yml's --release: heals run again, without the dropped request
    assert hold(world, "--release").returncode == 0
    tick = start(world)
    assert tick.wait(30) == 0 and [h["drain"] for h in heals(world)] == [["i-1"], []]


def test_a_hold_that_cannot_wait_for_a_heal_says_what_to_do(world):
    running = start(world, ["i-1"], seconds=8)
    wait_for(lambda: (world["state"] / "running.json").exists())
    held = hold(world, "--hold", "--wait", "1")
    assert held.returncode == 1 and "Stop the rulebook" in held.stdout
    os.killpg(running.pid, signal.SIGKILL)
    running.wait(10)
