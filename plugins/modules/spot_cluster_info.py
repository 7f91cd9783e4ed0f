#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: bacalhau.aws_spot contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: spot_cluster_info
short_description: Read a Bacalhau cluster's EC2 instances in many regions, including the spot interruptions
version_added: 0.2.0
description:
  - Finds the instances of the cluster O(cluster_name) (of O(role), or of every role) in every listed region
    by the tags M(bacalhau.aws_spot.spot_cluster) put on them at launch, and changes nothing.
  - One C(DescribeInstances) call per region, all regions at once. Instances that ended (EC2 lists terminated
    instances for about an hour) are returned apart, in RV(ended); those EC2 took back as spot interruptions
    (state reason C(Server.SpotInstanceTermination)) are also listed in RV(interrupted).
  - Resources of other clusters and untagged instances are never returned.
author:
  - Bacalhau aws_spot maintainers (@bacalhau-project)
options:
  cluster_name:
    description:
      - Name of the cluster (its C(bacalhau:cluster) tag).
    type: str
    required: true
  regions:
    description:
      - The regions to read. Every region is read at the same time.
    type: list
    elements: str
    required: true
  role:
    description:
      - Only the instances of this role (the C(bacalhau:role) tag); all roles when omitted.
    type: str
    choices: [compute, orchestrator]
  estimate_cost:
    description:
      - Also price the running spot instances from EC2's spot price history (one more call per region, made after
        the instances are known). On-demand instances are not priced.
    type: bool
    default: false
  cost_report:
    description:
      - Also say what the cluster cost, per pool (region, zone, instance type, market) and in total - node-hours,
        what was paid (the spot price history over each instance's life; the on-demand price for on-demand nodes,
        the orchestrator included), the on-demand equivalent, the saving, interruptions and the mean time to
        interruption - in RV(cost_report) and RV(cost_table).
      - The lives come from the cluster's pool history on the controller
        (C(~/.config/bacalhau.aws_spot/<cluster_name>/pool-history.json), kept by M(bacalhau.aws_spot.spot_cluster)),
        merged with what this read sees; the file is read, never written. The formula is in C(docs/spot_cluster.md).
      - One C(DescribeSpotPriceHistory) per spot pool per window (its first launch to its last end), all at once, and
        the Price List service for on-demand prices (cached on the controller).
    type: bool
    default: false
    version_added: 0.2.0
extends_documentation_fragment:
  - amazon.aws.common.modules
  - amazon.aws.region.modules
  - amazon.aws.boto3
  - bacalhau.aws_spot.attributes
  - bacalhau.aws_spot.attributes.read_only
attributes:
  action_group:
    support: full
    membership: [bacalhau.aws_spot.aws_spot, bacalhau.aws_spot.cluster]
    description: Takes its defaults from C(group/bacalhau.aws_spot.cluster) (O(cluster_name)) and from
      C(group/amazon.aws.aws) (credentials, endpoint).
notes:
  - The region of the AWS connection options is not used; O(regions) says where to look.
seealso:
  - module: bacalhau.aws_spot.spot_cluster
  - module: amazon.aws.ec2_instance_info
"""

EXAMPLES = r"""
- name: Read the cluster
  bacalhau.aws_spot.spot_cluster_info:
    cluster_name: demo
    regions: [us-east-1, eu-west-1]
  register: cluster

- name: The compute nodes EC2 took back
  ansible.builtin.debug:
    msg: "{{ cluster.interrupted }}"

- name: The running compute nodes of one region, with what they cost now
  bacalhau.aws_spot.spot_cluster_info:
    cluster_name: demo
    regions: [us-east-1]
    role: compute
    estimate_cost: true
  register: compute
"""

RETURN = r"""
instances:
  description: The cluster's instances that have not ended (pending, running, stopping, stopped), sorted by region
    then id, in the shape M(bacalhau.aws_spot.spot_cluster) returns them, plus C(state_reason) and C(interrupted).
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
      sample: us-east-1
    availability_zone:
      description: Its availability zone.
      type: str
      sample: us-east-1a
    instance_type:
      description: Its instance type.
      type: str
      sample: t3.small
    architecture:
      description: Its CPU architecture (V(x86_64) or V(arm64)).
      type: str
      sample: x86_64
    image_id:
      description: The AMI it was launched from.
      type: str
    lifecycle:
      description: V(spot) or V(on-demand).
      type: str
      sample: spot
    state:
      description: The EC2 instance state.
      type: str
      sample: running
    state_reason:
      description: EC2's state reason (C(code), C(message)), or null.
      type: dict
    interrupted:
      description: Whether EC2 ended it as a spot interruption.
      type: bool
    public_ip:
      description: Public IPv4 address, when it has one.
      type: str
    private_ip:
      description: Private IPv4 address.
      type: str
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
    launch_time:
      description: When it was launched (ISO 8601).
      type: str
    tags:
      description: All its tags.
      type: dict
ended:
  description: The cluster's instances that are shutting down or terminated, in the same shape as RV(instances).
  returned: always
  type: list
  elements: dict
  sample:
    - {instance_id: i-0fedcba9876543210, region: eu-west-1, state: terminated, interrupted: true,
       state_reason: {code: Server.SpotInstanceTermination, message: "Server.SpotInstanceTermination: Spot instance termination"}}
interrupted:
  description: Ids of the instances in RV(ended) that EC2 took back (spot interruptions).
  returned: always
  type: list
  elements: str
  sample: [i-0fedcba9876543210]
regions:
  description: Per region read, how many instances are running per role, how many have not ended and how many ended.
  returned: always
  type: dict
  sample:
    us-east-1: {region: us-east-1, running: {compute: 2, orchestrator: 1}, instances: 3, ended: 0, estimated_hourly_cost: 0.0124}
cost_report:
  description: With O(cost_report), what the cluster cost - C(pools) (one row per pool and market) and C(total), each
    with C(node_hours), C(paid_usd), C(on_demand_usd), C(saving_usd), C(saving) (a fraction), C(interruptions),
    C(rebalances), C(mean_time_to_interruption_hours), C(unpriced); and C(since), C(until), C(notes).
  returned: with O(cost_report)
  type: dict
cost_table:
  description: With O(cost_report), RV(cost_report) as a text table (for a C(debug) message).
  returned: with O(cost_report)
  type: str
orchestrator_endpoints:
  description: The NATS endpoints of the cluster's running orchestrators, C(nats://<public ip>:4222), as
    M(bacalhau.aws_spot.spot_cluster) returns them (what C(configure.yml) run alone gives the compute nodes).
  returned: always
  type: list
  elements: str
  sample: [nats://203.0.113.7:4222]
estimated_hourly_cost:
  description: With O(estimate_cost), USD per hour of the running spot instances at the current spot prices; null
    when a price is unknown or O(estimate_cost=false).
  returned: always
  type: float
  sample: 0.0124
"""

try:
    from botocore.exceptions import BotoCoreError
    from botocore.exceptions import ClientError
except ImportError:
    pass  # handled by AnsibleAWSModule

from ansible_collections.amazon.aws.plugins.module_utils.modules import AnsibleAWSModule

from ansible_collections.bacalhau.aws_spot.plugins.module_utils._cluster.info import read
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._aws.common import AwsSpotError


def main() -> None:
    argument_spec = dict(
        cluster_name=dict(type="str", required=True),
        regions=dict(type="list", elements="str", required=True),
        role=dict(type="str", choices=["compute", "orchestrator"]),
        estimate_cost=dict(type="bool", default=False),
        cost_report=dict(type="bool", default=False),
    )
    module = AnsibleAWSModule(argument_spec=argument_spec, supports_check_mode=True)
    regions = [r for r in module.params["regions"] if r]
    if not regions:
        module.fail_json(msg="regions is empty: list the regions to read, for example [us-east-1].")
    try:
        result = read(module, module.params["cluster_name"], regions, role=module.params["role"],
                      estimate_cost=module.params["estimate_cost"], with_cost_report=module.params["cost_report"])
    except AwsSpotError as exc:
        module.fail_json(msg=str(exc), **exc.details)
    except (BotoCoreError, ClientError) as exc:  # pylint: disable=duplicate-except
        module.fail_json_aws(exc, msg="Could not read the cluster's instances")
    module.exit_json(changed=False, **result)


if __name__ == "__main__":
    main()
