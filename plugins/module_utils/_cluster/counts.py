# -*- coding: utf-8 -*-
# Copyright: bacalhau.aws_spot contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""How many compute nodes each region should hold while healing: make before break, never
below the count. Private; no AWS call (``_cluster.reconcile`` reads, these decide).

``home`` is the cluster file's compute regions, name -> count, in order; ``overflow`` the names
of ``cluster_overflow_regions``, in order of preference; ``instances`` instance views
(``region``, ``role``, ``state``, ``instance_id``); ``drain`` the ids of the nodes to replace
(an interruption notice or a rebalance recommendation).
"""

from __future__ import annotations

from typing import Any

LIVE = ("pending", "running")


def live(instances: list[dict[str, Any]], region: str, drain: set[str]) -> tuple[int, int]:
    """(healthy, draining) compute nodes of a region."""
    here = [i for i in instances or [] if i.get("role") == "compute" and i.get("region") == region
            and i.get("state") in LIVE]
    draining = sum(1 for i in here if i.get("instance_id") in drain)
    return len(here) - draining, draining


def lacking(home: dict[str, int], instances: list[dict[str, Any]], drain: set[str]) -> int:
    """Healthy nodes the home regions miss, over all of them."""
    return sum(max(0, count - live(instances, region, drain)[0]) for region, count in home.items())


def short_regions(home: dict[str, int], instances: list[dict[str, Any]], drain: set[str]) -> list[str]:
    """The home regions holding fewer healthy nodes than their count (the ``bacalhau:overflow-for`` tag)."""
    return [region for region, count in home.items() if live(instances, region, drain)[0] < count]


def grow(home: dict[str, int], instances: list[dict[str, Any]], drain: set[str]) -> dict[str, int]:
    """Home counts for the heal's launches: the count plus a replacement per draining node, and
    never fewer than live now (nothing is terminated while growing)."""
    out = {}
    for region, count in home.items():
        healthy, draining = live(instances, region, drain)
        out[region] = max(healthy + draining, count + draining)
    return out


def overflow(home: dict[str, int], overflow_regions: list[str], index: int, instances: list[dict[str, Any]],
             drain: set[str]) -> int:
    """The count of ``overflow_regions[index]``: what it holds, plus what the home regions lack beyond
    what every overflow region holds already (the regions are tried in order, one after the other)."""
    missing = lacking(home, instances, drain)
    held = sum(live(instances, o, drain)[0] for o in overflow_regions)
    healthy, draining = live(instances, overflow_regions[index], drain)
    return healthy + draining + max(0, missing - held)


def final(home: dict[str, int], overflow_regions: list[str], instances: list[dict[str, Any]],
          drain: set[str]) -> dict[str, int]:
    """Counts once the replacements joined: a home region lets its draining nodes go when its
    healthy nodes make the count (else keeps them all); the overflow regions keep what the home
    regions still lack, the first ones first (so the later ones are emptied first)."""
    out = {}
    for region, count in home.items():
        healthy, draining = live(instances, region, drain)
        out[region] = count if healthy >= count else healthy + draining
    remaining = lacking(home, instances, drain)
    for region in overflow_regions:
        healthy, _draining = live(instances, region, drain)
        keep = min(healthy, remaining)
        remaining -= keep
        out[region] = keep
    return out
