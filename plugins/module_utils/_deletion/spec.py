# -*- coding: utf-8 -*-
# Copyright: bacalhau.aws_spot contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What ``tagged_resource_nuke`` is asked to do, and what it found. Private.

* :class:`NukeSpec`: the validated request (regions, cluster, extra tags, types,
  force). Built by :func:`build_spec`, which refuses anything unsafe *before* a
  single AWS call is made.
* :class:`Resource`: one resource found in one region, and what happened to it.
* :func:`summarise`: the ``counts`` of the module's result.
* :data:`KINDS`: one :class:`ResourceKind` record per type of resource, which discovery
  and deletion read (the module's ``resource_types`` choices are their names).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from ansible_collections.bacalhau.aws_spot.plugins.module_utils._aws.common import (
    CLUSTER_KEY,
    MANAGED_BY_KEY,
    MANAGED_BY_VALUE,
    AwsSpotError,
    is_managed,
    managed_filters,
)
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._deletion.events import list_event_rules, list_sqs_queues
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._events.path import QUEUE_NOT_FOUND, RULE_NOT_FOUND


# --------------------------------------------------------------------------- the types
def _is_default_group(item: dict[str, Any]) -> bool:
    return item.get("GroupName") == "default"


def _is_main_route_table(item: dict[str, Any]) -> bool:
    return any(assoc.get("Main") for assoc in item.get("Associations") or [])


@dataclass(frozen=True)
class ResourceKind:
    """One type of resource the nuke deletes: everything its discovery and deletion read.

    :mod:`._nuke_discover` finds it from ``describe`` .. ``named_by``; :mod:`._nuke_delete`
    deletes it in ``round`` with ``delete`` (one call per resource, ``delete_param`` = its
    id), unless it has a deleter of its own there (``_nuke_delete.DELETERS``: the calls it
    makes are still named here, for the IAM policy and its guard test).
    """

    name: str  # the module's resource_types value, and each result's type
    label: str  # how messages name one
    describe: str  # the describe call (boto3 name); always with our tag filters
    result_key: str  # where its answer lists them
    id_key: str  # the id in each item
    round: str  # B (needs nothing gone first), E (after the checks), F (after E): see _nuke_delete
    delete: str  # the call that deletes one (boto3 name)
    delete_param: str  # that call's id parameter
    not_found: frozenset[str]  # errors meaning "already gone", for its delete and its preparatory steps
    in_use: frozenset[str] = frozenset()  # errors meaning "still in use": retried a while ("in_use" policy)
    named_by: tuple[str, ...] = ("tag:Name",)  # where its name is: the first of these set
    within: str | None = None  # the items sit in a list of each result (instances in reservations)
    paginated: bool = True  # describe through botocore's paginator
    live: tuple[str, str, tuple[str, ...]] | None = None  # (filter, field, states) when gone ones stay listed
    tag_filters_optional: bool = False  # EC2 may refuse tag filters here: list and check the tags ourselves
    in_vpc: str | None = None  # the filter that lists those in a VPC: they then hold a VPC of ours
    goes_with_vpc: Callable[[dict[str, Any]], bool] | None = None  # not deletable alone: goes with its VPC
    relaunches: Callable[[dict[str, Any]], bool] | None = None  # would launch again what is terminated
    waiter: str | None = None  # the botocore waiter its deletion waits with
    by_name: str | None = None  # delete by this field (also a parameter of ``delete``) when the item has it
    service: str = "ec2"  # the AWS service (botocore's name, and the IAM policy's prefix) of its calls
    # lists it instead of ``describe`` with our tag filters, for services that cannot filter by
    # tags: ``(ec2_client, filters) -> items``, each with its ``Tags`` (``_deletion/events.py``)
    lister: Callable[[Any, list[dict[str, Any]]], list[dict[str, Any]]] | None = None

    def delete_params(self, res: "Resource") -> dict[str, Any]:
        """The parameters of ``delete`` for ``res``."""
        if self.by_name and res.raw.get(self.by_name):
            return {self.by_name: res.raw[self.by_name]}
        return {self.delete_param: res.id}


_LIVE_INSTANCE_STATES = ("pending", "running", "shutting-down", "stopping", "stopped")
_LIVE_SPOT_REQUEST_STATES = ("open", "active", "disabled")
_LIVE_FLEET_STATES = ("submitted", "active", "modifying", "failed")
_DEPENDENCY = frozenset({"DependencyViolation"})

# Every type, in the order results are listed: roughly the order of deletion. Adding a
# type is one record here (CONTRIBUTING.md says what else: the IAM policy, the tests).
KINDS: tuple[ResourceKind, ...] = (
    ResourceKind(
        "spot_instance_requests", "spot request", "describe_spot_instance_requests", "SpotInstanceRequests",
        "SpotInstanceRequestId", "B", "cancel_spot_instance_requests", "SpotInstanceRequestIds",
        frozenset({"InvalidSpotInstanceRequestID.NotFound"}),
        live=("state", "State", _LIVE_SPOT_REQUEST_STATES),
        relaunches=lambda item: item.get("Type") == "persistent",
    ),
    ResourceKind(
        "ec2_fleets", "EC2 fleet", "describe_fleets", "Fleets", "FleetId", "B", "delete_fleets", "FleetIds",
        # DeleteFleets answers per fleet, with a code of its own
        frozenset({"InvalidFleetId.NotFound", "fleetIdDoesNotExist"}),
        live=("fleet-state", "FleetState", _LIVE_FLEET_STATES),
        # DescribeFleets does not document tag filters
        tag_filters_optional=True,
        relaunches=lambda item: item.get("Type") == "maintain",
    ),
    ResourceKind(
        "instances", "instance", "describe_instances", "Reservations", "InstanceId", "B", "terminate_instances",
        "InstanceIds", frozenset({"InvalidInstanceID.NotFound"}),
        within="Instances", live=("instance-state-name", "State.Name", _LIVE_INSTANCE_STATES),
        waiter="instance_terminated",
    ),
    ResourceKind(
        "elastic_ips", "elastic IP", "describe_addresses", "Addresses", "AllocationId", "B", "release_address",
        "AllocationId", frozenset({"InvalidAllocationID.NotFound", "InvalidAssociationID.NotFound"}),
        in_use=frozenset({"InvalidIPAddress.InUse"}), named_by=("tag:Name", "PublicIp"), paginated=False,
    ),
    ResourceKind(
        "launch_templates", "launch template", "describe_launch_templates", "LaunchTemplates", "LaunchTemplateId",
        "B", "delete_launch_template", "LaunchTemplateId",
        frozenset({"InvalidLaunchTemplateId.NotFound", "InvalidLaunchTemplateName.NotFoundException"}),
        named_by=("LaunchTemplateName",),
    ),
    ResourceKind(
        "network_interfaces", "network interface", "describe_network_interfaces", "NetworkInterfaces",
        "NetworkInterfaceId", "E", "delete_network_interface", "NetworkInterfaceId",
        frozenset({"InvalidNetworkInterfaceID.NotFound", "InvalidAttachmentID.NotFound"}),
        in_use=_DEPENDENCY, waiter="network_interface_available",
    ),
    ResourceKind(
        "volumes", "volume", "describe_volumes", "Volumes", "VolumeId", "E", "delete_volume", "VolumeId",
        frozenset({"InvalidVolume.NotFound"}), in_use=frozenset({"IncorrectState"}), waiter="volume_available",
    ),
    ResourceKind(
        "security_groups", "security group", "describe_security_groups", "SecurityGroups", "GroupId", "E",
        "delete_security_group", "GroupId", frozenset({"InvalidGroup.NotFound", "InvalidPermission.NotFound"}),
        in_use=_DEPENDENCY, named_by=("GroupName",), in_vpc="vpc-id", goes_with_vpc=_is_default_group,
    ),
    ResourceKind(
        "subnets", "subnet", "describe_subnets", "Subnets", "SubnetId", "E", "delete_subnet", "SubnetId",
        frozenset({"InvalidSubnetID.NotFound"}), in_use=_DEPENDENCY, in_vpc="vpc-id",
    ),
    ResourceKind(
        "route_tables", "route table", "describe_route_tables", "RouteTables", "RouteTableId", "E",
        "delete_route_table", "RouteTableId",
        frozenset({"InvalidRouteTableID.NotFound", "InvalidAssociationID.NotFound"}),
        in_use=_DEPENDENCY, in_vpc="vpc-id", goes_with_vpc=_is_main_route_table,
    ),
    ResourceKind(
        "internet_gateways", "internet gateway", "describe_internet_gateways", "InternetGateways",
        "InternetGatewayId", "F", "delete_internet_gateway", "InternetGatewayId",
        frozenset({"InvalidInternetGatewayID.NotFound", "Gateway.NotAttached"}),
        in_use=_DEPENDENCY, in_vpc="attachment.vpc-id",
    ),
    ResourceKind(
        "vpcs", "VPC", "describe_vpcs", "Vpcs", "VpcId", "F", "delete_vpc", "VpcId",
        frozenset({"InvalidVpcID.NotFound"}), in_use=_DEPENDENCY,
    ),
    ResourceKind(
        "key_pairs", "key pair", "describe_key_pairs", "KeyPairs", "KeyPairId", "B", "delete_key_pair",
        "KeyPairId", frozenset({"InvalidKeyPair.NotFound"}), named_by=("KeyName",), paginated=False,
        # DeleteKeyPair answers success for any id, and some implementations (the emulator)
        # ignore KeyPairId; names are unique per region
        by_name="KeyName",
    ),
    # a cluster's event path (_events/path.py): listed by name, then picked by their tags
    ResourceKind(
        "event_rules", "EventBridge rule", "list_rules", "Rules", "Name", "E", "delete_rule", "Name",
        RULE_NOT_FOUND, named_by=("Name",), service="events", lister=list_event_rules,
    ),
    ResourceKind(
        "sqs_queues", "SQS queue", "list_queues", "QueueUrls", "QueueUrl", "B", "delete_queue", "QueueUrl",
        QUEUE_NOT_FOUND, named_by=("QueueName",), service="sqs", lister=list_sqs_queues,
    ),
)
KIND: dict[str, ResourceKind] = {kind.name: kind for kind in KINDS}
RESOURCE_TYPES: tuple[str, ...] = tuple(KIND)
# How each type is named in messages.
LABELS: dict[str, str] = {kind.name: kind.label for kind in KINDS}
# "Not found means already gone": a delete (or detach, revoke, disassociate) whose target
# is not there any more has nothing left to do. (Any type's code counts for any call.)
NOT_FOUND_CODES: frozenset[str] = frozenset().union(*(kind.not_found for kind in KINDS))
# "Still in use, retry": something going away (terminated instances, their interfaces and
# addresses) still holds the resource for a while after AWS said it went.
IN_USE_CODES: frozenset[str] = frozenset().union(*(kind.in_use for kind in KINDS))

ACTION_DELETED = "deleted"
ACTION_WOULD_DELETE = "would_delete"
ACTION_FAILED = "failed"

_REGION_RE = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d+$")


@dataclass
class NukeSpec:
    """A validated request. ``regions`` is ``None`` for "every enabled region"."""

    regions: list[str] | None
    cluster_name: str | None
    tags: dict[str, str]
    resource_types: list[str]
    force: bool

    @property
    def filters(self) -> list[dict[str, Any]]:
        """Describe filters: always our managed-by tag, plus cluster and extra tags."""
        filters = managed_filters(self.cluster_name, extra_tags=self.tags)
        # Belt and braces: a filter list without our tag must never reach a describe.
        if {"Name": f"tag:{MANAGED_BY_KEY}", "Values": [MANAGED_BY_VALUE]} not in filters:
            raise AwsSpotError("refusing to search without the bacalhau:managed-by filter")
        return filters

    def matches(self, tags: dict[str, str]) -> bool:
        """Second line of defence: the resource's own tags, checked here, not by AWS."""
        if not is_managed(tags, self.cluster_name):
            return False
        return all(tags.get(key) == value for key, value in self.tags.items())

    def wants(self, resource_type: str) -> bool:
        return resource_type in self.resource_types


def build_spec(params: dict[str, Any]) -> NukeSpec:
    """Validate the module's parameters; raise :class:`AwsSpotError` on the first problem."""
    regions = params.get("regions")
    if regions is not None:
        regions = [str(r).strip() for r in regions]
        if not regions:
            raise AwsSpotError("regions is an empty list; omit it to search every region enabled for the account")
        bad = [r for r in regions if not _REGION_RE.match(r)]
        if bad:
            raise AwsSpotError(f"not a region name: {', '.join(repr(b) for b in bad)} (expected e.g. us-east-1)")
        regions = list(dict.fromkeys(regions))

    cluster_name = params.get("cluster_name")
    if cluster_name is not None:
        cluster_name = str(cluster_name)
        if not cluster_name.strip():
            raise AwsSpotError(
                "cluster_name is empty; omit it to delete the resources of every cluster, or name one cluster"
            )

    tags: dict[str, str] = {}
    for key, value in (params.get("tags") or {}).items():
        key = str(key)
        if not key.strip():
            raise AwsSpotError("tags has an empty key")
        if value is None:
            raise AwsSpotError(f"tags: {key!r} has no value; give the value the resources carry")
        tags[key] = str(value)
    if MANAGED_BY_KEY in tags and tags[MANAGED_BY_KEY] != MANAGED_BY_VALUE:
        raise AwsSpotError(
            f"tags may not override {MANAGED_BY_KEY}: this module only ever deletes resources tagged "
            f"{MANAGED_BY_KEY}={MANAGED_BY_VALUE}"
        )
    tags.pop(MANAGED_BY_KEY, None)
    if CLUSTER_KEY in tags:
        if cluster_name is not None and tags[CLUSTER_KEY] != cluster_name:
            raise AwsSpotError(
                f"tags[{CLUSTER_KEY!r}]={tags[CLUSTER_KEY]!r} contradicts cluster_name={cluster_name!r}; use cluster_name"
            )
        cluster_name = tags.pop(CLUSTER_KEY)
        if not cluster_name.strip():
            raise AwsSpotError(f"tags[{CLUSTER_KEY!r}] is empty; use cluster_name to name one cluster")

    resource_types = params.get("resource_types")
    if resource_types is None:
        resource_types = list(RESOURCE_TYPES)
    else:
        if not resource_types:
            raise AwsSpotError("resource_types is an empty list; omit it for every type")
        unknown = [t for t in resource_types if t not in RESOURCE_TYPES]
        if unknown:
            raise AwsSpotError(f"unknown resource_types {unknown}; known: {', '.join(RESOURCE_TYPES)}")
        resource_types = [t for t in RESOURCE_TYPES if t in resource_types]

    return NukeSpec(
        regions=regions,
        cluster_name=cluster_name,
        tags=tags,
        resource_types=resource_types,
        force=bool(params.get("force")),
    )


@dataclass
class Resource:
    """One resource of ours in one region, and what happened to it."""

    region: str
    type: str
    id: str
    name: str | None
    tags: dict[str, str]
    raw: dict[str, Any] = field(default_factory=dict, repr=False)
    action: str = ACTION_WOULD_DELETE
    error: str | None = None
    note: str | None = None

    def deleted(self, note: str | None = None) -> None:
        self.action = ACTION_DELETED
        self.error = None
        if note:
            self.note = note

    def failed(self, error: str) -> None:
        self.action = ACTION_FAILED
        self.error = error

    def as_result(self) -> dict[str, Any]:
        result = {
            "region": self.region,
            "type": self.type,
            "id": self.id,
            "name": self.name,
            "tags": dict(self.tags),
            "action": self.action,
            "error": self.error,
        }
        if self.note:
            result["note"] = self.note
        return result


def _tally(bucket: dict[str, int], action: str) -> None:
    bucket[action] = bucket.get(action, 0) + 1
    bucket["total"] = bucket.get("total", 0) + 1


def summarise(resources: Iterable[Resource]) -> dict[str, Any]:
    """``counts``: totals per action, and the same per type and per region."""
    counts: dict[str, Any] = {
        ACTION_DELETED: 0,
        ACTION_WOULD_DELETE: 0,
        ACTION_FAILED: 0,
        "total": 0,
        "by_type": {},
        "by_region": {},
    }
    for res in resources:
        counts[res.action] += 1
        counts["total"] += 1
        _tally(counts["by_type"].setdefault(res.type, {}), res.action)
        _tally(counts["by_region"].setdefault(res.region, {}), res.action)
    return counts


def sort_key(res: Resource) -> tuple[str, int, str]:
    return (res.region, RESOURCE_TYPES.index(res.type), res.id)
