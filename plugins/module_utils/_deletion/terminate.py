# -*- coding: utf-8 -*-
# Copyright: bacalhau.aws_spot contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Rounds B and C of a region's deletion: spot requests, fleets, instances, elastic IPs, and the
wait for the terminations. Private.
"""

from __future__ import annotations

import functools
try:
    import botocore.exceptions
except ImportError:
    pass  # AnsibleAWSModule reports a missing botocore for us
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._aws.common import THROTTLING_CODES
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._aws.common import error_code
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._aws.common import together
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._deletion.spec import KIND
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._deletion.spec import Resource
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._deletion.context import ALREADY_GONE
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._deletion.context import NOT_OURS
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._deletion.context import RegionContext
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._deletion.context import _batches
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._deletion.context import _instance_states
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._deletion.context import _waited
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._deletion.context import attempt
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._deletion.context import for_each
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._deletion.context import ignore_gone


def replaces_instances(res: Resource) -> bool:
    """A persistent spot request or a ``maintain`` fleet launches again what is terminated."""
    rule = KIND[res.type].relaunches
    return bool(rule and rule(res.raw))


def delete_spot_instance_requests(ctx: RegionContext, items: list[Resource]) -> None:
    def cancel(res: Resource) -> None:
        if attempt(res, lambda: ctx.client.cancel_spot_instance_requests(SpotInstanceRequestIds=[res.id])):
            instance = res.raw.get("InstanceId")
            if instance and instance not in ctx.ids("instances"):
                res.note = f"cancelled; its instance {instance} is {NOT_OURS} and was left alone"

    for_each(items, cancel)


def _fleet_instance_ids(ctx: RegionContext, res: Resource) -> list[str] | None:
    """The instances of a fleet: listed in the fleet (instant) or by DescribeFleetInstances.

    ``None`` when they cannot be listed (the fleet is then deleted with its instances anyway).
    """
    if res.raw.get("Type") == "instant":
        return [i for group in res.raw.get("Instances") or [] for i in group.get("InstanceIds") or []]
    try:
        answer = ctx.client.describe_fleet_instances(FleetId=res.id, aws_retry=True)
    except botocore.exceptions.ClientError:
        return None
    return [i["InstanceId"] for i in answer.get("ActiveInstances") or [] if i.get("InstanceId")]


def delete_ec2_fleets(ctx: RegionContext, items: list[Resource]) -> None:
    """Delete the fleets; the instances they terminate go to ``ctx.fleet_instances`` (round C waits)."""
    def delete(res: Resource) -> None:
        instances = _fleet_instance_ids(ctx, res)
        # instant fleets must be deleted with their instances; others are told to
        # terminate theirs when they have any
        terminate = instances is None or bool(instances) or res.raw.get("Type") == "instant"
        answer = ctx.client.delete_fleets(FleetIds=[res.id], TerminateInstances=terminate, aws_retry=True)
        for failure in answer.get("UnsuccessfulFleetDeletions") or []:
            err = failure.get("Error") or {}
            if err.get("Code") in KIND["ec2_fleets"].not_found:
                res.deleted(ALREADY_GONE)
            else:
                res.failed(f"{err.get('Code', 'Error')}: {err.get('Message', '')}".strip())
            return
        res.deleted()
        ctx.fleet_instances.extend(instances or [])

    for_each(items, delete)


def terminate_instances(ctx: RegionContext, items: list[Resource]) -> None:
    """``TerminateInstances``; the ids it took go to ``ctx.terminating`` (round C waits for them)."""
    by_id = {res.id: res for res in items}
    for batch in _batches(list(by_id)):
        try:
            ctx.client.terminate_instances(InstanceIds=batch, aws_retry=True)
            ctx.terminating.extend(batch)
        except botocore.exceptions.ClientError as exc:
            if error_code(exc) in THROTTLING_CODES:
                raise  # tried as often as the policy allows: one by one would only multiply that
            # one bad id fails the whole call: go one by one to know which
            for instance_id in batch:
                res = by_id[instance_id]
                if attempt(res, lambda i=instance_id: ctx.client.terminate_instances(InstanceIds=[i])):
                    if res.note != ALREADY_GONE:
                        ctx.terminating.append(instance_id)


def delete_elastic_ips(ctx: RegionContext, items: list[Resource]) -> None:
    def release(res: Resource) -> None:
        association = res.raw.get("AssociationId")
        if association:
            ignore_gone(lambda: ctx.client.disassociate_address(AssociationId=association))
        attempt(res, lambda: ctx.client.release_address(AllocationId=res.id), dependency=True)

    for_each(items, release)


def wait_terminated(ctx: RegionContext) -> None:
    """One waiter for every instance terminating, ours and the fleets'.

    Ours are deleted once terminated, or failed with their state. A fleet's instance
    that is not terminated in time is not fatal: what it still holds is named later.
    """
    ids = list(dict.fromkeys(ctx.terminating + ctx.fleet_instances))
    if not ids:
        return
    reasons = [r for r in together(*[functools.partial(_waited, ctx, KIND["instances"].waiter, InstanceIds=batch)
                                     for batch in _batches(ids)]) if r]
    # the waiter gave up: see which did terminate (those not listed any more are gone)
    states = _instance_states(ctx, ids) if reasons else {}
    ours = {res.id: res for res in ctx.of_type("instances")}
    for instance_id in ids:
        state = states.get(instance_id, "terminated")
        if state == "terminated":
            ctx.terminated.add(instance_id)
            if instance_id in ours:
                ours[instance_id].deleted()
        elif instance_id in ours:
            ours[instance_id].failed(f"still {state} after termination was requested: {reasons[0]}")
