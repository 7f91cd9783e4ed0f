# -*- coding: utf-8 -*-
# Copyright: bacalhau.aws_spot contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The network's deletes that need more than their record's one call (rules referencing groups,
gateways and route tables detached, interfaces and volumes), and the plain delete unless used.
Private.
"""

from __future__ import annotations

import functools
from typing import Any
from typing import Callable
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._deletion import events as _events
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._aws.common import together
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._deletion.discover import describe_by_values
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._deletion.discover import goes_with_its_vpc
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._deletion.spec import KIND
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._deletion.spec import Resource
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._deletion.spec import ResourceKind
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._deletion.context import Deleter
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._deletion.context import RegionContext
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._deletion.context import WENT_WITH_ITS_INSTANCE
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._deletion.context import _waited
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._deletion.context import attempt
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._deletion.context import blocked
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._deletion.context import describe_network_interfaces
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._deletion.context import for_each
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._deletion.context import ignore_gone
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._deletion.context import _attached_elsewhere


def revoke_group_references(ctx: RegionContext, res: Resource) -> None:
    """Revoke every rule of ours that references a group: our groups can then go in any order."""
    revokes = (
        (ctx.client.revoke_security_group_ingress, _group_pairs_only(res.raw.get("IpPermissions"))),
        (ctx.client.revoke_security_group_egress, _group_pairs_only(res.raw.get("IpPermissionsEgress"))),
    )
    together(*[functools.partial(ignore_gone, functools.partial(revoke, GroupId=res.id, IpPermissions=rules))
               for revoke, rules in revokes if rules])


def _group_pairs_only(permissions: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """The part of each rule that references another group (CIDR parts stay)."""
    out = []
    for perm in permissions or []:
        pairs = [
            {key: pair[key] for key in ("GroupId", "UserId", "VpcPeeringConnectionId") if pair.get(key)}
            for pair in perm.get("UserIdGroupPairs") or []
            if pair.get("GroupId")
        ]
        if pairs:
            rule = {key: perm[key] for key in ("IpProtocol", "FromPort", "ToPort") if key in perm}
            rule["UserIdGroupPairs"] = pairs
            out.append(rule)
    return out


def detach_internet_gateways(ctx: RegionContext, items: list[Resource]) -> None:
    """Round E for our gateways: detach them (deleted in round F, with the VPCs)."""
    for_each(items, functools.partial(detach_internet_gateway, ctx))


def detach_internet_gateway(ctx: RegionContext, res: Resource) -> None:
    for attachment in res.raw.get("Attachments") or []:
        vpc_id = attachment.get("VpcId")
        if vpc_id:
            ignore_gone(lambda v=vpc_id: ctx.client.detach_internet_gateway(InternetGatewayId=res.id, VpcId=v),
                        dependency=True)


def disassociate_route_table(ctx: RegionContext, res: Resource) -> None:
    if goes_with_its_vpc("route_tables", res.raw):
        res.failed(
            f"{res.id} is the main route table of {res.raw.get('VpcId')}: it cannot be deleted on its own "
            "and goes when its VPC is deleted"
        )
        return
    together(*[
        functools.partial(ignore_gone, functools.partial(
            ctx.client.disassociate_route_table, AssociationId=assoc["RouteTableAssociationId"]))
        for assoc in res.raw.get("Associations") or [] if assoc.get("RouteTableAssociationId")
    ])


def delete_network_interfaces(ctx: RegionContext, items: list[Resource]) -> None:
    """Our ENIs not held elsewhere (:func:`fail_held_network_interfaces` went first)."""
    current = ctx.survey.enis()

    def delete(res: Resource) -> None:
        eni = current.get(res.id)
        if eni is None:
            res.deleted(WENT_WITH_ITS_INSTANCE)
            return
        if eni.get("Status") != "available":
            # attached to an instance we terminated
            attachment = eni.get("Attachment") or {}
            if attachment.get("DeleteOnTermination"):
                res.deleted(WENT_WITH_ITS_INSTANCE)  # EC2 deletes it as part of the termination
                return
            if attachment.get("AttachmentId") and attachment.get("DeviceIndex", 0) != 0:
                ignore_gone(lambda: ctx.client.detach_network_interface(
                    AttachmentId=attachment["AttachmentId"], Force=True))
            reason = _waited(ctx, KIND["network_interfaces"].waiter, NetworkInterfaceIds=[res.id])
            if reason:
                if not describe_by_values(describe_network_interfaces, ctx.client, "network-interface-id", [res.id]):
                    res.deleted(WENT_WITH_ITS_INSTANCE)
                else:
                    res.failed(f"did not become available after its instance {attachment.get('InstanceId')} terminated: {reason}")
                return
        attempt(res, lambda: ctx.client.delete_network_interface(NetworkInterfaceId=res.id), dependency=True)

    for_each(items, delete)


def delete_volumes(ctx: RegionContext, items: list[Resource]) -> None:
    current = ctx.survey.volumes()

    def delete(res: Resource) -> None:
        vol = current.get(res.id)
        if vol is None or vol.get("State") in ("deleting", "deleted"):
            res.deleted(WENT_WITH_ITS_INSTANCE)
            return
        if vol.get("State") == "in-use":
            attached = [a.get("InstanceId") for a in vol.get("Attachments") or [] if a.get("State") != "detached"]
            foreign = [i for i in attached if i not in ctx.terminated]
            if foreign:
                _attached_elsewhere(ctx, res, foreign[0], "detach it from that instance and run again")
                return
            if any(a.get("DeleteOnTermination") for a in vol.get("Attachments") or [] if a.get("InstanceId") in attached):
                res.deleted(WENT_WITH_ITS_INSTANCE)  # EC2 deletes it as part of the termination
                return
            for instance_id in attached:
                ignore_gone(lambda i=instance_id: ctx.client.detach_volume(
                    VolumeId=res.id, InstanceId=i, Force=True))
        if vol.get("State") != "available":
            reason = _waited(ctx, KIND["volumes"].waiter, VolumeIds=[res.id])
            if reason:
                res.failed(f"did not become available: {reason}")
                return
        attempt(res, lambda: ctx.client.delete_volume(VolumeId=res.id), dependency=True)

    for_each(items, delete)


def _unless_used(kind: ResourceKind) -> Deleter:
    """The deleter of a type without one of its own: its record's ``delete``, one call per
    resource, for those of ours without users (``ctx.users``); those with users are reported."""
    def delete_all(ctx: RegionContext, items: list[Resource]) -> None:
        def delete(res: Resource) -> None:
            if ctx.users.get(res.id):
                blocked(res, ctx.users[res.id])
                return
            call = functools.partial(getattr(ctx.client, kind.delete), **kind.delete_params(res))
            attempt(res, call, dependency=bool(kind.in_use))

        for_each(items, delete)

    return delete_all


# Round D's steps that need no check: type -> step on each of ours.
PREPARE: dict[str, Callable[[RegionContext, Resource], None]] = {
    "security_groups": revoke_group_references,
    "route_tables": disassociate_route_table,
    "event_rules": _events.remove_rule_targets,
}
