# -*- coding: utf-8 -*-
# Copyright: bacalhau.aws_spot contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The plan of ``spot_cluster`` in a region: what it has (one round of reads), and what it
must do to hold its count. Private; read only."""

from __future__ import annotations

import functools
import threading
from dataclasses import dataclass, field, replace
from typing import Any
try:
    import botocore.exceptions
except ImportError:
    pass  # AnsibleAWSModule reports a missing botocore
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._placement import images as _ami
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._placement import pools as capacity
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._placement import requirements as needs
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._placement import reads as capacity_reads
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._cluster import instances as inst
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._cluster import network
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._pricing import spot as pricing
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._aws.common import AwsSpotError
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._aws.common import check_regions
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._aws.credentials import credential_problem
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._aws.common import error_text
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._aws.common import known_region_names
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._aws.common import region_client
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._aws.common import run_per_region
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._aws.common import together
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._deletion.spec import Resource
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._cluster.spec import ClusterSpec
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._cluster.spec import RegionSpec


DEFAULT_REGION = "us-east-1"


class Clients:
    """The clients of one region, made when first needed."""

    def __init__(self, module: Any, region: str) -> None:
        self.module, self.region = module, region
        self._ec2 = self._ssm = None
        self._lock = threading.Lock()
        self._shared: dict[str, dict[str, Any]] = {}

    def shared(self, key: str, fn: Any, *args: Any) -> Any:
        """``fn(*args)`` once for every plan of the region that asks (the roles of one cluster
        share its instances and its network: one read, also when their plans run at once)."""
        with self._lock:
            entry = self._shared.setdefault(key, {"lock": threading.Lock()})
        with entry["lock"]:
            if "value" not in entry:
                entry["value"] = fn(*args)
        return entry["value"]

    @property
    def ec2(self) -> Any:
        if self._ec2 is None:
            self._ec2 = region_client(self.module, "ec2", self.region)
        return self._ec2

    @property
    def ssm(self) -> Any:
        if self._ssm is None:
            self._ssm = region_client(self.module, "ssm", self.region)
        return self._ssm

    def ready(self, ssm: bool = False) -> "Clients":
        """Make the clients now (before a round of calls that should go out together)."""
        _ec2 = self.ec2
        _ssm = self.ssm if ssm else None
        return self


@dataclass
class RegionReads:
    """What a region has, read once while planning (one round of describes)."""

    net: network.Network
    instances: list[dict[str, Any]]  # the cluster's, every role, not terminated
    seen: list[dict[str, Any]] = field(default_factory=list)  # the cluster's, any state EC2 still lists (history)
    answered_at: Any = None  # when EC2 answered the instances' read (its Date header), or None
    zones: list[str] = field(default_factory=list)
    zone_ids: dict[str, str] = field(default_factory=dict)  # zone id -> zone name
    types: list[str] = field(default_factory=list)  # instance_types, or what instance_requirements resolved to
    resolved: dict[str, str] = field(default_factory=dict)  # instance_requirements: type -> architecture
    offered: dict[str, set[str]] = field(default_factory=dict)
    images: dict[str, str] = field(default_factory=dict)  # instance type -> image id
    architectures: dict[str, str] = field(default_factory=dict)  # instance type -> architecture
    root_device: str = inst.ROOT_DEVICE
    prices: dict[tuple[str, str], float] | None = None  # spot prices of the wanted types
    on_demand_prices: dict[str, float] = field(default_factory=dict)


@dataclass
class Placement:
    """Where a region's launches go and what the plan costs (``place``; no AWS call)."""

    pairs: list[tuple[str, str]] = field(default_factory=list)  # (type, zone) in the order they are tried
    pools: list[capacity.Pool] = field(default_factory=list)  # spot (or on-demand) pools, ranked
    fallback_pools: list[capacity.Pool] = field(default_factory=list)  # on-demand stand-ins, ranked
    launches: list[capacity.Launch] = field(default_factory=list)
    excluded: list[dict[str, str]] = field(default_factory=list)
    region_score: int | None = None
    zone_scores: dict[str, int] = field(default_factory=dict)  # zone name -> score
    skip_spot: bool = False  # spot-then-on-demand in a region whose spot score is low
    cost: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    ranked: list[Any] = field(default_factory=list)  # _placement.expected_cost.Ranked: every pool, verdict and why
    reassign: Any = None  # () -> launches over the choosable pools (the cost cap leaves pools out)


@dataclass
class RegionPlan:
    """One role's plan in one region: what it read, where launches go, and what it does."""

    spec: RegionSpec
    clients: Clients
    reads: RegionReads
    placement: Placement = field(default_factory=Placement)
    # what the plan does
    in_scope: list[dict[str, Any]] = field(default_factory=list)  # live instances of the role
    fallback_now: list[dict[str, Any]] = field(default_factory=list)  # live on-demand stand-ins of the role
    to_launch: int = 0
    to_terminate: list[dict[str, Any]] = field(default_factory=list)
    to_replace: int = 0  # stand-ins to replace by spot this run (make before break)
    to_fallback: int = 0  # at most this many on-demand stand-ins may be launched this run
    network_changes: list[str] = field(default_factory=list)
    delete_network: bool = False
    doomed: list[Resource] = field(default_factory=list)  # state=absent: what the nuke's engine deletes
    # (instance ids, reason) -> None: told before each of our own terminations (the pool history)
    release: Any = None


def default_client(module: Any) -> Any:
    return region_client(module, "ec2", module.region or DEFAULT_REGION)


def raise_all(errors: dict[str, BaseException], acting: bool = False) -> None:
    """One error naming every region's problem; ``acting``: raised while acting, when some
    regions may have been changed already (planning changes nothing)."""
    if not errors:
        return
    for exc in errors.values():
        if credential_problem(exc):
            raise exc
    parts = []
    for region, exc in sorted(errors.items()):
        text = exc.message if isinstance(exc, AwsSpotError) else error_text(exc)
        parts.append(f"{region}: {text}")
    lead = ("Acting on the regions failed unexpectedly; what was created or changed before that is kept, "
            "and running again picks it up: " if acting else "Nothing was created or changed, because: ")
    raise AwsSpotError(
        lead + " | ".join(parts),
        details={"regions": {r: (e.message if isinstance(e, AwsSpotError) else error_text(e)) for r, e in errors.items()}},
    )


def concurrently(*calls: Any) -> list[Any]:
    """Independent describes of one region in one round trip: ``(function, *args)`` each."""
    return together(*[functools.partial(fn, *args) for fn, *args in calls])


def plan_present(spec: ClusterSpec, region: RegionSpec, clients: Clients) -> RegionPlan:
    """Read what the region has (one round of describes; with instance_requirements a
    second round for the offerings and prices of the types they resolved to)."""
    ec2 = clients.ec2
    req = region.instance_requirements

    def _resolve() -> dict[str, Any] | None:
        if req is not None:  # the images of the architectures asked for; types come with their architecture
            return _ami.resolve_region(ec2, clients.ssm, region.region, architectures=list(req["architectures"])
                                       if not region.image_id else [], release=spec.ubuntu_release,
                                       image_id=region.image_id, details=False, check_offered=False)
        if not region.instance_types:
            return None
        return _ami.resolve_region(ec2, clients.ssm, region.region, architectures=[], release=spec.ubuntu_release,
                                   instance_types=region.instance_types, image_id=region.image_id, details=False,
                                   check_offered=False)  # offerings are read per zone below

    def _offered(types: list[str]) -> dict[str, set[str]]:
        if not types:
            return {}
        return _ami.offered_instance_types(ec2, region.region, types, location_type="availability-zone")

    def _root_device() -> str:
        if not region.image_id:
            return inst.ROOT_DEVICE
        image = _ami.describe_images(ec2, [region.image_id]).get(region.image_id) or {}
        return image.get("RootDeviceName") or inst.ROOT_DEVICE

    def _prices(types: list[str]) -> dict[tuple[str, str], float] | None:
        if not types or not spec.spot_first:
            return None
        try:
            return pricing.spot_prices(ec2, types)
        except botocore.exceptions.ClientError:
            return None

    def _requirements() -> dict[str, str]:
        return capacity_reads.types_from_requirements(ec2, req) if req is not None else {}

    wanted = list(region.instance_types or [])
    (zones, zone_ids), resolved, offered, net, instances, root_device, prices, found = concurrently(
        (clients.shared, "zones", capacity_reads.zones_and_ids, ec2), (_resolve,), (_offered, wanted),
        (clients.shared, "network", network.find, ec2, spec, region.region, []),
        (clients.shared, "instances", inst.describe_cluster_instances_seen, ec2, spec.cluster_name),
        (_root_device,), (_prices, wanted), (_requirements,),
    )
    net.zones = zones
    seen, answered_at = instances
    instances = [i for i in seen if i.get("State", {}).get("Name") in inst.NOT_GONE_STATES]
    unknown_zones = [z for z in region.availability_zones or [] if z not in zones]
    if unknown_zones:
        raise AwsSpotError(f"availability zone(s) {', '.join(unknown_zones)} do not exist or are not available "
                           f"in {region.region}; available: {', '.join(zones)}", region.region)
    plan = RegionPlan(spec=region, clients=clients,
                      reads=RegionReads(net=net, instances=instances, seen=seen, answered_at=answered_at, root_device=root_device, prices=prices,
                                        zones=zones, zone_ids=zone_ids))
    if req is not None and (region.count > 0 or region.standby):
        images = (resolved or {}).get("images") or {}
        found = {t: a for t, a in found.items() if a in images}  # an image_id narrows to its architecture
        if not found:
            raise AwsSpotError(
                f"no instance type meets instance_requirements {needs.requirements_params(req)['InstanceRequirements']}"
                f" for {', '.join(sorted(images) or req['architectures'])} here; widen them", region.region)
        wanted = sorted(found)
        offered, prices = concurrently((_offered, wanted), (_prices, wanted))  # the second round
        plan.reads.prices = prices
        plan.reads.resolved = found
        plan.reads.images = {t: images[a]["image_id"] for t, a in found.items()}
        plan.reads.architectures = dict(found)
    elif resolved:
        plan.reads.images = {t: v["image_id"] for t, v in resolved["instance_types"].items()}
        plan.reads.architectures = {t: v["architecture"] for t, v in resolved["instance_types"].items()}
    for itype in region.instance_types or []:
        if not offered.get(itype):  # offered in no zone: not offered in the region
            raise _ami.not_offered(itype, region.region)
    plan.reads.types, plan.reads.offered = wanted, offered
    if plan.reads.images:
        plan.placement.pairs = inst.candidates(region, zones, offered) if req is None else [
            (t, z) for t in wanted for z in (region.availability_zones or zones) if z in offered.get(t, set())]
        if not plan.placement.pairs:
            raise AwsSpotError(
                f"none of the instance types {', '.join(wanted)} is offered in the zones "
                f"{', '.join(region.availability_zones or zones)}; add types or zones", region.region)
    plan.in_scope = [i for i in instances if inst.role_of(i) == spec.role and inst.is_live(i)]
    plan.fallback_now = [i for i in plan.in_scope if inst.tags_of(i).get(capacity.FALLBACK_TAG) == capacity.FALLBACK_VALUE]
    recount(spec, plan, region.count)
    return plan


def recount(spec: ClusterSpec, plan: RegionPlan, count: int) -> None:
    """What the region's plan does to hold ``count`` live instances of the role (no AWS call)."""
    # a copy: the region's spec is the cluster file's (ClusterDesc.home reads its count), never the plan's
    plan.spec = replace(plan.spec, count=count)
    plan.to_launch = max(0, count - len(plan.in_scope))
    plan.to_terminate = inst.surplus(plan.in_scope, plan.spec, plan.reads.zones, count, types=plan.reads.types,
                                     drain=spec.drain_instance_ids)
    plan.network_changes = network.pending_changes(spec, plan.reads.net) if count > 0 or plan.reads.net.vpc else []


def known_locally(module: Any, names: list[str]) -> bool:
    """Every name is an EC2 region of botocore's own endpoint data (no API call)."""
    try:
        known = known_region_names(module)
    except Exception:  # pylint: disable=broad-except
        return False
    return all(name in known for name in names)


def plans_of(module: Any, names: list[str], plan_one: Any, ssm: bool = False) -> tuple[dict[str, Any], dict[str, BaseException]]:
    """Every region's plan, ``plan_one(region, clients)``, with ``DescribeRegions``' check of
    unknown and not-enabled regions.

    When botocore knows every name the check goes out together with the plans (one round
    trip less) and its error, if any, wins over theirs; otherwise it goes first, as the
    plan of an unknown region would only fail after retries. Every region's clients are
    made before the first call: making one takes CPU (tens of milliseconds), and calls
    meant to go out together would otherwise be spread over more than one round trip.
    """
    ec2 = default_client(module)
    alongside = known_locally(module, names)
    if not alongside:
        check_regions(ec2, names)
    clients = {name: Clients(module, name).ready(ssm=ssm) for name in names}
    answers = together(functools.partial(check_regions, ec2, names) if alongside else None,
                       lambda: run_per_region(names, lambda r: plan_one(r, clients[r])))
    return answers[-1]  # (plans, errors)


def score_groups(spec: ClusterSpec) -> list[capacity_reads.ScoreGroup]:
    """One ``GetSpotPlacementScores`` configuration per distinct ask (types or requirements) of the regions."""
    if not spec.spot_first:
        return []
    groups: dict[str, capacity_reads.ScoreGroup] = {}
    for region in spec.regions:
        if region.count <= 0 or not (region.instance_types or region.instance_requirements):
            continue
        key = repr(sorted(region.instance_types)) if region.instance_requirements is None else repr(
            sorted(region.instance_requirements.items()))
        group = groups.get(key)
        if group is None:
            groups[key] = capacity_reads.ScoreGroup([region.region], region.count,
                                                    instance_types=region.instance_types or None,
                                                    requirements=region.instance_requirements)
        else:
            group.regions.append(region.region)
            group.capacity = max(group.capacity, region.count)
    return list(groups.values())
