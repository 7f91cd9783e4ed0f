# -*- coding: utf-8 -*-
# Copyright: bacalhau.aws_spot contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The whole cluster as its file describes it (``spot_cluster`` with ``orchestrator``). Private.

The cluster file's ``cluster_orchestrator``, ``cluster_regions``, ``cluster_overflow_regions``
and the settings both roles share become one :class:`ClusterDesc`: a ``ClusterSpec`` per role
(``_cluster.spec``) and the overflow regions. Every problem, in either role, is collected and
named as the file names it (``cluster_regions[1] (eu-west-1): unknown key 'cout' (did you mean
'count'?)``, ``cluster_orchestrator.instance_type: ...``), before any AWS call.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from ansible_collections.bacalhau.aws_spot.plugins.module_utils._placement import expected_cost as _expected_cost
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._placement import rebalance as _rebalance
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._aws.common import AwsSpotError
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._cluster import network as _network
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._cluster import spec as _spec
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._cluster.spec import ClusterSpec
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._cluster.spec import RegionSpec

MODES = ("converge", "heal", "release")
ORCHESTRATOR_KEYS = ("mode", "region", "instance_type", "market", "endpoints", "image_id", "availability_zones")
ENDPOINT_RE = re.compile(r"^nats://[^/:\s]+(:[0-9]{1,5})?$")
LEAD = "Nothing was created, because: "
NO_CAP = 10 ** 9  # the roles' own max_nodes check: the cluster's is done here, over both roles
# the options both roles share -> the cluster file's variable (the playbooks pass them so)
FILE_NAMES = {
    "ssh_cidrs": "cluster_ssh_cidrs", "api_cidrs": "cluster_api_cidrs", "nats_cidrs": "cluster_nats_cidrs",
    "ssh_public_key": "cluster_ssh_public_key_file (its content)", "tags": "cluster_tags",
    "kms_key_id": "cluster_kms_key_id", "cluster_name": "cluster_name", "market": "cluster_market",
    "max_hourly_cost": "cluster_max_hourly_cost", "max_nodes": "cluster_max_nodes",
    "availability_zone_strategy": "cluster_availability_zone_strategy", "regions": "cluster_regions",
    "min_placement_score": "cluster_min_placement_score",
    "security_group_rules_quota": "cluster_security_group_rules_quota",
}
_HEAD = re.compile(r"^(?P<name>[a-z_]+)(?P<rest>[\[.:].*)$", re.S)
_ORCHESTRATOR_ENTRY = re.compile(r"^regions\[0\](?: \([^)]*\))?(?P<field>\.[a-z_]+)?")


@dataclass
class ClusterDesc:
    compute: ClusterSpec
    orchestrator: ClusterSpec | None  # None: an external orchestrator
    endpoints: list[str] = field(default_factory=list)  # external: as given
    overflow: list[RegionSpec] = field(default_factory=list)  # count 0 until a heal needs them
    mode: str = "converge"
    drain: set[str] = field(default_factory=set)
    max_nodes: int = _spec.DEFAULT_MAX_NODES
    max_hourly_cost: float | None = None
    joined: set[str] | None = None  # the compute nodes the orchestrator has (None: not known)
    pool_cooldown: Any = None  # datetime.timedelta (cluster_pool_cooldown); None: the default
    pool_history: bool = True  # keep and use the pool history (_cluster.learning)
    rebalance: dict[str, Any] | None = None  # cluster_rebalance (_placement.rebalance.parse_settings); None: off
    busy: set[str] = field(default_factory=set)  # compute nodes running a job (not moved unless move_busy)

    @property
    def home(self) -> dict[str, int]:
        return {r.region: r.count for r in self.compute.regions}

    @property
    def orchestrator_region(self) -> str | None:
        return self.orchestrator.regions[0].region if self.orchestrator else None

    def where(self, region: str, role: str = "compute") -> str:
        """How the cluster file names a region's entry."""
        if role == "orchestrator" or (self.orchestrator_region == region and region not in self.home
                                      and region not in {r.region for r in self.overflow}):
            return f"cluster_orchestrator.region ({region})"
        for index, entry in enumerate(self.compute.regions):
            if entry.region == region:
                return f"cluster_regions[{index}] ({region})"
        for index, entry in enumerate(self.overflow):
            if entry.region == region:
                return f"cluster_overflow_regions[{index}] ({region})"
        return region


def in_file_words(problem: str) -> str:
    """A problem of a role's parse, named as the cluster file names it."""
    match = _HEAD.match(problem)
    if match and match.group("name") in FILE_NAMES:
        return FILE_NAMES[match.group("name")] + match.group("rest")
    return problem


def _orchestrator_words(problem: str) -> str:
    def name(match: re.Match) -> str:
        found = match.group("field") or ""
        got = {".region": ".region", ".instance_types": ".instance_type"}.get(found, found)
        return "cluster_orchestrator" + got
    if problem.startswith("market:"):
        return "cluster_orchestrator." + problem
    return in_file_words(_ORCHESTRATOR_ENTRY.sub(name, problem))


def _parsed(params: dict[str, Any], words: Any, problems: list[str]) -> ClusterSpec | None:
    try:
        return _spec.parse(params)
    except AwsSpotError as exc:
        for problem in exc.details.get("problems") or [exc.message]:
            problems.append(words(problem))
        return None


def _orchestrator(params: dict[str, Any], raw: Any, problems: list[str]) -> tuple[ClusterSpec | None, list[str]]:
    """The orchestrator's spec (managed) or its endpoints (external)."""
    if not isinstance(raw, dict):
        problems.append("cluster_orchestrator: must be {mode: managed, region, instance_type, market} or "
                        "{mode: external, endpoints: [nats://host:4222]}")
        return None, []
    _spec.unknown_keys(raw, ORCHESTRATOR_KEYS, "cluster_orchestrator", problems)
    mode = raw.get("mode") or "managed"
    if mode == "external":
        endpoints = raw.get("endpoints")
        if not isinstance(endpoints, list) or not endpoints:
            problems.append("cluster_orchestrator.endpoints: an external orchestrator needs its NATS endpoints, "
                            "such as [nats://orchestrator.example.com:4222]")
            return None, []
        bad = [e for e in endpoints if not isinstance(e, str) or not ENDPOINT_RE.match(e)]
        if bad:
            problems.append(f"cluster_orchestrator.endpoints: {', '.join(map(repr, bad))} not of the form "
                            "nats://host:4222")
        return None, [str(e) for e in endpoints]
    if mode != "managed":
        problems.append(f"cluster_orchestrator.mode: {mode!r} is not managed or external")
        return None, []
    missing = [k for k in ("region", "instance_type") if not raw.get(k)]
    if missing:
        problems.append(f"cluster_orchestrator: a managed orchestrator needs {' and '.join(missing)}")
        return None, []
    types = raw["instance_type"] if isinstance(raw["instance_type"], list) else [raw["instance_type"]]
    entry = {"region": raw["region"], "count": 1, "instance_types": types}
    entry.update({k: raw[k] for k in ("image_id", "availability_zones") if raw.get(k)})
    role = dict(params, role="orchestrator", regions=[entry], market=raw.get("market") or "on-demand",
                max_nodes=NO_CAP, max_hourly_cost=None, extra_hourly_cost=0.0, drain_instance_ids=None,
                interrupted_instance_ids=None)
    return _parsed(role, _orchestrator_words, problems), []


def _overflow(params: dict[str, Any], raw: Any, problems: list[str]) -> list[RegionSpec]:
    if raw in (None, []):
        return []
    if not isinstance(raw, list):
        problems.append("cluster_overflow_regions: must be a list of {region, instance_types: [...]}, in order "
                        "of preference")
        return []
    entries = []
    for index, entry in enumerate(raw):
        if isinstance(entry, dict) and "count" in entry:
            problems.append(f"cluster_overflow_regions[{index}] ({entry.get('region')}): no 'count' - an overflow "
                            "region holds what the home regions lack")
            entry = {k: v for k, v in entry.items() if k != "count"}
        entries.append(dict(entry, count=0) if isinstance(entry, dict) else entry)
    label = "cluster_overflow_regions"
    found = []
    for index, entry in enumerate(entries):
        region = _spec._region(entry, index, "present", params.get("market") or "spot", problems, label=label)  # pylint: disable=protected-access
        if region is not None:
            region.standby = True
            found.append(region)
    return found


def _rules_quota(raw: Any, problems: list[str]) -> int:
    if raw is None:
        return _spec.RULES_QUOTA
    if isinstance(raw, bool) or not isinstance(raw, int) or raw < 1:
        problems.append(f"cluster_security_group_rules_quota: {raw!r} is not a whole number of 1 or more (AWS's "
                        f"default is {_spec.RULES_QUOTA})")
        return _spec.RULES_QUOTA
    return raw


def nats_rule_room(compute: ClusterSpec, orchestrator_region: str | None, overflow: list[RegionSpec],
                   quota: int) -> str | None:
    """Why the orchestrator's security group could not hold its NATS rule at the cluster's counts,
    or None. Each compute node outside the orchestrator's region needs a /32 on NATS (it dials
    the public address), unless ``nats_cidrs`` admits every address; the home counts of the other
    regions, and the orchestrator region's own when overflow regions may take its nodes."""
    if orchestrator_region is None:
        return None  # an external orchestrator: no NATS rule of ours
    blocks = compute.nats_cidrs_for(orchestrator_region)
    if _network.admits_everyone(blocks):
        return None
    outside = {r.region: r.count for r in compute.regions if r.region != orchestrator_region and r.count > 0}
    at_home = sum(r.count for r in compute.regions if r.region == orchestrator_region)
    if overflow and at_home:
        outside[f"the overflow regions (for {orchestrator_region}'s nodes)"] = at_home
    addresses = sum(outside.values())
    ipv4, ipv6 = _network.inbound_rules(compute, orchestrator_region, addresses)
    if max(ipv4, ipv6) <= quota:
        return None
    fixed = ipv4 - addresses
    where = ", ".join(f"{n} in {r}" for r, n in outside.items())
    return (f"the orchestrator's security group in {orchestrator_region} could need {ipv4} inbound rules: "
            f"{fixed} for SSH, the API, NATS blocks and the group itself, and a /32 on NATS (4222) for each compute "
            f"node outside {orchestrator_region} ({where}). AWS allows {quota} per group "
            "(cluster_security_group_rules_quota). Put more of the nodes in the orchestrator's region, or give "
            "cluster_nats_cidrs blocks that hold their addresses (the compute nodes present the cluster's auth "
            "token to join), or raise the quota 'Inbound or outbound rules per security group' in Service Quotas "
            "and set cluster_security_group_rules_quota to it" if ipv4 > quota else
            f"the orchestrator's security group in {orchestrator_region} would need {ipv6} IPv6 inbound rules, "
            f"more than the {quota} AWS allows per group (cluster_security_group_rules_quota): give fewer IPv6 "
            "blocks, or raise the quota in Service Quotas and set cluster_security_group_rules_quota to it")


def parse(params: dict[str, Any]) -> ClusterDesc:
    """The module's parameters (cluster form) as a :class:`ClusterDesc`, or one error naming every problem."""
    problems: list[str] = []
    orchestrator, endpoints = _orchestrator(params, params.get("orchestrator"), problems)
    overflow = _overflow(params, params.get("overflow_regions"), problems)
    compute = _parsed(dict(params, role="compute", max_nodes=NO_CAP, max_hourly_cost=None, extra_hourly_cost=0.0),
                      in_file_words, problems)
    max_nodes, max_cost = params.get("max_nodes"), params.get("max_hourly_cost")
    if max_nodes is None:
        max_nodes = _spec.DEFAULT_MAX_NODES
    elif not isinstance(max_nodes, int) or max_nodes < 0:
        problems.append(f"cluster_max_nodes: {max_nodes!r} is not a whole number of 0 or more")
        max_nodes = _spec.DEFAULT_MAX_NODES
    if max_cost is not None and (not isinstance(max_cost, (int, float)) or max_cost < 0):
        problems.append(f"cluster_max_hourly_cost: {max_cost!r} is not a price of 0 or more in USD per hour")
        max_cost = None
    mode = params.get("mode") or "converge"
    raw_orchestrator = params.get("orchestrator") or {}
    taken = {str(r.get("region")) for r in params.get("regions") or [] if isinstance(r, dict)}
    taken |= {str(raw_orchestrator.get("region"))} if isinstance(raw_orchestrator, dict) else set()
    for index, entry in enumerate(overflow):
        if entry.region in taken:
            problems.append(f"cluster_overflow_regions[{index}] ({entry.region}): is a region of cluster_regions "
                            "or the orchestrator's; an overflow region must be another")
    asked = []
    for index, entry in enumerate(params.get("regions") or []):
        try:
            asked.append((index, str(entry.get("region")), int(entry.get("count") or 0)))
        except (AttributeError, TypeError, ValueError):
            continue  # named by the parse above
    managed = 1 if orchestrator is not None or (isinstance(raw_orchestrator, dict)
                                                and (raw_orchestrator.get("mode") or "managed") == "managed") else 0
    counted = sum(n for _i, _r, n in asked) + managed
    if counted > max_nodes:
        for index, region, count in asked:
            if count > max_nodes:
                problems.append(f"cluster_regions[{index}] ({region}): count {count} is more than "
                                f"cluster_max_nodes {max_nodes}")
        parts = f"{counted - managed} compute" + (", 1 orchestrator" if managed else "")
        problems.append(f"the cluster would have {counted} nodes ({parts}), more than cluster_max_nodes "
                        f"{max_nodes}. Fix the counts, or raise cluster_max_nodes if that many is meant")
    cooldown = _expected_cost.parse_cooldown(params.get("pool_cooldown"), "cluster_pool_cooldown", problems)
    rebalance = _rebalance.parse_settings(params.get("rebalance"), "cluster_rebalance", problems)
    quota = _rules_quota(params.get("security_group_rules_quota"), problems)
    if compute is not None and orchestrator is not None and not problems:
        room = nats_rule_room(compute, orchestrator.regions[0].region, overflow, quota)
        if room:
            problems.append(room)
    problems = list(dict.fromkeys(problems))
    if problems or compute is None:
        raise AwsSpotError(LEAD + "; ".join(problems), details={"problems": problems})
    for role_spec in (compute, orchestrator):
        if role_spec is not None:
            role_spec.rules_quota = quota
    return ClusterDesc(compute=compute, orchestrator=orchestrator, endpoints=endpoints, overflow=overflow, mode=mode,
                       drain=set(compute.drain_instance_ids), max_nodes=max_nodes, max_hourly_cost=max_cost,
                       joined=None if params.get("joined_instance_ids") is None else
                       {str(i) for i in params["joined_instance_ids"]},
                       pool_cooldown=cooldown, pool_history=params.get("pool_history") is not False,
                       rebalance=rebalance, busy={str(i) for i in params.get("busy_instance_ids") or []})


def region_names(params: dict[str, Any]) -> list[dict[str, str]]:
    """Every region of the cluster file (the orchestrator's, the compute and overflow regions), as
    ``regions`` entries for ``state=absent``."""
    entries = [params.get("orchestrator") or {}] + list(params.get("regions") or []) + \
        list(params.get("overflow_regions") or [])
    names = [str(e.get("region")) for e in entries if isinstance(e, dict) and e.get("region")]
    return [{"region": name} for name in dict.fromkeys(names)]
