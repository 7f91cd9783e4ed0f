# -*- coding: utf-8 -*-
# Copyright: bacalhau.aws_spot contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Delete what ``_deletion.discover`` found in one region, in as few round trips as it allows. Private.

:func:`delete_region` goes in rounds: the calls of a round go out at once, and a round
starts when the one before has answered (round A is the discovery). Each type's
record (``_deletion.spec.KINDS``) gives its round, its delete call, and its "already gone"
and "still in use" codes; the types whose deletes need more than that one call have a
deleter of their own here (:data:`DELETERS`).

* B. What needs nothing else gone first: cancel spot requests, delete fleets (after
  ``DescribeFleetInstances`` when a fleet's instances are not in its record),
  ``TerminateInstances``, delete key pairs and launch templates, release elastic IPs
  (disassociated first when associated). Persistent spot requests and ``maintain``
  fleets, which would launch again what is terminated, go in a round of their own
  before it (only when there are some: the one-time requests of ``spot_cluster``'s
  launches do not).
* C and D, at once. C: one waiter for every instance terminating, ours and the
  fleets'. D: every "who still uses it" describe, by the ids the discovery found
  (:func:`survey`), with the steps that need no check: revoke our groups' rules that
  reference groups, disassociate our route tables. None of D waits for C: what it
  finds attached to an instance that C then sees terminated is judged as the
  termination left it (an interface or volume deleted on termination went with it).
* E. The deletes: our ENIs and volumes, security groups, subnets, route tables;
  our internet gateways are detached (after C: EC2 refuses to detach a gateway from
  a VPC with public addresses still mapped).
* F. VPCs and internet gateways: a VPC's users are what round D found that is not
  ours, and what of ours round E could not delete.

Rare paths cost more: an ENI or volume kept after its instance terminated is
detached and waited for within round E, and an ENI attached to an instance we did
not terminate costs one ``DescribeInstances`` (is it terminated?) within round D.

The steps live by round: ``context`` (what a region's deletion shares, and the rules below),
``terminate`` (B, C), ``survey`` (D), ``detach`` (D's preparations, E, and the plain delete);
this file holds the rounds' tables (``DELETERS``, ``PREPARE``, ``ROUND_*``) and their order.

Rules every step keeps:

* NotFound means already gone (idempotent deletes).
* A resource that cannot be deleted gets ``action: failed`` and the AWS error, and
  the rest carries on; a step that blows up fails its own resources only.
* Each call has one retry policy (``_aws.common.RETRY_POLICIES``): deletes and detaches
  the ``in_use`` one, which also waits out ``DependencyViolation`` and the like (the
  records' ``in_use`` codes) for a while (AWS is eventually consistent after
  terminations, and our own ENIs go in the same round as the subnets and groups they
  are in), then reports it; every
  other call the ``default`` one (throttling, transient errors).
* A security group, subnet or VPC that something else still uses (network
  interfaces, foreign security groups referencing ours, subnets, ...) is reported
  with those users by id instead of tried. Real EC2 would refuse those deletes
  too; the emulator lets some of them through, and an explicit list is more useful
  than a bare ``DependencyViolation`` either way.
* Nothing that is not ours is ever modified: an ENI or volume attached to a
  foreign instance, or a security group referenced by a foreign one, is reported.
"""

from __future__ import annotations

import functools
from typing import Any
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._aws.common import together
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._deletion import events as _events
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._deletion.spec import KINDS
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._deletion.spec import Resource
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._deletion.context import Deleter
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._deletion.context import RegionContext
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._deletion.context import TERMINATING
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._deletion.context import guard
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._deletion.context import run_round
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._deletion.detach import _unless_used
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._deletion.detach import delete_network_interfaces
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._deletion.detach import delete_volumes
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._deletion.detach import detach_internet_gateways
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._deletion.survey import fail_held_network_interfaces
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._deletion.survey import fail_unchecked
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._deletion.survey import group_users
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._deletion.survey import subnet_users
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._deletion.survey import survey
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._deletion.survey import vpc_users
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._deletion.terminate import delete_ec2_fleets
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._deletion.terminate import delete_elastic_ips
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._deletion.terminate import delete_spot_instance_requests
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._deletion.terminate import replaces_instances
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._deletion.terminate import terminate_instances
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._deletion.terminate import wait_terminated


# The types whose deletes need more than their record's one call.
DELETERS: dict[str, Deleter] = {
    "spot_instance_requests": delete_spot_instance_requests,
    "ec2_fleets": delete_ec2_fleets,
    "instances": terminate_instances,
    "elastic_ips": delete_elastic_ips,
    "network_interfaces": delete_network_interfaces,
    "volumes": delete_volumes,
    "event_rules": _events.delete_event_rules,
    "sqs_queues": _events.delete_sqs_queues,
}


def _round(name: str) -> dict[str, Deleter]:
    """The deleters of the types whose record puts them in round ``name``."""
    return {kind.name: DELETERS.get(kind.name) or _unless_used(kind) for kind in KINDS if kind.round == name}


# Round B: what needs nothing else gone first.
ROUND_B = _round("B")


# Round E: what round D checked (and prepared).
ROUND_E = _round("E")


# Round E's steps before a delete in round F.
DETACH_E: dict[str, Deleter] = {"internet_gateways": detach_internet_gateways}


# Round F.
ROUND_F = _round("F")


def delete_region(client: Any, region: str, resources: list[Resource], wait: bool = True) -> RegionContext:
    """Delete ``resources`` (all of one region) in the rounds of this module's docstring.

    Without ``wait``, only round B: instances are asked to terminate and reported so
    (for ``resources`` that hold nothing else to delete afterwards).
    """
    ctx = RegionContext(client=client, region=region, resources=resources)
    run_round(ctx, ROUND_B, only=replaces_instances)  # before anything is terminated (only when there are some)
    run_round(ctx, ROUND_B)
    if not wait:
        for res in ctx.pending("instances"):
            if res.id in ctx.terminating:
                res.deleted(TERMINATING)
        return ctx
    _waited_for, ctx.survey = together(  # rounds C and D
        functools.partial(guard, ctx.pending("instances"), functools.partial(wait_terminated, ctx)),
        functools.partial(survey, ctx),
    )
    fail_unchecked(ctx)
    fail_held_network_interfaces(ctx)
    ctx.users = {**group_users(ctx), **subnet_users(ctx)}
    run_round(ctx, {**ROUND_E, **DETACH_E})
    ctx.users = vpc_users(ctx)
    run_round(ctx, ROUND_F)
    return ctx
