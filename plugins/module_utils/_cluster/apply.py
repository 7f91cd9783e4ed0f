# -*- coding: utf-8 -*-
# Copyright: bacalhau.aws_spot contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Acting on one region's plan: the network, the surplus, the launches with fallback, the
on-demand stand-ins and their replacement by spot. Private."""

from __future__ import annotations

from typing import Any
try:
    import botocore.exceptions
except ImportError:
    pass  # AnsibleAWSModule reports a missing botocore
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._placement import pools as capacity
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._cluster import learning
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._cluster import instances as inst
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._cluster import build
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._pricing import spot as pricing
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._aws.common import AwsSpotError
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._aws.common import error_text
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._aws.common import together
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._cluster.spec import ClusterSpec
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._cluster.plan import RegionPlan
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._cluster.result import region_result


def apply_present(spec: ClusterSpec, plan: RegionPlan) -> dict[str, Any]:
    """Act on one region; never raises: failures land in the region's result."""
    result = region_result(spec, plan)
    ec2 = plan.clients.ec2
    current = {i["InstanceId"]: i for i in plan.in_scope}
    try:
        finish_network = None
        if plan.network_changes:
            finish_network = build.prepare(ec2, spec, plan.reads.net)
            result["changed"] = True
        if plan.to_terminate:
            ids = [i["InstanceId"] for i in plan.to_terminate]
            if plan.release is not None:
                for reason, some in release_reasons(ids, spec).items():
                    plan.release(some, reason)
            inst.terminate(ec2, ids)
            result["changed"] = True
            result["terminated"] = ids
            for iid in ids:
                current.pop(iid, None)
            if spec.wait:
                inst.wait_terminated(ec2, ids, spec.wait_timeout)
        network_error = None
        if plan.to_launch or plan.to_replace:
            ids = plan.reads.net.ids()
            outcome: dict[str, Any] = {}

            def _launch() -> None:
                outcome["launch"] = _launch_all(spec, plan, ids)

            # the network's last round (routes, rules, attributes) goes with the launch
            try:
                together(_launch, finish_network)
            except Exception as exc:  # pylint: disable=broad-except
                if "launch" not in outcome:
                    raise
                network_error = exc  # the instances are up: report them, and the network's error
            finish_network = None
            launched, attempts, stand_ins, replacing = outcome["launch"]
            result["attempts"] = attempts
            learning.launched_into((result.get("placement") or {}).get("pools") or [], attempts)
            new_ids = [i["InstanceId"] for i in launched]
            result["launched"] = new_ids
            result["on_demand_fallback"] = [i["InstanceId"] for i in stand_ins]
            result["changed"] = result["changed"] or bool(new_ids)
            filled = len(new_ids) - replacing
            waiter_error = None
            if new_ids and spec.wait:
                try:
                    launched = inst.wait_running(ec2, new_ids, spec.wait_timeout)  # with public addresses
                except botocore.exceptions.WaiterError as exc:
                    waiter_error = exc  # e.g. a spot instance reclaimed right after launch
                    launched = inst.describe_instances_by_id(ec2, new_ids)
            current.update({i["InstanceId"]: i for i in launched if inst.is_live(i)})
            lost = [i["InstanceId"] for i in launched if not inst.is_live(i)]
            if replacing and waiter_error is None and not lost:  # make before break: spot is up, the stand-ins go
                result["replaced"] = _break(spec, plan, replacing)
                for iid in result["replaced"]:
                    current.pop(iid, None)
            problems = []
            if filled < plan.to_launch:
                tried = ", ".join(
                    f"{a['instance_type']} in {a['availability_zone']}: {a['error_code'] or 'launched ' + str(a['launched'])}"
                    for a in attempts
                )
                problems.append(f"launched {filled} of the {plan.to_launch} missing instances "
                                f"(tried {tried or 'nothing: no instance type is offered in the zones'})")
            if lost:
                problems.append(f"{len(lost)} new instance(s) ended before running ({', '.join(lost)}); "
                                "run again to replace them")
            elif waiter_error is not None:
                problems.append(f"new instances did not reach running within {spec.wait_timeout}s ({waiter_error}); "
                                "run again to check on them, or raise wait_timeout")
            if network_error is not None:
                problems.append(f"the network could not be completed: {error_text(network_error)}; run again")
            if problems:
                result["shortfall"] = filled < plan.to_launch or bool(lost)
                raise AwsSpotError("; ".join(problems), plan.spec.region)
        if finish_network is not None:  # nothing was launched: the network's last round alone
            finish_network()
    except Exception as exc:  # pylint: disable=broad-except
        result["failed"] = True
        result["error"] = exc.message if isinstance(exc, AwsSpotError) else error_text(exc)
        result["exception"] = exc
    views = [inst.view(i, plan.spec.region, plan.reads.architectures) for i in current.values()]
    views.sort(key=lambda v: (v["availability_zone"] or "", v["instance_id"]))
    result["instances"] = views
    result["running"] = len(views)
    result["network"] = plan.reads.net.ids()
    try:
        types = sorted({v["instance_type"] for v in views if v["lifecycle"] == "spot"})
        prices = dict(plan.reads.prices or {})
        known = set(plan.spec.instance_types or []) if plan.reads.prices is not None else set()
        unknown = [t for t in types if t not in known]
        if unknown:  # types read while planning need no second call
            prices.update(pricing.spot_prices(ec2, unknown))
        result["estimated_hourly_cost"] = pricing.hourly_cost(views, prices, plan.reads.on_demand_prices)
    except botocore.exceptions.ClientError:
        result["estimated_hourly_cost"] = None
    return result


def release_reasons(ids: list[str], spec: ClusterSpec) -> dict[str, list[str]]:
    """Why each instance is let go, for the pool history: a draining node after EC2's interruption
    warning (``interrupted_instance_ids``) as a spot interruption, after a rebalance recommendation
    as ``rebalance``; the rest is a scale-down."""
    drain, warned = set(spec.drain_instance_ids or []), set(spec.interrupted_instance_ids or [])
    out: dict[str, list[str]] = {}
    for iid in ids:
        reason = ("spot-interruption" if iid in warned else "rebalance") if iid in drain else "scale-down"
        out.setdefault(reason, []).append(iid)
    return out


def _launch_all(spec: ClusterSpec, plan: RegionPlan, ids: dict[str, Any]) -> tuple[list, list, list, int]:
    """The region's launches: spot (or on-demand) as placed, then on-demand stand-ins for what spot
    could not fill (market spot-then-on-demand). Returns (instances, attempts, stand-ins, replacing):
    ``replacing`` of the spot instances replace on-demand stand-ins."""
    ec2 = plan.clients.ec2
    subnets, group = ids["subnet_ids"], ids["security_group_id"]
    wanted = 0 if plan.placement.skip_spot else plan.to_launch + plan.to_replace
    groups = [(launch.count, [(p.instance_type, p.zone) for p in launch.pools]) for launch in plan.placement.launches]
    launched, attempts = inst.launch_over(ec2, spec, plan.spec, groups, plan.placement.pairs, plan.reads.images, subnets, group,
                                          wanted, plan.reads.root_device)
    covered = min(len(launched), plan.to_launch)
    replacing = len(launched) - covered
    stand_ins: list[dict[str, Any]] = []
    wanted_od = min(plan.to_launch - covered, plan.to_fallback)
    if wanted_od > 0:  # spread over the zones as spot is: counting what runs there and what just launched
        existing: dict[str, int] = {}
        for i in [i for i in plan.in_scope if i not in plan.to_terminate] + launched:
            zone = i.get("Placement", {}).get("AvailabilityZone")
            existing[zone] = existing.get(zone, 0) + 1
        spread = capacity.assign(plan.placement.fallback_pools, wanted_od, existing, spec.availability_zone_strategy,
                                 spec.min_placement_score)
        od_groups = [(launch.count, [(p.instance_type, p.zone) for p in launch.pools]) for launch in spread]
        pairs = [(p.instance_type, p.zone) for p in plan.placement.fallback_pools]
        stand_ins, tried = inst.launch_over(ec2, spec, plan.spec, od_groups, pairs, plan.reads.images, subnets, group,
                                            wanted_od, plan.reads.root_device, market="on-demand",
                                            extra_tags={capacity.FALLBACK_TAG: capacity.FALLBACK_VALUE})
        attempts += tried
    return launched + stand_ins, attempts, stand_ins, replacing


def _break(spec: ClusterSpec, plan: RegionPlan, replacing: int) -> list[str]:
    """Terminate ``replacing`` on-demand stand-ins (the oldest first), now that spot runs in their place."""
    def stamp(i: dict[str, Any]) -> Any:
        launch_time = i.get("LaunchTime")
        return (launch_time.timestamp() if hasattr(launch_time, "timestamp") else 0, i["InstanceId"])

    ids = [i["InstanceId"] for i in sorted(plan.fallback_now, key=stamp)[:replacing]]
    if ids:
        if plan.release is not None:
            plan.release(ids, "replaced-fallback")
        inst.terminate(plan.clients.ec2, ids)
        if spec.wait:
            inst.wait_terminated(plan.clients.ec2, ids, spec.wait_timeout)
    return ids
