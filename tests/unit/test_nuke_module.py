"""``tagged_resource_nuke`` against the emulator: what exists afterwards.

The world is made with boto3 (``test_nuke_world.py``), never with spot_cluster:
resources of two clusters in two regions, plus the same kinds of resource
untagged and tagged by another manager.
"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import botocore.exceptions
import pytest

_spec = importlib.util.spec_from_file_location("nuke_world", Path(__file__).with_name("test_nuke_world.py"))
world = sys.modules.get("nuke_world") or importlib.util.module_from_spec(_spec)
if "nuke_world" not in sys.modules:
    sys.modules["nuke_world"] = world
    _spec.loader.exec_module(world)

REGIONS = ["us-east-1", "eu-west-1"]
MODULE = "tagged_resource_nuke"


def ids(result) -> set[tuple[str, str, str]]:
    return {(r["region"], r["type"], r["id"]) for r in result["resources"]}


@pytest.fixture
def scene(aws):
    """alpha and beta in us-east-1, alpha in eu-west-1; foreign things in both regions."""
    alpha = world.build_ours("us-east-1", "alpha") | world.build_ours("eu-west-1", "alpha")
    beta = world.build_ours("us-east-1", "beta")
    foreign = world.build_foreign("us-east-1", "untagged") | world.build_foreign("eu-west-1", "other")
    before = world.inventory(REGIONS)
    assert (alpha | beta | foreign).items <= before
    fleet_instances = {
        (region, "instances", i["InstanceId"])
        for region, _, fleet in (alpha | beta).of_type("ec2_fleets")
        for i in world.ec2(region).describe_fleet_instances(FleetId=fleet)["ActiveInstances"]
    }
    return {"alpha": alpha, "beta": beta, "ours": alpha | beta, "foreign": foreign, "before": before,
            "fleet_instances": fleet_instances}


def test_every_type_is_in_the_scene(scene):
    assert {t for _, t, _ in scene["ours"].items} == set(world.TYPES)
    for region, variant in (("us-east-1", "untagged"), ("eu-west-1", "other")):
        assert {t for r, t, _ in scene["foreign"].items if r == region} == set(world.TYPES), variant


def test_check_mode_lists_exactly_ours_and_deletes_nothing(scene, run_module):
    result = run_module(MODULE, {"regions": REGIONS}, check_mode=True)
    assert not result.failed, result["msg"]
    assert result.changed
    assert ids(result) == scene["ours"].items
    assert {r["action"] for r in result["resources"]} == {"would_delete"}
    assert result["counts"]["would_delete"] == len(scene["ours"].items)
    assert result["counts"]["by_region"]["eu-west-1"]["would_delete"] == len(
        [i for i in scene["ours"].items if i[0] == "eu-west-1"])
    assert result["counts"]["by_type"]["vpcs"]["would_delete"] == 3
    assert world.inventory(REGIONS) == scene["before"]
    tags = {r["id"]: r["tags"] for r in result["resources"]}
    assert all(t["bacalhau:managed-by"] == "bacalhau.aws_spot" for t in tags.values())


def test_without_force_nothing_is_deleted_and_it_says_how(scene, run_module):
    result = run_module(MODULE, {"regions": REGIONS})
    assert result.failed
    assert "force: true" in result["msg"] and "-e force=true" in result["msg"]
    assert ids(result) == scene["ours"].items
    assert world.inventory(REGIONS) == scene["before"]


def test_force_deletes_ours_everywhere_and_nothing_else_then_nothing_left(scene, run_module, aws):
    aws.reset_calls()
    result = run_module(MODULE, {"regions": REGIONS, "force": True})
    assert not result.failed, result["msg"]
    # a maintain fleet (it would launch again what is terminated) is gone before any termination
    log = aws.calls()["log"]
    for region in REGIONS:
        fleets_done = max(e["end"] for e in log if e["region"] == region and e["operation"] == "DeleteFleets")
        assert all(e["start"] >= fleets_done for e in log
                   if e["region"] == region and e["operation"] == "TerminateInstances"), region
    assert result.changed
    assert {r["action"] for r in result["resources"]} == {"deleted"}
    after = world.inventory(REGIONS)
    assert not (scene["ours"].items & after), "ours left behind"
    assert scene["foreign"].items <= after, "a foreign resource was deleted"
    # the default VPCs and what is in them are still there, and so is every instance not ours
    for region in REGIONS:
        c = world.ec2(region)
        default_vpc = c.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])["Vpcs"][0]["VpcId"]
        assert (region, "vpcs", default_vpc) in after
        in_default = {s["SubnetId"] for s in c.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [default_vpc]}])["Subnets"]}
        assert in_default and {(region, "subnets", s) for s in in_default} <= after
    # (our fleets' instances went with the fleets)
    instances_before = {i for i in scene["before"] if i[1] == "instances"} - scene["ours"].items - scene["fleet_instances"]
    assert instances_before <= after, "an instance that is not ours was terminated"
    assert scene["fleet_instances"] and not (scene["fleet_instances"] & after)
    # the spot request's instance was not tagged as ours: left alone, and said so
    notes = [r.get("note", "") for r in result["resources"] if r["type"] == "spot_instance_requests"]
    assert all("left alone" in n for n in notes), notes

    again = run_module(MODULE, {"regions": REGIONS, "force": True})
    assert not again.failed and not again.changed
    assert again["resources"] == [] and again["counts"]["total"] == 0
    plan = run_module(MODULE, {"regions": REGIONS}, check_mode=True)
    assert not plan.changed and not plan.failed


def test_cluster_name_narrows_to_one_cluster(scene, run_module):
    result = run_module(MODULE, {"regions": REGIONS, "cluster_name": "alpha", "force": True})
    assert not result.failed, result["msg"]
    assert ids(result) == scene["alpha"].items
    after = world.inventory(REGIONS)
    assert not (scene["alpha"].items & after)
    assert scene["beta"].items <= after, "another cluster's resources were deleted"
    assert {t for _, t, _ in scene["beta"].items} == set(world.TYPES)
    assert scene["foreign"].items <= after


def test_regions_narrow_and_extra_tags_narrow(scene, run_module):
    result = run_module(MODULE, {"regions": ["eu-west-1"], "force": True})
    assert not result.failed, result["msg"]
    after = world.inventory(REGIONS)
    assert not ({i for i in scene["ours"].items if i[0] == "eu-west-1"} & after)
    assert {i for i in scene["ours"].items if i[0] == "us-east-1"} <= after

    # an extra tag filter only narrows: Name=bacalhau-beta matches beta's tagged things
    narrowed = run_module(MODULE, {"regions": ["us-east-1"], "tags": {"Name": "bacalhau-beta"}}, check_mode=True)
    assert ids(narrowed) and ids(narrowed) <= scene["beta"].items


def test_resource_types_subset(scene, run_module):
    result = run_module(MODULE, {"regions": REGIONS, "resource_types": ["key_pairs", "launch_templates"], "force": True})
    assert not result.failed, result["msg"]
    assert {r["type"] for r in result["resources"]} == {"key_pairs", "launch_templates"}
    after = world.inventory(REGIONS)
    assert not (scene["ours"].of_type("key_pairs") & after)
    assert scene["ours"].of_type("vpcs") <= after


@pytest.mark.parametrize(
    "args, words",
    [
        ({"tags": {"bacalhau:managed-by": "someone-else"}}, "may not override"),
        ({"cluster_name": ""}, "cluster_name is empty"),
        ({"cluster_name": "alpha", "tags": {"bacalhau:cluster": "beta"}}, "contradicts"),
        ({"regions": []}, "empty list"),
        ({"regions": ["not a region"]}, "not a region name"),
        ({"resource_types": []}, "empty list"),
        ({"resource_types": ["buckets"]}, "value of resource_types must be one or more of"),
    ],
)
def test_unsafe_or_bad_input_refused_before_any_call(aws, run_module, args, words):
    world.build_ours("us-east-1", "alpha", full=False)
    before = world.inventory(["us-east-1"])
    aws.reset_calls()
    result = run_module(MODULE, dict(args, force=True))
    assert result.failed
    assert words in result["msg"]
    assert aws.calls()["total"] == 0
    assert world.inventory(["us-east-1"]) == before


def test_eni_attached_to_a_foreign_instance_is_reported_not_left_silently(aws, run_module):
    ours = world.build_ours("us-east-1", "alpha", full=False)
    c = world.ec2("us-east-1")
    subnet = sorted(i[2] for i in ours.of_type("subnets"))[0]
    zone = c.describe_subnets(SubnetIds=[subnet])["Subnets"][0]["AvailabilityZone"]
    # somebody else's instance in our subnet, with one of our ENIs attached to it
    foreign = c.run_instances(ImageId=world.image("us-east-1"), InstanceType="t3.micro", MinCount=1, MaxCount=1,
                              SubnetId=subnet)["Instances"][0]["InstanceId"]
    eni = c.create_network_interface(SubnetId=subnet, TagSpecifications=world.spec(
        "network-interface", world.tags_for("alpha")))["NetworkInterface"]["NetworkInterfaceId"]
    c.attach_network_interface(NetworkInterfaceId=eni, InstanceId=foreign, DeviceIndex=1)
    assert zone

    result = run_module(MODULE, {"regions": ["us-east-1"], "force": True})
    assert result.failed
    failed = {r["id"]: r["error"] for r in result["resources"] if r["action"] == "failed"}
    assert foreign in failed[eni] and "never touches it" in failed[eni]
    assert eni in failed[subnet]
    vpc = next(iter(ours.of_type("vpcs")))[2]
    assert subnet in failed[vpc]
    assert eni in result["msg"] and "remain" in result["msg"]
    # the foreign instance still runs with the ENI attached; the rest of ours is gone
    after = world.inventory(["us-east-1"])
    assert ("us-east-1", "instances", foreign) in after
    assert ("us-east-1", "network_interfaces", eni) in after
    assert not (ours.of_type("instances") | ours.of_type("key_pairs") | ours.of_type("internet_gateways")) & after
    # every resource is accounted for: deleted or failed, none skipped
    assert {r["action"] for r in result["resources"]} <= {"deleted", "failed"}


def test_group_referenced_by_a_foreign_group_is_reported_and_the_foreign_rule_kept(aws, run_module):
    ours = world.build_ours("us-east-1", "alpha", full=False)
    c = world.ec2("us-east-1")
    groups = {i[2] for i in ours.of_type("security_groups")}
    target = sorted(groups)[0]
    other_vpc = c.create_vpc(CidrBlock="172.31.0.0/16")["Vpc"]["VpcId"]
    foreign_sg = c.create_security_group(GroupName="theirs", Description="not ours", VpcId=other_vpc)["GroupId"]
    c.authorize_security_group_ingress(GroupId=foreign_sg, IpPermissions=[
        {"IpProtocol": "tcp", "FromPort": 443, "ToPort": 443, "UserIdGroupPairs": [{"GroupId": target}]}])

    result = run_module(MODULE, {"regions": ["us-east-1"], "force": True})
    assert result.failed
    failed = {r["id"]: r["error"] for r in result["resources"] if r["action"] == "failed"}
    assert set(failed) == {target, next(iter(ours.of_type("vpcs")))[2]}, failed
    assert foreign_sg in failed[target]
    # the other group of ours (they referenced each other) is gone; the foreign rule is intact
    assert (groups - {target}).isdisjoint({i[2] for i in world.inventory(["us-east-1"])})
    rules = c.describe_security_groups(GroupIds=[foreign_sg])["SecurityGroups"][0]["IpPermissions"]
    assert any(p.get("GroupId") == target for r in rules for p in r["UserIdGroupPairs"])

    # once they drop their rule, a second run finishes the job
    c.revoke_security_group_ingress(GroupId=foreign_sg, IpPermissions=[
        {"IpProtocol": "tcp", "FromPort": 443, "ToPort": 443, "UserIdGroupPairs": [{"GroupId": target}]}])
    again = run_module(MODULE, {"regions": ["us-east-1"], "force": True})
    assert not again.failed, again["msg"]
    assert {r["id"] for r in again["resources"]} == set(failed)
    assert not (ours.items & world.inventory(["us-east-1"]))


def test_a_foreign_eni_in_our_vpc_blocks_only_the_subnet_group_and_vpc_it_uses(aws, run_module):
    ours = world.build_ours("us-east-1", "alpha", full=False)
    c = world.ec2("us-east-1")
    vpc = next(iter(ours.of_type("vpcs")))[2]
    subnet = sorted(i[2] for i in ours.of_type("subnets"))[1]
    group = sorted(i[2] for i in ours.of_type("security_groups"))[0]
    # somebody else's ENI (untagged) in one of our subnets, in one of our groups
    theirs = c.create_network_interface(SubnetId=subnet, Groups=[group])["NetworkInterface"]["NetworkInterfaceId"]

    result = run_module(MODULE, {"regions": ["us-east-1"], "force": True})
    assert result.failed
    failed = {r["id"]: r["error"] for r in result["resources"] if r["action"] == "failed"}
    assert set(failed) == {subnet, group, vpc}, failed
    for blocked in (subnet, group, vpc):
        assert failed[blocked].startswith(f"DependencyViolation: {blocked} is still used by "), failed[blocked]
        assert f"network interface {theirs}" in failed[blocked]
    assert f"subnet {subnet}" in failed[vpc] and f"security group {group}" in failed[vpc]
    # the foreign ENI is untouched; of ours, only what it uses is left
    after = world.inventory(["us-east-1"])
    assert ("us-east-1", "network_interfaces", theirs) in after
    assert ours.items & after == {("us-east-1", "subnets", subnet), ("us-east-1", "security_groups", group),
                                  ("us-east-1", "vpcs", vpc)}


def test_a_region_is_deleted_in_five_round_trips(aws, run_module):
    """A cluster (network with a route table of its own, instances, key pair) goes in five round
    trips: discovery, terminate, wait with the checks beside it, deletes, VPC. At 300 ms per call,
    calls sent together overlap however busy the machine is, so the depth is the code's order alone."""
    from tests.bench.analysis import chain_depth

    made = world.Made()
    tags = world.tags_for("alpha")
    net = world.build_network("us-east-1", tags, made, "alpha")
    c = world.ec2("us-east-1")
    c.create_key_pair(KeyName="alpha-key", TagSpecifications=world.spec("key-pair", tags))
    c.run_instances(ImageId=world.image("us-east-1"), InstanceType="t3.micro", MinCount=3, MaxCount=3,
                    SubnetId=net["subnets"][0], SecurityGroupIds=[net["sg"]],
                    TagSpecifications=world.spec("instance", tags))
    aws.latency(300)
    aws.reset_calls()
    result = run_module(MODULE, {"regions": ["us-east-1"], "force": True})
    assert not result.failed, result["msg"]
    depth = chain_depth(aws.calls()["log"])
    assert depth <= 5, depth


def test_every_type_is_deleted_in_some_round():
    from ansible_collections.bacalhau.aws_spot.plugins.module_utils._deletion import delete as _nuke_delete
    from ansible_collections.bacalhau.aws_spot.plugins.module_utils._deletion.spec import RESOURCE_TYPES

    rounds = [_nuke_delete.ROUND_B, _nuke_delete.ROUND_E, _nuke_delete.ROUND_F]
    assert sorted(t for r in rounds for t in r) == sorted(RESOURCE_TYPES)


def test_throttling_is_survived(scene, run_module, aws):
    aws.throttle(40, operations=[
        "DescribeInstances", "TerminateInstances", "DescribeSecurityGroups", "DeleteSecurityGroup",
        "DescribeSubnets", "DeleteSubnet", "DescribeVpcs", "DeleteVpc", "DescribeNetworkInterfaces",
    ])
    result = run_module(MODULE, {"regions": REGIONS, "force": True})
    assert not result.failed, result["msg"]
    assert not (scene["ours"].items & world.inventory(REGIONS))
    assert scene["foreign"].items <= world.inventory(REGIONS)
    faults = [c for c in aws.calls()["log"] if c["fault"]]
    assert len(faults) == 40


def test_regions_omitted_means_every_enabled_region(aws, run_module):
    ours = world.build_ours("ap-southeast-2", "alpha", full=False) | world.build_ours("us-west-2", "beta", full=False)
    # the emulator lists opt-in regions too, marked not-opted-in (AWS leaves them out): skipped
    enabled = [r["RegionName"] for r in world.ec2("us-east-1").describe_regions()["Regions"]
               if r["OptInStatus"] != "not-opted-in"]
    assert "ap-east-1" not in enabled
    result = run_module(MODULE, {}, check_mode=True)
    assert not result.failed, result["msg"]
    assert sorted(result["regions"]) == sorted(enabled)
    assert ids(result) == ours.items


def test_dependency_violation_is_retried_then_reported(monkeypatch):
    """The retry helper on its own: AWS answers DependencyViolation for a while after terminations."""
    from ansible_collections.bacalhau.aws_spot.plugins.module_utils._aws import common as _common
    from ansible_collections.bacalhau.aws_spot.plugins.module_utils._deletion import context as _nuke_delete
    from ansible_collections.bacalhau.aws_spot.plugins.module_utils._deletion.spec import Resource

    monkeypatch.setitem(_common.RETRY_POLICIES, "in_use", dict(_common.RETRY_POLICIES["in_use"], delay=0.01, max_delay=0.01))
    violation = botocore.exceptions.ClientError(
        {"Error": {"Code": "DependencyViolation", "Message": "resource sg-1 has a dependent object"}}, "DeleteSecurityGroup")
    answers = [violation, violation]

    def flaky():
        if answers:
            raise answers.pop()
        return {}

    res = Resource(region="us-east-1", type="security_groups", id="sg-1", name=None, tags={})
    assert _nuke_delete.attempt(res, flaky, dependency=True)
    assert res.action == "deleted"

    def stuck():
        raise violation

    res = Resource(region="us-east-1", type="security_groups", id="sg-1", name=None, tags={})
    assert not _nuke_delete.attempt(res, stuck, dependency=True)
    assert res.action == "failed" and res.error.startswith("DependencyViolation")

    gone = botocore.exceptions.ClientError({"Error": {"Code": "InvalidGroup.NotFound", "Message": "x"}}, "DeleteSecurityGroup")

    def missing():
        raise gone

    res = Resource(region="us-east-1", type="security_groups", id="sg-1", name=None, tags={})
    assert _nuke_delete.attempt(res, missing)
    assert res.action == "deleted" and res.note == "already gone"


def test_a_region_that_fails_never_hides_or_stops_the_others(aws, run_module):
    ours = world.build_ours("us-east-1", "alpha", full=False)
    # a region the emulator does not know answers HTTP 500, as a broken region would
    result = run_module(MODULE, {"regions": ["us-east-1", "xx-fake-1"], "force": True})
    assert result.failed
    assert set(result["region_errors"]) == {"xx-fake-1"}
    assert "xx-fake-1" in result["msg"]
    assert ids(result) == ours.items
    assert {r["action"] for r in result["resources"]} == {"deleted"}
    assert not (ours.items & world.inventory(["us-east-1"]))


def test_tags_may_repeat_our_own_managed_by_value(aws, run_module):
    ours = world.build_ours("us-east-1", "alpha", full=False)
    result = run_module(MODULE, {"regions": ["us-east-1"], "tags": {"bacalhau:managed-by": "bacalhau.aws_spot",
                                                                     "bacalhau:cluster": "alpha"}}, check_mode=True)
    assert not result.failed, result["msg"]
    assert ids(result) == ours.items
    assert "cluster 'alpha'" in result["msg"]


def test_fleets_found_even_where_ec2_refuses_tag_filters_on_describe_fleets():
    """DescribeFleets does not document tag filters: if EC2 refuses them, our own tag check decides."""
    from ansible_collections.bacalhau.aws_spot.plugins.module_utils._deletion import discover as _nuke_discover
    from ansible_collections.bacalhau.aws_spot.plugins.module_utils._deletion.spec import build_spec

    ours = {"Key": "bacalhau:managed-by", "Value": "bacalhau.aws_spot"}
    fleets = [
        {"FleetId": "fleet-ours", "FleetState": "active", "Tags": [ours, {"Key": "bacalhau:cluster", "Value": "a"}]},
        {"FleetId": "fleet-theirs", "FleetState": "active", "Tags": [{"Key": "bacalhau:managed-by", "Value": "x"}]},
        {"FleetId": "fleet-untagged", "FleetState": "active"},
        {"FleetId": "fleet-gone", "FleetState": "deleted_terminating", "Tags": [ours]},
    ]

    class Pages:
        def __init__(self, filters):
            self.filters = filters

        def build_full_result(self):
            if any(f["Name"].startswith("tag:") for f in self.filters):
                raise botocore.exceptions.ClientError(
                    {"Error": {"Code": "InvalidParameterValue", "Message": "unknown filter"}}, "DescribeFleets")
            return {"Fleets": fleets}

    class Client:
        def get_paginator(self, name):
            assert name == "describe_fleets"
            return self

        def paginate(self, Filters):  # noqa: N803 (boto3's spelling)
            return Pages(Filters)

    spec = build_spec({"regions": ["us-east-1"], "resource_types": ["ec2_fleets"]})
    found = _nuke_discover.discover_type(Client(), "us-east-1", spec, "ec2_fleets")
    assert [r.id for r in found] == ["fleet-ours"]
