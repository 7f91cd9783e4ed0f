# -*- coding: utf-8 -*-
# Copyright: bacalhau.aws_spot contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Shared plumbing of bacalhau.aws_spot's modules. Private: not a public API.

What lives here is what every module needs the same way: our tag keys, tag
specifications for create calls, describe filters that only ever match what we
made, retrying clients per region, and running work for many regions at once.

amazon.aws's helpers are used where they do the same thing (tag specifications, filter
lists, tag lists, the retry loop, connection parameters). Ours stay where there is a
measured or structural reason, said where they are: the boto3 session kept for the
run and the primed models (:func:`_session`, :func:`_prime`: seconds of CPU in a
5-region run otherwise), and our describe/delete calls instead of amazon.aws's
``ec2.describe_*``/``delete_*`` helpers, which each carry a retry layer of their own
(``AWSRetry.jittered_backoff`` on every helper: it would nest with ours, and
``DependencyViolation`` could not be waited out without a second layer) and turn errors
into ``AnsibleEC2Error``, where the nuke's engine records AWS's error on each resource.

Helpers raise :class:`AwsSpotError` (or let botocore errors through); only a
module's ``main()`` turns them into ``fail_json``/``fail_json_aws``.
"""

from __future__ import annotations

import concurrent.futures
import functools
import threading
from typing import Any, Callable, Iterable, TypeVar

try:
    import boto3
    import botocore.config
    import botocore.exceptions
    import botocore.waiter
    from botocore import xform_name
    HAS_BOTOCORE = True
except ImportError:
    HAS_BOTOCORE = False  # AnsibleAWSModule reports a missing boto3/botocore for us

from ansible_collections.amazon.aws.plugins.module_utils.botocore import get_aws_connection_info
from ansible_collections.amazon.aws.plugins.module_utils.retries import AWSRetry
from ansible_collections.amazon.aws.plugins.module_utils.retries import RetryingBotoClientWrapper
from ansible_collections.amazon.aws.plugins.module_utils.ec2 import ansible_dict_to_boto3_filter_list
from ansible_collections.amazon.aws.plugins.module_utils.tagging import boto3_tag_specifications

MANAGED_BY_KEY = "bacalhau:managed-by"
MANAGED_BY_VALUE = "bacalhau.aws_spot"
CLUSTER_KEY = "bacalhau:cluster"
ROLE_KEY = "bacalhau:role"

# How many regions are worked on at once. AWS rate limits are per region, so
# regions in parallel do not compete for the same budget.
MAX_REGION_WORKERS = 16

# The most calls one client has in flight at once: the nuke's round of deletes (six
# types, up to _nuke_delete.DELETE_WORKERS = 8 each) or its 13 describes, spot_cluster's
# plan (about 13 describes). botocore's default pool keeps 10 connections and opens (then
# drops) one more for every call beyond that.
MAX_POOL_CONNECTIONS = 64

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
    """``TagSpecifications`` for a create call, so a resource is never untagged (amazon.aws's)."""
    types = [resource_types] if isinstance(resource_types, str) else list(resource_types)
    return boto3_tag_specifications(tags, types)


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
    return ansible_dict_to_boto3_filter_list({f"tag:{key}": value for key, value in sorted(wanted.items())})


def is_managed(tags: dict[str, str], cluster_name: str | None = None) -> bool:
    """Second line of defence: check the tags ourselves before touching a resource."""
    if tags.get(MANAGED_BY_KEY) != MANAGED_BY_VALUE:
        return False
    return cluster_name is None or tags.get(CLUSTER_KEY) == cluster_name


# --------------------------------------------------------------------------- retries
# One retry policy per call, and one layer of it: botocore's own retries are off on every
# client made here (``total_max_attempts: 1``), and a call is retried only by the policy it
# is made under (``aws_retry=True`` on a client of :func:`region_client`, :func:`paginate`,
# :func:`waiter`, :func:`retried`). Under steady throttling a call is therefore made at most
# ``attempts`` times, then fails with a message that names throttling and says what to do.
# The loop and the backoff are amazon.aws's (``AWSRetry.jittered_backoff``); what is added is
# the throttling codes of the JSON APIs (``ThrottlingException``: SSM) and lost connections,
# which botocore used to retry and amazon.aws's policy does not.
THROTTLING_CODES = frozenset({
    "RequestLimitExceeded", "Throttling", "ThrottlingException", "ThrottledException", "TooManyRequestsException",
    "RequestThrottled", "RequestThrottledException", "EC2ThrottledException", "SlowDown",
})
TRANSIENT_CODES = frozenset({
    "InternalError", "InternalFailure", "Unavailable", "ServiceUnavailable", "RequestTimeout",
    "RequestTimeoutException",
})
CONNECTION_LOST = "ConnectionLost"  # not an AWS code: the answer never came (reset, timeout)
# The policies, read at each call (tests shorten the delays here, and only here).
RETRY_POLICIES: dict[str, dict[str, Any]] = {
    # every call: throttling, AWS's transient errors, lost connections; about a minute at most
    "default": {"attempts": 10, "delay": 1.0, "max_delay": 30.0, "codes": ()},
    # the nuke's deletes and detaches: also the "still in use" codes they are given (the
    # types' records, _nuke_spec.IN_USE_CODES); about 45 s of waiting at most
    "in_use": {"attempts": 8, "delay": 2.0, "max_delay": 20.0, "codes": ()},
}
THROTTLING_HINT = (
    "throttled on all {attempts} attempts: the account's request rate for this API in {region} is used up, by "
    "this run or by other tools running against the same account and region. Wait a few minutes, run fewer of "
    "them at once or ask AWS for a higher rate limit, then run again"
)


class _Retry(AWSRetry):
    """amazon.aws's retry loop, also for the connection errors botocore would have retried."""

    base_class = (botocore.exceptions.ClientError, botocore.exceptions.ConnectionError,
                  botocore.exceptions.HTTPClientError) if HAS_BOTOCORE else type(None)

    @staticmethod
    def status_code_from_exception(error: BaseException) -> str:
        if isinstance(error, botocore.exceptions.ClientError):
            return error.response.get("Error", {}).get("Code", "")
        return CONNECTION_LOST

    @staticmethod
    def found(response_code: str, catch_extra_error_codes: Any = None) -> bool:
        return (response_code in THROTTLING_CODES or response_code in TRANSIENT_CODES
                or response_code == CONNECTION_LOST or response_code in (catch_extra_error_codes or ()))


def retried(call: Callable[..., T], policy: str = "default", region: str | None = None,
            also: Iterable[str] = ()) -> Callable[..., T]:
    """``call`` under the named policy of :data:`RETRY_POLICIES` (its only retry layer), also
    retrying the error codes ``also``."""

    @functools.wraps(call)
    def run(*args: Any, **kwargs: Any) -> T:
        settings = RETRY_POLICIES[policy]
        codes = tuple(settings["codes"]) + tuple(sorted(also))
        retry = _Retry.jittered_backoff(retries=settings["attempts"], delay=settings["delay"],
                                        max_delay=settings["max_delay"], catch_extra_error_codes=codes)
        try:
            return retry(call)(*args, **kwargs)
        except botocore.exceptions.ClientError as exc:
            if error_code(exc) in THROTTLING_CODES:
                raise throttled(exc, settings["attempts"], region) from exc
            raise

    return run


def throttled(exc: "botocore.exceptions.ClientError", attempts: int,
              region: str | None = None) -> "botocore.exceptions.ClientError":
    """The same error, with a message that says it was throttling and what to do."""
    response = dict(exc.response)
    # botocore's own count ("reached max retries: 0") would contradict the hint
    response["ResponseMetadata"] = {k: v for k, v in (response.get("ResponseMetadata") or {}).items()
                                    if k not in ("MaxAttemptsReached", "RetryAttempts")}
    error = dict(response.get("Error") or {})
    hint = THROTTLING_HINT.format(attempts=attempts, region=region or "this region")
    error["Message"] = f"{error.get('Message') or 'Rate exceeded'} ({hint})"
    response["Error"] = error
    return botocore.exceptions.ClientError(response, exc.operation_name)


def waiter(client: Any, name: str) -> Any:
    """botocore's waiter ``name``, whose every poll is retried by the default policy.

    botocore's own retries are off on our clients, and a waiter gives up at the first error
    that none of its acceptors expects (a throttled poll, say): its polls go through
    :func:`retried` instead, as every other call does. The raw client still makes the calls,
    so its events (``after-call``) fire as usual.
    """
    raw = client.client if isinstance(client, RetryingBotoClientWrapper) else client
    stock = raw.get_waiter(name)
    operation = retried(getattr(raw, xform_name(stock.config.operation)), region=raw.meta.region_name)
    return botocore.waiter.Waiter(name, stock.config, botocore.waiter.NormalizedOperationMethod(operation))


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


def region_client(module: Any, service: str, region: str) -> Any:
    """A client for one region, with the module's credentials, endpoint and botocore config.

    botocore makes one attempt per call (whatever the module's config says: one retry layer);
    calls made with ``aws_retry=True`` are retried by the ``default`` policy. That suits
    launches too: EC2 answers InsufficientInstanceCapacity with HTTP 500, which botocore would
    retry, and a launch wants to try the next zone or type at once.
    """
    _region, endpoint_url, params = get_aws_connection_info(module)
    params = dict(params)
    profile = params.pop("profile_name", None)
    merged = botocore.config.Config(user_agent_extra="bacalhau.aws_spot", max_pool_connections=MAX_POOL_CONNECTIONS)
    for extra in (params.pop("aws_config", None), params.pop("config", None)):
        if extra:
            merged = merged.merge(extra if isinstance(extra, botocore.config.Config) else botocore.config.Config(**extra))
    merged = merged.merge(botocore.config.Config(retries={"total_max_attempts": 1, "mode": "standard"}))
    with _SESSION_LOCK:
        client = _session(profile).client(service, region_name=region, endpoint_url=endpoint_url,
                                          config=merged, **params)
        _prime(client)
    wrapped = RetryingBotoClientWrapper(client, functools.partial(retried, region=region))
    # wrapped.made_by("sqs"): a client of another service in the same region, made the same way
    # (the nuke's engine is handed one EC2 client per region; its EventBridge and SQS types need more)
    wrapped.made_by = functools.partial(region_client, module, region=region)
    return wrapped


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


def paginate(client: Any, operation: str, result_key: str, **kwargs: Any) -> list[dict[str, Any]]:
    """Every item under ``result_key`` of every page of a describe call, retried as a whole.

    (Paginators bypass the retrying client wrapper, so the retry sits here.)
    """
    def pages() -> list[dict[str, Any]]:
        return client.get_paginator(operation).paginate(**kwargs).build_full_result().get(result_key, [])

    return retried(pages, region=getattr(getattr(client, "meta", None), "region_name", None))()


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
