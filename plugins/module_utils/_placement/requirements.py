# -*- coding: utf-8 -*-
# Copyright: bacalhau.aws_spot contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What a node needs (instance_requirements): checked in the user's words, and turned into AWS's
InstanceRequirements and the placement scores' parameters. Private; no AWS call.
"""

from __future__ import annotations

import math
from typing import Any, Iterable
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._placement.pools import ARCHITECTURES
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._placement.pools import DEFAULT_MAX_TYPES
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._placement.pools import SCORE_PAGE


# user key -> (AWS InstanceRequirements key, kind)
REQUIREMENT_KEYS: dict[str, tuple[str, str]] = {
    "vcpus": ("VCpuCount", "range_int"),
    "memory_gib": ("MemoryMiB", "range_gib"),
    "memory_gib_per_vcpu": ("MemoryGiBPerVCpu", "range_float"),
    "cpu_manufacturers": ("CpuManufacturers", "list:intel,amd,amazon-web-services,apple"),
    "instance_generations": ("InstanceGenerations", "list:current,previous"),
    "excluded_instance_types": ("ExcludedInstanceTypes", "list"),
    "allowed_instance_types": ("AllowedInstanceTypes", "list"),
    "burstable": ("BurstablePerformance", "choice:included,excluded,required"),
    "bare_metal": ("BareMetal", "choice:included,excluded,required"),
    "local_storage": ("LocalStorage", "choice:included,excluded,required"),
    "network_interface_count": ("NetworkInterfaceCount", "range_int"),
    "network_bandwidth_gbps": ("NetworkBandwidthGbps", "range_float"),
    "spot_max_price_percentage_over_lowest_price": ("SpotMaxPricePercentageOverLowestPrice", "int"),
    "on_demand_max_price_percentage_over_lowest_price": ("OnDemandMaxPricePercentageOverLowestPrice", "int"),
}


# ours, not AWS's: which architectures to search, and how many types to keep
OWN_KEYS = ("architectures", "max_types")


def _range(value: Any, where: str, kind: str, problems: list[str]) -> dict[str, float] | None:
    if not isinstance(value, dict) or not value or set(value) - {"min", "max"}:
        problems.append(f"{where}: must be a dictionary with 'min' and/or 'max'")
        return None
    out: dict[str, float] = {}
    for bound in ("min", "max"):
        if value.get(bound) is None:
            continue
        try:
            number = float(value[bound])
        except (TypeError, ValueError):
            problems.append(f"{where}.{bound}: {value[bound]!r} is not a number")
            return None
        if number < 0 or (kind == "range_int" and number != int(number)):
            problems.append(f"{where}.{bound}: {value[bound]!r} must be a non-negative "
                            f"{'whole ' if kind == 'range_int' else ''}number")
            return None
        out[bound] = number
    if "min" in out and "max" in out and out["min"] > out["max"]:
        problems.append(f"{where}: min {out['min']:g} is above max {out['max']:g}")
        return None
    return out


def parse_requirements(raw: Any, where: str, problems: list[str]) -> dict[str, Any] | None:
    """A user's ``instance_requirements`` checked and normalised (see :data:`REQUIREMENT_KEYS`)."""
    start = len(problems)
    if not isinstance(raw, dict):
        problems.append(f"{where}: must be a dictionary such as {{vcpus: {{min: 2, max: 4}}, memory_gib: {{min: 4}}}}")
        return None
    unknown = set(raw) - set(REQUIREMENT_KEYS) - set(OWN_KEYS)
    if unknown:
        problems.append(f"{where}: unknown keys {sorted(unknown)}; known: {sorted(set(REQUIREMENT_KEYS) | set(OWN_KEYS))}")
    out: dict[str, Any] = {}
    for key in ("vcpus", "memory_gib"):
        if raw.get(key) is None:
            problems.append(f"{where}.{key}: required (AWS needs a minimum), e.g. {{min: 2}}")
    for key, (_aws, kind) in REQUIREMENT_KEYS.items():
        value = raw.get(key)
        if value is None:
            continue
        here = f"{where}.{key}"
        if kind.startswith("range"):
            rng = _range(value, here, kind, problems)
            if rng is not None:
                if key in ("vcpus", "memory_gib") and "min" not in rng:
                    problems.append(f"{here}: needs 'min'")
                out[key] = rng
        elif kind.startswith("list"):
            allowed = kind.split(":", 1)[1].split(",") if ":" in kind else None
            if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
                problems.append(f"{here}: must be a non-empty list of names")
                continue
            bad = [v for v in value if allowed and v not in allowed]
            if bad:
                problems.append(f"{here}: {bad} not among {allowed}")
            out[key] = list(dict.fromkeys(value))
        elif kind.startswith("choice"):
            allowed = kind.split(":", 1)[1].split(",")
            if value not in allowed:
                problems.append(f"{here}: {value!r} is not one of {', '.join(allowed)}")
            out[key] = value
        elif kind == "int":
            try:
                out[key] = int(value)
            except (TypeError, ValueError):
                problems.append(f"{here}: {value!r} is not a whole number")
    if "allowed_instance_types" in out and "excluded_instance_types" in out:
        problems.append(f"{where}: allowed_instance_types and excluded_instance_types exclude each other (AWS's rule)")
    arches = raw.get("architectures", list(ARCHITECTURES))
    if not isinstance(arches, list) or not arches or any(a not in ARCHITECTURES for a in arches):
        problems.append(f"{where}.architectures: {arches!r} must be a non-empty list of {', '.join(ARCHITECTURES)}")
    else:
        out["architectures"] = list(dict.fromkeys(arches))
    max_types = raw.get("max_types", DEFAULT_MAX_TYPES)
    try:
        out["max_types"] = int(max_types)
        if not 1 <= out["max_types"] <= 50:
            raise ValueError
    except (TypeError, ValueError):
        problems.append(f"{where}.max_types: {max_types!r} must be a whole number from 1 to 50")
    return out if len(problems) == start else None


def _aws_number(value: float) -> int | float:
    return int(value) if float(value) == int(value) else value


def instance_requirements(req: dict[str, Any]) -> dict[str, Any]:
    """AWS's ``InstanceRequirements`` (request shape) of a parsed requirements dictionary."""
    out: dict[str, Any] = {}
    for key, (aws_key, kind) in REQUIREMENT_KEYS.items():
        if key not in req:
            continue
        value = req[key]
        if kind.startswith("range"):
            scale = 1024 if kind == "range_gib" else 1
            shaped = {bound.capitalize(): _aws_number(value[bound] * scale) for bound in ("min", "max") if bound in value}
            if kind in ("range_gib", "range_int"):
                shaped = {k: int(math.ceil(v)) if k == "Min" else int(v) for k, v in shaped.items()}
            out[aws_key] = shaped
        else:
            out[aws_key] = value
    return out


def requirements_params(req: dict[str, Any], architecture: str | None = None) -> dict[str, Any]:
    """Keyword arguments of ``GetInstanceTypesFromInstanceRequirements``."""
    return {
        "ArchitectureTypes": [architecture] if architecture else list(req.get("architectures") or ARCHITECTURES),
        "VirtualizationTypes": ["hvm"],
        "InstanceRequirements": instance_requirements(req),
    }


def score_params(regions: Iterable[str], target_capacity: int, single_zone: bool,
                 instance_types: list[str] | None = None, requirements: dict[str, Any] | None = None) -> dict[str, Any]:
    """Keyword arguments of ``GetSpotPlacementScores`` (instance types, or requirements)."""
    params: dict[str, Any] = {
        "TargetCapacity": max(1, int(target_capacity)),
        "SingleAvailabilityZone": bool(single_zone),
        "RegionNames": sorted(set(regions)),
        # every zone of every region in one page (AWS's largest): a second page would be a round more
        "MaxResults": SCORE_PAGE,
    }
    if requirements is not None:  # AWS takes a unit type only with requirements
        params["InstanceRequirementsWithMetadata"] = requirements_params(requirements)
        params["TargetCapacityUnitType"] = "units"
    else:
        params["InstanceTypes"] = sorted(set(instance_types or []))
    return params
