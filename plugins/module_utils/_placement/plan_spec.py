# -*- coding: utf-8 -*-
# Copyright: bacalhau.aws_spot contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What spot_capacity_plan is asked (nodes, vCPUs, memory, regions, the caps, the orchestrator),
checked in the user's words before any AWS call. Private.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._placement import pools as capacity
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._placement import requirements as needs
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._aws.common import AwsSpotError
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._cluster.spec import MAX_COUNT_PER_REGION
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._cluster.spec import REGION_RE


ALL = "all"


DEFAULT_MAX_TYPES = 4


DEFAULT_ORCHESTRATOR = {"mode": "managed", "region": None, "instance_type": "t3.small", "market": "on-demand"}


@dataclass
class PlanSpec:
    nodes: int
    requirements: dict[str, Any]
    regions: list[str] | None  # None: every enabled region
    max_regions: int = 5
    max_per_region: int | None = None
    max_hourly_cost: float | None = None
    market: str = "spot"
    min_score: int = capacity.DEFAULT_MIN_SCORE
    strategy: str = "spread"
    max_types: int = DEFAULT_MAX_TYPES
    orchestrator: dict[str, Any] | None = field(default_factory=lambda: dict(DEFAULT_ORCHESTRATOR))

    @property
    def pool_market(self) -> str:
        return "on-demand" if self.market == "on-demand" else "spot"


def _whole(value: Any, where: str, problems: list[str], low: int = 1, high: int | None = None) -> int | None:
    try:
        number = int(value)
        if isinstance(value, float) and value != number:
            raise ValueError
    except (TypeError, ValueError):
        problems.append(f"{where}: {value!r} is not a whole number")
        return None
    if number < low or (high is not None and number > high):
        problems.append(f"{where}: {number} must be from {low}" + (f" to {high}" if high is not None else " up"))
        return None
    return number


def _vcpus(value: Any) -> Any:
    """``2`` means exactly 2 (min and max); a dictionary is AWS's range."""
    if isinstance(value, (int, str)) and not isinstance(value, bool) and str(value).strip().isdigit():
        return {"min": int(value), "max": int(value)}
    return value


def _memory(value: Any) -> Any:
    """``4`` means at least 4 GiB; a dictionary is AWS's range."""
    if isinstance(value, (int, float, str)) and not isinstance(value, bool):
        try:
            return {"min": float(value)}
        except ValueError:
            return value
    return value


def parse(params: dict[str, Any]) -> PlanSpec:
    """The module's parameters checked, every problem in one error (no AWS call)."""
    problems: list[str] = []
    nodes = _whole(params.get("nodes"), "nodes", problems, 1, 10 * MAX_COUNT_PER_REGION)
    raw = dict(params.get("instance_requirements") or {})
    for key, shaped in (("vcpus", _vcpus(params.get("vcpus"))), ("memory_gib", _memory(params.get("memory_gib"))),
                        ("architectures", params.get("architectures")), ("burstable", params.get("burstable"))):
        if shaped is None:
            continue
        if key in raw:
            problems.append(f"{key}: given both as an option and in instance_requirements; give it once")
        raw[key] = shaped
    raw.setdefault("max_types", 50)  # ours: the plan keeps max_types itself, after pricing
    requirements = needs.parse_requirements(raw, "requirements", problems)
    regions = params.get("regions") or [ALL]
    if ALL in regions and len(regions) > 1:
        problems.append(f"regions: 'all' stands alone (every enabled region); got {regions}")
    bad = [r for r in regions if r != ALL and not REGION_RE.match(str(r))]
    if bad:
        problems.append(f"regions: {bad} are not region names such as eu-west-1 (or give 'all')")
    max_regions = _whole(params.get("max_regions", 5), "max_regions", problems, 1, 50)
    per_region = params.get("max_per_region")
    per_region = None if per_region is None else _whole(per_region, "max_per_region", problems, 1, MAX_COUNT_PER_REGION)
    cap = params.get("max_hourly_cost")
    if cap is not None:
        try:
            cap = float(cap)
            if cap <= 0:
                raise ValueError
        except (TypeError, ValueError):
            problems.append(f"max_hourly_cost: {cap!r} must be a positive number of USD per hour")
    max_types = _whole(params.get("max_types", DEFAULT_MAX_TYPES), "max_types", problems, 1, 20)
    min_score = _whole(params.get("min_placement_score", capacity.DEFAULT_MIN_SCORE), "min_placement_score",
                       problems, 1, 10)
    orchestrator = _orchestrator(params.get("orchestrator"), problems)
    if problems:
        raise AwsSpotError("Nothing was planned, because: " + "; ".join(problems))
    return PlanSpec(nodes=nodes, requirements=requirements, regions=None if regions == [ALL] else
                    list(dict.fromkeys(regions)), max_regions=max_regions, max_per_region=per_region,
                    max_hourly_cost=cap, market=params.get("market") or "spot", min_score=min_score,
                    strategy=params.get("availability_zone_strategy") or "spread", max_types=max_types,
                    orchestrator=orchestrator)


def _orchestrator(raw: Any, problems: list[str]) -> dict[str, Any] | None:
    given = dict(raw or {})
    out = dict(DEFAULT_ORCHESTRATOR, **{k: v for k, v in given.items() if v is not None})
    unknown = set(out) - set(DEFAULT_ORCHESTRATOR)
    if unknown:
        problems.append(f"orchestrator: unknown keys {sorted(unknown)}; known: mode, region, instance_type, market")
    if out["mode"] == "external":
        return None
    if out["mode"] != "managed":
        problems.append(f"orchestrator.mode: {out['mode']!r} is not managed or external")
    if out["market"] not in ("on-demand", "spot"):
        problems.append(f"orchestrator.market: {out['market']!r} is not on-demand or spot")
    if out["region"] is not None and not REGION_RE.match(str(out["region"])):
        problems.append(f"orchestrator.region: {out['region']!r} is not a region name")
    return out
