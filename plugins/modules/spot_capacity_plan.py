#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: bacalhau.aws_spot contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: spot_capacity_plan
short_description: Plan a Bacalhau cluster on EC2 spot from what its nodes need, over many regions
version_added: 0.2.0
description:
  - Reads only. From how many nodes are needed and what each needs (O(vcpus), O(memory_gib), O(architectures),
    any other AWS C(InstanceRequirements)), finds the instance types that meet it in every region asked
    (C(GetInstanceTypesFromInstanceRequirements)), their offerings per zone and current spot prices, and how
    likely spot requests are to succeed there (C(GetSpotPlacementScores), by region and by zone); then chooses
    where the nodes go and returns RV(cluster_regions) and RV(cluster_orchestrator) in the shape of
    C(playbooks/create.yml)'s cluster file.
  - The choice is C(spot_cluster)'s own placement engine - a region's pools are its (instance type, zone)
    pairs with a spot price in zones whose placement score is at least O(min_placement_score); regions are
    ranked by the expected price per node of their share, and the O(max_regions) cheapest take the nodes in
    equal shares (within one). Each region's entry lists its O(max_types) cheapest types, cheapest first, and
    its zones of a good score, cheapest first.
  - The plan is priced as C(spot_cluster) prices that entry (the expected cost at each zone's first pool, the
    worst case at the dearest pool a node may fall back to) plus the orchestrator (its on-demand price from
    the AWS Price List, cached on the controller, or its spot price). With O(max_hourly_cost) it is refused,
    naming the numbers, when even one type per region could cost more - so C(create.yml) with the same cap
    accepts the file it writes.
  - All regions are read at once; one pair of C(GetSpotPlacementScores) calls covers every region.
author:
  - Bacalhau aws_spot maintainers (@bacalhau-project)
options:
  nodes:
    description: How many compute nodes the cluster needs (the orchestrator is one more).
    type: int
    required: true
  vcpus:
    description:
      - "vCPUs per node. A number means exactly that many; V({min: 2, max: 4}) is a range (C(min) required)."
    type: raw
    required: true
  memory_gib:
    description:
      - "Memory per node in GiB. A number means at least that much; V({min: 4, max: 16}) is a range."
    type: raw
    required: true
  architectures:
    description: CPU architectures to consider; the cluster file may mix them (each gets its image).
    type: list
    elements: str
    choices: [x86_64, arm64]
    default: [x86_64, arm64]
  burstable:
    description:
      - Burstable types (C(t3), C(t4g)...) - V(excluded) (AWS's default), V(included), or V(required). Burstable
        types are cheap but throttle a node that runs jobs flat out once its CPU credits are spent.
    type: str
    choices: [included, excluded, required]
  instance_requirements:
    description:
      - Further AWS C(InstanceRequirements) in snake_case, as C(spot_cluster)'s C(regions[].instance_requirements)
        takes them (C(cpu_manufacturers), C(instance_generations), C(excluded_instance_types), C(bare_metal),
        C(local_storage), C(network_bandwidth_gbps)...). O(vcpus), O(memory_gib), O(architectures) and
        O(burstable) are given as options, not here.
    type: dict
  regions:
    description:
      - The regions to consider, or V(all) for every region enabled for the account (C(DescribeRegions); regions
        that need opt-in and are not opted in are left out).
    type: list
    elements: str
    default: [all]
  max_regions:
    description: At most this many regions take nodes (fewer when fewer can).
    type: int
    default: 5
  max_per_region:
    description: At most this many nodes per region; the plan is refused when the regions that can take nodes
      cannot hold O(nodes) with it. Default no limit.
    type: int
  max_types:
    description:
      - Instance types per region in the plan (the cheapest), from 1 to 20. More types give C(spot_cluster)
        more pools to fall back to when a pool has no capacity, and raise the worst case; under
        O(max_hourly_cost) the plan uses fewer when the worst case needs it.
    type: int
    default: 4
  max_hourly_cost:
    description:
      - Refuse a plan that could cost more than this, in USD per hour, the orchestrator included, naming the
        numbers. The worst case is checked (every node at the dearest pool of its region's entry), as
        C(spot_cluster) checks it. Default no cap.
    type: float
  market:
    description:
      - The compute nodes' market, as C(spot_cluster)'s C(market). V(on-demand) ranks by on-demand price
        (no placement scores); V(spot-then-on-demand) is priced with every node as a possible on-demand
        stand-in in the worst case.
    type: str
    choices: [spot, on-demand, spot-then-on-demand]
    default: spot
  min_placement_score:
    description:
      - Regions and zones whose spot placement score (1 to 10) is under this are left out. The scores are
        asked for the share of nodes each region would take. Unknown scores (AWS refused them) are never low.
      - C(create.yml) runs C(spot_cluster) with its default, 3.
    type: int
    default: 3
  availability_zone_strategy:
    description: How each region's nodes are put over its zones, as C(spot_cluster) does (V(spread) or V(packed)).
    type: str
    choices: [spread, packed]
    default: spread
  orchestrator:
    description:
      - The orchestrator to price with the plan. C(mode) V(managed) (default) or V(external) (nothing to price),
        C(region) (default the first region of the plan), C(instance_type) (default V(t3.small)), C(market)
        (V(on-demand), the default, or V(spot)).
    type: dict
notes:
  - The O(region) option is only the region C(DescribeRegions) and C(GetSpotPlacementScores) are asked in.
  - Spot prices and scores change; the plan is what they are now. C(create.yml) reads them again when it runs.
  - Round trips, regions in parallel - C(DescribeRegions); zones and types per region with the placement scores
    of all regions; offerings and spot prices per region; the Price List only when its controller cache
    (7 days) lacks the orchestrator's price. See docs/plan.md.
extends_documentation_fragment:
  - amazon.aws.common.modules
  - amazon.aws.region.modules
  - amazon.aws.boto3
  - bacalhau.aws_spot.attributes
  - bacalhau.aws_spot.attributes.read_only
"""

EXAMPLES = r"""
- name: 40 nodes of 2 vCPUs and at least 4 GiB, in at most 5 of the account's regions, under 1 USD/hour
  bacalhau.aws_spot.spot_capacity_plan:
    nodes: 40
    vcpus: 2
    memory_gib: 4
    max_hourly_cost: 1.0
    regions: all
    max_regions: 5
  register: plan

- name: Write it as a cluster file for create.yml
  ansible.builtin.copy:
    content: "{{ {'cluster_name': 'my-cluster', 'cluster_regions': plan.cluster_regions,
                  'cluster_orchestrator': plan.cluster_orchestrator} | to_nice_yaml }}"
    dest: my-cluster.yml
    mode: "0644"

- name: arm64 only, current generation, in three given regions
  bacalhau.aws_spot.spot_capacity_plan:
    nodes: 12
    vcpus: {min: 2, max: 4}
    memory_gib: {min: 8}
    architectures: [arm64]
    instance_requirements:
      instance_generations: [current]
    regions: [eu-west-1, eu-central-1, eu-north-1]
    max_regions: 3
"""

RETURN = r"""
placements:
  description:
    - Where the nodes go, one row per region and zone (with O(availability_zone_strategy=packed) one per region) -
      the first pool C(spot_cluster) tries there.
  returned: success
  type: list
  elements: dict
  contains:
    region:
      description: The region.
      type: str
      sample: eu-north-1
    availability_zone:
      description: The zone.
      type: str
      sample: eu-north-1a
    instance_type:
      description: The instance type tried first there.
      type: str
      sample: c7g.large
    architecture:
      description: Its architecture.
      type: str
      sample: arm64
    spot_price:
      description: Its current spot price there, USD per hour (null for O(market=on-demand) when unread).
      type: float
      sample: 0.0161
    on_demand_price:
      description: Its on-demand price (only read for markets other than spot).
      type: float
    placement_score:
      description: The zone's spot placement score (null when unknown).
      type: int
      sample: 8
    region_score:
      description: The region's spot placement score (null when unknown).
      type: int
    count:
      description: Nodes planned there.
      type: int
      sample: 3
    hourly_cost:
      description: "C(count) x the price, USD per hour."
      type: float
      sample: 0.0483
orchestrator:
  description: The orchestrator priced with the plan (C(mode), C(region), C(instance_type), C(market),
    C(hourly_cost)); null with an external one.
  returned: success
  type: dict
hourly_cost:
  description:
    - USD per hour - C(expected) and C(worst_case) of the whole plan (orchestrator included), C(compute_expected),
      C(compute_worst_case), C(orchestrator), C(unknown) (nodes of unknown price) and C(max_hourly_cost).
  returned: success
  type: dict
  sample: {"expected": 0.71, "worst_case": 0.83, "compute_expected": 0.66, "compute_worst_case": 0.78,
           "orchestrator": 0.05, "unknown": 0, "max_hourly_cost": 1.0}
nodes:
  description: Compute nodes in the plan (O(nodes)).
  returned: success
  type: int
regions:
  description:
    - Every region considered, chosen first - C(region), C(chosen), C(count), C(region_score), C(unit_price)
      (expected USD per hour per node of its share), C(excluded_zones) (zones of a low score), and C(reason)
      (why a region took no nodes - not enabled, no type meets the requirements, no spot price, a low score,
      dearer than the chosen).
  returned: always
  type: list
  elements: dict
cluster_regions:
  description:
    - The plan as C(create.yml)'s C(cluster_regions) - per region C(region), C(count), C(instance_types)
      (cheapest first) and C(availability_zones) (of a good score, cheapest first).
  returned: success
  type: list
  elements: dict
  sample: [{"region": "eu-north-1", "count": 8, "instance_types": ["c7g.large", "c6g.large"],
            "availability_zones": ["eu-north-1b", "eu-north-1a"]}]
cluster_orchestrator:
  description: The orchestrator as C(create.yml)'s C(cluster_orchestrator).
  returned: success
  type: dict
  sample: {"mode": "managed", "region": "eu-north-1", "instance_type": "t3.small", "market": "on-demand"}
pools:
  description: Per chosen region, its pools as C(spot_cluster) will rank them from the entry (as in its
    C(regions.placement.pools)).
  returned: success
  type: dict
notes:
  description: What the plan had to do without (scores or prices AWS did not give) or changed to fit the cap.
  returned: success
  type: list
  elements: str
"""

try:
    import botocore.exceptions
except ImportError:
    pass  # handled by AnsibleAWSModule

from ansible_collections.amazon.aws.plugins.module_utils.modules import AnsibleAWSModule

from ansible_collections.bacalhau.aws_spot.plugins.module_utils._placement import plan as _capacity_plan
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._placement import plan_spec
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._aws.common import AwsSpotError
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._aws.credentials import fail

ARGUMENT_SPEC = dict(
    nodes=dict(type="int", required=True),
    vcpus=dict(type="raw", required=True),
    memory_gib=dict(type="raw", required=True),
    architectures=dict(type="list", elements="str", choices=["x86_64", "arm64"], default=["x86_64", "arm64"]),
    burstable=dict(type="str", choices=["included", "excluded", "required"]),
    instance_requirements=dict(type="dict"),
    regions=dict(type="list", elements="str", default=["all"]),
    max_regions=dict(type="int", default=5),
    max_per_region=dict(type="int"),
    max_types=dict(type="int", default=plan_spec.DEFAULT_MAX_TYPES),
    max_hourly_cost=dict(type="float"),
    market=dict(type="str", choices=["spot", "on-demand", "spot-then-on-demand"], default="spot"),
    min_placement_score=dict(type="int", default=3),
    availability_zone_strategy=dict(type="str", choices=["spread", "packed"], default="spread"),
    orchestrator=dict(type="dict"),
)


def main() -> None:
    module = AnsibleAWSModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    try:
        spec = plan_spec.parse(module.params)
        result = _capacity_plan.run(module, spec)
    except (AwsSpotError, botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
        fail(module, exc, "spot_capacity_plan could not read what it needs from AWS")
    module.exit_json(**result)


if __name__ == "__main__":
    main()
