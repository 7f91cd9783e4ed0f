# -*- coding: utf-8 -*-
# Copyright: bacalhau.aws_spot contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The event path of a whole cluster: :mod:`.path` in every region it uses, and what status
shows of it. Private.

``spot_cluster`` (``autoheal: true``, the cluster file's ``cluster_autoheal``) calls
:func:`ensure_all` once per converge or heal, for the compute, overflow and orchestrator
regions at once; in check mode it says what it would make. ``autoheal: false`` makes no call
at all: a path made earlier is left as it is (nothing reads it; its messages expire after an
hour) until ``destroy.yml`` or the nuke removes it.

The age of the last event: SQS says how many messages wait, not when the last one came, and
a queue the event source reads is empty most of the time. So the event source
(``bacalhau.aws_spot.spot_events``) writes, beside the cluster's other state on the host that
runs the rulebook, ``~/.config/bacalhau.aws_spot/<cluster>/autoheal/last-events.json``:
``{region: {"time": <the event's time>, "received": <when it was handed over>, "kind",
"instance_id"}}`` (:func:`record_event`). :func:`last_events` reads it back; on another host
the age is unknown (``None``), and status says so.

Exact end times for the pool history: the source also keeps the cluster's interruption warnings
and terminations, with EC2's times, in ``instance-events.json`` beside it; :func:`instance_events`
gives them back as EventBridge events (``_placement.history.event_times`` reads those), and
``_cluster.learning`` hands them to every read of the engine on that host.
"""

from __future__ import annotations

import datetime
import json
import os
import tempfile
from typing import Any, Callable

from ansible_collections.bacalhau.aws_spot.plugins.module_utils._aws.common import AwsSpotError
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._aws.common import error_text
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._aws.common import run_per_region
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._events import path as event_path

LAST_EVENTS_FILE = "last-events.json"
INSTANCE_EVENTS_FILE = "instance-events.json"
_DETAIL_TYPES = {"interruption": "EC2 Spot Instance Interruption Warning",
                 "state": "EC2 Instance State-change Notification"}


def state_dir(cluster_name: str, base: str | None = None) -> str:
    """``~/.config/bacalhau.aws_spot/<cluster>/autoheal`` (the autoheal runner's directory too)."""
    root = base or os.path.join(os.path.expanduser("~"), ".config", "bacalhau.aws_spot")
    return os.path.join(root, cluster_name, "autoheal")


def _parse_time(value: Any) -> datetime.datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        when = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=datetime.timezone.utc)


def last_events(directory: str) -> dict[str, dict[str, Any]]:
    """What :func:`record_event` wrote (``{}`` when there is nothing, or nothing readable)."""
    try:
        with open(os.path.join(directory, LAST_EVENTS_FILE), encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, ValueError):
        return {}
    return {str(k): v for k, v in data.items() if isinstance(v, dict)} if isinstance(data, dict) else {}


def instance_events(directory: str) -> list[dict[str, Any]]:
    """The interruption warnings and terminations the event source kept (``instance-events.json``),
    as EventBridge events (``detail-type``, ``time``, ``detail: {instance-id, state}``); ``[]`` when
    there is nothing, or nothing readable."""
    try:
        with open(os.path.join(directory, INSTANCE_EVENTS_FILE), encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, ValueError):
        return []
    out = []
    for entry in data if isinstance(data, list) else []:
        if not isinstance(entry, dict) or entry.get("kind") not in _DETAIL_TYPES or not entry.get("instance_id"):
            continue
        detail = {"instance-id": str(entry["instance_id"])}
        if entry.get("state"):
            detail["state"] = str(entry["state"])
        out.append({"detail-type": _DETAIL_TYPES[entry["kind"]], "time": entry.get("time"), "detail": detail,
                    "region": entry.get("region")})
    return out


def record_event(directory: str, region: str, event: dict[str, Any], received: str) -> None:
    """Note ``event`` (a ``bacalhau_spot`` dict) as ``region``'s last, atomically. Never raises:
    status's age is a nicety, the heal is not."""
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        data = last_events(directory)
        data[region] = {"time": event.get("time"), "received": received, "kind": event.get("kind"),
                        "instance_id": event.get("instance_id")}
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".last-events.")
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(data, handle, sort_keys=True)
        os.replace(tmp, os.path.join(directory, LAST_EVENTS_FILE))
    except OSError:
        pass


def age_seconds(entry: dict[str, Any] | None, now: datetime.datetime) -> int | None:
    """Seconds since the event's own time (EventBridge's ``time``; else when it was received)."""
    if not entry:
        return None
    when = _parse_time(entry.get("time")) or _parse_time(entry.get("received"))
    if when is None:
        return None
    return max(0, int((now - when).total_seconds()))


def view(read: dict[str, Any], last: dict[str, Any] | None, now: datetime.datetime) -> dict[str, Any]:
    """One region's row of ``event_path``: whether the rule and queue exist, the queue's depth, the last event."""
    return {
        "exists": bool(read.get("rule") and read.get("queue") and read.get("targets_queue")),
        "rule": bool(read.get("rule")),
        "rule_enabled": bool(read.get("rule_enabled")),
        "queue": bool(read.get("queue")),
        "queue_depth": read.get("queue_depth"),
        "queue_in_flight": read.get("queue_in_flight"),
        "last_event": (last or {}).get("time"),
        "last_event_kind": (last or {}).get("kind"),
        "last_event_age_seconds": age_seconds(last, now),
    }


def ensure_all(clients: Callable[[str], tuple[Any, Any]], cluster_name: str, regions: list[str],
               tags: dict[str, str] | None, check_mode: bool, directory: str | None = None,
               now: datetime.datetime | None = None) -> dict[str, dict[str, Any]]:
    """Make (or, in check mode, say what would make) the path in every region at once, then read it back.

    Never raises: a region that fails says so in its row (``error``), and the heal goes on.
    Each row: :func:`view`'s keys plus ``changed``, ``changes`` and ``error``."""
    now = now or datetime.datetime.now(datetime.timezone.utc)
    last = last_events(directory or state_dir(cluster_name))

    def one(region: str) -> dict[str, Any]:
        events, sqs = clients(region)
        made = event_path.ensure(events, sqs, cluster_name, region, tags=tags, check_mode=check_mode)
        read = event_path.read(events, sqs, cluster_name, region)
        row = view(read, last.get(region), now)
        row.update(changed=made["changed"], changes=made["changes"], error=None)
        if check_mode and made["changed"]:
            row["exists"] = row["exists"] and not made["changes"]
        return row

    done, errors = run_per_region(regions, one)
    out: dict[str, dict[str, Any]] = {}
    for region in dict.fromkeys(regions):
        if region in done:
            out[region] = done[region]
        else:
            exc = errors[region]
            out[region] = dict(view({}, last.get(region), now), changed=False, changes=[],
                               error=exc.message if isinstance(exc, AwsSpotError) else error_text(exc))
    return out


def read_all(clients: Callable[[str], tuple[Any, Any]], cluster_name: str, regions: list[str],
             directory: str | None = None, now: datetime.datetime | None = None) -> dict[str, dict[str, Any]]:
    """What of the path is there in every region (read only), for status with ``autoheal: false``."""
    now = now or datetime.datetime.now(datetime.timezone.utc)
    last = last_events(directory or state_dir(cluster_name))

    def one(region: str) -> dict[str, Any]:
        events, sqs = clients(region)
        return dict(view(event_path.read(events, sqs, cluster_name, region), last.get(region), now),
                    changed=False, changes=[], error=None)

    done, errors = run_per_region(regions, one)
    return {r: done.get(r) or dict(view({}, last.get(r), now), changed=False, changes=[],
                                   error=error_text(errors[r])) for r in dict.fromkeys(regions)}
