"""The placement engine (_capacity): pure functions, no AWS and no emulator."""
from __future__ import annotations

import pytest

from ansible_collections.bacalhau.aws_spot.plugins.module_utils._placement import pools as cap
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._placement import requirements as needs
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._placement import cost as pricing_caps

ZONES = ["us-east-1a", "us-east-1b", "us-east-1c"]


def pools_of(prices, scores=None, types=("t3.small", "t3a.small")):
    offered = {t: set(ZONES) for t in types}
    pools, _excluded = cap.gather_pools("us-east-1", list(types), ZONES, offered, prices, zone_scores=scores or {})
    return pools


# --------------------------------------------------------------------------- requirements
def test_requirements_become_aws_own_parameters():
    problems: list[str] = []
    req = needs.parse_requirements({"vcpus": {"min": 2, "max": 4}, "memory_gib": {"min": 3.5},
                                  "architectures": ["arm64"], "burstable": "excluded",
                                  "excluded_instance_types": ["t2.*"]}, "r", problems)
    assert problems == []
    params = needs.requirements_params(req)
    assert params == {
        "ArchitectureTypes": ["arm64"],
        "VirtualizationTypes": ["hvm"],
        "InstanceRequirements": {"VCpuCount": {"Min": 2, "Max": 4}, "MemoryMiB": {"Min": 3584},
                                 "BurstablePerformance": "excluded", "ExcludedInstanceTypes": ["t2.*"]},
    }
    assert needs.requirements_params(req, "x86_64")["ArchitectureTypes"] == ["x86_64"]
    scores = needs.score_params(["eu-west-1", "us-east-1"], 3, True, requirements=req)
    assert scores["InstanceRequirementsWithMetadata"] == params and "InstanceTypes" not in scores
    assert (scores["TargetCapacity"], scores["SingleAvailabilityZone"], scores["RegionNames"]) == (
        3, True, ["eu-west-1", "us-east-1"])
    by_types = needs.score_params(["us-east-1"], 0, False, instance_types=["t3.small", "t3.small"])
    # AWS refuses TargetCapacityUnitType without requirements (InvalidParameterCombination)
    assert by_types == {"TargetCapacity": 1, "SingleAvailabilityZone": False, "RegionNames": ["us-east-1"],
                        "InstanceTypes": ["t3.small"], "MaxResults": 1000}  # one page: no round more


@pytest.mark.parametrize("raw, words", [
    ({"memory_gib": {"min": 4}}, "vcpus: required"),
    ({"vcpus": {"min": 4, "max": 2}, "memory_gib": {"min": 1}}, "above max"),
    ({"vcpus": {"min": 2}, "memory_gib": {"min": 1}, "burstable": "maybe"}, "not one of included"),
    ({"vcpus": {"min": 2}, "memory_gib": {"min": 1}, "gpus": 1}, "unknown keys ['gpus']"),
    ({"vcpus": {"min": 2}, "memory_gib": {"min": 1}, "architectures": ["sparc"]}, "architectures"),
    ({"vcpus": {"min": 2}, "memory_gib": {"min": 1}, "allowed_instance_types": ["m5.*"],
      "excluded_instance_types": ["t3.*"]}, "exclude each other"),
])
def test_bad_requirements_are_named(raw, words):
    problems: list[str] = []
    assert needs.parse_requirements(raw, "regions[0].instance_requirements", problems) is None
    assert any(words in p for p in problems), problems


# --------------------------------------------------------------------------- pools and ranking
def test_a_zone_without_a_spot_price_is_not_offered_for_spot():
    prices = {("t3.small", "us-east-1a"): 0.01, ("t3.small", "us-east-1b"): 0.02}
    offered = {"t3.small": {"us-east-1a", "us-east-1b", "us-east-1c"}, "t3a.small": {"us-east-1c"}}
    pools, excluded = cap.gather_pools("us-east-1", ["t3.small", "t3a.small"], ZONES, offered, prices)
    assert [(p.instance_type, p.zone) for p in pools] == [("t3.small", "us-east-1a"), ("t3.small", "us-east-1b")]
    reasons = {(e["instance_type"], e["availability_zone"]): e["reason"] for e in excluded}
    assert reasons[("t3.small", "us-east-1c")] == "no spot price"
    assert reasons[("t3a.small", "us-east-1a")] == "not offered"
    # on-demand needs no spot price; unknown prices (None) leave nothing out
    assert len(cap.gather_pools("us-east-1", ["t3.small"], ZONES, offered, prices, market="on-demand")[0]) == 3
    assert len(cap.gather_pools("us-east-1", ["t3.small"], ZONES, offered, None)[0]) == 3


def test_price_order_takes_the_cheapest_pools_that_hold():
    prices = {("t3.small", "us-east-1a"): 0.010, ("t3.small", "us-east-1b"): 0.020, ("t3.small", "us-east-1c"): 0.030,
              ("t3a.small", "us-east-1a"): 0.015, ("t3a.small", "us-east-1b"): 0.005, ("t3a.small", "us-east-1c"): 0.009}
    scores = {"us-east-1a": 8, "us-east-1b": 2, "us-east-1c": 7}  # b is cheapest but unlikely to hold
    ranked = cap.rank_pools(pools_of(prices, scores), by="price")
    assert [(p.instance_type, p.zone) for p in ranked][:3] == [
        ("t3a.small", "us-east-1c"), ("t3.small", "us-east-1a"), ("t3a.small", "us-east-1a")]
    assert [p.zone for p in ranked[-2:]] == ["us-east-1b", "us-east-1b"]  # low score: last, still a fallback
    assert cap.cheapest_types(ranked, 1) == ["t3a.small"]


def test_preference_order_keeps_the_users_types_and_zones():
    prices = {(t, z): 0.01 for t in ("t3.small", "t3a.small") for z in ZONES}
    prices[("t3.small", "us-east-1c")] = 0.001
    ranked = cap.rank_pools(pools_of(prices, {"us-east-1a": 1}), type_order=["t3a.small", "t3.small"])
    # types in the user's order; zones by score band, then price
    assert [(p.instance_type, p.zone) for p in ranked] == [
        ("t3a.small", "us-east-1b"), ("t3a.small", "us-east-1c"), ("t3a.small", "us-east-1a"),
        ("t3.small", "us-east-1c"), ("t3.small", "us-east-1b"), ("t3.small", "us-east-1a")]
    given = cap.rank_pools(pools_of(prices), type_order=["t3.small"], zone_order=["us-east-1b", "us-east-1a"])
    assert [p.zone for p in given[:3]] == ["us-east-1b", "us-east-1a", "us-east-1c"]


def test_regions_with_low_scores_come_last():
    assert cap.rank_regions({"eu-west-1": 2, "us-east-1": 6, "us-west-2": 9, "ap-south-1": None}) == [
        "us-west-2", "us-east-1", "ap-south-1", "eu-west-1"]
    assert cap.low_score(2, 3) and not cap.low_score(3, 3) and not cap.low_score(None, 3)


# --------------------------------------------------------------------------- zones
@pytest.mark.parametrize("count, existing, want", [
    (3, {}, {"a": 1, "b": 1, "c": 1}),
    (5, {}, {"a": 2, "b": 2, "c": 1}),
    (2, {"a": 2, "b": 1}, {"b": 1, "c": 1}),  # balances what is there too
    (1, {"a": 1, "b": 1, "c": 1}, {"a": 1}),
    (0, {}, {}),
])
def test_spread_is_balanced_within_one(count, existing, want):
    got = cap.split(count, ["a", "b", "c"], existing, "spread")
    assert got == want
    final = {z: existing.get(z, 0) + got.get(z, 0) for z in "abc"}
    if count:
        assert max(final.values()) - min(final.values()) <= 1


def test_packed_puts_every_node_in_the_best_zone():
    assert cap.split(4, ["b", "a"], {"a": 3}, "packed") == {"b": 4}


def test_assign_spreads_over_the_zones_with_good_scores():
    prices = {(t, z): 0.01 for t in ("t3.small", "t3a.small") for z in ZONES}
    pools = cap.rank_pools(pools_of(prices, {"us-east-1a": 9, "us-east-1b": 1, "us-east-1c": 8}),
                           type_order=["t3.small", "t3a.small"])
    launches = cap.assign(pools, 4)
    assert {launch.zone: launch.count for launch in launches} == {"us-east-1a": 2, "us-east-1c": 2}
    assert [p.instance_type for p in launches[0].pools] == ["t3.small", "t3a.small"]
    packed = cap.assign(pools, 4, strategy="packed")
    assert len(packed) == 1 and packed[0].count == 4 and packed[0].pools == pools
    # every zone low: spread over them all rather than nowhere
    low = cap.rank_pools(pools_of(prices, {z: 1 for z in ZONES}))
    assert sum(launch.count for launch in cap.assign(low, 3)) == 3 and len(cap.assign(low, 3)) == 3


# --------------------------------------------------------------------------- cost
def test_plan_cost_counts_fallbacks_and_refuses_over_the_cap():
    cheap = cap.Pool("r", "t3.small", "a", spot_price=0.01, on_demand_price=0.02)
    dear = cap.Pool("r", "m5.large", "b", spot_price=0.04, on_demand_price=0.10)
    launches = [cap.Launch("a", 2, [cheap, dear])]
    costs = pricing_caps.plan_cost([0.05, None], launches, fallback=1, fallback_price=0.10, worst_pools=[cheap, dear])
    # kept 0.05 (+1 unknown); expected 0.05 + 2 x 0.01; worst: one spot node at the dearest pool, one on-demand
    assert costs == {"expected": 0.07, "worst_case": pytest.approx(0.05 + 0.04 + 0.10), "unknown": 1}
    known = dict(costs, unknown=0)
    assert pricing_caps.over_cap(known, 1.0) is None and pricing_caps.over_cap(known, None) is None
    refusal = pricing_caps.over_cap(known, 0.1)
    assert "0.1900" in refusal and "0.1000" in refusal and "0.0700" in refusal and "nothing was created" in refusal
    assert "no known price" in pricing_caps.over_cap(costs, 1.0)


def test_max_nodes_refusal_names_the_numbers():
    assert pricing_caps.over_max_nodes(5, 5, {"a": 5}) is None
    text = pricing_caps.over_max_nodes(120, 100, {"us-east-1": 100, "eu-west-1": 20})
    assert "120" in text and "max_nodes 100" in text and "eu-west-1: 20" in text


def test_on_demand_stand_ins_are_bounded_and_replaced_when_spot_holds():
    assert cap.fallback_count(3, None, 0) == 3
    assert cap.fallback_count(3, 2, 1) == 1
    assert cap.fallback_count(3, 1, 2) == 0
    assert cap.replaceable(2, 8) == 2 and cap.replaceable(2, None) == 2 and cap.replaceable(2, 1) == 0
