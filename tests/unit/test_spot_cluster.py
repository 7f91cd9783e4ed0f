"""spot_cluster against the emulator: what exists afterwards, not which calls were made."""
from __future__ import annotations

import datetime

import boto3
import pytest

from tests.emulator import seed

MANAGED = {"bacalhau:managed-by": "bacalhau.aws_spot"}
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB0Cr2k3sC0oT6c8UhC6mYp0a6c3oOz5sQmX0y1d2abc tester@example"
CREATES = ("RunInstances", "CreateVpc", "CreateSubnet", "CreateInternetGateway", "CreateRouteTable",
           "CreateRoute", "CreateTags", "CreateSecurityGroup", "ImportKeyPair", "AuthorizeSecurityGroupIngress", "TerminateInstances")


def ec2(region: str):
    return boto3.client("ec2", region_name=region)


def tags(resource: dict) -> dict:
    return {t["Key"]: t["Value"] for t in resource.get("Tags") or []}


def live(region: str, cluster: str | None = None, role: str | None = None) -> list[dict]:
    filters = [{"Name": "instance-state-name", "Values": ["pending", "running"]}]
    if cluster:
        filters.append({"Name": "tag:bacalhau:cluster", "Values": [cluster]})
    if role:
        filters.append({"Name": "tag:bacalhau:role", "Values": [role]})
    pages = ec2(region).describe_instances(Filters=filters)["Reservations"]
    return [i for r in pages for i in r["Instances"]]


def cluster_vpcs(region: str, cluster: str) -> list[dict]:
    return ec2(region).describe_vpcs(Filters=[{"Name": "tag:bacalhau:cluster", "Values": [cluster]}])["Vpcs"]


def writes(aws) -> dict:
    ops = aws.calls()["by_operation"]
    return {op: n for op, n in ops.items() if op in CREATES}


def cluster(name="demo", **kw):
    args = {
        "cluster_name": name,
        "regions": [
            {"region": "us-east-1", "count": 3, "instance_types": ["t3.small", "t3a.small"]},
            {"region": "eu-west-1", "count": 2, "instance_types": ["t4g.small"]},
        ],
        "ssh_public_key": KEY,
        "ssh_cidrs": ["198.51.100.0/24"],
        "api_cidrs": ["203.0.113.0/24"],
        "root_volume_size": 16,
        # these tests pin the packed walk (every type's zones in order, one call per attempt) they
        # were written for; spread, the default since placement, is tested in tests/integration/test_placement.py
        "availability_zone_strategy": "packed",
    }
    args.update(kw)
    return args


def test_exact_count_across_regions(aws, run_module):
    args = cluster()
    first = run_module("spot_cluster", args)
    assert not first.failed, first.get("msg")
    assert first.changed
    # one launch call per region when the capacity is there
    assert aws.calls()["by_operation"]["RunInstances"] == 2
    assert len(live("us-east-1", "demo")) == 3 and len(live("eu-west-1", "demo")) == 2
    assert {i["region"] for i in first["instances"]} == {"us-east-1", "eu-west-1"}
    assert first["regions"]["us-east-1"]["running"] == 3
    # the cost is the sum of the current spot price of each instance's type in its zone
    # (StartTime=now: the price in force now; without it EC2 answers the recent history)
    expected = 0.0
    now = datetime.datetime.now(datetime.timezone.utc)
    for i in first["instances"]:
        history = ec2(i["region"]).describe_spot_price_history(
            InstanceTypes=[i["instance_type"]], ProductDescriptions=["Linux/UNIX"], StartTime=now)["SpotPriceHistory"]
        expected += {h["AvailabilityZone"]: float(h["SpotPrice"]) for h in history}[i["availability_zone"]]
    assert expected > 0.01
    assert first["estimated_hourly_cost"] == pytest.approx(expected, abs=1e-5)

    # the right image for every architecture, IMDSv2, encrypted gp3 root of the asked size
    for region, arch in (("us-east-1", "x86_64"), ("eu-west-1", "arm64")):
        image = seed.ami_id(region, "24.04", arch, seed.SERIALS[-1])
        for instance in live(region, "demo"):
            assert instance["ImageId"] == image
            assert instance["MetadataOptions"]["HttpTokens"] == "required"
            assert instance["InstanceLifecycle"] == "spot"
            assert tags(instance)["bacalhau:role"] == "compute"
            volume_id = instance["BlockDeviceMappings"][0]["Ebs"]["VolumeId"]
            volume = ec2(region).describe_volumes(VolumeIds=[volume_id])["Volumes"][0]
            assert (volume["Encrypted"], volume["VolumeType"], volume["Size"]) == (True, "gp3", 16)
    assert {i["architecture"] for i in first["instances"] if i["region"] == "eu-west-1"} == {"arm64"}

    # the same again: nothing to do, nothing written
    aws.reset_calls()
    again = run_module("spot_cluster", args)
    assert not again.failed and not again.changed
    assert writes(aws) == {}
    assert sorted(i["instance_id"] for i in again["instances"]) == sorted(i["instance_id"] for i in first["instances"])

    # scale up one region, down the other
    args["regions"][0]["count"] = 5
    args["regions"][1]["count"] = 1
    aws.reset_calls()
    scaled = run_module("spot_cluster", args, diff=True)
    assert scaled.changed and not scaled.failed
    assert scaled["diff"] == {"before": {"us-east-1": 3, "eu-west-1": 2}, "after": {"us-east-1": 5, "eu-west-1": 1}}
    assert len(scaled["regions"]["us-east-1"]["launched"]) == 2
    assert len(scaled["regions"]["eu-west-1"]["terminated"]) == 1
    assert aws.calls()["by_operation"]["RunInstances"] == 1
    assert len(live("us-east-1", "demo")) == 5 and len(live("eu-west-1", "demo")) == 1
    # the network was reused, never duplicated
    assert len(cluster_vpcs("us-east-1", "demo")) == 1 and len(cluster_vpcs("eu-west-1", "demo")) == 1
    assert "CreateVpc" not in writes(aws)


def test_check_mode_changes_nothing(aws, run_module):
    result = run_module("spot_cluster", cluster(), check_mode=True, diff=True)
    assert result.changed and not result.failed
    assert result["diff"] == {"before": {"us-east-1": 0, "eu-west-1": 0}, "after": {"us-east-1": 3, "eu-west-1": 2}}
    assert "create VPC 10.0.0.0/16" in result["regions"]["us-east-1"]["network_changes"]
    assert writes(aws) == {}
    assert not cluster_vpcs("us-east-1", "demo") and not live("us-east-1")

    run_module("spot_cluster", cluster())
    aws.reset_calls()
    args = cluster()
    args["regions"][0]["count"] = 1
    shrink = run_module("spot_cluster", args, check_mode=True, diff=True)
    assert shrink.changed and len(shrink["regions"]["us-east-1"]["to_terminate"]) == 2
    assert writes(aws) == {} and len(live("us-east-1", "demo")) == 3


def test_fallback_over_zones_then_types(aws, run_module):
    # t3.small has no spot capacity anywhere; t3a.small none in zone a
    aws.capacity_error("us-east-1", instance_type="t3.small", market="spot")
    aws.capacity_error("us-east-1", availability_zone="us-east-1a", instance_type="t3a.small",
                       code="SpotMaxPriceTooLow")
    args = cluster(regions=[{"region": "us-east-1", "count": 2, "instance_types": ["t3.small", "t3a.small"],
                             "availability_zones": ["us-east-1a", "us-east-1b"]}])
    result = run_module("spot_cluster", args)
    assert not result.failed, result.get("msg")
    tried = [(a["instance_type"], a["availability_zone"], a["error_code"], a["launched"])
             for a in result["regions"]["us-east-1"]["attempts"]]
    assert tried == [
        ("t3.small", "us-east-1a", "InsufficientInstanceCapacity", 0),
        ("t3.small", "us-east-1b", "InsufficientInstanceCapacity", 0),
        ("t3a.small", "us-east-1a", "SpotMaxPriceTooLow", 0),
        ("t3a.small", "us-east-1b", None, 2),
    ]
    instances = live("us-east-1", "demo")
    assert [(i["InstanceType"], i["Placement"]["AvailabilityZone"]) for i in instances] == [("t3a.small", "us-east-1b")] * 2


def test_quota_error_skips_to_next_type(aws, run_module):
    aws.capacity_error("eu-west-1", instance_type="t4g.small", code="MaxSpotInstanceCountExceeded")
    args = cluster(regions=[{"region": "eu-west-1", "count": 1, "instance_types": ["t4g.small", "t4g.medium"]}])
    result = run_module("spot_cluster", args)
    assert not result.failed, result.get("msg")
    attempts = result["regions"]["eu-west-1"]["attempts"]
    assert [a["instance_type"] for a in attempts] == ["t4g.small", "t4g.medium"]  # not every zone of t4g.small
    assert live("eu-west-1", "demo")[0]["InstanceType"] == "t4g.medium"


def test_one_region_failing_does_not_hide_the_others(aws, run_module):
    aws.capacity_error("eu-west-1", market="spot")
    result = run_module("spot_cluster", cluster())
    assert result.failed
    assert "eu-west-1" in result["msg"] and "allow_partial" in result["msg"]
    assert result["failed_regions"].keys() == {"eu-west-1"}
    assert result["regions"]["us-east-1"]["running"] == 3 and not result["regions"]["us-east-1"]["failed"]
    assert result["regions"]["eu-west-1"]["running"] == 0
    assert {a["error_code"] for a in result["regions"]["eu-west-1"]["attempts"]} == {"InsufficientInstanceCapacity"}
    assert len(live("us-east-1", "demo")) == 3

    partial = run_module("spot_cluster", dict(cluster(), allow_partial=True))
    assert not partial.failed and not partial.changed
    assert "eu-west-1" in str(partial.get("warnings"))


def test_throttling_is_ridden_out(aws, run_module):
    aws.throttle(8, operations=["RunInstances", "DescribeInstances", "CreateVpc", "DescribeVpcs"])
    result = run_module("spot_cluster", cluster(regions=[{"region": "us-east-1", "count": 2,
                                                          "instance_types": ["t3.small"]}]))
    assert not result.failed, result.get("msg")
    assert len(live("us-east-1", "demo")) == 2
    assert len(cluster_vpcs("us-east-1", "demo")) == 1
    assert aws.faults()["throttle"]["count"] == 0


@pytest.mark.parametrize("change, words", [
    ({"cluster_name": "Demo_1"}, "cluster_name"),
    ({"regions": [{"region": "us-east-1", "count": -1, "instance_types": ["t3.small"]}]}, "count"),
    ({"regions": [{"region": "us-east-1", "count": 1, "instance_types": []}]}, "non-empty list"),
    ({"regions": [{"region": "us-east-1", "count": 1}]}, "instance_types"),
    ({"regions": [{"region": "us-east-1", "count": 1, "instance_types": ["t3.small"]},
                  {"region": "us-east-1", "count": 1, "instance_types": ["t3.small"]}]}, "listed twice"),
    ({"regions": [{"region": "us-east-1", "count": 1, "instance_types": ["t3.small"],
                   "availability_zones": ["eu-west-1a"]}]}, "not a zone of us-east-1"),
    ({"ssh_cidrs": ["everywhere"]}, "ssh_cidrs"),
    ({"regions": [{"region": "us-east-1", "count": 1, "instance_types": ["t3.small"]},
                  {"region": "eu-west-1", "count": 1, "instance_types": ["t9.nonsense"]}]}, "t9.nonsense"),
    ({"regions": [{"region": "us-east-1", "count": 1, "instance_types": ["t4g.small"],
                   "image_id": seed.ami_id("us-east-1", "24.04", "x86_64", seed.SERIALS[-1])}]}, "arm64"),
    ({"regions": [{"region": "us-east-7", "count": 1, "instance_types": ["t3.small"]}]}, "us-east-7"),
    # a type that exists but is not offered in the region (read per zone, with the plan)
    ({"regions": [{"region": "us-east-1", "count": 1, "instance_types": ["t3.small"]},
                  {"region": "ap-southeast-1", "count": 1, "instance_types": ["t3.small", "p4d.24xlarge"]}]},
     "p4d.24xlarge is not offered in ap-southeast-1"),
    ({"regions": [{"region": "us-east-1", "count": 1, "instance_types": ["t3.small"],
                   "availability_zones": ["us-east-1z"]}]}, "us-east-1z"),
])
def test_bad_input_creates_nothing(aws, run_module, change, words):
    result = run_module("spot_cluster", cluster(**change))
    assert result.failed
    assert words in result["msg"], result["msg"]
    assert writes(aws) == {}
    for region in ("us-east-1", "eu-west-1"):
        assert not ec2(region).describe_vpcs(Filters=[{"Name": "tag-key", "Values": ["bacalhau:cluster"]}])["Vpcs"]
        assert not live(region)


def test_bad_input_reports_every_problem_at_once(aws, run_module):
    result = run_module("spot_cluster", cluster(cluster_name="BAD", ssh_cidrs=["nope"], vpc_cidr="10.0.0.0/8"))
    assert result.failed
    for words in ("cluster_name", "ssh_cidrs", "vpc_cidr"):
        assert words in result["msg"]


def test_every_created_resource_is_tagged(aws, run_module):
    result = run_module("spot_cluster", cluster(tags={"team": "research"}))
    assert not result.failed, result.get("msg")
    client = ec2("us-east-1")
    net = result["regions"]["us-east-1"]["network"]
    found = {
        "vpc": client.describe_vpcs(VpcIds=[net["vpc_id"]])["Vpcs"],
        "subnet": client.describe_subnets(SubnetIds=list(net["subnet_ids"].values()))["Subnets"],
        "igw": client.describe_internet_gateways(InternetGatewayIds=[net["internet_gateway_id"]])["InternetGateways"],
        "route table": client.describe_route_tables(RouteTableIds=[net["route_table_id"]])["RouteTables"],
        "security group": client.describe_security_groups(GroupIds=[net["security_group_id"]])["SecurityGroups"],
        "key pair": client.describe_key_pairs(KeyNames=net["key_names"])["KeyPairs"],
        "instance": live("us-east-1", "demo"),
        "volume": client.describe_volumes(Filters=[{"Name": "attachment.instance-id", "Values": [
            i["InstanceId"] for i in live("us-east-1", "demo")]}])["Volumes"],
    }
    assert len(found["subnet"]) == 6  # every zone of us-east-1
    for kind, resources in found.items():
        assert resources, kind
        for resource in resources:
            t = tags(resource)
            assert t.get("bacalhau:managed-by") == "bacalhau.aws_spot", (kind, t)
            assert t.get("bacalhau:cluster") == "demo", (kind, t)
            assert t.get("team") == "research", (kind, t)
            assert t.get("Name", "").startswith("bacalhau-demo"), (kind, t)
    # nothing untagged was made: every VPC but the default one is ours
    vpcs = client.describe_vpcs()["Vpcs"]
    assert all(v.get("IsDefault") or tags(v).get("bacalhau:cluster") == "demo" for v in vpcs)
    # the default route is in the VPC's main route table (it goes with the VPC): no table of our own
    tables = client.describe_route_tables(Filters=[{"Name": "vpc-id", "Values": [net["vpc_id"]]}])["RouteTables"]
    assert [t["RouteTableId"] for t in tables] == [net["route_table_id"]]
    assert any(a.get("Main") for a in tables[0]["Associations"])
    assert any(r.get("DestinationCidrBlock") == "0.0.0.0/0" and r.get("GatewayId") == net["internet_gateway_id"]
               for r in tables[0]["Routes"])


def test_security_group_opens_only_what_was_asked(aws, run_module):
    result = run_module("spot_cluster", cluster(regions=[{"region": "us-east-1", "count": 1,
                                                          "instance_types": ["t3.small"]}]))
    group_id = result["regions"]["us-east-1"]["network"]["security_group_id"]

    def rules():
        group = ec2("us-east-1").describe_security_groups(GroupIds=[group_id])["SecurityGroups"][0]
        out = set()
        for perm in group["IpPermissions"]:
            for r in perm.get("IpRanges", []):
                out.add((perm["IpProtocol"], perm.get("FromPort"), r["CidrIp"]))
            for r in perm.get("UserIdGroupPairs", []):
                out.add((perm["IpProtocol"], "self" if r["GroupId"] == group_id else r["GroupId"]))
        return out

    assert rules() == {("tcp", 22, "198.51.100.0/24"), ("tcp", 1234, "203.0.113.0/24"), ("-1", "self")}
    changed = run_module("spot_cluster", cluster(regions=[{"region": "us-east-1", "count": 1,
                                                           "instance_types": ["t3.small"]}],
                                                 ssh_cidrs=["192.0.2.0/24"], api_cidrs=[]))
    assert changed.changed
    assert rules() == {("tcp", 22, "192.0.2.0/24"), ("-1", "self")}


def test_nats_open_only_where_a_region_asks(aws, run_module):
    """The orchestrator's region opens 4222 to other regions' nodes; the others stay closed."""
    regions = [{"region": "us-east-1", "count": 1, "instance_types": ["t3.small"],
                "nats_cidrs": ["192.0.2.7/32"]},
               {"region": "eu-west-1", "count": 1, "instance_types": ["t3.small"]}]
    result = run_module("spot_cluster", cluster(regions=regions))
    assert not result.failed, result

    def nats_sources(region):
        group_id = result["regions"][region]["network"]["security_group_id"]
        group = ec2(region).describe_security_groups(GroupIds=[group_id])["SecurityGroups"][0]
        return {r["CidrIp"] for p in group["IpPermissions"] if p.get("FromPort") == 4222 for r in p["IpRanges"]}

    assert nats_sources("us-east-1") == {"192.0.2.7/32"}
    assert nats_sources("eu-west-1") == set()
    assert not run_module("spot_cluster", cluster(regions=regions)).changed


def test_absent_removes_one_cluster_and_nothing_else(aws, run_module):
    assert not run_module("spot_cluster", cluster("alpha")).failed
    assert not run_module("spot_cluster", cluster("alpha", role="orchestrator", market="on-demand",
                                                  regions=[{"region": "us-east-1", "count": 1,
                                                            "instance_types": ["t3.medium"]}])).failed
    assert not run_module("spot_cluster", cluster("beta", regions=[{"region": "us-east-1", "count": 1,
                                                                    "instance_types": ["t3.small"]}])).failed
    # somebody else's VPC and instance, untagged
    client = ec2("us-east-1")
    other_vpc = client.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    other = client.run_instances(ImageId=seed.ami_id("us-east-1", "24.04", "x86_64", seed.SERIALS[-1]),
                                 InstanceType="t3.micro", MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]

    # only the orchestrator: the compute nodes keep the network
    gone = run_module("spot_cluster", {"cluster_name": "alpha", "state": "absent", "role": "orchestrator",
                                       "regions": [{"region": "us-east-1"}]})
    assert gone.changed and not gone.failed
    assert not live("us-east-1", "alpha", "orchestrator") and len(live("us-east-1", "alpha", "compute")) == 3
    assert len(cluster_vpcs("us-east-1", "alpha")) == 1

    # the whole cluster, every region
    everything = run_module("spot_cluster", {"cluster_name": "alpha", "state": "absent",
                                             "regions": [{"region": "us-east-1"}, {"region": "eu-west-1"}]})
    assert everything.changed and not everything.failed, everything.get("msg")
    for region in ("us-east-1", "eu-west-1"):
        c = ec2(region)
        assert not live(region, "alpha") and not cluster_vpcs(region, "alpha")
        alpha = [{"Name": "tag:bacalhau:cluster", "Values": ["alpha"]}]
        assert not c.describe_subnets(Filters=alpha)["Subnets"]
        assert not c.describe_internet_gateways(Filters=alpha)["InternetGateways"]
        assert not c.describe_security_groups(Filters=alpha)["SecurityGroups"]
        assert not c.describe_route_tables(Filters=alpha)["RouteTables"]
        assert not c.describe_key_pairs(Filters=alpha)["KeyPairs"]
    # beta and the untagged resources are untouched
    assert len(live("us-east-1", "beta")) == 1 and len(cluster_vpcs("us-east-1", "beta")) == 1
    assert client.describe_vpcs(VpcIds=[other_vpc])["Vpcs"]
    assert client.describe_instances(InstanceIds=[other])["Reservations"][0]["Instances"][0]["State"]["Name"] == "running"

    # and again: nothing left to do
    again = run_module("spot_cluster", {"cluster_name": "alpha", "state": "absent",
                                        "regions": [{"region": "us-east-1"}, {"region": "eu-west-1"}]})
    assert not again.changed and not again.failed


def test_absent_without_regions_finds_them(aws, run_module):
    assert not run_module("spot_cluster", cluster(regions=[{"region": "eu-central-1", "count": 1,
                                                            "instance_types": ["t3.small"]}])).failed
    # (every enabled region is searched: slow in the emulator, so only once)
    gone = run_module("spot_cluster", {"cluster_name": "demo", "state": "absent"})
    assert gone.changed and list(gone["regions"]) == ["eu-central-1"]
    assert not live("eu-central-1", "demo") and not cluster_vpcs("eu-central-1", "demo")


def test_missing_credentials_say_what_to_do(aws, run_module, monkeypatch):
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    result = run_module("spot_cluster", cluster())
    assert result.failed
    assert "No AWS credentials" in result["msg"] and "AWS_PROFILE" in result["msg"]


def test_partial_capacity_goes_on_and_allow_partial_accepts_it(aws, run_module):
    # two free addresses in the emulator: EC2 launches two of the three asked for
    aws.address_pool(["192.0.2.11", "192.0.2.12"])
    args = cluster(regions=[{"region": "eu-west-1", "count": 3, "instance_types": ["t4g.small", "t4g.medium"]}])
    result = run_module("spot_cluster", args)
    assert result.failed and "launched 2 of the 3" in result["msg"]
    attempts = result["regions"]["eu-west-1"]["attempts"]
    assert (attempts[0]["requested"], attempts[0]["launched"]) == (3, 2)
    # the remaining one was tried in every other zone and type, asking for one
    assert {a["requested"] for a in attempts[1:]} == {1}
    assert len(attempts) == 6 and all(a["error_code"] == "InsufficientInstanceCapacity" for a in attempts[1:])
    assert len(live("eu-west-1", "demo")) == 2

    accepted = run_module("spot_cluster", dict(args, allow_partial=True))
    assert not accepted.failed and not accepted.changed
    assert accepted["regions"]["eu-west-1"]["shortfall"] and accepted["regions"]["eu-west-1"]["running"] == 2


def test_interrupted_instances_are_replaced(aws, run_module):
    args = cluster(regions=[{"region": "us-east-1", "count": 2, "instance_types": ["t3.small"]}])
    first = run_module("spot_cluster", args)
    victim = first["instances"][0]["instance_id"]
    aws.interrupt("us-east-1", [victim])
    again = run_module("spot_cluster", args)
    assert again.changed and len(again["regions"]["us-east-1"]["launched"]) == 1
    ids = {i["InstanceId"] for i in live("us-east-1", "demo")}
    assert len(ids) == 2 and victim not in ids


def test_network_is_repaired_not_duplicated(aws, run_module):
    args = cluster(regions=[{"region": "us-east-1", "count": 1, "instance_types": ["t3.small"],
                             "availability_zones": ["us-east-1a"]}])
    first = run_module("spot_cluster", args)
    net = first["regions"]["us-east-1"]["network"]
    client = ec2("us-east-1")
    # somebody deletes an (empty) subnet and detaches the gateway
    client.delete_subnet(SubnetId=net["subnet_ids"]["us-east-1f"])
    client.detach_internet_gateway(InternetGatewayId=net["internet_gateway_id"], VpcId=net["vpc_id"])
    client.delete_route(RouteTableId=net["route_table_id"], DestinationCidrBlock="0.0.0.0/0")
    repaired = run_module("spot_cluster", args)
    assert repaired.changed and not repaired.failed, repaired.get("msg")
    changes = repaired["regions"]["us-east-1"]["network_changes"]
    assert "create subnets in us-east-1f" in changes and "attach internet gateway" in changes
    routes = client.describe_route_tables(RouteTableIds=[net["route_table_id"]])["RouteTables"][0]["Routes"]
    assert any(r.get("DestinationCidrBlock") == "0.0.0.0/0" and r.get("GatewayId") == net["internet_gateway_id"]
               for r in routes)
    after = repaired["regions"]["us-east-1"]["network"]
    assert after["vpc_id"] == net["vpc_id"] and after["internet_gateway_id"] == net["internet_gateway_id"]
    assert len(cluster_vpcs("us-east-1", "demo")) == 1
    igw = client.describe_internet_gateways(InternetGatewayIds=[net["internet_gateway_id"]])["InternetGateways"][0]
    assert [a["VpcId"] for a in igw["Attachments"]] == [net["vpc_id"]]
    assert not run_module("spot_cluster", args).changed


def test_fallback_to_another_architecture_takes_its_image(aws, run_module):
    aws.capacity_error("us-east-1", instance_type="t3.small")
    args = cluster(regions=[{"region": "us-east-1", "count": 2, "instance_types": ["t3.small", "t4g.small"],
                             "availability_zones": ["us-east-1b"]}],
                   user_data="#cloud-config\nruncmd: [echo hello]\n", market="on-demand")
    result = run_module("spot_cluster", args)
    assert not result.failed, result.get("msg")
    arm_image = seed.ami_id("us-east-1", "24.04", "arm64", seed.SERIALS[-1])
    found = live("us-east-1", "demo")
    assert {(i["InstanceType"], i["ImageId"]) for i in found} == {("t4g.small", arm_image)}
    assert all("InstanceLifecycle" not in i for i in found)  # on-demand
    # on-demand instances are priced from the Price List service (the emulator's, since placement)
    from ansible_collections.bacalhau.aws_spot.plugins.module_utils._pricing import price_list as _price_list

    listed = _price_list.fetch_prices(boto3.client("pricing", region_name="us-east-1"), "us-east-1", ["t4g.small"])
    assert result["estimated_hourly_cost"] == pytest.approx(2 * listed["t4g.small"], abs=1e-6)
    import base64

    data = ec2("us-east-1").describe_instance_attribute(InstanceId=found[0]["InstanceId"], Attribute="userData")
    assert base64.b64decode(data["UserData"]["Value"]).decode().startswith("#cloud-config")


def test_instance_reclaimed_while_starting_is_reported(aws, run_module, monkeypatch):
    from ansible_collections.bacalhau.aws_spot.plugins.module_utils._cluster import instances as _spot_instances

    original = _spot_instances.wait_running

    def reclaim_first(client, ids, timeout):  # the spot capacity goes away during the launch
        aws.interrupt("us-east-1", ids[:1])
        return original(client, ids, timeout)

    monkeypatch.setattr(_spot_instances, "wait_running", reclaim_first)
    args = cluster(regions=[{"region": "us-east-1", "count": 2, "instance_types": ["t3.small"]}])
    result = run_module("spot_cluster", args)
    assert result.failed and "ended before running" in result["msg"] and "run again" in result["msg"]
    assert result["regions"]["us-east-1"]["running"] == 1
    monkeypatch.setattr(_spot_instances, "wait_running", original)
    again = run_module("spot_cluster", args)
    assert not again.failed and len(again["regions"]["us-east-1"]["launched"]) == 1
    assert len(live("us-east-1", "demo")) == 2


def test_throttled_launch_is_retried_without_launching_twice(aws, run_module):
    aws.throttle(3, operations=["RunInstances"])
    result = run_module("spot_cluster", cluster(regions=[{"region": "eu-west-1", "count": 3,
                                                          "instance_types": ["t4g.small"]}]))
    assert not result.failed, result.get("msg")
    log = [e for e in aws.calls()["log"] if e["operation"] == "RunInstances"]
    assert [e["fault"] for e in log] == [True, True, True, False]  # same attempt, backed off
    assert len(result["regions"]["eu-west-1"]["attempts"]) == 1
    assert len(live("eu-west-1", "demo")) == 3


@pytest.mark.parametrize("how", ["reset", "internal_error"])
def test_a_launch_whose_answer_is_lost_is_retried_without_launching_twice(aws, run_module, how):
    """EC2 launched, the answer never arrived: the retry must carry the same ClientToken, so
    that EC2 (and the emulator) answers that launch again instead of making a second one."""
    aws.drop_response(["RunInstances"], count=1, how=how)
    result = run_module("spot_cluster", cluster(regions=[{"region": "eu-west-1", "count": 3,
                                                          "instance_types": ["t4g.small"]}]))
    assert not result.failed, result.get("msg")
    log = [e for e in aws.calls()["log"] if e["operation"] == "RunInstances"]
    assert [e["fault"] for e in log] == [True, False]  # the lost answer, then the retry
    assert len(live("eu-west-1", "demo")) == 3
    assert sorted(result["regions"]["eu-west-1"]["launched"]) == sorted(i["InstanceId"] for i in live("eu-west-1", "demo"))
    assert not run_module("spot_cluster", cluster(regions=[{"region": "eu-west-1", "count": 3,
                                                            "instance_types": ["t4g.small"]}])).changed


def test_check_mode_reports_the_cost_of_what_exists(aws, run_module):
    args = cluster(regions=[{"region": "us-east-1", "count": 2, "instance_types": ["t3.small"]}])
    applied = run_module("spot_cluster", args)
    checked = run_module("spot_cluster", args, check_mode=True)
    assert not checked.changed
    assert checked["estimated_hourly_cost"] == pytest.approx(applied["estimated_hourly_cost"])
    assert checked["estimated_hourly_cost"] > 0


def test_a_route_table_of_ours_besides_the_main_one_is_not_used_and_goes_with_the_network(aws, run_module):
    # only the VPC's main route table routes the cluster; another one tagged as ours is left
    # alone by state=present, and deleted with the rest by state=absent
    args = cluster(regions=[{"region": "us-east-1", "count": 1, "instance_types": ["t3.small"],
                             "availability_zones": ["us-east-1a"]}])
    net = run_module("spot_cluster", args)["regions"]["us-east-1"]["network"]
    client = ec2("us-east-1")
    main = net["route_table_id"]
    own = client.create_route_table(VpcId=net["vpc_id"], TagSpecifications=[{"ResourceType": "route-table", "Tags": [
        {"Key": "bacalhau:managed-by", "Value": "bacalhau.aws_spot"}, {"Key": "bacalhau:cluster", "Value": "demo"}]}],
    )["RouteTable"]["RouteTableId"]
    client.create_route(RouteTableId=own, DestinationCidrBlock="0.0.0.0/0", GatewayId=net["internet_gateway_id"])
    for subnet_id in net["subnet_ids"].values():
        client.associate_route_table(RouteTableId=own, SubnetId=subnet_id)

    again = run_module("spot_cluster", args)
    assert not again.failed and not again.changed, again.get("network_changes")
    assert again["regions"]["us-east-1"]["network"]["route_table_id"] == main
    gone = run_module("spot_cluster", {"cluster_name": "demo", "state": "absent", "regions": [{"region": "us-east-1"}]})
    assert gone.changed and not gone.failed, gone.get("msg")
    assert f"deleted route table {own}" in gone["regions"]["us-east-1"]["network_deleted"]
    assert not cluster_vpcs("us-east-1", "demo")
    assert not client.describe_route_tables(Filters=[{"Name": "route-table-id", "Values": [own, main]}])["RouteTables"]


def test_instances_keep_credentials_from_containers_and_encrypt_with_the_given_key(aws, run_module):
    """IMDSv2 only with a hop limit of 1 (Docker's bridge is one hop more); the root volume takes kms_key_id."""
    key = boto3.client("kms", region_name="us-east-1").create_key(Description="bacalhau test")["KeyMetadata"]
    one = [{"region": "us-east-1", "count": 1, "instance_types": ["t3.small"]}]
    result = run_module("spot_cluster", cluster(regions=one, kms_key_id=key["Arn"]))
    assert not result.failed, result.get("msg")
    (instance,) = live("us-east-1", "demo")
    assert instance["MetadataOptions"]["HttpTokens"] == "required"
    assert instance["MetadataOptions"]["HttpPutResponseHopLimit"] == 1
    volume_id = instance["BlockDeviceMappings"][0]["Ebs"]["VolumeId"]
    volume = ec2("us-east-1").describe_volumes(VolumeIds=[volume_id])["Volumes"][0]
    assert volume["Encrypted"] and volume["KmsKeyId"] == key["Arn"]


def test_default_root_volume_key_is_the_accounts_ebs_default(aws, run_module):
    from ansible_collections.bacalhau.aws_spot.plugins.module_utils._cluster import instances as _spot_instances, spec as _spot_spec

    spec = _spot_spec.parse(cluster())
    params = _spot_instances.launch_parameters(spec, spec.regions[0], "t3.small", "ami-1", "subnet-1", "sg-1", 1)
    ebs = params["BlockDeviceMappings"][0]["Ebs"]
    assert ebs["Encrypted"] is True and "KmsKeyId" not in ebs  # EC2 then uses the EBS default key
    assert params["MetadataOptions"]["HttpPutResponseHopLimit"] == 1


@pytest.mark.parametrize("option, value", [("ssh_cidrs", ["0.0.0.0/0"]), ("api_cidrs", ["::/0"]),
                                           ("nats_cidrs", ["10.1.0.0/16", "0.0.0.0/0"])])
def test_a_rule_open_to_the_internet_is_warned_about(aws, run_module, option, value):
    one = [{"region": "us-east-1", "count": 1, "instance_types": ["t3.small"]}]
    result = run_module("spot_cluster", cluster(regions=one, **{option: value}), check_mode=True)
    assert not result.failed, result.get("msg")
    warnings = str(result.get("warnings"))
    assert "whole internet" in warnings and f"{option}: {value[-1]}" in warnings


def test_narrow_rules_are_not_warned_about(aws, run_module):
    # in-process module runs share ansible's list of warnings: start this one with an empty list
    from ansible.module_utils.common import warnings as ansible_warnings

    ansible_warnings._global_warnings.clear()
    one = [{"region": "us-east-1", "count": 1, "instance_types": ["t3.small"], "nats_cidrs": ["192.0.2.7/32"]}]
    result = run_module("spot_cluster", cluster(regions=one), check_mode=True)
    assert not result.failed and "whole internet" not in str(result.get("warnings"))


def test_a_failure_while_acting_does_not_claim_nothing_changed(aws, run_module, monkeypatch):
    from ansible_collections.bacalhau.aws_spot.plugins.module_utils._cluster import engine as _spot_cluster

    def broken(spec, plan):
        raise RuntimeError("something unexpected")

    monkeypatch.setattr(_spot_cluster, "apply_present", broken)
    result = run_module("spot_cluster", cluster(regions=[{"region": "us-east-1", "count": 1,
                                                          "instance_types": ["t3.small"]}]))
    assert result.failed
    assert "Nothing was created or changed" not in result["msg"]
    assert "something unexpected" in result["msg"] and "running again" in result["msg"]
    # while planning, nothing is changed, and it says so
    bad = run_module("spot_cluster", cluster(regions=[{"region": "us-east-1", "count": 1,
                                                       "instance_types": ["t3.small"], "availability_zones": ["us-east-1z"]}]))
    assert bad.failed and "Nothing was created or changed" in bad["msg"]


def test_drain_instance_ids_go_first_and_instance_tags_stay_off_the_network(aws, run_module):
    regions = [{"region": "eu-west-1", "count": 2, "instance_types": ["t3.small"]}]
    first = run_module("spot_cluster", {"cluster_name": "drain", "regions": regions})
    assert not first.failed, first
    oldest = sorted(i["instance_id"] for i in first["instances"])[0]
    grown = run_module("spot_cluster", {"cluster_name": "drain", "instance_tags": {"bacalhau:overflow-for": "x"},
                                        "regions": [dict(regions[0], count=3)]})
    new = [i for i in grown["instances"] if i["instance_id"] not in {j["instance_id"] for j in first["instances"]}]
    assert len(new) == 1 and new[0]["tags"]["bacalhau:overflow-for"] == "x"
    ec2 = boto3.client("ec2", region_name="eu-west-1")
    vpc_tags = {t["Key"] for v in ec2.describe_vpcs(Filters=[{"Name": "tag:bacalhau:cluster", "Values": ["drain"]}])["Vpcs"]
                for t in v.get("Tags", [])}
    assert "bacalhau:overflow-for" not in vpc_tags, "instance_tags must not reach the network"
    # without drain_instance_ids the newest would go; with it, the one named does
    shrunk = run_module("spot_cluster", {"cluster_name": "drain", "regions": regions, "drain_instance_ids": [oldest]})
    assert shrunk["regions"]["eu-west-1"]["terminated"] == [oldest], shrunk["regions"]["eu-west-1"]



def test_spread_single_node_falls_back_to_another_zone(aws, run_module):
    # one node, spread: its launch group is the best zone's pools only; when that zone turns out to
    # have no room (the scores said it would), the node goes to another zone of the region, not to
    # overflow or nowhere: zone fallback holds for a single node too
    aws.placement_score("us-east-1", 8)
    aws.spot_price("us-east-1", price=0.010, availability_zone="us-east-1a", instance_type="t3.small")
    aws.spot_price("us-east-1", price=0.015, availability_zone="us-east-1b", instance_type="t3.small")
    aws.capacity_error("us-east-1", availability_zone="us-east-1a", market="spot")
    args = cluster(regions=[{"region": "us-east-1", "count": 1, "instance_types": ["t3.small"],
                             "availability_zones": ["us-east-1a", "us-east-1b"]}],
                   availability_zone_strategy="spread")
    result = run_module("spot_cluster", args)
    assert not result.failed, result.get("msg")
    tried = [(a["instance_type"], a["availability_zone"], a["error_code"]) for a in result["regions"]["us-east-1"]["attempts"]]
    assert tried == [("t3.small", "us-east-1a", "InsufficientInstanceCapacity"), ("t3.small", "us-east-1b", None)]
    assert [i["Placement"]["AvailabilityZone"] for i in live("us-east-1", "demo")] == ["us-east-1b"]
