"""spot_cluster's placement against the emulator's spot market.

The market control API (``/_emulator/market``) makes pools cheap or dear, zones and
regions likely or unlikely to hold (spot placement scores), and types missing in zones;
capacity faults refuse launches. What is asserted is where the instances are afterwards.
"""
from __future__ import annotations

from collections import Counter

import boto3
import pytest

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB0Cr2k3sC0oT6c8UhC6mYp0a6c3oOz5sQmX0y1d2abc tester@example"
WRITES = ("RunInstances", "CreateVpc", "CreateSubnet", "CreateInternetGateway", "CreateSecurityGroup",
          "ImportKeyPair", "TerminateInstances", "CreateTags")
FALLBACK = ("bacalhau:market", "on-demand-fallback")


@pytest.fixture(autouse=True)
def own_price_cache(tmp_path, monkeypatch):
    """Every test its own on-demand price cache, so that market rules on prices are seen."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def live(region: str, cluster: str = "place") -> list[dict]:
    pages = boto3.client("ec2", region_name=region).describe_instances(Filters=[
        {"Name": "instance-state-name", "Values": ["pending", "running"]},
        {"Name": "tag:bacalhau:cluster", "Values": [cluster]}])["Reservations"]
    return [i for r in pages for i in r["Instances"]]


def tags(resource: dict) -> dict:
    return {t["Key"]: t["Value"] for t in resource.get("Tags") or resource.get("TagSet") or []}


def zones_of(instances: list[dict]) -> Counter:
    return Counter(i["Placement"]["AvailabilityZone"] for i in instances)


def writes(aws) -> dict:
    return {op: n for op, n in aws.calls()["by_operation"].items() if op in WRITES}


def args(regions: list[dict], **kw) -> dict:
    out = {"cluster_name": "place", "regions": regions, "ssh_public_key": KEY, "ssh_cidrs": ["198.51.100.0/24"]}
    out.update(kw)
    return out


def test_the_cheapest_pools_that_hold_are_chosen(aws, run_module):
    region = "us-east-1"
    aws.spot_price(region, price=0.05)  # every pool the same ...
    aws.spot_price(region, price=0.011, availability_zone="us-east-1c", instance_type="t3a.small")  # ... but two
    aws.spot_price(region, price=0.004, availability_zone="us-east-1b", instance_type="t3.small")
    aws.placement_score(region, 1, availability_zone="us-east-1b")  # the cheapest will not hold
    want = {"vcpus": {"min": 2, "max": 2}, "memory_gib": {"min": 2, "max": 2}, "architectures": ["x86_64"],
            "burstable": "included"}  # AWS leaves burstable types out by default
    request = args([{"region": region, "count": 2, "instance_requirements": want}],
                   availability_zone_strategy="packed")

    planned = run_module("spot_cluster", request, check_mode=True)
    assert not planned.failed, planned.get("msg")
    placement = planned["regions"][region]["placement"]
    assert placement["from_requirements"] and {"t3.small", "t3a.small"} <= set(placement["instance_types"])
    first = placement["pools"][0]
    assert (first["instance_type"], first["availability_zone"], first["spot_price"]) == ("t3a.small", "us-east-1c", 0.011)
    assert placement["zone_scores"]["us-east-1b"] == 1
    # the low-score zone's pools come after every pool of a good score, cheap as they are
    ranked = [(p["instance_type"], p["availability_zone"]) for p in placement["pools"]]
    assert ranked.index(("t3.small", "us-east-1b")) > max(
        i for i, p in enumerate(placement["pools"]) if p["zone_score"] is None or p["zone_score"] >= 3)
    assert planned["plan_cost"]["expected"] == pytest.approx(2 * 0.011)
    assert writes(aws) == {} and not live(region)

    done = run_module("spot_cluster", request)
    assert not done.failed, done.get("msg")
    assert {(i["InstanceType"], i["Placement"]["AvailabilityZone"]) for i in live(region)} == {("t3a.small", "us-east-1c")}
    assert len(live(region)) == 2
    assert done["regions"][region]["attempts"][0]["launched"] == 2
    assert not run_module("spot_cluster", request).changed


def test_nodes_are_spread_over_zones_balanced_within_one(aws, run_module):
    region = "eu-west-1"  # three zones
    request = args([{"region": region, "count": 5, "instance_types": ["t3.small"]}])
    aws.latency(100)  # calls sent together overlap in the log (moto itself serves one at a time)
    first = run_module("spot_cluster", request)
    aws.latency(0)
    assert not first.failed, first.get("msg")
    assert sorted(zones_of(live(region)).values()) == [1, 2, 2]
    # one launch per zone, all at once: they overlap in time
    launches = [e for e in aws.calls()["log"] if e["operation"] == "RunInstances"]
    assert len(launches) == 3
    assert max(e["start"] for e in launches) < min(e["end"] for e in launches)
    assert not run_module("spot_cluster", request).changed

    request["regions"][0]["count"] = 7  # the new nodes go where there are fewest
    assert run_module("spot_cluster", request).changed
    assert sorted(zones_of(live(region)).values()) == [2, 2, 3]


def test_a_zone_without_room_hands_its_share_to_the_others(aws, run_module):
    region = "eu-west-1"
    aws.capacity_error(region, availability_zone="eu-west-1a", instance_type="t3.small", market="spot")
    aws.placement_score(region, 8, availability_zone="eu-west-1a")  # the score has not caught up yet
    result = run_module("spot_cluster", args([{"region": region, "count": 3, "instance_types": ["t3.small"]}]))
    assert not result.failed, result.get("msg")
    placed = zones_of(live(region))
    assert sum(placed.values()) == 3 and "eu-west-1a" not in placed and max(placed.values()) - min(placed.values()) <= 1


def test_a_zone_with_a_low_score_is_avoided(aws, run_module):
    region = "us-east-1"
    aws.placement_score(region, 1, availability_zone="us-east-1a")
    aws.placement_score(region, 2, availability_zone="us-east-1d")
    result = run_module("spot_cluster", args([{"region": region, "count": 6, "instance_types": ["t3.small"]}]))
    assert not result.failed, result.get("msg")
    placed = zones_of(live(region))
    assert sum(placed.values()) == 6
    assert "us-east-1a" not in placed and "us-east-1d" not in placed
    assert max(placed.values()) - min(placed.values()) <= 1
    assert {launch["availability_zone"] for launch in result["regions"][region]["placement"]["launches"]}.isdisjoint(
        {"us-east-1a", "us-east-1d"})


def test_a_zone_with_no_spot_price_is_not_used_for_spot(aws, run_module):
    region = "eu-west-1"
    aws.offering(region, False, availability_zone="eu-west-1b", instance_type="t3.small")
    result = run_module("spot_cluster", args([{"region": region, "count": 3, "instance_types": ["t3.small"]}]),
                        check_mode=True)
    assert not result.failed, result.get("msg")
    placement = result["regions"][region]["placement"]
    assert "eu-west-1b" not in {p["availability_zone"] for p in placement["pools"]}
    assert any(e["availability_zone"] == "eu-west-1b" for e in placement["excluded"])


def test_a_plan_over_the_cost_cap_is_refused_with_nothing_created(aws, run_module):
    regions = [{"region": "us-east-1", "count": 3, "instance_types": ["t3.small"]},
               {"region": "eu-west-1", "count": 2, "instance_types": ["t3.small"]}]
    for check in (True, False):
        result = run_module("spot_cluster", args(regions, max_hourly_cost=0.01), check_mode=check)
        assert result.failed
        assert "max_hourly_cost 0.0100" in result["msg"] and "nothing was created" in result["msg"]
        assert "us-east-1: up to" in result["msg"] and "eu-west-1: up to" in result["msg"]
        assert result["plan_cost"]["worst_case"] > 0.01
    assert writes(aws) == {}
    assert not live("us-east-1") and not live("eu-west-1")
    assert not boto3.client("ec2", region_name="us-east-1").describe_vpcs(
        Filters=[{"Name": "tag:bacalhau:cluster", "Values": ["place"]}])["Vpcs"]

    fits = run_module("spot_cluster", args(regions, max_hourly_cost=5))
    assert not fits.failed, fits.get("msg")
    assert fits["plan_cost"]["worst_case"] <= 5 and fits["estimated_hourly_cost"] <= fits["plan_cost"]["worst_case"]


def test_on_demand_fallbacks_count_against_the_cap(aws, run_module):
    region = "us-east-1"
    aws.on_demand_price("t3.small", 1.0, region=region)
    request = [{"region": region, "count": 2, "instance_types": ["t3.small"], "on_demand_max": 2}]
    refused = run_module("spot_cluster", args(request, market="spot-then-on-demand", max_hourly_cost=1.5),
                         check_mode=True)
    assert refused.failed and "max_hourly_cost 1.5000" in refused["msg"]
    assert refused["plan_cost"]["worst_case"] >= 2.0
    fewer = [dict(request[0], on_demand_max=1)]
    assert not run_module("spot_cluster", args(fewer, market="spot-then-on-demand", max_hourly_cost=1.5),
                          check_mode=True).failed


def test_too_many_nodes_are_refused_before_any_call(aws, run_module):
    result = run_module("spot_cluster", args([{"region": "us-east-1", "count": 60, "instance_types": ["t3.small"]},
                                              {"region": "eu-west-1", "count": 50, "instance_types": ["t3.small"]}]))
    assert result.failed and "110 nodes" in result["msg"] and "max_nodes 100" in result["msg"]
    assert aws.calls()["total"] == 0


def test_spot_then_on_demand_falls_back_then_returns_to_spot(aws, run_module):
    region = "eu-west-1"
    aws.capacity_error(region, market="spot")  # no spot anywhere in the region: its score drops to 1
    request = args([{"region": region, "count": 3, "instance_types": ["t3.small"], "on_demand_max": 2}],
                   market="spot-then-on-demand", allow_partial=True)
    first = run_module("spot_cluster", request)
    assert not first.failed, first.get("msg")
    stand_ins = live(region)
    assert len(stand_ins) == 2 and all("InstanceLifecycle" not in i for i in stand_ins)
    assert all(tags(i).get(FALLBACK[0]) == FALLBACK[1] for i in stand_ins)
    for instance in stand_ins:  # the stand-ins' volume and interface carry the cluster's tags too
        ec2 = boto3.client("ec2", region_name=region)
        volume = instance["BlockDeviceMappings"][0]["Ebs"]["VolumeId"]
        assert tags(ec2.describe_volumes(VolumeIds=[volume])["Volumes"][0])["bacalhau:cluster"] == "place"
        eni = instance["NetworkInterfaces"][0]["NetworkInterfaceId"]
        assert tags(ec2.describe_network_interfaces(NetworkInterfaceIds=[eni])["NetworkInterfaces"][0])[
            "bacalhau:cluster"] == "place"
    assert first["regions"][region]["shortfall"]  # the third: on_demand_max reached
    assert sorted(first["regions"][region]["on_demand_fallback"]) == sorted(i["InstanceId"] for i in stand_ins)

    still = run_module("spot_cluster", request)  # spot still gone: the stand-ins stay, nothing else happens
    assert not still.failed and not still.changed
    assert {i["InstanceId"] for i in live(region)} == {i["InstanceId"] for i in stand_ins}

    aws.clear_faults()  # spot is back
    back = run_module("spot_cluster", request)
    assert not back.failed, back.get("msg")
    assert back.changed and sorted(back["regions"][region]["replaced"]) == sorted(i["InstanceId"] for i in stand_ins)
    now = live(region)
    assert len(now) == 3 and all(i.get("InstanceLifecycle") == "spot" for i in now)
    assert not {i["InstanceId"] for i in now} & {i["InstanceId"] for i in stand_ins}
    # make before break: the spot nodes were launched before the stand-ins were terminated
    log = aws.calls()["log"]
    last_launch = max(e["end"] for e in log if e["operation"] == "RunInstances")
    first_terminate = min(e["start"] for e in log if e["operation"] == "TerminateInstances")
    assert last_launch < first_terminate
    assert not run_module("spot_cluster", request).changed


def test_a_region_with_a_low_score_goes_to_on_demand_at_once(aws, run_module):
    region = "us-east-1"
    aws.placement_score(region, 1)
    request = args([{"region": region, "count": 2, "instance_types": ["t3.small"]}], market="spot-then-on-demand")
    result = run_module("spot_cluster", request)
    assert not result.failed, result.get("msg")
    assert {a["market"] for a in result["regions"][region]["attempts"]} == {"on-demand"}  # spot not tried
    assert all(tags(i).get(FALLBACK[0]) == FALLBACK[1] for i in live(region)) and len(live(region)) == 2
    assert "min_placement_score" in " ".join(result["regions"][region]["placement"]["notes"])


# --------------------------------------------------------------------------- through create.yml
from tests.integration.test_create_destroy import CREATE, cluster_vars, instances, ssh_key  # noqa: E402,F401


def test_create_yml_refuses_a_cluster_over_its_caps_with_nothing_created(playbook, ssh_key):  # noqa: F811
    over_cost = playbook(CREATE, extra_vars=cluster_vars(ssh_key, cluster_max_hourly_cost=0.001))
    assert over_cost.returncode != 0
    assert "max_hourly_cost 0.0010" in over_cost.stdout and "nothing was created" in over_cost.stdout
    over_nodes = playbook(CREATE, extra_vars=cluster_vars(ssh_key, cluster_max_nodes=3))  # 3 compute + 1 orchestrator
    assert over_nodes.returncode != 0
    assert "4 nodes" in over_nodes.stdout and "cluster_max_nodes 3" in over_nodes.stdout
    assert not instances("us-east-1") and not instances("eu-west-1")


def test_create_yml_passes_the_strategy_and_a_cap_that_fits(playbook, ssh_key):  # noqa: F811
    spread = cluster_vars(ssh_key, cluster_max_hourly_cost=5, cluster_availability_zone_strategy="spread",
                          cluster_regions=[{"region": "eu-west-1", "count": 3, "instance_types": ["t4g.small"]}])
    done = playbook(CREATE, extra_vars=spread)
    assert done.returncode == 0, done.stdout[-3000:]
    assert len(zones_of(instances("eu-west-1"))) == 3  # one in each of its three zones


@pytest.mark.parametrize("change, words", [
    ({"regions": [{"region": "us-east-1", "count": 1, "instance_types": ["t3.small"], "on_demand_max": 1}]},
     "on_demand_max: only applies to market=spot-then-on-demand"),
    ({"regions": [{"region": "us-east-1", "count": 1, "instance_types": ["t3.small"],
                   "instance_requirements": {"vcpus": {"min": 2}, "memory_gib": {"min": 2}}}]}, "not both"),
    ({"regions": [{"region": "us-east-1", "count": 1, "instance_requirements": {"vcpus": {"min": 2}}}]},
     "memory_gib: required"),
    ({"max_hourly_cost": -1}, "max_hourly_cost"),
    ({"min_placement_score": 11}, "min_placement_score"),
])
def test_bad_placement_input_creates_nothing(aws, run_module, change, words):
    request = args([{"region": "us-east-1", "count": 1, "instance_types": ["t3.small"]}])
    request.update(change)
    result = run_module("spot_cluster", request)
    assert result.failed and words in result["msg"] and "nothing was created" in result["msg"], result["msg"]
    assert aws.calls()["total"] == 0
