# -*- coding: utf-8 -*-
# Copyright: bacalhau.aws_spot contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The nuke's EventBridge rules and SQS queues (a cluster's event path, ``_events/path.py``). Private.

Neither service filters a listing by tags, as EC2's describes do: their records
(``spec.KINDS``: ``event_rules``, ``sqs_queues``) list by name instead, through a
``lister`` of their own here. Every path is named ``bacalhau-<cluster>-spot-events``, so
``ListRules``/``ListQueues`` with the prefix ``bacalhau-<cluster>-`` (``bacalhau-`` for every
cluster) find them; each one's tags are then read (``ListTagsForResource``,
``ListQueueTags``) and, as for every type, only those whose tags say they are ours are
picked (``NukeSpec.matches``). A rule is listed with its targets.

Deletion: a rule's targets are removed in round D (``delete.PREPARE``: EventBridge refuses
to delete a rule that still has targets) and the rule deleted in round E; a queue is
deleted in round B. Gone already is fine.

The engine hands these an EC2 client per region; the clients of EventBridge and SQS are
made from it (``made_by``, ``_aws.common.region_client``), once per region.
"""

from __future__ import annotations

import threading
from typing import Any, Callable

try:
    import botocore.exceptions
except ImportError:
    pass  # AnsibleAWSModule reports a missing botocore for us

from ansible_collections.bacalhau.aws_spot.plugins.module_utils._aws.common import (
    CLUSTER_KEY,
    error_code,
    error_text,
    paginate,
    retried,
    together,
)
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._events.path import (
    QUEUE_NOT_FOUND,
    RULE_NOT_FOUND,
    name_prefix,
)

# the words of context.ALREADY_GONE (a test keeps them the same; context.py imports this module through spec.py)
ALREADY_GONE = "already gone"
_LOCK = threading.Lock()


def service_client(client: Any, service: str) -> Any:
    """The region's client of ``service``, made like ``client`` (an EC2 client of
    ``region_client``), once per region; ``client`` itself when it is already one (tests)."""
    if getattr(getattr(client, "meta", None), "service_model", None) is not None and \
            client.meta.service_model.service_name == service:
        return client
    with _LOCK:
        made = client.__dict__.setdefault("_bacalhau_clients", {})
        if service not in made:
            made[service] = client.made_by(service)
        return made[service]


def _cluster_of(filters: list[dict[str, Any]]) -> str | None:
    for item in filters:
        if item.get("Name") == f"tag:{CLUSTER_KEY}" and len(item.get("Values") or []) == 1:
            return item["Values"][0]
    return None


def _tag_list(tags: dict[str, str]) -> list[dict[str, str]]:
    return [{"Key": key, "Value": value} for key, value in tags.items()]


# --------------------------------------------------------------------------- listers
def list_event_rules(client: Any, filters: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Our candidates among the region's rules (default bus), each with ``Tags`` and ``Targets``."""
    events = service_client(client, "events")
    rules = paginate(events, "list_rules", "Rules", NamePrefix=name_prefix(_cluster_of(filters)))

    def detail(rule: dict[str, Any]) -> Callable[[], dict[str, Any]]:
        def run() -> dict[str, Any]:
            tags, targets = together(
                lambda: events.list_tags_for_resource(ResourceARN=rule["Arn"], aws_retry=True).get("Tags") or [],
                lambda: paginate(events, "list_targets_by_rule", "Targets", Rule=rule["Name"]),
            )
            return dict(rule, Tags=tags, Targets=targets)
        return run

    return [item for item in together(*[detail(rule) for rule in rules]) if item is not None]


def list_sqs_queues(client: Any, filters: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Our candidates among the region's queues: ``{"QueueUrl", "QueueName", "Tags"}``."""
    sqs = service_client(client, "sqs")
    urls = paginate(sqs, "list_queues", "QueueUrls", QueueNamePrefix=name_prefix(_cluster_of(filters)))

    def detail(url: str) -> Callable[[], dict[str, Any] | None]:
        def run() -> dict[str, Any] | None:
            try:
                tags = sqs.list_queue_tags(QueueUrl=url, aws_retry=True).get("Tags") or {}
            except botocore.exceptions.ClientError as exc:
                if error_code(exc) in QUEUE_NOT_FOUND:
                    return None  # deleted since it was listed
                raise
            return {"QueueUrl": url, "QueueName": url.rstrip("/").rsplit("/", 1)[-1], "Tags": _tag_list(tags)}
        return run

    return [item for item in together(*[detail(url) for url in urls]) if item is not None]


# --------------------------------------------------------------------------- deleters
def _delete(res: Any, call: Callable[[], Any], gone: frozenset[str]) -> None:
    """``call`` (retried by the default policy); the resource deleted, already gone, or failed."""
    try:
        retried(call, region=res.region)()
    except botocore.exceptions.ClientError as exc:
        if error_code(exc) in gone:
            res.deleted(ALREADY_GONE)
        else:
            res.failed(error_text(exc))
        return
    except botocore.exceptions.BotoCoreError as exc:
        res.failed(str(exc))
        return
    res.deleted()


def remove_rule_targets(ctx: Any, res: Any) -> None:
    """Round D: the rule's targets go first (EventBridge keeps a rule that has targets)."""
    ids = [target["Id"] for target in res.raw.get("Targets") or [] if target.get("Id")]
    if not ids:
        return
    events = service_client(ctx.client, "events")
    try:
        retried(lambda: events.remove_targets(Rule=res.raw["Name"], Ids=ids), region=res.region)()
    except botocore.exceptions.ClientError as exc:
        if error_code(exc) not in RULE_NOT_FOUND:
            raise


def delete_event_rules(ctx: Any, items: list[Any]) -> None:
    events = service_client(ctx.client, "events")
    together(*[(lambda res=res: _delete(res, lambda: events.delete_rule(Name=res.raw["Name"]), RULE_NOT_FOUND))
               for res in items])


def delete_sqs_queues(ctx: Any, items: list[Any]) -> None:
    sqs = service_client(ctx.client, "sqs")
    together(*[(lambda res=res: _delete(res, lambda: sqs.delete_queue(QueueUrl=res.raw["QueueUrl"]), QUEUE_NOT_FOUND))
               for res in items])
