"""A spot interruption on real test hosts, end to end: the AWS emulator launches two spot
instances on testhost2 and testhost3 (its address pool) and writes their IMDS documents, which
each host's IMDS stand-in serves at 169.254.169.254 (tests/hosts/imds_standin.py); the roles,
unchanged, find the hosts to be spot instances and install bacalhau-spot-watcher.service. Then
the emulator gives the node running a batch job a two-minute-style notice (shortened), and:

- the watcher stops Bacalhau within 10 s of the notice (journal timestamps on the host);
- the orchestrator lists the node DISCONNECTED at once, LastError "graceful shutdown" (Bacalhau's
  shutdown notice, nodes/manager.go ShutdownNotice), not after its heartbeat timeout;
- about 15 s later (nodes/reevaluator.go's batch delay) its executions are failed as lost
  ("Execution stop requested because node has disappeared"): the ops job fails, the batch job is
  placed again on the other node and completes;
- when the notice's time is up the instance is reclaimed (terminated,
  Server.SpotInstanceTermination) and its test host powers off.

The module ends by bringing the powered-off host back (a fresh machine) for the modules after it."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time

import boto3
import pytest

from tests.emulator import Emulator, seed
from tests.roles.conftest import ROOT, STATE
from tests.roles.test_cluster import recap
from tests.roles.test_jobs import api  # the orchestrator's API, with the key the role generated

REGION = "eu-west-1"
IMAGE = "registry.testhosts:5213/testhost/busybox:1.35"  # tests/hosts/testhosts.sh image
NOTICE_SECONDS = 45
LOST = "Execution stop requested because node has disappeared"


def job(job_type: str, seconds: int) -> dict:
    return {"Type": job_type, "Tasks": [{"Name": "main", "Engine": {"Type": "docker", "Params": {
        "Image": IMAGE, "Entrypoint": ["/bin/busybox"], "Parameters": ["sleep", str(seconds)]}}}]}


def executions(env, job_id: str) -> list[dict]:
    return api(env, "GET", f"/api/v1/orchestrator/jobs/{job_id}/executions")["Items"]


def wait(what, predicate, timeout: float, step: float = 0.5):
    deadline = time.time() + timeout
    while True:
        value = what()
        if predicate(value) or time.time() > deadline:
            return value
        time.sleep(step)


def node_states(env) -> dict[str, dict]:
    return {n["Info"]["NodeID"]: n for n in api(env, "GET", "/api/v1/orchestrator/nodes")["Nodes"]}


def journal(env, host: str, unit: str, since: float) -> list[dict]:
    out = env.ssh(host, f"sudo journalctl -u {unit} -o json --no-pager --since=@{int(since) - 2}")
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def ec2(emulator: Emulator):
    return boto3.client("ec2", region_name=REGION, endpoint_url=emulator.url,
                        aws_access_key_id="testing", aws_secret_access_key="testing")


@pytest.fixture(scope="module")
def emulator(env):
    emu = Emulator.start()
    try:
        yield emu
    finally:
        emu.reset()  # removes the IMDS documents it wrote: the hosts are no instances any more
        emu.stop()
        # the reclaimed host comes back as a new machine, for the modules after this one
        subprocess.run([str(ROOT / "tests" / "hosts" / "testhosts.sh"), "up", "3"], check=False, timeout=600)


@pytest.fixture(scope="module")
def spot(env, emulator):
    """Two spot instances on testhost2 and testhost3, and the cluster converged on them."""
    emulator.imds(str(STATE / "imds"))
    emulator.address_pool([env.ip("testhost2"), env.ip("testhost3")])
    client = ec2(emulator)
    vpc = client.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    subnet = client.create_subnet(VpcId=vpc, CidrBlock="10.0.1.0/24", AvailabilityZone=f"{REGION}a")["Subnet"]["SubnetId"]
    client.modify_subnet_attribute(SubnetId=subnet, MapPublicIpOnLaunch={"Value": True})
    launched = client.run_instances(ImageId=seed.ami_id(REGION, "24.04", "x86_64", seed.SERIALS[-1]),
                                    InstanceType="t3.medium", MinCount=2, MaxCount=2, SubnetId=subnet,
                                    InstanceMarketOptions={"MarketType": "spot"})["Instances"]
    by_ip = {i["PublicIpAddress"]: i["InstanceId"] for r in client.describe_instances(
        InstanceIds=[i["InstanceId"] for i in launched])["Reservations"] for i in r["Instances"]}
    res = env.playbook("cluster.yml")
    assert res.returncode == 0, res.output[-4000:]
    return {host: by_ip[env.ip(host)] for host in ("testhost2", "testhost3")}


def test_roles_find_the_spot_instances_and_start_the_watcher(env, spot):
    again = env.playbook("cluster.yml")  # with the watcher installed, a converge changes nothing
    assert again.returncode == 0, again.output[-4000:]
    assert {h: r["changed"] for h, r in recap(again.output).items()} == {
        "testhost1": 0, "testhost2": 0, "testhost3": 0}, again.output[-3000:]
    for host, instance_id in spot.items():
        assert env.ssh(host, "systemctl is-active bacalhau-spot-watcher.service").strip() == "active"
        lines = env.ssh(host, "sudo journalctl -u bacalhau-spot-watcher -o cat --no-pager")
        assert f"instance {instance_id}, instance-life-cycle spot" in lines, lines
        # the IMDS stand-in refuses IMDSv1, as HttpTokens=required makes AWS do
        code = env.ssh(host, "curl -s -o /dev/null -w '%{http_code}' http://169.254.169.254/latest/meta-data/instance-id")
        assert code == "401"
    # the orchestrator host has no instance: its IMDS answers 404, and it runs no compute role anyway
    assert env.ssh("testhost1", "systemctl is-active bacalhau-spot-watcher.service || true").strip() != "active"


def test_notice_stops_bacalhau_within_10_s_the_orchestrator_learns_at_once_and_reschedules(env, emulator, spot):
    nodes = {n["Info"]["Labels"]["instance-id"].removeprefix("i-"): nid for nid, n in node_states(env).items()
             if n["Info"]["NodeType"] == "Compute"}
    assert sorted(nodes) == ["testhost2", "testhost3"]
    ops = api(env, "PUT", "/api/v1/orchestrator/jobs", {"Job": job("ops", 25)})["JobID"]
    batch = api(env, "PUT", "/api/v1/orchestrator/jobs", {"Job": job("batch", 20)})["JobID"]
    running = wait(lambda: executions(env, batch) + executions(env, ops),
                   lambda ex: len(ex) == 3 and {e["ComputeState"]["StateType"] for e in ex} == {6}, 60)
    assert {e["ComputeState"]["StateType"] for e in running} == {6}, running
    [first] = executions(env, batch)
    victim = next(h for h, nid in nodes.items() if nid == first["NodeID"])
    other = next(h for h in nodes if h != victim)

    t_notice = time.time()
    res = emulator.interrupt(REGION, [spot[victim]], notice_seconds=NOTICE_SECONDS)
    assert res["in_imds"] == [spot[victim]]

    # the orchestrator learns at once: Bacalhau's shutdown notice, not a heartbeat timeout
    state = wait(lambda: node_states(env)[nodes[victim]],
                 lambda n: n["ConnectionState"]["Status"] == "DISCONNECTED", 15, 0.2)
    t_seen = time.time()
    assert state["ConnectionState"]["Status"] == "DISCONNECTED", state
    assert state["ConnectionState"]["LastError"] == "graceful shutdown"
    assert t_seen - t_notice < 10

    # the watcher saw the notice and stopped Bacalhau within 10 s of it (the host's journal)
    watcher = journal(env, victim, "bacalhau-spot-watcher", t_notice)
    notice_line = [e for e in watcher if e["MESSAGE"].startswith("interruption notice: action=terminate time=")]
    assert notice_line and res["notice"]["time"] in notice_line[0]["MESSAGE"], [e["MESSAGE"] for e in watcher]
    stopped = [e for e in journal(env, victim, "bacalhau", t_notice)
               if e["MESSAGE"].startswith("Stopped ") and e.get("UNIT") == "bacalhau.service"]
    assert stopped, "systemd did not log the stop of bacalhau.service"
    t_stopped = int(stopped[0]["__REALTIME_TIMESTAMP"]) / 1e6
    assert 0 < t_stopped - t_notice < 10, t_stopped - t_notice
    assert env.ssh(victim, "systemctl is-active bacalhau.service || true").strip() == "inactive"

    # the lost executions are failed by the orchestrator's re-evaluation, about 15 s later
    lost = wait(lambda: [e for e in executions(env, ops) + executions(env, batch) if e["NodeID"] == nodes[victim]],
                lambda ex: all(e["ComputeState"]["StateType"] == 10 for e in ex), 40)
    assert [e["ComputeState"] for e in lost] == [{"StateType": 10, "Message": LOST}] * 2, lost
    t_lost = min(e["ModifyTime"] for e in lost) / 1e9
    assert t_lost - t_seen > 10  # the reevaluator's batch delay (15 s)
    print(f"\n{victim}: notice -> bacalhau stopped {t_stopped - t_notice:.2f} s, -> DISCONNECTED seen "
          f"{t_seen - t_notice:.2f} s, -> executions failed as lost {t_lost - t_notice:.2f} s")
    done = wait(lambda: api(env, "GET", f"/api/v1/orchestrator/jobs/{ops}")["Job"]["State"],
                lambda s: s["StateType"] in ("Completed", "Failed"), 60)
    assert done == {"StateType": "Failed", "Message": "Job failed because one or more executions failed"}
    # the batch job is placed again on the other node, and completes there
    done = wait(lambda: api(env, "GET", f"/api/v1/orchestrator/jobs/{batch}")["Job"]["State"],
                lambda s: s["StateType"] in ("Completed", "Failed"), 90)
    assert done["StateType"] == "Completed", done
    by_node = {e["NodeID"]: e for e in executions(env, batch)}
    assert by_node[nodes[other]]["ComputeState"]["StateType"] == 9

    # when the notice's time is up the instance is reclaimed, and its test host powers off
    instance = wait(lambda: ec2(emulator).describe_instances(InstanceIds=[spot[victim]])["Reservations"][0]["Instances"][0],
                    lambda i: i["State"]["Name"] == "terminated", NOTICE_SECONDS + 20)
    assert instance["State"]["Name"] == "terminated"
    assert instance["StateReason"]["Code"] == "Server.SpotInstanceTermination"
    assert time.time() >= t_notice + NOTICE_SECONDS - 1

    def ssh_answers() -> bool:
        try:
            socket.create_connection((env.ip(victim), 22), timeout=1).close()
            return True
        except OSError:
            return False

    assert wait(ssh_answers, lambda up: not up, 30) is False
    pid = (STATE / "hosts" / victim / "pid").read_text().strip()
    assert wait(lambda: os.path.exists(f"/proc/{pid}"), lambda alive: not alive, 30) is False
