#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: bacalhau.aws_spot contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: tagged_resource_nuke
short_description: Delete every AWS resource bacalhau.aws_spot made, and nothing else
version_added: 0.1.0
description:
  - Finds, in every region asked for (or every region enabled for the account), the EC2
    resources tagged C(bacalhau:managed-by=bacalhau.aws_spot) (and C(bacalhau:cluster=NAME)
    when O(cluster_name) is given), and deletes them in dependency order, regions at once.
  - It also finds the EventBridge rules and SQS queues of the clusters' event paths
    (C(bacalhau-<cluster>-spot-events)). EventBridge and SQS cannot filter by tags, so those
    are listed by that name prefix and then picked by their tags, as every other type is.
  - Each type is found with its own describe call and tag filters (never C(DescribeTags),
    which also lists tags of deleted resources), and every resource found is checked
    against its own tags again before anything is done to it.
  - "Order, in rounds of calls made together (each region at once): persistent spot requests
    and C(maintain) fleets first, when there are any; then the other spot requests cancelled,
    EC2 fleets deleted (with their instances), instances terminated, key pairs, launch
    templates and SQS queues deleted, elastic IPs released; the instances waited for; every
    check of what still uses our groups, subnets and VPCs, with our groups' rules referencing
    groups revoked, internet gateways detached, route tables disassociated and EventBridge
    rules' targets removed; then network interfaces, volumes, security groups, subnets, route
    tables, internet gateways and EventBridge rules deleted; then VPCs."
  - A resource that is already gone counts as deleted. A resource that cannot be deleted is
    reported with the AWS error (or with what still uses it) and does not stop the rest; the
    module then fails, listing what remains. Nothing that is not ours is detached, revoked or
    modified; what keeps one of ours alive is named instead.
  - Without O(force=true), and not in check mode, nothing is deleted; the module fails,
    listing what would be deleted and how to proceed. In check mode it lists what would be
    deleted.
author:
  - Bacalhau aws_spot maintainers (@bacalhau-project)
options:
  regions:
    description:
      - The regions to search.
      - When omitted, every region enabled for the account (C(DescribeRegions), asked in
        O(region) or C(us-east-1)); regions that need opt-in and are not opted in are skipped.
    type: list
    elements: str
  cluster_name:
    description:
      - Only the resources of this cluster (tag C(bacalhau:cluster)).
      - When omitted, the resources of every cluster this collection manages.
      - An empty string is refused.
    type: str
  tags:
    description:
      - Extra tags the resources must carry as well (all of them, exact values).
      - They narrow the search, never widen it; C(bacalhau:managed-by) cannot be overridden.
    type: dict
  resource_types:
    description:
      - Only these types of resource. When omitted, all of them.
    type: list
    elements: str
    choices:
      - spot_instance_requests
      - ec2_fleets
      - instances
      - elastic_ips
      - launch_templates
      - network_interfaces
      - volumes
      - security_groups
      - subnets
      - route_tables
      - internet_gateways
      - vpcs
      - key_pairs
      - event_rules
      - sqs_queues
  force:
    description:
      - Really delete. Without it (and outside check mode) nothing is deleted and the module
        fails with the list of what would be deleted.
    type: bool
    default: false
attributes:
  check_mode:
    support: full
    details: Lists what would be deleted; C(changed) is true when anything would be.
  diff_mode:
    support: none
    details: The list RV(resources) says what was or would be deleted.
  idempotent:
    support: full
    details: A second run finds nothing and reports C(changed=false).
notes:
  - Cancelling a spot instance request does not terminate its instance; instances of ours
    are terminated in their own step. An instance of a request that is not tagged as ours is
    left alone and named in the result.
  - The default security group and the main route table of a VPC cannot be deleted on their
    own; when their VPC is being deleted they are left out (they go with it).
  - C(DependencyViolation) is retried with backoff for about a minute (AWS is eventually
    consistent after instances terminate) before it is reported.
seealso:
  - name: The nuke playbook
    description: C(playbooks/nuke.yml) wraps this module with a dry run by default.
    link: https://github.com/bacalhau-project/bacalhau
extends_documentation_fragment:
  - amazon.aws.common.modules
  - amazon.aws.region.modules
  - amazon.aws.boto3
  - bacalhau.aws_spot.attributes
"""

EXAMPLES = r"""
- name: Show what would be deleted, everywhere
  bacalhau.aws_spot.tagged_resource_nuke:
  check_mode: true
  register: plan

- name: Delete one cluster in two regions
  bacalhau.aws_spot.tagged_resource_nuke:
    cluster_name: demo
    regions: [us-east-1, eu-west-1]
    force: true

- name: Delete only the instances and spot requests of every cluster
  bacalhau.aws_spot.tagged_resource_nuke:
    resource_types: [spot_instance_requests, instances]
    force: true
"""

RETURN = r"""
resources:
  description: Every resource found, in region and deletion order, and what happened to it.
  returned: always
  type: list
  elements: dict
  contains:
    region:
      description: The region.
      type: str
      sample: us-east-1
    type:
      description: The kind of resource (one of O(resource_types)).
      type: str
      sample: vpcs
    id:
      description: Its id (allocation id for elastic IPs, key pair id for key pairs, the name of an
        EventBridge rule, the URL of an SQS queue).
      type: str
      sample: vpc-0123456789abcdef0
    name:
      description: Its C(Name) tag, or its name (key pairs, launch templates, security groups).
      type: str
      sample: bacalhau-demo
    tags:
      description: Its tags.
      type: dict
      sample: {"bacalhau:managed-by": "bacalhau.aws_spot", "bacalhau:cluster": "demo"}
    action:
      description: C(deleted), C(would_delete) or C(failed).
      type: str
      sample: deleted
    error:
      description: Why it could not be deleted (the AWS error, or what still uses it).
      type: str
      sample: "DependencyViolation: sg-0123 is still used by network interface eni-0456 (instance i-0789); ..."
    note:
      description: Set when there is more to say, e.g. C(already gone) or C(went with its instance).
      type: str
      returned: sometimes
      sample: already gone
counts:
  description: How many resources were deleted, would be deleted or failed, in all, per type and per region.
  returned: always
  type: dict
  sample:
    deleted: 3
    would_delete: 0
    failed: 0
    total: 3
    by_type: {"vpcs": {"deleted": 1, "total": 1}, "subnets": {"deleted": 2, "total": 2}}
    by_region: {"us-east-1": {"deleted": 3, "total": 3}}
regions:
  description: The regions searched.
  returned: always
  type: list
  elements: str
  sample: [us-east-1, eu-west-1]
region_errors:
  description: Regions that could not be searched or finished, with the error; the module fails when any.
  returned: always
  type: dict
  sample: {}
msg:
  description: What happened, and what to do next.
  returned: always
  type: str
"""

try:
    import botocore.exceptions
except ImportError:
    pass  # AnsibleAWSModule reports a missing botocore for us

from ansible_collections.amazon.aws.plugins.module_utils.modules import AnsibleAWSModule
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._aws.common import AwsSpotError
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._deletion.run import nuke
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._deletion.spec import RESOURCE_TYPES, build_spec


def main() -> None:
    argument_spec = dict(
        regions=dict(type="list", elements="str"),
        cluster_name=dict(type="str"),
        tags=dict(type="dict"),
        resource_types=dict(type="list", elements="str", choices=list(RESOURCE_TYPES)),
        force=dict(type="bool", default=False),
    )
    module = AnsibleAWSModule(argument_spec=argument_spec, supports_check_mode=True)
    try:
        spec = build_spec(module.params)
        outcome = nuke(module, spec, check_mode=module.check_mode)
    except AwsSpotError as exc:
        module.fail_json(msg=str(exc), **exc.details)
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
        module.fail_json_aws(exc, msg="Could not list the regions to search (give regions to skip this)")
    failed, result = outcome.report()
    if failed:
        module.fail_json(**result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
