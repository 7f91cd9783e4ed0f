# -*- coding: utf-8 -*-
# Copyright: bacalhau.aws_spot contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

"""The arithmetic of playbooks/heal.yml (filters heal_counts and heal_short; documented in
heal_counts.yml and heal_short.yml beside this file)."""

LIVE = ("pending", "running")


def _live(instances: list, region: str, drain: set) -> tuple[int, int]:
    """(healthy, draining) compute nodes of a region."""
    here = [i for i in instances or [] if i.get("role") == "compute" and i.get("region") == region
            and i.get("state") in LIVE]
    draining = sum(1 for i in here if i.get("instance_id") in drain)
    return len(here) - draining, draining


def _entry(entry: dict, count: int) -> dict:
    out = dict(entry)
    out["count"] = int(count)
    return out


def _shortfall(regions: list, instances: list, drain: set) -> int:
    return sum(max(0, int(r.get("count", 0)) - _live(instances, r["region"], drain)[0]) for r in regions)


def heal_counts(regions: list, instances: list, phase: str, drain: list | None = None,
                overflow_regions: list | None = None, index: int = 0) -> list:
    drain_ids = set(drain or [])
    overflow_regions = list(overflow_regions or [])
    if phase == "grow":
        out = []
        for r in regions:
            healthy, draining = _live(instances, r["region"], drain_ids)
            out.append(_entry(r, max(healthy + draining, int(r.get("count", 0)) + draining)))
        return out
    if phase == "overflow":
        # what the home regions lack, less what the overflow regions already hold, goes to the
        # overflow region tried now (heal.yml tries them in order, one at a time)
        lacking = _shortfall(regions, instances, drain_ids)
        held = sum(_live(instances, o["region"], drain_ids)[0] for o in overflow_regions)
        target = overflow_regions[index]
        return [_entry(target, sum(_live(instances, target["region"], drain_ids)) + max(0, lacking - held))]
    if phase == "final":
        out = []
        for r in regions:
            healthy, draining = _live(instances, r["region"], drain_ids)
            want = int(r.get("count", 0))
            # replacements running: the draining go; short of the count: nothing goes here
            out.append(_entry(r, want if healthy >= want else healthy + draining))
        remaining = _shortfall(regions, instances, drain_ids)
        for o in overflow_regions:
            healthy, draining = _live(instances, o["region"], drain_ids)
            keep = min(healthy, remaining)
            remaining -= keep
            out.append(_entry(o, keep))
        return out
    raise ValueError(f"heal_counts: phase must be grow, overflow or final, not {phase!r}")


def heal_short(regions: list, instances: list, drain: list | None = None) -> list:
    """The home regions that hold fewer healthy compute nodes than their count (the overflow-for tag)."""
    drain_ids = set(drain or [])
    return [r["region"] for r in regions if _live(instances, r["region"], drain_ids)[0] < int(r.get("count", 0))]


class FilterModule:
    def filters(self) -> dict:
        return {"heal_counts": heal_counts, "heal_short": heal_short}
