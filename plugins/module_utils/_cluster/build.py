# -*- coding: utf-8 -*-
# Copyright: bacalhau.aws_spot contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Making and repairing the cluster's network in a region (VPC, subnets, gateway, main route table,
security group and its rules, key pair), in as few round trips as the dependencies allow.
Private.
"""

from __future__ import annotations

from typing import Any, Callable
from ansible_collections.amazon.aws.plugins.module_utils.botocore import is_boto3_error_code
from ansible_collections.amazon.aws.plugins.module_utils.tagging import ansible_dict_to_boto3_tag_list
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._aws.common import AwsSpotError
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._aws.common import is_managed
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._aws.common import managed_tags
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._aws.common import tag_specifications
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._aws.common import together
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._cluster.spec import ClusterSpec
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._cluster.network import Network
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._cluster.network import Rule
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._cluster.network import attached_to
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._cluster.network import has_default_route
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._cluster.network import ip_permissions
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._cluster.network import resource_tags
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._cluster.network import current_rules
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._cluster.network import desired_rules
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._cluster.network import main_route_table
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._cluster.network import pending_changes
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._cluster.network import subnet_cidrs


def _tags_for(spec: ClusterSpec, name: str) -> dict[str, str]:
    return managed_tags(spec.cluster_name, name=name, extra=spec.tags)


def create_vpc(ec2: Any, spec: ClusterSpec) -> dict[str, Any]:
    return ec2.create_vpc(
        aws_retry=True, CidrBlock=spec.vpc_cidr,
        TagSpecifications=tag_specifications("vpc", _tags_for(spec, spec.prefix)),
    )["Vpc"]


def enable_dns_hostnames(ec2: Any, vpc_id: str) -> None:
    ec2.modify_vpc_attribute(aws_retry=True, VpcId=vpc_id, EnableDnsHostnames={"Value": True})


def create_subnet(ec2: Any, spec: ClusterSpec, vpc_id: str, zone: str, cidr: str) -> dict[str, Any]:
    return ec2.create_subnet(
        aws_retry=True, VpcId=vpc_id, CidrBlock=cidr, AvailabilityZone=zone,
        TagSpecifications=tag_specifications("subnet", _tags_for(spec, f"{spec.prefix}-{zone}")),
    )["Subnet"]


def map_public_ip_on_launch(ec2: Any, subnet_id: str) -> None:
    # instances get a public address (no NAT gateway: nodes talk to each other over the internet)
    ec2.modify_subnet_attribute(aws_retry=True, SubnetId=subnet_id, MapPublicIpOnLaunch={"Value": True})


def create_internet_gateway(ec2: Any, spec: ClusterSpec) -> dict[str, Any]:
    return ec2.create_internet_gateway(
        aws_retry=True, TagSpecifications=tag_specifications("internet-gateway", _tags_for(spec, f"{spec.prefix}-igw")),
    )["InternetGateway"]


def attach_internet_gateway(ec2: Any, igw_id: str, vpc_id: str) -> None:
    ec2.attach_internet_gateway(aws_retry=True, InternetGatewayId=igw_id, VpcId=vpc_id)


def route_table_tags(spec: ClusterSpec) -> list[dict[str, str]]:
    return ansible_dict_to_boto3_tag_list(_tags_for(spec, f"{spec.prefix}-public"))


def tag_route_table(ec2: Any, table_id: str, tags: list[dict[str, str]]) -> None:
    """Tag the main route table (made by CreateVpc, so not taggable at creation) to find it by tag."""
    ec2.create_tags(aws_retry=True, Resources=[table_id], Tags=tags)


def create_default_route(ec2: Any, table_id: str, igw_id: str) -> None:
    ec2.create_route(aws_retry=True, RouteTableId=table_id, DestinationCidrBlock="0.0.0.0/0", GatewayId=igw_id)


def replace_default_route(ec2: Any, table_id: str, igw_id: str) -> None:
    ec2.replace_route(aws_retry=True, RouteTableId=table_id, DestinationCidrBlock="0.0.0.0/0", GatewayId=igw_id)


def create_security_group(ec2: Any, spec: ClusterSpec, vpc_id: str) -> dict[str, Any]:
    group_id = ec2.create_security_group(
        aws_retry=True, VpcId=vpc_id, GroupName=spec.prefix,
        Description=f"Bacalhau cluster {spec.cluster_name} (bacalhau.aws_spot)",
        TagSpecifications=tag_specifications("security-group", _tags_for(spec, spec.prefix)),
    )["GroupId"]
    return {"GroupId": group_id, "IpPermissions": []}


def authorize_ingress(ec2: Any, spec: ClusterSpec, group_id: str, rules: set[Rule]) -> None:
    try:
        ec2.authorize_security_group_ingress(
            aws_retry=True, GroupId=group_id, IpPermissions=ip_permissions(rules),
            TagSpecifications=tag_specifications("security-group-rule", _tags_for(spec, spec.prefix)),
        )
    except is_boto3_error_code("RulesPerSecurityGroupLimitExceeded"):
        raise AwsSpotError(
            f"security group {group_id} cannot take {len(rules)} more inbound rules: AWS refused them "
            "(RulesPerSecurityGroupLimitExceeded), so the quota 'Inbound or outbound rules per security group' of "
            "this account and region is lower than cluster_security_group_rules_quota says. Set it to the quota "
            "Service Quotas shows, or raise the quota; until then nodes outside the orchestrator's region whose "
            "addresses have no rule cannot join") from None


def revoke_ingress(ec2: Any, group_id: str, rules: set[Rule]) -> None:
    try:
        ec2.revoke_security_group_ingress(aws_retry=True, GroupId=group_id, IpPermissions=ip_permissions(rules))
    except is_boto3_error_code("InvalidPermission.NotFound"):
        pass


def import_key_pair(ec2: Any, spec: ClusterSpec) -> dict[str, Any]:
    return ec2.import_key_pair(
        aws_retry=True, KeyName=spec.key_name, PublicKeyMaterial=spec.ssh_public_key.encode(),
        TagSpecifications=tag_specifications("key-pair", _tags_for(spec, spec.key_name)),
    )


def prepare(ec2: Any, spec: ClusterSpec, net: Network) -> Callable[[], None]:
    """Create or repair what a launch needs, and return the rest as one call to make later.

    1. VPC, internet gateway, key pair (need nothing);
    2. on the VPC: DNS attribute, subnets, gateway attachment, route table, security group;
    3. (returned) subnet attributes, default route, the route table's tags, security
       group rules. A launch needs none of these (it asks for its public address itself),
       so the caller can send them together with the launch: one round trip less.
    """
    if not pending_changes(spec, net):
        return lambda: None
    new_vpc = not net.vpc
    want_key = bool(spec.key_name and spec.key_name not in {k["KeyName"] for k in net.key_pairs})

    def _vpc() -> None:
        net.vpc = create_vpc(ec2, spec)

    def _igw() -> None:
        net.internet_gateways.insert(0, create_internet_gateway(ec2, spec))

    def _key() -> None:
        import_key_pair(ec2, spec)
        net.key_pairs.append({"KeyName": spec.key_name})

    together(_vpc if new_vpc else None, _igw if not net.internet_gateway else None, _key if want_key else None)
    vpc_id = net.vpc["VpcId"]
    igw = net.internet_gateway
    new_subnets: list[str] = []

    def _subnet(zone: str, cidr: str) -> Any:
        def make() -> None:
            subnet = create_subnet(ec2, spec, vpc_id, zone, cidr)
            net.subnets[zone] = subnet
            new_subnets.append(subnet["SubnetId"])
        return make

    def _attach() -> None:
        attach_internet_gateway(ec2, igw["InternetGatewayId"], vpc_id)
        igw["Attachments"] = [{"VpcId": vpc_id, "State": "available"}]

    def _table() -> None:
        net.route_table = main_route_table(ec2, vpc_id)
        if net.route_table is None:
            raise AwsSpotError(f"VPC {vpc_id} has no main route table; delete the cluster (state: absent) "
                               "and create it again", net.region)

    def _group() -> None:
        net.security_group = create_security_group(ec2, spec, vpc_id)

    together(
        (lambda: enable_dns_hostnames(ec2, vpc_id)) if new_vpc else None,
        *[_subnet(z, c) for z, c in subnet_cidrs(spec.vpc_cidr, net.zones, net.subnets).items()],
        _attach if not attached_to(igw, vpc_id) else None,
        _table if not net.route_table else None,
        _group if not net.security_group else None,
    )
    table_id = net.route_table["RouteTableId"]
    group_id = net.security_group["GroupId"]
    igw_id = igw["InternetGatewayId"]
    want, have = desired_rules(spec, group_id, net.region), current_rules(net.security_group)
    round3: list[Any] = []
    for subnet_id in new_subnets:
        round3.append(lambda sid=subnet_id: map_public_ip_on_launch(ec2, sid))
    route_missing = not has_default_route(net.route_table, igw_id)
    if route_missing:
        stale = any(r.get("DestinationCidrBlock") == "0.0.0.0/0" for r in net.route_table.get("Routes") or [])
        round3.append(lambda: (replace_default_route if stale else create_default_route)(ec2, table_id, igw_id))
    table_tags = None if is_managed(resource_tags(net.route_table), spec.cluster_name) else route_table_tags(spec)
    if table_tags:
        round3.append(lambda: tag_route_table(ec2, table_id, table_tags))
    revoke, grant = have - want, want - have
    if revoke and grant and len(have) + len(grant) > spec.rules_quota:
        # a swap at the quota (a node's /32 for its replacement's): the new rules fit only once the
        # old ones are gone, so the revoke goes first (one round trip more, only then)
        round3.append(lambda: (revoke_ingress(ec2, group_id, revoke), authorize_ingress(ec2, spec, group_id, grant)))
    else:
        if revoke:
            round3.append(lambda: revoke_ingress(ec2, group_id, revoke))
        if grant:
            round3.append(lambda: authorize_ingress(ec2, spec, group_id, grant))

    def finish() -> None:
        together(*round3)
        if route_missing:
            net.route_table.setdefault("Routes", []).append({"DestinationCidrBlock": "0.0.0.0/0", "GatewayId": igw_id})
        if table_tags:
            net.route_table["Tags"] = table_tags
        net.security_group["IpPermissions"] = ip_permissions(want)

    return finish
