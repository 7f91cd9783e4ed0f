# -*- coding: utf-8 -*-
# Copyright: bacalhau.aws_spot contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A cluster's event path in one region: an EventBridge rule and the SQS queue it sends to. Private.

EC2 sends what a spot cluster must react to through EventBridge (source ``aws.ec2``): the
two-minute interruption warning, the rebalance recommendation, and the state changes of an
instance going away. Per region the cluster uses, :func:`ensure` makes

* the rule ``bacalhau-<cluster>-spot-events`` on the default event bus, matching
  :data:`EVENT_PATTERN` (EventBridge cannot match on tags: the consumer filters by instance id);
* the queue of the same name, its only target of ours: encrypted with SQS-managed keys
  (``SqsManagedSseEnabled``), messages kept :data:`RETENTION_SECONDS` (an hour: a notice
  is worth two minutes, and the event source's periodic tick is the backstop for anything
  older), long polling by default, and a queue policy that lets only that rule send to it
  (``aws:SourceArn``);

both tagged at creation with the cluster's tags (``_aws.common.managed_tags``). Each call
describes, compares and only then acts (nothing in check mode), and says what it changed.
:func:`remove` takes the path away (targets, rule, queue); :func:`read` says what is there,
for ``status.yml``. A rule or queue of that name that is not tagged as the cluster's is
never touched: the call fails and says so.

Calls are made with ``aws_retry=True`` on clients of ``_aws.common.region_client`` (one
retry layer, the ``default`` policy); :func:`clients` makes them.
"""

from __future__ import annotations

import json
from typing import Any

try:
    import botocore.exceptions
except ImportError:
    pass  # AnsibleAWSModule reports a missing botocore for us

from ansible_collections.amazon.aws.plugins.module_utils.tagging import boto3_tag_list_to_ansible_dict
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._aws.common import (
    AwsSpotError,
    error_code,
    is_managed,
    managed_tags,
    region_client,
)

SOURCE = "aws.ec2"
INTERRUPTION = "EC2 Spot Instance Interruption Warning"
REBALANCE = "EC2 Instance Rebalance Recommendation"
STATE_CHANGE = "EC2 Instance State-change Notification"
# The states of an instance going away (pending and running are left out: a launch would
# otherwise send two messages per instance that nobody acts on).
GOING_STATES = ("stopping", "stopped", "shutting-down", "terminated")
EVENT_PATTERN: dict[str, Any] = {
    "source": [SOURCE],
    "$or": [
        {"detail-type": [INTERRUPTION, REBALANCE]},
        {"detail-type": [STATE_CHANGE], "detail": {"state": list(GOING_STATES)}},
    ],
}
RULE_DESCRIPTION = "bacalhau.aws_spot: spot interruptions, rebalance recommendations and instances going away"
TARGET_ID = "bacalhau-spot-events"
# Messages older than an hour are dropped: a notice gives two minutes, and the event
# source's tick (every 5 minutes by default) makes up for anything lost.
RETENTION_SECONDS = 3600
# A ReceiveMessage without WaitTimeSeconds long-polls too (the most SQS allows).
RECEIVE_WAIT_SECONDS = 20
QUEUE_ATTRIBUTES = {
    "MessageRetentionPeriod": str(RETENTION_SECONDS),
    "ReceiveMessageWaitTimeSeconds": str(RECEIVE_WAIT_SECONDS),
    "SqsManagedSseEnabled": "true",
}

RULE_NOT_FOUND = frozenset({"ResourceNotFoundException"})
QUEUE_NOT_FOUND = frozenset({"AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist"})
QUEUE_DELETED_RECENTLY = frozenset({"AWS.SimpleQueueService.QueueDeletedRecently", "QueueDeletedRecently"})


def path_name(cluster_name: str) -> str:
    """The rule's and the queue's name (at most 61 characters for a 40-character cluster name;
    EventBridge allows 64, SQS 80)."""
    return f"bacalhau-{cluster_name}-spot-events"


def name_prefix(cluster_name: str | None = None) -> str:
    """What every path's name (of one cluster, or of any) starts with: for listing them."""
    return f"bacalhau-{cluster_name}-" if cluster_name else "bacalhau-"


def clients(module: Any, region: str) -> tuple[Any, Any]:
    """``(events, sqs)`` clients for ``region``, with the module's credentials and endpoint."""
    return region_client(module, "events", region), region_client(module, "sqs", region)


def queue_policy(queue_arn: str, rule_arn: str) -> dict[str, Any]:
    """Only EventBridge, and only for this rule, may send to the queue."""
    return {
        "Version": "2012-10-17",
        "Id": f"{queue_arn}/policy",
        "Statement": [{
            "Sid": "OnlyTheClustersEventBridgeRule",
            "Effect": "Allow",
            "Principal": {"Service": "events.amazonaws.com"},
            "Action": "sqs:SendMessage",
            "Resource": queue_arn,
            "Condition": {"ArnEquals": {"aws:SourceArn": rule_arn}},
        }],
    }


def queue_arn_for(rule_arn: str, queue_name: str) -> str:
    """The queue's ARN in the rule's partition, region and account (before the queue exists)."""
    parts = rule_arn.split(":")
    return ":".join([parts[0], parts[1], "sqs", parts[3], parts[4], queue_name])


# --------------------------------------------------------------------------- reads
def describe_rule(events: Any, name: str) -> dict[str, Any] | None:
    try:
        return events.describe_rule(Name=name, aws_retry=True)
    except botocore.exceptions.ClientError as exc:
        if error_code(exc) in RULE_NOT_FOUND:
            return None
        raise


def rule_tags(events: Any, rule_arn: str) -> dict[str, str]:
    return boto3_tag_list_to_ansible_dict(events.list_tags_for_resource(ResourceARN=rule_arn, aws_retry=True).get("Tags") or [])


def rule_targets(events: Any, name: str) -> list[dict[str, Any]]:
    targets: list[dict[str, Any]] = []
    kwargs: dict[str, Any] = {"Rule": name}
    while True:
        answer = events.list_targets_by_rule(aws_retry=True, **kwargs)
        targets.extend(answer.get("Targets") or [])
        if not answer.get("NextToken"):
            return targets
        kwargs["NextToken"] = answer["NextToken"]


def queue_url(sqs: Any, name: str) -> str | None:
    try:
        return sqs.get_queue_url(QueueName=name, aws_retry=True)["QueueUrl"]
    except botocore.exceptions.ClientError as exc:
        if error_code(exc) in QUEUE_NOT_FOUND:
            return None
        raise


def queue_attributes(sqs: Any, url: str) -> dict[str, str]:
    return sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"], aws_retry=True).get("Attributes") or {}


def queue_tags(sqs: Any, url: str) -> dict[str, str]:
    return dict(sqs.list_queue_tags(QueueUrl=url, aws_retry=True).get("Tags") or {})


def _refuse_foreign(what: str, name: str, region: str, tags: dict[str, str], cluster_name: str) -> None:
    if not is_managed(tags, cluster_name):
        raise AwsSpotError(
            f"{what} {name} exists but is not tagged as cluster {cluster_name!r}'s "
            "(bacalhau:managed-by=bacalhau.aws_spot, bacalhau:cluster): it was left alone. Delete or rename it, "
            "or choose another cluster name", region)


def _missing_tags(have: dict[str, str], want: dict[str, str]) -> dict[str, str]:
    return {key: value for key, value in want.items() if have.get(key) != value}


# --------------------------------------------------------------------------- ensure
def ensure(events: Any, sqs: Any, cluster_name: str, region: str, tags: dict[str, str] | None = None,
           check_mode: bool = False) -> dict[str, Any]:
    """Make the cluster's event path in ``region`` as :data:`EVENT_PATTERN` and :data:`QUEUE_ATTRIBUTES`
    say; ``{"region", "changed", "changes": [...], "rule_name", "rule_arn", "queue_url", "queue_arn"}``."""
    name = path_name(cluster_name)
    want_tags = managed_tags(cluster_name, name=name, extra=tags)
    changes: list[str] = []
    result: dict[str, Any] = {"region": region, "rule_name": name, "queue_name": name, "rule_arn": None,
                              "queue_url": None, "queue_arn": None}

    # the rule
    rule = describe_rule(events, name)
    rule_created = rule is None
    pattern = json.dumps(EVENT_PATTERN, sort_keys=True)
    if rule is None:
        changes.append(f"create EventBridge rule {name}")
        if not check_mode:
            rule = {"Arn": events.put_rule(
                Name=name, EventPattern=pattern, State="ENABLED", Description=RULE_DESCRIPTION,
                Tags=[{"Key": k, "Value": v} for k, v in want_tags.items()], aws_retry=True)["RuleArn"]}
    else:
        have = rule_tags(events, rule["Arn"])
        _refuse_foreign("EventBridge rule", name, region, have, cluster_name)
        if json.loads(rule.get("EventPattern") or "{}") != EVENT_PATTERN or rule.get("State") != "ENABLED":
            changes.append(f"update EventBridge rule {name} (pattern, enabled)")
            if not check_mode:
                events.put_rule(Name=name, EventPattern=pattern, State="ENABLED", Description=RULE_DESCRIPTION,
                                aws_retry=True)
        missing = _missing_tags(have, want_tags)
        if missing:
            changes.append(f"tag EventBridge rule {name}: {', '.join(sorted(missing))}")
            if not check_mode:
                events.tag_resource(ResourceARN=rule["Arn"], Tags=[{"Key": k, "Value": v} for k, v in missing.items()],
                                    aws_retry=True)
    result["rule_arn"] = rule["Arn"] if rule else None

    # the queue
    url = queue_url(sqs, name)
    if url is None:
        changes.append(f"create SQS queue {name}")
        if not check_mode:
            arn = queue_arn_for(result["rule_arn"], name)
            attributes = dict(QUEUE_ATTRIBUTES, Policy=json.dumps(queue_policy(arn, result["rule_arn"])))
            try:
                url = sqs.create_queue(QueueName=name, Attributes=attributes, tags=want_tags, aws_retry=True)["QueueUrl"]
            except botocore.exceptions.ClientError as exc:
                if error_code(exc) in QUEUE_DELETED_RECENTLY:
                    raise AwsSpotError(
                        f"SQS queue {name} was deleted less than 60 seconds ago, and SQS refuses a new queue of "
                        "that name until then: run again in a minute", region) from exc
                raise
            result.update(queue_url=url, queue_arn=arn)
    else:
        have = queue_tags(sqs, url)
        _refuse_foreign("SQS queue", name, region, have, cluster_name)
        attributes = queue_attributes(sqs, url)
        arn = attributes.get("QueueArn") or ""
        result.update(queue_url=url, queue_arn=arn)
        wanted = dict(QUEUE_ATTRIBUTES)
        if result["rule_arn"]:
            wanted["Policy"] = json.dumps(queue_policy(arn, result["rule_arn"]))
        differ = {key: value for key, value in wanted.items() if not _same_attribute(key, attributes.get(key), value)}
        if differ:
            changes.append(f"set SQS queue {name} attributes: {', '.join(sorted(differ))}")
            if not check_mode:
                sqs.set_queue_attributes(QueueUrl=url, Attributes=differ, aws_retry=True)
        missing = _missing_tags(have, want_tags)
        if missing:
            changes.append(f"tag SQS queue {name}: {', '.join(sorted(missing))}")
            if not check_mode:
                sqs.tag_queue(QueueUrl=url, Tags=missing, aws_retry=True)

    # the rule's target (a rule just made, or to be made, has none yet)
    targets = rule_targets(events, name) if rule is not None and not rule_created else []
    if not any(t.get("Id") == TARGET_ID and t.get("Arn") == result["queue_arn"] for t in targets):
        changes.append(f"send EventBridge rule {name} to SQS queue {name}")
        if not check_mode:
            events.put_targets(Rule=name, Targets=[{"Id": TARGET_ID, "Arn": result["queue_arn"]}], aws_retry=True)

    result.update(changed=bool(changes), changes=changes)
    return result


def _same_attribute(key: str, have: str | None, want: str) -> bool:
    if have is None:
        return False
    if key == "Policy":
        try:
            return json.loads(have) == json.loads(want)
        except ValueError:
            return False
    return str(have).lower() == str(want).lower()


# --------------------------------------------------------------------------- remove
def remove(events: Any, sqs: Any, cluster_name: str, region: str, check_mode: bool = False) -> dict[str, Any]:
    """Take the cluster's event path in ``region`` away: the rule's targets, the rule, the queue.
    Gone already is fine. ``{"region", "changed", "changes": [...]}``."""
    name = path_name(cluster_name)
    changes: list[str] = []
    rule = describe_rule(events, name)
    if rule is not None:
        _refuse_foreign("EventBridge rule", name, region, rule_tags(events, rule["Arn"]), cluster_name)
        ids = [t["Id"] for t in rule_targets(events, name)]
        changes.append(f"delete EventBridge rule {name}")
        if not check_mode:
            if ids:
                _ignore_gone(lambda: events.remove_targets(Rule=name, Ids=ids, Force=False, aws_retry=True), RULE_NOT_FOUND)
            _ignore_gone(lambda: events.delete_rule(Name=name, aws_retry=True), RULE_NOT_FOUND)
    url = queue_url(sqs, name)
    if url is not None:
        _refuse_foreign("SQS queue", name, region, queue_tags(sqs, url), cluster_name)
        changes.append(f"delete SQS queue {name}")
        if not check_mode:
            _ignore_gone(lambda: sqs.delete_queue(QueueUrl=url, aws_retry=True), QUEUE_NOT_FOUND)
    return {"region": region, "changed": bool(changes), "changes": changes}


def _ignore_gone(call: Any, codes: frozenset[str]) -> None:
    try:
        call()
    except botocore.exceptions.ClientError as exc:
        if error_code(exc) not in codes:
            raise


# --------------------------------------------------------------------------- read
def read(events: Any, sqs: Any, cluster_name: str, region: str) -> dict[str, Any]:
    """What of the path is there: ``{"region", "rule": bool, "rule_enabled", "targets_queue",
    "queue": bool, "queue_depth", "queue_in_flight"}`` (depths as SQS approximates them)."""
    name = path_name(cluster_name)
    out: dict[str, Any] = {"region": region, "name": name, "rule": False, "rule_enabled": False,
                           "targets_queue": False, "queue": False, "queue_depth": None, "queue_in_flight": None}
    rule = describe_rule(events, name)
    url = queue_url(sqs, name)
    attributes = queue_attributes(sqs, url) if url else {}
    if rule is not None:
        out.update(rule=True, rule_enabled=rule.get("State") == "ENABLED")
        arn = attributes.get("QueueArn")
        out["targets_queue"] = bool(arn) and any(t.get("Arn") == arn for t in rule_targets(events, name))
    if url:
        out.update(queue=True, queue_depth=int(attributes.get("ApproximateNumberOfMessages", 0)),
                   queue_in_flight=int(attributes.get("ApproximateNumberOfMessagesNotVisible", 0)))
    return out
