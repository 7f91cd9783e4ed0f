# -*- coding: utf-8 -*-
# Copyright: bacalhau.aws_spot contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Round D of a region's deletion: who still uses what is to go (by the ids the discovery found),
and what fails for it. Private.
"""

from __future__ import annotations

import functools
from typing import Any
from typing import Callable
try:
    import botocore.exceptions
except ImportError:
    pass  # AnsibleAWSModule reports a missing botocore for us
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._aws.common import error_text
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._aws.common import together
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._deletion.discover import describe_by_values
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._deletion.discover import describer
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._deletion.discover import goes_with_its_vpc
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._deletion.spec import KINDS
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._deletion.spec import ResourceKind
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._deletion.context import RegionContext
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._deletion.context import Survey
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._deletion.context import _eni_label
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._deletion.context import _instance_of
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._deletion.context import _instance_states
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._deletion.context import describe_network_interfaces
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._deletion.context import describe_security_groups
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._deletion.context import describe_volumes
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._deletion.context import _attached_elsewhere
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._deletion.context import for_each
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._deletion.detach import PREPARE


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
