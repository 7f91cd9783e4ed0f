# -*- coding: utf-8 -*-
# Copyright: bacalhau.aws_spot contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Where a cluster's nodes should go, and what that costs: the placement engine. Private.

Pure functions only (no AWS call, no clock): ``spot_cluster`` feeds them what it read
(``_capacity_reads``), and a planner can feed them the same answers to show a plan
without launching anything. Every number is USD per instance-hour.

API (stable; a planner builds on it)
------------------------------------

Instance requirements (AWS's ``InstanceRequirements``, in snake_case)
    ``parse_requirements(raw, where, problems) -> dict | None``
        Check a user's ``instance_requirements`` dictionary (keys in
        :data:`REQUIREMENT_KEYS`), append every problem to ``problems`` and return the
        normalised dictionary (or None when there were problems).
    ``requirements_params(req, architecture=None) -> dict``
        The keyword arguments of ``GetInstanceTypesFromInstanceRequirements``
        (``ArchitectureTypes``, ``VirtualizationTypes``, ``InstanceRequirements``); with
        ``architecture`` only that one (one call per architecture tells each type's).
    ``score_params(instance_types=None, requirements=None, regions, target_capacity,
    single_zone) -> dict``
        The keyword arguments of ``GetSpotPlacementScores`` for a set of regions.

Pools (one instance type in one zone of one region)
    ``Pool(region, instance_type, zone, architecture, spot_price, on_demand_price,
    zone_score, region_score)``
    ``gather_pools(region, instance_types, zones, offered, spot_prices, *, architectures,
    zone_scores, region_score, on_demand_prices, market) -> (pools, excluded)``
        Every offered (type, zone) pair; for the spot market a pair with no spot price is
        left out (AWS does not sell spot there), when prices were read at all.
        ``excluded`` says why each left-out pair went.
    ``rank_pools(pools, *, by="preference"|"price", type_order, zone_order,
    min_score) -> list[Pool]``
        The order launches try them in. ``preference``: the user's type order, then
        zones (given order, or best score band then cheapest); ``price``: price-capacity
        order over every pool (AWS's ``price-capacity-optimized`` idea: pools whose zone
        score is at least ``min_score`` first, cheapest first, higher score on ties).
    ``cheapest_types(pools, limit) -> list[str]``
        The ``limit`` types with the cheapest pool (to bound the candidates of a
        requirements search).
    ``rank_regions(region_scores, min_score) -> list[str]``
        Regions best first; regions under ``min_score`` last.
    ``low_score(score, min_score) -> bool``

Spreading over zones
    ``split(count, zones, existing=None, strategy="spread") -> dict[zone, int]``
        How many *new* nodes go to each zone so that every zone ends within one of the
        others (``spread``, counting the nodes already there), or all in the first zone
        (``packed``). ``zones`` is in order of preference; ties go to earlier zones.
    ``zone_order(pools) -> list[str]``  zones in the order of their best pool.
    ``assign(pools, missing, existing=None, strategy="spread", min_score=None) -> list[Launch]``
        The launches to make at once: ``Launch(zone, count, pools)`` with the zone's
        pools in rank order. With ``spread`` only zones with a pool of a good score take
        part (all zones when none has one).

Cost
    ``pool_price(pool, market) -> float | None``
    ``plan_cost(keep, launches, *, market, fallback=0, fallback_price=None, worst_pools=None)
    -> dict`` ``{"expected", "worst_case", "unknown"}``: the cost of the nodes kept
        (their prices given) plus the planned launches at their first pool's price; the
        worst case prices every new spot node at the dearest pool it may fall back to and
        ``fallback`` nodes at the on-demand price. ``unknown`` counts nodes with no price.
    ``over_cap(costs, cap) -> str | None``  the refusal, naming the numbers, or None.
    ``over_max_nodes(total, max_nodes, parts) -> str | None``

Markets
    :data:`MARKETS`, :data:`FALLBACK_TAG` / :data:`FALLBACK_VALUE` (the tag on
    on-demand nodes launched because spot failed), ``fallback_count(missing, on_demand_max,
    fallback_now)``, ``replaceable(fallback_nodes, region_score, min_score)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any


MARKETS = ("spot", "on-demand", "spot-then-on-demand")


STRATEGIES = ("spread", "packed")


ARCHITECTURES = ("x86_64", "arm64")


# On-demand nodes launched because every spot pool failed carry this tag, so a later run
# can replace them by spot (make before break) and nothing else is mistaken for them.
FALLBACK_TAG = "bacalhau:market"


FALLBACK_VALUE = "on-demand-fallback"


DEFAULT_MIN_SCORE = 3  # AWS scores 1..10; "a score of 3 or lower is unlikely to succeed" is AWS's own reading


DEFAULT_MAX_TYPES = 8


SCORE_PAGE = 1000  # GetSpotPlacementScores' MaxResults: 10 to 1000


UNKNOWN_SCORE = None


@dataclass(frozen=True)
class Pool:
    region: str
    instance_type: str
    zone: str
    architecture: str | None = None
    spot_price: float | None = None
    on_demand_price: float | None = None
    zone_score: int | None = None
    region_score: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"instance_type": self.instance_type, "availability_zone": self.zone,
                "architecture": self.architecture, "spot_price": self.spot_price,
                "on_demand_price": self.on_demand_price, "zone_score": self.zone_score}


def low_score(score: int | None, min_score: int | None) -> bool:
    """A known score under the minimum (an unknown score is never low)."""
    return score is not None and min_score is not None and score < min_score


def gather_pools(
    region: str,
    instance_types: list[str],
    zones: list[str],
    offered: dict[str, set[str]] | None,
    spot_prices: dict[tuple[str, str], float] | None,
    *,
    architectures: dict[str, str] | None = None,
    zone_scores: dict[str, int] | None = None,
    region_score: int | None = None,
    on_demand_prices: dict[str, float] | None = None,
    market: str = "spot",
) -> tuple[list[Pool], list[dict[str, str]]]:
    """Every pool that can be tried, and why the others cannot (``{type, zone, reason}``).

    ``offered`` None: offerings unknown (every pair counts as offered). ``spot_prices``
    None: prices unknown (no pair is left out for want of one).
    """
    pools: list[Pool] = []
    excluded: list[dict[str, str]] = []
    for itype in instance_types:
        for zone in zones:
            if offered is not None and zone not in offered.get(itype, set()):
                excluded.append({"instance_type": itype, "availability_zone": zone, "reason": "not offered"})
                continue
            price = None if spot_prices is None else spot_prices.get((itype, zone))
            if market != "on-demand" and spot_prices is not None and price is None:
                excluded.append({"instance_type": itype, "availability_zone": zone, "reason": "no spot price"})
                if market == "spot":
                    continue
            pools.append(Pool(region=region, instance_type=itype, zone=zone,
                              architecture=(architectures or {}).get(itype), spot_price=price,
                              on_demand_price=(on_demand_prices or {}).get(itype),
                              zone_score=(zone_scores or {}).get(zone), region_score=region_score))
    return pools, excluded


def pool_price(pool: Pool, market: str) -> float | None:
    return pool.on_demand_price if market == "on-demand" else pool.spot_price


def _price_key(price: float | None) -> float:
    return price if price is not None else math.inf


def rank_pools(
    pools: list[Pool],
    *,
    by: str = "preference",
    type_order: list[str] | None = None,
    zone_order: list[str] | None = None,
    min_score: int | None = DEFAULT_MIN_SCORE,
    market: str = "spot",
) -> list[Pool]:
    """Pools in the order launches try them (see the module docstring)."""
    types = {t: i for i, t in enumerate(type_order or [])}
    zones = {z: i for i, z in enumerate(zone_order or [])}

    def zone_key(p: Pool) -> tuple:
        if zone_order:
            return (zones.get(p.zone, len(zones)),)
        return (low_score(p.zone_score, min_score), -(p.zone_score or 0), _price_key(pool_price(p, market)), p.zone)

    if by == "price":
        return sorted(pools, key=lambda p: (
            low_score(p.zone_score, min_score), _price_key(pool_price(p, market)), -(p.zone_score or 0),
            types.get(p.instance_type, len(types)), p.instance_type, p.zone))
    return sorted(pools, key=lambda p: (types.get(p.instance_type, len(types)), p.instance_type) + zone_key(p))


def cheapest_types(pools: list[Pool], limit: int, market: str = "spot") -> list[str]:
    """The ``limit`` instance types whose cheapest pool is cheapest, cheapest first."""
    best: dict[str, float] = {}
    for p in pools:
        best[p.instance_type] = min(best.get(p.instance_type, math.inf), _price_key(pool_price(p, market)))
    return sorted(best, key=lambda t: (best[t], t))[:limit]


def rank_regions(region_scores: dict[str, int | None], min_score: int | None = DEFAULT_MIN_SCORE) -> list[str]:
    """Region names, best spot placement score first; those under ``min_score`` last."""
    return sorted(region_scores, key=lambda r: (low_score(region_scores[r], min_score), -(region_scores[r] or 0), r))


def split(count: int, zones: list[str], existing: dict[str, int] | None = None,
          strategy: str = "spread") -> dict[str, int]:
    """New nodes per zone (zones in preference order; see the module docstring)."""
    out = {z: 0 for z in zones}
    if count <= 0 or not zones:
        return {z: n for z, n in out.items() if n}
    if strategy == "packed":
        return {zones[0]: count}
    have = {z: int((existing or {}).get(z, 0)) for z in zones}
    rank = {z: i for i, z in enumerate(zones)}
    for _node in range(count):
        zone = min(zones, key=lambda z: (have[z], rank[z]))
        have[zone] += 1
        out[zone] += 1
    return {z: n for z, n in out.items() if n}


def zone_order(pools: list[Pool]) -> list[str]:
    """Zones in the order of their first pool in ``pools`` (already ranked)."""
    return list(dict.fromkeys(p.zone for p in pools))


@dataclass
class Launch:
    zone: str | None  # None: the packed walk over every pool
    count: int
    pools: list[Pool] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"availability_zone": self.zone, "count": self.count,
                "pools": [f"{p.instance_type}/{p.zone}" for p in self.pools]}


def assign(pools: list[Pool], missing: int, existing: dict[str, int] | None = None,
           strategy: str = "spread", min_score: int | None = DEFAULT_MIN_SCORE) -> list[Launch]:
    """The launches to make at once for ``missing`` new nodes over ranked ``pools``."""
    if missing <= 0 or not pools:
        return []
    if strategy == "packed":
        return [Launch(zone=None, count=missing, pools=list(pools))]
    good = [p for p in pools if not low_score(p.zone_score, min_score)] or list(pools)
    zones = zone_order(good)
    shares = split(missing, zones, existing, "spread")
    return [Launch(zone=z, count=n, pools=[p for p in good if p.zone == z]) for z, n in shares.items()]


def fallback_count(missing: int, on_demand_max: int | None, fallback_now: int) -> int:
    """How many on-demand nodes may stand in for ``missing`` spot nodes (``on_demand_max`` None: all)."""
    room = missing if on_demand_max is None else max(0, on_demand_max - fallback_now)
    return max(0, min(missing, room))


def replaceable(fallback_nodes: int, region_score: int | None, min_score: int | None = DEFAULT_MIN_SCORE) -> int:
    """How many on-demand fallback nodes to try to replace by spot now (none while the region's score is low)."""
    return 0 if low_score(region_score, min_score) else max(0, fallback_nodes)
