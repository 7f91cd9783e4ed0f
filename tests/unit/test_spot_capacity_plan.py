"""spot_capacity_plan against the emulator's spot market: what is chosen, what is avoided, what is refused.

The market control API makes pools cheap or dear and zones or regions unlikely to hold; what
is asserted is the plan the module returns (and that it made no write call).
"""
from __future__ import annotations

import boto3
import pytest

MODULE = "spot_capacity_plan"
NEEDS = {"vcpus": 2, "memory_gib": 4, "architectures": ["x86_64"]}


@pytest.fixture(autouse=True)
def own_price_cache(tmp_path, monkeypatch):
    """Every test its own on-demand price cache, so that market rules on prices are seen."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def plan(run_module, _check=False, **kw):
    return run_module(MODULE, dict(NEEDS, **kw), check_mode=_check)


def reads_only(aws) -> bool:
    return not any(op.startswith(("Run", "Create", "Import", "Terminate", "Delete", "Modify", "Authorize"))
                   for op in aws.calls()["by_operation"])


def by_region(result) -> dict:
    return {r["region"]: r for r in result["regions"]}


def test_the_cheapest_pool_is_chosen_and_listed_first(aws, run_module):
    for region in ("eu-west-1", "us-east-1"):
        aws.spot_price(region, price=0.05)  # every pool the same ...
    aws.spot_price("eu-west-1", price=0.011, availability_zone="eu-west-1b", instance_type="c5.large")  # ... but one
    result = plan(run_module, nodes=3, regions=["eu-west-1", "us-east-1"], max_regions=1)
    assert not result.failed, result.get("msg")
    assert [e["region"] for e in result["cluster_regions"]] == ["eu-west-1"]
    entry = result["cluster_regions"][0]
    assert entry["count"] == 3 and entry["instance_types"][0] == "c5.large"
    assert entry["availability_zones"][0] == "eu-west-1b"
    first = result["placements"][0]
    assert (first["availability_zone"], first["instance_type"], first["spot_price"]) == ("eu-west-1b", "c5.large", 0.011)
    assert by_region(result)["us-east-1"]["reason"].startswith("dearer than the 1 chosen")
    assert not result.changed and reads_only(aws)


def test_the_plan_costs_what_spot_cluster_will_check(aws, run_module):
    """The file's entry, given to spot_cluster as it is, is priced the same (so create.yml's cap agrees)."""
    result = plan(run_module, nodes=5, regions=["eu-west-1"], max_regions=1)
    assert not result.failed, result.get("msg")
    checked = run_module("spot_cluster", {"cluster_name": "planned", "regions": result["cluster_regions"]},
                         check_mode=True)
    assert not checked.failed, checked.get("msg")
    assert checked["plan_cost"]["expected"] == pytest.approx(result["hourly_cost"]["compute_expected"])
    assert checked["plan_cost"]["worst_case"] == pytest.approx(result["hourly_cost"]["compute_worst_case"])
    assert sum(row["count"] for row in result["placements"]) == 5


def test_a_zone_and_a_region_of_low_score_are_avoided(aws, run_module):
    aws.spot_price("eu-west-1", price=0.05)
    aws.spot_price("eu-west-1", price=0.005, availability_zone="eu-west-1a")  # the cheapest zone ...
    aws.placement_score("eu-west-1", 1, availability_zone="eu-west-1a")  # ... will not hold
    aws.spot_price("us-east-1", price=0.001)  # the cheapest region ...
    aws.placement_score("us-east-1", 2)  # ... will not hold either
    result = plan(run_module, nodes=4, regions=["eu-west-1", "us-east-1"], max_regions=2)
    assert not result.failed, result.get("msg")
    assert [e["region"] for e in result["cluster_regions"]] == ["eu-west-1"]
    assert "eu-west-1a" not in result["cluster_regions"][0]["availability_zones"]
    assert {row["availability_zone"] for row in result["placements"]}.isdisjoint({"eu-west-1a"})
    regions = by_region(result)
    assert regions["eu-west-1"]["excluded_zones"] == ["eu-west-1a"]
    assert regions["us-east-1"]["reason"] == "spot placement score 2 is under min_placement_score 3"
    assert result["cluster_regions"][0]["count"] == 4  # the one region left takes them all


def test_over_the_cap_is_refused_naming_the_numbers(aws, run_module):
    aws.spot_price("eu-west-1", price=0.02)
    aws.on_demand_price("t3.small", 0.03, region="eu-west-1")
    result = plan(run_module, nodes=10, regions=["eu-west-1"], max_hourly_cost=0.2)
    assert result.failed
    # 10 x 0.02 for the nodes plus 0.03 for the orchestrator: 0.23, over 0.2
    assert "could cost up to 0.2300" in result["msg"] and "above max_hourly_cost 0.2000" in result["msg"]
    assert "orchestrator t3.small on-demand in eu-west-1: 0.0300" in result["msg"]
    assert result["hourly_cost"]["worst_case"] == pytest.approx(0.23)
    assert reads_only(aws)


def test_the_orchestrator_is_priced_with_the_plan(aws, run_module):
    aws.spot_price("eu-west-1", price=0.02)
    aws.on_demand_price("t3.medium", 0.5, region="eu-west-1")
    result = plan(run_module, nodes=2, regions=["eu-west-1"],
                  orchestrator={"instance_type": "t3.medium", "market": "on-demand"})
    assert not result.failed, result.get("msg")
    assert result["orchestrator"]["hourly_cost"] == 0.5
    assert result["hourly_cost"]["expected"] == pytest.approx(2 * 0.02 + 0.5)
    assert result["cluster_orchestrator"] == {"mode": "managed", "region": "eu-west-1", "instance_type": "t3.medium",
                                              "market": "on-demand"}


def test_the_cap_takes_fewer_types_before_it_refuses(aws, run_module):
    aws.spot_price("eu-west-1", price=0.5)  # every other type is dear ...
    aws.spot_price("eu-west-1", price=0.01, instance_type="c5.large")  # ... one is cheap everywhere
    result = plan(run_module, nodes=4, regions=["eu-west-1"], max_hourly_cost=0.2,
                  orchestrator={"mode": "external"})
    assert not result.failed, result.get("msg")
    assert result["cluster_regions"][0]["instance_types"] == ["c5.large"]
    assert result["hourly_cost"]["worst_case"] == pytest.approx(0.04)
    assert any("1 instance type(s) per region" in note for note in result["notes"])


def test_max_regions_is_honoured_and_nodes_are_shared(aws, run_module):
    regions = ["eu-west-1", "us-east-1", "us-west-2"]
    for price, region in zip((0.01, 0.02, 0.03), regions):
        aws.spot_price(region, price=price)
    result = plan(run_module, nodes=5, regions=regions, max_regions=2)
    assert not result.failed, result.get("msg")
    assert [(e["region"], e["count"]) for e in result["cluster_regions"]] == [("eu-west-1", 3), ("us-east-1", 2)]
    assert by_region(result)["us-west-2"]["reason"].startswith("dearer than the 2 chosen")

    short = plan(run_module, nodes=10, regions=regions, max_regions=2, max_per_region=4)
    assert short.failed and "only 8 of the 10 nodes fit" in short["msg"]


def test_regions_all_means_the_enabled_regions(aws, run_module):
    enabled = sorted(r["RegionName"] for r in boto3.client("ec2", region_name="us-east-1").describe_regions()["Regions"]
                     if r["OptInStatus"] != "not-opted-in")
    assert "ap-east-1" not in enabled  # opt-in, not opted in
    aws.reset_calls()  # count the module's calls only
    result = plan(run_module, nodes=3, regions=["all"], max_regions=3, _check=True)
    assert not result.failed, result.get("msg")
    assert sorted(r["region"] for r in result["regions"]) == enabled
    assert len(result["cluster_regions"]) == 3 and not result.changed
    calls = aws.calls()["by_operation"]
    assert calls["DescribeRegions"] == 1 and calls["GetSpotPlacementScores"] == 2  # one pair for every region


def test_bad_needs_are_refused_together_before_any_call(aws, run_module):
    result = run_module(MODULE, {"nodes": 0, "vcpus": "many", "memory_gib": 4, "regions": ["all", "eu-west-1"]})
    assert result.failed
    for part in ("nodes: 0 must be from 1", "requirements.vcpus", "'all' stands alone"):
        assert part in result["msg"]
    assert aws.calls()["by_operation"] == {}


def test_no_region_that_can_take_nodes_is_refused(aws, run_module):
    result = plan(run_module, nodes=2, regions=["eu-west-1"], vcpus=2, memory_gib=1000)
    assert result.failed and "no region can take any of the 2 nodes" in result["msg"]
    assert "no instance type there meets the requirements" in result["msg"]
