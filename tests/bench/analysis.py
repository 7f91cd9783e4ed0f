"""What the emulator's call log says about a run: counts, depth, concurrency.

The log has one entry per API call with its start and end (seconds, monotonic, on the
emulator's clock). From it:

* ``depth``: the observed sequential depth, the longest chain of calls each of which
  started after the previous one had answered. It is the number of round trips the run
  really waited for one after the other (greedy earliest-end selection finds the longest
  such chain of intervals). ``region_depth`` is the same inside each region (max shown).
* ``span``: first call's start to last call's end (the API part of the wall time).
* ``concurrency``: the sum of call durations over the span (1.0 = one call at a time).
* ``peak_per_second``: the most calls of one operation in one region started within one
  second (EC2's throttling is per API, per account, per region).
* ``emulator_busy``: seconds moto spent working on the calls (``service_ms`` of the log). moto
  answers one call at a time, on the same 2 CPUs as Ansible: the part of the span that is the
  test world's cost, not the API's (AWS answers calls in parallel).
"""
from __future__ import annotations

from typing import Any, Iterable

# Calls that only the harness makes (never part of a measurement) would be filtered here.
EPSILON = 1e-4  # the emulator rounds times to the microsecond


def chain_depth(entries: Iterable[dict[str, Any]]) -> int:
    """Longest chain of calls that did not overlap in time."""
    last_end = float("-inf")
    depth = 0
    for e in sorted(entries, key=lambda e: e["end"]):
        if e["start"] >= last_end - EPSILON:
            depth += 1
            last_end = e["end"]
    return depth


def peak_rate(entries: Iterable[dict[str, Any]], window: float = 1.0) -> tuple[int, str]:
    """Most calls of one operation in one region started within ``window`` seconds, and which.

    EC2 throttles per API, per account, per region (token buckets), so this is the figure to
    hold against its limits.
    """
    starts: dict[tuple[str, str], list[float]] = {}
    for e in entries:
        starts.setdefault((e["region"], e["operation"]), []).append(e["start"])
    best, which = 0, ""
    for (region, op), times in starts.items():
        times.sort()
        lo = 0
        for hi, t in enumerate(times):
            while t - times[lo] >= window:
                lo += 1
            if hi - lo + 1 > best:
                best, which = hi - lo + 1, f"{op} in {region}"
    return best, which


def summarize(calls: dict[str, Any], offset: float | None = None, wall: float | None = None) -> dict[str, Any]:
    """``offset``: when the run started on the emulator's call clock; with ``wall``, splits
    the wall time into before the first call, the API span, and after the last answer."""
    log = calls.get("log", [])
    if not log:
        return {"total": 0, "by_operation": {}, "by_region": {}, "depth": 0, "region_depth": 0,
                "span": 0.0, "concurrency": 0.0, "mean_call_ms": 0.0, "faults": 0, "errors": 0,
                "peak_per_second": 0, "peak_what": "", "emulator_busy": 0.0,
                "before_first": None, "after_last": None}
    start = min(e["start"] for e in log)
    end = max(e["end"] for e in log)
    span = end - start
    busy = sum(e["end"] - e["start"] for e in log)
    regions: dict[str, list[dict[str, Any]]] = {}
    for e in log:
        regions.setdefault(e["region"], []).append(e)
    by_op = dict(sorted(calls.get("by_operation", {}).items(), key=lambda kv: (-kv[1], kv[0])))
    return {
        "total": len(log),
        "by_operation": by_op,
        "by_region": dict(sorted(calls.get("by_region", {}).items())),
        "depth": chain_depth(log),
        "region_depth": max(chain_depth(v) for v in regions.values()),
        "span": round(span, 3),
        "concurrency": round(busy / span, 2) if span > 0 else 0.0,
        "mean_call_ms": round(1000.0 * busy / len(log), 1),
        "faults": sum(1 for e in log if e.get("fault")),
        "errors": sum(1 for e in log if int(e.get("status") or 0) >= 400),
        "peak_per_second": peak_rate(log)[0],
        "peak_what": peak_rate(log)[1],
        "emulator_busy": round(sum(e.get("service_ms") or 0.0 for e in log) / 1000.0, 3),
        "before_first": round(start - offset, 3) if offset is not None else None,
        "after_last": round(offset + wall - end, 3) if offset is not None and wall is not None else None,
    }
