"""spot_cluster_info against the emulator: what it finds, what it leaves out, what it costs."""
from __future__ import annotations

import pytest


REGIONS = [{"region": "us-east-1", "count": 2, "instance_types": ["t3.small"]},
           {"region": "eu-west-1", "count": 1, "instance_types": ["t4g.small"]}]


@pytest.fixture
def cluster(run_module):
    made = run_module("spot_cluster", {"cluster_name": "info-demo", "regions": REGIONS})
    assert not made.failed, made
    orch = run_module("spot_cluster", {"cluster_name": "info-demo", "role": "orchestrator", "market": "on-demand",
                                       "regions": [{"region": "us-east-1", "count": 1, "instance_types": ["t3.small"]}]})
    assert not orch.failed, orch
    other = run_module("spot_cluster", {"cluster_name": "info-other", "regions": REGIONS[:1]})
    assert not other.failed, other
    return {"compute": made["instances"], "orchestrator": orch["instances"], "other": other["instances"]}


def test_reads_every_role_of_only_this_cluster_in_one_call_per_region(aws, run_module, cluster):
    aws.reset_calls()
    info = run_module("spot_cluster_info", {"cluster_name": "info-demo", "regions": ["us-east-1", "eu-west-1"]})
    assert not info.failed and not info.changed, info
    ids = {i["instance_id"] for i in info["instances"]}
    assert ids == {i["instance_id"] for i in cluster["compute"] + cluster["orchestrator"]}
    assert ids.isdisjoint(i["instance_id"] for i in cluster["other"])
    assert info["regions"]["us-east-1"]["running"] == {"compute": 2, "orchestrator": 1}
    assert info["regions"]["eu-west-1"]["running"] == {"compute": 1}
    assert info["interrupted"] == [] and info["ended"] == []
    # what configure.yml run alone gives the compute nodes to dial: the running orchestrator's public address
    [orchestrator] = cluster["orchestrator"]
    assert orchestrator["public_ip"] and info["orchestrator_endpoints"] == [f"nats://{orchestrator['public_ip']}:4222"]
    by_op = aws.calls()["by_operation"]
    assert by_op.get("DescribeInstances") == 2, by_op
    assert set(by_op) == {"DescribeInstances"}, f"a read must make no other call: {by_op}"


def test_spot_interruption_is_reported_apart(aws, run_module, cluster):
    victim = next(i for i in cluster["compute"] if i["region"] == "eu-west-1")["instance_id"]
    aws.interrupt("eu-west-1", [victim])
    info = run_module("spot_cluster_info", {"cluster_name": "info-demo", "regions": ["us-east-1", "eu-west-1"],
                                            "role": "compute"})
    assert info["interrupted"] == [victim], info
    assert victim not in {i["instance_id"] for i in info["instances"]}
    ended = next(i for i in info["ended"] if i["instance_id"] == victim)
    assert ended["interrupted"] and ended["state_reason"]["code"] == "Server.SpotInstanceTermination"
    assert {i["role"] for i in info["instances"]} == {"compute"}
    assert info["regions"]["eu-west-1"]["running"] == {}


def test_estimate_cost_prices_the_running_spot_instances(aws, run_module, cluster):
    info = run_module("spot_cluster_info", {"cluster_name": "info-demo", "regions": ["us-east-1", "eu-west-1"],
                                            "estimate_cost": True})
    assert info["estimated_hourly_cost"] is not None and info["estimated_hourly_cost"] > 0, info
    per_region = [r["estimated_hourly_cost"] for r in info["regions"].values()]
    assert info["estimated_hourly_cost"] == pytest.approx(sum(per_region))


def test_unknown_region_fails_naming_it_and_changes_nothing(aws, run_module):
    info = run_module("spot_cluster_info", {"cluster_name": "info-demo", "regions": ["us-east-1", "xx-nowhere-9"]})
    assert info.failed
    assert "xx-nowhere-9" in info["msg"] and "Nothing was changed" in info["msg"], info["msg"]
