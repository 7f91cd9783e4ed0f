"""The emulator's spot interruption notices and rebalance recommendations, as the test hosts'
IMDS stand-ins read them (tests/emulator/imds.py), and as EC2's API shows the instances."""
from __future__ import annotations

import json
import time
from datetime import datetime, timezone

import boto3
import pytest

from tests.emulator import seed

REGION = "eu-west-1"
POOL = ["192.0.2.21", "192.0.2.22"]  # TEST-NET-1: never dialled, only names the files


def launch(aws, market: str | None = "spot", count: int = 1) -> list[dict]:
    client = boto3.client("ec2", region_name=REGION)
    image = seed.ami_id(REGION, "24.04", "x86_64", seed.SERIALS[-1])
    vpc = client.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    subnet = client.create_subnet(VpcId=vpc, CidrBlock="10.0.1.0/24", AvailabilityZone=f"{REGION}b")["Subnet"]["SubnetId"]
    client.modify_subnet_attribute(SubnetId=subnet, MapPublicIpOnLaunch={"Value": True})
    extra = {"InstanceMarketOptions": {"MarketType": market}} if market else {}
    return client.run_instances(ImageId=image, InstanceType="t3.medium", MinCount=count, MaxCount=count,
                                SubnetId=subnet, **extra)["Instances"]


def describe(instance_id: str) -> dict:
    client = boto3.client("ec2", region_name=REGION)
    return client.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]


def document(tmp_path, address: str) -> dict:
    return json.loads((tmp_path / f"{address}.json").read_text())


@pytest.fixture
def bound(aws, tmp_path):
    aws.address_pool(POOL)
    aws.imds(str(tmp_path))
    return aws


def test_launch_writes_each_test_hosts_imds_document(bound, tmp_path):
    [spot] = launch(bound)
    [ondemand] = launch(bound, market=None)
    docs = {document(tmp_path, describe(i["InstanceId"])["PublicIpAddress"])["meta-data"]["instance-id"]:
            document(tmp_path, describe(i["InstanceId"])["PublicIpAddress"]) for i in (spot, ondemand)}
    doc = docs[spot["InstanceId"]]
    assert doc["state"] == "running"
    assert {k: doc["meta-data"][k] for k in ("instance-type", "instance-life-cycle", "placement/region",
                                             "placement/availability-zone")} == {
        "instance-type": "t3.medium", "instance-life-cycle": "spot", "placement/region": REGION,
        "placement/availability-zone": f"{REGION}b"}
    assert "spot/instance-action" not in doc["meta-data"]  # 404 until a notice
    assert docs[ondemand["InstanceId"]]["meta-data"]["instance-life-cycle"] == "on-demand"
    assert sorted(bound.imds()["instances"]) == sorted(POOL)


def test_interrupt_with_notice_shows_it_at_once_and_reclaims_when_the_time_is_up(bound, tmp_path):
    [inst] = launch(bound)
    iid = inst["InstanceId"]
    address = describe(iid)["PublicIpAddress"]
    t0 = datetime.now(timezone.utc).replace(microsecond=0)
    res = bound.interrupt(REGION, [iid], notice_seconds=3)
    assert res["interrupted"] == [iid] and res["in_imds"] == [iid]
    action = document(tmp_path, address)["meta-data"]["spot/instance-action"]
    assert set(action) == {"action", "time"} and action["action"] == "terminate"
    when = datetime.strptime(action["time"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
    assert 2 <= (when - t0).total_seconds() <= 4
    # during the notice EC2 still shows the instance running, without a state reason
    got = describe(iid)
    assert got["State"]["Name"] == "running" and not got.get("StateReason", {}).get("Code")
    assert document(tmp_path, address)["state"] == "running"
    deadline = time.time() + 10
    while describe(iid)["State"]["Name"] != "terminated" and time.time() < deadline:
        time.sleep(0.2)
    got = describe(iid)
    assert got["State"]["Name"] == "terminated"
    assert got["StateReason"] == {"Code": "Server.SpotInstanceTermination",
                                  "Message": "Server.SpotInstanceTermination: Spot instance termination"}
    assert datetime.now(timezone.utc) >= when
    doc = document(tmp_path, address)
    assert doc["state"] == "terminated" and doc["state-reason"] == "Server.SpotInstanceTermination"


def test_interrupt_without_notice_reclaims_at_once(bound, tmp_path):
    [inst] = launch(bound)
    address = describe(inst["InstanceId"])["PublicIpAddress"]
    bound.interrupt(REGION, [inst["InstanceId"]])
    assert describe(inst["InstanceId"])["StateReason"]["Code"] == "Server.SpotInstanceTermination"
    assert document(tmp_path, address)["state"] == "terminated"


def test_terminating_an_instance_ends_its_imds_document_too(bound, tmp_path):
    [inst] = launch(bound)
    address = describe(inst["InstanceId"])["PublicIpAddress"]
    boto3.client("ec2", region_name=REGION).terminate_instances(InstanceIds=[inst["InstanceId"]])
    doc = document(tmp_path, address)
    assert doc["state"] == "terminated" and doc["state-reason"] == "Client.UserInitiatedShutdown"


def test_rebalance_recommendation_shows_in_imds_and_changes_nothing_else(bound, tmp_path):
    [inst] = launch(bound)
    address = describe(inst["InstanceId"])["PublicIpAddress"]
    res = bound.rebalance(REGION, [inst["InstanceId"]])
    rec = document(tmp_path, address)["meta-data"]["events/recommendations/rebalance"]
    assert rec == res["recommendation"] and set(rec) == {"noticeTime"}
    assert "spot/instance-action" not in document(tmp_path, address)["meta-data"]
    assert describe(inst["InstanceId"])["State"]["Name"] == "running"


def test_unknown_instance_is_refused_and_reset_forgets_notices_and_files(bound, tmp_path):
    import urllib.error

    with pytest.raises(urllib.error.HTTPError) as err:
        bound.interrupt(REGION, ["i-0000000000000dead"], notice_seconds=5)
    assert err.value.code == 400
    [inst] = launch(bound)
    bound.interrupt(REGION, [inst["InstanceId"]], notice_seconds=1)
    bound.reset()
    assert list(tmp_path.glob("*.json")) == []
    assert bound.imds() == {"state_dir": None, "instances": {}}
    time.sleep(1.5)  # the cancelled reclaim does not fire into the new world
