# -*- coding: utf-8 -*-
# Copyright: bacalhau.aws_spot contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Delete what :mod:`._nuke_discover` found in one region, in as few round trips as it allows. Private.

:func:`delete_region` goes in rounds: the calls of a round go out at once, and a round
starts when the one before has answered (round A is the discovery). Each type's
record (``_nuke_spec.KINDS``) gives its round, its delete call, and its "already gone"
and "still in use" codes; the types whose deletes need more than that one call have a
deleter of their own here (:data:`DELETERS`).

* B. What needs nothing else gone first: cancel spot requests, delete fleets (after
  ``DescribeFleetInstances`` when a fleet's instances are not in its record),
  ``TerminateInstances``, delete key pairs and launch templates, release elastic IPs
  (disassociated first when associated). Persistent spot requests and ``maintain``
  fleets, which would launch again what is terminated, go in a round of their own
  before it (only when there are some: the one-time requests of ``spot_cluster``'s
  launches do not).
* C and D, at once. C: one waiter for every instance terminating, ours and the
  fleets'. D: every "who still uses it" describe, by the ids the discovery found
  (:func:`survey`), with the steps that need no check: revoke our groups' rules that
  reference groups, disassociate our route tables. None of D waits for C: what it
  finds attached to an instance that C then sees terminated is judged as the
  termination left it (an interface or volume deleted on termination went with it).
* E. The deletes: our ENIs and volumes, security groups, subnets, route tables;
  our internet gateways are detached (after C: EC2 refuses to detach a gateway from
  a VPC with public addresses still mapped).
* F. VPCs and internet gateways: a VPC's users are what round D found that is not
  ours, and what of ours round E could not delete.

Rare paths cost more: an ENI or volume kept after its instance terminated is
detached and waited for within round E, and an ENI attached to an instance we did
not terminate costs one ``DescribeInstances`` (is it terminated?) within round D.

Rules every step keeps:

* NotFound means already gone (idempotent deletes).
* A resource that cannot be deleted gets ``action: failed`` and the AWS error, and
  the rest carries on; a step that blows up fails its own resources only.
* Each call has one retry policy (``_common.RETRY_POLICIES``): deletes and detaches
  the ``in_use`` one, which also waits out ``DependencyViolation`` and the like (the
  records' ``in_use`` codes) for a while (AWS is eventually consistent after
  terminations, and our own ENIs go in the same round as the subnets and groups they
  are in), then reports it; every
  other call the ``default`` one (throttling, transient errors).
* A security group, subnet or VPC that something else still uses (network
  interfaces, foreign security groups referencing ours, subnets, ...) is reported
  with those users by id instead of tried. Real EC2 would refuse those deletes
  too; the emulator lets some of them through, and an explicit list is more useful
  than a bare ``DependencyViolation`` either way.
* Nothing that is not ours is ever modified: an ENI or volume attached to a
  foreign instance, or a security group referenced by a foreign one, is reported.
"""

from __future__ import annotations

import concurrent.futures
import functools
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, List

try:
    import botocore.exceptions
except ImportError:
    pass  # AnsibleAWSModule reports a missing botocore for us

from ansible_collections.bacalhau.aws_spot.plugins.module_utils._aws.common import (
    MANAGED_BY_KEY,
    MANAGED_BY_VALUE,
    THROTTLING_CODES,
    error_code,
    error_text,
    paginate,
    retried,
    together,
    waiter,
)
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._deletion import events as _events
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._deletion.discover import (
    describe_by_values,
    describer,
    goes_with_its_vpc,
)
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._deletion.spec import (
    ACTION_FAILED,
    ACTION_WOULD_DELETE,
    IN_USE_CODES,
    KIND,
    KINDS,
    NOT_FOUND_CODES,
    Resource,
    ResourceKind,
)

describe_network_interfaces = describer("network_interfaces")
describe_security_groups = describer("security_groups")
describe_volumes = describer("volumes")

# Waiting for instances to terminate and for detached ENIs/volumes.
WAIT_DELAY = 2  # a termination takes 30-90 s on AWS: found done 1 s late on average
WAIT_MAX_ATTEMPTS = 300  # 10 minutes
# Deletes of one type in one region run at once, this many.
DELETE_WORKERS = 8
TERMINATE_BATCH = 1000
ALREADY_GONE = "already gone"
WENT_WITH_ITS_INSTANCE = "went with its instance"
TERMINATING = "terminating (not waited for)"
NOT_OURS = f"not tagged {MANAGED_BY_KEY}={MANAGED_BY_VALUE}"


@dataclass
class Survey:
    """Round D's answers: what each kind of look-up found, and the error of each that failed."""

    found: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)

    def enis(self) -> dict[str, dict[str, Any]]:
        """Every ENI found (in our VPCs, of our groups and subnets, ours), by id."""
        return {eni["NetworkInterfaceId"]: eni for eni in self.found.get("enis", [])}

    def volumes(self) -> dict[str, dict[str, Any]]:
        return {vol["VolumeId"]: vol for vol in self.found.get("volumes", [])}


@dataclass
class RegionContext:
    """One region's client and what has happened there so far."""

    client: Any
    region: str
    resources: list[Resource]
    terminated: set[str] = field(default_factory=set)  # instances known to be terminated
    terminating: list[str] = field(default_factory=list)  # ours, TerminateInstances accepted (round B)
    fleet_instances: list[str] = field(default_factory=list)  # of the fleets deleted in round B
    survey: Survey = field(default_factory=Survey)  # round D
    users: dict[str, list[str]] = field(default_factory=dict)  # resource id -> what still uses it

    def of_type(self, resource_type: str) -> list[Resource]:
        return [res for res in self.resources if res.type == resource_type]

    def pending(self, resource_type: str) -> list[Resource]:
        """Ours of this type not deleted and not failed yet."""
        return [res for res in self.of_type(resource_type) if res.action == ACTION_WOULD_DELETE]

    def ids(self, resource_type: str) -> set[str]:
        return {res.id for res in self.of_type(resource_type)}

    def going(self, resource_type: str) -> set[str]:
        """Ours of this type that are gone or still to be deleted: all but the failed."""
        return {res.id for res in self.of_type(resource_type) if res.action != ACTION_FAILED}


# A type's deletes in one round: the region, and its resources still to be deleted.
# (typing.List: an alias is evaluated at import, on whatever Python the module runs.)
Deleter = Callable[[RegionContext, List[Resource]], None]


# --------------------------------------------------------------------------- helpers
def _is_gone(exc: BaseException) -> bool:
    return error_code(exc) in NOT_FOUND_CODES


def attempt(res: Resource, call: Callable[[], Any], dependency: bool = False) -> bool:
    """Delete ``res`` with ``call`` (a call without ``aws_retry``: this is its one retry layer,
    the ``in_use`` policy with ``dependency``, else the default one); record the outcome.
    True when it is gone."""
    try:
        if dependency:
            retried(call, "in_use", res.region, also=IN_USE_CODES)()
        else:
            retried(call, "default", res.region)()
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


def ignore_gone(call: Callable[[], Any], dependency: bool = False) -> None:
    """A preparatory step (detach, disassociate, revoke; a call without ``aws_retry``, retried
    here, under the ``in_use`` policy with ``dependency``) for which NotFound is fine."""
    try:
        if dependency:
            retried(call, "in_use", also=IN_USE_CODES)()
        else:
            retried(call)()
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


def guard(items: list[Resource], work: Callable[[], None]) -> None:
    """Run ``work`` for ``items``; if it blows up, those of them not done yet fail with its error."""
    try:
        work()
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
        for res in items:
            if res.action == ACTION_WOULD_DELETE:
                res.failed(error_text(exc))


def run_round(ctx: RegionContext, deleters: dict[str, Deleter], only: Callable[[Resource], bool] | None = None) -> None:
    """One round: every type's deleter at once, each on its resources still to be deleted (``only`` those)."""
    work = []
    for resource_type, deleter in deleters.items():
        items = [res for res in ctx.pending(resource_type) if only is None or only(res)]
        if items:
            work.append(functools.partial(guard, items, functools.partial(deleter, ctx, items)))
    together(*work)


def blocked(res: Resource, users: list[str]) -> None:
    shown = ", ".join(users[:10]) + (f" and {len(users) - 10} more" if len(users) > 10 else "")
    res.failed(
        f"DependencyViolation: {res.id} is still used by {shown}; "
        "remove or detach those (they are not ours, or could not be deleted) and run again"
    )


def _batches(ids: list[str]) -> list[list[str]]:
    return [ids[start:start + TERMINATE_BATCH] for start in range(0, len(ids), TERMINATE_BATCH)]


def _instance_of(eni: dict[str, Any]) -> str | None:
    return (eni.get("Attachment") or {}).get("InstanceId")


def _eni_label(eni: dict[str, Any]) -> str:
    instance = _instance_of(eni)
    return f"{eni['NetworkInterfaceId']} (instance {instance})" if instance else eni["NetworkInterfaceId"]


def _all_instances(client: Any, filters: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Instances in any state (the discovery describe leaves terminated ones out)."""
    reservations = paginate(client, "describe_instances", "Reservations", Filters=filters)
    return [instance for reservation in reservations for instance in reservation.get("Instances", [])]


def _instance_states(ctx: RegionContext, ids: list[str]) -> dict[str, str]:
    """Instance id -> state; the terminated ones also go into ``ctx.terminated``."""
    instances = describe_by_values(_all_instances, ctx.client, "instance-id", ids)
    states = {inst["InstanceId"]: inst["State"]["Name"] for inst in instances}
    ctx.terminated.update(instance_id for instance_id, state in states.items() if state == "terminated")
    return states


def _wait(ctx: RegionContext, waiter_name: str, **params: Any) -> None:
    waiter(ctx.client, waiter_name).wait(WaiterConfig={"Delay": WAIT_DELAY, "MaxAttempts": WAIT_MAX_ATTEMPTS}, **params)


def _waited(ctx: RegionContext, waiter_name: str, **params: Any) -> str | None:
    """``_wait``, returning why it gave up (None when it did not)."""
    try:
        _wait(ctx, waiter_name, **params)
    except botocore.exceptions.WaiterError as exc:
        return str(exc)
    return None


# --------------------------------------------------------------------------- round B
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


# --------------------------------------------------------------------------- round C
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


# --------------------------------------------------------------------------- round D
# ENIs are looked up by VPC (which covers the subnets, groups and ENIs of ours in our
# VPCs) and by these filters for ours that sit in a VPC that is not ours.
ENI_FILTERS = (
    ("security_groups", "group-id"),
    ("subnets", "subnet-id"),
    ("network_interfaces", "network-interface-id"),
)
# What is in our VPCs (a VPC's users): the types whose record says how to list those in a VPC.
IN_VPCS: tuple[ResourceKind, ...] = tuple(kind for kind in KINDS if kind.in_vpc)
# The look-ups each type's deletes rely on: when one of them failed, those are not tried.
NEEDS = {
    "network_interfaces": ("enis",),
    "volumes": ("volumes",),
    "security_groups": ("enis", "referencing"),
    "subnets": ("enis",),
    "vpcs": ("enis",) + tuple(kind.name for kind in IN_VPCS),
}


def _outside(ctx: RegionContext, resource_type: str, vpcs: set[str]) -> list[str]:
    return sorted(res.id for res in ctx.of_type(resource_type) if res.raw.get("VpcId") not in vpcs)


def _lookups(ctx: RegionContext) -> list[tuple[str, Callable[[], list[dict[str, Any]]]]]:
    """Round D's describes, as (kind, call): only those with ids to ask about."""
    vpcs = ctx.ids("vpcs")
    groups = sorted(ctx.ids("security_groups"))
    wanted: list[tuple[str, Any, str, list[str]]] = [("enis", describe_network_interfaces, "vpc-id", sorted(vpcs))]
    wanted += [("enis", describe_network_interfaces, name, _outside(ctx, resource_type, vpcs))
               for resource_type, name in ENI_FILTERS]
    wanted += [("referencing", describe_security_groups, name, groups)
               for name in ("ip-permission.group-id", "egress.ip-permission.group-id")]
    wanted += [(kind.name, describer(kind.name), kind.in_vpc, sorted(vpcs)) for kind in IN_VPCS]
    wanted.append(("volumes", describe_volumes, "volume-id", sorted(ctx.ids("volumes"))))
    return [(kind, functools.partial(describe_by_values, describe, ctx.client, name, values))
            for kind, describe, name, values in wanted if values]


def _caught(call: Callable[[], Any]) -> Callable[[], Any]:
    """``call``, answering its botocore error instead of raising it."""
    def run() -> Any:
        try:
            return call()
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            return exc

    return run


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


# Round D's steps that need no check: type -> step on each of ours.
PREPARE: dict[str, Callable[[RegionContext, Resource], None]] = {
    "security_groups": revoke_group_references,
    "route_tables": disassociate_route_table,
    "event_rules": _events.remove_rule_targets,
}


def survey(ctx: RegionContext) -> Survey:
    """Round D: every look-up and every preparatory step at once.

    Then, only when an ENI found is attached to an instance we did not terminate, one
    ``DescribeInstances``: an ENI of a terminated instance goes with it and uses nothing.
    """
    lookups = _lookups(ctx)
    steps = [functools.partial(for_each, ctx.pending(resource_type), functools.partial(step, ctx))
             for resource_type, step in PREPARE.items() if ctx.pending(resource_type)]
    answers = together(*[_caught(call) for _kind, call in lookups], *steps)
    result = Survey()
    for (kind, _call), answer in zip(lookups, answers):
        if isinstance(answer, Exception):
            result.errors.setdefault(kind, error_text(answer))
        else:
            result.found.setdefault(kind, []).extend(answer)
    waited_for = set(ctx.terminating) | set(ctx.fleet_instances)  # round C tells what became of them
    unknown = sorted({i for i in map(_instance_of, result.found.get("enis", []))
                      if i and i not in ctx.terminated and i not in waited_for})
    if unknown:
        try:
            _instance_states(ctx, unknown)
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            result.errors.setdefault("enis", error_text(exc))
    return result


def fail_unchecked(ctx: RegionContext) -> None:
    """Ours whose checks could not be made (a look-up of round D failed) are not tried."""
    for resource_type, kinds in NEEDS.items():
        errors = [ctx.survey.errors[kind] for kind in kinds if kind in ctx.survey.errors]
        if errors:
            for res in ctx.pending(resource_type):
                res.failed(errors[0])


# --------------------------------------------------------------------------- who still uses what
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


def fail_held_network_interfaces(ctx: RegionContext) -> None:
    """Our ENIs in use by anything but an instance we terminated are reported, not touched."""
    current = ctx.survey.enis()
    for res in ctx.pending("network_interfaces"):
        eni = current.get(res.id)
        if eni and eni.get("Status") != "available" and _instance_of(eni) not in ctx.terminated:
            _attached_elsewhere(ctx, res, _instance_of(eni), "detach it from that instance and run again")


def _eni_users(ctx: RegionContext) -> list[dict[str, Any]]:
    """ENIs that hold what they are in: neither of a terminated instance nor ours going."""
    going = ctx.going("network_interfaces")
    return [eni for eni in ctx.survey.enis().values()
            if _instance_of(eni) not in ctx.terminated and eni["NetworkInterfaceId"] not in going]


def _add_eni_users(users: dict[str, list[str]], holds: Callable[[dict[str, Any]], list[str]], enis: list[dict[str, Any]]) -> None:
    for eni in enis:
        for held in holds(eni):
            if held in users:
                users[held].append(f"network interface {_eni_label(eni)}")


def group_users(ctx: RegionContext) -> dict[str, list[str]]:
    """Our groups' users: groups not ours referencing them, and ENIs."""
    users: dict[str, list[str]] = {res.id: [] for res in ctx.pending("security_groups")}
    ours = ctx.ids("security_groups")
    referencing = {group["GroupId"]: group for group in ctx.survey.found.get("referencing", [])}
    for group in referencing.values():
        if group["GroupId"] in ours:
            continue
        label = f"security group {group['GroupId']} ({group.get('GroupName')}) referencing it"
        for rule in (group.get("IpPermissions") or []) + (group.get("IpPermissionsEgress") or []):
            for pair in rule.get("UserIdGroupPairs") or []:
                target = pair.get("GroupId")
                if target in users and label not in users[target]:
                    users[target].append(label)
    _add_eni_users(users, lambda eni: [group.get("GroupId") for group in eni.get("Groups") or []], _eni_users(ctx))
    return users


def subnet_users(ctx: RegionContext) -> dict[str, list[str]]:
    users: dict[str, list[str]] = {res.id: [] for res in ctx.pending("subnets")}
    _add_eni_users(users, lambda eni: [eni.get("SubnetId")], _eni_users(ctx))
    return users


def vpc_users(ctx: RegionContext) -> dict[str, list[str]]:
    """Our VPCs' users after round E: what round D found in them, less what of ours is gone."""
    users: dict[str, list[str]] = {res.id: [] for res in ctx.pending("vpcs")}
    for kind in IN_VPCS:
        going = ctx.going(kind.name)
        for item in ctx.survey.found.get(kind.name, []):
            if item[kind.id_key] in going or goes_with_its_vpc(kind.name, item):
                continue
            vpcs = [item["VpcId"]] if item.get("VpcId") else [a.get("VpcId") for a in item.get("Attachments") or []]
            for vpc_id in vpcs:
                if vpc_id in users:
                    users[vpc_id].append(f"{kind.label} {item[kind.id_key]}")
    _add_eni_users(users, lambda eni: [eni.get("VpcId")], _eni_users(ctx))
    return users


# --------------------------------------------------------------------------- rounds E and F
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


# The types whose deletes need more than their record's one call.
DELETERS: dict[str, Deleter] = {
    "spot_instance_requests": delete_spot_instance_requests,
    "ec2_fleets": delete_ec2_fleets,
    "instances": terminate_instances,
    "elastic_ips": delete_elastic_ips,
    "network_interfaces": delete_network_interfaces,
    "volumes": delete_volumes,
    "event_rules": _events.delete_event_rules,
    "sqs_queues": _events.delete_sqs_queues,
}


def _round(name: str) -> dict[str, Deleter]:
    """The deleters of the types whose record puts them in round ``name``."""
    return {kind.name: DELETERS.get(kind.name) or _unless_used(kind) for kind in KINDS if kind.round == name}


# Round B: what needs nothing else gone first.
ROUND_B = _round("B")
# Round E: what round D checked (and prepared).
ROUND_E = _round("E")
# Round E's steps before a delete in round F.
DETACH_E: dict[str, Deleter] = {"internet_gateways": detach_internet_gateways}
# Round F.
ROUND_F = _round("F")


def delete_region(client: Any, region: str, resources: list[Resource], wait: bool = True) -> RegionContext:
    """Delete ``resources`` (all of one region) in the rounds of this module's docstring.

    Without ``wait``, only round B: instances are asked to terminate and reported so
    (for ``resources`` that hold nothing else to delete afterwards).
    """
    ctx = RegionContext(client=client, region=region, resources=resources)
    run_round(ctx, ROUND_B, only=replaces_instances)  # before anything is terminated (only when there are some)
    run_round(ctx, ROUND_B)
    if not wait:
        for res in ctx.pending("instances"):
            if res.id in ctx.terminating:
                res.deleted(TERMINATING)
        return ctx
    _waited_for, ctx.survey = together(  # rounds C and D
        functools.partial(guard, ctx.pending("instances"), functools.partial(wait_terminated, ctx)),
        functools.partial(survey, ctx),
    )
    fail_unchecked(ctx)
    fail_held_network_interfaces(ctx)
    ctx.users = {**group_users(ctx), **subnet_users(ctx)}
    run_round(ctx, {**ROUND_E, **DETACH_E})
    ctx.users = vpc_users(ctx)
    run_round(ctx, ROUND_F)
    return ctx
