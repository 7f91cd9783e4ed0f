# -*- coding: utf-8 -*-
# Copyright: bacalhau.aws_spot contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What the cluster cost: per pool and in total, from the pool history. Private.

:func:`report` is pure: it takes the instances' lives (the pool history's records), the
spot price history of their pools and the on-demand prices, and gives per pool and in
total:

* ``node_hours``: the hours each instance ran (launch to end, or to ``now``);
* ``paid_usd``: for a spot instance the spot price in force at each moment of its life
  (the newest price change at or before that moment), integrated over the life; for an
  on-demand instance (the orchestrator, fallbacks) the on-demand price times its hours.
  EC2 bills Linux by the second with a minimum of 60 seconds, and charges nothing for a
  spot instance EC2 itself interrupts in its first hour (AWS, "Billing for interrupted
  Spot Instances"): both are applied;
* ``on_demand_usd``: what the same hours would have cost on demand; ``saving_usd`` the
  difference (and ``saving`` as a fraction);
* ``interruptions`` (EC2 took the node back), ``rebalances`` (a rebalance recommendation
  acted on) and ``mean_time_to_interruption_hours``: the pool's spot node-hours divided by
  its interruptions (the mean time between interruptions of one node, survivors counted;
  None without interruptions).

Before the first price the history gives for a pool, its first price is used (and said in
``notes``); a pool with no spot price at all, or a type with no on-demand price, is
``unknown`` and left out of the sums (counted in ``unpriced``), never guessed.

:func:`read_price_history` is the read: one ``DescribeSpotPriceHistory`` per pool per
window (the pool's first launch to its last end), all at once (``_aws.common.run_per_region``
over the pools), the window clipped to the 90 days EC2 keeps.

API (what the engine calls)::

    prices, errors = read_price_history(clients_by_region, history.as_list(), now)
    on_demand = price_list.on_demand_prices(module, {(r["region"], r["instance_type"]) ...})
    result["cost"] = report(history.as_list(), prices, on_demand, now)
    means, errors = read_mean_prices(clients_by_region, {region: types}, now)   # for rebalance.plan
"""

from __future__ import annotations

import bisect
import datetime
from typing import Any, Callable, Iterable

from ansible_collections.bacalhau.aws_spot.plugins.module_utils._aws.common import paginate
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._aws.common import run_per_region
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._placement.history import SPOT_INTERRUPTION
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._placement.history import REBALANCE
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._placement.history import utc

PRODUCT = "Linux/UNIX"
MIN_BILLED_SECONDS = 60  # per-second billing, a minute at least (Linux)
FREE_IF_INTERRUPTED_WITHIN = datetime.timedelta(hours=1)
HISTORY_KEPT = datetime.timedelta(days=90)  # DescribeSpotPriceHistory: "up to the past 90 days"

PoolKey = tuple  # (region, zone, instance type)
PricePoints = list  # [(aware datetime, USD/hour)], oldest first


# --------------------------------------------------------------------------- integration
def price_at(points: PricePoints, moment: datetime.datetime) -> float | None:
    """The price in force at ``moment``: the newest point at or before it (the first point
    before the first)."""
    if not points:
        return None
    stamps = [p[0] for p in points]
    index = bisect.bisect_right(stamps, moment) - 1
    return points[max(0, index)][1]


def integrate(points: PricePoints, start: datetime.datetime, end: datetime.datetime) -> float:
    """USD paid from ``start`` to ``end`` at the prices in force (USD/hour, step function)."""
    if end <= start or not points:
        return 0.0
    total = 0.0
    cursor = start
    price = price_at(points, start)
    for stamp, next_price in points:
        if stamp <= start:
            continue
        if stamp >= end:
            break
        total += price * (stamp - cursor).total_seconds() / 3600.0
        cursor, price = stamp, next_price
    total += price * (end - cursor).total_seconds() / 3600.0
    return total


def mean_price(points: PricePoints, start: datetime.datetime, end: datetime.datetime) -> float | None:
    """The time-weighted mean price from ``start`` to ``end`` (rebalance's hysteresis)."""
    if not points or end <= start:
        return price_at(points, end) if points else None
    return integrate(points, start, end) / ((end - start).total_seconds() / 3600.0)


def billed_end(start: datetime.datetime, end: datetime.datetime) -> datetime.datetime:
    """The end EC2 bills to: a minute at least."""
    return max(end, start + datetime.timedelta(seconds=MIN_BILLED_SECONDS))


# --------------------------------------------------------------------------- the report
def _empty() -> dict[str, Any]:
    return {"instances": 0, "node_hours": 0.0, "spot_node_hours": 0.0, "paid_usd": 0.0, "on_demand_usd": 0.0,
            "interruptions": 0, "rebalances": 0, "unpriced": 0, "notes": []}


def _finish(entry: dict[str, Any]) -> dict[str, Any]:
    out = dict(entry)
    out["saving_usd"] = out["on_demand_usd"] - out["paid_usd"]
    out["saving"] = round(out["saving_usd"] / out["on_demand_usd"], 4) if out["on_demand_usd"] else None
    out["mean_time_to_interruption_hours"] = (round(out["spot_node_hours"] / out["interruptions"], 3)
                                              if out["interruptions"] else None)
    for key in ("node_hours", "spot_node_hours"):
        out[key] = round(out[key], 4)
    for key in ("paid_usd", "on_demand_usd", "saving_usd"):
        out[key] = round(out[key], 6)
    return out


def report(
    lifetimes: Iterable[dict[str, Any]],
    spot_prices: dict[PoolKey, PricePoints],
    on_demand: dict[tuple[str, str], float | None],
    now: datetime.datetime,
    since: datetime.datetime | None = None,
) -> dict[str, Any]:
    """``{"pools": [...], "total": {...}, "since", "until"}`` (see the module docstring).

    ``lifetimes``: records with ``region``, ``zone``, ``instance_type``, ``market``,
    ``launch_time``, ``end_time`` (None: running), ``end_reason``, ``role``.
    ``spot_prices``: (region, zone, type) -> [(time, USD/hour)]; ``on_demand``: (region,
    type) -> USD/hour or None. ``since``: count only the hours after it.
    """
    now = utc(now)
    since = utc(since)
    pools: dict[tuple, dict[str, Any]] = {}
    total = _empty()
    first = None
    for life in lifetimes:
        if not life.get("launch_time"):
            continue
        start, end = utc(life["launch_time"]), utc(life.get("end_time")) or now
        if since is not None:
            if end <= since:
                continue
        spot = life.get("market") == "spot"
        key = (life["region"], life.get("zone"), life["instance_type"], "spot" if spot else "on-demand")
        entry = pools.setdefault(key, _empty())
        counted_from = max(start, since) if since is not None else start
        whole = since is None or since <= start  # the whole life is counted: EC2's one-minute minimum applies
        hours_run = max(0.0, (end - counted_from).total_seconds() / 3600.0)
        first = counted_from if first is None else min(first, counted_from)
        od_price = on_demand.get((life["region"], life["instance_type"]))
        taken_back = life.get("end_reason") == SPOT_INTERRUPTION
        paid: float | None
        if spot:
            points = sorted(spot_prices.get(key[:3]) or [])
            if not points:
                paid = None
            elif taken_back and life.get("release_reason") != SPOT_INTERRUPTION and end - start < FREE_IF_INTERRUPTED_WITHIN:
                paid = 0.0  # EC2 interrupted it in its first hour: no charge (a node we let go after its
                # warning, before the reclaim, was terminated by us: billed as any other)
            else:
                paid = integrate(points, counted_from, billed_end(start, end) if whole else end)
                if points[0][0] > counted_from:
                    note = "priced at its first known price before the spot price history begins"
                    if note not in entry["notes"]:
                        entry["notes"].append(note)
        else:
            paid = None if od_price is None else od_price * (
                (billed_end(start, end) - counted_from).total_seconds() / 3600.0 if whole else hours_run)
        for target in (entry, total):
            target["instances"] += 1
            target["node_hours"] += hours_run
            if spot:
                target["spot_node_hours"] += hours_run
            target["interruptions"] += int(taken_back)
            target["rebalances"] += int(life.get("end_reason") == REBALANCE)
            if paid is None or od_price is None:
                target["unpriced"] += 1
                continue
            target["paid_usd"] += paid
            target["on_demand_usd"] += od_price * hours_run
    rows = []
    for (region, zone, itype, market), entry in sorted(pools.items(), key=lambda kv: tuple(str(x) for x in kv[0])):
        row = {"region": region, "availability_zone": zone, "instance_type": itype, "market": market}
        row.update(_finish(entry))
        rows.append(row)
    total.pop("notes")
    return {"pools": rows, "total": _finish(total), "since": (since or first or now).isoformat(),
            "until": now.isoformat()}


# --------------------------------------------------------------------------- the read
def last_destroyed(lifetimes: Iterable[dict[str, Any]]) -> datetime.datetime | None:
    """When an earlier cluster of the same name was destroyed (the newest end of a node released
    with reason ``destroy``), or None. The pool history outlives destroy.yml so that placement
    learns across clusters of one name; what *this* cluster cost starts after it."""
    ends = [utc(life["end_time"]) for life in lifetimes
            if life.get("release_reason") == "destroy" and life.get("end_time")]
    return max(ends) if ends else None


def windows(lifetimes: Iterable[dict[str, Any]], now: datetime.datetime
            ) -> dict[PoolKey, tuple[datetime.datetime, datetime.datetime]]:
    """Per spot pool: from its first launch to its last end (``now`` while a node runs),
    within the 90 days EC2 keeps."""
    now = utc(now)
    out: dict[PoolKey, tuple[datetime.datetime, datetime.datetime]] = {}
    for life in lifetimes:
        if life.get("market") != "spot" or not life.get("launch_time"):
            continue
        key = (life["region"], life["zone"], life["instance_type"])
        start, end = utc(life["launch_time"]), utc(life.get("end_time")) or now
        if key in out:
            start, end = min(start, out[key][0]), max(end, out[key][1])
        out[key] = (max(start, now - HISTORY_KEPT), min(end, now))
    return out


def history_params(key: PoolKey, start: datetime.datetime, end: datetime.datetime) -> dict[str, Any]:
    """``DescribeSpotPriceHistory``'s parameters for one pool and window."""
    _region, zone, itype = key
    return {"InstanceTypes": [itype], "AvailabilityZone": zone, "ProductDescriptions": [PRODUCT],
            "StartTime": start, "EndTime": end}


def points_of(entries: Iterable[dict[str, Any]]) -> PricePoints:
    """A price history's entries as [(time, USD/hour)], oldest first, one per time."""
    found = {}
    for entry in entries:
        if str(entry.get("ProductDescription", PRODUCT)).startswith(PRODUCT):
            found[utc(entry["Timestamp"])] = float(entry["SpotPrice"])
    return sorted(found.items())


def read_price_history(
    clients: dict[str, Any] | Callable[[str], Any],
    lifetimes: Iterable[dict[str, Any]],
    now: datetime.datetime,
) -> tuple[dict[PoolKey, PricePoints], dict[PoolKey, BaseException]]:
    """One ``DescribeSpotPriceHistory`` per spot pool per window, all at once.

    ``clients``: region -> EC2 client (``_aws.common.region_client``), or a function of the
    region. Returns (pool -> price points, pool -> error): a pool that failed is reported,
    never fatal (the report then counts its instances as unpriced)."""
    wanted = windows(lifetimes, now)
    labels = {"/".join(key): key for key in wanted}
    client_of = clients if callable(clients) else clients.__getitem__

    def read(label: str) -> PricePoints:
        key = labels[label]
        start, end = wanted[key]
        return points_of(paginate(client_of(key[0]), "describe_spot_price_history", "SpotPriceHistory",
                                  **history_params(key, start, end)))

    results, errors = run_per_region(list(labels), read)
    return ({labels[label]: points for label, points in results.items()},
            {labels[label]: exc for label, exc in errors.items()})


def read_mean_prices(
    clients: dict[str, Any] | Callable[[str], Any],
    types_by_region: dict[str, Iterable[str]],
    now: datetime.datetime,
    span: datetime.timedelta = datetime.timedelta(hours=6),
) -> tuple[dict[PoolKey, float], dict[str, BaseException]]:
    """Every pool's time-weighted mean spot price over the last ``span`` (rebalance's
    hysteresis): one ``DescribeSpotPriceHistory`` per region for all its types and zones, the
    regions at once. Returns (pool -> mean, region -> error)."""
    now = utc(now)
    start = now - span
    client_of = clients if callable(clients) else clients.__getitem__

    def read(region: str) -> dict[PoolKey, float]:
        types = sorted(set(types_by_region[region]))
        if not types:
            return {}
        entries = paginate(client_of(region), "describe_spot_price_history", "SpotPriceHistory",
                           InstanceTypes=types, ProductDescriptions=[PRODUCT], StartTime=start, EndTime=now)
        by_pool: dict[PoolKey, list[dict[str, Any]]] = {}
        for entry in entries:
            by_pool.setdefault((region, entry["AvailabilityZone"], entry["InstanceType"]), []).append(entry)
        means = {key: mean_price(points_of(found), start, now) for key, found in by_pool.items()}
        return {key: value for key, value in means.items() if value is not None}

    results, errors = run_per_region(list(types_by_region), read)
    return {key: value for found in results.values() for key, value in found.items()}, errors


def table(cost: dict[str, Any]) -> str:
    """The report as text lines for a ``debug`` message."""
    lines = [f"{'pool':<40} {'node-h':>8} {'paid $':>10} {'on-demand $':>12} {'saved':>7} {'int.':>5} {'MTTI h':>7}"]
    for row in cost["pools"] + [dict(cost["total"], region="total", availability_zone="", instance_type="",
                                     market="")]:
        name = " ".join(x for x in (row["region"], row["availability_zone"], row["instance_type"], row["market"]) if x)
        saved = "" if row["saving"] is None else f"{row['saving']:.0%}"
        mtti = "" if row["mean_time_to_interruption_hours"] is None else f"{row['mean_time_to_interruption_hours']:.1f}"
        lines.append(f"{name:<40} {row['node_hours']:>8.2f} {row['paid_usd']:>10.4f} {row['on_demand_usd']:>12.4f} "
                     f"{saved:>7} {row['interruptions']:>5} {mtti:>7}")
    return "\n".join(lines)
