# -*- coding: utf-8 -*-
# Copyright: bacalhau.aws_spot contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What ``tagged_resource_nuke`` is asked to do, and what it found. Private.

* :class:`NukeSpec`: the validated request (regions, cluster, extra tags, types,
  force). Built by :func:`build_spec`, which refuses anything unsafe *before* a
  single AWS call is made.
* :class:`Resource`: one resource found in one region, and what happened to it.
* :func:`summarise`: the ``counts`` of the module's result.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Iterable

from ansible_collections.bacalhau.aws_spot.plugins.module_utils._common import (
    CLUSTER_KEY,
    MANAGED_BY_KEY,
    MANAGED_BY_VALUE,
    AwsSpotError,
    is_managed,
    managed_filters,
)

# Every type, in the order results are listed: roughly the order of deletion (what
# must go first so that what it depends on can go after; the rounds are in
# _nuke_delete). Spot requests and fleets go in the same round as the terminations,
# but persistent spot requests and `maintain` fleets, which would launch again what is
# terminated, go in a round of their own before it.
RESOURCE_TYPES: tuple[str, ...] = (
    "spot_instance_requests",
    "ec2_fleets",
    "instances",
    "elastic_ips",
    "launch_templates",
    "network_interfaces",
    "volumes",
    "security_groups",
    "subnets",
    "route_tables",
    "internet_gateways",
    "vpcs",
    "key_pairs",
)

# How each type is named in messages.
LABELS: dict[str, str] = {
    "spot_instance_requests": "spot request",
    "ec2_fleets": "EC2 fleet",
    "instances": "instance",
    "elastic_ips": "elastic IP",
    "launch_templates": "launch template",
    "network_interfaces": "network interface",
    "volumes": "volume",
    "security_groups": "security group",
    "subnets": "subnet",
    "route_tables": "route table",
    "internet_gateways": "internet gateway",
    "vpcs": "VPC",
    "key_pairs": "key pair",
}

ACTION_DELETED = "deleted"
ACTION_WOULD_DELETE = "would_delete"
ACTION_FAILED = "failed"

_REGION_RE = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d+$")


@dataclass
class NukeSpec:
    """A validated request. ``regions`` is ``None`` for "every enabled region"."""

    regions: list[str] | None
    cluster_name: str | None
    tags: dict[str, str]
    resource_types: list[str]
    force: bool

    @property
    def filters(self) -> list[dict[str, Any]]:
        """Describe filters: always our managed-by tag, plus cluster and extra tags."""
        filters = managed_filters(self.cluster_name, extra_tags=self.tags)
        # Belt and braces: a filter list without our tag must never reach a describe.
        if {"Name": f"tag:{MANAGED_BY_KEY}", "Values": [MANAGED_BY_VALUE]} not in filters:
            raise AwsSpotError("refusing to search without the bacalhau:managed-by filter")
        return filters

    def matches(self, tags: dict[str, str]) -> bool:
        """Second line of defence: the resource's own tags, checked here, not by AWS."""
        if not is_managed(tags, self.cluster_name):
            return False
        return all(tags.get(key) == value for key, value in self.tags.items())

    def wants(self, resource_type: str) -> bool:
        return resource_type in self.resource_types


def build_spec(params: dict[str, Any]) -> NukeSpec:
    """Validate the module's parameters; raise :class:`AwsSpotError` on the first problem."""
    regions = params.get("regions")
    if regions is not None:
        regions = [str(r).strip() for r in regions]
        if not regions:
            raise AwsSpotError("regions is an empty list; omit it to search every region enabled for the account")
        bad = [r for r in regions if not _REGION_RE.match(r)]
        if bad:
            raise AwsSpotError(f"not a region name: {', '.join(repr(b) for b in bad)} (expected e.g. us-east-1)")
        regions = list(dict.fromkeys(regions))

    cluster_name = params.get("cluster_name")
    if cluster_name is not None:
        cluster_name = str(cluster_name)
        if not cluster_name.strip():
            raise AwsSpotError(
                "cluster_name is empty; omit it to delete the resources of every cluster, or name one cluster"
            )

    tags: dict[str, str] = {}
    for key, value in (params.get("tags") or {}).items():
        key = str(key)
        if not key.strip():
            raise AwsSpotError("tags has an empty key")
        if value is None:
            raise AwsSpotError(f"tags: {key!r} has no value; give the value the resources carry")
        tags[key] = str(value)
    if MANAGED_BY_KEY in tags and tags[MANAGED_BY_KEY] != MANAGED_BY_VALUE:
        raise AwsSpotError(
            f"tags may not override {MANAGED_BY_KEY}: this module only ever deletes resources tagged "
            f"{MANAGED_BY_KEY}={MANAGED_BY_VALUE}"
        )
    tags.pop(MANAGED_BY_KEY, None)
    if CLUSTER_KEY in tags:
        if cluster_name is not None and tags[CLUSTER_KEY] != cluster_name:
            raise AwsSpotError(
                f"tags[{CLUSTER_KEY!r}]={tags[CLUSTER_KEY]!r} contradicts cluster_name={cluster_name!r}; use cluster_name"
            )
        cluster_name = tags.pop(CLUSTER_KEY)
        if not cluster_name.strip():
            raise AwsSpotError(f"tags[{CLUSTER_KEY!r}] is empty; use cluster_name to name one cluster")

    resource_types = params.get("resource_types")
    if resource_types is None:
        resource_types = list(RESOURCE_TYPES)
    else:
        if not resource_types:
            raise AwsSpotError("resource_types is an empty list; omit it for every type")
        unknown = [t for t in resource_types if t not in RESOURCE_TYPES]
        if unknown:
            raise AwsSpotError(f"unknown resource_types {unknown}; known: {', '.join(RESOURCE_TYPES)}")
        resource_types = [t for t in RESOURCE_TYPES if t in resource_types]

    return NukeSpec(
        regions=regions,
        cluster_name=cluster_name,
        tags=tags,
        resource_types=resource_types,
        force=bool(params.get("force")),
    )


@dataclass
class Resource:
    """One resource of ours in one region, and what happened to it."""

    region: str
    type: str
    id: str
    name: str | None
    tags: dict[str, str]
    raw: dict[str, Any] = field(default_factory=dict, repr=False)
    action: str = ACTION_WOULD_DELETE
    error: str | None = None
    note: str | None = None

    def deleted(self, note: str | None = None) -> None:
        self.action = ACTION_DELETED
        self.error = None
        if note:
            self.note = note

    def failed(self, error: str) -> None:
        self.action = ACTION_FAILED
        self.error = error

    def as_result(self) -> dict[str, Any]:
        result = {
            "region": self.region,
            "type": self.type,
            "id": self.id,
            "name": self.name,
            "tags": dict(self.tags),
            "action": self.action,
            "error": self.error,
        }
        if self.note:
            result["note"] = self.note
        return result


def _tally(bucket: dict[str, int], action: str) -> None:
    bucket[action] = bucket.get(action, 0) + 1
    bucket["total"] = bucket.get("total", 0) + 1


def summarise(resources: Iterable[Resource]) -> dict[str, Any]:
    """``counts``: totals per action, and the same per type and per region."""
    counts: dict[str, Any] = {
        ACTION_DELETED: 0,
        ACTION_WOULD_DELETE: 0,
        ACTION_FAILED: 0,
        "total": 0,
        "by_type": {},
        "by_region": {},
    }
    for res in resources:
        counts[res.action] += 1
        counts["total"] += 1
        _tally(counts["by_type"].setdefault(res.type, {}), res.action)
        _tally(counts["by_region"].setdefault(res.region, {}), res.action)
    return counts


def sort_key(res: Resource) -> tuple[str, int, str]:
    return (res.region, RESOURCE_TYPES.index(res.type), res.id)
