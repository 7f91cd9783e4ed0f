"""The emulator carries EC2's events (``tests/emulator/events.py``): through a matching
EventBridge rule to its SQS queue, in AWS's shapes, and nowhere without a rule."""
from __future__ import annotations

import json
import re
import time

import boto3
import pytest

from tests.unit.test_nuke_world import image

REGION = "us-east-1"
PATTERN = {  # the collection's rule (_events/path.py EVENT_PATTERN), spelled out here
    "source": ["aws.ec2"],
    "$or": [
        {"detail-type": ["EC2 Spot Instance Interruption Warning", "EC2 Instance Rebalance Recommendation"]},
        {"detail-type": ["EC2 Instance State-change Notification"],
         "detail": {"state": ["stopping", "stopped", "shutting-down", "terminated"]}},
    ],
}


def path(region: str = REGION, name: str = "spot-events", pattern: dict | None = None) -> str:
    """A rule and its queue; the queue's URL."""
    events, sqs = boto3.client("events", region_name=region), boto3.client("sqs", region_name=region)
    url = sqs.create_queue(QueueName=name)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    events.put_rule(Name=name, EventPattern=json.dumps(pattern or PATTERN))
    events.put_targets(Rule=name, Targets=[{"Id": "q", "Arn": arn}])
    return url


def drain(url: str, region: str = REGION) -> list[dict]:
    sqs = boto3.client("sqs", region_name=region)
    got = []
    while True:
        messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0).get("Messages", [])
        if not messages:
            return got
        got += [json.loads(m["Body"]) for m in messages]
        sqs.delete_message_batch(QueueUrl=url, Entries=[
            {"Id": str(n), "ReceiptHandle": m["ReceiptHandle"]} for n, m in enumerate(messages)])


def launch(count: int = 1, region: str = REGION) -> list[str]:
    ec2 = boto3.client("ec2", region_name=region)
    answer = ec2.run_instances(ImageId=image(region), InstanceType="t3.micro", MinCount=count, MaxCount=count,
                               InstanceMarketOptions={"MarketType": "spot"})
    return [i["InstanceId"] for i in answer["Instances"]]


def kinds(events: list[dict]) -> list[tuple[str, str, str]]:
    return [(e["detail"]["instance-id"], e["detail-type"], e["detail"].get("state", "")) for e in events]


def test_an_interruption_sends_the_warning_now_and_the_state_changes_at_the_reclaim(aws):
    url = path()
    [instance] = launch()
    assert drain(url) == []  # a launch sends nothing the rule asks for
    aws.interrupt(REGION, [instance], notice_seconds=1.5)
    [warning] = drain(url)
    assert kinds([warning]) == [(instance, "EC2 Spot Instance Interruption Warning", "")]
    assert warning["detail"] == {"instance-id": instance, "instance-action": "terminate"}
    deadline = time.monotonic() + 10
    later: list[dict] = []
    while len(later) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
        later += drain(url)
    assert kinds(later) == [(instance, "EC2 Instance State-change Notification", "shutting-down"),
                            (instance, "EC2 Instance State-change Notification", "terminated")]


def test_the_events_have_aws_shapes(aws):
    url = path()
    [instance] = launch()
    aws.interrupt(REGION, [instance])  # reclaimed at once: the warning, then both state changes
    got = drain(url)
    assert len(got) == 3
    assert len({e["id"] for e in got}) == 3
    for event in got:
        assert set(event) >= {"version", "id", "detail-type", "source", "account", "time", "region", "resources", "detail"}
        assert event["version"] == "0" and event["source"] == "aws.ec2"
        assert event["account"] == "123456789012" and event["region"] == REGION
        assert event["resources"] == [f"arn:aws:ec2:{REGION}:123456789012:instance/{instance}"]
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", event["time"]), event["time"]
        assert re.fullmatch(r"[0-9a-f-]{36}", event["id"])
    assert [e["detail-type"] for e in got] == ["EC2 Spot Instance Interruption Warning",
                                               "EC2 Instance State-change Notification",
                                               "EC2 Instance State-change Notification"]


def test_a_rebalance_recommendation(aws):
    url = path()
    instances = launch(2)
    aws.rebalance(REGION, instances[:1])
    assert kinds(drain(url)) == [(instances[0], "EC2 Instance Rebalance Recommendation", "")]


def test_terminate_and_stop_send_their_state_changes_once(aws):
    url = path()
    ec2 = boto3.client("ec2", region_name=REGION)
    first, second = launch(2)
    ec2.terminate_instances(InstanceIds=[first])
    ec2.stop_instances(InstanceIds=[second])
    ec2.start_instances(InstanceIds=[second])  # pending/running: the rule does not ask for them
    assert kinds(drain(url)) == [(first, "EC2 Instance State-change Notification", "shutting-down"),
                                 (first, "EC2 Instance State-change Notification", "terminated"),
                                 (second, "EC2 Instance State-change Notification", "stopping"),
                                 (second, "EC2 Instance State-change Notification", "stopped")]


def test_an_event_reaches_a_queue_only_through_a_rule_that_matches_it(aws):
    ours = path()
    other_region = path("eu-west-1")
    only_rebalance = path(name="rebalance-only", pattern={"source": ["aws.ec2"],
                                                          "detail-type": ["EC2 Instance Rebalance Recommendation"]})
    no_rule = boto3.client("sqs", region_name=REGION).create_queue(QueueName="no-rule")["QueueUrl"]
    [instance] = launch()
    aws.interrupt(REGION, [instance])
    assert len(drain(ours)) == 3
    assert drain(other_region, "eu-west-1") == []
    assert drain(only_rebalance) == []
    assert drain(no_rule) == []


def test_interrupting_an_unknown_instance_sends_nothing(aws):
    url = path()
    with pytest.raises(Exception):
        aws.interrupt(REGION, ["i-0123456789abcdef0"])
    assert drain(url) == []


def test_set_queue_attributes_keeps_the_policy(aws):
    sqs = boto3.client("sqs", region_name=REGION)
    policy = json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"Service": "events.amazonaws.com"}, "Action": "sqs:SendMessage",
         "Resource": "*"}]})
    url = sqs.create_queue(QueueName="q", Attributes={"Policy": policy})["QueueUrl"]
    sqs.set_queue_attributes(QueueUrl=url, Attributes={"MessageRetentionPeriod": "3600"})
    assert json.loads(sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["Policy"])["Attributes"]["Policy"]) == \
        json.loads(policy)


def test_a_long_poll_waits_as_sqs_does_without_holding_up_other_calls(aws):
    import threading

    sqs = boto3.client("sqs", region_name=REGION)
    url = sqs.create_queue(QueueName="waiting", Attributes={"ReceiveMessageWaitTimeSeconds": "20"})["QueueUrl"]
    got: dict = {}

    def poll(key: str, **kwargs) -> None:
        began = time.monotonic()
        answer = boto3.client("sqs", region_name=REGION).receive_message(QueueUrl=url, **kwargs)
        got[key] = (time.monotonic() - began, answer.get("Messages", []))

    waiting = threading.Thread(target=poll, args=("first",), kwargs={"WaitTimeSeconds": 5})
    waiting.start()
    time.sleep(0.5)
    began = time.monotonic()
    boto3.client("ec2", region_name=REGION).describe_regions()  # not held up by the poll
    assert time.monotonic() - began < 2
    sqs.send_message(QueueUrl=url, MessageBody="hello")
    waiting.join(10)
    took, messages = got["first"]
    assert [m["Body"] for m in messages] == ["hello"] and took < 3  # answered once there was one
    # nothing comes: it waits the time asked for (the queue's own when the call names none)
    poll("empty", WaitTimeSeconds=1)
    assert got["empty"][1] == [] and 0.9 < got["empty"][0] < 3
