# -*- coding: utf-8 -*-
# Copyright: bacalhau.aws_spot contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What a plan costs per hour (expected and worst case) and the caps that refuse it
(max_hourly_cost, max_nodes), in the numbers' own words. Private; no AWS call.
"""

from __future__ import annotations

from typing import Any
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._placement.pools import Launch
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._placement.pools import Pool
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._placement.pools import pool_price


def plan_cost(
    keep: list[float | None],
    launches: list[Launch],
    *,
    market: str = "spot",
    fallback: int = 0,
    fallback_price: float | None = None,
    worst_pools: list[Pool] | None = None,
) -> dict[str, Any]:
    """The plan's USD per hour: ``expected`` and ``worst_case`` (see the module docstring)."""
    unknown = sum(1 for price in keep if price is None)
    kept = sum(price for price in keep if price is not None)
    expected = kept
    new = 0
    for launch in launches:
        new += launch.count
        price = pool_price(launch.pools[0], market) if launch.pools else None
        if price is None:
            unknown += launch.count
        else:
            expected += price * launch.count
    candidates = [pool_price(p, market) for p in (worst_pools if worst_pools is not None else
                                                  [p for launch in launches for p in launch.pools])]
    known = [c for c in candidates if c is not None]
    dearest = max(known) if known else None
    worst = kept
    if new:
        spot_nodes = max(0, new - fallback)
        if dearest is not None:  # else the launches' nodes are counted as unknown above
            worst += dearest * spot_nodes
        if fallback:
            if fallback_price is None:
                unknown += fallback
            else:
                worst += fallback_price * fallback
    return {"expected": round(expected, 6), "worst_case": round(max(worst, expected), 6), "unknown": unknown}


def over_cap(costs: dict[str, Any], cap: float | None, what: str = "the plan") -> str | None:
    """The refusal naming the numbers, or None when ``costs`` are within ``cap`` (None: no cap)."""
    if cap is None:
        return None
    worst, expected, unknown = costs["worst_case"], costs["expected"], costs.get("unknown", 0)
    if worst > cap:
        return (f"{what} could cost up to {worst:.4f} USD/hour (expected {expected:.4f}, counting spot fallbacks "
                f"to dearer pools and on-demand fallbacks), above max_hourly_cost {cap:.4f}; nothing was created. "
                "Ask for fewer or cheaper nodes, lower on_demand_max, or raise max_hourly_cost")
    if unknown:
        return (f"{unknown} node(s) of {what} have no known price, so its cost cannot be held under max_hourly_cost "
                f"{cap:.4f} (known part: up to {worst:.4f} USD/hour); nothing was created")
    return None


def over_max_nodes(total: int, max_nodes: int | None, parts: dict[str, int]) -> str | None:
    """The refusal when the cluster would have more than ``max_nodes`` nodes, naming where they are."""
    if max_nodes is None or total <= max_nodes:
        return None
    shown = ", ".join(f"{k}: {v}" for k, v in parts.items() if v)
    return (f"the cluster would have {total} nodes ({shown}), more than max_nodes {max_nodes}; nothing was created. "
            "Fix the counts, or raise max_nodes if that many is meant")
