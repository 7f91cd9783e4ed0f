# -*- coding: utf-8 -*-
# Copyright: bacalhau.aws_spot contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Where a region's launches go (``_placement.pools``: pools ranked, zones shared) and what the
plan costs; the caps of one role's call. Private; no AWS call but the Price List's."""

from __future__ import annotations

from typing import Any
try:
    import botocore.exceptions
except ImportError:
    pass  # AnsibleAWSModule reports a missing botocore
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._placement import pools as capacity
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._placement import cost as pricing_caps
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._cluster import instances as inst
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._cluster import learning
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._pricing import price_list
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._aws.common import AwsSpotError
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._aws.common import error_text
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._cluster.spec import ClusterSpec
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._cluster.plan import RegionPlan


def place(spec: ClusterSpec, plan: RegionPlan, scores: dict[str, Any], learn: Any = None) -> None:
    """Rank the region's pools and split its launches over zones (``_capacity``; no AWS call).
    ``learn`` (``_cluster.learning.Learning``): rank spot pools again by expected cost with the
    pool history; pools cooling down are tried last and get no planned launch while another holds."""
    region = plan.spec
    if not plan.placement.pairs:
        return
    by_id = plan.reads.zone_ids
    plan.placement.zone_scores = {by_id[zid]: score for zid, score in (scores.get("zones", {}).get(region.region) or {}).items()
                                  if zid in by_id}
    plan.placement.region_score = scores.get("regions", {}).get(region.region)
    zones = region.availability_zones or plan.reads.zones
    market = "on-demand" if spec.market == "on-demand" else "spot"
    pools, plan.placement.excluded = capacity.gather_pools(
        region.region, plan.reads.types, zones, plan.reads.offered, plan.reads.prices if spec.spot_first else None,
        architectures=plan.reads.architectures, zone_scores=plan.placement.zone_scores, region_score=plan.placement.region_score,
        on_demand_prices=plan.reads.on_demand_prices, market=spec.market)
    by = "price" if region.instance_requirements is not None else "preference"
    order = dict(type_order=region.instance_types or None, zone_order=region.availability_zones,
                 min_score=spec.min_placement_score)
    if region.instance_requirements is not None and market == "spot":  # the cheapest few types that hold
        keep = set(capacity.cheapest_types([p for p in pools if p.spot_price is not None] or pools,
                                           region.instance_requirements["max_types"]))
        pools = [p for p in pools if p.instance_type in keep]
        dropped = [t for t in plan.reads.types if t not in keep]
        if dropped:
            plan.placement.notes.append(f"instance_requirements: kept the {len(keep)} types with the cheapest pool "
                                        f"(max_types); left out {', '.join(dropped)}")
    if spec.market == "spot-then-on-demand":
        plan.placement.fallback_pools = capacity.rank_pools(pools, by=by, market="on-demand", **order)
        pools = [p for p in pools if p.spot_price is not None or plan.reads.prices is None]
    plan.placement.pools = capacity.rank_pools(pools, by=by, market=market, **order)
    plan.placement.ranked = []
    if learn is not None and market == "spot" and plan.placement.pools:
        plan.placement.ranked = learn.rerank(plan.placement.pools, market, by, type_order=region.instance_types or None,
                                             zone_order=region.availability_zones)
        plan.placement.pools = [r.pool for r in plan.placement.ranked]
    if spec.market != "spot-then-on-demand" and not plan.placement.pools:
        raise AwsSpotError(
            f"no spot price for any of {', '.join(plan.reads.types)} in {', '.join(zones)}: AWS sells no spot capacity "
            "of them there; add types or zones, or use market spot-then-on-demand", region.region)
    plan.placement.pairs = [(p.instance_type, p.zone) for p in plan.placement.pools]
    if spec.market == "spot-then-on-demand" and capacity.low_score(plan.placement.region_score, spec.min_placement_score):
        plan.placement.skip_spot = True
        plan.placement.notes.append(f"spot placement score {plan.placement.region_score} is under min_placement_score "
                                    f"{spec.min_placement_score}: spot is not tried here this run, on-demand stands in")
    elif capacity.low_score(plan.placement.region_score, spec.min_placement_score):
        plan.placement.notes.append(f"spot placement score {plan.placement.region_score} is under min_placement_score "
                                    f"{spec.min_placement_score}: launches here are likely to fail")
    if spec.spot_first and not plan.to_terminate:
        stand_ins = len(plan.fallback_now)
        plan.to_replace = 0 if plan.placement.skip_spot else capacity.replaceable(stand_ins, plan.placement.region_score,
                                                                                  spec.min_placement_score)
    leaving = {i["InstanceId"] for i in plan.to_terminate}
    if plan.to_replace:  # the stand-ins go once replaced: the spread counts without them
        leaving |= {i["InstanceId"] for i in plan.fallback_now}
    existing: dict[str, int] = {}
    for i in plan.in_scope:
        if i["InstanceId"] not in leaving:
            zone = i.get("Placement", {}).get("AvailabilityZone")
            existing[zone] = existing.get(zone, 0) + 1
    spot_count = 0 if plan.placement.skip_spot else plan.to_launch + plan.to_replace

    def reassign() -> list[capacity.Launch]:
        choose = [r.pool for r in plan.placement.ranked if not r.avoided] if plan.placement.ranked else plan.placement.pools
        choose = [p for p in choose if p in plan.placement.pools] or plan.placement.pools
        return capacity.assign(choose, spot_count, existing, spec.availability_zone_strategy,
                               spec.min_placement_score) if choose else []

    plan.placement.reassign = reassign
    plan.placement.launches = reassign()
    if spec.market == "spot-then-on-demand":
        plan.to_fallback = capacity.fallback_count(plan.to_launch, region.on_demand_max, len(plan.fallback_now))


def _kept_prices(spec: ClusterSpec, plan: RegionPlan, own: bool = False) -> list[float | None]:
    """Prices of the cluster's live instances that stay (every role, or ``own`` role's only)."""
    doomed = {i["InstanceId"] for i in plan.to_terminate}
    out: list[float | None] = []
    for i in plan.reads.instances:
        if not inst.is_live(i) or i["InstanceId"] in doomed or (own and inst.role_of(i) != spec.role):
            continue
        itype, zone = i.get("InstanceType"), i.get("Placement", {}).get("AvailabilityZone")
        if i.get("InstanceLifecycle") == "spot":
            out.append((plan.reads.prices or {}).get((itype, zone)))
        else:
            out.append(plan.reads.on_demand_prices.get(itype))
    return out


def cost_of(spec: ClusterSpec, plan: RegionPlan, own: bool = False) -> dict[str, Any]:
    """The region's plan in USD/hour (``_capacity.plan_cost``): what stays (every role, or only the
    role's with ``own``), what is launched, fallbacks."""
    market = "on-demand" if spec.market == "on-demand" else "spot"
    od = [p.on_demand_price for p in plan.placement.fallback_pools if p.on_demand_price is not None]
    # the replacements of on-demand stand-ins are left out: they replace dearer nodes, a few minutes later
    launches = plan.placement.launches
    if plan.to_replace:
        launches = capacity.assign(plan.placement.pools, plan.to_launch, None, spec.availability_zone_strategy,
                                   spec.min_placement_score) if plan.to_launch and not plan.placement.skip_spot else []
    return pricing_caps.plan_cost(
        _kept_prices(spec, plan, own), launches, market=market, fallback=plan.to_fallback,
        fallback_price=max(od) if od else None, worst_pools=plan.placement.pools)


def placement_view(spec: ClusterSpec, plan: RegionPlan) -> dict[str, Any]:
    """The result's ``placement`` of a region: candidates, scores, launches, and why."""
    return {
        "strategy": spec.availability_zone_strategy,
        "market": spec.market,
        "instance_types": list(plan.reads.types),
        "from_requirements": plan.spec.instance_requirements is not None,
        "region_score": plan.placement.region_score,
        "zone_scores": dict(sorted(plan.placement.zone_scores.items())),
        "pools": learning.pools_view(plan.placement) or [p.as_dict() for p in plan.placement.pools],
        "excluded": list(plan.placement.excluded),
        "launches": [launch.as_dict() for launch in plan.placement.launches],
        "on_demand_fallback": {"now": len(plan.fallback_now), "may_launch": plan.to_fallback,
                               "max": plan.spec.on_demand_max, "to_replace": plan.to_replace,
                               "ranked": [f"{p.instance_type}/{p.zone}" for p in plan.placement.fallback_pools]},
        "cost": dict(plan.placement.cost),
        "notes": list(plan.placement.notes),
    }


def price_on_demand(module: Any, spec: ClusterSpec, plans: dict[str, RegionPlan]) -> None:
    """On-demand prices where the plan needs them: on-demand or stand-in launches, and with a cost cap the
    on-demand instances that stay (the Price List service, cached on the controller: a re-run asks nothing)."""
    wanted: dict[str, set[str]] = {}
    for name, plan in plans.items():
        types = set()
        if spec.market != "spot" or spec.max_hourly_cost is not None:
            types.update(plan.reads.types)
        if spec.max_hourly_cost is not None:
            types.update(i.get("InstanceType") for i in plan.reads.instances
                         if inst.is_live(i) and i.get("InstanceLifecycle") != "spot")
        if types:
            wanted[name] = {t for t in types if t}
    if not wanted:
        return
    try:
        prices = price_list.on_demand_prices(module, [(r, t) for r, types in wanted.items() for t in types])
    except (AwsSpotError, botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
        for plan in plans.values():  # the plan goes on; a cost cap then refuses nodes of unknown price
            plan.placement.notes.append(f"on-demand prices unavailable ({exc.message if isinstance(exc, AwsSpotError) else error_text(exc)})")
        return
    for (region, itype), price in prices.items():
        if price is not None and region in plans:
            plans[region].reads.on_demand_prices[itype] = price


def refuse_over_limits(spec: ClusterSpec, plans: dict[str, RegionPlan]) -> None:
    """max_nodes and max_hourly_cost, over every region of the plan, before anything is created."""
    parts: dict[str, int] = {}
    total = 0
    for name, plan in plans.items():
        doomed = {i["InstanceId"] for i in plan.to_terminate}
        others = sum(1 for i in plan.reads.instances if inst.is_live(i) and inst.role_of(i) != spec.role)
        mine = len(plan.in_scope) - len(doomed) + plan.to_launch
        parts[f"{name} {spec.role}"] = mine
        if others:
            parts[f"{name} other roles"] = others
        total += mine + others
    problems = []
    refusal = pricing_caps.over_max_nodes(total, spec.max_nodes, parts)
    if refusal:
        problems.append(refusal)
    expected = worst = spec.extra_hourly_cost
    unknown = 0
    for plan in plans.values():
        plan.placement.cost = cost_of(spec, plan)
        plan.placement.cost["role"] = cost_of(spec, plan, own=True)
        expected += plan.placement.cost["expected"]
        worst += plan.placement.cost["worst_case"]
        unknown += plan.placement.cost["unknown"]
    costs = {"expected": round(expected, 6), "worst_case": round(worst, 6), "unknown": unknown}
    refusal = pricing_caps.over_cap(costs, spec.max_hourly_cost, f"the {spec.role} plan of cluster {spec.cluster_name}")
    if refusal:
        detail = ", ".join(f"{r}: up to {p.placement.cost['worst_case']:.4f}" for r, p in plans.items())
        if spec.extra_hourly_cost:
            detail += f", outside these regions' view (extra_hourly_cost): {spec.extra_hourly_cost:.4f}"
        problems.append(f"{refusal} (by region: {detail})")
    if problems:
        raise AwsSpotError("; ".join(problems), details={"plan_cost": costs})
