# -*- coding: utf-8 -*-
# Copyright: bacalhau.aws_spot contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A cluster's instances in one region: find, launch with fallback, terminate. Private.

Launch strategy
    One ``RunInstances`` per attempt, ``MinCount=1, MaxCount=<missing>``: when the
    capacity is there EC2 launches them all in that one call; when it has only some,
    it launches what it can and the rest goes on to the next attempt. Attempts run
    through the (instance type, availability zone) pairs in the user's order of
    preference - every zone of the first type, then every zone of the next type -
    skipping pairs the region does not offer. Capacity-kind errors move on to the
    next zone; quota-kind errors (regional, per type family) move on to the next
    type. Every attempt is reported.

    botocore makes exactly one HTTP attempt per call (EC2 answers
    InsufficientInstanceCapacity with HTTP 500, which botocore would retry);
    throttling, transient errors and lost answers are retried by the default policy
    (``_common.retried``) with the same ``ClientToken``, so a retried launch never
    launches twice: EC2 answers the launch that happened again.

    Why not EC2 Fleet ``instant``: it would cover several types and zones in one
    call, but its errors come back per override inside a successful response and
    the emulator (moto) only ever uses the first override, so the fallback could
    not be tested offline. RunInstances behaves the same in both.

Scale down
    The surplus is chosen among the least preferred first: instance types the
    user no longer lists, then later types, then later zones, newest first.
"""

from __future__ import annotations

import email.utils
import functools
import uuid
from typing import Any

from ansible_collections.amazon.aws.plugins.module_utils.tagging import boto3_tag_list_to_ansible_dict

from ansible_collections.bacalhau.aws_spot.plugins.module_utils._placement.pools import FALLBACK_TAG
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._placement.pools import FALLBACK_VALUE
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._aws.common import CLUSTER_KEY
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._aws.common import ROLE_KEY
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._aws.common import error_code
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._aws.common import error_text
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._aws.common import is_managed
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._aws.common import managed_filters
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._aws.common import managed_tags
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._aws.common import paginate
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._aws.common import tag_specifications
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._aws.common import together
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._aws.common import waiter as retrying_waiter
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._cluster.spec import ClusterSpec
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._cluster.spec import RegionSpec

try:
    import botocore.exceptions
except ImportError:
    pass  # AnsibleAWSModule reports a missing botocore

LIVE_STATES = ("pending", "running")
# Everything that is not (being) terminated: what `state: absent` must terminate.
NOT_GONE_STATES = ("pending", "running", "stopping", "stopped")

# No capacity for this type in this zone (or at this price) now: try the next zone.
CAPACITY_ERRORS = frozenset({
    "InsufficientInstanceCapacity",
    "InsufficientHostCapacity",
    "InsufficientReservedInstanceCapacity",
    "InsufficientCapacity",
    "InsufficientCapacityOnHost",
    "SpotMaxPriceTooLow",
    "Unsupported",  # type not supported in this zone
})
# A regional quota (per type family): other zones will not help, another type may.
QUOTA_ERRORS = frozenset({
    "MaxSpotInstanceCountExceeded",
    "InstanceLimitExceeded",
    "VcpuLimitExceeded",
    "SpotInstanceCountExceeded",
})
ROOT_DEVICE = "/dev/sda1"  # Canonical's Ubuntu images boot from /dev/sda1
# Seconds between a waiter's polls (the first is at once). A spot launch takes 10-60 s to be
# running and a termination 30-90 s: a 2 s poll finds them done 1 s late on average (5 s: 2.5 s),
# for one DescribeInstances per region every 2 s, far below EC2's describe rate limits.
WAIT_DELAY = 2


# --------------------------------------------------------------------------- describes
def _paginate_instances(ec2: Any, **kwargs: Any) -> list[dict[str, Any]]:
    return [i for r in paginate(ec2, "describe_instances", "Reservations", **kwargs) for i in r.get("Instances", [])]


def describe_cluster_instances(ec2: Any, cluster: str) -> list[dict[str, Any]]:
    """Every not-terminated instance of the cluster here, all roles: one call."""
    filters = managed_filters(cluster) + [{"Name": "instance-state-name", "Values": list(NOT_GONE_STATES)}]
    found = _paginate_instances(ec2, Filters=filters)
    return [i for i in found if is_managed(tags_of(i), cluster)]


def describe_cluster_instances_seen(ec2: Any, cluster: str) -> tuple[list[dict[str, Any]], Any]:
    """Every instance of the cluster here that EC2 still lists, in any state (the terminated
    ones for about an hour, with their ``StateReason``: the pool history's evidence), and the
    time EC2 answered (its ``Date`` header, a datetime or None): one call. What counts as live
    is unchanged: callers keep :data:`NOT_GONE_STATES` for the plan."""
    answered: list[Any] = []

    def _date(http_response: Any = None, parsed: Any = None, **_kwargs: Any) -> None:
        headers = ((parsed or {}).get("ResponseMetadata") or {}).get("HTTPHeaders") or {}
        if headers.get("date"):
            answered.append(headers["date"])

    events = getattr(getattr(ec2, "meta", None), "events", None)
    if events is not None:
        events.register("after-call.ec2.DescribeInstances", _date, unique_id="bacalhau-aws-spot-date")
    try:
        found = _paginate_instances(ec2, Filters=managed_filters(cluster))
    finally:
        if events is not None:
            events.unregister("after-call.ec2.DescribeInstances", unique_id="bacalhau-aws-spot-date")
    when = None
    if answered:
        try:
            when = email.utils.parsedate_to_datetime(answered[-1])
        except (TypeError, ValueError):
            when = None
    return [i for i in found if is_managed(tags_of(i), cluster)], when


def describe_instances_by_id(ec2: Any, instance_ids: list[str]) -> list[dict[str, Any]]:
    if not instance_ids:
        return []
    return _paginate_instances(ec2, InstanceIds=list(instance_ids))


def tags_of(instance: dict[str, Any]) -> dict[str, str]:
    return boto3_tag_list_to_ansible_dict(instance.get("Tags") or [])


def role_of(instance: dict[str, Any]) -> str | None:
    return tags_of(instance).get(ROLE_KEY)


def is_live(instance: dict[str, Any]) -> bool:
    return instance.get("State", {}).get("Name") in LIVE_STATES


def view(instance: dict[str, Any], region: str, architectures: dict[str, str] | None = None) -> dict[str, Any]:
    """The snake_case shape of one instance in the module's result."""
    tags = tags_of(instance)
    launch_time = instance.get("LaunchTime")
    return {
        "instance_id": instance["InstanceId"],
        "region": region,
        "availability_zone": instance.get("Placement", {}).get("AvailabilityZone"),
        "instance_type": instance.get("InstanceType"),
        "architecture": instance.get("Architecture") or (architectures or {}).get(instance.get("InstanceType")),
        "image_id": instance.get("ImageId"),
        "lifecycle": instance.get("InstanceLifecycle") or "on-demand",
        "state": instance.get("State", {}).get("Name"),
        "public_ip": instance.get("PublicIpAddress"),
        "private_ip": instance.get("PrivateIpAddress"),
        "public_dns_name": instance.get("PublicDnsName") or None,
        "private_dns_name": instance.get("PrivateDnsName") or None,
        "role": tags.get(ROLE_KEY),
        "cluster": tags.get(CLUSTER_KEY),
        "launch_time": launch_time.isoformat() if hasattr(launch_time, "isoformat") else launch_time,
        "tags": tags,
    }


# --------------------------------------------------------------------------- launching
def candidates(
    region: RegionSpec, zones: list[str], offered: dict[str, set[str]],
) -> list[tuple[str, str]]:
    """(instance type, zone) pairs to try, in order, leaving out pairs that are not offered."""
    wanted_zones = region.availability_zones or zones
    pairs = []
    for itype in region.instance_types:
        for zone in wanted_zones:
            if offered is None or zone in offered.get(itype, set()):
                pairs.append((itype, zone))
    return pairs


def launch_parameters(
    spec: ClusterSpec, region: RegionSpec, itype: str, image_id: str, subnet_id: str,
    group_id: str, count: int, root_device: str = ROOT_DEVICE, market: str | None = None,
    extra_tags: dict[str, str] | None = None,
) -> dict[str, Any]:
    """``market``: V(spot) or V(on-demand) for this launch (default: the spec's, spot first);
    ``extra_tags``: e.g. the on-demand stand-in's tag."""
    market = market or ("on-demand" if spec.market == "on-demand" else "spot")
    tags = managed_tags(spec.cluster_name, name=f"{spec.prefix}-{spec.role}", role=spec.role,
                        extra={**spec.tags, **spec.instance_tags, **(extra_tags or {})})
    resource_types = ["instance", "volume", "network-interface"]
    params: dict[str, Any] = {
        "ImageId": image_id,
        "InstanceType": itype,
        "MinCount": 1,
        "MaxCount": count,
        # The address is asked for here, not through the subnet's MapPublicIpOnLaunch, so a
        # launch does not wait for that attribute (it is set as well, for other launches).
        "NetworkInterfaces": [{
            "DeviceIndex": 0, "SubnetId": subnet_id, "Groups": [group_id],
            "AssociatePublicIpAddress": True, "DeleteOnTermination": True,
        }],
        # IMDSv2 only, hop limit 1: a metadata answer cannot cross one more network hop, so
        # containers on Docker's bridge network (one hop behind the host) cannot fetch the
        # instance's credentials; Bacalhau itself runs on the host and needs no hop more.
        "MetadataOptions": {"HttpTokens": "required", "HttpEndpoint": "enabled", "HttpPutResponseHopLimit": 1},
        "BlockDeviceMappings": [{
            "DeviceName": root_device,
            # Encrypted with kms_key_id, or the account's EBS default key when it is unset.
            "Ebs": {"VolumeSize": spec.root_volume_size, "VolumeType": "gp3", "Encrypted": True,
                    "DeleteOnTermination": True,
                    **({"KmsKeyId": spec.kms_key_id} if spec.kms_key_id else {})},
        }],
        "ClientToken": uuid.uuid4().hex,
    }
    if spec.key_name:
        params["KeyName"] = spec.key_name
    if spec.user_data:
        params["UserData"] = spec.user_data  # boto3 base64-encodes it
    if market == "spot":
        options: dict[str, Any] = {"SpotInstanceType": "one-time", "InstanceInterruptionBehavior": "terminate"}
        if region.max_price:
            options["MaxPrice"] = region.max_price
        params["InstanceMarketOptions"] = {"MarketType": "spot", "SpotOptions": options}
        resource_types.append("spot-instances-request")
    params["TagSpecifications"] = tag_specifications(resource_types, tags)
    return params


def run_instances(ec2: Any, params: dict[str, Any]) -> list[dict[str, Any]]:
    """One launch; throttling and lost answers are retried (same ClientToken), capacity errors are not."""
    return ec2.run_instances(aws_retry=True, **params).get("Instances", [])


def launch(
    ec2: Any,
    spec: ClusterSpec,
    region: RegionSpec,
    pairs: list[tuple[str, str]],
    images: dict[str, str],
    subnets: dict[str, str],
    group_id: str,
    missing: int,
    root_device: str = ROOT_DEVICE,
    market: str | None = None,
    extra_tags: dict[str, str] | None = None,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Launch ``missing`` instances, falling back over ``pairs``. Returns (instances, attempts)."""
    market = market or ("on-demand" if spec.market == "on-demand" else "spot")
    launched: list[dict[str, Any]] = []
    attempts: list[dict[str, Any]] = []
    skip_types: set[str] = set()
    for itype, zone in pairs:
        remaining = missing - len(launched)
        if remaining <= 0:
            break
        if itype in skip_types:
            continue
        params = launch_parameters(spec, region, itype, images[itype], subnets[zone], group_id, remaining, root_device,
                                   market=market, extra_tags=extra_tags)
        attempt: dict[str, Any] = {"instance_type": itype, "availability_zone": zone, "requested": remaining,
                                   "launched": 0, "error_code": None, "error": None, "market": market}
        attempts.append(attempt)
        try:
            got = run_instances(ec2, params)
        except botocore.exceptions.ClientError as exc:
            code = error_code(exc)
            attempt.update(error_code=code, error=error_text(exc))
            if code in QUOTA_ERRORS:
                skip_types.add(itype)
                continue
            if code in CAPACITY_ERRORS:
                continue
            raise
        attempt["launched"] = len(got)
        launched.extend(got)
    return launched, attempts


def launch_over(
    ec2: Any,
    spec: ClusterSpec,
    region: RegionSpec,
    groups: list[tuple[int, list[tuple[str, str]]]],
    pairs: list[tuple[str, str]],
    images: dict[str, str],
    subnets: dict[str, str],
    group_id: str,
    missing: int,
    root_device: str = ROOT_DEVICE,
    market: str | None = None,
    extra_tags: dict[str, str] | None = None,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Launch ``missing`` instances as ``groups`` say - ``(count, pairs)`` each, every group at
    once (one zone each when spreading; one group over every pair when packed) - then what
    they could not launch with :func:`launch` over the ``pairs`` no attempt found short."""
    if missing <= 0:
        return [], []
    groups = [(n, p) for n, p in groups if n > 0] or [(missing, pairs)]
    answers = together(*[functools.partial(launch, ec2, spec, region, group_pairs, images, subnets, group_id, count,
                                           root_device, market, extra_tags) for count, group_pairs in groups])
    launched = [i for got, _attempts in answers for i in got]
    attempts = [a for _got, tried in answers for a in tried]
    short = missing - len(launched)
    # what the groups could not launch goes over every other pair, in rank order, as a packed launch
    # would: the zones that had room, then the pools kept for last (cooling down), before the cluster
    # spills over to another region. One node's group is one zone: this is its zone fallback.
    spent = {(a["instance_type"], a["availability_zone"]) for a in attempts
             if a["error_code"] or a["launched"] < a["requested"]}
    quota = {a["instance_type"] for a in attempts if a["error_code"] in QUOTA_ERRORS}
    rest = [p for p in pairs if p not in spent and p[0] not in quota]
    if short > 0 and rest:
        got, tried = launch(ec2, spec, region, rest, images, subnets, group_id, short, root_device, market, extra_tags)
        launched += got
        attempts += tried
    return launched, attempts


# --------------------------------------------------------------------------- scaling down, waiting
def surplus(instances: list[dict[str, Any]], region: RegionSpec, zones: list[str], count: int,
            types: list[str] | None = None, drain: list[str] | None = None) -> list[dict[str, Any]]:
    """The instances to terminate to get down to ``count``: least preferred first (the ones
    asked to drain, then on-demand stand-ins for spot, before anything else)."""
    draining = set(drain or [])
    extra = len(instances) - count
    if extra <= 0:
        return []
    type_rank = {t: i for i, t in enumerate(region.instance_types or types or [])}
    zone_order = region.availability_zones or zones
    zone_rank = {z: i for i, z in enumerate(zone_order)}

    def badness(i: dict[str, Any]) -> tuple:
        launch_time = i.get("LaunchTime")
        stamp = launch_time.timestamp() if hasattr(launch_time, "timestamp") else 0
        return (
            i["InstanceId"] in draining,
            tags_of(i).get(FALLBACK_TAG) == FALLBACK_VALUE,
            type_rank.get(i.get("InstanceType"), len(type_rank)),
            zone_rank.get(i.get("Placement", {}).get("AvailabilityZone"), len(zone_rank)),
            stamp,
            i["InstanceId"],
        )

    return sorted(instances, key=badness, reverse=True)[:extra]


def terminate(ec2: Any, instance_ids: list[str]) -> None:
    for start in range(0, len(instance_ids), 1000):
        ec2.terminate_instances(aws_retry=True, InstanceIds=instance_ids[start:start + 1000])


def _wait(ec2: Any, waiter_name: str, instance_ids: list[str], timeout: int) -> dict[str, dict[str, Any]]:
    """Wait with botocore's waiter; return the instances as its last ``DescribeInstances`` saw them.

    The waiter polls ``DescribeInstances`` and drops the answers; what its last poll saw
    (the instances running, with their public addresses) is kept from botocore's
    ``after-call`` event, so nobody has to ask again: one round trip less per launch.
    """
    seen: dict[str, dict[str, Any]] = {}
    if not instance_ids:
        return seen
    wanted = set(instance_ids)

    def keep(parsed: dict[str, Any] | None = None, **_kwargs: Any) -> None:
        for reservation in (parsed or {}).get("Reservations") or []:
            for instance in reservation.get("Instances") or []:
                if instance.get("InstanceId") in wanted:
                    seen[instance["InstanceId"]] = instance

    delay = WAIT_DELAY
    waiter = retrying_waiter(ec2, waiter_name)
    events = ec2.meta.events
    events.register("after-call.ec2.DescribeInstances", keep)
    try:
        for start in range(0, len(instance_ids), 200):
            waiter.wait(
                InstanceIds=instance_ids[start:start + 200],
                WaiterConfig={"Delay": delay, "MaxAttempts": max(1, timeout // delay)},
            )
    finally:
        events.unregister("after-call.ec2.DescribeInstances", keep)
    return seen


def wait_running(ec2: Any, instance_ids: list[str], timeout: int) -> list[dict[str, Any]]:
    """Wait until running; the instances as last seen (with addresses), asked again only if unseen."""
    seen = _wait(ec2, "instance_running", instance_ids, timeout)
    missing = [i for i in instance_ids if i not in seen]
    if missing:
        seen.update({i["InstanceId"]: i for i in describe_instances_by_id(ec2, missing)})
    return [seen[i] for i in instance_ids if i in seen]


def wait_terminated(ec2: Any, instance_ids: list[str], timeout: int) -> None:
    _wait(ec2, "instance_terminated", instance_ids, timeout)
