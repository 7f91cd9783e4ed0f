#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: bacalhau.aws_spot contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: spot_cluster
short_description: Exact-count fleets of EC2 (spot) instances for a Bacalhau cluster, across regions
version_added: 0.1.0
description:
  - Keeps exactly O(regions[].count) live instances of one O(role) of the cluster O(cluster_name) in every
    listed region, launching only what is missing and terminating only the surplus. A second identical
    run launches nothing and reports C(changed=false).
  - Per region it owns a network that it creates on first use and reuses afterwards - a VPC, a public
    subnet in every availability zone, an internet gateway with the default route in the VPC's main route
    table, a security group and the SSH key pair - all tagged C(bacalhau:managed-by=bacalhau.aws_spot) and
    C(bacalhau:cluster=<cluster_name>) at creation (the main route table, made by AWS with the VPC and
    deleted with it, is tagged right after). Both roles of a cluster share the network of a region.
  - "Launches use one C(RunInstances) call per attempt (C(MinCount=1), C(MaxCount=<missing>)): one per zone,
    all at once, when spreading (O(availability_zone_strategy=spread), the default), one in all when packed.
    Pools (instance type x zone) are ranked from spot placement scores (C(GetSpotPlacementScores), by region
    and zone) and spot prices; a zone with no spot price for a type is not used for it. On capacity errors
    (C(InsufficientInstanceCapacity), C(SpotMaxPriceTooLow) and the like) it tries the next availability zone,
    and on quota errors (C(MaxSpotInstanceCountExceeded), C(VcpuLimitExceeded)) the next instance type.
    Every attempt is reported in RV(regions), and the placement and its reasons in RV(regions.placement)."
  - All regions are worked on at the same time. A region that cannot be filled does not stop the others;
    the module then fails with a message naming it, unless O(allow_partial=true).
  - Instances require IMDSv2, boot from an encrypted gp3 root volume and run the Ubuntu LTS image of
    their instance type's architecture (x86_64 or arm64), unless O(regions[].image_id) is given.
  - Everything is validated before anything is created - names, counts, regions, instance types,
    architecture of O(regions[].image_id) - and all problems are reported in one message.
  - "The whole cluster in one call: with O(orchestrator) the module takes the cluster as its file describes it -
    the orchestrator (managed, or external), the compute O(regions), the O(overflow_regions), the caps - plans both
    roles once (one round of reads per region, shared by the roles there), checks O(max_nodes) and
    O(max_hourly_cost) over the whole cluster, the orchestrator included, opens the orchestrator's NATS port (4222)
    to O(nats_cidrs) and to every compute node outside its region (a C(/32) each, compared with the security
    group's rules as AWS has them, so a stale address is revoked), then applies once. Problems anywhere stop it
    before anything is created, named as the cluster file names them (C(cluster_regions[1] (eu-west-1): unknown
    key 'cout' (did you mean 'count'?))). C(playbooks/create.yml) and C(playbooks/heal.yml) call it so; see
    O(mode) for heal. Without O(orchestrator) it keeps one O(role), as below."
  - With O(state=absent) it terminates the cluster's instances (of O(role), or of every role when O(role)
    is omitted) and, in every region where none of the cluster's instances remain, deletes the network it
    made there. Resources of other clusters and untagged resources are never touched.
author:
  - Bacalhau aws_spot maintainers (@bacalhau-project)
options:
  cluster_name:
    description:
      - Name of the cluster; 1 to 40 lowercase letters, digits and C(-), starting and ending with a letter or digit.
      - Used in the C(bacalhau:cluster) tag and in the names of what is created (C(bacalhau-<cluster_name>...)).
    type: str
    required: true
  state:
    description:
      - V(present) keeps the counts; V(absent) removes the instances of O(role) (or all) and then the network.
    type: str
    choices: [present, absent]
    default: present
  role:
    description:
      - The role of the instances this task manages, stored in the C(bacalhau:role) tag.
      - Defaults to V(compute) with O(state=present). With O(state=absent) and no O(role), every role goes.
    type: str
    choices: [compute, orchestrator]
  regions:
    description:
      - The regions of the cluster and what to run in each.
      - Required with O(state=present).
      - With O(state=absent) only O(regions[].region) is used; when O(regions) is omitted, every enabled region
        is searched for the cluster's resources.
      - A region left out of the list is not touched; set its O(regions[].count=0) to empty it.
    type: list
    elements: dict
    suboptions:
      region:
        description: The region name, for example V(eu-west-1).
        type: str
        required: true
      count:
        description: How many live (pending or running) instances of O(role) to keep there. V(0) empties it.
        type: int
      instance_types:
        description:
          - Instance types in order of preference, for example V([t3.small, t3a.small]).
          - x86_64 and arm64 types may be mixed; each gets the image of its architecture.
          - This or O(regions[].instance_requirements) is required when O(regions[].count) is above 0.
        type: list
        elements: str
      instance_requirements:
        description:
          - Instead of O(regions[].instance_types), what an instance needs, in the terms of AWS's
            C(InstanceRequirements) (snake_case). The region's own C(GetInstanceTypesFromInstanceRequirements)
            turns them into instance types (one call per architecture), and the candidates are ordered by price
            and capacity (spot placement score), cheapest first; RV(regions.placement) shows them and why.
          - "Keys: C(vcpus) and C(memory_gib) (required, each C({min, max}), C(min) required),
            C(memory_gib_per_vcpu), C(network_interface_count), C(network_bandwidth_gbps) (C({min, max})),
            C(cpu_manufacturers) (C(intel), C(amd), C(amazon-web-services), C(apple)), C(instance_generations)
            (C(current), C(previous)), C(allowed_instance_types), C(excluded_instance_types) (names with C(*)
            wildcards; not both), C(burstable), C(bare_metal), C(local_storage) (C(included), C(excluded) or
            C(required)), C(spot_max_price_percentage_over_lowest_price),
            C(on_demand_max_price_percentage_over_lowest_price)."
          - "Ours, not AWS's: C(architectures) (a list of C(x86_64), C(arm64); default both) and C(max_types)
            (keep the N types with the cheapest pool, default 8, 1 to 50)."
          - Adds one round of calls to the plan (the offerings and spot prices of the types found).
        type: dict
      on_demand_max:
        description:
          - With O(market=spot-then-on-demand), the most on-demand stand-ins this region may have at once. Default
            no limit (every node spot cannot fill).
        type: int
      image_id:
        description:
          - An AMI of that region to use instead of the Ubuntu LTS image. Its architecture must match every
            type in O(regions[].instance_types).
        type: str
      availability_zones:
        description:
          - Zones to launch in, in order of preference. Default is every zone of the region, in name order.
          - Subnets are made in every zone anyway, so the list can change later.
        type: list
        elements: str
      max_price:
        description:
          - Highest spot price to pay, in USD per instance-hour (for example V("0.05")). Default is the
            on-demand price (AWS's default). Only with O(market=spot).
          - AWS advises against it - a max price makes interruptions more frequent (an instance is taken back
            whenever the spot price rises above it). For a budget use O(max_hourly_cost) (C(cluster_max_hourly_cost)),
            which is applied when choosing pools and never turned into a max price.
        type: str
      nats_cidrs:
        description:
          - Where NATS (4222) may come from in this region, instead of O(nats_cidrs). Lets a playbook open
            the orchestrator's region to the compute nodes of other regions without opening the others.
        type: list
        elements: str
  orchestrator:
    description:
      - "The cluster's orchestrator, as C(cluster_orchestrator) of the cluster file - V({mode: managed, region,
        instance_type, market}) (C(market) V(on-demand), the default, or V(spot); optional C(image_id),
        C(availability_zones)) or V({mode: external, endpoints: [nats://host:4222]})."
      - Given, the module keeps the whole cluster (both roles) in one call; O(role) must then be left out.
      - With O(state=absent), only its region (and those of O(regions) and O(overflow_regions)) are searched.
    type: dict
    version_added: 0.2.0
  overflow_regions:
    description:
      - With O(orchestrator) and O(mode=heal), where the compute nodes a home region cannot hold go, in order of
        preference - entries like O(regions)' without C(count), none a region of O(regions) or the orchestrator's.
        Overflow nodes are tagged C(bacalhau:overflow-for=<home regions>). O(mode=converge) keeps what runs there.
    type: list
    elements: dict
    version_added: 0.2.0
  mode:
    description:
      - With O(orchestrator), what the counts are.
      - V(converge) - the file's counts (launch what is missing, terminate the surplus), as C(create.yml).
      - V(heal) - never fewer than live - each home region's count plus a replacement for each of its nodes in
        O(drain_instance_ids), what a home region still cannot hold in O(overflow_regions) (in order), and spot again
        for on-demand stand-ins once spot has room (make before break). Regions left short do not fail the task.
      - V(release) - let go of what is no longer needed - the drained nodes whose replacements run, and overflow
        nodes whose home regions hold their count again; never below a count. RV(released) lists them.
    type: str
    choices: [converge, heal, release]
    default: converge
    version_added: 0.2.0
  pool_cooldown:
    description:
      - With O(orchestrator), C(cluster_pool_cooldown) - a pool (region, zone, instance type) that took back one of
        the cluster's nodes less than this long ago gets no new node while another pool holds (it is tried last).
      - Minutes (V(30)), or a duration such as V(90s), V(30m), V(2h). V(0) turns the cool-down off. Default 30 minutes.
    type: raw
    version_added: 0.2.0
  rebalance:
    description:
      - With O(orchestrator) and O(mode=heal), C(cluster_rebalance) - move running spot compute nodes to a pool of
        their region that holds (not cooling down, placement score not low) and is at least C(min_saving) (a
        fraction, default V(0.2)) cheaper by expected cost, at most C(max_moves) (default V(2)) per run. Off when
        omitted.
      - Make before break - a moved node drains (RV(drain_instance_ids)), heal launches its replacement, and the
        C(mode=release) call terminates it once the replacement runs (C(heal.yml) configures it first).
      - Never a node in O(busy_instance_ids) unless C(move_busy=true). Hysteresis - the pools' mean prices over the
        last 6 hours (one C(DescribeSpotPriceHistory) per region), nodes younger than an hour stay, and nothing moves
        back into a pool a node was moved out of within 6 hours. RV(rebalance) lists the moves and why others stay.
    type: raw
    version_added: 0.2.0
  busy_instance_ids:
    description:
      - With O(rebalance), the compute nodes running a job (an execution not in a terminal state, as the orchestrator
        says); O(rebalance) does not move them unless C(move_busy=true).
    type: list
    elements: str
    version_added: 0.2.0
  pool_history:
    description:
      - With O(orchestrator), keep the cluster's pool history in C(~/.config/bacalhau.aws_spot/<cluster>/pool-history.json)
        on the controller (every instance's pool, life and why it ended, from every read) and rank pools by expected
        cost with it (formula in C(docs/spot_cluster.md)). Check mode reads the file but never writes it.
      - A missing, corrupt or unwritable file is a warning, never a failure.
      - With O(state=absent) the instances it terminates are first recorded as ended by this collection; the
        file is kept (C(destroy.yml) removes it only with C(-e destroy_forget_history=true)).
    type: bool
    default: true
    version_added: 0.2.0
  joined_instance_ids:
    description:
      - With O(orchestrator), the instance ids of the compute nodes the orchestrator has as connected; RV(to_configure)
        then lists the running compute nodes not among them (else the ones this run launched).
    type: list
    elements: str
    version_added: 0.2.0
  autoheal:
    description:
      - With O(orchestrator) and O(mode=converge) or O(mode=heal), make the cluster's autoheal event path in every
        region it uses (the compute regions, O(overflow_regions) and a managed orchestrator's) - an EventBridge rule
        C(bacalhau-<cluster>-spot-events) for EC2's spot interruption warnings, rebalance recommendations and
        instances going away, and the SQS queue of that name it sends to (SSE-SQS, an hour's retention, a queue
        policy for that rule only), tagged as the cluster's. The rulebook C(bacalhau.aws_spot.autoheal) reads
        them. Check mode says what would be made. RV(event_path) says per region whether the path exists.
      - V(false) makes no call about it. A path made earlier is left as it is (nothing reads it; its messages
        expire after an hour) until O(state=absent) (C(destroy.yml)) or the nuke removes it.
      - A region where the path cannot be made is a warning, not a failure; the instances are healed anyway.
      - The cluster file's C(cluster_autoheal).
    type: bool
    default: true
    version_added: 0.2.0
  market:
    description:
      - V(spot) (one-time requests, terminated on interruption), V(on-demand), or V(spot-then-on-demand).
      - V(spot-then-on-demand) launches on-demand stand-ins for what every spot pool of the region failed to
        fill (at most O(regions[].on_demand_max)), tagged C(bacalhau:market=on-demand-fallback). A later run
        that finds spot capacity (the region's spot placement score at least O(min_placement_score)) launches
        spot nodes for them first and terminates the stand-ins once those run (make before break). In a region
        whose score is under O(min_placement_score) spot is not tried; stand-ins are launched at once.
    type: str
    choices: [spot, on-demand, spot-then-on-demand]
    default: spot
  availability_zone_strategy:
    description:
      - V(spread) puts a region's new nodes over its zones so that every zone ends within one node of the
        others (counting the nodes there already), one C(RunInstances) per zone, all at once; what a zone cannot
        take goes to the zones that had room, as V(packed) would.
      - V(packed) walks the pools in order (first zone with capacity takes them all, one call).
      - Zones are taken in O(regions[].availability_zones) order when given, else best spot placement score
        first (zones under O(min_placement_score) last, and left out of the spread), then cheapest.
    type: str
    choices: [spread, packed]
    default: spread
  min_placement_score:
    description:
      - The spot placement score (C(GetSpotPlacementScores), 1 to 10) under which a zone or region is avoided -
        its pools are tried last and it gets no share of a spread. Unknown scores (AWS refused them) are never low.
    type: int
    default: 3
  max_hourly_cost:
    description:
      - Refuse a plan that could cost more than this, in USD per hour, before anything is created (also in check
        mode), naming the numbers. Counted - the cluster's instances that stay (every role, at their spot or
        on-demand price), and the new ones at the dearest pool they may fall back to, plus on-demand stand-ins
        at the on-demand price. A plan with nodes of unknown price is refused too.
      - Default no cap.
    type: float
  extra_hourly_cost:
    description:
      - "USD per hour of the cluster's nodes this call does not see (another role's plan, say an orchestrator not
        launched yet or in a region not listed here), added to the plan's cost before O(max_hourly_cost) is
        checked. Another role's call returns its own part as C(role) of RV(plan_cost)."
    type: float
    default: 0.0
  max_nodes:
    description:
      - Refuse a plan with more live instances in the cluster than this (this role's counts plus the other roles'
        instances in the listed regions), naming the numbers. A guard against typos in O(regions[].count).
    type: int
    default: 100
  ssh_public_key:
    description:
      - OpenSSH public key material (not a file name), imported as a key pair in every region.
      - The key pair is named C(bacalhau-<cluster_name>-<hash of the key>), so a new key never replaces the
        key of running instances; all of the cluster's key pairs are deleted with its network.
      - Without it instances have no key pair.
    type: str
  ssh_cidrs:
    description: Where SSH (port 22) may come from. Default none.
    type: list
    elements: str
    default: []
  api_cidrs:
    description: Where Bacalhau's API port (O(api_port)) may come from. Default none.
    type: list
    elements: str
    default: []
  nats_cidrs:
    description:
      - Where the orchestrator's NATS port (4222) may come from, beside the cluster's own nodes in the same
        region (always allowed). Compute nodes in other regions reach an orchestrator over its public
        address - with O(orchestrator), the module adds each one's address as a C(/32) itself, unless a block
        given here holds it; without, give their addresses (or a wider block, with NATS authentication)
        here. Default none.
    type: list
    elements: str
    default: []
  security_group_rules_quota:
    description:
      - With O(orchestrator), C(cluster_security_group_rules_quota) - the inbound rules AWS lets one security group
        hold in this account (the quota C(Inbound or outbound rules per security group), for IPv4 and IPv6 apart).
      - Before anything is made, the module refuses a cluster whose orchestrator group could need more - one rule
        per CIDR and port, one for the group itself, and a C(/32) on NATS per compute node outside the
        orchestrator's region (the counts of the other regions, and the orchestrator region's own when
        O(overflow_regions) may take its nodes) - unless O(nats_cidrs) holds V(0.0.0.0/0).
      - Set it to what Service Quotas shows after raising the quota.
    type: int
    default: 60
    version_added: 0.2.0
  api_port:
    description: Bacalhau's API port.
    type: int
    default: 1234
  vpc_cidr:
    description:
      - The IPv4 block of the cluster's VPC in every region, from /16 to /24. Each zone gets a subnet four
        bits longer (a /20 of a /16). Only used when the VPC is created.
    type: str
    default: 10.0.0.0/16
  root_volume_size:
    description: Size of the encrypted gp3 root volume in GiB.
    type: int
    default: 20
  kms_key_id:
    description:
      - KMS key (id, ARN or alias ARN) the root volumes of new instances are encrypted with.
      - Unset, the account's EBS default key of each region is used. Root volumes are always encrypted.
      - Applies to instances launched from now on; running instances keep their volumes.
    type: str
  user_data:
    description: User data (cloud-init) for new instances, as plain text (at most 16 KiB).
    type: str
  tags:
    description:
      - Extra tags for every resource created. The C(bacalhau:*) keys and C(Name) are set by the module.
      - Tags are only set at creation; changing them does not re-tag existing resources.
    type: dict
    default: {}
  ubuntu_release:
    description: The Ubuntu LTS release of the default images.
    type: str
    choices: ["24.04", "22.04"]
    default: "24.04"
  instance_tags:
    description:
      - Tags for the instances this call launches (and their volumes and network interfaces), on top of O(tags);
        not put on the network. C(playbooks/heal.yml) marks overflow nodes with C(bacalhau:overflow-for).
      - The C(bacalhau:*) keys the module sets and C(aws:*) keys are refused.
    type: dict
    version_added: 0.2.0
  drain_instance_ids:
    description:
      - Instances to terminate first when a region has more than its count (for example nodes with a spot
        interruption notice or a rebalance recommendation whose replacements run). They are terminated only as
        part of a surplus, never below the count.
    type: list
    elements: str
    version_added: 0.2.0
  interrupted_instance_ids:
    description:
      - Of O(drain_instance_ids), the instances EC2 sent a spot interruption warning for (the others had a rebalance
        recommendation). When they are let go (make before break, before EC2 reclaims them) the pool history records
        them as spot interruptions, so their pools cool down (O(pool_cooldown)) as if EC2 had taken them; the other
        drained nodes are recorded as rebalance recommendations acted on.
      - C(playbooks/heal.yml) passes the nodes whose spot watcher logged a notice, and those the autoheal rulebook
        got an interruption warning for.
    type: list
    elements: str
    default: []
  allow_partial:
    description:
      - When a region cannot be filled (no capacity in any zone or type), report it in RV(regions) and
        succeed instead of failing. Instances that did launch are kept either way.
    type: bool
    default: false
  wait:
    description:
      - Wait until new instances run and terminated ones are gone.
      - With O(state=absent) the module always waits for termination where it deletes a network.
    type: bool
    default: true
  wait_timeout:
    description: How long to wait, in seconds.
    type: int
    default: 600
notes:
  - The O(region) option is only the region used to check the others (C(DescribeRegions)) and, with
    O(state=absent) and no O(regions), to list the enabled regions.
  - Scale down terminates the least preferred instances first - types no longer listed, then later types,
    then later zones - newest first.
  - RV(estimated_hourly_cost) comes from the spot price history for spot instances and from the AWS Price List
    service (C(pricing:GetProducts), cached on the controller) for on-demand ones; V(null) when a price is
    unknown.
  - "Why C(RunInstances) and not EC2 Fleet C(instant) with C(price-capacity-optimized): a fleet needs a launch
    template (one more call and one more resource per region), does not balance a region over its zones, and
    reports its errors per override inside a successful answer, which the offline emulator (moto) does not
    model (it uses a fleet's first override only). The module ranks the same pools the same way from the
    same data (spot placement scores, then price) and walks them with C(RunInstances). See docs/spot_cluster.md."
extends_documentation_fragment:
  - amazon.aws.common.modules
  - amazon.aws.region.modules
  - amazon.aws.boto3
  - bacalhau.aws_spot.attributes
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
    details: The diff shows the number of live instances of the role per region, before and after.
  idempotent:
    support: full
"""

EXAMPLES = r"""
- name: Two regions of compute nodes, x86_64 in one and arm64 in the other
  bacalhau.aws_spot.spot_cluster:
    cluster_name: demo
    regions:
      - region: eu-west-1
        count: 3
        instance_types: [t3.small, t3a.small]
      - region: us-east-1
        count: 2
        instance_types: [t4g.small, m7g.medium]
        availability_zones: [us-east-1b, us-east-1c]
    ssh_public_key: "{{ lookup('ansible.builtin.file', '~/.ssh/id_ed25519.pub') }}"
    ssh_cidrs: [203.0.113.0/24]
    api_cidrs: [203.0.113.0/24]
  register: compute

- name: One on-demand orchestrator
  bacalhau.aws_spot.spot_cluster:
    cluster_name: demo
    role: orchestrator
    market: on-demand
    regions:
      - region: eu-west-1
        count: 1
        instance_types: [t3.medium]
    ssh_public_key: "{{ lookup('ansible.builtin.file', '~/.ssh/id_ed25519.pub') }}"

- name: Accept fewer instances where capacity is short
  bacalhau.aws_spot.spot_cluster:
    cluster_name: demo
    allow_partial: true
    regions:
      - region: ap-southeast-2
        count: 10
        instance_types: [c7g.large, c6g.large, m7g.large]
        max_price: "0.05"

- name: Nodes by what they need, spread over zones, on-demand where spot has no room, under a cost cap
  bacalhau.aws_spot.spot_cluster:
    cluster_name: demo
    market: spot-then-on-demand
    max_hourly_cost: 0.50
    regions:
      - region: eu-west-1
        count: 6
        on_demand_max: 2
        instance_requirements:
          vcpus: {min: 2, max: 4}
          memory_gib: {min: 4}
          architectures: [arm64, x86_64]
          burstable: excluded
  register: compute

- name: Remove the whole cluster, wherever it has resources
  bacalhau.aws_spot.spot_cluster:
    cluster_name: demo
    state: absent

- name: The whole cluster, as its file says, in one call
  bacalhau.aws_spot.spot_cluster:
    cluster_name: demo
    orchestrator: {mode: managed, region: eu-west-1, instance_type: t3.medium, market: on-demand}
    regions:
      - {region: eu-west-1, count: 3, instance_types: [t3.small, t3a.small]}
      - {region: us-east-1, count: 2, instance_types: [t4g.small]}
    overflow_regions:
      - {region: us-west-2, instance_types: [t3.small]}
    market: spot-then-on-demand
    max_hourly_cost: 1.0
    ssh_public_key: "{{ lookup('ansible.builtin.file', '~/.ssh/id_ed25519.pub') }}"
  register: cluster

- name: Heal it - replacements for the nodes with a spot notice first
  bacalhau.aws_spot.spot_cluster:
    cluster_name: demo
    mode: heal
    drain_instance_ids: [i-0123456789abcdef0]
    orchestrator: {mode: managed, region: eu-west-1, instance_type: t3.medium}
    regions:
      - {region: eu-west-1, count: 3, instance_types: [t3.small, t3a.small]}
      - {region: us-east-1, count: 2, instance_types: [t4g.small]}
    overflow_regions:
      - {region: us-west-2, instance_types: [t3.small]}
"""

RETURN = r"""
event_path:
  description:
    - With O(orchestrator) and O(autoheal=true), in O(mode=converge) and O(mode=heal), the autoheal event path per
      region (empty otherwise).
    - The age of the last event comes from C(~/.config/bacalhau.aws_spot/<cluster>/autoheal/last-events.json),
      which the event source C(bacalhau.aws_spot.spot_events) writes on the host that runs the rulebook; on any
      other host it is V(null).
  returned: success
  type: dict
  sample:
    us-east-1: {"exists": true, "rule": true, "rule_enabled": true, "queue": true, "queue_depth": 0,
                "queue_in_flight": 0, "last_event": "2026-12-06T08:00:00Z", "last_event_kind": "interruption",
                "last_event_age_seconds": 42, "changed": false, "changes": [], "error": null}
instances:
  description: The live instances of the role after the run (empty with O(state=absent)).
  returned: always
  type: list
  elements: dict
  contains:
    instance_id:
      description: The instance id.
      type: str
      sample: i-0123456789abcdef0
    region:
      description: Its region.
      type: str
      sample: eu-west-1
    availability_zone:
      description: Its zone.
      type: str
      sample: eu-west-1a
    instance_type:
      description: Its type.
      type: str
      sample: t3.small
    architecture:
      description: "C(x86_64) or C(arm64)."
      type: str
      sample: x86_64
    image_id:
      description: The AMI it runs.
      type: str
      sample: ami-0123456789abcdef0
    lifecycle:
      description: "C(spot) or C(on-demand)."
      type: str
      sample: spot
    state:
      description: "C(pending) or C(running)."
      type: str
      sample: running
    public_ip:
      description: Public IPv4 address (once running).
      type: str
      sample: 203.0.113.10
    private_ip:
      description: Private IPv4 address.
      type: str
      sample: 10.0.0.12
    public_dns_name:
      description: Public DNS name, when there is one.
      type: str
    private_dns_name:
      description: Private DNS name.
      type: str
    role:
      description: "The C(bacalhau:role) tag."
      type: str
      sample: compute
    cluster:
      description: "The C(bacalhau:cluster) tag."
      type: str
      sample: demo
    launch_time:
      description: When it was launched (ISO 8601).
      type: str
    tags:
      description: All its tags.
      type: dict
regions:
  description: What happened in each region, keyed by region name.
  returned: always
  type: dict
  contains:
    requested:
      description: The count asked for.
      type: int
    before:
      description: Live instances of the role before the run.
      type: int
    running:
      description: Live instances of the role after the run (in check mode, the count it would have).
      type: int
    to_launch:
      description: How many were missing.
      type: int
    to_terminate:
      description: Ids of the surplus chosen for termination.
      type: list
      elements: str
    launched:
      description: Ids of the instances launched.
      type: list
      elements: str
    terminated:
      description: Ids of the instances terminated.
      type: list
      elements: str
    attempts:
      description: Every launch attempt, in order, with C(instance_type), C(availability_zone), C(market),
        C(requested), C(launched), C(error_code) and C(error).
      type: list
      elements: dict
    network:
      description: Ids of the cluster's network there (C(vpc_id), C(subnet_ids) by zone, C(internet_gateway_id),
        C(route_table_id) (the VPC's main route table), C(security_group_id), C(key_names)).
      type: dict
    network_changes:
      description: What was (or would be) created or deleted of the network.
      type: list
      elements: str
    network_deleted:
      description: With O(state=absent), what of the network was deleted.
      type: list
      elements: str
    remaining:
      description: With O(state=absent), instances of other roles left in the region.
      type: int
    changed:
      description: Whether anything changed in the region.
      type: bool
    failed:
      description: Whether the region could not be brought to its count.
      type: bool
    error:
      description: Why, when it failed.
      type: str
    estimated_hourly_cost:
      description: USD per hour of the role's instances there, or null when unknown.
      type: float
    on_demand_fallback:
      description: Ids of the on-demand stand-ins launched by this run (O(market=spot-then-on-demand)).
      type: list
      elements: str
    to_replace:
      description: On-demand stand-ins this run tries to replace by spot (make before break).
      type: int
    replaced:
      description: Ids of the on-demand stand-ins terminated once their spot replacements ran.
      type: list
      elements: str
    placement:
      description:
        - Where the nodes go and why, also in check mode. C(strategy), C(market), C(instance_types) (the
          candidates; with C(from_requirements) what O(regions[].instance_requirements) resolved to),
          C(region_score) and C(zone_scores) (spot placement scores, null/empty when unknown), C(pools) (ranked,
          each with C(instance_type), C(availability_zone), C(architecture), C(spot_price), C(on_demand_price),
          C(zone_score)), C(excluded) (pools left out, with C(reason) C(not offered) or C(no spot price)),
          C(launches) (per zone, C(count) and the C(pools) tried, in order), C(on_demand_fallback) (C(now),
          C(may_launch), C(max), C(to_replace), C(ranked)), C(cost) (C(expected), C(worst_case), C(unknown)) and
          C(notes).
      type: dict
plan_cost:
  description:
    - USD per hour of the plan over every region, as checked against O(max_hourly_cost) - C(expected) (the
      nodes that stay plus the launches at their first pool), C(worst_case) (fallbacks to the dearest pools and
      on-demand stand-ins), C(unknown) (nodes of unknown price), C(max_hourly_cost), C(extra_hourly_cost), and
      C(role) (C(expected), C(worst_case), C(unknown) of this role's own nodes only, what another role's call
      gives as O(extra_hourly_cost)).
  returned: with O(state=present)
  type: dict
  sample: {"expected": 0.0312, "worst_case": 0.0418, "unknown": 0, "max_hourly_cost": 0.5}
estimated_hourly_cost:
  description:
    - USD per hour of all the instances in RV(instances), from the current spot prices of their type and zone
      (on-demand ones from the Price List).
    - In check mode, of the instances that exist now.
    - null when any of them has no known price.
  returned: always
  type: float
  sample: 0.0312
summary:
  description:
    - With O(orchestrator), per region and role (the orchestrator first, then O(regions), then O(overflow_regions)),
      what RV(regions) says of one region - C(region), C(role), C(requested), C(before), C(running), C(to_launch),
      C(to_terminate), C(launched), C(terminated), C(replaced), C(failed), C(error), C(placement)... - and
      C(reasons) (C(launch), C(terminate) - why, or null).
  returned: with O(orchestrator)
  type: list
  elements: dict
orchestrator_endpoints:
  description: The orchestrator's NATS endpoints (C(nats://<public address>:4222); an external one's as given).
  returned: with O(orchestrator)
  type: list
  elements: str
  sample: ["nats://203.0.113.10:4222"]
nats_cidrs:
  description: Who may reach the orchestrator's NATS port - O(nats_cidrs) and the compute nodes outside its region.
  returned: with O(orchestrator)
  type: list
  elements: str
launched:
  description: Ids of every instance launched (both roles).
  returned: with O(orchestrator)
  type: list
  elements: str
terminated:
  description: Ids of every instance terminated (stand-ins replaced by spot included).
  returned: with O(orchestrator)
  type: list
  elements: str
released:
  description: With O(mode=release), the ids terminated (drained, or overflow no longer needed), for the
    orchestrator to forget.
  returned: with O(orchestrator)
  type: list
  elements: str
overflow:
  description: The overflow nodes, each C(<id> in <region> (for <home regions>)).
  returned: with O(orchestrator)
  type: list
  elements: str
drain_instance_ids:
  description: O(drain_instance_ids), as used.
  returned: with O(orchestrator)
  type: list
  elements: str
interrupted_instance_ids:
  description: O(interrupted_instance_ids) that are among O(drain_instance_ids), as used.
  returned: with O(orchestrator)
  type: list
  elements: str
to_configure:
  description: Compute nodes to set Bacalhau up on - running, not draining, and not in O(joined_instance_ids)
    (without it, the ones launched by this run). Empty in check mode.
  returned: with O(orchestrator)
  type: list
  elements: str
mode:
  description: O(mode).
  returned: with O(orchestrator)
  type: str
rebalance:
  description: With O(rebalance) - C(moves) (each with C(instance_id), C(from), C(to), expected prices, C(saving)),
    C(kept) (each node not moved and why) and C(settings).
  returned: with O(rebalance)
  type: dict
pool_history:
  description:
    - The pool history of this run - C(path), C(kept) (O(pool_history)), C(written) (false in check mode),
      C(records), C(now) (EC2's time of the read) and C(warnings). Every pool considered, with its C(verdict)
      (C(chosen), C(candidate), C(avoided), C(last resort), C(tried)) and C(why), is in each row's C(placement.pools).
  returned: with O(orchestrator)
  type: dict
  sample: {"path": "/home/me/.config/bacalhau.aws_spot/demo/pool-history.json", "kept": true, "written": true,
           "records": 4, "now": "2026-12-06T09:00:00+00:00", "warnings": []}
failed_regions:
  description: Region name -> why it could not be filled (only with failures). With O(orchestrator), C(<region> <role>).
  returned: always
  type: dict
diff:
  description: Live instances of the role per region, before and after.
  returned: in diff mode (C(--diff))
  type: dict
  sample: {"before": {"eu-west-1": 1}, "after": {"eu-west-1": 3}}
"""

try:
    import botocore.exceptions
except ImportError:
    pass  # handled by AnsibleAWSModule

from ansible_collections.amazon.aws.plugins.module_utils.modules import AnsibleAWSModule

from ansible_collections.bacalhau.aws_spot.plugins.module_utils._aws.common import AwsSpotError
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._aws.credentials import fail
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._cluster import desc as cluster_desc
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._cluster import engine
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._cluster import reconcile
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._cluster.result import unaccepted_failures
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._cluster import spec as cluster_spec

ARGUMENT_SPEC = dict(
    cluster_name=dict(type="str", required=True),
    state=dict(type="str", choices=["present", "absent"], default="present"),
    role=dict(type="str", choices=list(cluster_spec.ROLES)),
    # the entries' keys are checked by _cluster.spec (an unknown one is named with the key it most
    # looks like, in the cluster file's words with orchestrator), not by Ansible's suboptions
    regions=dict(type="list", elements="dict"),
    orchestrator=dict(type="dict"),
    overflow_regions=dict(type="list", elements="dict"),
    mode=dict(type="str", choices=list(cluster_desc.MODES), default="converge"),
    joined_instance_ids=dict(type="list", elements="str"),
    pool_cooldown=dict(type="raw"),
    pool_history=dict(type="bool", default=True),
    rebalance=dict(type="raw"),
    busy_instance_ids=dict(type="list", elements="str"),
    market=dict(type="str", choices=list(cluster_spec.MARKETS), default="spot"),
    ssh_public_key=dict(type="str", no_log=False),
    ssh_cidrs=dict(type="list", elements="str", default=[]),
    api_cidrs=dict(type="list", elements="str", default=[]),
    nats_cidrs=dict(type="list", elements="str", default=[]),
    security_group_rules_quota=dict(type="int", default=60),
    api_port=dict(type="int", default=1234),
    vpc_cidr=dict(type="str", default="10.0.0.0/16"),
    root_volume_size=dict(type="int", default=20),
    kms_key_id=dict(type="str", no_log=False),
    user_data=dict(type="str"),
    tags=dict(type="dict", default={}),
    ubuntu_release=dict(type="str", choices=["24.04", "22.04"], default="24.04"),
    allow_partial=dict(type="bool", default=False),
    instance_tags=dict(type="dict"),
    drain_instance_ids=dict(type="list", elements="str"),
    interrupted_instance_ids=dict(type="list", elements="str", default=[]),
    wait=dict(type="bool", default=True),
    wait_timeout=dict(type="int", default=600),
    availability_zone_strategy=dict(type="str", choices=list(cluster_spec.STRATEGIES), default="spread"),
    max_hourly_cost=dict(type="float"),
    extra_hourly_cost=dict(type="float", default=0.0),
    max_nodes=dict(type="int", default=cluster_spec.DEFAULT_MAX_NODES),
    min_placement_score=dict(type="int", default=3),
    autoheal=dict(type="bool", default=True),
)


def _fail_refused(module: AnsibleAWSModule, result: dict, refused: dict, regions: int, present: bool) -> None:
    summary = "; ".join(f"{region}: {why}" for region, why in refused.items())
    advice = (
        "The other regions are done and what launched is kept. Add instance types or zones, raise max_price, "
        "use another region, or set allow_partial: true to accept fewer instances."
        if present else
        "The other regions are done. Run again to finish: what is gone already counts as done."
    )
    module.fail_json(msg=f"spot_cluster could not finish {len(refused)} of {regions} region(s): {summary}. {advice}",
                     **result)


def _finish(module: AnsibleAWSModule, result: dict, rows: dict, allow_partial: bool, present: bool) -> None:
    failed = result["failed_regions"]
    result.pop("exceptions")
    diff = result.pop("diff")
    if module._diff:
        result["diff"] = diff
    refused = unaccepted_failures(rows, failed, allow_partial)
    if refused:
        _fail_refused(module, result, refused, len(rows), present)
    if failed:
        module.warn("spot_cluster left regions short of their count: "
                    + "; ".join(f"{region}: {why}" for region, why in failed.items()))
    module.exit_json(**result)


def _warn_world(module: AnsibleAWSModule, spec: cluster_spec.ClusterSpec) -> None:
    world = cluster_spec.open_to_world(spec)
    if world:
        module.warn("spot_cluster opens ports to the whole internet, as asked: " + "; ".join(world)
                    + ". Give narrower CIDR blocks unless that is meant.")


def main() -> None:
    module = AnsibleAWSModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True,
                              mutually_exclusive=[("orchestrator", "role")],
                              required_by={"overflow_regions": "orchestrator"})
    whole = module.params["orchestrator"] is not None
    try:
        if whole and module.params["state"] == "absent":  # only the regions of the cluster file matter
            whole = False
            module.params["regions"] = cluster_desc.region_names(module.params)
        if whole:
            desc = cluster_desc.parse(module.params)
            _warn_world(module, desc.compute)
            result = reconcile.run(module, desc)
        else:
            spec = cluster_spec.parse(module.params)
            _warn_world(module, spec)
            result = engine.run(module, spec)
    except (AwsSpotError, botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
        fail(module, exc, "spot_cluster failed before changing anything")

    if whole:
        rows = {f"{r['region']} {r['role']}": r for r in result["summary"]}
        _finish(module, result, rows, desc.compute.allow_partial or desc.mode != "converge", True)
    _finish(module, result, result["regions"], spec.allow_partial, spec.state == "present")


if __name__ == "__main__":
    main()
