# -*- coding: utf-8 -*-
# Copyright: bacalhau.aws_spot contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The AWS reads behind the placement engine (``_capacity``). Private.

* ``zones_and_ids(ec2)``: the region's available zones and their zone ids (spot
  placement scores name zones by id, ``use1-az1``; one ``DescribeAvailabilityZones``).
* ``types_from_requirements(ec2, req)``: instance type -> architecture, from
  ``GetInstanceTypesFromInstanceRequirements``, one call per architecture asked for, at
  once (so no ``DescribeInstanceTypes`` is needed to learn each type's architecture).
* ``placement_scores(ec2, groups)``: ``GetSpotPlacementScores`` by region and by zone,
  one pair of calls per group of regions that ask for the same types (or requirements),
  every call at once. Scores are advice: when AWS refuses them (permissions, its limit
  on new configurations per day) the plan goes on without them and says why.
"""

from __future__ import annotations

import functools
from typing import Any

from ansible_collections.bacalhau.aws_spot.plugins.module_utils._placement import pools as _capacity
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._placement import requirements as needs
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._aws.common import error_text
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._aws.common import paginate
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._aws.common import together


def zones_and_ids(ec2: Any) -> tuple[list[str], dict[str, str]]:
    """(zone names sorted, zone id -> zone name) of the region's available zones."""
    answer = ec2.describe_availability_zones(aws_retry=True, Filters=[{"Name": "state", "Values": ["available"]}])
    zones = [z for z in answer.get("AvailabilityZones", [])
             if z.get("ZoneType", "availability-zone") == "availability-zone"]
    return sorted(z["ZoneName"] for z in zones), {z["ZoneId"]: z["ZoneName"] for z in zones if z.get("ZoneId")}


def types_from_requirements(ec2: Any, req: dict[str, Any]) -> dict[str, str]:
    """Instance type -> architecture of every type that meets ``req`` in this region."""
    arches = list(req.get("architectures") or _capacity.ARCHITECTURES)

    def one(arch: str) -> list[dict[str, Any]]:
        return paginate(ec2, "get_instance_types_from_instance_requirements", "InstanceTypes",
                        **needs.requirements_params(req, arch))

    found: dict[str, str] = {}
    for arch, answer in zip(arches, together(*[functools.partial(one, a) for a in arches])):
        for item in answer:
            found.setdefault(item["InstanceType"], arch)
    return found


class ScoreGroup:
    """Regions that ask for the same instance types (or requirements), and the capacity asked."""

    def __init__(self, regions: list[str], capacity: int, instance_types: list[str] | None = None,
                 requirements: dict[str, Any] | None = None) -> None:
        self.regions, self.capacity = regions, capacity
        self.instance_types, self.requirements = instance_types, requirements


def _scores(ec2: Any, group: ScoreGroup, single_zone: bool) -> list[dict[str, Any]]:
    params = needs.score_params(group.regions, group.capacity, single_zone,
                                instance_types=group.instance_types, requirements=group.requirements)
    return paginate(ec2, "get_spot_placement_scores", "SpotPlacementScores", **params)


def placement_scores(ec2: Any, groups: list[ScoreGroup]) -> dict[str, Any]:
    """``{"regions": {region: score}, "zones": {region: {zone id: score}}, "errors": [text]}``."""
    out: dict[str, Any] = {"regions": {}, "zones": {}, "errors": []}
    if not groups:
        return out

    def guarded(group: ScoreGroup, single_zone: bool) -> list[dict[str, Any]] | None:
        try:
            return _scores(ec2, group, single_zone)
        except Exception as exc:  # pylint: disable=broad-except  # advice only: refused, unknown, unparsable
            out["errors"].append(f"GetSpotPlacementScores ({', '.join(group.regions)}): {error_text(exc)}")
            return None

    calls = [functools.partial(guarded, g, single) for g in groups for single in (False, True)]
    answers = together(*calls)
    for index, answer in enumerate(answers):
        single = bool(index % 2)
        for item in answer or []:
            region, score = item.get("Region"), item.get("Score")
            if region is None or score is None:
                continue
            if single and item.get("AvailabilityZoneId"):
                out["zones"].setdefault(region, {})[item["AvailabilityZoneId"]] = int(score)
            elif not single:
                out["regions"][region] = int(score)
    return out
