# -*- coding: utf-8 -*-
# Copyright: bacalhau.aws_spot contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Shared plumbing of bacalhau.aws_spot's modules. Private: not a public API.

What lives here is what every module needs the same way: our tag keys, tag
specifications for create calls, describe filters that only ever match what we
made, retrying clients per region, and running work for many regions at once.

Helpers raise :class:`AwsSpotError` (or let botocore errors through); only a
module's ``main()`` turns them into ``fail_json``/``fail_json_aws``.
"""

from __future__ import annotations

import concurrent.futures
import threading
from typing import Any, Callable, Iterable, TypeVar

try:
    import boto3
    import botocore.config
except ImportError:
    pass  # AnsibleAWSModule reports a missing boto3/botocore for us

from ansible_collections.amazon.aws.plugins.module_utils.botocore import get_aws_connection_info
from ansible_collections.amazon.aws.plugins.module_utils.retries import AWSRetry
from ansible_collections.amazon.aws.plugins.module_utils.retries import RetryingBotoClientWrapper
from ansible_collections.amazon.aws.plugins.module_utils.tagging import ansible_dict_to_boto3_tag_list

MANAGED_BY_KEY = "bacalhau:managed-by"
MANAGED_BY_VALUE = "bacalhau.aws_spot"
CLUSTER_KEY = "bacalhau:cluster"
ROLE_KEY = "bacalhau:role"

# How many regions are worked on at once. AWS rate limits are per region, so
# regions in parallel do not compete for the same budget.
MAX_REGION_WORKERS = 16

# Throttling and transient errors: jittered exponential backoff (amazon.aws's
# AWSRetry already knows RequestLimitExceeded, Throttling, 5xx "Unavailable"...).
RETRY = AWSRetry.jittered_backoff(retries=10, delay=1, max_delay=30)

T = TypeVar("T")


class AwsSpotError(Exception):
    """An error with a message meant for the user, optionally about one region."""

    def __init__(self, message: str, region: str | None = None, details: dict[str, Any] | None = None):
        super().__init__(message)
        self.message = message
        self.region = region
        self.details = details or {}

    def __str__(self) -> str:
        return f"{self.region}: {self.message}" if self.region else self.message


# --------------------------------------------------------------------------- tags
def managed_tags(
    cluster_name: str | None = None,
    name: str | None = None,
    role: str | None = None,
    extra: dict[str, str] | None = None,
) -> dict[str, str]:
    """The tags every resource we create carries (user tags first, ours win)."""
    tags: dict[str, str] = dict(extra or {})
    tags[MANAGED_BY_KEY] = MANAGED_BY_VALUE
    if cluster_name:
        tags[CLUSTER_KEY] = cluster_name
    if role:
        tags[ROLE_KEY] = role
    if name:
        tags["Name"] = name
    return tags


def tag_specifications(resource_types: str | Iterable[str], tags: dict[str, str]) -> list[dict[str, Any]]:
    """``TagSpecifications`` for a create call, so a resource is never untagged."""
    if isinstance(resource_types, str):
        resource_types = [resource_types]
    tag_list = ansible_dict_to_boto3_tag_list(tags)
    return [{"ResourceType": rtype, "Tags": tag_list} for rtype in resource_types]


def managed_filters(
    cluster_name: str | None = None,
    role: str | None = None,
    extra_tags: dict[str, str] | None = None,
) -> list[dict[str, Any]]:
    """Describe filters matching only resources this collection made."""
    wanted = dict(extra_tags or {})
    wanted[MANAGED_BY_KEY] = MANAGED_BY_VALUE
    if cluster_name:
        wanted[CLUSTER_KEY] = cluster_name
    if role:
        wanted[ROLE_KEY] = role
    return [{"Name": f"tag:{key}", "Values": [value]} for key, value in sorted(wanted.items())]


def is_managed(tags: dict[str, str], cluster_name: str | None = None) -> bool:
    """Second line of defence: check the tags ourselves before touching a resource."""
    if tags.get(MANAGED_BY_KEY) != MANAGED_BY_VALUE:
        return False
    return cluster_name is None or tags.get(CLUSTER_KEY) == cluster_name


# --------------------------------------------------------------------------- clients
_SESSION_LOCK = threading.Lock()
_SESSIONS: dict[Any, Any] = {}


def _session(profile: str | None) -> Any:
    """One boto3 session per profile for the whole module run.

    ``module.client()`` builds a new session for every client, which loads the
    service models again (about a quarter of a second each); with many regions that
    dominated a run. botocore sessions are not safe to create clients from in
    parallel, so callers hold ``_SESSION_LOCK``.
    """
    if profile not in _SESSIONS:
        _SESSIONS[profile] = boto3.session.Session(profile_name=profile)
    return _SESSIONS[profile]


def region_client(module: Any, service: str, region: str, retries: bool = True,
                  config: "botocore.config.Config | None" = None) -> Any:
    """A client for one region, with the module's credentials, endpoint and botocore config.

    With ``retries``, calls made with ``aws_retry=True`` back off on throttling and
    transient errors. ``config`` is merged over the module's (for example
    :func:`no_retry_config` for launches).
    """
    _region, endpoint_url, params = get_aws_connection_info(module)
    params = dict(params)
    profile = params.pop("profile_name", None)
    merged = botocore.config.Config(user_agent_extra="bacalhau.aws_spot")
    for extra in (params.pop("aws_config", None), params.pop("config", None), config):
        if extra:
            merged = merged.merge(extra if isinstance(extra, botocore.config.Config) else botocore.config.Config(**extra))
    with _SESSION_LOCK:
        client = _session(profile).client(service, region_name=region, endpoint_url=endpoint_url,
                                          config=merged, **params)
        _prime(client)
    return RetryingBotoClientWrapper(client, RETRY) if retries else client


def _prime(client: Any) -> None:
    """Load the client's paginator and waiter models now, once, under the session lock.

    botocore loads them on a client's first ``get_paginator``/``get_waiter``; when a
    dozen threads do that at the same moment, its loader's cache is still empty for all
    of them and each one walks botocore's data directories (seen: seconds of CPU in a
    5-region run, spreading calls meant to go out together over several round trips).
    """
    try:
        client.can_paginate("describe_instances")  # the paginator model (any operation name does)
        _names = client.waiter_names  # the waiter model
    except Exception:  # pylint: disable=broad-except
        pass  # a service without paginators or waiters has nothing to load


def known_region_names(module: Any, service: str = "ec2") -> set[str]:
    """Every region botocore's own endpoint data knows for a service (no API call)."""
    profile = get_aws_connection_info(module)[2].get("profile_name")
    with _SESSION_LOCK:
        session = _session(profile)
        known: set[str] = set()
        for partition in session.get_available_partitions():
            known.update(session.get_available_regions(service, partition_name=partition))
    return known


def no_retry_config() -> "botocore.config.Config":
    """botocore config that makes exactly one attempt per call.

    EC2 answers InsufficientInstanceCapacity with HTTP 500, which botocore's
    default policy retries up to 4 times with backoff; a launch that wants to fall
    back to the next zone or type at once uses this and retries throttling itself.
    """
    return botocore.config.Config(retries={"total_max_attempts": 1, "mode": "standard"})


# --------------------------------------------------------------------------- concurrency
def run_per_region(
    regions: Iterable[str],
    work: Callable[[str], T],
    max_workers: int = MAX_REGION_WORKERS,
) -> tuple[dict[str, T], dict[str, BaseException]]:
    """Run ``work(region)`` for every region at once.

    Returns ``(results, errors)``, both keyed by region, so that one failing region
    never hides what happened in the others.
    """
    regions = list(dict.fromkeys(regions))
    results: dict[str, T] = {}
    errors: dict[str, BaseException] = {}
    if not regions:
        return results, errors
    workers = max(1, min(max_workers, len(regions)))
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="region") as pool:
        futures = {pool.submit(work, region): region for region in regions}
        for future in concurrent.futures.as_completed(futures):
            region = futures[future]
            try:
                results[region] = future.result()
            except Exception as exc:  # pylint: disable=broad-except
                errors[region] = exc
    return results, errors


def together(*calls: Callable[[], Any] | None) -> list[Any]:
    """Independent calls of one region in one round trip of wall time.

    ``None`` entries are skipped (handy for calls that only sometimes apply); the
    results of the others come back in order. The first exception is re-raised once
    every call has ended.
    """
    todo = [c for c in calls if c is not None]
    if len(todo) <= 1:
        return [c() for c in todo]
    with concurrent.futures.ThreadPoolExecutor(max_workers=len(todo), thread_name_prefix="together") as pool:
        futures = [pool.submit(c) for c in todo]
        concurrent.futures.wait(futures)
        return [f.result() for f in futures]


def error_text(exc: BaseException) -> str:
    """One line for a result or a message: botocore's code and message, or str(exc)."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict) and "Error" in response:
        err = response["Error"]
        return f"{err.get('Code', 'Error')}: {err.get('Message', '')}".strip()
    return str(exc)


def error_code(exc: BaseException) -> str | None:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return response.get("Error", {}).get("Code")
    return None


@RETRY
def paginate(client: Any, operation: str, result_key: str, **kwargs: Any) -> list[dict[str, Any]]:
    """Every item under ``result_key`` of every page of a describe call, retried as a whole.

    (Paginators bypass the retrying client wrapper, so the retry sits here.)
    """
    return client.get_paginator(operation).paginate(**kwargs).build_full_result().get(result_key, [])


# --------------------------------------------------------------------------- regions
def region_opt_in(ec2: Any) -> dict[str, str]:
    """Region name -> opt-in status, for every region the partition knows."""
    regions = ec2.describe_regions(AllRegions=True, aws_retry=True)["Regions"]
    return {r["RegionName"]: r.get("OptInStatus", "opt-in-not-required") for r in regions}


def enabled_region_names(ec2: Any) -> list[str]:
    """Every region enabled for the account, sorted."""
    return sorted(name for name, status in region_opt_in(ec2).items() if status != "not-opted-in")


def check_regions(ec2: Any, regions: list[str]) -> None:
    """Refuse unknown regions and regions not enabled for the account, all in one message."""
    known = region_opt_in(ec2)
    unknown = [r for r in regions if r not in known]
    disabled = [r for r in regions if known.get(r) == "not-opted-in"]
    problems = []
    if unknown:
        problems.append(f"unknown region(s): {', '.join(unknown)}")
    if disabled:
        problems.append(
            f"region(s) not enabled for this account: {', '.join(disabled)} "
            "(enable them under Account > AWS Regions, or leave them out)"
        )
    if problems:
        raise AwsSpotError("; ".join(problems) + ".")
