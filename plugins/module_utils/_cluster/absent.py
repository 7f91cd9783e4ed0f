# -*- coding: utf-8 -*-
# Copyright: bacalhau.aws_spot contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""``state: absent``: the nuke's engine (``_deletion``), scoped to the cluster (and to its role
while other roles keep instances in the region). Private."""

from __future__ import annotations

from typing import Any
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._cluster import instances as inst
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._cluster import network
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._cluster import learning
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._aws.common import ROLE_KEY
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._aws.common import AwsSpotError
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._aws.common import enabled_region_names
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._aws.common import error_text
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._aws.common import run_per_region
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._deletion.context import ALREADY_GONE
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._deletion.context import WENT_WITH_ITS_INSTANCE
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
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._cluster.plan import Clients
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._cluster.plan import RegionPlan
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._cluster.plan import RegionReads
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._cluster.plan import default_client
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._cluster.plan import plans_of
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._cluster.plan import raise_all
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._cluster.result import region_result
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._cluster.result import summary


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
    plan = RegionPlan(spec=RegionSpec(region=region), clients=clients,
                      reads=RegionReads(net=_network_of(region, found), instances=instances))

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
    result = region_result(spec, plan)
    result.update(requested=0, network_deleted=[], remaining=len(plan.reads.instances) - len(plan.to_terminate))
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
    ec2 = default_client(module)
    if spec.regions:
        names = spec.region_names
        plans, errors = plans_of(module, names, lambda r, c: plan_absent(module, spec, r, c))
        discovered = False
    else:
        names = enabled_region_names(ec2)
        plans, errors = run_per_region(names, lambda r: plan_absent(module, spec, r))
        discovered = True
    raise_all(errors)
    if discovered:  # report only where the cluster had something
        plans = {r: p for r, p in plans.items() if p.doomed}
    if module.check_mode:
        regions = {}
        for name, plan in plans.items():
            res = region_result(spec, plan)
            res.update(requested=0, running=0, instances=[], remaining=len(plan.reads.instances) - len(plan.to_terminate))
            res["changed"] = bool(plan.doomed)
            regions[name] = res
    else:
        _release(module, spec, plans)
        regions, errors = run_per_region(plans, lambda r: apply_absent(spec, plans[r]))
        raise_all(errors, acting=True)
    return summary(spec, plans, regions)


def _release(module: Any, spec: ClusterSpec, plans: dict[str, RegionPlan]) -> None:
    """The pool history (kept after a destroy, for the next cluster of the name) learns what the
    instances' ends are, and that these terminations are ours, before they happen."""
    if (module.params.get("pool_history") is False or not spec.cluster_name
            or not any(plan.to_terminate for plan in plans.values())):
        return
    learn = learning.Learning(spec.cluster_name, warn=module.warn)
    learn.observe({r: plan.reads.instances for r, plan in plans.items()})
    learn.release([i["InstanceId"] for plan in plans.values() for i in plan.to_terminate], "destroy")
