"""EC2's events, as EventBridge carries them, in the emulator.

EC2 sends events to EventBridge's default bus of the instance's region (source ``aws.ec2``;
AWS's "Spot Instance interruption notices" and "EC2 Instance State-change Notification"
pages give the shapes). moto has EventBridge and SQS, and its ``PutEvents`` delivers an
event through every rule whose pattern matches it to the rule's SQS targets in that region.
So the emulator sends EC2's events through moto's own ``PutEvents`` (in-process: AWS
refuses ``aws.*`` sources from callers, moto's backend does not care), and an event reaches a
queue only through a rule that matches it, as on AWS:

* ``EC2 Spot Instance Interruption Warning`` ``{"instance-id", "instance-action": "terminate"}``
  on ``/_emulator/interrupt``, at once (the notice; the reclaim follows, see below);
* ``EC2 Instance Rebalance Recommendation`` ``{"instance-id"}`` on ``/_emulator/rebalance``;
* ``EC2 Instance State-change Notification`` ``{"instance-id", "state"}``: ``shutting-down``
  then ``terminated`` whenever an instance is terminated (``TerminateInstances``, a fleet or
  spot request ending, the reclaim of an interruption), ``stopping`` then ``stopped`` when
  one is stopped, ``pending`` then ``running`` when one is started again. (A launch sends
  none: only the states the collection's rule asks for matter, and EC2's ``pending`` and
  ``running`` of a launch would match no rule of ours.)

Every event carries ``version: "0"``, an ``id`` of its own, ``detail-type``, ``source``,
``account``, ``time`` (when it happened), ``region`` and ``resources`` (the instance's ARN).

Gaps, said in the README: events go only to the default bus of the instance's region (no
cross-account or cross-region buses), moto does not check the queue policy (a queue without
one still receives), and the state changes of one termination are sent at the same instant
(EC2 sends ``shutting-down`` when it starts, ``terminated`` up to minutes later).

:func:`long_poll` answers SQS's ``ReceiveMessage`` with a wait (long polling) without holding
the emulator's moto lock while it waits: moto would hold it for up to 20 seconds, and every
other call of every client would wait that long.

:func:`patch_moto` also mends two moto slips: the event a rule sends to its target lacks
``account`` in moto (EventBridge's event has it), and ``SetQueueAttributes`` without
``Policy`` drops the queue's policy in moto (SQS keeps it).
"""
from __future__ import annotations

import io
import json
import time
from typing import Any, Callable, Iterable

from moto.core.utils import unix_time
from moto.ec2.models.instances import Instance
from moto.events.models import events_backends
from moto.events.utils import EventTemplateParser
from moto.sqs.models import Queue, sqs_backends

from .clock import CLOCK

ACCOUNT_ID = "123456789012"
SOURCE = "aws.ec2"
INTERRUPTION = "EC2 Spot Instance Interruption Warning"
REBALANCE = "EC2 Instance Rebalance Recommendation"
STATE_CHANGE = "EC2 Instance State-change Notification"


def instance_arn(region: str, instance_id: str) -> str:
    return f"arn:aws:ec2:{region}:{ACCOUNT_ID}:instance/{instance_id}"


def entry(region: str, detail_type: str, instance_id: str, detail: dict[str, Any],
          at: float | None = None) -> dict[str, Any]:
    """One ``PutEvents`` entry as EC2 would send it about ``instance_id``."""
    return {
        "Source": SOURCE,
        "DetailType": detail_type,
        "Detail": json.dumps(dict({"instance-id": instance_id}, **detail)),
        "Resources": [instance_arn(region, instance_id)],
        # moto's backend takes (and serialises) a unix time: the emulator's clock (clock.py)
        "Time": unix_time(CLOCK.utcnow()) if at is None else at,
    }


def send(region: str, entries: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Through moto's ``PutEvents`` on the region's default bus (ten entries a call, as AWS
    allows); the entries' answers (``EventId`` each)."""
    backend = events_backends[ACCOUNT_ID][region]
    entries = list(entries)
    answers: list[dict[str, Any]] = []
    for start in range(0, len(entries), 10):
        answers.extend(backend.put_events(entries[start:start + 10]))
    return answers


def interruption_warnings(region: str, instance_ids: list[str]) -> list[dict[str, Any]]:
    return send(region, [entry(region, INTERRUPTION, i, {"instance-action": "terminate"}) for i in instance_ids])


def rebalance_recommendations(region: str, instance_ids: list[str]) -> list[dict[str, Any]]:
    return send(region, [entry(region, REBALANCE, i, {}) for i in instance_ids])


def state_changes(region: str, instance_id: str, states: Iterable[str]) -> list[dict[str, Any]]:
    return send(region, [entry(region, STATE_CHANGE, instance_id, {"state": state}) for state in states])


def _region_of(instance: Any) -> str:
    return instance.ec2_backend.region_name


def patch_moto() -> None:
    """State changes from moto's instances; the queue policy kept by SetQueueAttributes. Once."""
    if getattr(Instance, "_bacalhau_events", False):
        return

    def sends(method_name: str, states: tuple[str, ...], unless: tuple[str, ...]) -> None:
        original = getattr(Instance, method_name)

        def method(self: Any, *args: Any, **kwargs: Any) -> Any:
            before = self.state
            answer = original(self, *args, **kwargs)
            if before not in unless:
                state_changes(_region_of(self), self.id, states)
            return answer

        setattr(Instance, method_name, method)

    sends("terminate", ("shutting-down", "terminated"), unless=("shutting-down", "terminated"))
    sends("stop", ("stopping", "stopped"), unless=("stopping", "stopped", "shutting-down", "terminated"))
    sends("start", ("pending", "running"), unless=("pending", "running", "shutting-down", "terminated"))
    Instance._bacalhau_events = True  # type: ignore[attr-defined]

    # what a target receives when the rule transforms nothing: EventBridge's whole event
    EventTemplateParser.DEFAULT_EVENT_INPUT_TEMPLATE = (
        '{"version": "0", "id": "<id>", "detail-type": "<detail-type>", "source": "<source>", '
        '"account": "<account>", "time": <time>, "region": "<region>", "resources": <resources>, '
        '"detail": <detail>}'
    )

    original_set = Queue._set_attributes

    def _set_attributes(self: Any, attributes: dict[str, Any], now: float | None = None) -> None:
        kept = getattr(self, "policy", None)
        original_set(self, attributes, now)
        if "Policy" not in attributes:
            self.policy = kept  # SQS changes only the attributes it is given

    Queue._set_attributes = _set_attributes  # type: ignore[method-assign]


# --------------------------------------------------------------------------- SQS long polling
POLL_INTERVAL = 0.1  # how often a waiting ReceiveMessage looks again


def _wait_seconds(request: dict[str, Any], region: str) -> float:
    """The request's WaitTimeSeconds, or its queue's ReceiveMessageWaitTimeSeconds."""
    if request.get("WaitTimeSeconds") is not None:
        return float(request["WaitTimeSeconds"])
    name = str(request.get("QueueUrl") or "").rstrip("/").rsplit("/", 1)[-1]
    queue = sqs_backends[ACCOUNT_ID][region].queues.get(name)
    return float(getattr(queue, "receive_message_wait_time_seconds", 0) or 0) if queue else 0.0


def long_poll(app: Any, environ: dict, start_response: Callable, region: str, dispatch: Callable[..., Any]) -> Any:
    """A ``ReceiveMessage`` (JSON protocol) that waits as SQS does, the lock taken only to look.

    The first look goes through ``dispatch(environ, start_response)`` (faults, the call log);
    while it finds nothing and the wait is not over, moto is asked again every
    :data:`POLL_INTERVAL`, with the lock held only for each look.
    """
    raw = environ["wsgi.input"].getvalue()
    try:
        request = json.loads(raw or b"{}")
    except ValueError:
        request = None
    if not isinstance(request, dict):
        return dispatch(environ, start_response)
    with app.moto_lock:
        wait = _wait_seconds(request, region)
    request["WaitTimeSeconds"] = 0
    body = json.dumps(request).encode()

    def fresh() -> dict:
        environ["wsgi.input"] = io.BytesIO(body)
        environ["CONTENT_LENGTH"] = str(len(body))
        return environ

    answered: dict[str, Any] = {}

    def keep(status: str, headers: list, exc_info: Any = None) -> Any:
        answered["status"], answered["headers"] = status, headers
        return lambda _data: None

    chunks = list(dispatch(fresh(), keep))
    deadline = time.monotonic() + wait
    while answered["status"].startswith("200") and not _has_messages(chunks) and time.monotonic() < deadline:
        time.sleep(POLL_INTERVAL)  # outside the lock: every other call goes on meanwhile
        with app.moto_lock:
            status, headers, chunks = app._moto(fresh())  # pylint: disable=protected-access
        answered["status"], answered["headers"] = status, headers
    start_response(answered["status"], answered["headers"])
    return chunks


def _has_messages(chunks: list) -> bool:
    try:
        return bool(json.loads(b"".join(c if isinstance(c, bytes) else str(c).encode() for c in chunks)).get("Messages"))
    except (ValueError, AttributeError):
        return True  # not an answer we understand: give it as it is
