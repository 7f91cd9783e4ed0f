# -*- coding: utf-8 -*-
# Copyright: bacalhau.aws_spot contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Moving running spot nodes to cheaper pools (``cluster_rebalance``). Private; pure.

``cluster_rebalance: {min_saving: 0.2, max_moves: 2}`` (off by default). A move is made
before break: the engine launches the replacement in the target pool, waits until it is
running and has joined, then releases (``History.release(ids, "moved", now)``) and
terminates the old node. :func:`plan` only decides; for each spot compute node:

* a node running a job is not moved unless ``move_busy`` (the engine reads the node's
  executions);
* a node younger than ``min_age`` (default 1 hour) is not moved: a node just placed, or
  just moved, settles first;
* target pools are the ranked pools (``expected_cost.rerank``) of the node's region that
  are not cooling down, not under the minimum placement score, and that the cluster did
  not move a node *out of* within ``hold`` (default 6 hours);
* the move is made only if the target's expected cost is at least ``min_saving`` (a
  fraction) below the node's pool's, both at the current prices and, when
  ``mean_prices`` are given (each pool's time-weighted mean over the last ``hold``,
  ``cost_report.mean_price``), at the means: the node's pool is taken at the lower of its
  current and mean price, the target at the higher;
* at most ``max_moves`` moves a run, the largest savings (USD/hour) first.

The last three are the hysteresis: prices that alternate between two pools have equal
means, so nothing moves; without means, a node moved A -> B is not moved again within
``min_age`` and never back into A within ``hold``.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from typing import Any

from ansible_collections.bacalhau.aws_spot.plugins.module_utils._placement.expected_cost import DEFAULTS
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._placement.expected_cost import PoolKey
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._placement.expected_cost import PoolStats
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._placement.expected_cost import Ranked
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._placement.expected_cost import Settings
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._placement.expected_cost import expected_price
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._placement.expected_cost import interruption_rate
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._placement.expected_cost import pool_stats
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._placement.history import History
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._placement.history import utc
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._placement.pools import Pool
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._placement.pools import low_score

DEFAULT_MIN_SAVING = 0.2
DEFAULT_MAX_MOVES = 2
DEFAULT_MIN_AGE = datetime.timedelta(hours=1)
DEFAULT_HOLD = datetime.timedelta(hours=6)
MOVED = "moved"  # the release reason of a node moved to a cheaper pool


@dataclass(frozen=True)
class Node:
    instance_id: str
    region: str
    zone: str
    instance_type: str
    launch_time: datetime.datetime
    price: float | None = None  # its pool's spot price now, USD/hour
    busy: bool = False  # runs a job (an execution not in a terminal state)
    market: str = "spot"
    zone_score: int | None = None

    @property
    def key(self) -> PoolKey:
        return (self.region, self.zone, self.instance_type)


@dataclass
class Move:
    instance_id: str
    source: PoolKey
    target: Pool
    current: float  # expected USD/hour where the node is
    expected: float  # expected USD/hour in the target
    saving: float  # fraction

    def as_dict(self) -> dict[str, Any]:
        region, zone, itype = self.source
        return {"instance_id": self.instance_id, "region": region,
                "from": {"availability_zone": zone, "instance_type": itype},
                "to": {"availability_zone": self.target.zone, "instance_type": self.target.instance_type},
                "expected_price_now": round(self.current, 6), "expected_price_after": round(self.expected, 6),
                "saving": round(self.saving, 4),
                "order": "launch the replacement, wait until it has joined, then release and terminate the node"}


@dataclass
class Plan:
    moves: list[Move] = field(default_factory=list)
    kept: list[dict[str, str]] = field(default_factory=list)  # {instance_id, why}

    def as_dict(self) -> dict[str, Any]:
        return {"moves": [m.as_dict() for m in self.moves], "kept": list(self.kept)}


def parse_settings(raw: Any, where: str, problems: list[str]) -> dict[str, Any] | None:
    """A user's ``cluster_rebalance`` checked: None/absent/false = off; otherwise
    ``{min_saving (0 < x < 1, default 0.2), max_moves (whole, >= 0, default 2), move_busy (default
    false)}``. Appends every problem to ``problems``."""
    if raw is None or raw is False:
        return None
    if raw is True:
        raw = {}
    if not isinstance(raw, dict):
        problems.append(f"{where}: must be a dictionary such as {{min_saving: 0.2, max_moves: 2}}")
        return None
    unknown = set(raw) - {"min_saving", "max_moves", "move_busy"}
    if unknown:
        problems.append(f"{where}: unknown keys {sorted(unknown)}; known: max_moves, min_saving, move_busy")
    start = len(problems)
    out: dict[str, Any] = {}
    try:
        out["min_saving"] = float(raw.get("min_saving", DEFAULT_MIN_SAVING))
        if not 0 < out["min_saving"] < 1:
            raise ValueError
    except (TypeError, ValueError):
        problems.append(f"{where}.min_saving: {raw.get('min_saving')!r} must be a fraction between 0 and 1 "
                        "(0.2: move when the other pool is 20% cheaper)")
    try:
        out["max_moves"] = int(raw.get("max_moves", DEFAULT_MAX_MOVES))
        if out["max_moves"] < 0 or out["max_moves"] != float(raw.get("max_moves", DEFAULT_MAX_MOVES)):
            raise ValueError
    except (TypeError, ValueError):
        problems.append(f"{where}.max_moves: {raw.get('max_moves')!r} must be a whole number of 0 or more")
    busy = raw.get("move_busy", False)
    if not isinstance(busy, bool):
        problems.append(f"{where}.move_busy: {busy!r} must be true or false")
    out["move_busy"] = bool(busy)
    return out if len(problems) == start and not unknown else None


def moved_out(history: History, now: datetime.datetime, hold: datetime.timedelta) -> set[PoolKey]:
    """Pools the cluster moved a node out of within ``hold``."""
    now = utc(now)
    out = set()
    for record in history.records.values():
        if record.get("release_reason") == MOVED and record.get("end_time") and now - utc(record["end_time"]) < hold:
            out.add((record["region"], record["zone"], record["instance_type"]))
    return out


def plan(
    nodes: list[Node],
    ranked: list[Ranked],
    history: History,
    now: datetime.datetime,
    *,
    min_saving: float = DEFAULT_MIN_SAVING,
    max_moves: int = DEFAULT_MAX_MOVES,
    move_busy: bool = False,
    mean_prices: dict[PoolKey, float] | None = None,
    min_age: datetime.timedelta = DEFAULT_MIN_AGE,
    hold: datetime.timedelta = DEFAULT_HOLD,
    settings: Settings = DEFAULTS,
) -> Plan:
    """Which nodes to move where this run (see the module docstring)."""
    now = utc(now)
    means = mean_prices or {}
    by_key = {r.key: r for r in ranked}
    stats = pool_stats(history, now, settings.window)
    left = moved_out(history, now, hold)
    result = Plan()
    candidates: list[Move] = []
    for node in nodes:
        why = None
        if node.market != "spot":
            why = "not a spot node (an on-demand fallback is replaced by spot by heal, not moved)"
        elif node.busy and not move_busy:
            why = "runs a job (cluster_rebalance moves busy nodes only when asked)"
        elif now - utc(node.launch_time) < min_age:
            why = f"younger than {min_age}: settles before it is moved"
        if why:
            result.kept.append({"instance_id": node.instance_id, "why": why})
            continue
        here = by_key.get(node.key)
        price = here.price if here is not None and here.price is not None else node.price
        if price is None:
            result.kept.append({"instance_id": node.instance_id, "why": "its pool's price is unknown"})
            continue
        score = here.pool.zone_score if here is not None else node.zone_score
        rate = here.rate if here is not None and here.rate is not None else interruption_rate(
            stats.get(node.key) or PoolStats(), score, settings)
        low_here = min(price, means.get(node.key, price))
        current = expected_price(low_here, rate, settings)
        best: Move | None = None
        for entry in ranked:
            pool = entry.pool
            if pool.region != node.region or entry.key == node.key or entry.expected is None or entry.price is None:
                continue
            if entry.cooling_until is not None or low_score(pool.zone_score, settings.min_score) or entry.key in left:
                continue
            high_there = max(entry.price, means.get(entry.key, entry.price))
            target = expected_price(high_there, entry.rate or 0.0, settings)
            saving = 1.0 - target / current if current > 0 else 0.0
            if saving >= min_saving and (best is None or target < best.expected):
                best = Move(node.instance_id, node.key, pool, current, target, saving)
        if best is None:
            result.kept.append({"instance_id": node.instance_id,
                                "why": f"no pool of {node.region} that holds is {min_saving:.0%} cheaper "
                                       f"(expected {current:.4f} USD/h here)"})
            continue
        candidates.append(best)
    candidates.sort(key=lambda m: (-(m.current - m.expected), m.instance_id))
    result.moves = candidates[:max(0, int(max_moves))]
    for move in candidates[len(result.moves):]:
        result.kept.append({"instance_id": move.instance_id,
                            "why": f"max_moves {max_moves} reached this run (would save {move.saving:.0%})"})
    return result
