# -*- coding: utf-8 -*-
# Copyright: bacalhau.aws_spot contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""bacalhau.aws_spot.spot_events: a spot cluster's EC2 events, for ansible-rulebook.

Reads the queues of the cluster's event path (``bacalhau-<cluster>-spot-events``, one per
region, made by ``create.yml``: an EventBridge rule for EC2's spot interruption warnings,
rebalance recommendations and instances going away, sending to an SQS queue), and puts one
event per EC2 event on ansible-rulebook's queue::

    {"bacalhau_spot": {"kind": "interruption" | "rebalance" | "state", "cluster": "demo",
                       "instance_id": "i-...", "region": "us-east-1", "state": "terminated" | null,
                       "time": "2026-12-06T08:00:00Z", "event_id": "...", "cluster_file": "/abs/my-cluster.yml"}}

and every ``tick_seconds`` a ``{"bacalhau_spot": {"kind": "tick", "cluster": "demo", "time": ...}}``
(also one at start when ``tick_at_start``), the backstop for anything lost.

* Every region's queue is long-polled at once (a thread each).
* A message is deleted from SQS only once its event is on ansible-rulebook's queue (or
  when it is dropped): a source killed in between gets it again after the queue's
  visibility timeout, and drops it as a duplicate if it had already put it. A message
  that could not be handled (the ``DescribeInstances`` that says whose instance it is was
  throttled, say) is made visible again at once, with the rest of its batch: it comes
  back after the backoff, not after the queue's visibility timeout (30 s of a 2-minute
  warning).
* Dropped: events about instances that are not the cluster's (EventBridge cannot match
  on tags: ``DescribeInstances`` says, and the answer is cached), duplicates (by event id,
  the last ``dedupe_size`` remembered), and anything that is not one of EC2's three events.
* Throttling and AWS's transient errors: the region's loop backs off (doubling from
  ``backoff_seconds`` up to ``backoff_max_seconds``, with jitter) and carries on.
  Expired or refused credentials: one clear error line, then the same backoff, with the
  credentials read again at each try (a refreshed profile or environment is picked up).
  A queue that is not there (never made, or deleted): one line saying so, then its URL
  is looked up again every ``resolve_seconds``.

Arguments:

  cluster_name: the cluster (required)
  regions: the regions to read (names, or mappings with a region)
  cluster_regions, cluster_overflow_regions, cluster_orchestrator: without regions, the
    cluster file's own variables: their regions (and a managed orchestrator's) are read
  tick_seconds: seconds between ticks (default 300; 0: no ticks)
  tick_at_start: a tick when the source starts (default true): a heal cut short by a
    stopped rulebook is finished at once
  wait_seconds: SQS long-poll wait (default 20, the most SQS allows)
  resolve_seconds: how often a missing queue is looked up again (default 60)
  backoff_seconds, backoff_max_seconds: the backoff after an error (default 1, 60)
  dedupe_size: how many event ids are remembered (default 4096)
  stale_seconds: an interruption warning older than this is dropped (default 180): EC2 reclaimed
    its instance two minutes after it, and the reclaim's own events (and the tick) heal the cluster;
    a source started after a pause does not run heals to drain instances that are gone
  profile: an AWS profile (default: boto3's usual chain: environment, files, instance role)
  endpoint_url: an endpoint for every AWS call (default: boto3's, AWS_ENDPOINT_URL)
  cluster_file: the cluster file the heal reads (default: the variables file ansible-rulebook was
    started with, its ``-e``/``--vars``, as an absolute path; "" when it was started without one,
    as under an EDA controller). Every event carries it as ``cluster_file``: ansible-rulebook
    hands its own variables to no playbook it runs, so the rulebook passes the file's path on and
    the heal reads the file itself
  state_dir: where the last event of each region is noted, for status.yml's "age of the last
    event" (default ~/.config/bacalhau.aws_spot/<cluster>/autoheal, beside the autoheal
    runner's locks; the file last-events.json, read by _events/cluster.py; "" notes nothing),
    and the cluster's interruption warnings and terminations with EC2's exact times
    (instance-events.json, the last MAX_INSTANCE_EVENTS): the pool history takes its end
    times from them (spot_cluster, on this host)

Needs (``docs/iam-policy.json``): ``sqs:GetQueueUrl``, ``sqs:ReceiveMessage``,
``sqs:DeleteMessage`` on the queues, ``ec2:DescribeInstances``.

Example::

    sources:
      - bacalhau.aws_spot.spot_events:
          cluster_name: demo
          regions: [us-east-1, eu-west-1]
"""

from __future__ import annotations

import asyncio
import calendar
import collections
import concurrent.futures
import json
import logging
import os
import random
import sys
import tempfile
import threading
import time
from typing import Any, Callable

import boto3
import botocore.config
import botocore.exceptions

LOGGER = logging.getLogger("bacalhau.aws_spot.spot_events")

MANAGED_BY_KEY = "bacalhau:managed-by"
MANAGED_BY_VALUE = "bacalhau.aws_spot"
CLUSTER_KEY = "bacalhau:cluster"
# EC2's events (source aws.ec2) -> our kind
KINDS = {
    "EC2 Spot Instance Interruption Warning": "interruption",
    "EC2 Instance Rebalance Recommendation": "rebalance",
    "EC2 Instance State-change Notification": "state",
}
THROTTLING = frozenset({
    "Throttling", "ThrottlingException", "RequestLimitExceeded", "RequestThrottled", "TooManyRequestsException",
    "AWS.SimpleQueueService.RequestThrottled", "OverLimit", "SlowDown",
})
TRANSIENT = frozenset({"InternalError", "InternalFailure", "ServiceUnavailable", "Unavailable", "RequestTimeout",
                       "AWS.SimpleQueueService.ServiceUnavailable", "KmsThrottled"})
CREDENTIALS = frozenset({
    "ExpiredToken", "ExpiredTokenException", "RequestExpired", "InvalidClientTokenId", "UnrecognizedClientException",
    "AuthFailure", "SignatureDoesNotMatch", "InvalidAccessKeyId", "AccessDenied", "AccessDeniedException",
    "AWS.SimpleQueueService.AccessDenied",
})
QUEUE_MISSING = frozenset({"AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist"})
INSTANCE_MISSING = frozenset({"InvalidInstanceID.NotFound", "InvalidInstanceID.Malformed"})
MAX_CACHED_INSTANCES = 10000
# An event not on ansible-rulebook's queue by then stays in SQS (it comes back later).
PUT_TIMEOUT = 30


def path_name(cluster_name: str) -> str:
    """The queue's name (plugins/module_utils/_events/path.py ``path_name``)."""
    return f"bacalhau-{cluster_name}-spot-events"


def _code(exc: BaseException) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str((response.get("Error") or {}).get("Code") or "")
    return ""


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _names(entries: Any) -> list[str]:
    """Region names from a list of names or of ``{region: ...}`` mappings (the cluster file's shape)."""
    if isinstance(entries, (str, dict)):
        entries = [entries]
    names = []
    for entry in entries or []:
        name = entry.get("region") if isinstance(entry, dict) else entry
        if name and str(name).strip():
            names.append(str(name).strip())
    return names


def cluster_region_names(args: dict[str, Any]) -> list[str]:
    """Every region whose queue to read: ``regions``, or the cluster file's home regions, its
    overflow regions and a managed orchestrator's region (``playbooks/vars/internal.yml``
    ``_cluster_regions_all`` and the overflow regions, as heal.yml reads them)."""
    names = _names(args.get("regions"))
    if not names:
        names = _names(args.get("cluster_regions")) + _names(args.get("cluster_overflow_regions"))
        orchestrator = args.get("cluster_orchestrator") or {}
        if isinstance(orchestrator, dict) and orchestrator.get("mode", "managed") == "managed":
            names += _names(orchestrator.get("region"))
    return list(dict.fromkeys(names))


def rulebook_vars_file(argv: list[str], cwd: str) -> str:
    """The variables file of ansible-rulebook's command line (``-e FILE``, ``-eFILE``, ``--vars FILE``,
    ``--vars=FILE``; the source runs in ansible-rulebook's own process), absolute; "" when none."""
    found = ""
    for index, arg in enumerate(argv[1:], 1):
        if arg in ("-e", "--vars") and index + 1 < len(argv):
            found = argv[index + 1]
        elif arg.startswith("--vars="):
            found = arg.split("=", 1)[1]
        elif arg.startswith("-e") and len(arg) > 2 and not arg.startswith("--"):
            found = arg[2:]
    return os.path.abspath(os.path.join(cwd, found)) if found else ""


class Settings:
    def __init__(self, args: dict[str, Any]) -> None:
        self.cluster_name = str(args.get("cluster_name") or "").strip()
        if not self.cluster_name:
            raise ValueError("bacalhau.aws_spot.spot_events needs cluster_name: the cluster whose events to read")
        self.regions = cluster_region_names(args)
        if not self.regions:
            raise ValueError("bacalhau.aws_spot.spot_events needs regions (or the cluster file's cluster_regions): "
                             "the cluster's regions")
        self.tick_seconds = float(args.get("tick_seconds", 300))
        self.tick_at_start = bool(args.get("tick_at_start", True))
        self.wait_seconds = int(args.get("wait_seconds", 20))
        self.resolve_seconds = float(args.get("resolve_seconds", 60))
        self.backoff_seconds = float(args.get("backoff_seconds", 1))
        self.backoff_max_seconds = float(args.get("backoff_max_seconds", 60))
        self.dedupe_size = int(args.get("dedupe_size", 4096))
        self.stale_seconds = float(args.get("stale_seconds", 180))
        self.profile = args.get("profile") or None
        self.endpoint_url = args.get("endpoint_url") or None
        default_dir = os.path.join(os.path.expanduser("~"), ".config", "bacalhau.aws_spot", self.cluster_name, "autoheal")
        self.state_dir = str(args["state_dir"]) if args.get("state_dir") is not None else default_dir
        self.cluster_file = str(args.get("cluster_file") or "").strip() or rulebook_vars_file(sys.argv, os.getcwd())


class Backoff:
    """Doubling delays with jitter, reset by a success."""

    def __init__(self, first: float, most: float) -> None:
        self.first, self.most, self.failures = first, most, 0

    def next(self) -> float:
        self.failures += 1
        delay = min(self.most, self.first * (2 ** (self.failures - 1)))
        return delay * random.uniform(0.5, 1.0)

    def reset(self) -> None:
        self.failures = 0


class Recent:
    """The last ``size`` keys seen (bounded memory)."""

    def __init__(self, size: int) -> None:
        self.size = max(1, size)
        self.keys: collections.OrderedDict[str, None] = collections.OrderedDict()
        self.lock = threading.Lock()

    def seen(self, key: str) -> bool:
        with self.lock:
            return key in self.keys

    def add(self, key: str) -> None:
        with self.lock:
            self.keys[key] = None
            self.keys.move_to_end(key)
            while len(self.keys) > self.size:
                self.keys.popitem(last=False)


class Aws:
    """boto3 clients per region and service, made again when the credentials were refused."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.lock = threading.Lock()
        self.session: Any = None
        self.clients: dict[tuple[str, str], Any] = {}

    def client(self, service: str, region: str) -> Any:
        with self.lock:  # botocore sessions are not safe to make clients from in parallel
            if self.session is None:
                self.session = boto3.session.Session(profile_name=self.settings.profile)
            key = (service, region)
            if key not in self.clients:
                config = botocore.config.Config(
                    user_agent_extra="bacalhau.aws_spot", retries={"total_max_attempts": 1, "mode": "standard"},
                    read_timeout=self.settings.wait_seconds + 10, connect_timeout=10)
                self.clients[key] = self.session.client(service, region_name=region, config=config,
                                                        endpoint_url=self.settings.endpoint_url)
            return self.clients[key]

    def forget(self) -> None:
        """Read the credentials again next time (a refreshed profile, environment or role)."""
        with self.lock:
            self.session = None
            self.clients = {}


class Membership:
    """Whether an instance is the cluster's: its tags, by DescribeInstances, cached."""

    def __init__(self, aws: Aws, cluster_name: str) -> None:
        self.aws = aws
        self.cluster_name = cluster_name
        self.known: collections.OrderedDict[tuple[str, str], bool] = collections.OrderedDict()
        self.lock = threading.Lock()

    def ours(self, region: str, instance_id: str) -> bool:
        key = (region, instance_id)
        with self.lock:
            if key in self.known:
                return self.known[key]
        try:
            answer = self.aws.client("ec2", region).describe_instances(InstanceIds=[instance_id])
            instances = [i for r in answer.get("Reservations") or [] for i in r.get("Instances") or []]
        except botocore.exceptions.ClientError as exc:
            if _code(exc) not in INSTANCE_MISSING:
                raise
            instances = []  # long gone (EC2 lists terminated instances for about an hour): not ours to heal
        tags = {t["Key"]: t["Value"] for i in instances for t in i.get("Tags") or []}
        ours = tags.get(MANAGED_BY_KEY) == MANAGED_BY_VALUE and tags.get(CLUSTER_KEY) == self.cluster_name
        with self.lock:
            self.known[key] = ours
            while len(self.known) > MAX_CACHED_INSTANCES:
                self.known.popitem(last=False)
        return ours


def normalise(body: str, cluster_name: str) -> dict[str, Any] | None:
    """Our event for an EventBridge event from EC2, or None for anything else."""
    try:
        event = json.loads(body)
    except ValueError:
        return None
    if not isinstance(event, dict) or event.get("source") != "aws.ec2":
        return None
    kind = KINDS.get(str(event.get("detail-type")))
    detail = event.get("detail") if isinstance(event.get("detail"), dict) else {}
    instance_id = detail.get("instance-id")
    if kind is None or not instance_id or not event.get("id"):
        return None
    return {"bacalhau_spot": {
        "kind": kind,
        "cluster": cluster_name,
        "instance_id": instance_id,
        "region": event.get("region"),
        "state": detail.get("state") if kind == "state" else None,
        "instance_action": detail.get("instance-action") if kind == "interruption" else None,
        "time": event.get("time"),
        "event_id": event["id"],
    }}


class RegionReader:
    """One region's queue, long-polled in a thread of its own."""

    def __init__(self, region: str, settings: Settings, aws: Aws, membership: Membership, recent: Recent,
                 queue: asyncio.Queue, loop: asyncio.AbstractEventLoop,
                 threads: concurrent.futures.ThreadPoolExecutor, stopped: threading.Event) -> None:
        self.region = region
        self.threads = threads
        self.stopped = stopped  # set when main() ends: a poll under way then does nothing more
        self.settings = settings
        self.aws = aws
        self.membership = membership
        self.recent = recent
        self.queue = queue
        self.loop = loop
        self.url: str | None = None
        self.backoff = Backoff(settings.backoff_seconds, settings.backoff_max_seconds)
        self.said: str | None = None  # the last problem reported (each is said once until it clears)
        self.name = path_name(settings.cluster_name)

    def _say(self, problem: str, message: str, *args: Any) -> None:
        if self.said != problem and not self.stopped.is_set():
            LOGGER.error(message, *args)
            self.said = problem

    def _cleared(self) -> None:
        if self.said is not None:
            LOGGER.info("bacalhau.aws_spot.spot_events: %s: reading queue %s again", self.region, self.name)
            self.said = None
        self.backoff.reset()

    async def run(self) -> None:
        while True:
            try:
                delay = await self.loop.run_in_executor(self.threads, self.poll_once)
            except asyncio.CancelledError:
                raise
            except botocore.exceptions.ClientError as exc:
                delay = self._failed(exc)
            except (botocore.exceptions.BotoCoreError, OSError) as exc:
                self._say("connection", "bacalhau.aws_spot.spot_events: %s: cannot reach SQS or EC2 (%s); "
                          "retrying with backoff", self.region, exc)
                delay = self.backoff.next()
            except Exception as exc:  # pylint: disable=broad-except
                # the event could not be handed over: its message stays in SQS and comes back
                self._say(f"put:{type(exc).__name__}", "bacalhau.aws_spot.spot_events: %s: could not hand an "
                          "event to ansible-rulebook (%s); it stays in the queue and comes back", self.region, exc)
                delay = self.backoff.next()
            if delay:
                await asyncio.sleep(delay)

    def _failed(self, exc: botocore.exceptions.ClientError) -> float:
        code = _code(exc)
        if code in QUEUE_MISSING:
            self.url = None
            self._say("queue", "bacalhau.aws_spot.spot_events: %s: queue %s was deleted; looking it up again every "
                      "%ss (create.yml makes it)", self.region, self.name, self.settings.resolve_seconds)
            return self.settings.resolve_seconds
        if code in CREDENTIALS:
            self.aws.forget()
            self._say("credentials", "bacalhau.aws_spot.spot_events: %s: AWS refused the credentials (%s: %s); "
                      "renew them (or fix the profile, environment or role): retrying with backoff",
                      self.region, code, (exc.response.get("Error") or {}).get("Message", ""))
            return self.backoff.next()
        if code in THROTTLING or code in TRANSIENT:
            LOGGER.warning("bacalhau.aws_spot.spot_events: %s: %s; backing off", self.region, code)
            return self.backoff.next()
        self._say(f"error:{code}", "bacalhau.aws_spot.spot_events: %s: %s; retrying with backoff",
                  self.region, exc)
        return self.backoff.next()

    # -- in the region's thread
    def poll_once(self) -> float:
        """One long poll (after finding the queue); the seconds to wait before the next."""
        if self.stopped.is_set():
            return 0
        sqs = self.aws.client("sqs", self.region)
        if self.url is None:
            try:
                self.url = sqs.get_queue_url(QueueName=self.name)["QueueUrl"]
            except botocore.exceptions.ClientError as exc:
                if _code(exc) not in QUEUE_MISSING:
                    raise
                self._say("queue", "bacalhau.aws_spot.spot_events: %s: there is no queue %s (the cluster's "
                          "event path is made by create.yml); looking again every %ss",
                          self.region, self.name, self.settings.resolve_seconds)
                return self.settings.resolve_seconds
        answer = sqs.receive_message(QueueUrl=self.url, MaxNumberOfMessages=10,
                                     WaitTimeSeconds=self.settings.wait_seconds)
        self._cleared()
        messages = answer.get("Messages") or []
        for index, message in enumerate(messages):
            if self.stopped.is_set():
                self.release(sqs, messages[index:])  # not handed over: for the next source to read
                break
            try:
                self.handle(sqs, message)
            except Exception:
                self.release(sqs, messages[index:])
                raise
        return 0

    def release(self, sqs: Any, messages: list[dict[str, Any]]) -> None:
        """Make messages visible again now (best effort: else they come back after the queue's
        visibility timeout anyway)."""
        for message in messages:
            try:
                sqs.change_message_visibility(QueueUrl=self.url, ReceiptHandle=message["ReceiptHandle"],
                                              VisibilityTimeout=0)
            except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as exc:
                LOGGER.debug("spot_events: %s: a message stays invisible until its timeout (%s)", self.region, exc)

    def handle(self, sqs: Any, message: dict[str, Any]) -> None:
        event = normalise(message.get("Body") or "", self.settings.cluster_name)
        if event is not None:
            spot = event["bacalhau_spot"]
            if self.recent.seen(spot["event_id"]):
                LOGGER.debug("spot_events: duplicate event %s dropped", spot["event_id"])
            elif stale(spot, self.settings.stale_seconds):
                LOGGER.info("bacalhau.aws_spot.spot_events: %s: the interruption warning for %s of %s is older than "
                            "%.0f s (its instance has been reclaimed): dropped", self.region, spot["instance_id"],
                            spot["time"], self.settings.stale_seconds)
                self.recent.add(spot["event_id"])
            elif not self.membership.ours(spot["region"] or self.region, spot["instance_id"]):
                LOGGER.debug("spot_events: %s is not cluster %s's: dropped", spot["instance_id"],
                             self.settings.cluster_name)
                self.recent.add(spot["event_id"])
            else:
                spot["cluster_file"] = self.settings.cluster_file
                # on ansible-rulebook's queue first; only then is the message deleted
                asyncio.run_coroutine_threadsafe(self.queue.put(event), self.loop).result(timeout=PUT_TIMEOUT)
                self.recent.add(spot["event_id"])
                note_last_event(self.settings.state_dir, spot["region"] or self.region, spot)
                note_instance_event(self.settings.state_dir, spot["region"] or self.region, spot)
        try:
            sqs.delete_message(QueueUrl=self.url, ReceiptHandle=message["ReceiptHandle"])
        except botocore.exceptions.ClientError as exc:
            # it comes back after the visibility timeout, and is then dropped as a duplicate
            LOGGER.warning("bacalhau.aws_spot.spot_events: %s: could not delete a message (%s)", self.region, exc)


def stale(spot: dict[str, Any], seconds: float, now: float | None = None) -> bool:
    """An interruption warning whose time is more than ``seconds`` ago (EC2's ``time``, UTC)."""
    if spot.get("kind") != "interruption" or seconds <= 0:
        return False
    try:
        at = calendar.timegm(time.strptime(str(spot.get("time")), "%Y-%m-%dT%H:%M:%SZ"))
    except ValueError:
        return False
    return (time.time() if now is None else now) - at > seconds


_NOTE_LOCK = threading.Lock()  # one thread per region writes the state files


def _rewrite_state(directory: str, name: str, empty: type, change: Callable[[Any], Any]) -> None:
    """``directory/name`` read (``empty()`` when missing, unreadable or not an ``empty``), handed to
    ``change`` (which returns what to write, or None to leave the file as it is), and written whole
    and atomically (a temporary file, then a rename). Never raises: these files are niceties for
    status.yml and the pool history, the event is not."""
    path = os.path.join(directory, name)
    with _NOTE_LOCK:
        try:
            os.makedirs(directory, mode=0o700, exist_ok=True)
            try:
                with open(path, encoding="utf-8") as handle:
                    data = json.load(handle)
            except (OSError, ValueError):
                data = empty()
            if not isinstance(data, empty):
                data = empty()
            data = change(data)
            if data is None:
                return
            fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{name}.")
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(data, handle, sort_keys=True)
            os.replace(tmp, path)
        except OSError as exc:
            LOGGER.debug("spot_events: could not note the event in %s (%s)", path, exc)


MAX_INSTANCE_EVENTS = 2000


def note_instance_event(directory: str, region: str, spot: dict[str, Any]) -> None:
    """Append an interruption warning or a termination to ``directory/instance-events.json``
    (``[{"kind", "state", "time", "instance_id", "region", "event_id"}]``, oldest first, the last
    :data:`MAX_INSTANCE_EVENTS`): the format ``plugins/module_utils/_events/cluster.py`` reads for
    the pool history's exact end times. Never raises: the history falls back to what EC2 lists."""
    if not directory or not (spot.get("kind") == "interruption" or spot.get("state") == "terminated"):
        return

    def append(data: list) -> list | None:
        if any(isinstance(e, dict) and e.get("event_id") == spot.get("event_id") for e in data):
            return None
        data.append({"kind": spot.get("kind"), "state": spot.get("state"), "time": spot.get("time"),
                     "instance_id": spot.get("instance_id"), "region": region, "event_id": spot.get("event_id")})
        return data[-MAX_INSTANCE_EVENTS:]

    _rewrite_state(directory, "instance-events.json", list, append)


def note_last_event(directory: str, region: str, spot: dict[str, Any]) -> None:
    """``directory/last-events.json``: ``{region: {"time", "received", "kind", "instance_id"}}`` (the
    format ``plugins/module_utils/_events/cluster.py`` reads for status.yml). Never raises: the age
    shown by status is a nicety, the event is not."""
    if not directory:
        return

    def note(data: dict) -> dict:
        data[region] = {"time": spot.get("time"), "received": _now(), "kind": spot.get("kind"),
                        "instance_id": spot.get("instance_id")}
        return data

    _rewrite_state(directory, "last-events.json", dict, note)


async def ticks(queue: asyncio.Queue, settings: Settings) -> None:
    if settings.tick_seconds <= 0:
        return
    if settings.tick_at_start:
        await queue.put(tick(settings))
    while True:
        await asyncio.sleep(settings.tick_seconds)
        await queue.put(tick(settings))


def tick(settings: Settings) -> dict[str, Any]:
    return {"bacalhau_spot": {"kind": "tick", "cluster": settings.cluster_name, "time": _now(),
                              "cluster_file": settings.cluster_file}}


async def main(queue: asyncio.Queue, args: dict[str, Any]) -> None:
    """ansible-rulebook's entry point: runs until cancelled."""
    settings = Settings(args)
    aws = Aws(settings)
    membership = Membership(aws, settings.cluster_name)
    recent = Recent(settings.dedupe_size)
    loop = asyncio.get_running_loop()
    # a thread per region: every queue is long-polled at once, however many regions
    threads = concurrent.futures.ThreadPoolExecutor(max_workers=len(settings.regions),
                                                    thread_name_prefix="spot_events")
    stopped = threading.Event()
    readers = [RegionReader(region, settings, aws, membership, recent, queue, loop, threads, stopped)
               for region in settings.regions]
    LOGGER.info("bacalhau.aws_spot.spot_events: reading %s in %s", path_name(settings.cluster_name),
                ", ".join(settings.regions))
    tasks = [asyncio.create_task(reader.run(), name=f"spot_events-{reader.region}") for reader in readers]
    tasks.append(asyncio.create_task(ticks(queue, settings), name="spot_events-ticks"))
    try:
        await asyncio.gather(*tasks)
    finally:
        stopped.set()
        for task in tasks:
            task.cancel()
        threads.shutdown(wait=False, cancel_futures=True)  # a poll under way ends within wait_seconds


if __name__ == "__main__":
    # by hand: python spot_events.py CLUSTER REGION... prints the events
    class _Printer:
        async def put(self, event: dict[str, Any]) -> None:
            print(json.dumps(event), flush=True)

    logging.basicConfig(level=logging.INFO)
    asyncio.run(main(_Printer(), {"cluster_name": sys.argv[1], "regions": sys.argv[2:]}))  # type: ignore[arg-type]
