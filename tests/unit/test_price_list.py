"""On-demand prices from the Price List service (the emulator's), cached on the controller."""
from __future__ import annotations

import datetime
import json
import os

import pytest

from ansible_collections.bacalhau.aws_spot.plugins.module_utils._aws import common as _common
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._pricing import price_list as _price_list
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._aws.common import AwsSpotError

TODAY = datetime.date(2026, 12, 1)


class Module:
    """What region_client reads of an AnsibleAWSModule: its connection parameters."""

    def __init__(self) -> None:
        self.params = {"endpoint_url": os.environ["AWS_ENDPOINT_URL"], "access_key": "testing",
                       "secret_key": "testing", "validate_certs": True}
        self.warnings: list[str] = []

    def warn(self, message: str) -> None:
        self.warnings.append(message)

    def fail_json(self, **kwargs):  # pragma: no cover - get_aws_connection_info's error path
        raise AssertionError(kwargs)


@pytest.fixture
def policies(monkeypatch):
    for name, policy in list(_common.RETRY_POLICIES.items()):
        monkeypatch.setitem(_common.RETRY_POLICIES, name, dict(policy, delay=0.001, max_delay=0.001))
    return _common.RETRY_POLICIES


@pytest.fixture
def cache(tmp_path):
    return str(tmp_path / "cache" / "on-demand-prices.json")


def ours(aws):
    return [c for c in aws.calls()["log"] if c["agent"] == "bacalhau.aws_spot"]


def test_prices_are_read_from_the_price_list_one_call_per_region(aws, cache):
    aws.on_demand_price("t3.small", 0.0208, region="us-east-1")
    aws.on_demand_price("m5.large", 0.096, region="us-east-1")
    aws.on_demand_price("t3.small", 0.0228, region="eu-west-1")
    aws.reset_calls()
    prices = _price_list.on_demand_prices(Module(), [("us-east-1", "t3.small"), ("us-east-1", "m5.large"),
                                                     ("eu-west-1", "t3.small")], cache_path=cache, today=TODAY)
    assert prices == {("us-east-1", "t3.small"): 0.0208, ("us-east-1", "m5.large"): 0.096,
                      ("eu-west-1", "t3.small"): 0.0228}
    calls = ours(aws)
    assert [(c["service"], c["operation"], c["region"]) for c in calls] == [("pricing", "GetProducts", "us-east-1")] * 2


def test_seeded_prices_are_the_linux_shared_product(aws, cache):
    import boto3

    (product,) = boto3.client("pricing", region_name="us-east-1").get_products(ServiceCode="AmazonEC2", Filters=[
        {"Type": "TERM_MATCH", "Field": k, "Value": v}
        for k, v in dict(_price_list.LINUX_ON_DEMAND, instanceType="c7g.large", regionCode="us-west-2").items()
    ])["PriceList"]
    expected = _price_list.product_price(json.loads(product))
    prices = _price_list.on_demand_prices(Module(), [("us-west-2", "c7g.large")], cache_path=cache, today=TODAY)
    assert prices[("us-west-2", "c7g.large")] == expected > 0


def test_the_cache_is_used_while_fresh_and_read_again_when_old(aws, cache):
    wanted = [("us-east-1", "t3.micro")]
    aws.on_demand_price("t3.micro", 0.0104)
    assert _price_list.on_demand_prices(Module(), wanted, cache_path=cache, today=TODAY) == {wanted[0]: 0.0104}
    with open(cache, encoding="utf-8") as f:
        stored = json.load(f)
    assert stored["prices"]["us-east-1"]["t3.micro"] == {"usd_per_hour": 0.0104, "date": "2026-12-01"}
    aws.on_demand_price("t3.micro", 0.0111)  # AWS changes its price
    aws.reset_calls()
    later = TODAY + datetime.timedelta(days=_price_list.DEFAULT_MAX_AGE_DAYS)
    assert _price_list.on_demand_prices(Module(), wanted, cache_path=cache, today=later) == {wanted[0]: 0.0104}
    assert ours(aws) == []  # fresh enough: no call
    older = later + datetime.timedelta(days=1)
    assert _price_list.on_demand_prices(Module(), wanted, cache_path=cache, today=older) == {wanted[0]: 0.0111}
    assert len(ours(aws)) == 1
    assert _price_list.on_demand_prices(Module(), wanted, cache_path=cache, today=older,
                                        max_age_days=0) == {wanted[0]: 0.0111}
    assert len(ours(aws)) == 1  # read today: fresh even at max_age_days=0


def test_only_what_is_missing_or_old_is_asked_for(aws, cache):
    _price_list.on_demand_prices(Module(), [("us-east-1", "t3.micro")], cache_path=cache, today=TODAY)
    aws.reset_calls()
    prices = _price_list.on_demand_prices(Module(), [("us-east-1", "t3.micro"), ("us-west-2", "t3.micro")],
                                          cache_path=cache, today=TODAY)
    assert set(prices) == {("us-east-1", "t3.micro"), ("us-west-2", "t3.micro")}
    assert len(ours(aws)) == 1  # us-west-2 only
    with open(cache, encoding="utf-8") as f:
        assert set(json.load(f)["prices"]) == {"us-east-1", "us-west-2"}


def test_a_type_without_a_product_is_none_and_remembered(aws, cache):
    aws.on_demand_price("m5.large", None)
    prices = _price_list.on_demand_prices(Module(), [("us-east-1", "m5.large")], cache_path=cache, today=TODAY)
    assert prices == {("us-east-1", "m5.large"): None}
    aws.reset_calls()
    _price_list.on_demand_prices(Module(), [("us-east-1", "m5.large")], cache_path=cache, today=TODAY)
    assert ours(aws) == []


def test_many_types_are_asked_in_batches(aws, cache):
    import boto3

    offers = boto3.client("ec2", region_name="us-east-1").get_paginator("describe_instance_type_offerings").paginate(
        LocationType="region").build_full_result()["InstanceTypeOfferings"]
    types = sorted(o["InstanceType"] for o in offers)[:120]
    aws.reset_calls()
    prices = _price_list.on_demand_prices(Module(), [("us-east-1", t) for t in types], cache_path=cache, today=TODAY)
    assert all(p is not None and p > 0 for p in prices.values()) and len(prices) == 120
    batches = _price_list.batches(types)
    assert 1 < len(batches) < 120 and all(len(",".join(b)) <= 1024 for b in batches)
    assert len(ours(aws)) == len(batches)  # each batch is one page of at most 100 products


def test_when_the_service_fails_old_prices_are_used(aws, cache, policies):
    wanted = [("us-east-1", "t3.small")]
    aws.on_demand_price("t3.small", 0.0208)
    _price_list.on_demand_prices(Module(), wanted, cache_path=cache, today=TODAY)
    aws.throttle(10 ** 6, operations=["GetProducts"])
    much_later = TODAY + datetime.timedelta(days=90)
    assert _price_list.on_demand_prices(Module(), wanted, cache_path=cache, today=much_later) == {wanted[0]: 0.0208}
    assert len(ours(aws)) > 1  # it did try (and retried) first


def test_when_the_service_fails_and_nothing_is_cached_the_error_says_what_to_do(aws, cache, policies):
    aws.throttle(10 ** 6, operations=["GetProducts"])
    with pytest.raises(AwsSpotError) as err:
        _price_list.on_demand_prices(Module(), [("us-east-1", "t3.small")], cache_path=cache, today=TODAY)
    assert "t3.small" in str(err.value) and "pricing:GetProducts" in str(err.value)
    assert "throttled" in str(err.value) and err.value.region == "us-east-1"
    assert not os.path.exists(cache)


def test_an_unreadable_cache_is_read_again_and_rewritten(aws, cache):
    os.makedirs(os.path.dirname(cache))
    with open(cache, "w", encoding="utf-8") as f:
        f.write("{not json")
    prices = _price_list.on_demand_prices(Module(), [("us-east-1", "t3.micro")], cache_path=cache, today=TODAY)
    assert prices[("us-east-1", "t3.micro")] > 0
    with open(cache, encoding="utf-8") as f:
        assert json.load(f)["version"] == _price_list.CACHE_VERSION
    assert [n for n in os.listdir(os.path.dirname(cache)) if n.startswith(".")] == []  # no temporary left


def test_default_cache_path_follows_xdg(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert _price_list.default_cache_path() == str(tmp_path / "bacalhau.aws_spot" / "on-demand-prices.json")
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert _price_list.default_cache_path() == os.path.expanduser("~/.cache/bacalhau.aws_spot/on-demand-prices.json")
