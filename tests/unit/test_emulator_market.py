"""The emulator's spot market, through boto3: offerings per zone, spot price history,
placement scores, instance types from requirements, and the Price List service."""
from __future__ import annotations

import datetime
import json
import urllib.error

import boto3
import botocore.config
import botocore.exceptions
import pytest

from tests.emulator import seed

ONE_ATTEMPT = botocore.config.Config(retries={"total_max_attempts": 1})
COMMON = ["t3.micro", "t3.small", "t4g.small", "m5.large"]
NOW = datetime.datetime.now(datetime.timezone.utc)
LINUX_ON_DEMAND = {"operatingSystem": "Linux", "tenancy": "Shared", "preInstalledSw": "NA", "capacitystatus": "Used"}


def ec2(region="us-east-1"):
    return boto3.client("ec2", region_name=region, config=ONE_ATTEMPT)


def pricing():
    return boto3.client("pricing", region_name="us-east-1", config=ONE_ATTEMPT)


def offered_zones(region, itype, client=None):
    offers = (client or ec2(region)).describe_instance_type_offerings(
        LocationType="availability-zone", Filters=[{"Name": "instance-type", "Values": [itype]}])
    return {o["Location"] for o in offers["InstanceTypeOfferings"]}


def zones_of(region):
    return [z["ZoneName"] for z in ec2(region).describe_availability_zones()["AvailabilityZones"]]


def history(region="us-east-1", **kw):
    pages = ec2(region).get_paginator("describe_spot_price_history").paginate(**kw)
    return pages.build_full_result()["SpotPriceHistory"]


def current_prices(region, itype):
    return {h["AvailabilityZone"]: float(h["SpotPrice"])
            for h in history(region, InstanceTypes=[itype], ProductDescriptions=["Linux/UNIX"], StartTime=NOW)}


def scores(client=None, **kw):
    pages = (client or ec2()).get_paginator("get_spot_placement_scores").paginate(**kw)
    return pages.build_full_result()["SpotPlacementScores"]


def on_demand_products(region, itype, **attributes):
    filters = [{"Type": "TERM_MATCH", "Field": k, "Value": v}
               for k, v in dict({"instanceType": itype, "regionCode": region}, **attributes).items()]
    pages = pricing().get_paginator("get_products").paginate(ServiceCode="AmazonEC2", Filters=filters)
    return [json.loads(p) for p in pages.build_full_result()["PriceList"]]


def usd(product):
    (term,) = product["terms"]["OnDemand"].values()
    (dimension,) = term["priceDimensions"].values()
    return float(dimension["pricePerUnit"]["USD"])


def _subnet(client, az):
    vpc = client.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    return client.create_subnet(VpcId=vpc, CidrBlock=f"10.0.{ord(az[-1])}.0/24", AvailabilityZone=az)["Subnet"]["SubnetId"]


IMAGE = seed.ami_id("us-east-1", "24.04", "x86_64", seed.SERIALS[-1])


# --------------------------------------------------------------------------- offerings
@pytest.mark.parametrize("region", ["us-east-1", "us-west-2", "eu-west-1"])
def test_common_test_types_are_offered_in_every_zone(aws, region):
    zones = set(zones_of(region))
    for itype in COMMON:
        assert offered_zones(region, itype) == zones, itype


def test_some_types_are_missing_in_some_zones(aws):
    # AWS's own snapshot (moto's): us-east-1e (use1-az3) has no m5 instances
    zones = offered_zones("us-east-1", "m5.8xlarge")
    assert "us-east-1e" not in zones and "us-east-1a" in zones
    by_id = ec2().describe_instance_type_offerings(
        LocationType="availability-zone-id", Filters=[{"Name": "instance-type", "Values": ["m5.8xlarge"]}])
    assert "use1-az3" not in {o["Location"] for o in by_id["InstanceTypeOfferings"]}
    region = ec2().describe_instance_type_offerings(
        LocationType="region", Filters=[{"Name": "instance-type", "Values": ["m5.8xlarge"]}])
    assert [o["Location"] for o in region["InstanceTypeOfferings"]] == ["us-east-1"]


def test_offerings_filter_wildcards_and_pages(aws):
    client = ec2()
    first = client.describe_instance_type_offerings(
        LocationType="availability-zone", MaxResults=5,
        Filters=[{"Name": "instance-type", "Values": ["t3.*"]}, {"Name": "location", "Values": ["us-east-1a"]}])
    assert len(first["InstanceTypeOfferings"]) == 5 and first.get("NextToken")
    everything = client.get_paginator("describe_instance_type_offerings").paginate(
        LocationType="availability-zone",
        Filters=[{"Name": "instance-type", "Values": ["t3.*"]}, {"Name": "location", "Values": ["us-east-1a"]}],
        PaginationConfig={"PageSize": 5}).build_full_result()["InstanceTypeOfferings"]
    assert {o["InstanceType"] for o in everything} == {
        "t3.nano", "t3.micro", "t3.small", "t3.medium", "t3.large", "t3.xlarge", "t3.2xlarge"}
    assert {o["Location"] for o in everything} == {"us-east-1a"}


def test_withdrawn_type_is_gone_from_the_zone_and_its_launch_unsupported(aws):
    client = ec2()
    aws.offering("us-east-1", False, availability_zone="us-east-1b", instance_type="t3.small")
    assert "us-east-1b" not in offered_zones("us-east-1", "t3.small")
    assert "us-east-1b" in offered_zones("us-east-1", "t3.micro")  # only that type
    with pytest.raises(botocore.exceptions.ClientError) as err:
        client.run_instances(ImageId=IMAGE, InstanceType="t3.small", MinCount=1, MaxCount=1,
                             SubnetId=_subnet(client, "us-east-1b"))
    assert err.value.response["Error"]["Code"] == "Unsupported"
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert err.value.response["Error"]["Message"] == (
        "Your requested instance type (t3.small) is not supported in your requested Availability Zone "
        "(us-east-1b). Please retry your request by not specifying an Availability Zone or choosing "
        "us-east-1a, us-east-1c, us-east-1d, us-east-1e, us-east-1f.")
    # the same type in another zone, by Placement, still launches
    client.run_instances(ImageId=IMAGE, InstanceType="t3.small", MinCount=1, MaxCount=1,
                         Placement={"AvailabilityZone": "us-east-1c"})


def test_seeded_gap_refuses_a_launch_as_ec2_does(aws):
    client = ec2()
    with pytest.raises(botocore.exceptions.ClientError) as err:
        client.run_instances(ImageId=IMAGE, InstanceType="m5.8xlarge", MinCount=1, MaxCount=1,
                             Placement={"AvailabilityZone": "us-east-1e"})
    assert err.value.response["Error"]["Code"] == "Unsupported"
    assert "(us-east-1e)" in err.value.response["Error"]["Message"]


def test_an_emptied_region_offers_nothing_prices_nothing_and_scores_one(aws):
    aws.offering("eu-west-1", False)
    offers = ec2("eu-west-1").describe_instance_type_offerings(LocationType="availability-zone")
    assert offers["InstanceTypeOfferings"] == []
    assert history("eu-west-1", InstanceTypes=["t3.small"], StartTime=NOW) == []
    found = scores(InstanceTypes=["t3.small"], TargetCapacity=2, RegionNames=["eu-west-1", "us-east-1"])
    assert {s["Region"]: s["Score"] for s in found}["eu-west-1"] == 1
    assert on_demand_products("eu-west-1", "t3.small", **LINUX_ON_DEMAND) == []
    aws.clear_market()
    assert offered_zones("eu-west-1", "t3.small") == set(zones_of("eu-west-1"))


# --------------------------------------------------------------------------- spot prices
def test_spot_prices_vary_by_zone(aws):
    prices = current_prices("us-east-1", "t3.small")
    assert set(prices) == set(zones_of("us-east-1"))  # one price in force per zone
    assert len(set(prices.values())) > 1
    assert all(0.001 < p < 0.1 for p in prices.values())


def test_spot_prices_vary_over_time_newest_first(aws):
    start = NOW - datetime.timedelta(days=2)
    entries = history(InstanceTypes=["t3.small"], AvailabilityZone="us-east-1a", StartTime=start, EndTime=NOW)
    stamps = [e["Timestamp"] for e in entries]
    assert stamps == sorted(stamps, reverse=True)
    assert len(entries) >= 4 and len({e["SpotPrice"] for e in entries}) > 1
    assert stamps[-1] <= start < stamps[-2]  # the price in force at StartTime, then every change
    assert all(e["AvailabilityZone"] == "us-east-1a" and e["AvailabilityZoneId"] == "use1-az6" for e in entries)


def test_no_spot_price_where_the_type_is_not_offered(aws):
    zones = {h["AvailabilityZone"] for h in history(InstanceTypes=["m5.8xlarge"], StartTime=NOW)}
    assert zones and "us-east-1e" not in zones


def test_spot_price_rules_fix_a_zone_and_scale_a_region(aws):
    seeded = current_prices("us-east-1", "t3.small")
    aws.spot_price("us-east-1", factor=2.0, instance_type="t3.small")
    aws.spot_price("us-east-1", price=0.0042, availability_zone="us-east-1c")
    now = current_prices("us-east-1", "t3.small")
    assert now["us-east-1c"] == 0.0042
    for zone in set(seeded) - {"us-east-1c"}:
        assert now[zone] == pytest.approx(2 * seeded[zone], abs=2e-6)
    # a fixed price never changes: one entry over two days
    fixed = history(InstanceTypes=["t3.small"], AvailabilityZone="us-east-1c",
                    StartTime=NOW - datetime.timedelta(days=2))
    assert [e["SpotPrice"] for e in fixed] == ["0.004200"]
    assert current_prices("us-east-1", "t3.micro")["us-east-1c"] == 0.0042  # a zone rule covers every type


def test_spot_price_filters_and_pages(aws):
    assert history(InstanceTypes=["t3.small"], ProductDescriptions=["Windows"], StartTime=NOW) == []
    by_filter = history(Filters=[{"Name": "availability-zone", "Values": ["us-west-2b"]},
                                 {"Name": "instance-type", "Values": ["t3.*"]}], StartTime=NOW, region="us-west-2")
    assert {h["AvailabilityZone"] for h in by_filter} == {"us-west-2b"}
    assert {h["InstanceType"] for h in by_filter} >= {"t3.micro", "t3.small"}
    page = ec2().describe_spot_price_history(InstanceTypes=["t3.small", "t3.micro"], StartTime=NOW, MaxResults=5)
    assert len(page["SpotPriceHistory"]) == 5 and page["NextToken"]
    rest = ec2().describe_spot_price_history(InstanceTypes=["t3.small", "t3.micro"], StartTime=NOW,
                                             NextToken=page["NextToken"])
    assert len(page["SpotPriceHistory"]) + len(rest["SpotPriceHistory"]) == 12
    assert not rest.get("NextToken")


# --------------------------------------------------------------------------- placement scores
def test_placement_scores_per_region_from_one_region(aws):
    found = scores(client=ec2("eu-west-1"), InstanceTypes=["t3.small", "t3.micro"], TargetCapacity=3,
                   RegionNames=["us-east-1", "us-west-2", "eu-west-1"])
    assert sorted(s["Region"] for s in found) == ["eu-west-1", "us-east-1", "us-west-2"]
    assert all(1 <= s["Score"] <= 10 and "AvailabilityZoneId" not in s for s in found)
    assert [s["Score"] for s in found] == sorted((s["Score"] for s in found), reverse=True)


def test_placement_scores_per_zone_are_by_zone_id(aws):
    found = scores(InstanceTypes=["t3.small"], TargetCapacity=2, SingleAvailabilityZone=True,
                   RegionNames=["us-east-1", "eu-west-1"])
    ids = {z["ZoneId"] for r in ("us-east-1", "eu-west-1")
           for z in ec2(r).describe_availability_zones()["AvailabilityZones"]}
    assert {s["AvailabilityZoneId"] for s in found} == ids
    assert {s["Region"] for s in found} == {"us-east-1", "eu-west-1"}


def test_placement_score_rules_make_a_region_best_and_a_zone_worst(aws):
    aws.placement_score("us-east-1", 1)
    aws.placement_score("us-west-2", 10, instance_type="t3.small")
    aws.placement_score("eu-west-1", 2, availability_zone="euw1-az1")
    found = scores(InstanceTypes=["t3.small"], TargetCapacity=2, RegionNames=["us-east-1", "us-west-2", "eu-west-1"])
    assert found[0] == {"Region": "us-west-2", "Score": 10}
    assert found[-1] == {"Region": "us-east-1", "Score": 1}
    zones = scores(InstanceTypes=["t3.small"], TargetCapacity=2, SingleAvailabilityZone=True,
                   RegionNames=["eu-west-1"])
    assert {s["AvailabilityZoneId"]: s["Score"] for s in zones}["euw1-az1"] == 2
    assert aws.market()["placement_scores"][2]["availability_zone"] == "eu-west-1b"  # ids kept as names


def test_a_spot_capacity_fault_drops_the_score_to_one(aws):
    aws.capacity_error("us-east-1", availability_zone="us-east-1a", instance_type="t3.small", market="spot")
    zones = scores(InstanceTypes=["t3.small"], TargetCapacity=2, SingleAvailabilityZone=True, RegionNames=["us-east-1"])
    by_zone = {s["AvailabilityZoneId"]: s["Score"] for s in zones}
    assert by_zone["use1-az6"] == 1 and max(by_zone.values()) > 1
    aws.capacity_error("us-east-1", instance_type="t3.small")  # the whole region, any market
    (region,) = scores(InstanceTypes=["t3.small"], TargetCapacity=2, RegionNames=["us-east-1"])
    assert region["Score"] == 1


def test_placement_scores_answer_ten_a_page(aws):
    first = ec2().get_spot_placement_scores(InstanceTypes=["t3.small"], TargetCapacity=1)
    assert len(first["SpotPlacementScores"]) == 10 and first["NextToken"]
    every = scores(InstanceTypes=["t3.small"], TargetCapacity=1)
    assert len({s["Region"] for s in every}) == len(every) > 10


def test_placement_scores_from_requirements(aws):
    found = scores(InstanceRequirementsWithMetadata={
        "ArchitectureTypes": ["arm64"], "VirtualizationTypes": ["hvm"],
        "InstanceRequirements": {"VCpuCount": {"Min": 2, "Max": 4}, "MemoryMiB": {"Min": 4096}}},
        TargetCapacity=8, TargetCapacityUnitType="vcpu", RegionNames=["us-east-1"])
    assert len(found) == 1 and 3 <= found[0]["Score"] <= 10


@pytest.mark.parametrize("kw", [
    {"TargetCapacity": 1},  # neither types nor requirements
    {"TargetCapacity": 1, "InstanceTypes": ["t3.small"], "InstanceRequirementsWithMetadata": {
        "ArchitectureTypes": ["arm64"], "VirtualizationTypes": ["hvm"],
        "InstanceRequirements": {"VCpuCount": {"Min": 2}, "MemoryMiB": {"Min": 1024}}}},
    {"TargetCapacity": 1, "InstanceTypes": ["t3.small"], "TargetCapacityUnitType": "vcpu"},
])
def test_placement_scores_refuse_what_ec2_refuses(aws, kw):
    with pytest.raises(botocore.exceptions.ClientError) as err:
        ec2().get_spot_placement_scores(**kw)
    assert err.value.response["Error"]["Code"] == "InvalidParameterCombination"


def test_instance_types_come_in_pages_with_moto_filters(aws):
    client = ec2()
    first = client.describe_instance_types()
    assert len(first["InstanceTypes"]) == 100 and first["NextToken"]
    arm = client.get_paginator("describe_instance_types").paginate(
        Filters=[{"Name": "processor-info.supported-architecture", "Values": ["arm64"]},
                 {"Name": "instance-type", "Values": ["t4g.*"]}], PaginationConfig={"PageSize": 5}).build_full_result()
    assert sorted(t["InstanceType"] for t in arm["InstanceTypes"]) == [
        "t4g.2xlarge", "t4g.large", "t4g.medium", "t4g.micro", "t4g.nano", "t4g.small", "t4g.xlarge"]


# --------------------------------------------------------------------------- requirements
def _types_for(**requirements):
    request = {"VCpuCount": {"Min": 2, "Max": 2}, "MemoryMiB": {"Min": 4096, "Max": 8192}}
    request.update(requirements)
    pages = ec2().get_paginator("get_instance_types_from_instance_requirements").paginate(
        ArchitectureTypes=["arm64"], VirtualizationTypes=["hvm"], InstanceRequirements=request,
        PaginationConfig={"PageSize": 4})
    return [t["InstanceType"] for t in pages.build_full_result()["InstanceTypes"]]


def test_types_from_requirements_meet_them(aws):
    types = _types_for()
    assert {"m6g.large", "c7g.large"} <= set(types) and "m6g.xlarge" not in types  # 2 vCPUs, 4-8 GiB
    described = ec2().describe_instance_types(InstanceTypes=types[:50])["InstanceTypes"]
    for info in described:
        assert info["VCpuInfo"]["DefaultVCpus"] == 2
        assert 4096 <= info["MemoryInfo"]["SizeInMiB"] <= 8192
        assert "arm64" in info["ProcessorInfo"]["SupportedArchitectures"]
        assert not info["BurstablePerformanceSupported"]  # excluded unless asked for
        assert not info["BareMetal"]


def test_types_from_requirements_burstable_and_exclusions(aws):
    assert "t4g.large" in _types_for(BurstablePerformance="included")
    assert _types_for(BurstablePerformance="required") == ["t4g.large", "t4g.medium"]
    assert "m6g.large" not in _types_for(ExcludedInstanceTypes=["m6*"])
    assert _types_for(AllowedInstanceTypes=["m7g.*", "r8g.large"]) == ["m7g.large"]


# --------------------------------------------------------------------------- Price List
def test_price_list_answers_one_linux_on_demand_product(aws):
    (product,) = on_demand_products("us-east-1", "t3.small", **LINUX_ON_DEMAND)
    attributes = product["product"]["attributes"]
    assert attributes["instanceType"] == "t3.small" and attributes["regionCode"] == "us-east-1"
    assert attributes["location"] == "US East (N. Virginia)"
    assert product["serviceCode"] == "AmazonEC2"
    price = usd(product)
    assert max(current_prices("us-east-1", "t3.small").values()) < price < 1.0
    (by_location,) = on_demand_products("eu-west-1", "t3.small", **LINUX_ON_DEMAND)
    assert by_location["product"]["attributes"]["location"] == "EU (Ireland)"


def test_price_list_strings_paged_and_many_products_without_all_filters(aws):
    page = pricing().get_products(ServiceCode="AmazonEC2", MaxResults=5, Filters=[
        {"Type": "TERM_MATCH", "Field": "instanceType", "Value": "t3.small"},
        {"Type": "TERM_MATCH", "Field": "regionCode", "Value": "us-east-1"}])
    assert page["FormatVersion"] == "aws_v1" and page["NextToken"]
    assert len(page["PriceList"]) == 5 and all(isinstance(p, str) for p in page["PriceList"])
    products = on_demand_products("us-east-1", "t3.small")
    systems = {p["product"]["attributes"]["operatingSystem"] for p in products}
    assert len(products) > 5 and {"Linux", "Windows"} <= systems
    linux = [usd(p) for p in products if p["product"]["attributes"]["operatingSystem"] == "Linux"
             and p["product"]["attributes"]["tenancy"] == "Shared" and p["product"]["attributes"]["preInstalledSw"] == "NA"]
    assert len(set(linux)) == 1  # capacity status does not change the price


def test_on_demand_price_rules(aws):
    aws.on_demand_price("t3.small", 0.5, region="us-west-2")
    aws.on_demand_price("m5.large", None)
    (product,) = on_demand_products("us-west-2", "t3.small", **LINUX_ON_DEMAND)
    assert usd(product) == 0.5
    (elsewhere,) = on_demand_products("us-east-1", "t3.small", **LINUX_ON_DEMAND)
    assert usd(elsewhere) != 0.5
    assert on_demand_products("us-east-1", "m5.large", **LINUX_ON_DEMAND) == []


def test_price_list_calls_are_logged_and_faults_apply(aws):
    aws.reset_calls()
    on_demand_products("us-east-1", "t3.micro", **LINUX_ON_DEMAND)
    (call,) = aws.calls()["log"]
    assert (call["service"], call["operation"], call["region"]) == ("pricing", "GetProducts", "us-east-1")
    aws.throttle(1, operations=["GetProducts"])
    with pytest.raises(botocore.exceptions.ClientError) as err:
        on_demand_products("us-east-1", "t3.micro")
    assert err.value.response["Error"]["Code"] == "ThrottlingException"
    with pytest.raises(botocore.exceptions.ClientError) as err:
        pricing().get_products(ServiceCode="AmazonS3")
    assert err.value.response["Error"]["Code"] == "NotFoundException"


# --------------------------------------------------------------------------- control API
@pytest.mark.parametrize("body", [
    {"placement_scores": [{"region": "us-east-1", "score": 11}]},
    {"spot_prices": [{"region": "us-east-1", "price": 0.1, "factor": 2}]},
    {"offerings": [{"region": "us-east-1", "availability_zone": "eu-west-1a", "offered": False}]},
    {"offerings": [{"availability_zone": "us-east-1a", "offered": False}]},
    {"spot_prices": [{"region": "mars-north-1", "factor": 2}]},
    {"on_demand_prices": [{"instance_type": "t9.nonsense", "price": 0.1}]},
    {"capacity_scores": []},
])
def test_bad_market_rules_are_refused(aws, body):
    with pytest.raises(urllib.error.HTTPError) as err:
        aws.set_market(**body)
    assert err.value.code == 400
    assert aws.market() == {"placement_scores": [], "spot_prices": [], "offerings": [], "on_demand_prices": []}


def test_reset_forgets_the_market_rules(aws):
    aws.placement_score("us-east-1", 1)
    assert aws.market()["placement_scores"] == [{"region": "us-east-1", "score": 1}]
    aws.reset()
    assert aws.market()["placement_scores"] == []
