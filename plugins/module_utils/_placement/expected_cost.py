# -*- coding: utf-8 -*-
# Copyright: bacalhau.aws_spot contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Pools ranked by expected cost, with the cluster's own history: cool-down and interruption
rate. Private; pure (no AWS call, no clock: ``now`` is given).

The formula (also in ``docs/spot_cluster.md``, "Placement that learns")::

    rate      = (k + r0(score) * H0) / (H + H0)          interruptions per node-hour
    r0(score) = R_MAX * (10 - score) / 9                  (score unknown: R_MAX / 2)
    expected  = price * (1 + rate * C)                    USD per useful node-hour

``k`` is how many of the cluster's nodes the pool took back (``spot-interruption`` or a
rebalance recommendation acted on, :data:`history.TAKEN_BACK`) within the window (default
7 days), ``H`` the node-hours the cluster's spot nodes ran in the pool within it. The rate is
the mean of a Gamma-Poisson posterior: AWS's placement score gives the prior rate ``r0``
worth ``H0`` node-hours of evidence (default 24: one node-day), so one interruption after a
few minutes does not condemn a pool, and a pool with many node-hours is judged on what it
did. ``C`` (``restart_cost_hours``, default 1) is what one interruption wastes, in hours of
the node's price: the replacement's boot and install and the work lost on the node. So
``rate * C`` is the share of paid time an interruption throws away, and ``expected`` what a
node-hour of useful work costs in that pool.

Order (``by="price"``): pools cooling down last while another pool holds; then pools whose
known placement score is under ``min_score`` (AWS: unlikely to succeed); then by expected
cost, higher score, then the order given. ``by="preference"`` keeps the given order (the
user's type order) except that cooling pools go last.

Cool-down: a pool that took back one of the cluster's nodes less than ``cooldown`` ago
(default 30 minutes) is avoided while another pool holds; when every pool is cooling they
stay in order (capacity elsewhere is not there either).

API (what the engine calls)::

    ranked = rerank(pools, history, now, market=market, by="price", cooldown=cooldown_seconds)
    launches = assign(choosable(ranked), missing, existing, strategy, min_score)   # _placement.pools
    result["pools"] = [r.as_dict() for r in mark_chosen(ranked, launched_keys)]
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field, replace
from typing import Any, Iterable

from ansible_collections.bacalhau.aws_spot.plugins.module_utils._placement.history import TAKEN_BACK
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._placement.history import History
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._placement.history import hours
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._placement.history import utc
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._placement.pools import DEFAULT_MIN_SCORE
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._placement.pools import Pool
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._placement.pools import low_score
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._placement.pools import pool_price

PoolKey = tuple  # (region, zone, instance type)


@dataclass(frozen=True)
class Settings:
    cooldown: datetime.timedelta = datetime.timedelta(minutes=30)
    window: datetime.timedelta = datetime.timedelta(days=7)
    restart_cost_hours: float = 1.0  # C
    prior_hours: float = 24.0  # H0
    prior_max_rate: float = 0.05  # R_MAX: the prior rate of a pool of score 1 (one per 20 node-hours)
    min_score: int | None = DEFAULT_MIN_SCORE


DEFAULTS = Settings()


@dataclass(frozen=True)
class PoolStats:
    node_hours: float = 0.0  # H, within the window
    interruptions: int = 0  # k, within the window
    last_taken: datetime.datetime | None = None  # the newest take-back, any time
    last_taken_by: str | None = None  # its instance id


@dataclass
class Ranked:
    pool: Pool
    price: float | None
    rate: float | None
    expected: float | None
    stats: PoolStats
    cooling_until: datetime.datetime | None
    avoided: bool = False
    rank: int = 0
    verdict: str = "candidate"  # candidate | avoided | last resort | chosen | tried (refused at launch)
    why: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def key(self) -> PoolKey:
        return key_of(self.pool)

    def as_dict(self) -> dict[str, Any]:
        out = self.pool.as_dict()
        out.update({
            "region": self.pool.region, "rank": self.rank, "verdict": self.verdict, "why": self.why,
            "expected_price": None if self.expected is None else round(self.expected, 6),
            "interruption_rate_per_node_hour": None if self.rate is None else round(self.rate, 6),
            "interruptions": self.stats.interruptions, "node_hours": round(self.stats.node_hours, 3),
            "cooling_until": None if self.cooling_until is None else self.cooling_until.isoformat(),
        })
        return out


def key_of(pool: Pool) -> PoolKey:
    return (pool.region, pool.zone, pool.instance_type)


def parse_cooldown(raw: Any, where: str, problems: list[str]) -> datetime.timedelta | None:
    """A user's ``cluster_pool_cooldown``: minutes (a number), or a string ``90s``, ``30m``,
    ``2h``; 0 turns the cool-down off. None (absent) gives the default, 30 minutes."""
    if raw is None:
        return DEFAULTS.cooldown
    units = {"s": 1, "m": 60, "h": 3600}
    try:
        if isinstance(raw, bool):
            raise ValueError
        if isinstance(raw, str) and raw.strip()[-1:].lower() in units:
            seconds = float(raw.strip()[:-1]) * units[raw.strip()[-1].lower()]
        else:
            seconds = float(raw) * 60
        if seconds < 0:
            raise ValueError
    except (TypeError, ValueError):
        problems.append(f"{where}: {raw!r} must be minutes (30) or a duration such as 90s, 30m, 2h")
        return None
    return datetime.timedelta(seconds=seconds)


# --------------------------------------------------------------------------- the evidence
def pool_stats(history: History, now: datetime.datetime, window: datetime.timedelta = DEFAULTS.window
               ) -> dict[PoolKey, PoolStats]:
    """Per pool: spot node-hours and take-backs within ``window`` before ``now``, and the last
    take-back at any time."""
    now = utc(now)
    start = now - window
    hours_of: dict[PoolKey, float] = {}
    taken: dict[PoolKey, int] = {}
    last: dict[PoolKey, tuple[datetime.datetime, str]] = {}
    for record in history.records.values():
        if record.get("market") != "spot" or not record.get("launch_time"):
            continue
        key = (record["region"], record["zone"], record["instance_type"])
        launched, ended = utc(record["launch_time"]), utc(record["end_time"]) or now
        hours_of[key] = hours_of.get(key, 0.0) + hours(max(launched, start), min(ended, now))
        if record.get("end_reason") in TAKEN_BACK and record.get("end_time"):
            end = utc(record["end_time"])
            if start <= end <= now:
                taken[key] = taken.get(key, 0) + 1
            if key not in last or end > last[key][0]:
                last[key] = (end, record["instance_id"])
    keys = set(hours_of) | set(taken) | set(last)
    return {k: PoolStats(node_hours=hours_of.get(k, 0.0), interruptions=taken.get(k, 0),
                         last_taken=last.get(k, (None, None))[0], last_taken_by=last.get(k, (None, None))[1])
            for k in keys}


def prior_rate(score: int | None, settings: Settings = DEFAULTS) -> float:
    """r0: the interruption rate a pool is assumed to have before the cluster has seen it."""
    if score is None:
        return settings.prior_max_rate / 2
    return settings.prior_max_rate * (10 - min(10, max(1, int(score)))) / 9


def interruption_rate(stats: PoolStats, score: int | None, settings: Settings = DEFAULTS) -> float:
    """(k + r0 * H0) / (H + H0), per node-hour."""
    return ((stats.interruptions + prior_rate(score, settings) * settings.prior_hours)
            / (stats.node_hours + settings.prior_hours))


def expected_price(price: float | None, rate: float, settings: Settings = DEFAULTS) -> float | None:
    """price * (1 + rate * C): USD per useful node-hour (None when the price is unknown)."""
    return None if price is None else price * (1.0 + rate * settings.restart_cost_hours)


# --------------------------------------------------------------------------- the ranking
def rerank(
    pools: list[Pool],
    history: History,
    now: datetime.datetime,
    *,
    market: str = "spot",
    by: str = "price",
    cooldown: float | datetime.timedelta | None = None,
    settings: Settings = DEFAULTS,
    warned: dict[PoolKey, tuple[datetime.datetime, str]] | None = None,
) -> list[Ranked]:
    """The pools of ``_placement.pools.rank_pools`` ranked again with the history, each with
    its verdict and why (see the module docstring). ``warned``: pools where EC2 has just sent
    one of the cluster's running nodes an interruption warning (pool -> (when, instance id)):
    they are being taken back now, so they cool down from then, before the node has ended."""
    now = utc(now)
    if cooldown is not None:
        settings = replace(settings, cooldown=cooldown if isinstance(cooldown, datetime.timedelta)
                           else datetime.timedelta(seconds=float(cooldown)))
    stats = pool_stats(history, now, settings.window)
    for key, (at, instance_id) in (warned or {}).items():
        s = stats.get(key, PoolStats())
        if s.last_taken is None or utc(at) > s.last_taken:
            stats[key] = replace(s, last_taken=utc(at), last_taken_by=instance_id)
    spot = market != "on-demand"
    entries: list[Ranked] = []
    for pool in pools:
        s = stats.get(key_of(pool), PoolStats())
        price = pool_price(pool, market)
        rate = interruption_rate(s, pool.zone_score, settings) if spot else 0.0
        until = None
        if spot and s.last_taken is not None and now - s.last_taken < settings.cooldown:
            until = s.last_taken + settings.cooldown
        entries.append(Ranked(pool=pool, price=price, rate=rate, expected=expected_price(price, rate, settings),
                              stats=s, cooling_until=until))
    holding = any(e.cooling_until is None for e in entries)
    for entry in entries:
        entry.avoided = holding and entry.cooling_until is not None
    order = {id(e): i for i, e in enumerate(entries)}
    if by == "price":
        entries.sort(key=lambda e: (e.avoided, low_score(e.pool.zone_score, settings.min_score),
                                    e.expected if e.expected is not None else float("inf"),
                                    -(e.pool.zone_score or 0), order[id(e)]))
    else:
        entries.sort(key=lambda e: (e.avoided, order[id(e)]))
    for rank, entry in enumerate(entries, 1):
        entry.rank = rank
        entry.verdict, entry.why = _verdict(entry, now, settings, spot, by)
    return entries


def _money(value: float | None) -> str:
    return "unknown" if value is None else f"{value:.4f}"


def _verdict(entry: Ranked, now: datetime.datetime, settings: Settings, spot: bool, by: str) -> tuple[str, str]:
    s = entry.stats
    if not spot:
        formula = f"on-demand price {_money(entry.price)} USD/h (never interrupted)"
    else:
        formula = (f"expected {_money(entry.expected)} USD/h = price {_money(entry.price)} x (1 + "
                   f"{entry.rate:.4f}/node-h x {settings.restart_cost_hours:g} h); {s.interruptions} interruption(s) "
                   f"in {s.node_hours:.1f} node-h over {settings.window.days or settings.window} days, "
                   f"score {entry.pool.zone_score if entry.pool.zone_score is not None else 'unknown'}")
    if entry.avoided:
        minutes = (now - s.last_taken).total_seconds() / 60
        return "avoided", (f"cooling down: took back {s.last_taken_by} {minutes:.0f} min ago; not chosen before "
                           f"{entry.cooling_until.isoformat()} while another pool holds ({formula})")
    if entry.cooling_until is not None:
        formula = f"every pool is cooling down; {formula}"
    if low_score(entry.pool.zone_score, settings.min_score):
        return "last resort", (f"placement score {entry.pool.zone_score} under {settings.min_score}: tried after the "
                               f"others ({formula})")
    order = "cheapest expected cost first" if by == "price" else "your order of instance types"
    return "candidate", f"rank {entry.rank} by {order}: {formula}"


def choosable(ranked: list[Ranked]) -> list[Pool]:
    """The pools to place new nodes in, in order: every pool not avoided (cooling pools are
    left out while another holds)."""
    return [r.pool for r in ranked if not r.avoided]


def mark_chosen(ranked: list[Ranked], chosen: Iterable[PoolKey]) -> list[Ranked]:
    """The same entries, those whose pool got nodes marked ``chosen``."""
    keys = set(chosen)
    for entry in ranked:
        if entry.key in keys:
            entry.verdict = "chosen"
    return ranked
