# -*- coding: utf-8 -*-
# Copyright: bacalhau.aws_spot contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The work of ``spot_cluster`` for one role (no ``orchestrator``): plan every region, then act
on every region. Private. The whole cluster (``orchestrator``) is ``reconcile``, built on the
same pieces:

- ``plan``: one round of reads per region (the role's types, images, offerings and prices;
  the cluster's network and instances, shared by the roles of a region) and the counts;
- ``place``: pools ranked and launches shared over zones (``_placement.pools``), the cost,
  the caps of one role's call;
- ``apply``: the network, the surplus, the launches with fallback, stand-ins and their
  replacement by spot, make before break;
- ``absent``: ``state: absent`` through the nuke's engine (``_deletion``);
- ``result``: the result's shape.

Any problem in any region while planning stops everything before anything is created; while
acting, a region that fails does not stop the others. Check mode stops after the plan.
"""

from __future__ import annotations

from typing import Any
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._placement import reads as capacity_reads
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._cluster import instances as inst
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._pricing import spot as pricing
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._aws.common import AwsSpotError
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._aws.common import run_per_region
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._aws.common import together
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._cluster.spec import ClusterSpec
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._cluster.absent import absent
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._cluster.apply import apply_present
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._cluster.place import place
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._cluster.place import price_on_demand
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._cluster.place import refuse_over_limits
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._cluster.plan import default_client
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._cluster.plan import plan_present
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._cluster.plan import plans_of
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._cluster.plan import raise_all
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._cluster.plan import score_groups
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._cluster.result import region_result
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._cluster.result import summary


def present(module: Any, spec: ClusterSpec) -> dict[str, Any]:
    by_name = {r.region: r for r in spec.regions}
    groups = score_groups(spec)
    # the placement scores of every region (a call or two per distinct ask) go with the first round
    (plans, errors), scores = together(
        lambda: plans_of(module, spec.region_names, lambda r, c: plan_present(spec, by_name[r], c),
                         ssm=any(not r.image_id for r in spec.regions)),
        lambda: capacity_reads.placement_scores(default_client(module), groups))
    raise_all(errors)
    price_on_demand(module, spec, plans)
    for name, plan in plans.items():
        try:
            place(spec, plan, scores)
        except AwsSpotError as exc:
            errors[name] = exc
    raise_all(errors)
    if scores["errors"]:
        for plan in plans.values():
            plan.placement.notes.append("spot placement scores unavailable (" + "; ".join(scores["errors"])[:300] + ")")
    refuse_over_limits(spec, plans)

    if module.check_mode:
        regions = {}
        for name, plan in plans.items():
            res = region_result(spec, plan)
            res["changed"] = bool(plan.to_launch or plan.to_terminate or plan.network_changes or plan.to_replace)
            res["running"] = len(plan.in_scope) - len(plan.to_terminate) + plan.to_launch
            res["instances"] = [inst.view(i, name, plan.reads.architectures) for i in plan.in_scope]
            # what the instances there now cost (nothing is launched in check mode)
            res["estimated_hourly_cost"] = pricing.hourly_cost(res["instances"], plan.reads.prices or {},
                                                               plan.reads.on_demand_prices)
            regions[name] = res
    else:
        regions, errors = run_per_region(by_name, lambda r: apply_present(spec, plans[r]))
        raise_all(errors, acting=True)  # apply_present never raises; this is for the unexpected

    return summary(spec, plans, regions)


def run(module: Any, spec: ClusterSpec) -> dict[str, Any]:
    return present(module, spec) if spec.state == "present" else absent(module, spec)
