"""One retry layer per call: under steady throttling a call is made a bounded number of
times, then the module fails with a message that names throttling and says what to do.

botocore's own retries are off on our clients, so every attempt the policy makes is one
call in the emulator's log; a second layer (botocore's, or a retry wrapped around a
retrying call) would show as a multiple of the policy's attempts.
"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location("nuke_world", Path(__file__).with_name("test_nuke_world.py"))
world = sys.modules.get("nuke_world") or importlib.util.module_from_spec(_spec)
if "nuke_world" not in sys.modules:
    sys.modules["nuke_world"] = world
    _spec.loader.exec_module(world)

EVERY_CALL = 10 ** 6


@pytest.fixture
def policies(monkeypatch):
    """The production policies, with their delays shortened (the number of attempts is kept)."""
    from ansible_collections.bacalhau.aws_spot.plugins.module_utils._aws import common as _common

    for name, policy in list(_common.RETRY_POLICIES.items()):
        monkeypatch.setitem(_common.RETRY_POLICIES, name, dict(policy, delay=0.001, max_delay=0.001))
    return _common.RETRY_POLICIES


def _ours(aws) -> dict[str, int]:
    counts: dict[str, int] = {}
    for call in aws.calls()["log"]:
        if call["agent"] == "bacalhau.aws_spot":
            counts[call["operation"]] = counts.get(call["operation"], 0) + 1
    return counts


def test_spot_cluster_under_throttling_on_every_call_stops_after_the_policys_attempts(aws, run_module, policies):
    aws.throttle(EVERY_CALL)
    result = run_module("spot_cluster", {
        "cluster_name": "demo",
        "regions": [{"region": "us-east-1", "count": 2, "instance_types": ["t3.small"]}],
    })
    assert result.failed
    attempts = policies["default"]["attempts"]
    counts = _ours(aws)
    # GetSpotPlacementScores is two calls (by region, by zone): each is retried on its own
    counts["GetSpotPlacementScores"] = counts.get("GetSpotPlacementScores", 0) // 2
    # every call the plan makes (DescribeRegions, the describes, SSM's GetParameters), each
    # exactly as often as the policy allows: one layer, not botocore's attempts times ours
    assert counts and set(counts.values()) == {attempts}, counts
    assert "GetParameters" in counts  # a JSON API: its ThrottlingException is retried as EC2's code is
    assert "throttled" in result["msg"] and f"all {attempts} attempts" in result["msg"]
    assert "us-east-1" in result["msg"] and "run again" in result["msg"]
    assert "RunInstances" not in counts and "CreateVpc" not in counts  # nothing was created


def test_nuke_under_throttled_deletes_tries_each_delete_a_bounded_number_of_times(aws, run_module, policies):
    ours = world.build_ours("us-east-1", "alpha", full=False)
    throttled = ["DeleteSecurityGroup", "DeleteSubnet", "DeleteVpc"]
    aws.throttle(EVERY_CALL, operations=throttled)
    result = run_module("tagged_resource_nuke", {"regions": ["us-east-1"], "force": True})
    assert result.failed
    attempts = policies["in_use"]["attempts"]  # deletes: throttling and "still in use", one policy
    counts = _ours(aws)
    failed = {r["id"]: r["error"] for r in result["resources"] if r["action"] == "failed"}
    tried = {"DeleteSecurityGroup": "security_groups", "DeleteSubnet": "subnets", "DeleteVpc": "vpcs"}
    for operation, resource_type in tried.items():
        mine = [i for _region, t, i in ours.items if t == resource_type]
        if operation == "DeleteVpc":
            assert operation not in counts  # its subnets and group are still there: reported, not tried
            assert all(vpc in failed for vpc in mine)
            continue
        assert counts.get(operation) == attempts * len(mine), (operation, counts)
        for resource_id in mine:
            assert "throttled" in failed[resource_id] and f"all {attempts} attempts" in failed[resource_id]


def test_spot_cluster_absent_under_throttling_on_every_call_is_bounded_too(aws, run_module, policies):
    aws.throttle(EVERY_CALL)
    result = run_module("spot_cluster", {"cluster_name": "demo", "state": "absent",
                                         "regions": [{"region": "us-east-1"}]})
    assert result.failed
    attempts = policies["default"]["attempts"]
    counts = _ours(aws)
    assert counts and set(counts.values()) == {attempts}, counts
    assert "throttled" in result["msg"] and "run again" in result["msg"]
