"""The emulator's clock (tests/emulator/clock.py): moved forward on request, read by launch
times, the spot price history, notices and reclaims; interruptions at chosen emulated times;
terminated instances listed for an hour after they end, as on EC2. Then the pool history, the
cool-down and the cost report over that world, without waiting."""
from __future__ import annotations

import datetime
import json
import urllib.error

import boto3
import botocore.config
import pytest

from ansible_collections.bacalhau.aws_spot.plugins.module_utils._placement import expected_cost as ec
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._placement.history import History
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._placement.pools import Pool
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._pricing import cost_report as cr
from tests.emulator import seed

REGION = "eu-west-1"
ONE_ATTEMPT = botocore.config.Config(retries={"total_max_attempts": 1}, user_agent_extra="bacalhau.aws_spot")


def ec2():
    return boto3.client("ec2", region_name=REGION, config=ONE_ATTEMPT)


def launch(count=1, zone="b", itype="t3.medium", market="spot"):
    client = ec2()
    image = seed.ami_id(REGION, "24.04", "x86_64", seed.SERIALS[-1])
    vpcs = client.describe_vpcs(Filters=[{"Name": "cidr", "Values": ["10.0.0.0/16"]}])["Vpcs"]
    vpc = vpcs[0]["VpcId"] if vpcs else client.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    cidr = {"a": "10.0.1.0/24", "b": "10.0.2.0/24", "c": "10.0.3.0/24"}[zone]
    subnets = client.describe_subnets(Filters=[{"Name": "cidr-block", "Values": [cidr]}])["Subnets"]
    subnet = subnets[0]["SubnetId"] if subnets else client.create_subnet(
        VpcId=vpc, CidrBlock=cidr, AvailabilityZone=f"{REGION}{zone}")["Subnet"]["SubnetId"]
    extra = {"InstanceMarketOptions": {"MarketType": market}} if market else {}
    return [i["InstanceId"] for i in client.run_instances(
        ImageId=image, InstanceType=itype, MinCount=count, MaxCount=count, SubnetId=subnet,
        TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": "bacalhau:role", "Value": "compute"}]}],
        **extra)["Instances"]]


def listed():
    """Every instance DescribeInstances lists (no ids), any state, as the engine's read sees them."""
    pages = ec2().get_paginator("describe_instances").paginate().build_full_result()["Reservations"]
    return {i["InstanceId"]: i for r in pages for i in r["Instances"]}


def by_id(iid):
    return ec2().describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]


def now_of(aws):
    return datetime.datetime.fromisoformat(aws.clock()["now"])


def test_advancing_the_clock_moves_launch_times_and_prices_and_reset_brings_it_back(aws):
    start = now_of(aws)
    assert abs((start - datetime.datetime.now(datetime.timezone.utc)).total_seconds()) < 5
    [first] = launch()
    moved = aws.advance(3 * 24 * 3600)
    assert moved["offset_seconds"] == pytest.approx(3 * 24 * 3600, abs=1) and moved["done"] == []
    [second] = launch()
    gap = by_id(second)["LaunchTime"] - by_id(first)["LaunchTime"]
    assert abs(gap.total_seconds() - 3 * 24 * 3600) < 60
    # DescribeSpotPriceHistory ends at the emulated now: its newest entry is from the emulated days
    history = ec2().describe_spot_price_history(InstanceTypes=["t3.medium"], ProductDescriptions=["Linux/UNIX"],
                                                AvailabilityZone=f"{REGION}b")["SpotPriceHistory"]
    assert max(h["Timestamp"] for h in history) > start + datetime.timedelta(days=2)
    with pytest.raises(urllib.error.HTTPError) as refused:
        aws.advance(-1)
    assert "only moves forward" in json.loads(refused.value.read())["error"]
    aws.reset()
    assert abs(aws.clock()["offset_seconds"]) < 1 and aws.clock()["scheduled"] == []


def test_an_interruption_at_a_chosen_time_happens_when_the_clock_gets_there(aws):
    [iid] = launch()
    start = now_of(aws)
    scheduled = aws.interrupt(REGION, [iid], after_seconds=1800)
    assert scheduled["scheduled"]["what"].startswith("interrupt")
    assert [e["what"] for e in aws.clock()["scheduled"]] == [f"interrupt {iid} in {REGION}"]
    aws.advance(1790)
    assert by_id(iid)["State"]["Name"] == "running"
    done = aws.advance(20)["done"]
    assert [e["what"] for e in done] == [f"interrupt {iid} in {REGION}"]
    got = by_id(iid)
    assert got["State"]["Name"] == "terminated" and got["StateReason"]["Code"] == "Server.SpotInstanceTermination"
    assert abs((datetime.datetime.fromisoformat(done[0]["at"]) - start).total_seconds() - 1800) < 5


def test_a_notice_is_reclaimed_when_the_clock_passes_it_without_waiting(aws):
    [iid] = launch()
    notice = aws.interrupt(REGION, [iid], notice_seconds=120)
    assert by_id(iid)["State"]["Name"] == "running"
    reclaim = datetime.datetime.strptime(notice["reclaim_at"], "%Y-%m-%dT%H:%M:%SZ")
    done = aws.advance(121)["done"]
    assert [e["what"] for e in done] == [f"reclaim {iid} in {REGION}"]
    assert by_id(iid)["State"]["Name"] == "terminated"
    assert abs((datetime.datetime.fromisoformat(done[0]["at"]).replace(tzinfo=None) - reclaim).total_seconds()) < 2


def test_terminated_instances_are_listed_for_an_hour_after_they_end(aws):
    gone, kept = launch(2)
    ec2().terminate_instances(InstanceIds=[gone])
    reason = listed()[gone]["StateTransitionReason"]
    assert reason.startswith("User initiated (") and str(now_of(aws).year) in reason
    aws.advance(3000)
    assert set(listed()) == {gone, kept}
    aws.advance(700)
    assert set(listed()) == {kept}
    assert by_id(gone)["State"]["Name"] == "terminated"  # by id it is still answered


def test_timed_spot_prices_make_a_known_price_history(aws):
    start = now_of(aws).replace(microsecond=0)
    t1, t2 = start + datetime.timedelta(hours=1), start + datetime.timedelta(hours=3)
    aws.set_market(spot_prices=[
        {"region": REGION, "availability_zone": f"{REGION}a", "instance_type": "t3.medium", "price": 0.01},
        {"region": REGION, "availability_zone": f"{REGION}a", "instance_type": "t3.medium", "price": 0.02,
         "from": t1.isoformat(), "until": t2.isoformat()},
    ])
    aws.advance(4 * 3600)
    history = ec2().describe_spot_price_history(InstanceTypes=["t3.medium"], AvailabilityZone=f"{REGION}a",
                                                ProductDescriptions=["Linux/UNIX"], StartTime=start)["SpotPriceHistory"]
    points = sorted((h["Timestamp"], float(h["SpotPrice"])) for h in history)
    assert [(t, p) for t, p in points if t >= start] == [(t1, 0.02), (t2, 0.01)]
    assert points[0][0] <= start and points[0][1] == 0.01  # the price in force at StartTime first


def test_a_cool_down_and_a_cost_report_over_the_emulated_world_without_waiting(aws):
    """Two pools; a node in the cheaper one is taken back at a chosen time: the pool history
    records it, placement avoids that pool for the cool-down and chooses it again after; the
    cost report over the emulator's price history matches the hand computation."""
    start = now_of(aws).replace(microsecond=0)
    for zone, price in (("a", 0.0100), ("b", 0.0120)):
        aws.set_market(spot_prices=[{"region": REGION, "availability_zone": f"{REGION}{zone}",
                                     "instance_type": "t3.medium", "price": price}])
    aws.on_demand_price("t3.medium", 0.0416, region=REGION)
    [cheap] = launch(zone="a")
    [other] = launch(zone="b")
    history = History()
    history.observe({REGION: list(listed().values())}, now_of(aws))
    aws.interrupt(REGION, [cheap], notice_seconds=120, after_seconds=2 * 3600)
    aws.advance(2 * 3600 + 125)
    history.observe({REGION: list(listed().values())}, now_of(aws))
    record = history.records[cheap]
    assert record["end_reason"] == "spot-interruption"
    pools = [Pool(REGION, "t3.medium", f"{REGION}{z}", spot_price=p, zone_score=7) for z, p in (("a", 0.0100),
                                                                                                    ("b", 0.0120))]
    soon = ec.rerank(pools, history, now_of(aws))
    assert [(r.pool.zone, r.verdict) for r in soon] == [(f"{REGION}b", "candidate"), (f"{REGION}a", "avoided")]
    aws.advance(30 * 60)
    later = ec.rerank(pools, history, now_of(aws))
    assert [r.pool.zone for r in later] == [f"{REGION}a", f"{REGION}b"]
    # the cost: 'cheap' ran 2 h 2 min at 0.01 (taken back after its first hour: paid);
    # 'other' runs on at 0.012 until now
    ended = datetime.datetime.fromisoformat(record["end_time"].replace("Z", "+00:00"))
    now = now_of(aws)
    lives = history.as_list()
    prices, errors = cr.read_price_history({REGION: ec2()}, lives, now)
    assert errors == {} and set(prices) == {(REGION, f"{REGION}a", "t3.medium"), (REGION, f"{REGION}b", "t3.medium")}
    cost = cr.report(lives, prices, {(REGION, "t3.medium"): 0.0416}, now)
    cheap_hours = (ended - datetime.datetime.fromisoformat(record["launch_time"].replace("Z", "+00:00"))
                   ).total_seconds() / 3600
    other_hours = (now - by_id(other)["LaunchTime"]).total_seconds() / 3600
    assert round(cost["total"]["paid_usd"], 2) == round(cheap_hours * 0.01 + other_hours * 0.012, 2)
    assert cost["total"]["paid_usd"] == pytest.approx(cheap_hours * 0.01 + other_hours * 0.012, abs=1e-4)
    assert cost["total"]["interruptions"] == 1
    calls = [c for c in aws.calls()["log"] if c["operation"] == "DescribeSpotPriceHistory"
             and c["agent"] == "bacalhau.aws_spot"]
    assert len(calls) == 2  # one per pool (and window)
    # the means over the last 6 h that rebalance compares (one call for the region)
    means, errors = cr.read_mean_prices({REGION: ec2()}, {REGION: ["t3.medium"]}, now)
    assert errors == {}
    assert means[(REGION, f"{REGION}a", "t3.medium")] == pytest.approx(0.0100)
    assert means[(REGION, f"{REGION}b", "t3.medium")] == pytest.approx(0.0120)


def test_a_history_rebuilt_after_a_corrupt_file_recovers_what_ec2_still_lists(aws, tmp_path):
    from ansible_collections.bacalhau.aws_spot.plugins.module_utils._placement import history as ph

    early, late, running = launch(3)
    aws.interrupt(REGION, [early])
    aws.advance(2 * 3600)  # early's end is now out of EC2's listings
    aws.interrupt(REGION, [late])
    aws.advance(600)
    path = tmp_path / "c1" / ph.HISTORY_FILE
    path.parent.mkdir()
    path.write_text('{"version": 1, "records": [')  # a broken file
    history, warning = ph.load(str(path), expect_existing=True)
    assert "rebuilt" in warning
    history.observe({REGION: list(listed().values())}, now_of(aws), complete_regions=[REGION])
    ph.save(str(path), history)
    again, warning = ph.load(str(path))
    assert warning is None
    assert {i: r["end_reason"] for i, r in again.records.items()} == {late: "spot-interruption", running: None}
