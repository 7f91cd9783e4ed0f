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
from dataclasses import dataclass, field
from typing import Any

try:
    import botocore.exceptions
except ImportError:
    pass  # AnsibleAWSModule reports a missing botocore

from ansible_collections.bacalhau.aws_spot.plugins.module_utils import _ami
from ansible_collections.bacalhau.aws_spot.plugins.module_utils import _spot_instances as inst
from ansible_collections.bacalhau.aws_spot.plugins.module_utils import _spot_network as network
from ansible_collections.bacalhau.aws_spot.plugins.module_utils import _spot_pricing as pricing
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._common import ROLE_KEY
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._common import AwsSpotError
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._common import check_regions
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._common import enabled_region_names
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._common import error_code
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._common import error_text
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._common import known_region_names
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._common import region_client
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._common import run_per_region
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._common import together
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._nuke_delete import ALREADY_GONE
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._nuke_delete import WENT_WITH_ITS_INSTANCE
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._nuke_delete import delete_region
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._nuke_discover import discover_region
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._nuke_spec import ACTION_DELETED
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._nuke_spec import ACTION_FAILED
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._nuke_spec import LABELS
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._nuke_spec import RESOURCE_TYPES
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._nuke_spec import NukeSpec
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._nuke_spec import Resource
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._spot_spec import ClusterSpec
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._spot_spec import RegionSpec

DEFAULT_REGION = "us-east-1"
CREDENTIAL_ERRORS = frozenset({
    "ExpiredToken", "ExpiredTokenException", "RequestExpired", "InvalidClientTokenId",
    "UnrecognizedClientException", "AuthFailure", "SignatureDoesNotMatch", "InvalidToken",
})
CREDENTIAL_HINT = (
    "Give Ansible AWS credentials: export AWS_PROFILE=<profile> (and run 'aws sso login --profile <profile>' "
    "when it uses SSO), or export AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY (plus AWS_SESSION_TOKEN for "
    "temporary ones), then run again."
)


def credential_problem(exc: BaseException) -> str | None:
    """A message for missing or expired credentials, or None for any other error."""
    if isinstance(exc, botocore.exceptions.NoCredentialsError):
        return f"No AWS credentials found. {CREDENTIAL_HINT}"
    if isinstance(exc, (botocore.exceptions.TokenRetrievalError, botocore.exceptions.SSOTokenLoadError)):
        return f"The AWS SSO session has expired or was never started ({exc}). {CREDENTIAL_HINT}"
    if error_code(exc) in CREDENTIAL_ERRORS:
        return f"AWS refused the credentials ({error_text(exc)}): they are wrong or expired. {CREDENTIAL_HINT}"
    return None


class Clients:
    """The clients of one region, made when first needed."""

    def __init__(self, module: Any, region: str) -> None:
        self.module, self.region = module, region
        self._ec2 = self._ssm = None

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
    ec2 = clients.ec2
    wanted_types = region.instance_types

    def _resolve() -> dict[str, Any] | None:
        if not wanted_types:
            return None
        return _ami.resolve_region(ec2, clients.ssm, region.region, architectures=[], release=spec.ubuntu_release,
                                   instance_types=wanted_types, image_id=region.image_id, details=False,
                                   check_offered=False)  # offerings are read per zone below

    def _offered() -> dict[str, set[str]]:
        if not wanted_types:
            return {}
        return _ami.offered_instance_types(ec2, region.region, wanted_types, location_type="availability-zone")

    def _root_device() -> str:
        if not region.image_id:
            return inst.ROOT_DEVICE
        image = _ami.describe_images(ec2, [region.image_id]).get(region.image_id) or {}
        return image.get("RootDeviceName") or inst.ROOT_DEVICE

    def _prices() -> dict[tuple[str, str], float] | None:
        if not wanted_types or spec.market != "spot":
            return None
        try:
            return pricing.spot_prices(ec2, wanted_types)
        except botocore.exceptions.ClientError:
            return None

    zones, resolved, offered, net, instances, root_device, prices = _concurrently(
        (network.describe_zones, ec2), (_resolve,), (_offered,),
        (network.find, ec2, spec, region.region, []), (inst.describe_cluster_instances, ec2, spec.cluster_name),
        (_root_device,), (_prices,),
    )
    net.zones = zones
    unknown_zones = [z for z in region.availability_zones or [] if z not in zones]
    if unknown_zones:
        raise AwsSpotError(f"availability zone(s) {', '.join(unknown_zones)} do not exist or are not available "
                           f"in {region.region}; available: {', '.join(zones)}", region.region)
    plan = RegionPlan(spec=region, clients=clients, net=net, instances=instances, root_device=root_device,
                      prices=prices)
    for itype in wanted_types or []:
        if not offered.get(itype):  # offered in no zone: not offered in the region
            raise _ami.not_offered(itype, region.region)
    if resolved:
        plan.images = {t: v["image_id"] for t, v in resolved["instance_types"].items()}
        plan.architectures = {t: v["architecture"] for t, v in resolved["instance_types"].items()}
        plan.pairs = inst.candidates(region, zones, offered)
        if not plan.pairs:
            raise AwsSpotError(
                f"none of the instance types {', '.join(wanted_types)} is offered in the zones "
                f"{', '.join(region.availability_zones or zones)}; add types or zones", region.region)
    plan.in_scope = [i for i in instances if inst.role_of(i) == spec.role and inst.is_live(i)]
    plan.to_launch = max(0, region.count - len(plan.in_scope))
    plan.to_terminate = inst.surplus(plan.in_scope, region, zones, region.count)
    if region.count > 0 or net.vpc:
        plan.network_changes = network.pending_changes(spec, net)
    return plan


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
        if plan.to_launch:
            ids = plan.net.ids()
            outcome: dict[str, Any] = {}

            def _launch() -> None:
                outcome["launch"] = inst.launch(
                    plan.clients.ec2, spec, plan.spec, plan.pairs, plan.images, ids["subnet_ids"],
                    ids["security_group_id"], plan.to_launch, plan.root_device,
                )

            # the network's last round (routes, rules, attributes) goes with the launch
            try:
                together(_launch, finish_network)
            except Exception as exc:  # pylint: disable=broad-except
                if "launch" not in outcome:
                    raise
                network_error = exc  # the instances are up: report them, and the network's error
            finish_network = None
            launched, attempts = outcome["launch"]
            result["attempts"] = attempts
            new_ids = [i["InstanceId"] for i in launched]
            result["launched"] = new_ids
            result["changed"] = result["changed"] or bool(new_ids)
            waiter_error = None
            if new_ids and spec.wait:
                try:
                    launched = inst.wait_running(ec2, new_ids, spec.wait_timeout)  # with public addresses
                except botocore.exceptions.WaiterError as exc:
                    waiter_error = exc  # e.g. a spot instance reclaimed right after launch
                    launched = inst.describe_instances_by_id(ec2, new_ids)
            current.update({i["InstanceId"]: i for i in launched if inst.is_live(i)})
            lost = [i["InstanceId"] for i in launched if not inst.is_live(i)]
            problems = []
            if len(new_ids) < plan.to_launch:
                tried = ", ".join(
                    f"{a['instance_type']} in {a['availability_zone']}: {a['error_code'] or 'launched ' + str(a['launched'])}"
                    for a in attempts
                )
                problems.append(f"launched {len(new_ids)} of the {plan.to_launch} missing instances "
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
                result["shortfall"] = len(new_ids) < plan.to_launch or bool(lost)
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
        result["estimated_hourly_cost"] = pricing.hourly_cost(views, prices)
    except botocore.exceptions.ClientError:
        result["estimated_hourly_cost"] = None
    return result


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
    plans, errors = _plans(module, spec.region_names, lambda r, c: plan_present(spec, by_name[r], c),
                           ssm=any(not r.image_id for r in spec.regions))
    _raise_all(errors)

    if module.check_mode:
        regions = {}
        for name, plan in plans.items():
            res = _region_result(spec, plan)
            res["changed"] = bool(plan.to_launch or plan.to_terminate or plan.network_changes)
            res["running"] = len(plan.in_scope) - len(plan.to_terminate) + plan.to_launch
            res["instances"] = [inst.view(i, name, plan.architectures) for i in plan.in_scope]
            # what the instances there now cost (nothing is launched in check mode)
            res["estimated_hourly_cost"] = (pricing.hourly_cost(res["instances"], plan.prices)
                                            if plan.prices is not None else None)
            regions[name] = res
    else:
        regions, errors = run_per_region(by_name, lambda r: apply_present(spec, plans[r]))
        _raise_all(errors, acting=True)  # apply_present never raises; this is for the unexpected

    return _summary(spec, plans, regions)


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
    }


def run(module: Any, spec: ClusterSpec) -> dict[str, Any]:
    return present(module, spec) if spec.state == "present" else absent(module, spec)
