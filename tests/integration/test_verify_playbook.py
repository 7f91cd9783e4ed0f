"""playbooks/verify.yml's membership check against the stand-in Bacalhau on loopback: the
orchestrator is a host with a local connection whose API is the stand-in's; the compute nodes are
stand-in processes labelled with instance ids. No AWS call and no test host: what the play does to
the orchestrator's node list is read back from its API."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.unit.test_standin import World, api

CLUSTER = "vt"


def run(tmp: Path, world: World, computes: list[str], *extra: str) -> subprocess.CompletedProcess:
    local = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}
    # compute hosts are never dialled unless one is missing (its journal): a closed local port then
    unreachable = {"ansible_host": "127.0.0.1", "ansible_port": 9, "ansible_connection": "ssh"}
    group = f"bacalhau_{CLUSTER}"
    inventory = {"all": {"hosts": {"localhost": local}, "children": {
        group: {"children": {f"{group}_role_orchestrator": {}, f"{group}_role_compute": {}}},
        f"{group}_role_orchestrator": {"hosts": {"i-orch": dict(local, bacalhau_node_api_port=world.orch.port)}},
        f"{group}_role_compute": {"hosts": {i: unreachable for i in computes}},
    }}}
    (tmp / "inventory.json").write_text(json.dumps(inventory))
    instances = [{"instance_id": i, "role": "compute", "region": "eu-west-1", "instance_type": "t3.micro",
                  "architecture": "x86_64", "public_ip": "198.51.100.1"} for i in computes]
    variables = {"cluster_name": CLUSTER, "cluster_api_auth": False, "cluster_smoke_job": False,
                 "cluster_instances": instances, "cluster_orchestrator_endpoints": ["nats://198.51.100.9:4222"],
                 "bacalhau_orchestrator_manual_approval": True, "ansible_ssh_timeout": 2}
    (tmp / "vars.json").write_text(json.dumps(variables))
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0",
               HOME=str(tmp))
    cmd = [str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(tmp / "inventory.json"),
           str(REPO / "playbooks" / "verify.yml"), "-e", f"@{tmp / 'vars.json'}", *extra]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


def memberships(world: World) -> dict[str, str]:
    return {s["Info"]["Labels"].get("instance-id", s["Info"]["NodeID"]): s["Membership"]
            for s in api(world.orch.port, "GET", "/api/v1/orchestrator/nodes")["Nodes"]
            if s["Info"]["NodeType"] == "Compute"}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    w = World(tmp_path_factory.mktemp("verify"), {
        "a": {"labels": {"instance-id": "i-aaa", "region": "eu-west-1"}},
        "b": {"labels": {"instance-id": "i-bbb", "region": "eu-west-1"}},
        "z": {"labels": {"instance-id": "i-zzz"}},  # another cluster's node on the same orchestrator
    }, orch_cfg={"NodeManager": {"ManualApproval": True}})
    try:
        assert len(w.wait_nodes(3)) == 3
        yield w
    finally:
        w.close()


def test_verify_approves_the_clusters_own_nodes_and_passes(world, tmp_path):
    res = run(tmp_path, world, ["i-aaa", "i-bbb"])
    assert res.returncode == 0, res.stdout[-4000:]
    assert memberships(world) == {"i-aaa": "APPROVED", "i-bbb": "APPROVED", "i-zzz": "PENDING"}
    assert "TASK [Check that every compute node is CONNECTED and APPROVED" in res.stdout
    assert "skipping: [i-orch]" in res.stdout.split("TASK [Check that every compute node is CONNECTED")[1]


def test_verify_names_a_node_that_never_joined(world, tmp_path):
    res = run(tmp_path, world, ["i-aaa", "i-never"])
    assert res.returncode != 0
    assert "1 node(s) of cluster vt not CONNECTED and APPROVED on the orchestrator" in res.stdout, res.stdout[-4000:]
    assert "i-never: not listed by the orchestrator" in res.stdout


def test_configure_only_limits_the_check_to_those_nodes(world, tmp_path):
    res = run(tmp_path, world, ["i-aaa", "i-never"], "-e", '{"configure_only": ["i-aaa"]}')
    assert res.returncode == 0, res.stdout[-4000:]
    # heal.yml prints its own summary: no table with configure_only
    assert "REGION" not in res.stdout
