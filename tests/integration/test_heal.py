"""playbooks/heal.yml against the emulator (its AWS half: cluster_configure=false; the Bacalhau
half - reaping, configuring only the new nodes, their smoke job - runs on test hosts in the sandbox)."""
from __future__ import annotations

import re

import boto3
import pytest

from tests.integration.test_create_destroy import CREATE, cluster_vars, instances, ssh_key  # noqa: F401

HEAL = CREATE.parent / "heal.yml"
OVERFLOW = [{"region": "us-west-2", "instance_types": ["t4g.small", "t3.small"]}]
RECAP = re.compile(r"localhost\s+: ok=\d+\s+changed=(\d+)\s+unreachable=\d+\s+failed=(\d+)")


def _vars(ssh_key, **kw):  # noqa: F811
    return cluster_vars(ssh_key, cluster_name="it-heal", cluster_overflow_regions=OVERFLOW, **kw)


def _changed(result) -> int:
    return sum(int(m.group(1)) for m in RECAP.finditer(result.stdout))


def _live(region: str) -> list[dict]:
    return instances(region, "it-heal")


def _tags(instance: dict) -> dict:
    return {t["Key"]: t["Value"] for t in instance.get("Tags", [])}


@pytest.fixture
def cluster(playbook, aws, ssh_key):  # noqa: F811
    made = playbook(CREATE, extra_vars=_vars(ssh_key))
    assert made.returncode == 0, made.stdout[-4000:]
    assert len(_live("us-east-1")) == 3 and len(_live("eu-west-1")) == 1  # 2 compute + the orchestrator; 1
    return _vars(ssh_key)


def test_healthy_cluster_is_a_noop_of_reads(playbook, aws, cluster):
    aws.reset_calls()
    healed = playbook(HEAL, extra_vars=cluster)
    assert healed.returncode == 0, healed.stdout[-4000:]
    assert _changed(healed) == 0, healed.stdout[-3000:]
    ops = aws.calls()["by_operation"]
    # the credentials check (amazon.aws.aws_caller_info: two reads), then one planning pass of the
    # cluster (spot_cluster mode heal: it reads the security groups too, to hold the NATS rule to
    # the compute nodes there are; nothing drains or overflows, so no release): reads only, one
    # DescribeInstances per region (us-east-1, eu-west-1, us-west-2)
    assert all(op.startswith(("Get", "List", "Describe")) for op in ops), f"a healthy heal only reads: {ops}"
    assert ops["DescribeInstances"] == 3, ops
    assert "Every home region holds its count" in healed.stdout


def test_interrupted_node_is_replaced_and_check_mode_changes_nothing(playbook, aws, cluster):
    victim = _live("eu-west-1")[0]["InstanceId"]
    aws.interrupt("eu-west-1", [victim])
    assert _live("eu-west-1") == []

    plan = playbook(HEAL, "--check", extra_vars=cluster)
    assert plan.returncode == 0, plan.stdout[-4000:]
    assert "would launch 1" in plan.stdout, plan.stdout[-3000:]
    assert _live("eu-west-1") == [] and _live("us-west-2") == [], "--check launched something"

    healed = playbook(HEAL, extra_vars=cluster)
    assert healed.returncode == 0, healed.stdout[-4000:]
    assert len(_live("eu-west-1")) == 1 and _live("us-west-2") == []
    again = playbook(HEAL, extra_vars=cluster)
    assert _changed(again) == 0, again.stdout[-3000:]


def test_dry_region_spills_over_then_comes_home(playbook, aws, cluster):
    aws.capacity_error("eu-west-1")  # every type, every zone
    victim = _live("eu-west-1")[0]["InstanceId"]
    aws.interrupt("eu-west-1", [victim])

    healed = playbook(HEAL, extra_vars=cluster)
    assert healed.returncode == 0, healed.stdout[-4000:]
    assert _live("eu-west-1") == []
    overflow = _live("us-west-2")
    assert len(overflow) == 1, healed.stdout[-3000:]
    assert _tags(overflow[0])["bacalhau:overflow-for"] == "eu-west-1"
    assert _tags(overflow[0])["bacalhau:role"] == "compute"
    # the orchestrator's NATS rule lets the overflow node in (it dials the public address)
    ec2 = boto3.client("ec2", region_name="us-east-1")
    groups = ec2.describe_security_groups(Filters=[{"Name": "tag:bacalhau:cluster", "Values": ["it-heal"]}])["SecurityGroups"]
    cidrs = {r["CidrIp"] for g in groups for p in g["IpPermissions"] if p.get("FromPort") == 4222 for r in p.get("IpRanges", [])}
    assert f"{overflow[0]['PublicIpAddress']}/32" in cidrs, cidrs

    still_dry = playbook(HEAL, extra_vars=cluster)
    assert still_dry.returncode == 0 and len(_live("us-west-2")) == 1 and _live("eu-west-1") == []

    aws.clear_faults()
    home = playbook(HEAL, extra_vars=cluster)
    assert home.returncode == 0, home.stdout[-4000:]
    assert len(_live("eu-west-1")) == 1, home.stdout[-3000:]
    assert _live("us-west-2") == [], "the overflow node must go once its home region has room again"
    assert overflow[0]["InstanceId"] in home.stdout  # named among the terminated


def test_interrupted_heal_is_finished_by_the_next_one(playbook, aws, cluster):
    aws.capacity_error("eu-west-1")
    aws.interrupt("eu-west-1", [_live("eu-west-1")[0]["InstanceId"]])
    assert playbook(HEAL, extra_vars=cluster).returncode == 0
    assert len(_live("us-west-2")) == 1
    aws.clear_faults()
    # the home node launches, then the run breaks before the overflow node goes
    aws.throttle(1000, operations=["TerminateInstances"])
    broken = playbook(HEAL, extra_vars=cluster)
    assert broken.returncode != 0
    assert len(_live("eu-west-1")) == 1 and len(_live("us-west-2")) == 1  # made before break, nothing lost
    aws.clear_faults()
    finished = playbook(HEAL, extra_vars=cluster)
    assert finished.returncode == 0, finished.stdout[-4000:]
    assert len(_live("eu-west-1")) == 1 and _live("us-west-2") == []
