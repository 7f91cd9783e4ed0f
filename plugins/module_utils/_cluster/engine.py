# -*- coding: utf-8 -*-
# Copyright: bacalhau.aws_spot contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The work of ``spot_cluster``: plan every region, then act on every region. Private.

Two phases, both with all regions at once (``run_per_region``):

1. plan (read only): region enabled, availability zones, instance types and their
   architectures and images (``_ami.resolve_region``), offerings per zone, the
   cluster's network and instances (found by tags). Any problem in any region
   stops here: one error naming them all, nothing created.
2. act: ensure the network, terminate the surplus, launch what is missing with
   fallback, wait, price. A region that fails does not stop the others; each
   region reports what happened to it.

Check mode stops after phase 1 and reports what phase 2 would do.

``state: absent`` finds and deletes through the nuke's engine (``_nuke_discover``,
``_nuke_delete``), scoped to the cluster (and to its role while other roles keep
instances in the region): one way to delete what this collection makes.
"""

from __future__ import annotations

import functools
import threading
from dataclasses import dataclass, field
from typing import Any

try:
    import botocore.exceptions
except ImportError:
    pass  # AnsibleAWSModule reports a missing botocore

from ansible_collections.bacalhau.aws_spot.plugins.module_utils._placement import images as _ami
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._placement import pools as capacity
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._placement import reads as capacity_reads
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._cluster import instances as inst
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._cluster import network
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._pricing import price_list
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._pricing import spot as pricing
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._aws.common import ROLE_KEY
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._aws.common import AwsSpotError
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._aws.common import check_regions
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._aws.credentials import credential_problem
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._aws.common import enabled_region_names
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._aws.common import error_code
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._aws.common import error_text
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._aws.common import known_region_names
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._aws.common import region_client
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._aws.common import run_per_region
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._aws.common import together
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._deletion.delete import ALREADY_GONE
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._deletion.delete import WENT_WITH_ITS_INSTANCE
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._deletion.delete import delete_region
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._deletion.discover import discover_region
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._deletion.spec import ACTION_DELETED
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._deletion.spec import ACTION_FAILED
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._deletion.spec import LABELS
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._deletion.spec import RESOURCE_TYPES
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._deletion.spec import NukeSpec
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
class RegionPlan:
    spec: RegionSpec
    clients: Clients
    net: network.Network
    instances: list[dict[str, Any]]  # the cluster's, every role, not terminated
    images: dict[str, str] = field(default_factory=dict)  # instance type -> image id
    architectures: dict[str, str] = field(default_factory=dict)  # instance type -> architecture
    pairs: list[tuple[str, str]] = field(default_factory=list)
    root_device: str = inst.ROOT_DEVICE
    in_scope: list[dict[str, Any]] = field(default_factory=list)  # live instances of the role
    to_launch: int = 0
    to_terminate: list[dict[str, Any]] = field(default_factory=list)
    network_changes: list[str] = field(default_factory=list)
    delete_network: bool = False
    doomed: list[Resource] = field(default_factory=list)  # state=absent: what the nuke's engine deletes
    prices: dict[tuple[str, str], float] | None = None  # spot prices of the wanted types, read while planning
    # placement (``_capacity``): the candidate types, their offerings, the ranked pools and the launches
    types: list[str] = field(default_factory=list)  # instance_types, or what instance_requirements resolved to
    offered: dict[str, set[str]] = field(default_factory=dict)
    zones: list[str] = field(default_factory=list)
    zone_ids: dict[str, str] = field(default_factory=dict)  # zone id -> zone name
    resolved: dict[str, str] = field(default_factory=dict)  # instance_requirements: type -> architecture
    on_demand_prices: dict[str, float] = field(default_factory=dict)
    pools: list[capacity.Pool] = field(default_factory=list)  # spot (or on-demand) pools, ranked
    fallback_pools: list[capacity.Pool] = field(default_factory=list)  # on-demand stand-ins, ranked
    launches: list[capacity.Launch] = field(default_factory=list)
    excluded: list[dict[str, str]] = field(default_factory=list)
    region_score: int | None = None
    zone_scores: dict[str, int] = field(default_factory=dict)  # zone name -> score
    skip_spot: bool = False  # spot-then-on-demand in a region whose spot score is low
    fallback_now: list[dict[str, Any]] = field(default_factory=list)  # live on-demand stand-ins of the role
    to_replace: int = 0  # stand-ins to replace by spot this run (make before break)
    to_fallback: int = 0  # at most this many on-demand stand-ins may be launched this run
    cost: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- helpers
def _default_client(module: Any) -> Any:
    return region_client(module, "ec2", module.region or DEFAULT_REGION)


def _raise_all(errors: dict[str, BaseException], acting: bool = False) -> None:
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


def _concurrently(*calls: Any) -> list[Any]:
    """Independent describes of one region in one round trip: ``(function, *args)`` each."""
    return together(*[functools.partial(fn, *args) for fn, *args in calls])


# --------------------------------------------------------------------------- present
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
    (zones, zone_ids), resolved, offered, net, instances, root_device, prices, found = _concurrently(
        (clients.shared, "zones", capacity_reads.zones_and_ids, ec2), (_resolve,), (_offered, wanted),
        (clients.shared, "network", network.find, ec2, spec, region.region, []),
        (clients.shared, "instances", inst.describe_cluster_instances, ec2, spec.cluster_name),
        (_root_device,), (_prices, wanted), (_requirements,),
    )
    net.zones = zones
    unknown_zones = [z for z in region.availability_zones or [] if z not in zones]
    if unknown_zones:
        raise AwsSpotError(f"availability zone(s) {', '.join(unknown_zones)} do not exist or are not available "
                           f"in {region.region}; available: {', '.join(zones)}", region.region)
    plan = RegionPlan(spec=region, clients=clients, net=net, instances=instances, root_device=root_device,
                      prices=prices, zones=zones, zone_ids=zone_ids)
    if req is not None and (region.count > 0 or region.standby):
        images = (resolved or {}).get("images") or {}
        found = {t: a for t, a in found.items() if a in images}  # an image_id narrows to its architecture
        if not found:
            raise AwsSpotError(
                f"no instance type meets instance_requirements {capacity.requirements_params(req)['InstanceRequirements']}"
                f" for {', '.join(sorted(images) or req['architectures'])} here; widen them", region.region)
        wanted = sorted(found)
        offered, prices = _concurrently((_offered, wanted), (_prices, wanted))  # the second round
        plan.prices = prices
        plan.resolved = found
        plan.images = {t: images[a]["image_id"] for t, a in found.items()}
        plan.architectures = dict(found)
    elif resolved:
        plan.images = {t: v["image_id"] for t, v in resolved["instance_types"].items()}
        plan.architectures = {t: v["architecture"] for t, v in resolved["instance_types"].items()}
    for itype in region.instance_types or []:
        if not offered.get(itype):  # offered in no zone: not offered in the region
            raise _ami.not_offered(itype, region.region)
    plan.types, plan.offered = wanted, offered
    if plan.images:
        plan.pairs = inst.candidates(region, zones, offered) if req is None else [
            (t, z) for t in wanted for z in (region.availability_zones or zones) if z in offered.get(t, set())]
        if not plan.pairs:
            raise AwsSpotError(
                f"none of the instance types {', '.join(wanted)} is offered in the zones "
                f"{', '.join(region.availability_zones or zones)}; add types or zones", region.region)
    plan.in_scope = [i for i in instances if inst.role_of(i) == spec.role and inst.is_live(i)]
    plan.fallback_now = [i for i in plan.in_scope if inst.tags_of(i).get(capacity.FALLBACK_TAG) == capacity.FALLBACK_VALUE]
    recount(spec, plan, region.count)
    return plan


def recount(spec: ClusterSpec, plan: RegionPlan, count: int) -> None:
    """What the region's plan does to hold ``count`` live instances of the role (no AWS call)."""
    plan.spec.count = count
    plan.to_launch = max(0, count - len(plan.in_scope))
    plan.to_terminate = inst.surplus(plan.in_scope, plan.spec, plan.zones, count, types=plan.types,
                                     drain=spec.drain_instance_ids)
    plan.network_changes = network.pending_changes(spec, plan.net) if count > 0 or plan.net.vpc else []


def place(spec: ClusterSpec, plan: RegionPlan, scores: dict[str, Any]) -> None:
    """Rank the region's pools and split its launches over zones (``_capacity``; no AWS call)."""
    region = plan.spec
    if not plan.pairs:
        return
    by_id = plan.zone_ids
    plan.zone_scores = {by_id[zid]: score for zid, score in (scores.get("zones", {}).get(region.region) or {}).items()
                        if zid in by_id}
    plan.region_score = scores.get("regions", {}).get(region.region)
    zones = region.availability_zones or plan.zones
    market = "on-demand" if spec.market == "on-demand" else "spot"
    pools, plan.excluded = capacity.gather_pools(
        region.region, plan.types, zones, plan.offered, plan.prices if spec.spot_first else None,
        architectures=plan.architectures, zone_scores=plan.zone_scores, region_score=plan.region_score,
        on_demand_prices=plan.on_demand_prices, market=spec.market)
    by = "price" if region.instance_requirements is not None else "preference"
    order = dict(type_order=region.instance_types or None, zone_order=region.availability_zones,
                 min_score=spec.min_placement_score)
    if region.instance_requirements is not None and market == "spot":  # the cheapest few types that hold
        keep = set(capacity.cheapest_types([p for p in pools if p.spot_price is not None] or pools,
                                           region.instance_requirements["max_types"]))
        pools = [p for p in pools if p.instance_type in keep]
        dropped = [t for t in plan.types if t not in keep]
        if dropped:
            plan.notes.append(f"instance_requirements: kept the {len(keep)} types with the cheapest pool "
                              f"(max_types); left out {', '.join(dropped)}")
    if spec.market == "spot-then-on-demand":
        plan.fallback_pools = capacity.rank_pools(pools, by=by, market="on-demand", **order)
        pools = [p for p in pools if p.spot_price is not None or plan.prices is None]
    plan.pools = capacity.rank_pools(pools, by=by, market=market, **order)
    if spec.market != "spot-then-on-demand" and not plan.pools:
        raise AwsSpotError(
            f"no spot price for any of {', '.join(plan.types)} in {', '.join(zones)}: AWS sells no spot capacity "
            "of them there; add types or zones, or use market spot-then-on-demand", region.region)
    plan.pairs = [(p.instance_type, p.zone) for p in plan.pools]
    if spec.market == "spot-then-on-demand" and capacity.low_score(plan.region_score, spec.min_placement_score):
        plan.skip_spot = True
        plan.notes.append(f"spot placement score {plan.region_score} is under min_placement_score "
                          f"{spec.min_placement_score}: spot is not tried here this run, on-demand stands in")
    elif capacity.low_score(plan.region_score, spec.min_placement_score):
        plan.notes.append(f"spot placement score {plan.region_score} is under min_placement_score "
                          f"{spec.min_placement_score}: launches here are likely to fail")
    if spec.spot_first and not plan.to_terminate:
        stand_ins = len(plan.fallback_now)
        plan.to_replace = 0 if plan.skip_spot else capacity.replaceable(stand_ins, plan.region_score,
                                                                        spec.min_placement_score)
    leaving = {i["InstanceId"] for i in plan.to_terminate}
    if plan.to_replace:  # the stand-ins go once replaced: the spread counts without them
        leaving |= {i["InstanceId"] for i in plan.fallback_now}
    existing: dict[str, int] = {}
    for i in plan.in_scope:
        if i["InstanceId"] not in leaving:
            zone = i.get("Placement", {}).get("AvailabilityZone")
            existing[zone] = existing.get(zone, 0) + 1
    spot_count = 0 if plan.skip_spot else plan.to_launch + plan.to_replace
    plan.launches = capacity.assign(plan.pools, spot_count, existing, spec.availability_zone_strategy,
                                    spec.min_placement_score) if plan.pools else []
    if spec.market == "spot-then-on-demand":
        plan.to_fallback = capacity.fallback_count(plan.to_launch, region.on_demand_max, len(plan.fallback_now))


def _kept_prices(spec: ClusterSpec, plan: RegionPlan, own: bool = False) -> list[float | None]:
    """Prices of the cluster's live instances that stay (every role, or ``own`` role's only)."""
    doomed = {i["InstanceId"] for i in plan.to_terminate}
    out: list[float | None] = []
    for i in plan.instances:
        if not inst.is_live(i) or i["InstanceId"] in doomed or (own and inst.role_of(i) != spec.role):
            continue
        itype, zone = i.get("InstanceType"), i.get("Placement", {}).get("AvailabilityZone")
        if i.get("InstanceLifecycle") == "spot":
            out.append((plan.prices or {}).get((itype, zone)))
        else:
            out.append(plan.on_demand_prices.get(itype))
    return out


def cost_of(spec: ClusterSpec, plan: RegionPlan, own: bool = False) -> dict[str, Any]:
    """The region's plan in USD/hour (``_capacity.plan_cost``): what stays (every role, or only the
    role's with ``own``), what is launched, fallbacks."""
    market = "on-demand" if spec.market == "on-demand" else "spot"
    od = [p.on_demand_price for p in plan.fallback_pools if p.on_demand_price is not None]
    # the replacements of on-demand stand-ins are left out: they replace dearer nodes, a few minutes later
    launches = plan.launches
    if plan.to_replace:
        launches = capacity.assign(plan.pools, plan.to_launch, None, spec.availability_zone_strategy,
                                   spec.min_placement_score) if plan.to_launch and not plan.skip_spot else []
    return capacity.plan_cost(
        _kept_prices(spec, plan, own), launches, market=market, fallback=plan.to_fallback,
        fallback_price=max(od) if od else None, worst_pools=plan.pools)


def placement_view(spec: ClusterSpec, plan: RegionPlan) -> dict[str, Any]:
    """The result's ``placement`` of a region: candidates, scores, launches, and why."""
    return {
        "strategy": spec.availability_zone_strategy,
        "market": spec.market,
        "instance_types": list(plan.types),
        "from_requirements": plan.spec.instance_requirements is not None,
        "region_score": plan.region_score,
        "zone_scores": dict(sorted(plan.zone_scores.items())),
        "pools": [p.as_dict() for p in plan.pools],
        "excluded": list(plan.excluded),
        "launches": [launch.as_dict() for launch in plan.launches],
        "on_demand_fallback": {"now": len(plan.fallback_now), "may_launch": plan.to_fallback,
                               "max": plan.spec.on_demand_max, "to_replace": plan.to_replace,
                               "ranked": [f"{p.instance_type}/{p.zone}" for p in plan.fallback_pools]},
        "cost": dict(plan.cost),
        "notes": list(plan.notes),
    }


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


def apply_present(spec: ClusterSpec, plan: RegionPlan) -> dict[str, Any]:
    """Act on one region; never raises: failures land in the region's result."""
    result = _region_result(spec, plan)
    ec2 = plan.clients.ec2
    current = {i["InstanceId"]: i for i in plan.in_scope}
    try:
        finish_network = None
        if plan.network_changes:
            finish_network = network.prepare(ec2, spec, plan.net)
            result["changed"] = True
        if plan.to_terminate:
            ids = [i["InstanceId"] for i in plan.to_terminate]
            inst.terminate(ec2, ids)
            result["changed"] = True
            result["terminated"] = ids
            for iid in ids:
                current.pop(iid, None)
            if spec.wait:
                inst.wait_terminated(ec2, ids, spec.wait_timeout)
        network_error = None
        if plan.to_launch or plan.to_replace:
            ids = plan.net.ids()
            outcome: dict[str, Any] = {}

            def _launch() -> None:
                outcome["launch"] = _launch_all(spec, plan, ids)

            # the network's last round (routes, rules, attributes) goes with the launch
            try:
                together(_launch, finish_network)
            except Exception as exc:  # pylint: disable=broad-except
                if "launch" not in outcome:
                    raise
                network_error = exc  # the instances are up: report them, and the network's error
            finish_network = None
            launched, attempts, stand_ins, replacing = outcome["launch"]
            result["attempts"] = attempts
            new_ids = [i["InstanceId"] for i in launched]
            result["launched"] = new_ids
            result["on_demand_fallback"] = [i["InstanceId"] for i in stand_ins]
            result["changed"] = result["changed"] or bool(new_ids)
            filled = len(new_ids) - replacing
            waiter_error = None
            if new_ids and spec.wait:
                try:
                    launched = inst.wait_running(ec2, new_ids, spec.wait_timeout)  # with public addresses
                except botocore.exceptions.WaiterError as exc:
                    waiter_error = exc  # e.g. a spot instance reclaimed right after launch
                    launched = inst.describe_instances_by_id(ec2, new_ids)
            current.update({i["InstanceId"]: i for i in launched if inst.is_live(i)})
            lost = [i["InstanceId"] for i in launched if not inst.is_live(i)]
            if replacing and waiter_error is None and not lost:  # make before break: spot is up, the stand-ins go
                result["replaced"] = _break(spec, plan, replacing)
                for iid in result["replaced"]:
                    current.pop(iid, None)
            problems = []
            if filled < plan.to_launch:
                tried = ", ".join(
                    f"{a['instance_type']} in {a['availability_zone']}: {a['error_code'] or 'launched ' + str(a['launched'])}"
                    for a in attempts
                )
                problems.append(f"launched {filled} of the {plan.to_launch} missing instances "
                                f"(tried {tried or 'nothing: no instance type is offered in the zones'})")
            if lost:
                problems.append(f"{len(lost)} new instance(s) ended before running ({', '.join(lost)}); "
                                "run again to replace them")
            elif waiter_error is not None:
                problems.append(f"new instances did not reach running within {spec.wait_timeout}s ({waiter_error}); "
                                "run again to check on them, or raise wait_timeout")
            if network_error is not None:
                problems.append(f"the network could not be completed: {error_text(network_error)}; run again")
            if problems:
                result["shortfall"] = filled < plan.to_launch or bool(lost)
                raise AwsSpotError("; ".join(problems), plan.spec.region)
        if finish_network is not None:  # nothing was launched: the network's last round alone
            finish_network()
    except Exception as exc:  # pylint: disable=broad-except
        result["failed"] = True
        result["error"] = exc.message if isinstance(exc, AwsSpotError) else error_text(exc)
        result["exception"] = exc
    views = [inst.view(i, plan.spec.region, plan.architectures) for i in current.values()]
    views.sort(key=lambda v: (v["availability_zone"] or "", v["instance_id"]))
    result["instances"] = views
    result["running"] = len(views)
    result["network"] = plan.net.ids()
    try:
        types = sorted({v["instance_type"] for v in views if v["lifecycle"] == "spot"})
        prices = dict(plan.prices or {})
        known = set(plan.spec.instance_types or []) if plan.prices is not None else set()
        unknown = [t for t in types if t not in known]
        if unknown:  # types read while planning need no second call
            prices.update(pricing.spot_prices(ec2, unknown))
        result["estimated_hourly_cost"] = pricing.hourly_cost(views, prices, plan.on_demand_prices)
    except botocore.exceptions.ClientError:
        result["estimated_hourly_cost"] = None
    return result


def _launch_all(spec: ClusterSpec, plan: RegionPlan, ids: dict[str, Any]) -> tuple[list, list, list, int]:
    """The region's launches: spot (or on-demand) as placed, then on-demand stand-ins for what spot
    could not fill (market spot-then-on-demand). Returns (instances, attempts, stand-ins, replacing):
    ``replacing`` of the spot instances replace on-demand stand-ins."""
    ec2 = plan.clients.ec2
    subnets, group = ids["subnet_ids"], ids["security_group_id"]
    wanted = 0 if plan.skip_spot else plan.to_launch + plan.to_replace
    groups = [(launch.count, [(p.instance_type, p.zone) for p in launch.pools]) for launch in plan.launches]
    launched, attempts = inst.launch_over(ec2, spec, plan.spec, groups, plan.pairs, plan.images, subnets, group,
                                          wanted, plan.root_device)
    covered = min(len(launched), plan.to_launch)
    replacing = len(launched) - covered
    stand_ins: list[dict[str, Any]] = []
    wanted_od = min(plan.to_launch - covered, plan.to_fallback)
    if wanted_od > 0:  # spread over the zones as spot is: counting what runs there and what just launched
        existing: dict[str, int] = {}
        for i in [i for i in plan.in_scope if i not in plan.to_terminate] + launched:
            zone = i.get("Placement", {}).get("AvailabilityZone")
            existing[zone] = existing.get(zone, 0) + 1
        spread = capacity.assign(plan.fallback_pools, wanted_od, existing, spec.availability_zone_strategy,
                                 spec.min_placement_score)
        od_groups = [(launch.count, [(p.instance_type, p.zone) for p in launch.pools]) for launch in spread]
        pairs = [(p.instance_type, p.zone) for p in plan.fallback_pools]
        stand_ins, tried = inst.launch_over(ec2, spec, plan.spec, od_groups, pairs, plan.images, subnets, group,
                                            wanted_od, plan.root_device, market="on-demand",
                                            extra_tags={capacity.FALLBACK_TAG: capacity.FALLBACK_VALUE})
        attempts += tried
    return launched + stand_ins, attempts, stand_ins, replacing


def _break(spec: ClusterSpec, plan: RegionPlan, replacing: int) -> list[str]:
    """Terminate ``replacing`` on-demand stand-ins (the oldest first), now that spot runs in their place."""
    def stamp(i: dict[str, Any]) -> Any:
        launch_time = i.get("LaunchTime")
        return (launch_time.timestamp() if hasattr(launch_time, "timestamp") else 0, i["InstanceId"])

    ids = [i["InstanceId"] for i in sorted(plan.fallback_now, key=stamp)[:replacing]]
    if ids:
        inst.terminate(plan.clients.ec2, ids)
        if spec.wait:
            inst.wait_terminated(plan.clients.ec2, ids, spec.wait_timeout)
    return ids


def _region_result(spec: ClusterSpec, plan: RegionPlan) -> dict[str, Any]:
    return {
        "region": plan.spec.region,
        "role": spec.role,
        "requested": plan.spec.count,
        "before": len(plan.in_scope),
        "running": len(plan.in_scope),
        "to_launch": plan.to_launch,
        "to_terminate": [i["InstanceId"] for i in plan.to_terminate],
        "launched": [],
        "terminated": [],
        "attempts": [],
        "network": plan.net.ids(),
        "network_changes": list(plan.network_changes),
        "changed": False,
        "failed": False,
        "error": None,
        "estimated_hourly_cost": None,
        "shortfall": False,
        "on_demand_fallback": [],
        "replaced": [],
        "to_replace": plan.to_replace,
        "placement": placement_view(spec, plan) if spec.state == "present" else {},
    }


def unaccepted_failures(regions: dict[str, dict[str, Any]], failed: dict[str, str], allow_partial: bool) -> dict[str, str]:
    """The failures that fail the task: all, or with allow_partial only those that are not a capacity shortfall."""
    return {r: why for r, why in failed.items() if not (allow_partial and regions[r].get("shortfall"))}


def _known_locally(module: Any, names: list[str]) -> bool:
    """Every name is an EC2 region of botocore's own endpoint data (no API call)."""
    try:
        known = known_region_names(module)
    except Exception:  # pylint: disable=broad-except
        return False
    return all(name in known for name in names)


def _plans(module: Any, names: list[str], plan_one: Any, ssm: bool = False) -> tuple[dict[str, Any], dict[str, BaseException]]:
    """Every region's plan, ``plan_one(region, clients)``, with ``DescribeRegions``' check of
    unknown and not-enabled regions.

    When botocore knows every name the check goes out together with the plans (one round
    trip less) and its error, if any, wins over theirs; otherwise it goes first, as the
    plan of an unknown region would only fail after retries. Every region's clients are
    made before the first call: making one takes CPU (tens of milliseconds), and calls
    meant to go out together would otherwise be spread over more than one round trip.
    """
    ec2 = _default_client(module)
    alongside = _known_locally(module, names)
    if not alongside:
        check_regions(ec2, names)
    clients = {name: Clients(module, name).ready(ssm=ssm) for name in names}
    answers = together(functools.partial(check_regions, ec2, names) if alongside else None,
                       lambda: run_per_region(names, lambda r: plan_one(r, clients[r])))
    return answers[-1]  # (plans, errors)


def present(module: Any, spec: ClusterSpec) -> dict[str, Any]:
    by_name = {r.region: r for r in spec.regions}
    groups = score_groups(spec)
    # the placement scores of every region (a call or two per distinct ask) go with the first round
    (plans, errors), scores = together(
        lambda: _plans(module, spec.region_names, lambda r, c: plan_present(spec, by_name[r], c),
                       ssm=any(not r.image_id for r in spec.regions)),
        lambda: capacity_reads.placement_scores(_default_client(module), groups))
    _raise_all(errors)
    _price_on_demand(module, spec, plans)
    for name, plan in plans.items():
        try:
            place(spec, plan, scores)
        except AwsSpotError as exc:
            errors[name] = exc
    _raise_all(errors)
    if scores["errors"]:
        for plan in plans.values():
            plan.notes.append("spot placement scores unavailable (" + "; ".join(scores["errors"])[:300] + ")")
    _refuse_over_limits(spec, plans)

    if module.check_mode:
        regions = {}
        for name, plan in plans.items():
            res = _region_result(spec, plan)
            res["changed"] = bool(plan.to_launch or plan.to_terminate or plan.network_changes or plan.to_replace)
            res["running"] = len(plan.in_scope) - len(plan.to_terminate) + plan.to_launch
            res["instances"] = [inst.view(i, name, plan.architectures) for i in plan.in_scope]
            # what the instances there now cost (nothing is launched in check mode)
            res["estimated_hourly_cost"] = pricing.hourly_cost(res["instances"], plan.prices or {},
                                                               plan.on_demand_prices)
            regions[name] = res
    else:
        regions, errors = run_per_region(by_name, lambda r: apply_present(spec, plans[r]))
        _raise_all(errors, acting=True)  # apply_present never raises; this is for the unexpected

    return _summary(spec, plans, regions)


def _price_on_demand(module: Any, spec: ClusterSpec, plans: dict[str, RegionPlan]) -> None:
    """On-demand prices where the plan needs them: on-demand or stand-in launches, and with a cost cap the
    on-demand instances that stay (the Price List service, cached on the controller: a re-run asks nothing)."""
    wanted: dict[str, set[str]] = {}
    for name, plan in plans.items():
        types = set()
        if spec.market != "spot" or spec.max_hourly_cost is not None:
            types.update(plan.types)
        if spec.max_hourly_cost is not None:
            types.update(i.get("InstanceType") for i in plan.instances
                         if inst.is_live(i) and i.get("InstanceLifecycle") != "spot")
        if types:
            wanted[name] = {t for t in types if t}
    if not wanted:
        return
    try:
        prices = price_list.on_demand_prices(module, [(r, t) for r, types in wanted.items() for t in types])
    except (AwsSpotError, botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
        for plan in plans.values():  # the plan goes on; a cost cap then refuses nodes of unknown price
            plan.notes.append(f"on-demand prices unavailable ({exc.message if isinstance(exc, AwsSpotError) else error_text(exc)})")
        return
    for (region, itype), price in prices.items():
        if price is not None and region in plans:
            plans[region].on_demand_prices[itype] = price


def _refuse_over_limits(spec: ClusterSpec, plans: dict[str, RegionPlan]) -> None:
    """max_nodes and max_hourly_cost, over every region of the plan, before anything is created."""
    parts: dict[str, int] = {}
    total = 0
    for name, plan in plans.items():
        doomed = {i["InstanceId"] for i in plan.to_terminate}
        others = sum(1 for i in plan.instances if inst.is_live(i) and inst.role_of(i) != spec.role)
        mine = len(plan.in_scope) - len(doomed) + plan.to_launch
        parts[f"{name} {spec.role}"] = mine
        if others:
            parts[f"{name} other roles"] = others
        total += mine + others
    problems = []
    refusal = capacity.over_max_nodes(total, spec.max_nodes, parts)
    if refusal:
        problems.append(refusal)
    expected = worst = spec.extra_hourly_cost
    unknown = 0
    for plan in plans.values():
        plan.cost = cost_of(spec, plan)
        plan.cost["role"] = cost_of(spec, plan, own=True)
        expected += plan.cost["expected"]
        worst += plan.cost["worst_case"]
        unknown += plan.cost["unknown"]
    costs = {"expected": round(expected, 6), "worst_case": round(worst, 6), "unknown": unknown}
    refusal = capacity.over_cap(costs, spec.max_hourly_cost, f"the {spec.role} plan of cluster {spec.cluster_name}")
    if refusal:
        detail = ", ".join(f"{r}: up to {p.cost['worst_case']:.4f}" for r, p in plans.items())
        if spec.extra_hourly_cost:
            detail += f", outside these regions' view (extra_hourly_cost): {spec.extra_hourly_cost:.4f}"
        problems.append(f"{refusal} (by region: {detail})")
    if problems:
        raise AwsSpotError("; ".join(problems), details={"plan_cost": costs})


# --------------------------------------------------------------------------- absent
def _label(res: Resource) -> str:
    return f"{LABELS[res.type]} {res.name if res.type == 'key_pairs' and res.name else res.id}"


def _network_of(region: str, found: list[Resource]) -> network.Network:
    """The cluster's network as the nuke's discovery found it (for the result's ``network``)."""
    net = network.Network(region=region)
    raw = {t: [res.raw for res in found if res.type == t] for t in RESOURCE_TYPES}
    vpcs = sorted(raw["vpcs"], key=lambda v: v["VpcId"])
    net.vpc = vpcs[0] if vpcs else None
    for subnet in raw["subnets"]:
        if net.vpc and subnet.get("VpcId") == net.vpc["VpcId"]:
            net.subnets.setdefault(subnet["AvailabilityZone"], subnet)
    net.internet_gateways = raw["internet_gateways"]
    groups = [g for g in raw["security_groups"] if net.vpc and g.get("VpcId") == net.vpc["VpcId"]]
    net.security_group = groups[0] if groups else None
    net.key_pairs = raw["key_pairs"]
    return net


def plan_absent(module: Any, spec: ClusterSpec, region: str, clients: Clients | None = None) -> RegionPlan:
    """What of the cluster the nuke's discovery finds here, and what of it goes.

    Everything of the cluster when no instance of another role remains here; otherwise
    only what carries the role's tag (its instances, and what their launches made).
    """
    clients = clients or Clients(module, region)
    scope = NukeSpec(regions=[region], cluster_name=spec.cluster_name, tags={},
                     resource_types=list(RESOURCE_TYPES), force=True)
    found = discover_region(clients.ec2, region, scope)
    instances = [res.raw for res in found if res.type == "instances"]
    plan = RegionPlan(spec=RegionSpec(region=region), clients=clients, net=_network_of(region, found),
                      instances=instances)

    def in_role(tags: dict[str, str]) -> bool:
        return spec.role is None or tags.get(ROLE_KEY) == spec.role

    not_gone = [i for i in instances if i["State"]["Name"] in inst.NOT_GONE_STATES]
    plan.to_terminate = [i for i in not_gone if in_role(inst.tags_of(i))]
    plan.in_scope = [i for i in plan.to_terminate if inst.is_live(i)]
    remaining = [i for i in not_gone if not in_role(inst.tags_of(i))]
    plan.delete_network = not remaining
    plan.doomed = found if plan.delete_network else [res for res in found if in_role(res.tags)]
    plan.network_changes = [f"delete {_label(res)}" for res in plan.doomed if res.type != "instances"]
    return plan


def apply_absent(spec: ClusterSpec, plan: RegionPlan) -> dict[str, Any]:
    result = _region_result(spec, plan)
    result.update(requested=0, network_deleted=[], remaining=len(plan.instances) - len(plan.to_terminate))
    doomed = plan.doomed
    try:
        if doomed:
            # the network cannot go while instances still hold interfaces in it
            ctx = delete_region(plan.clients.ec2, plan.spec.region, doomed, wait=spec.wait or plan.delete_network)
            ours = {i["InstanceId"] for i in plan.to_terminate}
            result["terminated"] = [i for i in ctx.terminating if i in ours]
        result["network_deleted"] = [f"deleted {_label(res)}" for res in doomed
                                     if res.type != "instances" and res.action == ACTION_DELETED
                                     and res.note not in (ALREADY_GONE, WENT_WITH_ITS_INSTANCE)]
        result["changed"] = bool(result["terminated"]) or any(
            res.action == ACTION_DELETED and res.note != ALREADY_GONE for res in doomed)
        failures = [res for res in doomed if res.action == ACTION_FAILED]
        if failures:
            shown = "; ".join(f"{_label(res)}: {res.error}" for res in failures[:10])
            more = f" and {len(failures) - 10} more" if len(failures) > 10 else ""
            raise AwsSpotError(f"{len(failures)} resource(s) of the cluster remain: {shown}{more}", plan.spec.region)
    except Exception as exc:  # pylint: disable=broad-except
        result["failed"] = True
        result["error"] = exc.message if isinstance(exc, AwsSpotError) else error_text(exc)
        result["exception"] = exc
    result["running"] = 0
    result["instances"] = []
    result["estimated_hourly_cost"] = 0.0
    return result


def absent(module: Any, spec: ClusterSpec) -> dict[str, Any]:
    ec2 = _default_client(module)
    if spec.regions:
        names = spec.region_names
        plans, errors = _plans(module, names, lambda r, c: plan_absent(module, spec, r, c))
        discovered = False
    else:
        names = enabled_region_names(ec2)
        plans, errors = run_per_region(names, lambda r: plan_absent(module, spec, r))
        discovered = True
    _raise_all(errors)
    if discovered:  # report only where the cluster had something
        plans = {r: p for r, p in plans.items() if p.doomed}
    if module.check_mode:
        regions = {}
        for name, plan in plans.items():
            res = _region_result(spec, plan)
            res.update(requested=0, running=0, instances=[], remaining=len(plan.instances) - len(plan.to_terminate))
            res["changed"] = bool(plan.doomed)
            regions[name] = res
    else:
        regions, errors = run_per_region(plans, lambda r: apply_absent(spec, plans[r]))
        _raise_all(errors, acting=True)
    return _summary(spec, plans, regions)


# --------------------------------------------------------------------------- the result
def _summary(spec: ClusterSpec, plans: dict[str, RegionPlan], regions: dict[str, dict[str, Any]]) -> dict[str, Any]:
    order = [r for r in (spec.region_names or sorted(regions)) if r in regions]
    instances: list[dict[str, Any]] = []
    failed: dict[str, str] = {}
    exceptions: dict[str, BaseException] = {}
    costs: list[float | None] = []
    for name in order:
        res = regions[name]
        instances.extend(res.pop("instances", []))
        exc = res.pop("exception", None)
        if res["failed"]:
            failed[name] = res["error"]
            if exc is not None:
                exceptions[name] = exc
        costs.append(res.get("estimated_hourly_cost"))
    total = None if any(c is None for c in costs) else round(sum(c for c in costs if c is not None), 6)
    return {
        "changed": any(regions[r]["changed"] for r in order),
        "instances": instances,
        "regions": {r: regions[r] for r in order},
        "estimated_hourly_cost": total,
        "diff": {
            "before": {r: regions[r]["before"] for r in order},
            "after": {r: regions[r]["running"] for r in order},
        },
        "failed_regions": failed,
        "exceptions": exceptions,
        "plan_cost": _plan_cost(spec, plans),
    }


def _plan_cost(spec: ClusterSpec, plans: dict[str, RegionPlan]) -> dict[str, Any]:
    """The plan's cost over every region, as checked against max_hourly_cost."""
    costs = [p.cost for p in plans.values() if p.cost]
    extra = spec.extra_hourly_cost if costs else 0.0
    return {
        "expected": round(extra + sum(c["expected"] for c in costs), 6),
        "worst_case": round(extra + sum(c["worst_case"] for c in costs), 6),
        "unknown": sum(c["unknown"] for c in costs),
        "max_hourly_cost": spec.max_hourly_cost,
        "extra_hourly_cost": spec.extra_hourly_cost,
        "role": {
            "expected": round(sum(c["role"]["expected"] for c in costs), 6),
            "worst_case": round(sum(c["role"]["worst_case"] for c in costs), 6),
            "unknown": sum(c["role"]["unknown"] for c in costs),
        },
    }


def run(module: Any, spec: ClusterSpec) -> dict[str, Any]:
    return present(module, spec) if spec.state == "present" else absent(module, spec)
