# -*- coding: utf-8 -*-
# Copyright: bacalhau.aws_spot contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Find every resource of ours in one region. Private.

Each type is found with its own describe call and our tag filters, never from
``DescribeTags`` (which also lists tags of resources that are gone). Every record
is then checked against its own tags again (:meth:`NukeSpec.matches`), so a
filter that AWS (or an emulator) ignores can never make us pick up a foreign
resource. Describes of different types run at once: they are independent.
"""

from __future__ import annotations

import concurrent.futures
from typing import Any, Callable

try:
    import botocore.exceptions
except ImportError:
    pass  # AnsibleAWSModule reports a missing botocore for us

from ansible_collections.amazon.aws.plugins.module_utils.tagging import boto3_tag_list_to_ansible_dict
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._common import error_code, paginate
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._nuke_spec import NukeSpec, Resource

# States in which a resource still exists (terminated/cancelled/deleted records
# stay visible in describes for a while on AWS).
LIVE_INSTANCE_STATES = ["pending", "running", "shutting-down", "stopping", "stopped"]
LIVE_SPOT_REQUEST_STATES = ["open", "active", "disabled"]
LIVE_FLEET_STATES = ["submitted", "active", "modifying", "failed"]

# What EC2 answers for a filter it does not know.
INVALID_FILTER_CODES = frozenset({"InvalidParameterValue", "InvalidFilter", "InvalidParameter", "InvalidParameterCombination"})

# How many describes of one region run at once.
DESCRIBE_WORKERS = 13  # one per resource type: one round trip (each is a different API, throttled apart)
# EC2 accepts at most 200 values per filter.
FILTER_CHUNK = 200


# --------------------------------------------------------------------------- describe calls
def describe_instances(client: Any, filters: list[dict[str, Any]]) -> list[dict[str, Any]]:
    filters = filters + [{"Name": "instance-state-name", "Values": LIVE_INSTANCE_STATES}]
    reservations = paginate(client, "describe_instances", "Reservations", Filters=filters)
    instances = [instance for reservation in reservations for instance in reservation.get("Instances", [])]
    # the state is checked here too: a filter an implementation ignores must not matter
    return [i for i in instances if (i.get("State") or {}).get("Name") in LIVE_INSTANCE_STATES]


def describe_spot_instance_requests(client: Any, filters: list[dict[str, Any]]) -> list[dict[str, Any]]:
    filters = filters + [{"Name": "state", "Values": LIVE_SPOT_REQUEST_STATES}]
    requests = paginate(client, "describe_spot_instance_requests", "SpotInstanceRequests", Filters=filters)
    return [r for r in requests if r.get("State") in LIVE_SPOT_REQUEST_STATES]


def describe_fleets(client: Any, filters: list[dict[str, Any]]) -> list[dict[str, Any]]:
    state = [{"Name": "fleet-state", "Values": LIVE_FLEET_STATES}]
    try:
        fleets = paginate(client, "describe_fleets", "Fleets", Filters=filters + state)
    except botocore.exceptions.ClientError as exc:
        # DescribeFleets does not document tag filters: should EC2 refuse them, list
        # the live fleets and let discover_type's own tag check pick ours
        if error_code(exc) not in INVALID_FILTER_CODES:
            raise
        fleets = paginate(client, "describe_fleets", "Fleets", Filters=state)
    return [f for f in fleets if f.get("FleetState") in LIVE_FLEET_STATES]


def describe_launch_templates(client: Any, filters: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return paginate(client, "describe_launch_templates", "LaunchTemplates", Filters=filters)


def describe_key_pairs(client: Any, filters: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return client.describe_key_pairs(Filters=filters, aws_retry=True).get("KeyPairs", [])


def describe_network_interfaces(client: Any, filters: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return paginate(client, "describe_network_interfaces", "NetworkInterfaces", Filters=filters)


def describe_volumes(client: Any, filters: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return paginate(client, "describe_volumes", "Volumes", Filters=filters)


def describe_addresses(client: Any, filters: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return client.describe_addresses(Filters=filters, aws_retry=True).get("Addresses", [])


def describe_security_groups(client: Any, filters: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return paginate(client, "describe_security_groups", "SecurityGroups", Filters=filters)


def describe_subnets(client: Any, filters: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return paginate(client, "describe_subnets", "Subnets", Filters=filters)


def describe_route_tables(client: Any, filters: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return paginate(client, "describe_route_tables", "RouteTables", Filters=filters)


def describe_internet_gateways(client: Any, filters: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return paginate(client, "describe_internet_gateways", "InternetGateways", Filters=filters)


def describe_vpcs(client: Any, filters: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return paginate(client, "describe_vpcs", "Vpcs", Filters=filters)


def describe_by_values(
    describe: Callable[[Any, list[dict[str, Any]]], list[dict[str, Any]]],
    client: Any,
    name: str,
    values: list[str],
) -> list[dict[str, Any]]:
    """``describe`` with one filter ``name`` in ``values``, in chunks EC2 accepts."""
    found: list[dict[str, Any]] = []
    for start in range(0, len(values), FILTER_CHUNK):
        found.extend(describe(client, [{"Name": name, "Values": values[start:start + FILTER_CHUNK]}]))
    return found


# --------------------------------------------------------------------------- per type
# type -> (describe, id key, how to name it)
def item_tags(item: dict[str, Any]) -> dict[str, str]:
    """An item's tags as a dict (network interfaces call them ``TagSet``)."""
    return boto3_tag_list_to_ansible_dict(item.get("Tags") or item.get("TagSet") or [])


def _tag_name(item: dict[str, Any]) -> str | None:
    return item_tags(item).get("Name")


TYPE_TABLE: dict[str, tuple[Callable[[Any, list[dict[str, Any]]], list[dict[str, Any]]], str, Callable[[dict[str, Any]], str | None]]] = {
    "instances": (describe_instances, "InstanceId", _tag_name),
    "spot_instance_requests": (describe_spot_instance_requests, "SpotInstanceRequestId", _tag_name),
    "ec2_fleets": (describe_fleets, "FleetId", _tag_name),
    "launch_templates": (describe_launch_templates, "LaunchTemplateId", lambda i: i.get("LaunchTemplateName")),
    "key_pairs": (describe_key_pairs, "KeyPairId", lambda i: i.get("KeyName")),
    "network_interfaces": (describe_network_interfaces, "NetworkInterfaceId", _tag_name),
    "volumes": (describe_volumes, "VolumeId", _tag_name),
    "elastic_ips": (describe_addresses, "AllocationId", lambda i: _tag_name(i) or i.get("PublicIp")),
    "security_groups": (describe_security_groups, "GroupId", lambda i: i.get("GroupName")),
    "subnets": (describe_subnets, "SubnetId", _tag_name),
    "route_tables": (describe_route_tables, "RouteTableId", _tag_name),
    "internet_gateways": (describe_internet_gateways, "InternetGatewayId", _tag_name),
    "vpcs": (describe_vpcs, "VpcId", _tag_name),
}


def discover_type(client: Any, region: str, spec: NukeSpec, resource_type: str) -> list[Resource]:
    describe, id_key, namer = TYPE_TABLE[resource_type]
    found = []
    for item in describe(client, spec.filters):
        tags = item_tags(item)
        if not spec.matches(tags):
            continue  # the filter let something through: never ours to touch
        found.append(Resource(region=region, type=resource_type, id=item[id_key], name=namer(item), tags=tags, raw=item))
    return found


def goes_with_its_vpc(resource_type: str, item: dict[str, Any]) -> bool:
    """A default security group or a main route table cannot be deleted: it goes with its VPC."""
    if resource_type == "security_groups":
        return item.get("GroupName") == "default"
    if resource_type == "route_tables":
        return any(assoc.get("Main") for assoc in item.get("Associations") or [])
    return False


def discover_region(client: Any, region: str, spec: NukeSpec) -> list[Resource]:
    """Every resource of ours in ``region`` of the wanted types (describes run at once)."""
    found: list[Resource] = []
    with concurrent.futures.ThreadPoolExecutor(max_workers=DESCRIBE_WORKERS, thread_name_prefix=f"describe-{region}") as pool:
        futures = [pool.submit(discover_type, client, region, spec, t) for t in spec.resource_types]
        for future in futures:
            found.extend(future.result())  # a describe that fails fails the region
    vpc_ids = {res.id for res in found if res.type == "vpcs"}
    return [res for res in found if not (res.raw.get("VpcId") in vpc_ids and goes_with_its_vpc(res.type, res.raw))]
