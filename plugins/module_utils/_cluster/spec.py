# -*- coding: utf-8 -*-
# Copyright: bacalhau.aws_spot contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What the user asked ``spot_cluster`` for, checked before any AWS call. Private.

Everything that can be checked without AWS is checked here, and every problem
is collected, so that the user gets one message listing all of them and no
resource is created. (What needs AWS - unknown instance types, architecture
mismatches, regions that are not enabled - is checked in the plan phase of
``_spot_cluster``, still before anything is created.)
"""

from __future__ import annotations

import difflib
import hashlib
import ipaddress
import re
from dataclasses import dataclass, field
from typing import Any

from ansible_collections.bacalhau.aws_spot.plugins.module_utils._placement import pools as _capacity
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._placement import requirements as needs
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._placement import cost as pricing_caps
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._aws.common import AwsSpotError
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._aws.common import CLUSTER_KEY
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._aws.common import MANAGED_BY_KEY
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._aws.common import ROLE_KEY

ROLES = ("compute", "orchestrator")
MARKETS = _capacity.MARKETS  # spot, on-demand, spot-then-on-demand
STRATEGIES = _capacity.STRATEGIES  # spread, packed
DEFAULT_MAX_NODES = 100
CLUSTER_NAME_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,38}[a-z0-9])?$")
REGION_RE = re.compile(r"^[a-z]{2}(?:-gov|-iso[a-z]*)?-[a-z]+-\d+$")
ZONE_RE = re.compile(r"^[a-z]{2}(?:-gov|-iso[a-z]*)?-[a-z]+-\d+[a-z](?:-[a-z0-9-]+)?$")
INSTANCE_TYPE_RE = re.compile(r"^[a-z][a-z0-9-]*\.[a-z0-9-]+$")
IMAGE_ID_RE = re.compile(r"^ami-[0-9a-f]{8,17}$")
PRICE_RE = re.compile(r"^\d+(?:\.\d+)?$")
SSH_KEY_RE = re.compile(r"^(ssh-rsa|ssh-ed25519|ecdsa-sha2-nistp(?:256|384|521))\s+([A-Za-z0-9+/=]+)(?:\s+.*)?$")
MAX_COUNT_PER_REGION = 1000
USER_DATA_LIMIT = 16 * 1024  # bytes, before base64 (EC2's limit)
NATS_PORT = 4222  # Bacalhau's orchestrator NATS port (BACALHAU.md: Orchestrator.Port)


@dataclass
class RegionSpec:
    region: str
    count: int = 0
    instance_types: list[str] = field(default_factory=list)
    image_id: str | None = None
    availability_zones: list[str] | None = None
    max_price: str | None = None
    nats_cidrs: list[str] | None = None  # None: the cluster-wide nats_cidrs
    instance_requirements: dict[str, Any] | None = None  # needs.parse_requirements' shape
    on_demand_max: int | None = None  # market spot-then-on-demand: most on-demand stand-ins (None: no limit)
    standby: bool = False  # an overflow region: its types are resolved even while its count is 0


# AWS's default quota "Inbound or outbound rules per security group" (Service Quotas L-0EA8095F), for
# IPv4 and IPv6 rules apart; a rule that names a security group counts once in each
RULES_QUOTA = 60


@dataclass
class ClusterSpec:
    cluster_name: str
    state: str
    role: str | None
    regions: list[RegionSpec]
    market: str = "spot"
    ssh_public_key: str | None = None
    ssh_cidrs: list[str] = field(default_factory=list)
    api_cidrs: list[str] = field(default_factory=list)
    nats_cidrs: list[str] = field(default_factory=list)
    api_port: int = 1234
    vpc_cidr: str = "10.0.0.0/16"
    root_volume_size: int = 20
    kms_key_id: str | None = None  # None: the account's EBS default key
    user_data: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    wait: bool = True
    wait_timeout: int = 600
    allow_partial: bool = False
    instance_tags: dict[str, str] = field(default_factory=dict)  # on what this call launches, not the network
    drain_instance_ids: list[str] = field(default_factory=list)  # terminated first when a region has a surplus
    # of drain_instance_ids, those EC2 sent an interruption warning for (the others: a rebalance recommendation)
    interrupted_instance_ids: list[str] = field(default_factory=list)
    ubuntu_release: str = "24.04"
    availability_zone_strategy: str = "spread"
    max_hourly_cost: float | None = None
    extra_hourly_cost: float = 0.0  # the cluster's cost outside this call's view (another role, planned)
    max_nodes: int = DEFAULT_MAX_NODES
    min_placement_score: int = _capacity.DEFAULT_MIN_SCORE
    rules_quota: int = RULES_QUOTA  # inbound rules AWS lets a security group hold (cluster_security_group_rules_quota)

    @property
    def spot_first(self) -> bool:
        """Spot is tried first (market spot or spot-then-on-demand)."""
        return self.market != "on-demand"

    def nats_cidrs_for(self, region: str) -> list[str]:
        """NATS sources of one region: its own list when given, else the cluster-wide one."""
        for entry in self.regions:
            if entry.region == region and entry.nats_cidrs is not None:
                return entry.nats_cidrs
        return self.nats_cidrs

    @property
    def prefix(self) -> str:
        return f"bacalhau-{self.cluster_name}"

    @property
    def key_name(self) -> str | None:
        """Key pairs are named after their material, so a new key never clashes with an old one."""
        if not self.ssh_public_key:
            return None
        m = SSH_KEY_RE.match(self.ssh_public_key.strip())
        body = f"{m.group(1)} {m.group(2)}" if m else self.ssh_public_key.strip()
        digest = hashlib.sha256(body.encode()).hexdigest()[:10]
        return f"{self.prefix}-{digest}"

    @property
    def region_names(self) -> list[str]:
        return [r.region for r in self.regions]


def _cidrs(value: list[str] | None, what: str, problems: list[str]) -> list[str]:
    out: list[str] = []
    for item in value or []:
        try:
            out.append(str(ipaddress.ip_network(str(item).strip(), strict=False)))
        except ValueError:
            problems.append(f"{what}: {item!r} is not a CIDR block such as 203.0.113.0/24")
    return list(dict.fromkeys(out))


def _at_least_zero(value: Any, convert: Any, fallback: Any, message: str, problems: list[str]) -> Any:
    """``convert(value)`` when it is a number of 0 or more; else ``message.format(value)`` is a
    problem and ``fallback`` is returned."""
    try:
        number = convert(value)
    except (TypeError, ValueError):
        number = None
    if number is None or number < 0:
        problems.append(message.format(value))
        return fallback
    return number


REGION_KEYS = ("region", "count", "instance_types", "instance_requirements", "image_id", "availability_zones",
               "max_price", "nats_cidrs", "on_demand_max")


def unknown_keys(entry: dict[str, Any], known: tuple[str, ...], where: str, problems: list[str]) -> None:
    """A problem per key of ``entry`` not in ``known``, with the known key it most looks like."""
    for key in entry:
        if key in known:
            continue
        close = difflib.get_close_matches(str(key), known, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else f"; an entry takes {', '.join(known)}"
        problems.append(f"{where}: unknown key {key!r}{hint}")


def _region(entry: Any, index: int, state: str, market: str, problems: list[str],
            label: str = "regions") -> RegionSpec | None:
    where = f"{label}[{index}]"
    if not isinstance(entry, dict):
        problems.append(f"{where}: must be a dictionary with at least 'region'")
        return None
    name = str(entry.get("region") or "").strip()
    if not REGION_RE.match(name):
        problems.append(f"{where}.region: {name!r} is not an AWS region name such as eu-west-1")
        return None
    where = f"{label}[{index}] ({name})"
    unknown_keys(entry, REGION_KEYS, where, problems)
    spec = RegionSpec(region=name)
    if state == "absent":
        return spec

    count = entry.get("count")
    if count is None:
        problems.append(f"{where}: 'count' is required (0 empties the region)")
    else:
        try:
            spec.count = int(count)
        except (TypeError, ValueError):
            problems.append(f"{where}.count: {count!r} is not a whole number")
        else:
            if spec.count < 0 or spec.count > MAX_COUNT_PER_REGION:
                problems.append(f"{where}.count: {spec.count} is outside 0..{MAX_COUNT_PER_REGION}")

    types = entry.get("instance_types")
    requirements = entry.get("instance_requirements")
    if requirements is not None:
        if types is not None:
            problems.append(f"{where}: give either instance_types or instance_requirements, not both")
        spec.instance_requirements = needs.parse_requirements(requirements, f"{where}.instance_requirements",
                                                              problems)
    if types is None:
        if spec.count > 0 and requirements is None:
            problems.append(f"{where}: 'instance_types' (an ordered list such as [t3.small, t3a.small]) or "
                            "'instance_requirements' is required")
    elif not isinstance(types, list) or not types:
        problems.append(f"{where}.instance_types: must be a non-empty list, in order of preference")
    else:
        for itype in types:
            if not isinstance(itype, str) or not INSTANCE_TYPE_RE.match(itype.strip()):
                problems.append(f"{where}.instance_types: {itype!r} is not an instance type name such as t3.small")
        spec.instance_types = list(dict.fromkeys(str(t).strip() for t in types))

    image_id = entry.get("image_id")
    if image_id:
        if not IMAGE_ID_RE.match(str(image_id)):
            problems.append(f"{where}.image_id: {image_id!r} is not an AMI id such as ami-0123456789abcdef0")
        spec.image_id = str(image_id)

    zones = entry.get("availability_zones")
    if zones is not None:
        if not isinstance(zones, list) or not zones:
            problems.append(f"{where}.availability_zones: must be a non-empty list (omit it for every zone)")
        else:
            for zone in zones:
                if not isinstance(zone, str) or not ZONE_RE.match(zone) or not zone.startswith(name):
                    problems.append(f"{where}.availability_zones: {zone!r} is not a zone of {name} (such as {name}a)")
            spec.availability_zones = list(dict.fromkeys(str(z) for z in zones))

    price = entry.get("max_price")
    if price not in (None, ""):
        if market == "on-demand":
            problems.append(f"{where}.max_price: only applies to market=spot or spot-then-on-demand")
        elif not PRICE_RE.match(str(price)) or float(price) <= 0:
            problems.append(f"{where}.max_price: {price!r} is not a positive price in USD per hour such as 0.05")
        else:
            spec.max_price = str(price)
    if entry.get("nats_cidrs") is not None:
        spec.nats_cidrs = _cidrs(entry.get("nats_cidrs"), f"{where}.nats_cidrs", problems)
    on_demand_max = entry.get("on_demand_max")
    if on_demand_max is not None:
        if market != "spot-then-on-demand":
            problems.append(f"{where}.on_demand_max: only applies to market=spot-then-on-demand")
        spec.on_demand_max = _at_least_zero(on_demand_max, int, spec.on_demand_max,
                                            f"{where}.on_demand_max: {{!r}} is not a whole number of 0 or more", problems)
    return spec


WORLD = ("0.0.0.0/0", "::/0")


def open_to_world(spec: ClusterSpec) -> list[str]:
    """The options that open a port to the whole internet (0.0.0.0/0 or ::/0), e.g. ``ssh_cidrs``."""
    found = [(name, getattr(spec, name)) for name in ("ssh_cidrs", "api_cidrs", "nats_cidrs")]
    found += [(f"regions[{r.region}].nats_cidrs", r.nats_cidrs or []) for r in spec.regions]
    return [f"{name}: {cidr}" for name, cidrs in found for cidr in cidrs
            if str(ipaddress.ip_network(cidr, strict=False)) in WORLD]


def _user_tags(params: dict[str, Any], option: str, problems: list[str]) -> dict[str, str]:
    """The user's tags of ``option``, refusing the keys the module sets itself."""
    tags = {str(k): str(v) for k, v in (params.get(option) or {}).items()}
    for key_name in tags:
        if key_name.startswith("aws:") or key_name in (MANAGED_BY_KEY, CLUSTER_KEY, ROLE_KEY, _capacity.FALLBACK_TAG):
            problems.append(f"{option}: {key_name!r} is reserved (aws:* and the bacalhau:* keys are set by the module)")
    return tags


def parse(params: dict[str, Any]) -> ClusterSpec:
    """Turn module parameters into a :class:`ClusterSpec`, or raise one error naming every problem."""
    problems: list[str] = []
    state = params.get("state") or "present"
    name = str(params.get("cluster_name") or "")
    if not CLUSTER_NAME_RE.match(name):
        problems.append(
            f"cluster_name: {name!r} must be 1-40 lowercase letters, digits and '-', starting and ending "
            "with a letter or digit"
        )
    role = params.get("role")
    if state == "present" and not role:
        role = "compute"
    market = params.get("market") or "spot"

    raw_regions = params.get("regions")
    regions: list[RegionSpec] = []
    if raw_regions is None:
        if state == "present":
            problems.append("regions: required with state=present, e.g. [{region: eu-west-1, count: 2, instance_types: [t3.small]}]")
    elif not isinstance(raw_regions, list):
        problems.append("regions: must be a list")
    else:
        if state == "present" and not raw_regions:
            problems.append("regions: must list at least one region")
        for index, entry in enumerate(raw_regions):
            spec = _region(entry, index, state, market, problems)
            if spec is not None:
                regions.append(spec)
        seen: set[str] = set()
        for spec in list(regions):
            if spec.region in seen:
                if state == "present":
                    problems.append(f"regions: {spec.region} is listed twice; give it one entry")
                else:
                    regions.remove(spec)  # absent only needs the names
            seen.add(spec.region)

    key = params.get("ssh_public_key")
    if key:
        key = str(key).strip()
        if not SSH_KEY_RE.match(key):
            problems.append(
                "ssh_public_key: expected OpenSSH public key material ('ssh-ed25519 AAAA...' or 'ssh-rsa AAAA...'), "
                "not a file name or a private key"
            )

    vpc_cidr = str(params.get("vpc_cidr") or "10.0.0.0/16")
    try:
        net = ipaddress.ip_network(vpc_cidr, strict=True)
        if net.version != 4 or not 16 <= net.prefixlen <= 24:
            problems.append(f"vpc_cidr: {vpc_cidr} must be an IPv4 block from /16 to /24")
    except ValueError:
        problems.append(f"vpc_cidr: {vpc_cidr!r} is not a network address such as 10.0.0.0/16")

    root = int(params.get("root_volume_size") or 20)
    if not 8 <= root <= 16384:
        problems.append(f"root_volume_size: {root} GiB is outside 8..16384")
    user_data = params.get("user_data")
    if user_data and len(str(user_data).encode()) > USER_DATA_LIMIT:
        problems.append(f"user_data: {len(str(user_data).encode())} bytes is more than EC2's {USER_DATA_LIMIT}")
    wait_timeout = int(params.get("wait_timeout") or 600)
    if wait_timeout <= 0:
        problems.append("wait_timeout: must be a positive number of seconds")
    api_port = int(params.get("api_port") or 1234)
    if not 1 <= api_port <= 65535:
        problems.append(f"api_port: {api_port} is not a TCP port")

    if market not in MARKETS:
        problems.append(f"market: {market!r} is not one of {', '.join(MARKETS)}")
    strategy = params.get("availability_zone_strategy") or "spread"
    if strategy not in STRATEGIES:
        problems.append(f"availability_zone_strategy: {strategy!r} is not one of {', '.join(STRATEGIES)}")
    price = "a price of 0 or more in USD per hour"
    max_cost = params.get("max_hourly_cost")
    if max_cost is not None:
        max_cost = _at_least_zero(max_cost, float, None, f"max_hourly_cost: {{!r}} is not {price}", problems)
    extra_cost = _at_least_zero(params.get("extra_hourly_cost") or 0.0, float, 0.0,
                                f"extra_hourly_cost: {{!r}} is not {price}", problems)
    max_nodes = params.get("max_nodes")
    max_nodes = _at_least_zero(DEFAULT_MAX_NODES if max_nodes is None else max_nodes, int, DEFAULT_MAX_NODES,
                               "max_nodes: {!r} is not a whole number of 0 or more", problems)
    asked = sum(r.count for r in regions) if state == "present" else 0
    refusal = pricing_caps.over_max_nodes(asked, max_nodes, {r.region: r.count for r in regions})
    if refusal:
        problems.append(f"regions: {refusal.split('; nothing was created', maxsplit=1)[0]}")
    min_score = params.get("min_placement_score")
    min_score = _capacity.DEFAULT_MIN_SCORE if min_score is None else min_score
    try:
        min_score = int(min_score)
        if not 1 <= min_score <= 10:
            raise ValueError
    except (TypeError, ValueError):
        problems.append(f"min_placement_score: {min_score!r} is not a spot placement score from 1 to 10")
        min_score = _capacity.DEFAULT_MIN_SCORE

    tags, instance_tags = (_user_tags(params, option, problems) for option in ("tags", "instance_tags"))

    spec = ClusterSpec(
        cluster_name=name,
        state=state,
        role=role,
        regions=regions,
        market=market,
        ssh_public_key=key or None,
        ssh_cidrs=_cidrs(params.get("ssh_cidrs"), "ssh_cidrs", problems),
        api_cidrs=_cidrs(params.get("api_cidrs"), "api_cidrs", problems),
        nats_cidrs=_cidrs(params.get("nats_cidrs"), "nats_cidrs", problems),
        api_port=api_port,
        vpc_cidr=vpc_cidr,
        root_volume_size=root,
        kms_key_id=str(params.get("kms_key_id") or "") or None,
        user_data=user_data or None,
        tags=tags,
        wait=bool(params.get("wait", True)),
        wait_timeout=wait_timeout,
        allow_partial=bool(params.get("allow_partial", False)),
        instance_tags=instance_tags,
        drain_instance_ids=[str(i) for i in params.get("drain_instance_ids") or []],
        interrupted_instance_ids=[str(i) for i in params.get("interrupted_instance_ids") or []],
        ubuntu_release=str(params.get("ubuntu_release") or "24.04"),
        availability_zone_strategy=strategy,
        max_hourly_cost=max_cost,
        extra_hourly_cost=extra_cost,
        max_nodes=max_nodes,
        min_placement_score=min_score,
    )
    if problems:
        raise AwsSpotError(
            "Invalid spot_cluster input, nothing was created: " + "; ".join(problems),
            details={"problems": problems},
        )
    return spec
