# -*- coding: utf-8 -*-
# Copyright: bacalhau.aws_spot contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What the cluster's own nodes taught about each pool: the pool history. Private.

Each time the engine reads the cluster it hands the instances it saw (running ones, and
the terminated ones ``DescribeInstances`` still lists for about an hour) to
:func:`observe`, which records per instance: its pool (region, zone, instance type), its
market, its role, when it was launched, and - once it has ended - when and why:

``spot-interruption``
    EC2 took it back: its ``StateReason.Code`` is ``Server.SpotInstanceTermination``
    (or ``Server.SpotInstanceShutdown`` for a stop). AWS's code wins over anything else.
    It is also the end of a node this collection let go after EC2's interruption warning
    (make before break: its replacement joined before the reclaim): released with reason
    ``spot-interruption``.
``rebalance``
    this collection ended it because EC2 sent a rebalance recommendation for it (a pool
    at elevated risk): released with reason ``rebalance``.
``by-collection``
    this collection ended it for its own reasons (scale down, a move to a cheaper pool,
    a replaced fallback, destroy): released with any other reason.
``by-someone-else``
    terminated, and neither EC2's interruption nor a release of ours says why.
``unknown``
    it was running at an earlier read and a later complete read no longer lists it at
    all (ended more than about an hour before that read).

How this collection's own terminations are told apart: before it terminates an
instance the engine calls :meth:`History.release` (the reason is kept in the history file,
written before the ``TerminateInstances`` call), and may also tag the instance with
:data:`RELEASE_TAG` = the reason (which any controller then sees for as long as EC2 lists
the instance). Either is enough.

Times: the exact time of an end comes from, in order, an event given to :func:`observe`
(EventBridge's ``EC2 Instance State-change Notification`` for ``terminated``, or ``EC2
Spot Instance Interruption Warning`` + two minutes), the time in the instance's
``StateTransitionReason`` (``User initiated (2026-12-06 07:00:00 GMT)``), a release of
ours (its time); otherwise the time of the read that first saw it ended (an upper bound:
``end_exact`` false; a later exact time replaces it).

The history is kept per cluster in ``~/.config/bacalhau.aws_spot/<cluster>/pool-history.json``
(:func:`history_path`), written whole and atomically (a temporary file in the same
directory, then a rename: a run killed half-way leaves the previous file). Records are
merged by instance id: observing the same instances again changes nothing. The file is
bounded: running instances are always kept; ended ones within ``window_days`` of the
newest, at most ``max_records`` records in all. A missing file starts an empty history;
a corrupt one is set aside (``pool-history.json.corrupt``) and rebuilt from what the next
read sees, with a warning; neither ever fails a run.

API (what the engine calls)::

    history, warning = load(history_path(cluster), expect_existing=bool(instances))
    history.observe(instances_by_region, now, complete_regions=regions_read_with_terminated,
                    events=eventbridge_events)
    history.release(instance_ids, "scale-down" | "moved" | "rebalance" | ..., now)  # before terminating
    save(path, history)
    history.records -> {instance_id: record}
"""

from __future__ import annotations

import datetime
import json
import os
import re
import tempfile
from typing import Any, Iterable

HISTORY_FILE = "pool-history.json"
FORMAT_VERSION = 1
DEFAULT_MAX_RECORDS = 2000
DEFAULT_WINDOW_DAYS = 30
# EC2 leaves terminated instances in DescribeInstances for about an hour
LISTED_AFTER_END = datetime.timedelta(hours=1)
SPOT_NOTICE = datetime.timedelta(minutes=2)  # an interruption warning comes two minutes before the end
RELEASE_KEPT = datetime.timedelta(days=1)  # a release whose instance was never seen ended is forgotten after this
# a release whose instance still runs this long after it was announced was not carried out (a run
# killed between its save and TerminateInstances, or a plan changed): it is dropped
RELEASE_GRACE = datetime.timedelta(hours=1)

INTERRUPTION_CODES = frozenset({"Server.SpotInstanceTermination", "Server.SpotInstanceShutdown"})
RELEASE_TAG = "bacalhau:released"  # value: the release reason, set before we terminate
SPOT_INTERRUPTION = "spot-interruption"
REBALANCE = "rebalance"
BY_COLLECTION = "by-collection"
BY_SOMEONE_ELSE = "by-someone-else"
UNKNOWN = "unknown"
END_REASONS = (SPOT_INTERRUPTION, REBALANCE, BY_COLLECTION, BY_SOMEONE_ELSE, UNKNOWN)
# ends that count against a pool: EC2 took the node back, or warned it would
TAKEN_BACK = frozenset({SPOT_INTERRUPTION, REBALANCE})


def end_reason_of_release(reason: str | None) -> str:
    """The end reason of an instance this collection let go with ``reason``: a node drained after
    EC2's interruption warning was taken back by EC2 (it only went a little earlier, after its
    replacement joined), one drained for a rebalance recommendation too; anything else was ours."""
    return reason if reason in (SPOT_INTERRUPTION, REBALANCE) else BY_COLLECTION


ENDED_STATES = ("shutting-down", "terminated", "stopping", "stopped")

_ROLE_KEY = "bacalhau:role"
_MARKET_TAG = "bacalhau:market"  # _placement.pools.FALLBACK_TAG (not imported: this module stays import-light)
_TRANSITION_TIME = re.compile(r"\((\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2})(?: (?:GMT|UTC))?\)")


# --------------------------------------------------------------------------- times
def utc(value: Any) -> datetime.datetime | None:
    """An aware UTC datetime from a datetime or an ISO 8601 string (None stays None)."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime.datetime):
        stamp = value
    else:
        stamp = datetime.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=datetime.timezone.utc)
    return stamp.astimezone(datetime.timezone.utc)


def iso(value: datetime.datetime | None) -> str | None:
    return None if value is None else utc(value).isoformat().replace("+00:00", "Z")


def hours(start: datetime.datetime, end: datetime.datetime) -> float:
    return max(0.0, (end - start).total_seconds() / 3600.0)


def pool_key(record: dict[str, Any]) -> tuple[str, str, str]:
    """(region, zone, instance type) of a record (or of a ``Pool``'s ``as_dict`` plus region)."""
    return (record["region"], record.get("zone") or record.get("availability_zone"), record["instance_type"])


def _tags(instance: dict[str, Any]) -> dict[str, str]:
    return {t.get("Key"): t.get("Value") for t in instance.get("Tags") or []}


def _transition_time(instance: dict[str, Any]) -> datetime.datetime | None:
    match = _TRANSITION_TIME.search(str(instance.get("StateTransitionReason") or ""))
    if not match:
        return None
    return datetime.datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S").replace(tzinfo=datetime.timezone.utc)


def event_times(events: Iterable[dict[str, Any]] | None) -> dict[str, datetime.datetime]:
    """Instance id -> exact end time, from EventBridge EC2 events (other events are ignored)."""
    out: dict[str, datetime.datetime] = {}
    for event in events or []:
        detail = event.get("detail") or {}
        kind, instance_id, at = event.get("detail-type"), detail.get("instance-id"), utc(event.get("time"))
        if not instance_id or at is None:
            continue
        if kind == "EC2 Instance State-change Notification" and detail.get("state") == "terminated":
            out[instance_id] = at  # the end itself: wins over a warning
        elif kind == "EC2 Spot Instance Interruption Warning" and instance_id not in out:
            action_at = utc(detail.get("instance-action-time")) if detail.get("instance-action-time") else None
            out[instance_id] = action_at or at + SPOT_NOTICE
    return out


# --------------------------------------------------------------------------- the history
class History:
    """Records by instance id, and the releases (our own terminations) announced."""

    def __init__(self, records: dict[str, dict[str, Any]] | None = None,
                 released: dict[str, dict[str, Any]] | None = None) -> None:
        self.records: dict[str, dict[str, Any]] = dict(records or {})
        self.released: dict[str, dict[str, Any]] = dict(released or {})

    # -- what the engine tells
    def release(self, instance_ids: Iterable[str], reason: str, now: datetime.datetime) -> None:
        """Announce that this collection is about to terminate these instances, and why
        (``spot-interruption`` for a node let go after EC2's interruption warning, before its
        reclaim; ``rebalance`` for a rebalance recommendation acted on; anything else counts as
        ``by-collection``). Save before terminating, so a killed run still knows."""
        for instance_id in instance_ids:
            self.released.setdefault(instance_id, {"reason": str(reason), "at": iso(now)})

    def observe(
        self,
        instances: dict[str, list[dict[str, Any]]],
        now: datetime.datetime,
        *,
        complete_regions: Iterable[str] = (),
        events: Iterable[dict[str, Any]] | None = None,
    ) -> bool:
        """Merge what one read saw (region -> ``DescribeInstances`` instances, any state).

        ``complete_regions``: regions whose read listed every instance of the cluster
        including the terminated ones; a record still open there that the read did not
        list is closed as ``unknown``. Returns True when a record changed.
        """
        now = utc(now)
        exact = event_times(events)
        changed = False
        seen: set[str] = set()
        for region, listed in instances.items():
            for instance in listed:
                instance_id = instance.get("InstanceId")
                if not instance_id:
                    continue
                seen.add(instance_id)
                record = self._record_of(region, instance, now, exact.get(instance_id))
                release = self.released.get(instance_id)
                if record["end_time"] is None and release is not None and now - utc(release["at"]) > RELEASE_GRACE:
                    del self.released[instance_id]
                    changed = True
                changed |= self._merge(record)
        for instance_id, at in exact.items():  # an event about a record this read did not list
            record = self.records.get(instance_id)
            if record is not None and instance_id not in seen:
                changed |= self._exact_end(record, at)
        complete = set(complete_regions)
        for instance_id, record in self.records.items():
            if record["end_time"] is None and record["region"] in complete and instance_id not in seen:
                record.update(end_time=iso(now), end_exact=False,
                              end_reason=self._released_reason(instance_id) or UNKNOWN,
                              release_reason=(self.released.get(instance_id) or {}).get("reason"))
                changed = True
        return changed

    # -- reading it
    def ended(self) -> list[dict[str, Any]]:
        return [r for r in self.records.values() if r["end_time"] is not None]

    def running(self) -> list[dict[str, Any]]:
        return [r for r in self.records.values() if r["end_time"] is None]

    def as_list(self) -> list[dict[str, Any]]:
        """The records, oldest launch first (for a result or a report)."""
        return sorted((dict(r) for r in self.records.values()), key=lambda r: (r["launch_time"] or "", r["instance_id"]))

    # -- bounds
    def bound(self, now: datetime.datetime, max_records: int = DEFAULT_MAX_RECORDS,
              window_days: float = DEFAULT_WINDOW_DAYS) -> int:
        """Drop ended records older than the window, then the oldest ended ones past
        ``max_records`` (running ones are always kept). Returns how many went."""
        horizon = utc(now) - datetime.timedelta(days=window_days)
        before = len(self.records)
        keep = {i: r for i, r in self.records.items() if r["end_time"] is None or utc(r["end_time"]) >= horizon}
        ended = sorted((r for r in keep.values() if r["end_time"] is not None),
                       key=lambda r: (r["end_time"], r["instance_id"]), reverse=True)
        room = max(0, max_records - (len(keep) - len(ended)))
        for record in ended[room:]:
            del keep[record["instance_id"]]
        self.records = keep
        # a release is needed until its instance's record is closed (or it is long past)
        self.released = {i: r for i, r in self.released.items()
                         if (i in self.records and self.records[i]["end_time"] is None)
                         or (i not in self.records and utc(r["at"]) >= utc(now) - RELEASE_KEPT)}
        return before - len(self.records)

    # -- internals
    def _released_reason(self, instance_id: str) -> str | None:
        release = self.released.get(instance_id)
        if release is None:
            return None
        return end_reason_of_release(release.get("reason"))

    def _record_of(self, region: str, instance: dict[str, Any], now: datetime.datetime,
                   event_end: datetime.datetime | None) -> dict[str, Any]:
        tags = _tags(instance)
        state = (instance.get("State") or {}).get("Name")
        lifecycle = instance.get("InstanceLifecycle") or "on-demand"
        record: dict[str, Any] = {
            "instance_id": instance["InstanceId"],
            "region": region,
            "zone": (instance.get("Placement") or {}).get("AvailabilityZone"),
            "instance_type": instance.get("InstanceType"),
            "market": "spot" if lifecycle == "spot" else "on-demand",
            "role": tags.get(_ROLE_KEY),
            "fallback": tags.get(_MARKET_TAG) == "on-demand-fallback",
            "launch_time": iso(utc(instance.get("LaunchTime"))),
            "end_time": None,
            "end_exact": False,
            "end_reason": None,
            "state_reason": None,
            "release_reason": None,
        }
        if state not in ENDED_STATES:
            return record
        code = (instance.get("StateReason") or {}).get("Code")
        release = self.released.get(instance["InstanceId"])
        if code in INTERRUPTION_CODES:
            reason = SPOT_INTERRUPTION
        elif tags.get(RELEASE_TAG) or release:
            reason = end_reason_of_release(tags.get(RELEASE_TAG) or (release or {}).get("reason"))
        else:
            reason = BY_SOMEONE_ELSE
        end, end_exact = event_end, event_end is not None
        if end is None:
            end = _transition_time(instance)
            end_exact = end is not None
        if end is None and release is not None and code not in INTERRUPTION_CODES:
            end, end_exact = utc(release["at"]), True
        record.update(end_time=iso(end or now), end_exact=end_exact, end_reason=reason, state_reason=code,
                      release_reason=tags.get(RELEASE_TAG) or (release or {}).get("reason"))
        return record

    def _merge(self, new: dict[str, Any]) -> bool:
        old = self.records.get(new["instance_id"])
        if old is None:
            self.records[new["instance_id"]] = new
            return True
        merged = dict(old)
        for key in ("zone", "instance_type", "market", "role", "launch_time"):
            if merged.get(key) is None and new.get(key) is not None:
                merged[key] = new[key]
        merged["fallback"] = bool(old.get("fallback") or new.get("fallback"))
        if new["end_time"] is not None:
            if merged["end_time"] is None:
                for key in ("end_time", "end_exact", "end_reason", "state_reason", "release_reason"):
                    merged[key] = new[key]
            else:
                if new["end_exact"] and not merged["end_exact"]:
                    merged["end_time"], merged["end_exact"] = new["end_time"], True
                # AWS's own interruption code wins over what was guessed before
                if new["end_reason"] == SPOT_INTERRUPTION or merged["end_reason"] == UNKNOWN:
                    merged["end_reason"], merged["state_reason"] = new["end_reason"], new["state_reason"]
        if merged == old:
            return False
        self.records[new["instance_id"]] = merged
        return True

    @staticmethod
    def _exact_end(record: dict[str, Any], at: datetime.datetime) -> bool:
        if record["end_time"] is None or record["end_exact"]:
            return False
        record.update(end_time=iso(at), end_exact=True)
        return True

    # -- the file's shape
    def as_document(self) -> dict[str, Any]:
        return {"version": FORMAT_VERSION, "records": [self.records[i] for i in sorted(self.records)],
                "released": {i: self.released[i] for i in sorted(self.released)}}

    @classmethod
    def from_document(cls, document: Any) -> "History":
        """Raises ValueError when ``document`` is not a history this version wrote."""
        if not isinstance(document, dict) or document.get("version") != FORMAT_VERSION:
            raise ValueError("not a pool history of this version")
        records: dict[str, dict[str, Any]] = {}
        for record in document.get("records") or []:
            if not isinstance(record, dict) or not isinstance(record.get("instance_id"), str) \
                    or not isinstance(record.get("region"), str):
                raise ValueError(f"not a pool history record: {record!r}")
            for key in ("launch_time", "end_time"):
                utc(record.get(key))  # raises ValueError on a broken time
            record.setdefault("end_time", None)
            record.setdefault("end_exact", False)
            record.setdefault("end_reason", None)
            record.setdefault("release_reason", None)
            records[record["instance_id"]] = record
        released = document.get("released") or {}
        if not isinstance(released, dict) or not all(isinstance(v, dict) and "at" in v for v in released.values()):
            raise ValueError("not a pool history's releases")
        return cls(records, released)


# --------------------------------------------------------------------------- the file
def config_dir(cluster: str, base: str | None = None) -> str:
    """``~/.config/bacalhau.aws_spot/<cluster>`` (``base`` instead of ``~/.config/bacalhau.aws_spot``)."""
    root = base or os.path.join(os.path.expanduser("~"), ".config", "bacalhau.aws_spot")
    return os.path.join(root, cluster)


def history_path(cluster: str, base: str | None = None) -> str:
    return os.path.join(config_dir(cluster, base), HISTORY_FILE)


def load(path: str, expect_existing: bool = False) -> tuple[History, str | None]:
    """The history in ``path`` and a warning, or None. Never raises for the file's sake.

    A missing file is an empty history (warned about only when ``expect_existing``: the
    cluster has instances, so a history was expected). A corrupt one is moved aside to
    ``<path>.corrupt`` and an empty history returned, with a warning; the next read
    rebuilds what EC2 still lists.
    """
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except FileNotFoundError:
        warning = None
        if expect_existing:
            warning = (f"the pool history {path} is missing; it is rebuilt from the instances EC2 still lists "
                       "(interruptions more than about an hour old are forgotten)")
        return History(), warning
    except OSError as exc:
        return History(), f"the pool history {path} could not be read ({exc}); placement starts without it"
    try:
        return History.from_document(json.loads(text)), None
    except (ValueError, TypeError, KeyError) as exc:
        aside = f"{path}.corrupt"
        try:
            os.replace(path, aside)
            kept = f"; the broken file was kept as {aside}"
        except OSError:
            kept = ""
        return History(), (f"the pool history {path} was unreadable ({exc}); it is rebuilt from the instances "
                           f"EC2 still lists{kept}")


def save(path: str, history: History) -> None:
    """Write the history whole, atomically: a temporary file beside it, flushed, then renamed
    over it. A run killed half-way leaves the old file and, at worst, a temporary file that
    the next save removes. Raises OSError (the caller warns; a run never fails for it)."""
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, mode=0o700, exist_ok=True)
    prefix = f".{os.path.basename(path)}."
    for name in os.listdir(directory):  # leftovers of a killed save
        if name.startswith(prefix) and name.endswith(".tmp"):
            try:
                os.unlink(os.path.join(directory, name))
            except OSError:
                pass
    handle, temporary = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=directory)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            json.dump(history.as_document(), out, indent=1, sort_keys=True)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise
