"""The offline AWS world behaves as the rest of the tests rely on."""
from __future__ import annotations

import boto3
import botocore.config
import botocore.exceptions
import pytest

from tests.emulator import seed


def ec2(region="us-east-1"):
    return boto3.client("ec2", region_name=region)


def test_environment_points_only_at_loopback(aws):
    import os

    assert os.environ["AWS_ENDPOINT_URL"].startswith("http://127.0.0.1:")
    assert os.environ["AWS_URL"] == os.environ["AWS_ENDPOINT_URL"]
    assert "AWS_PROFILE" not in os.environ


@pytest.mark.parametrize("region", ["us-east-1", "eu-central-1", "ap-southeast-2"])
def test_ubuntu_images_seeded_per_region(aws, region):
    images = ec2(region).describe_images(
        Owners=[seed.CANONICAL_OWNER_ID],
        Filters=[{"Name": "name", "Values": ["ubuntu/images/*ubuntu-noble-24.04-arm64-server-*"]}],
    )["Images"]
    assert len(images) == len(seed.SERIALS)
    assert {i["Architecture"] for i in images} == {"arm64"}
    newest = max(images, key=lambda i: i["CreationDate"])
    assert newest["ImageId"] == seed.ami_id(region, "24.04", "arm64", seed.SERIALS[-1])


def test_image_ids_differ_between_regions():
    assert seed.ami_id("us-east-1", "24.04", "x86_64", "20260212") != seed.ami_id(
        "eu-west-1", "24.04", "x86_64", "20260212"
    )


def test_canonical_ssm_parameters(aws):
    ssm = boto3.client("ssm", region_name="eu-west-1")
    name = seed.ssm_parameter_name("22.04", "x86_64")
    value = ssm.get_parameter(Name=name)["Parameter"]["Value"]
    assert value == seed.ami_id("eu-west-1", "22.04", "x86_64", seed.SERIALS[-1])


def test_instance_type_validation_on(aws):
    with pytest.raises(botocore.exceptions.ClientError) as err:
        ec2().describe_instance_types(InstanceTypes=["t9.nonsense"])
    assert err.value.response["Error"]["Code"] == "InvalidInstanceType"


def _subnet(client, az):
    vpc = client.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    return client.create_subnet(VpcId=vpc, CidrBlock="10.0.1.0/24", AvailabilityZone=az)["Subnet"]["SubnetId"]


def test_architecture_mismatch_refused_on_launch(aws):
    client = ec2()
    arm_image = seed.ami_id("us-east-1", "24.04", "arm64", seed.SERIALS[-1])
    with pytest.raises(botocore.exceptions.ClientError) as err:
        client.run_instances(ImageId=arm_image, InstanceType="t3.micro", MinCount=1, MaxCount=1)
    assert err.value.response["Error"]["Code"] == "InvalidParameterValue"
    assert "architecture" in err.value.response["Error"]["Message"]
    ok = client.run_instances(ImageId=arm_image, InstanceType="t4g.micro", MinCount=1, MaxCount=1)
    assert ok["Instances"][0]["Architecture"] in ("arm64", "x86_64")  # moto's own field


def test_capacity_fault_by_zone_and_type(aws):
    client = boto3.client("ec2", region_name="us-east-1",
                          config=botocore.config.Config(retries={"total_max_attempts": 1}))
    image = seed.ami_id("us-east-1", "24.04", "x86_64", seed.SERIALS[-1])
    subnet_a = _subnet(client, "us-east-1a")
    aws.capacity_error("us-east-1", availability_zone="us-east-1a", instance_type="t3.micro", market="spot")
    spot = {"MarketType": "spot"}
    with pytest.raises(botocore.exceptions.ClientError) as err:
        client.run_instances(ImageId=image, InstanceType="t3.micro", MinCount=1, MaxCount=1,
                             SubnetId=subnet_a, InstanceMarketOptions=spot)
    assert err.value.response["Error"]["Code"] == "InsufficientInstanceCapacity"
    # another type in the same zone, or on-demand, still launches
    client.run_instances(ImageId=image, InstanceType="t3.small", MinCount=1, MaxCount=1,
                         SubnetId=subnet_a, InstanceMarketOptions=spot)
    client.run_instances(ImageId=image, InstanceType="t3.micro", MinCount=1, MaxCount=1, SubnetId=subnet_a)


def test_throttling_then_recovery_and_call_counter(aws):
    client = boto3.client("ec2", region_name="us-west-2",
                          config=botocore.config.Config(retries={"total_max_attempts": 1}))
    aws.throttle(2, operations=["DescribeVpcs"])
    for _ in range(2):
        with pytest.raises(botocore.exceptions.ClientError) as err:
            client.describe_vpcs()
        assert err.value.response["Error"]["Code"] == "RequestLimitExceeded"
    client.describe_vpcs()
    calls = aws.calls()
    assert calls["by_operation"]["DescribeVpcs"] == 3
    assert calls["by_region"]["us-west-2"] == 3


def test_botocore_retries_ride_out_throttling(aws):
    aws.throttle(2)
    assert ec2("eu-west-1").describe_vpcs()["Vpcs"]  # default VPC; two 503s retried by botocore


def test_latency_is_added(aws):
    import time

    client = ec2()
    client.describe_vpcs()
    aws.latency(200)
    start = time.monotonic()
    client.describe_vpcs()
    assert time.monotonic() - start >= 0.2


def test_reset_forgets_resources_and_faults(aws):
    client = ec2()
    client.create_vpc(CidrBlock="10.9.0.0/16")
    aws.latency(50)
    aws.reset()
    assert aws.faults()["latency_ms"] == 0
    assert not [v for v in client.describe_vpcs()["Vpcs"] if v["CidrBlock"] == "10.9.0.0/16"]


def test_bad_fault_rejected(aws):
    import urllib.error

    with pytest.raises(urllib.error.HTTPError):
        aws.set_faults(capacity=[{"region": "us-east-1", "code": "NoSuchCode"}])


def test_address_pool_gives_test_host_addresses_and_limits_launches(aws):
    client = boto3.client("ec2", region_name="eu-west-1",
                          config=botocore.config.Config(retries={"total_max_attempts": 1}))
    image = seed.ami_id("eu-west-1", "24.04", "x86_64", seed.SERIALS[-1])
    vpc = client.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    subnet = client.create_subnet(VpcId=vpc, CidrBlock="10.0.1.0/24")["Subnet"]["SubnetId"]
    client.modify_subnet_attribute(SubnetId=subnet, MapPublicIpOnLaunch={"Value": True})
    pool = ["192.0.2.10", "192.0.2.11", "192.0.2.12"]  # TEST-NET-1: never dialled here
    aws.address_pool(pool)
    launched = client.run_instances(ImageId=image, InstanceType="t3.micro", MinCount=1, MaxCount=5,
                                    SubnetId=subnet)["Instances"]
    assert len(launched) == 3  # no more instances than free addresses
    described = client.describe_instances(InstanceIds=[i["InstanceId"] for i in launched])
    ips = sorted(i["PublicIpAddress"] for r in described["Reservations"] for i in r["Instances"])
    assert ips == pool
    with pytest.raises(botocore.exceptions.ClientError) as err:
        client.run_instances(ImageId=image, InstanceType="t3.micro", MinCount=1, MaxCount=1, SubnetId=subnet)
    assert err.value.response["Error"]["Code"] == "InsufficientInstanceCapacity"
    client.terminate_instances(InstanceIds=[launched[0]["InstanceId"]])
    again = client.run_instances(ImageId=image, InstanceType="t3.micro", MinCount=1, MaxCount=1, SubnetId=subnet)
    again_ip = client.describe_instances(InstanceIds=[again["Instances"][0]["InstanceId"]])[
        "Reservations"][0]["Instances"][0]["PublicIpAddress"]
    assert again_ip in pool


def test_spot_interruption(aws):
    client = ec2("us-east-2")
    image = seed.ami_id("us-east-2", "24.04", "x86_64", seed.SERIALS[-1])
    instance = client.run_instances(ImageId=image, InstanceType="t3.micro", MinCount=1, MaxCount=1,
                                    InstanceMarketOptions={"MarketType": "spot"})["Instances"][0]
    aws.interrupt("us-east-2", [instance["InstanceId"]])
    got = client.describe_instances(InstanceIds=[instance["InstanceId"]])["Reservations"][0]["Instances"][0]
    assert got["State"]["Name"] == "terminated"
    assert got["StateReason"]["Code"] == "Server.SpotInstanceTermination"


def test_spot_prices_are_plausible_and_differ(aws):
    history = ec2("us-east-1").describe_spot_price_history(InstanceTypes=["t3.small", "m5.xlarge", "t4g.small"],
                                                           ProductDescriptions=["Linux/UNIX"])["SpotPriceHistory"]
    prices = {(h["InstanceType"], h["AvailabilityZone"]): float(h["SpotPrice"]) for h in history}
    assert prices and all(0.001 < p < 1.0 for p in prices.values())
    small = [p for (t, _z), p in prices.items() if t == "t3.small"]
    large = [p for (t, _z), p in prices.items() if t == "m5.xlarge"]
    assert max(small) < min(large)
    assert len(set(small)) > 1  # zones differ


def test_expired_credentials_as_aws_answers(aws):
    aws.expire_credentials()
    for call, code in ((lambda: boto3.client("sts", region_name="us-east-1").get_caller_identity(), "ExpiredToken"),
                       (lambda: ec2().describe_vpcs(), "RequestExpired")):
        with pytest.raises(botocore.exceptions.ClientError) as err:
            call()
        assert err.value.response["Error"]["Code"] == code
    aws.expire_credentials(False)
    assert ec2().describe_vpcs()["Vpcs"]


def test_launch_interfaces_tagged_and_gone_with_the_instance_as_on_ec2(aws):
    c = ec2()
    subnet = _subnet(c, "us-east-1a")
    tags = [{"Key": "bacalhau:cluster", "Value": "demo"}]
    launched = c.run_instances(
        ImageId=seed.ami_id("us-east-1", "24.04", "x86_64", seed.SERIALS[-1]), InstanceType="t3.micro",
        MinCount=1, MaxCount=1, SubnetId=subnet,
        TagSpecifications=[{"ResourceType": "network-interface", "Tags": tags}])["Instances"][0]
    primary = launched["NetworkInterfaces"][0]["NetworkInterfaceId"]
    eni = c.describe_network_interfaces(NetworkInterfaceIds=[primary])["NetworkInterfaces"][0]
    assert eni["TagSet"] == tags  # EC2 applies the launch's network-interface tags
    # a second interface (not deleted with the instance) is detached by the termination
    second = c.create_network_interface(SubnetId=subnet)["NetworkInterface"]["NetworkInterfaceId"]
    c.attach_network_interface(NetworkInterfaceId=second, InstanceId=launched["InstanceId"], DeviceIndex=1)
    c.terminate_instances(InstanceIds=[launched["InstanceId"]])
    left = {e["NetworkInterfaceId"]: e["Status"] for e in c.describe_network_interfaces(
        Filters=[{"Name": "subnet-id", "Values": [subnet]}])["NetworkInterfaces"]}
    assert left == {second: "available"}  # the primary went with the instance


def _launch(client, token, **kw):
    args = dict(ImageId=seed.ami_id(client.meta.region_name, "24.04", "x86_64", seed.SERIALS[-1]),
                InstanceType="t3.micro", MinCount=1, MaxCount=2, ClientToken=token)
    args.update(kw)
    return client.run_instances(**args)


def _all_instances(client):
    return [i["InstanceId"] for r in client.describe_instances()["Reservations"] for i in r["Instances"]]


def test_client_token_makes_a_repeated_launch_answer_the_first_reservation(aws):
    client = ec2()
    first = _launch(client, "token-1")
    again = _launch(client, "token-1")
    assert again["ReservationId"] == first["ReservationId"]
    assert [i["InstanceId"] for i in again["Instances"]] == [i["InstanceId"] for i in first["Instances"]]
    assert sorted(_all_instances(client)) == sorted(i["InstanceId"] for i in first["Instances"])
    # another token launches again; the same token in another region is another request (as on EC2)
    assert _launch(client, "token-2")["ReservationId"] != first["ReservationId"]
    assert len(_all_instances(client)) == 4
    other = ec2("eu-west-1")
    assert _launch(other, "token-1", ImageId=seed.ami_id("eu-west-1", "24.04", "x86_64", seed.SERIALS[-1]))
    assert len(_all_instances(other)) == 2


def test_client_token_with_other_parameters_is_a_mismatch(aws):
    client = ec2()
    _launch(client, "token-1")
    with pytest.raises(botocore.exceptions.ClientError) as err:
        _launch(client, "token-1", MaxCount=3)
    assert err.value.response["Error"]["Code"] == "IdempotentParameterMismatch"
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert len(_all_instances(client)) == 2


def test_client_token_of_a_failed_launch_may_be_used_again(aws):
    aws.capacity_error("us-east-1", instance_type="t3.micro", count=1)
    no_retry = botocore.config.Config(retries={"total_max_attempts": 1})
    client = boto3.client("ec2", region_name="us-east-1", config=no_retry)
    with pytest.raises(botocore.exceptions.ClientError) as err:
        _launch(client, "token-1")
    assert err.value.response["Error"]["Code"] == "InsufficientInstanceCapacity"
    assert len(_launch(client, "token-1")["Instances"]) == 2


@pytest.mark.parametrize("how, raised", [("reset", botocore.exceptions.ConnectionClosedError),
                                         ("internal_error", botocore.exceptions.ClientError)])
def test_dropped_response_after_the_launch_happened(aws, how, raised):
    aws.drop_response(["RunInstances"], count=1, how=how)
    client = boto3.client("ec2", region_name="us-east-1", config=botocore.config.Config(retries={"total_max_attempts": 1}))
    with pytest.raises(raised):
        _launch(client, "token-1")
    assert len(_all_instances(client)) == 2  # it launched all the same
    log = [c for c in aws.calls()["log"] if c["operation"] == "RunInstances"]
    assert [c["fault"] for c in log] == [True]
    # the retry with the same token gets the launch that happened, and launches nothing
    assert len(_launch(client, "token-1")["Instances"]) == 2
    assert len(_all_instances(client)) == 2
    assert aws.faults()["drop_response"]["count"] == 0
    # without a token, the retry is a second launch: what a client without a stable token gets
    aws.drop_response(["RunInstances"], count=1, how=how)
    with pytest.raises(raised):
        _launch(client, "token-2")
    _launch(client, "token-3")
    assert len(_all_instances(client)) == 6
