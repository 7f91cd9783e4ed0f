# -*- coding: utf-8 -*-
# Copyright: bacalhau.aws_spot contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Delete what :mod:`._nuke_discover` found in one region, in dependency order. Private.

Rules every deleter keeps:

* NotFound means already gone (idempotent deletes).
* A resource that cannot be deleted gets ``action: failed`` and the AWS error, and
  the rest carries on; one phase that blows up fails its own resources only.
* ``DependencyViolation`` is retried with backoff for a while (AWS is eventually
  consistent after terminations), then reported.
* Before deleting a security group, subnet or VPC we look for what still uses it
  (network interfaces, foreign security groups referencing ours, subnets, ...)
  and report those by id instead of trying. Real EC2 would refuse those deletes
  too; the emulator lets some of them through, and an explicit list is more useful
  than a bare ``DependencyViolation`` either way.
* Nothing that is not ours is ever modified: an ENI or volume attached to a
  foreign instance, or a security group referenced by a foreign one, is reported.
"""

from __future__ import annotations

import concurrent.futures
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

try:
    import botocore.exceptions
except ImportError:
    pass  # AnsibleAWSModule reports a missing botocore for us

from ansible_collections.amazon.aws.plugins.module_utils.retries import AWSRetry
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._common import (
    MANAGED_BY_KEY,
    MANAGED_BY_VALUE,
    error_code,
    error_text,
    paginate,
    together,
)
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._nuke_discover import (
    describe_by_values,
    describe_internet_gateways,
    describe_network_interfaces,
    describe_route_tables,
    describe_security_groups,
    describe_subnets,
    describe_volumes,
)
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._nuke_spec import (
    ACTION_WOULD_DELETE,
    RESOURCE_TYPES,
    Resource,
)

# Error codes meaning "it is not there (any more)".
NOT_FOUND_CODES = frozenset(
    {
        "InvalidInstanceID.NotFound",
        "InvalidSpotInstanceRequestID.NotFound",
        "InvalidFleetId.NotFound",
        "InvalidLaunchTemplateId.NotFound",
        "InvalidLaunchTemplateName.NotFoundException",
        "InvalidKeyPair.NotFound",
        "InvalidNetworkInterfaceID.NotFound",
        "InvalidAttachmentID.NotFound",
        "InvalidVolume.NotFound",
        "InvalidAllocationID.NotFound",
        "InvalidAssociationID.NotFound",
        "InvalidGroup.NotFound",
        "InvalidPermission.NotFound",
        "InvalidSubnetID.NotFound",
        "InvalidRouteTableID.NotFound",
        "InvalidInternetGatewayID.NotFound",
        "Gateway.NotAttached",
        "InvalidVpcID.NotFound",
    }
)
# DeleteFleets reports per fleet, with its own codes.
FLEET_GONE_CODES = frozenset({"fleetIdDoesNotExist"})

# Errors worth waiting out: something that is going away still holds the resource.
DEPENDENCY_CODES = ["DependencyViolation", "InvalidIPAddress.InUse", "IncorrectState"]
# Tunable (tests shorten it): jittered backoff, about a minute in all by default.
DEPENDENCY_RETRY: dict[str, Any] = {"retries": 6, "delay": 2, "max_delay": 20}

# Waiting for instances to terminate and for detached ENIs/volumes.
WAIT_DELAY = 5
WAIT_MAX_ATTEMPTS = 120
# Deletes of one type in one region run at once, this many.
DELETE_WORKERS = 8
TERMINATE_BATCH = 1000
ALREADY_GONE = "already gone"
NOT_OURS = f"not tagged {MANAGED_BY_KEY}={MANAGED_BY_VALUE}"


@dataclass
class RegionContext:
    """One region's client and what has happened there so far."""

    client: Any
    region: str
    resources: list[Resource]
    terminated: set[str] = field(default_factory=set)

    def ids(self, resource_type: str) -> set[str]:
        return {res.id for res in self.resources if res.type == resource_type}


# --------------------------------------------------------------------------- helpers
def _is_gone(exc: BaseException) -> bool:
    return error_code(exc) in NOT_FOUND_CODES


def with_dependency_retry(call: Callable[[], Any]) -> Any:
    """Run ``call``, retrying DependencyViolation and friends with backoff."""
    retry = AWSRetry.jittered_backoff(catch_extra_error_codes=DEPENDENCY_CODES, **DEPENDENCY_RETRY)
    return retry(call)()


def attempt(res: Resource, call: Callable[[], Any], dependency: bool = False) -> bool:
    """Delete ``res`` with ``call``; record the outcome. True when it is gone."""
    try:
        if dependency:
            with_dependency_retry(call)
        else:
            call()
    except botocore.exceptions.ClientError as exc:
        if _is_gone(exc):
            res.deleted(ALREADY_GONE)
            return True
        res.failed(error_text(exc))
        return False
    except botocore.exceptions.BotoCoreError as exc:
        res.failed(str(exc))
        return False
    res.deleted()
    return True


def ignore_gone(call: Callable[[], Any]) -> None:
    """A preparatory step (detach, disassociate, revoke) for which NotFound is fine."""
    try:
        call()
    except botocore.exceptions.ClientError as exc:
        if not _is_gone(exc):
            raise


def for_each(items: Iterable[Resource], work: Callable[[Resource], None]) -> None:
    """``work`` on every item at once (bounded); an exception fails only its item."""
    items = list(items)
    if not items:
        return

    def guarded(res: Resource) -> None:
        try:
            work(res)
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            res.failed(error_text(exc))

    if len(items) == 1:
        guarded(items[0])
        return
    with concurrent.futures.ThreadPoolExecutor(max_workers=min(DELETE_WORKERS, len(items))) as pool:
        list(pool.map(guarded, items))


def blocked(res: Resource, users: list[str]) -> None:
    shown = ", ".join(users[:10]) + (f" and {len(users) - 10} more" if len(users) > 10 else "")
    res.failed(
        f"DependencyViolation: {res.id} is still used by {shown}; "
        "remove or detach those (they are not ours, or could not be deleted) and run again"
    )


def _eni_label(eni: dict[str, Any]) -> str:
    instance = (eni.get("Attachment") or {}).get("InstanceId")
    return f"{eni['NetworkInterfaceId']} (instance {instance})" if instance else eni["NetworkInterfaceId"]


def _live_enis(ctx: RegionContext, name: str, values: list[str]) -> list[dict[str, Any]]:
    """ENIs matching a filter, leaving out those of terminated instances (they go with them)."""
    enis = describe_by_values(describe_network_interfaces, ctx.client, name, values)
    unknown = sorted({
        instance for instance in ((eni.get("Attachment") or {}).get("InstanceId") for eni in enis)
        if instance and instance not in ctx.terminated
    })
    if unknown:
        for inst in describe_by_values(_all_instances, ctx.client, "instance-id", unknown):
            if inst["State"]["Name"] == "terminated":
                ctx.terminated.add(inst["InstanceId"])
    return [eni for eni in enis if (eni.get("Attachment") or {}).get("InstanceId") not in ctx.terminated]


def _wait(ctx: RegionContext, waiter_name: str, **params: Any) -> None:
    waiter = ctx.client.get_waiter(waiter_name)
    waiter.wait(WaiterConfig={"Delay": WAIT_DELAY, "MaxAttempts": WAIT_MAX_ATTEMPTS}, **params)


# --------------------------------------------------------------------------- deleters
def delete_spot_instance_requests(ctx: RegionContext, items: list[Resource]) -> None:
    def cancel(res: Resource) -> None:
        if attempt(res, lambda: ctx.client.cancel_spot_instance_requests(SpotInstanceRequestIds=[res.id], aws_retry=True)):
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
    fleet_instances: list[str] = []

    def delete(res: Resource) -> None:
        instances = _fleet_instance_ids(ctx, res)
        # instant fleets must be deleted with their instances; others are told to
        # terminate theirs when they have any
        terminate = instances is None or bool(instances) or res.raw.get("Type") == "instant"
        answer = ctx.client.delete_fleets(FleetIds=[res.id], TerminateInstances=terminate, aws_retry=True)
        for failure in answer.get("UnsuccessfulFleetDeletions") or []:
            err = failure.get("Error") or {}
            if err.get("Code") in FLEET_GONE_CODES:
                res.deleted(ALREADY_GONE)
            else:
                res.failed(f"{err.get('Code', 'Error')}: {err.get('Message', '')}".strip())
            return
        res.deleted()
        fleet_instances.extend(instances or [])

    for_each(items, delete)
    # the fleets terminate their instances; wait, so that subnets and groups are free
    # (a timeout here is not fatal: what still holds a subnet is named later)
    if fleet_instances:
        try:
            _wait(ctx, "instance_terminated", InstanceIds=fleet_instances[:TERMINATE_BATCH])
            ctx.terminated.update(fleet_instances)
        except botocore.exceptions.WaiterError:
            pass


def delete_instances(ctx: RegionContext, items: list[Resource]) -> None:
    ids = [res.id for res in items]
    by_id = {res.id: res for res in items}
    terminating: list[str] = []
    for start in range(0, len(ids), TERMINATE_BATCH):
        batch = ids[start:start + TERMINATE_BATCH]
        try:
            ctx.client.terminate_instances(InstanceIds=batch, aws_retry=True)
            terminating.extend(batch)
        except botocore.exceptions.ClientError:
            # one bad id fails the whole call: go one by one to know which
            for instance_id in batch:
                if attempt(by_id[instance_id], lambda i=instance_id: ctx.client.terminate_instances(InstanceIds=[i], aws_retry=True)):
                    if by_id[instance_id].note != ALREADY_GONE:
                        terminating.append(instance_id)
    if not terminating:
        return
    try:
        for start in range(0, len(terminating), TERMINATE_BATCH):
            _wait(ctx, "instance_terminated", InstanceIds=terminating[start:start + TERMINATE_BATCH])
        for instance_id in terminating:
            by_id[instance_id].deleted()
            ctx.terminated.add(instance_id)
        return
    except botocore.exceptions.WaiterError as exc:
        reason = str(exc)
    # the waiter gave up: see which did terminate
    states = {
        inst["InstanceId"]: inst["State"]["Name"]
        for inst in describe_by_values(_all_instances, ctx.client, "instance-id", terminating)
    }
    for instance_id in terminating:
        state = states.get(instance_id, "terminated")
        if state == "terminated":
            by_id[instance_id].deleted()
            ctx.terminated.add(instance_id)
        else:
            by_id[instance_id].failed(f"still {state} after termination was requested: {reason}")


def _all_instances(client: Any, filters: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Instances in any state (the discovery describe leaves terminated ones out)."""
    reservations = paginate(client, "describe_instances", "Reservations", Filters=filters)
    return [instance for reservation in reservations for instance in reservation.get("Instances", [])]


def delete_elastic_ips(ctx: RegionContext, items: list[Resource]) -> None:
    def release(res: Resource) -> None:
        association = res.raw.get("AssociationId")
        if association:
            ignore_gone(lambda: ctx.client.disassociate_address(AssociationId=association, aws_retry=True))
        attempt(res, lambda: ctx.client.release_address(AllocationId=res.id, aws_retry=True), dependency=True)

    for_each(items, release)


def delete_launch_templates(ctx: RegionContext, items: list[Resource]) -> None:
    for_each(items, lambda res: attempt(res, lambda: ctx.client.delete_launch_template(LaunchTemplateId=res.id, aws_retry=True)))


def _attached_elsewhere(ctx: RegionContext, res: Resource, instance_id: str | None, what: str) -> None:
    if instance_id is None:
        res.failed(f"{res.id} is in use (not by an instance); detach it and run again")
    elif instance_id in ctx.ids("instances"):
        res.failed(f"{res.id} is attached to instance {instance_id}, which is ours but was not terminated; {what}")
    else:
        res.failed(
            f"{res.id} is attached to instance {instance_id}, which is {NOT_OURS}; "
            f"{what} (this module never touches it)"
        )


def delete_network_interfaces(ctx: RegionContext, items: list[Resource]) -> None:
    current = {
        eni["NetworkInterfaceId"]: eni
        for eni in describe_by_values(describe_network_interfaces, ctx.client, "network-interface-id", [r.id for r in items])
    }

    def delete(res: Resource) -> None:
        eni = current.get(res.id)
        if eni is None:
            res.deleted("went with its instance")
            return
        if eni.get("Status") != "available":
            attachment = eni.get("Attachment") or {}
            instance_id = attachment.get("InstanceId")
            if instance_id not in ctx.terminated:
                _attached_elsewhere(ctx, res, instance_id, "detach it from that instance and run again")
                return
            if attachment.get("AttachmentId") and attachment.get("DeviceIndex", 0) != 0:
                ignore_gone(lambda: ctx.client.detach_network_interface(
                    AttachmentId=attachment["AttachmentId"], Force=True, aws_retry=True))
            try:
                _wait(ctx, "network_interface_available", NetworkInterfaceIds=[res.id])
            except botocore.exceptions.WaiterError as exc:
                if not describe_by_values(describe_network_interfaces, ctx.client, "network-interface-id", [res.id]):
                    res.deleted("went with its instance")
                else:
                    res.failed(f"did not become available after its instance {instance_id} terminated: {exc}")
                return
        attempt(res, lambda: ctx.client.delete_network_interface(NetworkInterfaceId=res.id, aws_retry=True), dependency=True)

    for_each(items, delete)


def delete_volumes(ctx: RegionContext, items: list[Resource]) -> None:
    current = {vol["VolumeId"]: vol for vol in describe_by_values(describe_volumes, ctx.client, "volume-id", [r.id for r in items])}

    def delete(res: Resource) -> None:
        vol = current.get(res.id)
        if vol is None or vol.get("State") in ("deleting", "deleted"):
            res.deleted("went with its instance")
            return
        if vol.get("State") == "in-use":
            attached = [a.get("InstanceId") for a in vol.get("Attachments") or [] if a.get("State") != "detached"]
            foreign = [i for i in attached if i not in ctx.terminated]
            if foreign:
                _attached_elsewhere(ctx, res, foreign[0], "detach it from that instance and run again")
                return
            for instance_id in attached:
                ignore_gone(lambda i=instance_id: ctx.client.detach_volume(
                    VolumeId=res.id, InstanceId=i, Force=True, aws_retry=True))
        if vol.get("State") != "available":
            try:
                _wait(ctx, "volume_available", VolumeIds=[res.id])
            except botocore.exceptions.WaiterError as exc:
                res.failed(f"did not become available: {exc}")
                return
        attempt(res, lambda: ctx.client.delete_volume(VolumeId=res.id, aws_retry=True), dependency=True)

    for_each(items, delete)


def _group_pairs_only(permissions: list[dict[str, Any]]) -> list[dict[str, Any]]:
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


def delete_security_groups(ctx: RegionContext, items: list[Resource]) -> None:
    ours = {res.id for res in items}

    # 1. revoke every rule of ours that references a group: our groups that
    #    reference each other can then be deleted in any order.
    def revoke(res: Resource) -> None:
        ingress = _group_pairs_only(res.raw.get("IpPermissions"))
        egress = _group_pairs_only(res.raw.get("IpPermissionsEgress"))
        if ingress:
            ignore_gone(lambda: ctx.client.revoke_security_group_ingress(GroupId=res.id, IpPermissions=ingress, aws_retry=True))
        if egress:
            ignore_gone(lambda: ctx.client.revoke_security_group_egress(GroupId=res.id, IpPermissions=egress, aws_retry=True))

    for_each(items, revoke)
    pending = [res for res in items if res.action == ACTION_WOULD_DELETE]
    ids = [res.id for res in pending]
    if not ids:
        return

    # 2. what still uses them: groups that are not ours referencing them, and ENIs.
    users: dict[str, list[str]] = {group_id: [] for group_id in ids}
    referencing: dict[str, dict[str, Any]] = {}
    by_ingress, by_egress, live_enis = together(
        lambda: describe_by_values(describe_security_groups, ctx.client, "ip-permission.group-id", ids),
        lambda: describe_by_values(describe_security_groups, ctx.client, "egress.ip-permission.group-id", ids),
        lambda: _live_enis(ctx, "group-id", ids),
    )
    for group in by_ingress + by_egress:
        referencing[group["GroupId"]] = group
    for group in referencing.values():
        if group["GroupId"] in ours:
            continue
        rules = (group.get("IpPermissions") or []) + (group.get("IpPermissionsEgress") or [])
        for rule in rules:
            for pair in rule.get("UserIdGroupPairs") or []:
                target = pair.get("GroupId")
                label = f"security group {group['GroupId']} ({group.get('GroupName')}) referencing it"
                if target in users and label not in users[target]:
                    users[target].append(label)
    for eni in live_enis:
        for group in eni.get("Groups") or []:
            if group.get("GroupId") in users:
                users[group["GroupId"]].append(f"network interface {_eni_label(eni)}")

    def delete(res: Resource) -> None:
        if users.get(res.id):
            blocked(res, users[res.id])
            return
        attempt(res, lambda: ctx.client.delete_security_group(GroupId=res.id, aws_retry=True), dependency=True)

    for_each(pending, delete)


def delete_subnets(ctx: RegionContext, items: list[Resource]) -> None:
    users: dict[str, list[str]] = {res.id: [] for res in items}
    for eni in _live_enis(ctx, "subnet-id", list(users)):
        if eni.get("SubnetId") in users:
            users[eni["SubnetId"]].append(f"network interface {_eni_label(eni)}")

    def delete(res: Resource) -> None:
        if users[res.id]:
            blocked(res, users[res.id])
            return
        attempt(res, lambda: ctx.client.delete_subnet(SubnetId=res.id, aws_retry=True), dependency=True)

    for_each(items, delete)


def delete_route_tables(ctx: RegionContext, items: list[Resource]) -> None:
    def delete(res: Resource) -> None:
        associations = res.raw.get("Associations") or []
        if any(assoc.get("Main") for assoc in associations):
            res.failed(
                f"{res.id} is the main route table of {res.raw.get('VpcId')}: it cannot be deleted on its own "
                "and goes when its VPC is deleted"
            )
            return
        together(*[
            (lambda a=assoc: ignore_gone(lambda: ctx.client.disassociate_route_table(
                AssociationId=a["RouteTableAssociationId"], aws_retry=True)))
            for assoc in associations if assoc.get("RouteTableAssociationId")
        ])
        attempt(res, lambda: ctx.client.delete_route_table(RouteTableId=res.id, aws_retry=True), dependency=True)

    for_each(items, delete)


def delete_internet_gateways(ctx: RegionContext, items: list[Resource]) -> None:
    def delete(res: Resource) -> None:
        for attachment in res.raw.get("Attachments") or []:
            vpc_id = attachment.get("VpcId")
            if vpc_id:
                ignore_gone(lambda v=vpc_id: with_dependency_retry(
                    lambda: ctx.client.detach_internet_gateway(InternetGatewayId=res.id, VpcId=v, aws_retry=True)))
        attempt(res, lambda: ctx.client.delete_internet_gateway(InternetGatewayId=res.id, aws_retry=True), dependency=True)

    for_each(items, delete)


def delete_vpcs(ctx: RegionContext, items: list[Resource]) -> None:
    ids = [res.id for res in items]
    users: dict[str, list[str]] = {vpc_id: [] for vpc_id in ids}
    subnets, groups, tables, gateways, live_enis = together(
        lambda: describe_by_values(describe_subnets, ctx.client, "vpc-id", ids),
        lambda: describe_by_values(describe_security_groups, ctx.client, "vpc-id", ids),
        lambda: describe_by_values(describe_route_tables, ctx.client, "vpc-id", ids),
        lambda: describe_by_values(describe_internet_gateways, ctx.client, "attachment.vpc-id", ids),
        lambda: _live_enis(ctx, "vpc-id", ids),
    )
    for subnet in subnets:
        users[subnet["VpcId"]].append(f"subnet {subnet['SubnetId']}")
    for group in groups:
        if group.get("GroupName") != "default":
            users[group["VpcId"]].append(f"security group {group['GroupId']}")
    for table in tables:
        if not any(assoc.get("Main") for assoc in table.get("Associations") or []):
            users[table["VpcId"]].append(f"route table {table['RouteTableId']}")
    for gateway in gateways:
        for attachment in gateway.get("Attachments") or []:
            if attachment.get("VpcId") in users:
                users[attachment["VpcId"]].append(f"internet gateway {gateway['InternetGatewayId']}")
    for eni in live_enis:
        if eni.get("VpcId") in users:
            users[eni["VpcId"]].append(f"network interface {_eni_label(eni)}")

    def delete(res: Resource) -> None:
        if users[res.id]:
            blocked(res, users[res.id])
            return
        attempt(res, lambda: ctx.client.delete_vpc(VpcId=res.id, aws_retry=True), dependency=True)

    for_each(items, delete)


def delete_key_pairs(ctx: RegionContext, items: list[Resource]) -> None:
    for_each(items, lambda res: attempt(res, lambda: _delete_key_pair(ctx, res)))


def _delete_key_pair(ctx: RegionContext, res: Resource) -> None:
    # by name: DeleteKeyPair answers success for any id, and some implementations
    # (the emulator) ignore KeyPairId; names are unique per region
    name = res.raw.get("KeyName")
    if name:
        ctx.client.delete_key_pair(KeyName=name, aws_retry=True)
    else:
        ctx.client.delete_key_pair(KeyPairId=res.id, aws_retry=True)


DELETERS: dict[str, Callable[[RegionContext, list[Resource]], None]] = {
    "spot_instance_requests": delete_spot_instance_requests,
    "ec2_fleets": delete_ec2_fleets,
    "instances": delete_instances,
    "elastic_ips": delete_elastic_ips,
    "launch_templates": delete_launch_templates,
    "network_interfaces": delete_network_interfaces,
    "volumes": delete_volumes,
    "security_groups": delete_security_groups,
    "subnets": delete_subnets,
    "route_tables": delete_route_tables,
    "internet_gateways": delete_internet_gateways,
    "vpcs": delete_vpcs,
    "key_pairs": delete_key_pairs,
}


# Types in the same phase do not depend on one another and go at once; phases go in order.
PHASES: tuple[tuple[str, ...], ...] = (
    ("spot_instance_requests", "ec2_fleets"),
    ("instances", "key_pairs"),
    ("elastic_ips", "launch_templates", "network_interfaces", "volumes"),
    ("security_groups", "subnets", "route_tables", "internet_gateways"),
    ("vpcs",),
)


def _delete_type(ctx: RegionContext, resource_type: str, items: list[Resource]) -> None:
    try:
        DELETERS[resource_type](ctx, items)
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
        # a describe of this phase failed: its resources stay, reported; go on
        for res in items:
            if res.action == ACTION_WOULD_DELETE:
                res.failed(error_text(exc))


def delete_region(client: Any, region: str, resources: list[Resource]) -> None:
    """Delete ``resources`` (all of one region) in dependency order, independent types at once."""
    ctx = RegionContext(client=client, region=region, resources=resources)
    unphased = tuple(t for t in RESOURCE_TYPES if not any(t in phase for phase in PHASES))
    for phase in PHASES + ((unphased,) if unphased else ()):
        work = []
        for resource_type in phase:
            items = [res for res in resources if res.type == resource_type]
            if items:
                work.append(lambda t=resource_type, i=items: _delete_type(ctx, t, i))
        together(*work)
