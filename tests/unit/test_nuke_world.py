"""A world of resources for the ``tagged_resource_nuke`` tests, made with boto3 only.

Not tests themselves: the module and playbook tests build it, run the nuke, and then
look at what still exists (``inventory``). Nothing here depends on ``spot_cluster``.

Per region and cluster, ``build_ours`` makes what ``spot_cluster`` makes (VPC, a subnet
per zone, IGW + route table with a default route, a security group referencing itself
and a second group referencing the first, key pair, launch template, spot and
on-demand instances with tagged volumes/ENIs) plus the other types the nuke handles
(spot request, EC2 fleet, elastic IP, loose ENI and volumes), and the event path
(EventBridge rule and SQS queue, ``bacalhau-<cluster>-spot-events``). ``build_foreign`` makes
the same kinds of resource untagged, or tagged with another ``managed-by``.
Everything is tagged at creation through TagSpecifications.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import boto3

from tests.emulator import seed

MANAGED_BY = "bacalhau:managed-by"
OURS = "bacalhau.aws_spot"
CLUSTER = "bacalhau:cluster"

TYPES = (
    "spot_instance_requests",
    "ec2_fleets",
    "instances",
    "elastic_ips",
    "launch_templates",
    "network_interfaces",
    "volumes",
    "security_groups",
    "subnets",
    "route_tables",
    "internet_gateways",
    "vpcs",
    "key_pairs",
    "event_rules",
    "sqs_queues",
)


def ec2(region: str) -> Any:
    return boto3.client("ec2", region_name=region)


def tags_for(cluster: str | None, managed_by: str | None = OURS, name: str | None = None) -> dict[str, str]:
    tags: dict[str, str] = {}
    if managed_by is not None:
        tags[MANAGED_BY] = managed_by
    if cluster is not None:
        tags[CLUSTER] = cluster
    if name:
        tags["Name"] = name
    return tags


def spec(resource_type: str, tags: dict[str, str]) -> list[dict[str, Any]]:
    if not tags:
        return []
    return [{"ResourceType": resource_type, "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}]


@dataclass
class Made:
    """What one build made: (region, type, id) triples."""

    items: set[tuple[str, str, str]] = field(default_factory=set)

    def add(self, region: str, resource_type: str, resource_id: str) -> str:
        self.items.add((region, resource_type, resource_id))
        return resource_id

    def of_type(self, resource_type: str) -> set[tuple[str, str, str]]:
        return {item for item in self.items if item[1] == resource_type}

    def __or__(self, other: "Made") -> "Made":
        return Made(self.items | other.items)


_cidr_counter = [0]


def _next_cidr() -> int:
    _cidr_counter[0] = (_cidr_counter[0] + 1) % 250
    return _cidr_counter[0]


def image(region: str, arch: str = "x86_64") -> str:
    return seed.ami_id(region, "24.04", arch, seed.SERIALS[-1])


def build_network(region: str, tags: dict[str, str], made: Made, label: str) -> dict[str, Any]:
    """VPC, a subnet in two zones, IGW, route table with a default route, two groups."""
    c = ec2(region)
    n = _next_cidr()
    vpc = made.add(region, "vpcs", c.create_vpc(
        CidrBlock=f"10.{n}.0.0/16", TagSpecifications=spec("vpc", tags))["Vpc"]["VpcId"])
    subnets = []
    for i, zone in enumerate(("a", "b")):
        subnets.append(made.add(region, "subnets", c.create_subnet(
            VpcId=vpc, CidrBlock=f"10.{n}.{i}.0/24", AvailabilityZone=f"{region}{zone}",
            TagSpecifications=spec("subnet", tags))["Subnet"]["SubnetId"]))
    igw = made.add(region, "internet_gateways", c.create_internet_gateway(
        TagSpecifications=spec("internet-gateway", tags))["InternetGateway"]["InternetGatewayId"])
    c.attach_internet_gateway(InternetGatewayId=igw, VpcId=vpc)
    rtb = made.add(region, "route_tables", c.create_route_table(
        VpcId=vpc, TagSpecifications=spec("route-table", tags))["RouteTable"]["RouteTableId"])
    c.create_route(RouteTableId=rtb, DestinationCidrBlock="0.0.0.0/0", GatewayId=igw)
    for subnet in subnets:
        c.associate_route_table(RouteTableId=rtb, SubnetId=subnet)
    sg = made.add(region, "security_groups", c.create_security_group(
        GroupName=f"{label}-nodes", Description="nodes", VpcId=vpc,
        TagSpecifications=spec("security-group", tags))["GroupId"])
    c.authorize_security_group_ingress(GroupId=sg, IpPermissions=[
        {"IpProtocol": "-1", "UserIdGroupPairs": [{"GroupId": sg}]},
        {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]},
    ])
    sg2 = made.add(region, "security_groups", c.create_security_group(
        GroupName=f"{label}-admin", Description="admin", VpcId=vpc,
        TagSpecifications=spec("security-group", tags))["GroupId"])
    # the two groups reference each other, both ways
    c.authorize_security_group_ingress(GroupId=sg2, IpPermissions=[
        {"IpProtocol": "tcp", "FromPort": 1234, "ToPort": 1235, "UserIdGroupPairs": [{"GroupId": sg}]}])
    c.authorize_security_group_egress(GroupId=sg, IpPermissions=[
        {"IpProtocol": "tcp", "FromPort": 4222, "ToPort": 4222, "UserIdGroupPairs": [{"GroupId": sg2}]}])
    return {"vpc": vpc, "subnets": subnets, "igw": igw, "rtb": rtb, "sg": sg, "sg2": sg2}


def build_compute(region: str, tags: dict[str, str], net: dict[str, Any], made: Made, label: str,
                  full: bool = True) -> dict[str, Any]:
    """Key pair, launch template, instances, EIP, loose ENI and volumes (, spot request, fleet)."""
    c = ec2(region)
    key = c.create_key_pair(KeyName=f"{label}-key", TagSpecifications=spec("key-pair", tags))
    made.add(region, "key_pairs", key["KeyPairId"])
    lt = made.add(region, "launch_templates", c.create_launch_template(
        LaunchTemplateName=f"{label}-lt",
        LaunchTemplateData={"ImageId": image(region), "InstanceType": "t3.micro"},
        TagSpecifications=spec("launch-template", tags))["LaunchTemplate"]["LaunchTemplateId"])
    instances = []
    for market in ("spot", "on-demand"):
        params: dict[str, Any] = dict(
            ImageId=image(region), InstanceType="t3.micro", MinCount=1, MaxCount=1,
            SubnetId=net["subnets"][0], SecurityGroupIds=[net["sg"]], KeyName=f"{label}-key",
            TagSpecifications=spec("instance", tags) + spec("volume", tags) + spec("network-interface", tags),
        )
        if market == "spot":
            params["InstanceMarketOptions"] = {"MarketType": "spot"}
        inst = c.run_instances(**params)["Instances"][0]
        instances.append(made.add(region, "instances", inst["InstanceId"]))
        for mapping in inst.get("BlockDeviceMappings") or []:
            if tags:  # root volumes carry the tags of the volume TagSpecification
                made.add(region, "volumes", mapping["Ebs"]["VolumeId"])
        for nic in inst.get("NetworkInterfaces") or []:
            if tags:  # and the launch's interface those of the network-interface one, as on EC2
                made.add(region, "network_interfaces", nic["NetworkInterfaceId"])
    # an elastic IP associated with an instance
    eip = c.allocate_address(Domain="vpc", TagSpecifications=spec("elastic-ip", tags))["AllocationId"]
    made.add(region, "elastic_ips", eip)
    c.associate_address(AllocationId=eip, InstanceId=instances[0])
    # a loose ENI, a loose volume, and a data volume attached to an instance (kept on termination)
    made.add(region, "network_interfaces", c.create_network_interface(
        SubnetId=net["subnets"][1], Groups=[net["sg2"]],
        TagSpecifications=spec("network-interface", tags))["NetworkInterface"]["NetworkInterfaceId"])
    made.add(region, "volumes", c.create_volume(
        AvailabilityZone=f"{region}a", Size=1, TagSpecifications=spec("volume", tags))["VolumeId"])
    data = made.add(region, "volumes", c.create_volume(
        AvailabilityZone=f"{region}a", Size=2, TagSpecifications=spec("volume", tags))["VolumeId"])
    c.attach_volume(VolumeId=data, InstanceId=instances[1], Device="/dev/sdf")
    # a second ENI attached to an instance (not deleted on termination)
    second = made.add(region, "network_interfaces", c.create_network_interface(
        SubnetId=net["subnets"][0], Groups=[net["sg"]],
        TagSpecifications=spec("network-interface", tags))["NetworkInterface"]["NetworkInterfaceId"])
    c.attach_network_interface(NetworkInterfaceId=second, InstanceId=instances[1], DeviceIndex=1)
    out = {"instances": instances, "lt": lt, "eip": eip, "data_volume": data}
    if full:
        # a spot request (fulfilled at once by the emulator, in the default VPC; its
        # instance is not tagged, so it is not ours and must survive)
        sir = c.request_spot_instances(
            InstanceCount=1, LaunchSpecification={"ImageId": image(region), "InstanceType": "t3.micro"},
            TagSpecifications=spec("spot-instances-request", tags))["SpotInstanceRequests"][0]
        made.add(region, "spot_instance_requests", sir["SpotInstanceRequestId"])
        out["spot_request_instance"] = sir.get("InstanceId")
        fleet = c.create_fleet(
            Type="maintain",
            LaunchTemplateConfigs=[{"LaunchTemplateSpecification": {"LaunchTemplateId": lt, "Version": "$Latest"},
                                    "Overrides": [{"SubnetId": net["subnets"][0], "InstanceType": "t3.micro"}]}],
            TargetCapacitySpecification={"TotalTargetCapacity": 1, "DefaultTargetCapacityType": "spot"},
            TagSpecifications=spec("fleet", tags))
        made.add(region, "ec2_fleets", fleet["FleetId"])
    return out


def build_event_path(region: str, tags: dict[str, str], made: Made, label: str) -> dict[str, Any]:
    """An EventBridge rule sending to an SQS queue, both named ``bacalhau-<label>-spot-events``
    (foreign ones too: the nuke lists by that prefix, and must pick by tags alone)."""
    events, sqs = boto3.client("events", region_name=region), boto3.client("sqs", region_name=region)
    name = f"bacalhau-{label}-spot-events"
    rule_arn = events.put_rule(Name=name, EventPattern='{"source": ["aws.ec2"]}',
                               Tags=[{"Key": k, "Value": v} for k, v in tags.items()])["RuleArn"]
    url = sqs.create_queue(QueueName=name, tags=tags)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    events.put_targets(Rule=name, Targets=[{"Id": "q", "Arn": arn}])
    made.add(region, "event_rules", name)
    made.add(region, "sqs_queues", url)
    return {"rule_arn": rule_arn, "queue_url": url}


def build_ours(region: str, cluster: str, full: bool = True) -> Made:
    made = Made()
    tags = tags_for(cluster, name=f"bacalhau-{cluster}")
    net = build_network(region, tags, made, f"{cluster}-{region}")
    build_compute(region, tags, net, made, f"{cluster}-{region}", full=full)
    build_event_path(region, tags, made, cluster)
    return made


def build_foreign(region: str, variant: str) -> Made:
    """The same kinds of resource, untagged (``untagged``) or another manager's (``other``)."""
    made = Made()
    tags = {} if variant == "untagged" else tags_for("c1", managed_by="someone-else", name="not-ours")
    net = build_network(region, tags, made, f"{variant}-{region}")
    build_compute(region, tags, net, made, f"{variant}-{region}")
    build_event_path(region, tags, made, variant)
    return made


# --------------------------------------------------------------------------- what exists
def _live(c: Any, resource_type: str) -> set[str]:
    if resource_type == "instances":
        res = c.describe_instances(Filters=[{"Name": "instance-state-name",
                                             "Values": ["pending", "running", "stopping", "stopped"]}])
        return {i["InstanceId"] for r in res["Reservations"] for i in r["Instances"]}
    if resource_type == "spot_instance_requests":
        return {s["SpotInstanceRequestId"] for s in c.describe_spot_instance_requests()["SpotInstanceRequests"]
                if s["State"] in ("open", "active", "disabled")}
    if resource_type == "ec2_fleets":
        return {f["FleetId"] for f in c.describe_fleets()["Fleets"] if not f["FleetState"].startswith("deleted")}
    if resource_type == "elastic_ips":
        return {a["AllocationId"] for a in c.describe_addresses()["Addresses"]}
    if resource_type == "launch_templates":
        return {t["LaunchTemplateId"] for t in c.describe_launch_templates()["LaunchTemplates"]}
    if resource_type == "network_interfaces":
        return {e["NetworkInterfaceId"] for e in c.describe_network_interfaces()["NetworkInterfaces"]}
    if resource_type == "volumes":
        return {v["VolumeId"] for v in c.describe_volumes()["Volumes"]}
    if resource_type == "security_groups":
        return {g["GroupId"] for g in c.describe_security_groups()["SecurityGroups"]}
    if resource_type == "subnets":
        return {s["SubnetId"] for s in c.describe_subnets()["Subnets"]}
    if resource_type == "route_tables":
        return {r["RouteTableId"] for r in c.describe_route_tables()["RouteTables"]}
    if resource_type == "internet_gateways":
        return {g["InternetGatewayId"] for g in c.describe_internet_gateways()["InternetGateways"]}
    if resource_type == "vpcs":
        return {v["VpcId"] for v in c.describe_vpcs()["Vpcs"]}
    if resource_type == "key_pairs":
        return {k["KeyPairId"] for k in c.describe_key_pairs()["KeyPairs"]}
    region = c.meta.region_name
    if resource_type == "event_rules":
        return {r["Name"] for r in boto3.client("events", region_name=region).list_rules()["Rules"]}
    if resource_type == "sqs_queues":
        return set(boto3.client("sqs", region_name=region).list_queues().get("QueueUrls", []))
    raise ValueError(resource_type)


def inventory(regions: list[str]) -> set[tuple[str, str, str]]:
    """Every live resource of every type in ``regions``, as (region, type, id)."""
    out = set()
    for region in regions:
        c = ec2(region)
        for resource_type in TYPES:
            out |= {(region, resource_type, rid) for rid in _live(c, resource_type)}
    return out
