# -*- coding: utf-8 -*-
# Copyright: bacalhau.aws_spot contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Read a cluster's instances in many regions, changing nothing. Private.

The engine of ``spot_cluster_info``: one ``DescribeInstances`` per region (every
state, by the cluster's tags), all regions at once, split here into the live
instances (pending, running, stopping, stopped) and the ones that ended
(shutting-down, terminated; EC2 lists them for about an hour). A spot instance that
EC2 took back ends with the state reason ``Server.SpotInstanceTermination``: those
are the interruptions. With ``estimate_cost`` the running spot instances are priced
with one ``DescribeSpotPriceHistory`` per region (a second round trip, so it is off
unless asked).
"""

from __future__ import annotations

import datetime
from typing import Any

from ansible_collections.bacalhau.aws_spot.plugins.module_utils._cluster import instances as inst
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._cluster.spec import NATS_PORT
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._pricing import spot as pricing
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._pricing import cost_report as cr
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._pricing import price_list
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._placement import history as ph
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._aws.common import AwsSpotError
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._aws.common import error_text
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._aws.common import region_client
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._aws.common import run_per_region

try:
    import botocore.exceptions
except ImportError:
    pass  # AnsibleAWSModule reports a missing botocore

ENDED_STATES = ("shutting-down", "terminated")
SPOT_INTERRUPTION = "Server.SpotInstanceTermination"


def _view(instance: dict[str, Any], region: str) -> dict[str, Any]:
    out = inst.view(instance, region)
    reason = instance.get("StateReason") or {}
    out["state_reason"] = {"code": reason.get("Code"), "message": reason.get("Message")} if reason else None
    out["interrupted"] = reason.get("Code") == SPOT_INTERRUPTION
    return out


def read_region(module: Any, cluster: str, role: str | None, region: str, estimate_cost: bool) -> dict[str, Any]:
    """The cluster's instances in one region (of ``role``, or every role)."""
    ec2 = region_client(module, "ec2", region)
    found, answered_at = inst.describe_cluster_instances_seen(ec2, cluster)
    views = [_view(i, region) for i in found]
    if role:
        views = [v for v in views if v["role"] == role]
    live = [v for v in views if v["state"] not in ENDED_STATES]
    ended = [v for v in views if v["state"] in ENDED_STATES]
    counts: dict[str, int] = {}
    for v in live:
        if v["state"] in inst.LIVE_STATES:
            counts[v["role"] or "unknown"] = counts.get(v["role"] or "unknown", 0) + 1
    cost = None
    if estimate_cost:
        spot = [v for v in live if v["state"] in inst.LIVE_STATES and v["lifecycle"] == "spot"]
        try:
            prices = pricing.spot_prices(ec2, [v["instance_type"] for v in spot])
            cost = pricing.hourly_cost(spot, prices) if spot else 0.0
        except botocore.exceptions.ClientError as exc:
            module.warn(f"{region}: no spot prices ({error_text(exc)}); its cost is unknown")
    return {"region": region, "live": live, "ended": ended, "counts": counts, "estimated_hourly_cost": cost,
            "seen": found, "answered_at": answered_at, "ec2": ec2}


def cost_report(module: Any, cluster: str, by_region: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """What the cluster cost, per pool and in total (``_pricing.cost_report``), from the pool history
    (read, never written: this read changes nothing) merged with what this read saw. One
    ``DescribeSpotPriceHistory`` per spot pool per window, all at once; on-demand prices from the
    Price List service (cached on the controller)."""
    times = [ph.utc(r["answered_at"]) for r in by_region.values() if r.get("answered_at") is not None]
    now = max(times) if times else datetime.datetime.now(datetime.timezone.utc)
    history, warning = ph.load(ph.history_path(cluster))
    if warning:
        module.warn(warning)
    history.observe({r: v["seen"] for r, v in by_region.items()}, now, complete_regions=list(by_region))
    lives = history.as_list()
    clients = {r: v["ec2"] for r, v in by_region.items()}
    for life in lives:  # a pool of a region this read did not cover (an old region of the cluster)
        if life["region"] not in clients:
            clients[life["region"]] = region_client(module, "ec2", life["region"])
    prices, errors = cr.read_price_history(clients, lives, now)
    for key, exc in sorted(errors.items()):
        module.warn(f"no spot price history for {'/'.join(key)} ({error_text(exc)}); its instances are left unpriced")
    wanted = {(life["region"], life["instance_type"]) for life in lives if life.get("instance_type")}
    try:
        on_demand = price_list.on_demand_prices(module, wanted) if wanted else {}
    except (AwsSpotError, botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
        module.warn(f"on-demand prices unavailable ({exc.message if isinstance(exc, AwsSpotError) else error_text(exc)}); "
                    "on-demand nodes and the saving are left unpriced")
        on_demand = {}
    # this cluster's lives only: the history keeps an earlier cluster of the same name (placement learns
    # from it), whose nodes all ended when it was destroyed
    report = cr.report(lives, prices, on_demand, now, since=cr.last_destroyed(lives))
    return {"cost_report": report, "cost_table": cr.table(report)}


def read(module: Any, cluster: str, regions: list[str], role: str | None = None,
         estimate_cost: bool = False, with_cost_report: bool = False) -> dict[str, Any]:
    """Every region at once; a region that cannot be read fails the whole read, naming it."""
    results, errors = run_per_region(regions, lambda r: read_region(module, cluster, role, r, estimate_cost))
    if errors:
        raise AwsSpotError(
            "Could not read the cluster's instances in "
            + "; ".join(f"{r}: {e.message if isinstance(e, AwsSpotError) else error_text(e)}"
                        for r, e in sorted(errors.items()))
            + ". Nothing was changed. Check the region names and your credentials, then run again.",
            details={"errors": {r: error_text(e) for r, e in errors.items()}},
        )
    by_region = {r: results[r] for r in sorted(results)}
    extra = cost_report(module, cluster, by_region) if with_cost_report else {}
    instances = [v for r in by_region.values() for v in sorted(r["live"], key=lambda v: v["instance_id"])]
    ended = [v for r in by_region.values() for v in sorted(r["ended"], key=lambda v: v["instance_id"])]
    costs = [r["estimated_hourly_cost"] for r in by_region.values()]
    total = None if (not estimate_cost or any(c is None for c in costs)) else round(sum(costs), 6)
    return {
        "instances": instances,
        # what the compute nodes dial (Compute.Orchestrators): each running orchestrator's public address
        "orchestrator_endpoints": [f"nats://{v['public_ip']}:{NATS_PORT}" for v in instances
                                   if v["role"] == "orchestrator" and v.get("state") == "running" and v.get("public_ip")],
        "ended": ended,
        "interrupted": [v["instance_id"] for v in ended if v["interrupted"]],
        "regions": {
            r: {"region": r, "running": v["counts"], "instances": len(v["live"]), "ended": len(v["ended"]),
                "estimated_hourly_cost": v["estimated_hourly_cost"]}
            for r, v in by_region.items()
        },
        "estimated_hourly_cost": total,
        **extra,
    }
