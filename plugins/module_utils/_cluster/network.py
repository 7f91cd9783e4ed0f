# -*- coding: utf-8 -*-
# Copyright: bacalhau.aws_spot contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The network ``spot_cluster`` owns in each region. Private: not a public API.

Per region and cluster: one VPC, a public subnet in every availability zone, an
internet gateway with the default route in the VPC's main route table, one security
group and the SSH key pair(s). Every piece is found by our tags first (so it is
never duplicated) and created with ``TagSpecifications`` (so it is never untagged).
``state: absent`` deletes it through the nuke's engine (``_nuke_delete``).

The main route table is made by ``CreateVpc`` and goes with ``DeleteVpc``: it cannot
leak, and using it saves a route table and one association per zone. It is tagged
after the fact (``CreateTags``) only so that the next run finds it by tag with the rest.

Security group: SSH (22) only from ``ssh_cidrs``, Bacalhau's API port only from
``api_cidrs``, NATS (4222) only from ``nats_cidrs``, and every protocol from the
group itself (the cluster's own nodes in that region). AWS's default egress rule
(everything out) is kept: nodes download packages and images.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any
from ansible_collections.amazon.aws.plugins.module_utils.tagging import boto3_tag_list_to_ansible_dict
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._aws.common import is_managed
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._aws.common import managed_filters
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._aws.common import paginate
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._aws.common import together
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._cluster.spec import NATS_PORT
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._cluster.spec import ClusterSpec


@dataclass
class Network:
    """What exists of one cluster's network in one region."""

    region: str
    zones: list[str] = field(default_factory=list)  # every available AZ of the region
    vpc: dict[str, Any] | None = None
    subnets: dict[str, dict[str, Any]] = field(default_factory=dict)  # AZ -> subnet
    internet_gateways: list[dict[str, Any]] = field(default_factory=list)
    route_table: dict[str, Any] | None = None
    security_group: dict[str, Any] | None = None
    key_pairs: list[dict[str, Any]] = field(default_factory=list)

    @property
    def internet_gateway(self) -> dict[str, Any] | None:
        return self.internet_gateways[0] if self.internet_gateways else None

    def ids(self) -> dict[str, Any]:
        igw = self.internet_gateway
        return {
            "vpc_id": self.vpc["VpcId"] if self.vpc else None,
            "subnet_ids": {az: s["SubnetId"] for az, s in sorted(self.subnets.items())},
            "internet_gateway_id": igw["InternetGatewayId"] if igw else None,
            "route_table_id": self.route_table["RouteTableId"] if self.route_table else None,
            "security_group_id": self.security_group["GroupId"] if self.security_group else None,
            "key_names": sorted(k["KeyName"] for k in self.key_pairs),
        }


def resource_tags(resource: dict[str, Any]) -> dict[str, str]:
    return boto3_tag_list_to_ansible_dict(resource.get("Tags") or [])


def _mine(resources: list[dict[str, Any]], cluster: str) -> list[dict[str, Any]]:
    """The tag filters already did this; check again before we ever act on them."""
    return [r for r in resources if is_managed(resource_tags(r), cluster)]


def describe_zones(ec2: Any) -> list[str]:
    zones = ec2.describe_availability_zones(aws_retry=True, Filters=[{"Name": "state", "Values": ["available"]}])
    return sorted(
        z["ZoneName"] for z in zones.get("AvailabilityZones", [])
        if z.get("ZoneType", "availability-zone") == "availability-zone"
    )


def describe_internet_gateways(ec2: Any, cluster: str) -> list[dict[str, Any]]:
    return paginate(ec2, "describe_internet_gateways", "InternetGateways", Filters=managed_filters(cluster))


def describe_key_pairs(ec2: Any, cluster: str) -> list[dict[str, Any]]:
    return ec2.describe_key_pairs(aws_retry=True, Filters=managed_filters(cluster)).get("KeyPairs", [])


def _by_tag(ec2: Any, operation: str, key: str, cluster: str) -> list[dict[str, Any]]:
    return paginate(ec2, operation, key, Filters=managed_filters(cluster))


def find(ec2: Any, spec: ClusterSpec, region: str, zones: list[str] | None = None) -> Network:
    """Everything of the cluster's network in one region: one round of describes, by tag.

    Subnets, route tables and security groups are found by tag (not by VPC id), so that
    none of the describes waits for another; they are matched to the VPC here.
    """
    cluster = spec.cluster_name
    want_keys = bool(spec.ssh_public_key)
    found = together(
        (lambda: describe_zones(ec2)) if zones is None else None,
        lambda: _by_tag(ec2, "describe_vpcs", "Vpcs", cluster),
        (lambda: describe_key_pairs(ec2, cluster)) if want_keys else None,
        lambda: describe_internet_gateways(ec2, cluster),
        lambda: _by_tag(ec2, "describe_subnets", "Subnets", cluster),
        lambda: _by_tag(ec2, "describe_route_tables", "RouteTables", cluster),
        lambda: _by_tag(ec2, "describe_security_groups", "SecurityGroups", cluster),
    )
    if zones is None:
        zones = found.pop(0)
    vpcs = found.pop(0)
    keys = found.pop(0) if want_keys else []
    igws, subnets, tables, groups = found
    net = Network(region=region, zones=list(zones))
    vpcs = sorted(_mine(vpcs, cluster), key=lambda v: v["VpcId"])
    net.key_pairs = _mine(keys, cluster)
    net.internet_gateways = _mine(igws, cluster)
    if not vpcs:
        return net
    net.vpc = vpcs[0]  # any other VPC tagged as ours is left alone here; state=absent deletes it
    vpc_id = net.vpc["VpcId"]
    net.internet_gateways.sort(key=lambda g: 0 if attached_to(g, vpc_id) else 1)
    for subnet in _mine(subnets, cluster):
        if subnet.get("VpcId") == vpc_id:
            net.subnets.setdefault(subnet["AvailabilityZone"], subnet)
    tables = [t for t in _mine(tables, cluster) if t.get("VpcId") == vpc_id and is_main(t)]
    net.route_table = tables[0] if tables else main_route_table(ec2, vpc_id)  # untagged: a run cut short
    groups = [g for g in _mine(groups, cluster) if g.get("VpcId") == vpc_id]
    net.security_group = groups[0] if groups else None
    return net


def is_main(table: dict[str, Any]) -> bool:
    return any(a.get("Main") for a in table.get("Associations") or [])


def main_route_table(ec2: Any, vpc_id: str) -> dict[str, Any] | None:
    """The VPC's main route table (CreateVpc makes it; it goes with DeleteVpc)."""
    tables = paginate(ec2, "describe_route_tables", "RouteTables",
                      Filters=[{"Name": "vpc-id", "Values": [vpc_id]}, {"Name": "association.main", "Values": ["true"]}])
    return tables[0] if tables else None


def attached_to(igw: dict[str, Any], vpc_id: str) -> bool:
    return any(a.get("VpcId") == vpc_id for a in igw.get("Attachments") or [])


Rule = tuple  # (protocol, from_port, to_port, kind, value)


def desired_rules(spec: ClusterSpec, group_id: str | None, region: str) -> set[Rule]:
    rules: set[Rule] = set()
    nats = spec.nats_cidrs_for(region)
    for port, cidrs in ((22, spec.ssh_cidrs), (spec.api_port, spec.api_cidrs), (NATS_PORT, nats)):
        for cidr in cidrs:
            kind = "cidr6" if ipaddress.ip_network(cidr).version == 6 else "cidr"
            rules.add(("tcp", port, port, kind, cidr))
    rules.add(("-1", None, None, "group", group_id or "self"))
    return rules


def covered(cidr: str, blocks: list[str]) -> bool:
    """Whether ``cidr`` lies inside one of ``blocks`` (of its IP version): a ``/32`` a wider
    ``nats_cidrs`` block already admits needs no rule of its own."""
    network = ipaddress.ip_network(cidr, strict=False)
    for block in blocks:
        wide = ipaddress.ip_network(block, strict=False)
        if wide.version == network.version and network.subnet_of(wide):
            return True
    return False


def admits_everyone(blocks: list[str]) -> bool:
    """Whether ``blocks`` hold ``0.0.0.0/0`` (every IPv4 address: every node's too)."""
    return any(ipaddress.ip_network(b, strict=False) == ipaddress.ip_network("0.0.0.0/0") for b in blocks)


def inbound_rules(spec: ClusterSpec, region: str, addresses: int = 0) -> tuple[int, int]:
    """The inbound rules (IPv4, IPv6) the region's security group holds for ``spec``, with
    ``addresses`` more IPv4 ``/32`` rules on NATS, as AWS counts them against its quota."""
    rules = desired_rules(spec, "self", region)
    groups = sum(1 for r in rules if r[3] == "group")
    return (sum(1 for r in rules if r[3] == "cidr") + groups + addresses,
            sum(1 for r in rules if r[3] == "cidr6") + groups)


def current_rules(group: dict[str, Any]) -> set[Rule]:
    rules: set[Rule] = set()
    for perm in group.get("IpPermissions") or []:
        proto = str(perm.get("IpProtocol"))
        ports = (None, None) if proto == "-1" else (perm.get("FromPort"), perm.get("ToPort"))
        for r in perm.get("IpRanges") or []:
            rules.add((proto, *ports, "cidr", r["CidrIp"]))
        for r in perm.get("Ipv6Ranges") or []:
            rules.add((proto, *ports, "cidr6", r["CidrIpv6"]))
        for r in perm.get("UserIdGroupPairs") or []:
            rules.add((proto, *ports, "group", r["GroupId"]))
    return rules


def ip_permissions(rules: set[Rule]) -> list[dict[str, Any]]:
    perms = []
    for proto, from_port, to_port, kind, value in sorted(rules, key=str):
        perm: dict[str, Any] = {"IpProtocol": proto}
        if proto != "-1":
            perm.update(FromPort=from_port, ToPort=to_port)
        if kind == "cidr":
            perm["IpRanges"] = [{"CidrIp": value}]
        elif kind == "cidr6":
            perm["Ipv6Ranges"] = [{"CidrIpv6": value}]
        else:
            perm["UserIdGroupPairs"] = [{"GroupId": value}]
        perms.append(perm)
    return perms


def subnet_cidrs(vpc_cidr: str, zones: list[str], existing: dict[str, dict[str, Any]]) -> dict[str, str]:
    """A CIDR for every zone without a subnet: /20s of a /16 (four bits more than the VPC)."""
    net = ipaddress.ip_network(vpc_cidr)
    candidates = [str(c) for c in net.subnets(new_prefix=min(net.prefixlen + 4, 28))]
    used = {s["CidrBlock"] for s in existing.values()}
    out: dict[str, str] = {}
    for index, zone in enumerate(zones):
        if zone in existing:
            continue
        preferred = candidates[index] if index < len(candidates) else None
        choice = preferred if preferred and preferred not in used else next((c for c in candidates if c not in used), None)
        if choice is None:
            raise ValueError(f"vpc_cidr {vpc_cidr} has no room for a subnet in {zone}")
        used.add(choice)
        out[zone] = choice
    return out


def pending_changes(spec: ClusterSpec, net: Network) -> list[str]:
    """What :func:`prepare` (and the call it returns) would do, in words (for check mode and the result)."""
    changes: list[str] = []
    if not net.vpc:
        changes.append(f"create VPC {spec.vpc_cidr}")
    missing = [z for z in net.zones if z not in net.subnets]
    if missing:
        changes.append(f"create subnets in {', '.join(missing)}")
    igw = net.internet_gateway
    if not igw:
        changes.append("create internet gateway")
    elif not net.vpc or not attached_to(igw, net.vpc["VpcId"]):
        changes.append("attach internet gateway")
    if not net.route_table:
        changes.append("add a default route to the VPC's main route table")
    elif igw and not has_default_route(net.route_table, igw["InternetGatewayId"]):
        changes.append("add default route")
    elif not is_managed(resource_tags(net.route_table), spec.cluster_name):
        changes.append("tag the main route table")
    if not net.security_group:
        changes.append("create security group")
    else:
        want = desired_rules(spec, net.security_group["GroupId"], net.region)
        have = current_rules(net.security_group)
        if want - have or have - want:
            changes.append("update security group rules")
    if spec.key_name and spec.key_name not in {k["KeyName"] for k in net.key_pairs}:
        changes.append(f"import key pair {spec.key_name}")
    return changes


def has_default_route(table: dict[str, Any], igw_id: str) -> bool:
    return any(
        r.get("DestinationCidrBlock") == "0.0.0.0/0" and r.get("GatewayId") == igw_id for r in table.get("Routes") or []
    )
