# -*- coding: utf-8 -*-
# Copyright: bacalhau.aws_spot contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What the deletion of one region shares: its context, the rules every step keeps (NotFound is
gone, a failure fails its own resources only), and the look-ups the steps use. Private.
"""

from __future__ import annotations

import concurrent.futures
import functools
from dataclasses import dataclass
from dataclasses import field
from typing import Any
from typing import Callable
from typing import Iterable
from typing import List
try:
    import botocore.exceptions
except ImportError:
    pass  # AnsibleAWSModule reports a missing botocore for us
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._aws.common import MANAGED_BY_KEY
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._aws.common import MANAGED_BY_VALUE
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._aws.common import error_code
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._aws.common import error_text
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._aws.common import paginate
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._aws.common import retried
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._aws.common import together
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._aws.common import waiter
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._deletion.discover import describe_by_values
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._deletion.discover import describer
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._deletion.spec import ACTION_FAILED
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._deletion.spec import ACTION_WOULD_DELETE
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._deletion.spec import IN_USE_CODES
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._deletion.spec import NOT_FOUND_CODES
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._deletion.spec import Resource


describe_network_interfaces = describer("network_interfaces")


describe_security_groups = describer("security_groups")


describe_volumes = describer("volumes")


# Waiting for instances to terminate and for detached ENIs/volumes.
WAIT_DELAY = 2  # a termination takes 30-90 s on AWS: found done 1 s late on average


WAIT_MAX_ATTEMPTS = 300  # 10 minutes


# Deletes of one type in one region run at once, this many.
DELETE_WORKERS = 8


TERMINATE_BATCH = 1000


ALREADY_GONE = "already gone"


WENT_WITH_ITS_INSTANCE = "went with its instance"


TERMINATING = "terminating (not waited for)"


NOT_OURS = f"not tagged {MANAGED_BY_KEY}={MANAGED_BY_VALUE}"


@dataclass
class Survey:
    """Round D's answers: what each kind of look-up found, and the error of each that failed."""

    found: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)

    def enis(self) -> dict[str, dict[str, Any]]:
        """Every ENI found (in our VPCs, of our groups and subnets, ours), by id."""
        return {eni["NetworkInterfaceId"]: eni for eni in self.found.get("enis", [])}

    def volumes(self) -> dict[str, dict[str, Any]]:
        return {vol["VolumeId"]: vol for vol in self.found.get("volumes", [])}


@dataclass
class RegionContext:
    """One region's client and what has happened there so far."""

    client: Any
    region: str
    resources: list[Resource]
    terminated: set[str] = field(default_factory=set)  # instances known to be terminated
    terminating: list[str] = field(default_factory=list)  # ours, TerminateInstances accepted (round B)
    fleet_instances: list[str] = field(default_factory=list)  # of the fleets deleted in round B
    survey: Survey = field(default_factory=Survey)  # round D
    users: dict[str, list[str]] = field(default_factory=dict)  # resource id -> what still uses it

    def of_type(self, resource_type: str) -> list[Resource]:
        return [res for res in self.resources if res.type == resource_type]

    def pending(self, resource_type: str) -> list[Resource]:
        """Ours of this type not deleted and not failed yet."""
        return [res for res in self.of_type(resource_type) if res.action == ACTION_WOULD_DELETE]

    def ids(self, resource_type: str) -> set[str]:
        return {res.id for res in self.of_type(resource_type)}

    def going(self, resource_type: str) -> set[str]:
        """Ours of this type that are gone or still to be deleted: all but the failed."""
        return {res.id for res in self.of_type(resource_type) if res.action != ACTION_FAILED}


# A type's deletes in one round: the region, and its resources still to be deleted.
# (typing.List: an alias is evaluated at import, on whatever Python the module runs.)
Deleter = Callable[[RegionContext, List[Resource]], None]


def _is_gone(exc: BaseException) -> bool:
    return error_code(exc) in NOT_FOUND_CODES


def attempt(res: Resource, call: Callable[[], Any], dependency: bool = False) -> bool:
    """Delete ``res`` with ``call`` (a call without ``aws_retry``: this is its one retry layer,
    the ``in_use`` policy with ``dependency``, else the default one); record the outcome.
    True when it is gone."""
    try:
        if dependency:
            retried(call, "in_use", res.region, also=IN_USE_CODES)()
        else:
            retried(call, "default", res.region)()
    except botocore.exceptions.ClientError as exc:
        if _is_gone(exc):
            res.deleted(ALREADY_GONE)
            return True
        res.failed(error_text(exc))
        return False
    except botocore.exceptions.BotoCoreError as exc:
        res.failed(str(exc))
        return False
    res.deleted()
    return True


def ignore_gone(call: Callable[[], Any], dependency: bool = False) -> None:
    """A preparatory step (detach, disassociate, revoke; a call without ``aws_retry``, retried
    here, under the ``in_use`` policy with ``dependency``) for which NotFound is fine."""
    try:
        if dependency:
            retried(call, "in_use", also=IN_USE_CODES)()
        else:
            retried(call)()
    except botocore.exceptions.ClientError as exc:
        if not _is_gone(exc):
            raise


def for_each(items: Iterable[Resource], work: Callable[[Resource], None]) -> None:
    """``work`` on every item at once (bounded); an exception fails only its item."""
    items = list(items)
    if not items:
        return

    def guarded(res: Resource) -> None:
        try:
            work(res)
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            res.failed(error_text(exc))

    if len(items) == 1:
        guarded(items[0])
        return
    with concurrent.futures.ThreadPoolExecutor(max_workers=min(DELETE_WORKERS, len(items))) as pool:
        list(pool.map(guarded, items))


def guard(items: list[Resource], work: Callable[[], None]) -> None:
    """Run ``work`` for ``items``; if it blows up, those of them not done yet fail with its error."""
    try:
        work()
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
        for res in items:
            if res.action == ACTION_WOULD_DELETE:
                res.failed(error_text(exc))


def run_round(ctx: RegionContext, deleters: dict[str, Deleter], only: Callable[[Resource], bool] | None = None) -> None:
    """One round: every type's deleter at once, each on its resources still to be deleted (``only`` those)."""
    work = []
    for resource_type, deleter in deleters.items():
        items = [res for res in ctx.pending(resource_type) if only is None or only(res)]
        if items:
            work.append(functools.partial(guard, items, functools.partial(deleter, ctx, items)))
    together(*work)


def blocked(res: Resource, users: list[str]) -> None:
    shown = ", ".join(users[:10]) + (f" and {len(users) - 10} more" if len(users) > 10 else "")
    res.failed(
        f"DependencyViolation: {res.id} is still used by {shown}; "
        "remove or detach those (they are not ours, or could not be deleted) and run again"
    )


def _batches(ids: list[str]) -> list[list[str]]:
    return [ids[start:start + TERMINATE_BATCH] for start in range(0, len(ids), TERMINATE_BATCH)]


def _instance_of(eni: dict[str, Any]) -> str | None:
    return (eni.get("Attachment") or {}).get("InstanceId")


def _eni_label(eni: dict[str, Any]) -> str:
    instance = _instance_of(eni)
    return f"{eni['NetworkInterfaceId']} (instance {instance})" if instance else eni["NetworkInterfaceId"]


def _all_instances(client: Any, filters: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Instances in any state (the discovery describe leaves terminated ones out)."""
    reservations = paginate(client, "describe_instances", "Reservations", Filters=filters)
    return [instance for reservation in reservations for instance in reservation.get("Instances", [])]


def _instance_states(ctx: RegionContext, ids: list[str]) -> dict[str, str]:
    """Instance id -> state; the terminated ones also go into ``ctx.terminated``."""
    instances = describe_by_values(_all_instances, ctx.client, "instance-id", ids)
    states = {inst["InstanceId"]: inst["State"]["Name"] for inst in instances}
    ctx.terminated.update(instance_id for instance_id, state in states.items() if state == "terminated")
    return states


def _wait(ctx: RegionContext, waiter_name: str, **params: Any) -> None:
    waiter(ctx.client, waiter_name).wait(WaiterConfig={"Delay": WAIT_DELAY, "MaxAttempts": WAIT_MAX_ATTEMPTS}, **params)


def _waited(ctx: RegionContext, waiter_name: str, **params: Any) -> str | None:
    """``_wait``, returning why it gave up (None when it did not)."""
    try:
        _wait(ctx, waiter_name, **params)
    except botocore.exceptions.WaiterError as exc:
        return str(exc)
    return None


def _attached_elsewhere(ctx: RegionContext, res: Resource, instance_id: str | None, what: str) -> None:
    if instance_id is None:
        res.failed(f"{res.id} is in use (not by an instance); detach it and run again")
    elif instance_id in ctx.ids("instances"):
        res.failed(f"{res.id} is attached to instance {instance_id}, which is ours but was not terminated; {what}")
    else:
        res.failed(
            f"{res.id} is attached to instance {instance_id}, which is {NOT_OURS}; "
            f"{what} (this module never touches it)"
        )
