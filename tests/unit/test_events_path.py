"""The event path (``_events/path.py``) against the emulator: what exists afterwards.

The clients are made as ``_aws.common.region_client`` makes them (our user agent, botocore's
retries off, the ``default`` retry policy on ``aws_retry=True`` calls), so the ``aws``
fixture's IAM check covers every call the path makes.
"""
from __future__ import annotations

import functools
import json

import boto3
import botocore.config
import pytest

from ansible_collections.amazon.aws.plugins.module_utils.retries import RetryingBotoClientWrapper
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._aws import common
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._events import path

REGION = "us-east-1"
NAME = "bacalhau-alpha-spot-events"


def our_client(service: str, region: str = REGION):
    config = botocore.config.Config(user_agent_extra="bacalhau.aws_spot",
                                    retries={"total_max_attempts": 1, "mode": "standard"})
    raw = boto3.client(service, region_name=region, config=config)
    return RetryingBotoClientWrapper(raw, functools.partial(common.retried, region=region))


@pytest.fixture
def clients(aws):
    return our_client("events"), our_client("sqs")


@pytest.fixture
def fast_retries(monkeypatch):
    for name, policy in list(common.RETRY_POLICIES.items()):
        monkeypatch.setitem(common.RETRY_POLICIES, name, dict(policy, delay=0.001, max_delay=0.001))


def world(region: str = REGION):
    """Plain clients (not ours: their calls are the test's, outside the IAM check)."""
    return boto3.client("events", region_name=region), boto3.client("sqs", region_name=region)


def rule_names(region: str = REGION) -> list[str]:
    return [r["Name"] for r in world(region)[0].list_rules()["Rules"]]


def queue_urls(region: str = REGION) -> list[str]:
    return world(region)[1].list_queues().get("QueueUrls", [])


def test_check_mode_says_what_it_would_make_and_makes_nothing(clients):
    result = path.ensure(*clients, "alpha", REGION, check_mode=True)
    assert result["changed"]
    assert result["changes"] == [f"create EventBridge rule {NAME}", f"create SQS queue {NAME}",
                                 f"send EventBridge rule {NAME} to SQS queue {NAME}"]
    assert rule_names() == [] and queue_urls() == []


def test_ensure_makes_the_rule_and_queue_as_documented_then_changes_nothing(clients):
    result = path.ensure(*clients, "alpha", REGION, tags={"team": "research"})
    assert result["changed"] and len(result["changes"]) == 3
    events, sqs = world()
    rule = events.describe_rule(Name=NAME)
    assert rule["State"] == "ENABLED"
    assert json.loads(rule["EventPattern"]) == path.EVENT_PATTERN
    targets = events.list_targets_by_rule(Rule=NAME)["Targets"]
    attributes = sqs.get_queue_attributes(QueueUrl=result["queue_url"], AttributeNames=["All"])["Attributes"]
    assert targets == [{"Id": path.TARGET_ID, "Arn": attributes["QueueArn"]}]
    assert attributes["MessageRetentionPeriod"] == "3600"
    assert attributes["SqsManagedSseEnabled"].lower() == "true"
    assert attributes["ReceiveMessageWaitTimeSeconds"] == "20"
    policy = json.loads(attributes["Policy"])
    [statement] = policy["Statement"]
    assert statement["Principal"] == {"Service": "events.amazonaws.com"}
    assert statement["Action"] == "sqs:SendMessage" and statement["Resource"] == attributes["QueueArn"]
    assert statement["Condition"] == {"ArnEquals": {"aws:SourceArn": rule["Arn"]}}
    want = {"bacalhau:managed-by": "bacalhau.aws_spot", "bacalhau:cluster": "alpha", "Name": NAME, "team": "research"}
    rule_tags = {t["Key"]: t["Value"] for t in events.list_tags_for_resource(ResourceARN=rule["Arn"])["Tags"]}
    assert rule_tags == want
    assert sqs.list_queue_tags(QueueUrl=result["queue_url"])["Tags"] == want

    again = path.ensure(*clients, "alpha", REGION, tags={"team": "research"})
    assert not again["changed"] and again["changes"] == []
    assert again["queue_url"] == result["queue_url"] and again["rule_arn"] == result["rule_arn"]


def test_drift_is_put_back_and_said(clients):
    made = path.ensure(*clients, "alpha", REGION)
    events, sqs = world()
    sqs.set_queue_attributes(QueueUrl=made["queue_url"], Attributes={"MessageRetentionPeriod": "345600"})
    events.remove_targets(Rule=NAME, Ids=[path.TARGET_ID])
    events.disable_rule(Name=NAME)

    check = path.ensure(*clients, "alpha", REGION, check_mode=True)
    assert check["changes"] == [f"update EventBridge rule {NAME} (pattern, enabled)",
                                f"set SQS queue {NAME} attributes: MessageRetentionPeriod",
                                f"send EventBridge rule {NAME} to SQS queue {NAME}"]
    assert events.describe_rule(Name=NAME)["State"] == "DISABLED"  # check mode changed nothing

    fixed = path.ensure(*clients, "alpha", REGION)
    assert fixed["changes"] == check["changes"]
    assert events.describe_rule(Name=NAME)["State"] == "ENABLED"
    assert len(events.list_targets_by_rule(Rule=NAME)["Targets"]) == 1
    assert sqs.get_queue_attributes(QueueUrl=made["queue_url"], AttributeNames=["MessageRetentionPeriod"])[
        "Attributes"]["MessageRetentionPeriod"] == "3600"
    assert not path.ensure(*clients, "alpha", REGION)["changed"]


def test_a_rule_or_queue_of_that_name_not_tagged_as_the_clusters_is_left_alone(clients):
    events, sqs = world()
    events.put_rule(Name=NAME, EventPattern=json.dumps({"source": ["mine"]}), Tags=[{"Key": "owner", "Value": "me"}])
    with pytest.raises(common.AwsSpotError) as caught:
        path.ensure(*clients, "alpha", REGION)
    assert f"EventBridge rule {NAME} exists but is not tagged as cluster 'alpha'" in str(caught.value)
    assert json.loads(events.describe_rule(Name=NAME)["EventPattern"]) == {"source": ["mine"]}
    with pytest.raises(common.AwsSpotError):
        path.remove(*clients, "alpha", REGION)
    assert rule_names() == [NAME]

    events.delete_rule(Name=NAME)
    sqs.create_queue(QueueName=NAME, tags={"bacalhau:managed-by": "bacalhau.aws_spot", "bacalhau:cluster": "beta"})
    with pytest.raises(common.AwsSpotError) as caught:
        path.ensure(*clients, "alpha", REGION)
    assert f"SQS queue {NAME} exists but is not tagged as cluster 'alpha'" in str(caught.value)


def test_remove_takes_it_all_away_and_is_idempotent(clients):
    path.ensure(*clients, "alpha", REGION)
    path.ensure(*clients, "beta", REGION)
    check = path.remove(*clients, "alpha", REGION, check_mode=True)
    assert check["changes"] == [f"delete EventBridge rule {NAME}", f"delete SQS queue {NAME}"]
    assert len(rule_names()) == 2

    assert path.remove(*clients, "alpha", REGION)["changed"]
    assert rule_names() == ["bacalhau-beta-spot-events"]
    assert [u.rsplit("/", 1)[1] for u in queue_urls()] == ["bacalhau-beta-spot-events"]
    again = path.remove(*clients, "alpha", REGION)
    assert not again["changed"] and again["changes"] == []


def test_read_says_what_is_there(clients):
    assert path.read(*clients, "alpha", REGION) == {
        "region": REGION, "name": NAME, "rule": False, "rule_enabled": False, "targets_queue": False,
        "queue": False, "queue_depth": None, "queue_in_flight": None}
    made = path.ensure(*clients, "alpha", REGION)
    world()[1].send_message(QueueUrl=made["queue_url"], MessageBody="{}")
    seen = path.read(*clients, "alpha", REGION)
    assert seen["rule"] and seen["rule_enabled"] and seen["targets_queue"]
    assert seen["queue"] and seen["queue_depth"] == 1


def test_the_rule_sends_what_ec2_sends_about_going_instances_and_nothing_else(clients):
    """moto matches the pattern (``$or``, ``detail.state``) as EventBridge does."""
    made = path.ensure(*clients, "alpha", REGION)
    events, sqs = world()

    def put(detail_type: str, detail: dict) -> None:
        events.put_events(Entries=[{"Source": "aws.ec2", "DetailType": detail_type, "Detail": json.dumps(detail)}])

    put(path.INTERRUPTION, {"instance-id": "i-1", "instance-action": "terminate"})
    put(path.REBALANCE, {"instance-id": "i-2"})
    for state in ("pending", "running", "stopping", "stopped", "shutting-down", "terminated"):
        put(path.STATE_CHANGE, {"instance-id": "i-3", "state": state})
    put("AWS API Call via CloudTrail", {"eventName": "RunInstances"})
    got = []
    while True:
        messages = sqs.receive_message(QueueUrl=made["queue_url"], MaxNumberOfMessages=10, WaitTimeSeconds=0).get(
            "Messages", [])
        if not messages:
            break
        got += [json.loads(m["Body"]) for m in messages]
    seen = sorted((e["detail-type"], e["detail"].get("state", "")) for e in got)
    assert seen == sorted([(path.INTERRUPTION, ""), (path.REBALANCE, "")]
                          + [(path.STATE_CHANGE, s) for s in path.GOING_STATES])


def test_throttling_is_survived(clients, aws, fast_retries):
    aws.throttle(6, operations=["DescribeRule", "PutRule", "GetQueueUrl", "CreateQueue", "PutTargets"])
    result = path.ensure(*clients, "alpha", REGION)
    assert result["changed"]
    assert rule_names() == [NAME] and len(queue_urls()) == 1
    assert len([c for c in aws.calls()["log"] if c["fault"]]) == 6


def test_names_fit_what_eventbridge_and_sqs_allow():
    longest = "a" * 40  # the longest cluster name spot_cluster accepts
    assert len(path.path_name(longest)) <= 64
    assert path.name_prefix("alpha") == "bacalhau-alpha-" and path.path_name("alpha").startswith("bacalhau-alpha-")


def test_spot_cluster_absent_takes_the_path_away_with_the_clusters_network(aws, run_module):
    """The event path belongs to the cluster in a region, not to a role: it goes when the
    region's network goes (the nuke's engine finds it), and stays while a role remains."""
    regions = [{"region": REGION, "count": 1, "instance_types": ["t3.small"]}]
    for role in ("compute", "orchestrator"):
        made = run_module("spot_cluster", {"cluster_name": "alpha", "role": role, "regions": regions,
                                           "market": "on-demand"})
        assert not made.failed, made.get("msg")
    path.ensure(our_client("events"), our_client("sqs"), "alpha", REGION)
    path.ensure(our_client("events"), our_client("sqs"), "beta", REGION)

    one_role = run_module("spot_cluster", {"cluster_name": "alpha", "state": "absent", "role": "orchestrator",
                                           "regions": [{"region": REGION}]})
    assert not one_role.failed, one_role.get("msg")
    assert NAME in rule_names()

    everything = run_module("spot_cluster", {"cluster_name": "alpha", "state": "absent",
                                             "regions": [{"region": REGION}]})
    assert not everything.failed, everything.get("msg")
    assert rule_names() == ["bacalhau-beta-spot-events"]
    assert [u.rsplit("/", 1)[1] for u in queue_urls()] == ["bacalhau-beta-spot-events"]


def test_the_nuke_takes_a_path_made_by_ensure(aws, run_module):
    path.ensure(our_client("events"), our_client("sqs"), "alpha", REGION)
    path.ensure(our_client("events", "eu-west-1"), our_client("sqs", "eu-west-1"), "alpha", "eu-west-1")
    check = run_module("tagged_resource_nuke", {"regions": [REGION, "eu-west-1"], "cluster_name": "alpha"},
                       check_mode=True)
    assert sorted((r["region"], r["type"], r["name"]) for r in check["resources"]) == sorted(
        (region, kind, NAME) for region in (REGION, "eu-west-1") for kind in ("event_rules", "sqs_queues"))
    gone = run_module("tagged_resource_nuke", {"regions": [REGION, "eu-west-1"], "cluster_name": "alpha",
                                               "force": True})
    assert not gone.failed, gone["msg"]
    assert rule_names() == [] and queue_urls() == [] and rule_names("eu-west-1") == []
