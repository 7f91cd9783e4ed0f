"""The event source ``bacalhau.aws_spot.spot_events`` (``extensions/eda/plugins/event_source/``):
its ``main()`` run in asyncio against the emulator, as ansible-rulebook runs it, without
ansible-rulebook. Its calls go through the ``aws`` fixture's IAM check (its user agent)."""
from __future__ import annotations

import asyncio
import calendar
import importlib.util
import json
import logging
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

import boto3
import pytest

from ansible_collections.bacalhau.aws_spot.plugins.module_utils._events import path
from tests.unit.test_events_path import our_client
from tests.unit.test_nuke_world import image, spec, tags_for

PLUGIN = Path(__file__).resolve().parents[2] / "extensions" / "eda" / "plugins" / "event_source" / "spot_events.py"
_spec = importlib.util.spec_from_file_location("spot_events", PLUGIN)
spot_events = sys.modules.get("spot_events") or importlib.util.module_from_spec(_spec)
if "spot_events" not in sys.modules:
    sys.modules["spot_events"] = spot_events
    _spec.loader.exec_module(spot_events)

REGIONS = ["us-east-1", "eu-west-1"]
FAST = {"wait_seconds": 1, "backoff_seconds": 0.05, "backoff_max_seconds": 0.3, "resolve_seconds": 0.3,
        "tick_seconds": 0, "state_dir": ""}  # "": no last-events.json (one test below asks for it)


def make_path(cluster: str = "alpha", region: str = "us-east-1") -> dict:
    return path.ensure(our_client("events", region), our_client("sqs", region), cluster, region)


def launch(region: str, cluster: str | None, count: int = 1) -> list[str]:
    tags = tags_for(cluster) if cluster else {}
    answer = boto3.client("ec2", region_name=region).run_instances(
        ImageId=image(region), InstanceType="t3.micro", MinCount=count, MaxCount=count,
        InstanceMarketOptions={"MarketType": "spot"}, TagSpecifications=spec("instance", tags))
    return [i["InstanceId"] for i in answer["Instances"]]


def run_source(args: dict[str, Any], act: Callable[[], None], until: Callable[[list[dict]], bool],
               timeout: float = 20.0) -> list[dict]:
    """Run ``main()``; ``act`` in a thread once it runs; the events it put until ``until`` holds
    (then a further half second, to see nothing more comes)."""
    async def scenario() -> list[dict]:
        queue: asyncio.Queue = asyncio.Queue()
        task = asyncio.create_task(spot_events.main(queue, dict(FAST, **args)))
        got: list[dict] = []
        acting = asyncio.get_running_loop().run_in_executor(None, act)
        deadline = time.monotonic() + timeout
        settle: float | None = None
        try:
            while time.monotonic() < deadline:
                if task.done():
                    task.result()  # raises what main() raised
                try:
                    got.append(await asyncio.wait_for(queue.get(), 0.1))
                except asyncio.TimeoutError:
                    pass
                if settle is None and until(got) and acting.done():
                    settle = time.monotonic() + 0.5
                if settle is not None and time.monotonic() > settle:
                    break
            await acting
            return got
        finally:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass

    return asyncio.run(scenario())


def spot(events: list[dict], kind: str | None = None) -> list[dict]:
    return [e["bacalhau_spot"] for e in events if kind is None or e["bacalhau_spot"]["kind"] == kind]


def queue_depth(url: str, region: str = "us-east-1") -> int:
    attributes = boto3.client("sqs", region_name=region).get_queue_attributes(
        QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"])
    return sum(int(v) for v in attributes["Attributes"].values())


def test_events_of_every_region_arrive_normalised_and_foreign_instances_are_dropped(aws, tmp_path):
    east, west = make_path("alpha", "us-east-1"), make_path("alpha", "eu-west-1")
    [ours_east] = launch("us-east-1", "alpha")
    [ours_west] = launch("eu-west-1", "alpha")
    [beta] = launch("us-east-1", "beta")  # another cluster's, in the same account and region
    [untagged] = launch("eu-west-1", None)

    def act() -> None:
        aws.interrupt("us-east-1", [ours_east, beta])  # reclaimed at once: warning, shutting-down, terminated
        aws.rebalance("eu-west-1", [ours_west, untagged])

    def done(got: list[dict]) -> bool:  # ours put, and every message (the foreign ones too) deleted
        return len(got) >= 4 and queue_depth(east["queue_url"]) == 0 and queue_depth(west["queue_url"], "eu-west-1") == 0

    got = spot(run_source({"cluster_name": "alpha", "regions": REGIONS, "state_dir": str(tmp_path),
                           "cluster_file": "/srv/alpha.yml"}, act, done))
    assert sorted((e["region"], e["instance_id"], e["kind"], e["state"] or "") for e in got) == sorted([
        ("us-east-1", ours_east, "interruption", ""),
        ("us-east-1", ours_east, "state", "shutting-down"),
        ("us-east-1", ours_east, "state", "terminated"),
        ("eu-west-1", ours_west, "rebalance", ""),
    ])
    warning = next(e for e in got if e["kind"] == "interruption")
    assert warning["cluster"] == "alpha" and warning["instance_action"] == "terminate"
    assert warning["event_id"] and warning["time"].endswith("Z")
    assert {e["cluster_file"] for e in got} == {"/srv/alpha.yml"}  # what the rulebook hands the heal
    # the warnings and terminations, with EC2's times, for the pool history (not the rebalance, nor beta's)
    kept = json.loads((tmp_path / "instance-events.json").read_text())
    assert sorted((e["instance_id"], e["kind"], e["state"] or "") for e in kept) == [
        (ours_east, "interruption", ""), (ours_east, "state", "terminated")]
    assert all(e["time"] and e["region"] == "us-east-1" for e in kept)
    # every message was deleted, the foreign ones too
    assert queue_depth(east["queue_url"]) == 0 and queue_depth(west["queue_url"], "eu-west-1") == 0
    # the last event of each region is noted for status.yml (only the cluster's, not the foreign ones)
    noted = json.loads((tmp_path / "last-events.json").read_text())
    assert set(noted) == {"us-east-1", "eu-west-1"}
    assert noted["eu-west-1"]["kind"] == "rebalance" and noted["eu-west-1"]["instance_id"] == ours_west
    assert noted["us-east-1"]["instance_id"] == ours_east and noted["us-east-1"]["time"].endswith("Z")


def test_duplicates_are_dropped(aws):
    made = make_path()
    [instance] = launch("us-east-1", "alpha")
    body = json.dumps({"version": "0", "id": "7c6e0a5e-0000-4000-8000-000000000001",
                       "detail-type": "EC2 Spot Instance Interruption Warning", "source": "aws.ec2",
                       "account": "123456789012", "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                       "region": "us-east-1",
                       "resources": [f"arn:aws:ec2:us-east-1:123456789012:instance/{instance}"],
                       "detail": {"instance-id": instance, "instance-action": "terminate"}})
    sqs = boto3.client("sqs", region_name="us-east-1")

    def act() -> None:
        for _ in range(3):  # SQS delivers at least once: the same event may come again
            sqs.send_message(QueueUrl=made["queue_url"], MessageBody=body)
            time.sleep(0.3)
        sqs.send_message(QueueUrl=made["queue_url"], MessageBody="not an event")

    got = spot(run_source({"cluster_name": "alpha", "regions": ["us-east-1"]}, act, lambda got: len(got) >= 1))
    assert [e["event_id"] for e in got] == ["7c6e0a5e-0000-4000-8000-000000000001"]
    assert queue_depth(made["queue_url"]) == 0


def test_ticks(aws):
    make_path()
    got = run_source({"cluster_name": "alpha", "regions": ["us-east-1"], "tick_seconds": 0.4}, lambda: None,
                     lambda got: len(got) >= 3)
    assert {e["bacalhau_spot"]["kind"] for e in got} == {"tick"}
    assert got[0]["bacalhau_spot"]["cluster"] == "alpha"
    assert "cluster_file" in got[0]["bacalhau_spot"]
    none = run_source({"cluster_name": "alpha", "regions": ["us-east-1"], "tick_seconds": 30,
                       "tick_at_start": False}, lambda: time.sleep(1), lambda got: True)
    assert none == []


def test_throttling_is_survived(aws):
    make_path()
    [instance] = launch("us-east-1", "alpha")

    def act() -> None:
        aws.throttle(4, operations=["ReceiveMessage", "DescribeInstances"])
        aws.interrupt("us-east-1", [instance])

    got = spot(run_source({"cluster_name": "alpha", "regions": ["us-east-1"]}, act, lambda got: len(got) >= 3))
    assert [(e["kind"], e["state"]) for e in got] == [("interruption", None), ("state", "shutting-down"),
                                                      ("state", "terminated")]
    assert len([c for c in aws.calls()["log"] if c["fault"]]) == 4


def test_a_message_whose_instance_cannot_be_looked_up_comes_back_after_the_backoff_not_the_visibility_timeout(aws):
    """The warning is received, but the DescribeInstances that says whose instance it is gets
    throttled: the message must be readable again at once (SQS's default visibility timeout
    is 30 s, a quarter of the warning), so the events come well within it."""
    made = make_path()
    [instance] = launch("us-east-1", "alpha")
    visibility = int(boto3.client("sqs", region_name="us-east-1").get_queue_attributes(
        QueueUrl=made["queue_url"], AttributeNames=["VisibilityTimeout"])["Attributes"]["VisibilityTimeout"])
    assert visibility >= 20

    def act() -> None:
        aws.throttle(2, operations=["DescribeInstances"])  # only the lookup after the receive fails
        aws.interrupt("us-east-1", [instance])

    started = time.monotonic()
    got = spot(run_source({"cluster_name": "alpha", "regions": ["us-east-1"]}, act, lambda got: len(got) >= 3,
                          timeout=visibility - 5))
    assert [(e["kind"], e["state"]) for e in got] == [("interruption", None), ("state", "shutting-down"),
                                                      ("state", "terminated")]
    assert time.monotonic() - started < visibility - 5
    assert len([c for c in aws.calls()["log"] if c["fault"]]) == 2


def test_expired_credentials_say_so_once_then_it_carries_on(aws, caplog):
    make_path()
    [instance] = launch("us-east-1", "alpha")

    def act() -> None:
        aws.expire_credentials(True)
        deadline = time.monotonic() + 12  # several tries meanwhile (a loaded machine backs off later)
        while time.monotonic() < deadline and len([c for c in aws.calls()["log"] if c["fault"]]) < 3:
            time.sleep(0.2)
        aws.expire_credentials(False)
        aws.interrupt("us-east-1", [instance])

    with caplog.at_level(logging.INFO, logger="bacalhau.aws_spot.spot_events"):
        got = spot(run_source({"cluster_name": "alpha", "regions": ["us-east-1"]}, act, lambda got: len(got) >= 3))
    assert len(got) == 3
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, errors
    assert "AWS refused the credentials" in errors[0] and "renew them" in errors[0]
    tries = [c for c in aws.calls()["log"] if c["fault"]]
    assert len(tries) >= 3  # it kept trying, with one line said


def test_a_deleted_queue_is_said_and_found_again(aws, caplog):
    made = make_path()
    [instance] = launch("us-east-1", "alpha")
    sqs = boto3.client("sqs", region_name="us-east-1")

    def act() -> None:
        time.sleep(1.5)  # the source is reading the queue
        sqs.delete_queue(QueueUrl=made["queue_url"])
        deadline = time.monotonic() + 10
        while not any("was deleted" in r.getMessage() for r in list(caplog.records)):
            assert time.monotonic() < deadline, "the source did not notice the queue was deleted"
            time.sleep(0.1)
        make_path()  # create.yml runs again
        aws.interrupt("us-east-1", [instance])

    with caplog.at_level(logging.INFO, logger="bacalhau.aws_spot.spot_events"):
        got = spot(run_source({"cluster_name": "alpha", "regions": ["us-east-1"]}, act, lambda got: len(got) >= 3))
    assert [(e["kind"], e["state"]) for e in got] == [("interruption", None), ("state", "shutting-down"),
                                                      ("state", "terminated")]
    said = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(said) == 1 and "queue bacalhau-alpha-spot-events was deleted" in said[0]


def test_a_queue_not_made_yet_is_waited_for(aws, caplog):
    [instance] = launch("us-east-1", "alpha")

    def act() -> None:
        time.sleep(1)
        make_path()
        time.sleep(0.8)  # found again within resolve_seconds
        aws.interrupt("us-east-1", [instance])

    with caplog.at_level(logging.INFO, logger="bacalhau.aws_spot.spot_events"):
        got = spot(run_source({"cluster_name": "alpha", "regions": ["us-east-1"]}, act, lambda got: len(got) >= 3))
    assert len(got) == 3
    said = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(said) == 1 and "there is no queue bacalhau-alpha-spot-events" in said[0]


def test_an_event_is_deleted_only_once_it_is_on_the_rulebooks_queue(aws):
    """A queue that refuses the event (ansible-rulebook gone) leaves the message in SQS."""
    made = make_path()
    [instance] = launch("us-east-1", "alpha")
    aws.rebalance("us-east-1", [instance])

    class Refusing:
        async def put(self, event: dict) -> None:
            raise RuntimeError("ansible-rulebook is gone")

    async def scenario() -> None:
        task = asyncio.create_task(spot_events.main(Refusing(), dict(FAST, cluster_name="alpha",
                                                                     regions=["us-east-1"])))
        await asyncio.sleep(2)
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass

    asyncio.run(scenario())
    assert queue_depth(made["queue_url"]) == 1


def test_arguments_are_checked():
    with pytest.raises(ValueError, match="cluster_name"):
        asyncio.run(spot_events.main(asyncio.Queue(), {"regions": ["us-east-1"]}))
    with pytest.raises(ValueError, match="regions"):
        asyncio.run(spot_events.main(asyncio.Queue(), {"cluster_name": "alpha"}))
    assert spot_events.path_name("alpha") == path.path_name("alpha")
    assert set(spot_events.KINDS) == {path.INTERRUPTION, path.REBALANCE, path.STATE_CHANGE}


def test_the_regions_come_from_the_cluster_file_as_heal_reads_them():
    names = spot_events.cluster_region_names
    assert names({"regions": ["a-1", {"region": "b-1"}, "a-1"]}) == ["a-1", "b-1"]
    cluster_file = {"cluster_regions": [{"region": "us-east-1", "count": 2}, {"region": "eu-west-1", "count": 1}],
                    "cluster_overflow_regions": [{"region": "us-west-2", "instance_types": ["t3.small"]}],
                    "cluster_orchestrator": {"region": "eu-central-1", "instance_type": "t3.medium"}}
    assert names(cluster_file) == ["us-east-1", "eu-west-1", "us-west-2", "eu-central-1"]
    cluster_file["cluster_orchestrator"] = {"mode": "external", "region": "eu-central-1"}
    assert names(cluster_file) == ["us-east-1", "eu-west-1", "us-west-2"]


def test_normalise_drops_what_is_not_one_of_ec2s_three_events():
    assert spot_events.normalise("{", "a") is None
    assert spot_events.normalise(json.dumps({"source": "aws.ec2", "id": "x", "detail-type": "Other",
                                             "detail": {"instance-id": "i-1"}}), "a") is None
    assert spot_events.normalise(json.dumps({"source": "custom", "id": "x", "detail-type": path.REBALANCE,
                                             "detail": {"instance-id": "i-1"}}), "a") is None
    event = spot_events.normalise(json.dumps({"source": "aws.ec2", "id": "x", "detail-type": path.STATE_CHANGE,
                                              "region": "r", "time": "t",
                                              "detail": {"instance-id": "i-1", "state": "stopped"}}), "a")
    assert event == {"bacalhau_spot": {"kind": "state", "cluster": "a", "instance_id": "i-1", "region": "r",
                                       "state": "stopped", "instance_action": None, "time": "t", "event_id": "x"}}


def test_recent_is_bounded():
    recent = spot_events.Recent(3)
    for key in "abcd":
        recent.add(key)
    assert not recent.seen("a") and all(recent.seen(k) for k in "bcd")
    assert threading.active_count() >= 1


def test_the_cluster_file_is_the_one_ansible_rulebook_was_started_with():
    # ansible-rulebook hands its -e variables to no playbook: the source names the file for the heal
    find = spot_events.rulebook_vars_file
    assert find(["ansible-rulebook", "-r", "bacalhau.aws_spot.autoheal", "-e", "my-cluster.yml", "-i", "l.yml"],
                "/home/ops") == "/home/ops/my-cluster.yml"
    assert find(["ansible-rulebook", "--vars", "/etc/c.yml"], "/") == "/etc/c.yml"
    assert find(["ansible-rulebook", "--vars=c.yml"], "/srv") == "/srv/c.yml"
    assert find(["ansible-rulebook", "-ec.yml"], "/srv") == "/srv/c.yml"
    assert find(["ansible-rulebook", "-r", "x", "-E", "AWS_PROFILE"], "/srv") == ""  # none: "" (an EDA controller)
    given = spot_events.Settings({"cluster_name": "a", "regions": ["us-east-1"], "cluster_file": "/srv/a.yml"})
    assert given.cluster_file == "/srv/a.yml"  # the rulebook's variables name it: that one


def test_an_interruption_warning_older_than_the_reclaim_is_dropped():
    # a source started after a pause finds warnings whose instances EC2 has reclaimed since: draining
    # them is moot (the reclaim's own events, and the tick, heal the cluster)
    now = calendar.timegm(time.strptime("2026-12-06T08:10:00Z", "%Y-%m-%dT%H:%M:%SZ"))
    old = {"kind": "interruption", "time": "2026-12-06T08:00:00Z"}
    fresh = {"kind": "interruption", "time": "2026-12-06T08:09:30Z"}
    assert spot_events.stale(old, 180, now) and not spot_events.stale(fresh, 180, now)
    assert not spot_events.stale({"kind": "state", "time": "2026-12-06T08:00:00Z"}, 180, now)  # the reclaim heals
    assert not spot_events.stale({"kind": "rebalance", "time": "2026-12-06T08:00:00Z"}, 180, now)
    assert not spot_events.stale(old, 0, now)  # 0: never


@pytest.mark.skipif(not Path("/usr/share/zoneinfo/Australia/Sydney").exists(), reason="no tzdata")
def test_the_age_of_a_warning_is_counted_in_utc_whatever_the_hosts_time_zone(monkeypatch):
    # Sydney keeps daylight saving time in December: a local-time reading would be an hour off
    monkeypatch.setenv("TZ", "Australia/Sydney")
    time.tzset()
    try:
        now = calendar.timegm(time.strptime("2026-12-06T08:10:00Z", "%Y-%m-%dT%H:%M:%SZ"))
        assert not spot_events.stale({"kind": "interruption", "time": "2026-12-06T08:09:30Z"}, 180, now)
        assert spot_events.stale({"kind": "interruption", "time": "2026-12-06T08:06:00Z"}, 180, now)
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()
