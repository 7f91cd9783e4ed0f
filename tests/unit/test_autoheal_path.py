"""spot_cluster's ``autoheal`` (the cluster file's ``cluster_autoheal``): the event path in every
region the cluster uses, made in converge and heal, said in check mode, none with ``false``,
removed with ``state: absent``; and what status shows of it (``_events.cluster``).

Against the emulator: what exists afterwards. Every call goes through the ``aws`` fixture's IAM check.
"""
from __future__ import annotations

import datetime
import json

import boto3

from ansible_collections.bacalhau.aws_spot.plugins.module_utils._events import cluster as cluster_events
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._events import path
from tests.unit.test_events_path import our_client
from tests.unit.test_spot_cluster_whole import whole

NAME = "heals"
REGIONS = {"us-east-1", "eu-west-1", "eu-central-1"}  # the orchestrator's and compute, compute, overflow
OVERFLOW = [{"region": "eu-central-1", "instance_types": ["t3.small"]}]


def made(region: str, cluster: str = NAME) -> tuple[bool, bool]:
    """(rule, queue) of the cluster's path in ``region``, as AWS has them."""
    name = path.path_name(cluster)
    rules = boto3.client("events", region_name=region).list_rules(NamePrefix=name)["Rules"]
    queues = boto3.client("sqs", region_name=region).list_queues(QueueNamePrefix=name).get("QueueUrls", [])
    return any(r["Name"] == name for r in rules), any(u.endswith("/" + name) for u in queues)


def test_converge_makes_the_path_in_every_region_once_and_check_mode_only_says_so(aws, run_module):
    args = whole(NAME, overflow_regions=OVERFLOW)
    checked = run_module("spot_cluster", args, check_mode=True)
    assert not checked.failed, checked.get("msg")
    assert set(checked["event_path"]) == REGIONS
    for region, row in checked["event_path"].items():
        assert not row["exists"] and row["changed"] and any("create SQS queue" in c for c in row["changes"]), row
        assert made(region) == (False, False)

    first = run_module("spot_cluster", args)
    assert not first.failed, first.get("msg")
    for region in REGIONS:
        assert made(region) == (True, True), region
        row = first["event_path"][region]
        assert row["exists"] and row["rule_enabled"] and row["queue_depth"] == 0 and row["error"] is None, row
    # tagged as the cluster's, encrypted, short retention
    sqs = boto3.client("sqs", region_name="eu-central-1")
    url = sqs.get_queue_url(QueueName=path.path_name(NAME))["QueueUrl"]
    assert sqs.list_queue_tags(QueueUrl=url)["Tags"]["bacalhau:cluster"] == NAME
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert attrs["SqsManagedSseEnabled"] == "true" and attrs["MessageRetentionPeriod"] == "3600"

    again = run_module("spot_cluster", args)
    assert not again.failed and not again.changed, (again.get("summary"), again.get("event_path"))
    assert all(row["exists"] and not row["changes"] for row in again["event_path"].values())

    healed = run_module("spot_cluster", dict(args, mode="heal"))
    assert not healed.failed and not healed.changed and set(healed["event_path"]) == REGIONS
    released = run_module("spot_cluster", dict(args, mode="release"))
    assert not released.failed and released["event_path"] == {}  # release touches no path

    # state absent (destroy.yml): the path goes with the network, in every region
    gone = run_module("spot_cluster", dict(args, state="absent"))
    assert not gone.failed, gone.get("msg")
    assert all(made(region) == (False, False) for region in REGIONS)


def test_a_heal_makes_a_missing_path_again(aws, run_module):
    args = whole(NAME)
    assert not run_module("spot_cluster", args).failed
    path.remove(our_client("events", "eu-west-1"), our_client("sqs", "eu-west-1"), NAME, "eu-west-1")
    assert made("eu-west-1") == (False, False)
    healed = run_module("spot_cluster", dict(args, mode="heal"))
    assert not healed.failed and healed.changed
    assert made("eu-west-1") == (True, True) and healed["event_path"]["eu-west-1"]["exists"]


def test_autoheal_false_makes_none_and_leaves_an_existing_path_alone(aws, run_module):
    args = whole(NAME, autoheal=False)
    first = run_module("spot_cluster", args)
    assert not first.failed and first["event_path"] == {}
    assert all(made(region) == (False, False) for region in ("us-east-1", "eu-west-1"))
    assert not [c for c in aws.calls()["log"] if c["operation"] in ("PutRule", "CreateQueue", "DescribeRule")]
    # made by an earlier run with autoheal on: left as it is
    assert not run_module("spot_cluster", dict(args, autoheal=True)).failed
    assert not run_module("spot_cluster", args).failed
    assert made("us-east-1") == (True, True)


def test_last_events_and_their_age(tmp_path):
    now = datetime.datetime(2026, 12, 6, 9, 0, 0, tzinfo=datetime.timezone.utc)
    assert cluster_events.last_events(str(tmp_path)) == {}
    cluster_events.record_event(str(tmp_path), "us-east-1", {"kind": "interruption", "instance_id": "i-1",
                                                            "time": "2026-12-06T08:58:00Z"}, "2026-12-06T08:58:01Z")
    noted = cluster_events.last_events(str(tmp_path))
    assert noted["us-east-1"]["kind"] == "interruption"
    assert cluster_events.age_seconds(noted["us-east-1"], now) == 120
    assert cluster_events.age_seconds(None, now) is None
    assert cluster_events.age_seconds({"time": "garbage", "received": "2026-12-06T08:59:00Z"}, now) == 60
    row = cluster_events.view({"rule": True, "queue": True, "targets_queue": True, "rule_enabled": True,
                               "queue_depth": 3, "queue_in_flight": 1}, noted["us-east-1"], now)
    assert row["exists"] and row["queue_depth"] == 3 and row["last_event_age_seconds"] == 120
    (tmp_path / "last-events.json").write_text("not json")
    assert cluster_events.last_events(str(tmp_path)) == {}
    assert cluster_events.state_dir("demo", "/base") == "/base/demo/autoheal"
    # the event source writes what this reads
    json.loads(json.dumps(noted))
