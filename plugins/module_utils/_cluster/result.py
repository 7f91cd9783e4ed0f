# -*- coding: utf-8 -*-
# Copyright: bacalhau.aws_spot contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The shape of ``spot_cluster``'s result: one region's, and the whole. Private."""

from __future__ import annotations

from typing import Any
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._cluster.spec import ClusterSpec
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._cluster.place import placement_view
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._cluster.plan import RegionPlan
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._cluster.spec import NATS_PORT


OVERFLOW_KEY = "bacalhau:overflow-for"  # on overflow nodes: the home regions they stand in for


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
        "network": plan.reads.net.ids(),
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
    costs = [p.placement.cost for p in plans.values() if p.placement.cost]
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


# --------------------------------------------------------------------------- the whole cluster (reconcile)
def why(desc: Any, role: str, plan_: RegionPlan, overflow_for: str = "") -> dict[str, str | None]:
    """Why the region's plan launches and terminates what it does."""
    drained = [i["InstanceId"] for i in plan_.to_terminate if i["InstanceId"] in desc.drain]
    launch = terminate = None
    if overflow_for:
        launch = f"overflow for {overflow_for}, short of their count"
    elif plan_.to_launch:
        draining = sum(1 for i in plan_.in_scope if i["InstanceId"] in desc.drain)
        launch = (f"{draining} replacement(s) for draining nodes, " if role == "compute" and draining else "") + \
            f"{plan_.to_launch} missing of count {plan_.spec.count} ({len(plan_.in_scope)} live)"
    if plan_.to_replace:
        launch = (launch + "; " if launch else "") + f"spot for {plan_.to_replace} on-demand stand-in(s), make before break"
    if plan_.to_terminate:
        if plan_.spec.standby:
            terminate = "overflow no longer needed: the home regions hold their count"
        elif drained and len(drained) == len(plan_.to_terminate):
            terminate = "drained (notice or rebalance recommendation), their replacements run"
        else:
            terminate = f"surplus over count {plan_.spec.count}" + (f", the drained first ({', '.join(drained)})"
                                                                    if drained else "")
    return {"launch": launch, "terminate": terminate}


def cluster_summary(cluster: Any, results: dict[tuple[str, str], dict[str, Any]]) -> dict[str, Any]:
    desc = cluster.desc
    rows, instances, failed, exceptions, costs = [], [], {}, {}, []
    for region, role, _spec, _plan in cluster.each():
        res = results[(region, role)]
        instances.extend(res.pop("instances", []))
        exc = res.pop("exception", None)
        if res["failed"]:
            failed[f"{region} {role}"] = res["error"]
            if exc is not None:
                exceptions[f"{region} {role}"] = exc
        costs.append(res.get("estimated_hourly_cost"))
        rows.append(res)
    orchestrators = [v for v in instances if v["role"] == "orchestrator"]
    endpoints = ([f"nats://{v['public_ip']}:{NATS_PORT}" for v in orchestrators if v.get("public_ip")]
                 if desc.orchestrator is not None else list(desc.endpoints))
    terminated = [i for row in rows for i in row["terminated"] + row.get("replaced", [])]
    # the compute nodes Bacalhau still has to be set up on: running, not draining, not joined yet
    # (without joined_instance_ids: the ones launched by this run)
    joined = desc.joined
    to_configure = [v["instance_id"] for v in instances if v["role"] == "compute" and v.get("state") == "running"
                    and v["instance_id"] not in desc.drain
                    and (v["instance_id"] not in joined if joined is not None else
                         any(v["instance_id"] in row["launched"] for row in rows))]
    return {
        "changed": any(row["changed"] for row in rows),
        "mode": desc.mode,
        "summary": rows,
        "instances": instances,
        "orchestrator_endpoints": endpoints,
        "nats_cidrs": list(cluster.nats) if desc.orchestrator is not None else list(desc.compute.nats_cidrs),
        "launched": [i for row in rows for i in row["launched"]],
        "terminated": terminated,
        "released": terminated if desc.mode == "release" else [],
        "overflow": [f"{v['instance_id']} in {v['region']} (for {v['tags'][OVERFLOW_KEY]})" for v in instances
                     if OVERFLOW_KEY in (v.get("tags") or {})],
        "drain_instance_ids": sorted(desc.drain),
        "interrupted_instance_ids": sorted(desc.drain & set(desc.compute.interrupted_instance_ids)),
        "to_configure": [] if cluster.check_mode else to_configure,
        "plan_cost": cluster.scores.get("plan_cost"),
        "estimated_hourly_cost": None if any(c is None for c in costs) else round(sum(costs), 6),
        "failed_regions": failed,
        "exceptions": exceptions,
        "diff": {"before": {f"{r['region']} {r['role']}": r["before"] for r in rows},
                 "after": {f"{r['region']} {r['role']}": r["running"] for r in rows}},
    }
