# -*- coding: utf-8 -*-
# Copyright: bacalhau.aws_spot contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The work of ``spot_capacity_plan``: where a cluster of N nodes should go, before it exists. Private.

Read only. The AWS reads are ``spot_cluster``'s own (``_capacity_reads``, ``_spot_pricing``,
``_price_list``) and the choice is the placement engine's (``_capacity``): the plan is
what ``spot_cluster`` would rank, spread and price for the cluster file it writes.

Rounds (regions in parallel, each region's second round as soon as its first answered):

0. ``DescribeRegions``: with ``regions: all`` the enabled regions; with a list, the check
   that they exist and are enabled (sent with round 1 when botocore knows every name).
1. per region ``DescribeAvailabilityZones`` and ``GetInstanceTypesFromInstanceRequirements``
   (one per architecture); with them, for every region at once, ``GetSpotPlacementScores``
   by region and by zone (two calls in all).
2. per region ``DescribeInstanceTypeOfferings`` (by zone) and ``DescribeSpotPriceHistory``
   of the types found.
3. only when the controller's cache (7 days) lacks them: ``pricing:GetProducts`` for the
   orchestrator's on-demand price (and, for ``market`` other than spot, the nodes').

Then, without AWS: a region's pools are its (type, zone) pairs with a spot price in zones
whose placement score is at least ``min_placement_score``; regions are ranked by what
their share of the nodes would cost (expected, per node), the ``max_regions`` cheapest
take the nodes in equal shares (within one), and each region's types (the ``max_types``
with the cheapest pool, fewer when the cost cap needs it) and zones become a
``cluster_regions`` entry. Its cost is ``_capacity.plan_cost`` over exactly the pools
``spot_cluster`` will rank from that entry, so ``create.yml`` checks the same numbers.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Any
try:
    import botocore.exceptions
except ImportError:
    pass  # AnsibleAWSModule reports a missing botocore
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._placement import images as _ami
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._placement import pools as capacity
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._placement import cost as pricing_caps
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._placement import reads
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._pricing import price_list
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._pricing import spot as pricing
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._aws.common import AwsSpotError
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._aws.common import check_regions
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._aws.common import enabled_region_names
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._aws.common import error_text
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._aws.common import known_region_names
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._aws.common import region_client
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._aws.common import run_per_region
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._aws.common import together
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._aws.credentials import credential_problem
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._cluster.spec import MAX_COUNT_PER_REGION
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._placement.plan_spec import PlanSpec


DEFAULT_REGION = "us-east-1"


TYPE_BATCH = 100


@dataclass
class RegionRead:
    zones: list[str]
    zone_ids: dict[str, str]
    types: dict[str, str]  # instance type -> architecture, from the requirements
    offered: dict[str, set[str]] = field(default_factory=dict)
    prices: dict[tuple[str, str], float] | None = None
    on_demand: dict[str, float] = field(default_factory=dict)


def read_region(ec2: Any, region: str, spec: PlanSpec) -> RegionRead:
    """Rounds 1 and 2 of one region: zones and types, then offerings and spot prices of those types."""
    (zones, zone_ids), types = together(functools.partial(reads.zones_and_ids, ec2),
                                        functools.partial(reads.types_from_requirements, ec2, spec.requirements))
    read = RegionRead(zones=zones, zone_ids=zone_ids, types=types)
    if not types:
        return read
    wanted = sorted(types)
    # a batch of types per call, every batch at once: offerings take up to 100 types per filter, and a
    # batch's spot prices (one per type and zone) then fit one page of 1000; more would be pages in a row
    batches = [wanted[i:i + TYPE_BATCH] for i in range(0, len(wanted), TYPE_BATCH)]
    calls = [functools.partial(_ami.offered_instance_types, ec2, region, b, location_type="availability-zone")
             for b in batches]
    if spec.market != "on-demand":
        calls += [functools.partial(pricing.spot_prices, ec2, b) for b in batches]
    answers = together(*calls)
    for offered in answers[:len(batches)]:
        read.offered.update(offered)
    if spec.market != "on-demand":
        read.prices = {}
        for prices in answers[len(batches):]:
            read.prices.update(prices)
    return read


def _regions(module: Any, spec: PlanSpec, ec2: Any) -> tuple[list[str], Any]:
    """The regions to read, and (for a list botocore knows) the check to send with round 1."""
    if spec.regions is None:
        return enabled_region_names(ec2), None
    try:
        known = known_region_names(module)
    except Exception:  # pylint: disable=broad-except
        known = set()
    if all(r in known for r in spec.regions):
        return list(spec.regions), functools.partial(check_regions, ec2, list(spec.regions))
    check_regions(ec2, list(spec.regions))
    return list(spec.regions), None


@dataclass
class Option:
    """One region that can take nodes: its ranked pools in zones of a good score."""

    region: str
    pools: list[capacity.Pool]  # ranked by price
    region_score: int | None
    zone_scores: dict[str, int]
    excluded_zones: list[str]


@dataclass
class RegionPlan:
    region: str
    count: int
    types: list[str]
    zones: list[str]
    pools: list[capacity.Pool]  # as spot_cluster will rank them from the file's entry
    launches: list[capacity.Launch]
    cost: dict[str, Any]
    architectures: dict[str, str]


def option_of(region: str, read: RegionRead, scores: dict[str, Any], spec: PlanSpec) -> tuple[Option | None, str]:
    """The region's pools, or None and why it cannot take nodes."""
    zone_scores = {read.zone_ids[zid]: s for zid, s in (scores.get("zones", {}).get(region) or {}).items()
                   if zid in read.zone_ids}
    region_score = scores.get("regions", {}).get(region)
    if not read.types:
        return None, "no instance type there meets the requirements"
    if capacity.low_score(region_score, spec.min_score):
        return None, f"spot placement score {region_score} is under min_placement_score {spec.min_score}"
    pools, _excluded = capacity.gather_pools(
        region, sorted(read.types), read.zones, read.offered, read.prices, architectures=read.types,
        zone_scores=zone_scores, region_score=region_score, on_demand_prices=read.on_demand,
        market=spec.pool_market)
    if spec.pool_market == "on-demand":
        pools = [p for p in pools if p.on_demand_price is not None]
    if not pools:
        return None, (f"no {'on-demand' if spec.pool_market == 'on-demand' else 'spot'} price for any of the "
                      f"{len(read.types)} instance types that meet the requirements")
    low = sorted({p.zone for p in pools if capacity.low_score(p.zone_score, spec.min_score)})
    good = [p for p in pools if p.zone not in low]
    if not good:
        return None, (f"the spot placement score of every zone ({', '.join(low)}) is under "
                      f"min_placement_score {spec.min_score}")
    ranked = capacity.rank_pools(good, by="price", min_score=spec.min_score, market=spec.pool_market)
    return Option(region=region, pools=ranked, region_score=region_score, zone_scores=zone_scores,
                  excluded_zones=low), ""


def region_plan(option: Option, count: int, max_types: int, spec: PlanSpec,
                od_prices: dict[str, float] | None = None) -> RegionPlan:
    """The cluster file's entry for ``count`` nodes in the region, priced as spot_cluster will price it."""
    types = capacity.cheapest_types(option.pools, max_types, spec.pool_market)
    kept = [p for p in option.pools if p.instance_type in types]
    zones = capacity.zone_order(kept)  # best (cheapest) zone first
    ranked = capacity.rank_pools(kept, by="preference", type_order=types, zone_order=zones,
                                 min_score=spec.min_score, market=spec.pool_market)
    launches = capacity.assign(ranked, count, None, spec.strategy, spec.min_score)
    fallback, fallback_price = 0, None
    if spec.market == "spot-then-on-demand":  # on_demand_max unset: every node may stand in on demand
        fallback = count
        known = [(od_prices or {}).get(t) for t in types]
        fallback_price = max(known) if known and None not in known else None
    cost = pricing_caps.plan_cost([], launches, market=spec.pool_market, fallback=fallback,
                                  fallback_price=fallback_price, worst_pools=ranked)
    arches = {p.instance_type: p.architecture for p in kept}
    return RegionPlan(region=option.region, count=count, types=types, zones=list(zones),
                      pools=ranked, launches=launches, cost=cost, architectures=arches)


def unit_price(option: Option, share: int, spec: PlanSpec) -> float:
    """What one node of the region's share is expected to cost (to rank regions)."""
    plan = region_plan(option, share, spec.max_types, spec)
    return plan.cost["expected"] / max(1, share)


def shares(nodes: int, regions: list[str]) -> dict[str, int]:
    """Equal shares, within one, the earlier (cheaper) regions taking the odd ones."""
    return capacity.split(nodes, regions)


def run(module: Any, spec: PlanSpec) -> dict[str, Any]:
    ec2 = region_client(module, "ec2", module.region or DEFAULT_REGION)
    names, check = _regions(module, spec, ec2)
    notes: list[str] = []
    considered: dict[str, dict[str, Any]] = {r: {"region": r, "chosen": False, "count": 0, "region_score": None,
                                                 "unit_price": None, "reason": None} for r in names}
    clients = {r: region_client(module, "ec2", r) for r in names}  # made before the round: they take CPU
    target = max(1, math.ceil(spec.nodes / max(1, min(spec.max_regions, len(names)))))
    group = reads.ScoreGroup(list(names), target, requirements=spec.requirements)
    answers = together(
        check,
        lambda: run_per_region(names, lambda r: read_region(clients[r], r, spec)),
        (lambda: reads.placement_scores(ec2, [group])) if spec.market != "on-demand" else None,
    )
    (region_reads, errors) = answers[1] if check is not None else answers[0]
    scores = answers[-1] if spec.market != "on-demand" else {"regions": {}, "zones": {}, "errors": []}
    for exc in errors.values():
        if credential_problem(exc):
            raise exc
    if scores["errors"]:
        notes.append("spot placement scores unavailable, so no region or zone was avoided for its score ("
                     + "; ".join(scores["errors"])[:300] + ")")
    for region, exc in errors.items():
        considered[region]["reason"] = f"could not be read: {exc.message if isinstance(exc, AwsSpotError) else error_text(exc)}"
    od_prices: dict[tuple[str, str], float] = {}
    if spec.market != "spot":
        od_prices = _on_demand(module, [(r, t) for r, read in region_reads.items() for t in read.types], notes)
        for region, read in region_reads.items():
            read.on_demand = {t: p for (r, t), p in od_prices.items() if r == region and p is not None}

    options: dict[str, Option] = {}
    for region in names:
        if region not in region_reads:
            continue
        considered[region]["region_score"] = scores["regions"].get(region)
        option, why = option_of(region, region_reads[region], scores, spec)
        if option is None:
            considered[region]["reason"] = why
        else:
            options[region] = option
            if option.excluded_zones:
                considered[region]["excluded_zones"] = option.excluded_zones
    if not options:
        detail = "; ".join(f"{r}: {c['reason']}" for r, c in considered.items() if c["reason"])
        raise AwsSpotError(f"no region can take any of the {spec.nodes} nodes ({detail}). Widen the requirements, "
                           "add regions, or lower min_placement_score", details={"regions": list(considered.values())})
    how_many = min(spec.max_regions, len(options))
    per_region = spec.max_per_region or MAX_COUNT_PER_REGION  # spot_cluster's own limit per region
    if how_many * per_region < spec.nodes:
        raise AwsSpotError(
            f"only {how_many * per_region} of the {spec.nodes} nodes fit: {how_many} region(s) can take nodes "
            f"({', '.join(sorted(options))}), with max_regions {spec.max_regions} and at most {per_region} per region"
            f"{'' if spec.max_per_region else ' (spot_cluster takes no more)'}. Add regions, widen the requirements, "
            "or raise max_regions or max_per_region", details={"regions": list(considered.values())})
    share = math.ceil(spec.nodes / how_many)
    for region, option in options.items():
        considered[region]["unit_price"] = round(unit_price(option, share, spec), 6)
    ranked = sorted(options, key=lambda r: (considered[r]["unit_price"], -(options[r].region_score or 0), r))
    chosen = ranked[:how_many]
    for region in ranked[how_many:]:
        considered[region]["reason"] = (f"dearer than the {how_many} chosen (expected {considered[region]['unit_price']:.4f}"
                                        f" USD/hour per node; max_regions {spec.max_regions})")
    counts = shares(spec.nodes, chosen)

    orchestrator = _price_orchestrator(module, spec, chosen, region_reads, notes)
    plans: list[RegionPlan] = []
    refusal = None
    for limit in range(spec.max_types, 0, -1):  # fewer types, a lower worst case, until under the cap
        plans = [region_plan(options[r], counts[r], limit, spec,
                             {t: p for (reg, t), p in od_prices.items() if reg == r and p is not None})
                 for r in chosen]
        costs = _total(plans, orchestrator)
        refusal = pricing_caps.over_cap(costs, spec.max_hourly_cost, f"the cheapest plan for {spec.nodes} nodes")
        if refusal is None:
            if limit < spec.max_types:
                notes.append(f"{limit} instance type(s) per region, not {spec.max_types}: the dearest pool of more "
                             f"types would take the worst case over max_hourly_cost {spec.max_hourly_cost}")
            break
    if refusal is not None:
        raise AwsSpotError(
            f"{refusal} ({_breakdown(plans, orchestrator)}). It is the cheapest found over "
            f"{len(options)} region(s) that can take nodes",
            details={"hourly_cost": costs, "regions": list(considered.values())})
    for plan in plans:
        considered[plan.region].update(chosen=True, count=plan.count)
    return _result(spec, plans, orchestrator, considered, notes)


def _on_demand(module: Any, pairs: list[tuple[str, str]], notes: list[str]) -> dict[tuple[str, str], float]:
    if not pairs:
        return {}
    try:
        return {k: v for k, v in price_list.on_demand_prices(module, pairs).items() if v is not None}
    except (AwsSpotError, botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
        notes.append(f"on-demand prices unavailable ({exc.message if isinstance(exc, AwsSpotError) else error_text(exc)})")
        return {}


def _price_orchestrator(module: Any, spec: PlanSpec, chosen: list[str], region_reads: dict[str, RegionRead],
                        notes: list[str]) -> dict[str, Any] | None:
    """The orchestrator's entry and its USD/hour (round 3, only when the price is not cached)."""
    if spec.orchestrator is None:
        return None
    out = dict(spec.orchestrator)
    out["region"] = out["region"] or chosen[0]
    region, itype = out["region"], out["instance_type"]
    price = None
    if out["market"] == "spot":
        read = region_reads.get(region)
        known = [p for (t, _z), p in ((read.prices or {}) if read else {}).items() if t == itype]
        if not known:
            try:
                known = list(pricing.spot_prices(region_client(module, "ec2", region), [itype]).values())
            except botocore.exceptions.ClientError as exc:
                notes.append(f"the orchestrator's spot price is unknown ({error_text(exc)})")
        price = max(known) if known else None  # the dearest zone: it may land in any
    else:
        price = _on_demand(module, [(region, itype)], notes).get((region, itype))
    out["hourly_cost"] = price
    return out


def _total(plans: list[RegionPlan], orchestrator: dict[str, Any] | None) -> dict[str, Any]:
    expected = sum(p.cost["expected"] for p in plans)
    worst = sum(p.cost["worst_case"] for p in plans)
    unknown = sum(p.cost["unknown"] for p in plans)
    if orchestrator is not None:
        if orchestrator["hourly_cost"] is None:
            unknown += 1
        else:
            expected += orchestrator["hourly_cost"]
            worst += orchestrator["hourly_cost"]
    return {"expected": round(expected, 6), "worst_case": round(worst, 6), "unknown": unknown}


def _breakdown(plans: list[RegionPlan], orchestrator: dict[str, Any] | None) -> str:
    parts = [f"{p.region}: {p.count} nodes, expected {p.cost['expected']:.4f}, up to {p.cost['worst_case']:.4f}"
             for p in plans]
    if orchestrator is not None:
        price = orchestrator["hourly_cost"]
        parts.append(f"orchestrator {orchestrator['instance_type']} {orchestrator['market']} in {orchestrator['region']}: "
                     + ("unknown price" if price is None else f"{price:.4f}"))
    return "; ".join(parts)


def _result(spec: PlanSpec, plans: list[RegionPlan], orchestrator: dict[str, Any] | None,
            considered: dict[str, dict[str, Any]], notes: list[str]) -> dict[str, Any]:
    rows = []
    for plan in plans:
        for launch in plan.launches:
            pool = launch.pools[0]
            price = capacity.pool_price(pool, spec.pool_market)
            rows.append({"region": plan.region, "availability_zone": pool.zone, "instance_type": pool.instance_type,
                         "architecture": pool.architecture, "spot_price": pool.spot_price,
                         "on_demand_price": pool.on_demand_price, "placement_score": pool.zone_score,
                         "region_score": pool.region_score, "count": launch.count,
                         "hourly_cost": None if price is None else round(price * launch.count, 6)})
    costs = _total(plans, orchestrator)
    cluster_regions = [{"region": p.region, "count": p.count, "instance_types": list(p.types),
                        "availability_zones": list(p.zones)} for p in plans]
    cluster_orchestrator = ({"mode": "external"} if orchestrator is None else
                            {k: orchestrator[k] for k in ("mode", "region", "instance_type", "market")})
    order = [p.region for p in plans] + sorted(r for r in considered if not considered[r]["chosen"])
    return {
        "changed": False,
        "placements": rows,
        "orchestrator": orchestrator,
        "hourly_cost": dict(costs, compute_expected=round(sum(p.cost["expected"] for p in plans), 6),
                            compute_worst_case=round(sum(p.cost["worst_case"] for p in plans), 6),
                            orchestrator=None if orchestrator is None else orchestrator["hourly_cost"],
                            max_hourly_cost=spec.max_hourly_cost),
        "nodes": sum(p.count for p in plans),
        "regions": [considered[r] for r in order],
        "cluster_regions": cluster_regions,
        "cluster_orchestrator": cluster_orchestrator,
        "pools": {p.region: [pool.as_dict() for pool in p.pools] for p in plans},
        "notes": notes,
    }
