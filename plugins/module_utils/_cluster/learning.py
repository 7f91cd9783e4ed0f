# -*- coding: utf-8 -*-
# Copyright: bacalhau.aws_spot contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The engine's use of the pool history (issue 21): read, learn, rank, release. Private.

Every run of ``spot_cluster`` (any mode, check mode included) hands what its one read of each
region saw - the live instances and the terminated ones EC2 still lists, with their
``StateReason`` - to ``_placement.history`` and ranks each region's pools with it
(``_placement.expected_cost``: cool-down and expected cost). ``now`` is when EC2 answered
that read (its ``Date`` header), so the controller's own clock does not matter. Where the
autoheal rulebook's event source runs on the same host, the interruption warnings and
terminations it kept (``autoheal/instance-events.json``, ``_events.cluster.instance_events``)
give the ends their exact times.

Writes: the history file (``~/.config/bacalhau.aws_spot/<cluster>/pool-history.json``) is
written after the read and before each of our own terminations (``release``), never in check
mode: check mode reads the file and what EC2 lists, and plans with both, but changes nothing
on the controller either. A missing or corrupt file, or one that cannot be written, is a
warning, never a failure.

The cost cap (``cluster_max_hourly_cost``) is applied when choosing pools: while the plan's
worst case is over the cap, the dearest pool a launch could use is left out (verdict
``avoided``, and why) as long as a cheaper one stays. It is never turned into ``MaxPrice``.
"""

from __future__ import annotations

import datetime
import os
import threading
from typing import Any, Callable, Iterable

from ansible_collections.bacalhau.aws_spot.plugins.module_utils._events import cluster as ev_cluster
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._placement import expected_cost as ec
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._placement import history as ph
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._placement import pools as capacity


def _utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


class Learning:
    """One run's pool history: loaded once, observed once, saved (unless check mode)."""

    def __init__(self, cluster: str, *, enabled: bool = True, cooldown: datetime.timedelta | None = None,
                 check_mode: bool = False, warn: Callable[[str], None] | None = None,
                 path: str | None = None) -> None:
        self.cluster = cluster
        self.enabled = enabled
        self.cooldown = cooldown if cooldown is not None else ec.DEFAULTS.cooldown
        self.check_mode = check_mode
        self.path = path or ph.history_path(cluster)
        self.history = ph.History()
        self.now = _utcnow()
        self.warnings: list[str] = []
        self.warned: dict[tuple[str, str, str], tuple[datetime.datetime, str]] = {}
        self._warn = warn
        self._lock = threading.Lock()

    def warn(self, text: str) -> None:
        self.warnings.append(text)
        if self._warn is not None:
            self._warn(text)

    # -- the read
    def observe(self, seen_by_region: dict[str, list[dict[str, Any]]], answered: Iterable[Any] = ()) -> None:
        """Load the file, merge what this run's read saw (every listed region is complete: the read
        had every state), keep it bounded, and save it (not in check mode)."""
        times = [ph.utc(a) for a in answered if a is not None]
        self.now = max(times) if times else _utcnow()
        if not self.enabled:
            return
        history, warning = ph.load(self.path, expect_existing=any(seen_by_region.values()))
        if warning:
            self.warn(warning)
        self.history = history
        # EC2's exact times, where the autoheal rulebook's event source runs on this host (beside the history)
        events = ev_cluster.instance_events(os.path.join(os.path.dirname(self.path), "autoheal"))
        self.history.observe(seen_by_region, self.now, complete_regions=list(seen_by_region), events=events)
        self.history.bound(self.now)
        self.save()

    def warned_of(self, seen_by_region: dict[str, list[dict[str, Any]]], instance_ids: Iterable[str]) -> None:
        """The pools of the running spot nodes EC2 sent an interruption warning for (``instance_ids``):
        taken back as of this read, so placement cools them down at once (as Karpenter marks an
        interrupted offering unavailable), not only once the node has ended."""
        ids = set(instance_ids)
        for region, listed in seen_by_region.items():
            for instance in listed:
                if instance.get("InstanceId") in ids and instance.get("InstanceLifecycle") == "spot" \
                        and (instance.get("State") or {}).get("Name") in ("pending", "running"):
                    key = (region, (instance.get("Placement") or {}).get("AvailabilityZone"), instance.get("InstanceType"))
                    self.warned[key] = (self.now, instance["InstanceId"])

    def save(self) -> None:
        if not self.enabled or self.check_mode:
            return
        try:
            ph.save(self.path, self.history)
        except OSError as exc:
            self.warn(f"the pool history {self.path} could not be written ({exc}); placement goes on without "
                      "remembering this run")

    def release(self, instance_ids: list[str], reason: str) -> None:
        """Before our own TerminateInstances: the history knows they were ours, even if the run is killed."""
        if not instance_ids or not self.enabled:
            return
        with self._lock:
            self.history.release(instance_ids, reason, self.now)
            self.save()

    # -- placement
    def rerank(self, pools: list[capacity.Pool], market: str, by: str,
               type_order: list[str] | None = None, zone_order: list[str] | None = None) -> list[ec.Ranked]:
        """``expected_cost.rerank``. With your order of instance types (``by="preference"``) the
        types stay in your order, and the zones of a type (unless you ordered them too) go by
        expected cost: the history moves a type's nodes to its steadier zones, never to a type
        you put later."""
        if by == "price" or zone_order:
            return ec.rerank(pools, self.history, self.now, market=market, by=by, cooldown=self.cooldown,
                             warned=self.warned)
        ranked = ec.rerank(pools, self.history, self.now, market=market, by="price", cooldown=self.cooldown,
                           warned=self.warned)
        types = {t: i for i, t in enumerate(type_order or [])}
        first = {}
        for index, pool in enumerate(pools):
            first.setdefault(pool.instance_type, index)
        position = {id(r): i for i, r in enumerate(ranked)}
        ranked.sort(key=lambda r: (r.avoided, types.get(r.pool.instance_type, len(types)),
                                   first.get(r.pool.instance_type, 0), position[id(r)]))
        for rank, entry in enumerate(ranked, 1):
            entry.rank = rank
            if entry.verdict == "candidate" and ": " in entry.why:
                entry.why = (f"rank {rank} by your order of instance types, then cheapest expected cost: "
                             + entry.why.split(": ", 1)[1])
        return ranked


def chosen_keys(launches: list[capacity.Launch]) -> set[tuple[str, str, str]]:
    """The pools the plan's launches try first (one per launch)."""
    return {ec.key_of(launch.pools[0]) for launch in launches if launch.pools}


def pools_view(placement: Any) -> list[dict[str, Any]] | None:
    """Every pool considered with its verdict and why (None when the history did not rank them)."""
    ranked = getattr(placement, "ranked", None)
    if not ranked:
        return None
    return [r.as_dict() for r in ec.mark_chosen(ranked, chosen_keys(placement.launches))]


def launched_into(pools: list[dict[str, Any]], attempts: list[dict[str, Any]], market: str = "spot") -> None:
    """The result's pools (``pools_view``) after the launch: a pool that got nodes is ``chosen``
    (a pool avoided or planned as the last resort that got them says it was the last resort:
    the pools ranked before it had no room); a planned pool that got none says why."""
    got = {(a["instance_type"], a["availability_zone"]) for a in attempts
           if a.get("launched") and a.get("market", market) == market}
    failed = {(a["instance_type"], a["availability_zone"]): a.get("error_code") for a in attempts
              if a.get("error_code") and a.get("market", market) == market}
    for pool in pools:
        key = (pool.get("instance_type"), pool.get("availability_zone"))
        if key in got and pool.get("verdict") != "chosen":
            pool["why"] = f"used as the last resort: the pools ranked before it had no room; {pool.get('why', '')}"
            pool["verdict"] = "chosen"
        elif key in failed and pool.get("verdict") == "chosen":
            pool["verdict"] = "tried"
            pool["why"] = f"chosen, but AWS refused the launch ({failed[key]}); {pool.get('why', '')}"


def leave_out(placement: Any, key: tuple[str, str, str], why: str) -> None:
    """Leave one pool out of a region's choice (the cost cap), saying why, and place again."""
    for entry in placement.ranked or []:
        if entry.key == key:
            entry.avoided, entry.verdict, entry.why = True, "avoided", why
    placement.pools = [p for p in placement.pools if ec.key_of(p) != key]
    placement.pairs = [(p.instance_type, p.zone) for p in placement.pools]
    if placement.reassign is not None:
        placement.launches = placement.reassign()
