#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: bacalhau.aws_spot contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: ami_arch_lookup
short_description: Find the right Ubuntu AMI per region and CPU architecture, checked against instance types
version_added: 0.1.0
description:
  - Looks up the newest Canonical Ubuntu LTS image for every requested region and architecture.
    Canonical's SSM public parameter (for example
    C(/aws/service/canonical/ubuntu/server/24.04/stable/current/arm64/hvm/ebs-gp3/ami-id)) is read first;
    C(DescribeImages) by Canonical's owner id C(099720109477) and image name is the fallback.
  - Learns each instance type's architecture from C(DescribeInstanceTypes) (never from name prefixes),
    checks that the type is offered in each region, and pairs it with the image of its architecture.
  - With O(image_ids), validates the given images instead of looking them up, and fails when an
    instance type's architecture does not match its region's image.
  - All regions are looked up concurrently. The module is read-only.
author:
  - Bacalhau aws_spot maintainers (@bacalhau-project)
options:
  regions:
    description:
      - The regions to look up, for example V(us-east-1). Every region must exist and be enabled for the account.
    type: list
    elements: str
    required: true
  architectures:
    description:
      - The CPU architectures to find images for. Architectures of O(instance_types) are always added.
    type: list
    elements: str
    choices: [x86_64, arm64]
    default: [x86_64, arm64]
  ubuntu_release:
    description:
      - The Ubuntu LTS release.
    type: str
    choices: ["24.04", "22.04"]
    default: "24.04"
  instance_types:
    description:
      - Instance types to check. Each must exist, be offered in every region in O(regions), and run
        one of the supported architectures. The result pairs each with its architecture's image.
    type: list
    elements: str
  image_ids:
    description:
      - A map of region to AMI id to validate instead of looking up the Ubuntu image for that region.
      - Every key must also be listed in O(regions).
    type: dict
extends_documentation_fragment:
  - amazon.aws.common.modules
  - amazon.aws.region.modules
  - amazon.aws.boto3
  - bacalhau.aws_spot.attributes
  - bacalhau.aws_spot.attributes.read_only
notes:
  - The O(region) option only chooses where the region list itself is read (C(DescribeRegions));
    the look-ups happen in every region of O(regions).
seealso:
  - module: amazon.aws.ec2_ami_info
  - name: Find Ubuntu images on AWS
    description: Canonical's documentation of its SSM parameters and image names.
    link: https://documentation.ubuntu.com/aws/en/latest/aws-how-to/instances/find-ubuntu-images/
"""

EXAMPLES = r"""
- name: Newest Ubuntu 24.04 images for both architectures in two regions
  bacalhau.aws_spot.ami_arch_lookup:
    regions: [us-east-1, eu-west-1]
  register: ubuntu

- name: Use the arm64 image of eu-west-1
  ansible.builtin.debug:
    msg: "{{ ubuntu.images['eu-west-1'].arm64.image_id }}"

- name: Pair instance types with images, failing early on a type not offered somewhere
  bacalhau.aws_spot.ami_arch_lookup:
    regions: [us-east-1, eu-central-1]
    instance_types: [t3.small, t4g.small, c7g.large]
    ubuntu_release: "22.04"
  register: lookup

- name: Check that a pinned image fits the instance types (fails on an architecture mismatch)
  bacalhau.aws_spot.ami_arch_lookup:
    regions: [us-east-1]
    instance_types: [m7g.large]
    image_ids:
      us-east-1: ami-0123456789abcdef0
"""

RETURN = r"""
images:
  description: Per region, per architecture, the image found (or given).
  returned: always
  type: dict
  contains:
    image_id:
      description: The AMI id.
      type: str
      sample: ami-0e86e20dae9224db8
    name:
      description: The image name.
      type: str
      sample: ubuntu/images/hvm-ssd-gp3/ubuntu-noble-24.04-arm64-server-20250115
    architecture:
      description: The image's architecture.
      type: str
      sample: arm64
    creation_date:
      description: When the image was created.
      type: str
      sample: "2025-01-15T00:00:00.000Z"
    owner_id:
      description: The account that owns the image (Canonical is 099720109477).
      type: str
      sample: "099720109477"
    source:
      description: How the image was found, V(ssm), V(describe_images) or V(given) (from O(image_ids)).
      type: str
      sample: ssm
  sample:
    us-east-1:
      x86_64: {image_id: ami-0a0e5d9c7acc336f1, name: "ubuntu/images/hvm-ssd-gp3/ubuntu-noble-24.04-amd64-server-20250115",
               architecture: x86_64, creation_date: "2025-01-15T00:00:00.000Z", owner_id: "099720109477", source: ssm}
instance_types:
  description: Per region, per instance type, its architecture and the image to launch it with.
  returned: when O(instance_types) is given
  type: dict
  sample:
    us-east-1:
      t4g.small: {architecture: arm64, image_id: ami-0c4e709339fa8521a}
"""

try:
    from botocore.exceptions import BotoCoreError
    from botocore.exceptions import ClientError
except ImportError:
    pass  # handled by AnsibleAWSModule

from ansible_collections.amazon.aws.plugins.module_utils.modules import AnsibleAWSModule

from ansible_collections.bacalhau.aws_spot.plugins.module_utils._placement.images import lookup
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._aws.common import AwsSpotError


def main() -> None:
    argument_spec = dict(
        regions=dict(type="list", elements="str", required=True),
        architectures=dict(type="list", elements="str", choices=["x86_64", "arm64"], default=["x86_64", "arm64"]),
        ubuntu_release=dict(type="str", choices=["24.04", "22.04"], default="24.04"),
        instance_types=dict(type="list", elements="str"),
        image_ids=dict(type="dict"),
    )
    module = AnsibleAWSModule(argument_spec=argument_spec, supports_check_mode=True)
    try:
        result = lookup(
            module,
            regions=module.params["regions"],
            architectures=module.params["architectures"],
            release=module.params["ubuntu_release"],
            instance_types=module.params["instance_types"],
            image_ids=module.params["image_ids"],
        )
    except AwsSpotError as exc:
        module.fail_json(msg=str(exc), **exc.details)
    except (BotoCoreError, ClientError) as exc:  # pylint: disable=duplicate-except
        module.fail_json_aws(exc, msg="Could not look up images and instance types")
    module.exit_json(changed=False, **result)


if __name__ == "__main__":
    main()
