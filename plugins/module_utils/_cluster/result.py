# -*- coding: utf-8 -*-
# Copyright: bacalhau.aws_spot contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The shape of ``spot_cluster``'s result: one region's, and the whole. Private."""

from __future__ import annotations

from typing import Any
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._cluster.spec import ClusterSpec
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._cluster.place import placement_view
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._cluster.plan import RegionPlan


def region_result(spec: ClusterSpec, plan: RegionPlan) -> dict[str, Any]:
    return {
        "region": plan.spec.region,
        "role": spec.role,
        "requested": plan.spec.count,
        "before": len(plan.in_scope),
        "running": len(plan.in_scope),
        "to_launch": plan.to_launch,
        "to_terminate": [i["InstanceId"] for i in plan.to_terminate],
        "launched": [],
        "terminated": [],
        "attempts": [],
        "network": plan.net.ids(),
        "network_changes": list(plan.network_changes),
        "changed": False,
        "failed": False,
        "error": None,
        "estimated_hourly_cost": None,
        "shortfall": False,
        "on_demand_fallback": [],
        "replaced": [],
        "to_replace": plan.to_replace,
        "placement": placement_view(spec, plan) if spec.state == "present" else {},
    }


def unaccepted_failures(regions: dict[str, dict[str, Any]], failed: dict[str, str], allow_partial: bool) -> dict[str, str]:
    """The failures that fail the task: all, or with allow_partial only those that are not a capacity shortfall."""
    return {r: why for r, why in failed.items() if not (allow_partial and regions[r].get("shortfall"))}


def summary(spec: ClusterSpec, plans: dict[str, RegionPlan], regions: dict[str, dict[str, Any]]) -> dict[str, Any]:
    order = [r for r in (spec.region_names or sorted(regions)) if r in regions]
    instances: list[dict[str, Any]] = []
    failed: dict[str, str] = {}
    exceptions: dict[str, BaseException] = {}
    costs: list[float | None] = []
    for name in order:
        res = regions[name]
        instances.extend(res.pop("instances", []))
        exc = res.pop("exception", None)
        if res["failed"]:
            failed[name] = res["error"]
            if exc is not None:
                exceptions[name] = exc
        costs.append(res.get("estimated_hourly_cost"))
    total = None if any(c is None for c in costs) else round(sum(c for c in costs if c is not None), 6)
    return {
        "changed": any(regions[r]["changed"] for r in order),
        "instances": instances,
        "regions": {r: regions[r] for r in order},
        "estimated_hourly_cost": total,
        "diff": {
            "before": {r: regions[r]["before"] for r in order},
            "after": {r: regions[r]["running"] for r in order},
        },
        "failed_regions": failed,
        "exceptions": exceptions,
        "plan_cost": plan_cost_of(spec, plans),
    }


def plan_cost_of(spec: ClusterSpec, plans: dict[str, RegionPlan]) -> dict[str, Any]:
    """The plan's cost over every region, as checked against max_hourly_cost."""
    costs = [p.cost for p in plans.values() if p.cost]
    extra = spec.extra_hourly_cost if costs else 0.0
    return {
        "expected": round(extra + sum(c["expected"] for c in costs), 6),
        "worst_case": round(extra + sum(c["worst_case"] for c in costs), 6),
        "unknown": sum(c["unknown"] for c in costs),
        "max_hourly_cost": spec.max_hourly_cost,
        "extra_hourly_cost": spec.extra_hourly_cost,
        "role": {
            "expected": round(sum(c["role"]["expected"] for c in costs), 6),
            "worst_case": round(sum(c["role"]["worst_case"] for c in costs), 6),
            "unknown": sum(c["role"]["unknown"] for c in costs),
        },
    }
