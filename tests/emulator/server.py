"""The offline AWS world: moto in-process, seeded, validated, with switchable faults.

moto's own server is a WSGI app; we run it in this process behind a small
middleware so that we can do what moto cannot:

* seed Canonical's Ubuntu images and SSM parameters in every region (``seed.py``);
* refuse a launch whose AMI architecture does not match the instance type, as EC2
  does ("The architecture 'arm64' of the specified instance type does not match the
  architecture 'x86_64' of the specified AMI...");
* honour ``ClientToken`` on the launch calls (``RunInstances``, ``CreateFleet``,
  ``RequestSpotInstances``, ``RequestSpotFleet``) as EC2 does: the same token with the
  same parameters in the same region answers the first call's answer again and launches
  nothing; the same token with other parameters is refused with
  ``IdempotentParameterMismatch`` (HTTP 400). EC2 remembers a token for at least 24 hours
  after its instances end; the emulator until ``reset``. A call that failed is not
  remembered (EC2 lets it be retried with the same token);
* inject faults at run time: ``InsufficientInstanceCapacity`` (or any launch error
  code) for a region / availability zone / instance type / market, throttling
  (``RequestLimitExceeded``) for the next N calls, added latency per call, and lost
  answers (the call is carried out, then the answer never reaches the client);
* count API calls by operation and region, with start/end times (for benchmarks);
* answer the spot market (``market.py``): instance type offerings per zone (a launch into a
  zone that does not offer the type is refused with ``Unsupported``), spot price history
  varying by zone and time, spot placement scores, instance types from requirements, and
  the Price List service's on-demand prices (``pricing``, which moto lacks); all seeded and
  settable through ``/_emulator/market``.

The control API lives beside the AWS endpoints, on the same port, under
``/_emulator/`` (JSON in and out); ``client.py`` wraps it for Python and playbooks
can drive it with ``ansible.builtin.uri``:

``GET  /_emulator/health``            -> ``{"status": "ok"}``
``POST /_emulator/reset``             forget every resource, fault and counter
``GET  /_emulator/faults``            the faults in force
``POST /_emulator/faults``            merge: ``{"capacity": [rule, ...], "throttle": {"count": N,
                                      "operations": [...], "regions": [...]}, "latency_ms": 100,
                                      "expired_credentials": true, "drop_response": {"count": N,
                                      "operations": [...], "regions": [...], "how": "reset"}}``
``DELETE /_emulator/faults``          clear all faults
``GET  /_emulator/calls``             ``{"total", "by_operation", "by_region", "log": [...]}``
``POST /_emulator/address_pool``      ``{"addresses": ["10.213.7.11", ...]}``: public IPs for new
                                      instances (the sandbox's test hosts); ``[]`` = moto's own
``POST /_emulator/interrupt``         ``{"region", "instance_ids", "notice_seconds"?}``: a spot
                                      interruption. Without ``notice_seconds`` (or 0) the instances
                                      are reclaimed at once; with N > 0 the notice shows in each
                                      instance's IMDS at once (``spot/instance-action`` =
                                      ``{"action": "terminate", "time": now + N}``) and they are
                                      reclaimed N seconds later. Reclaimed: ``terminated``, state
                                      reason ``Server.SpotInstanceTermination``; until then
                                      ``running``, as EC2 shows it. -> ``{"interrupted": [ids],
                                      "notice": {...}, "reclaim_at": "<time>"}``. With ``"at":
                                      "<ISO time>"`` or ``"after_seconds": N`` (also for
                                      ``rebalance``): at that emulated time instead (``clock.py``)
``GET  /_emulator/clock``             the emulated now, its offset from real time, what is scheduled
``POST /_emulator/clock``             ``{"advance_seconds": N}`` or ``{"to": "<ISO time>"}``: move the
                                      emulated clock forward, carrying out what was scheduled
                                      before it, each at its own time (``clock.py``)
``POST /_emulator/rebalance``         ``{"region", "instance_ids"}``: a rebalance recommendation in
                                      their IMDS (``events/recommendations/rebalance`` =
                                      ``{"noticeTime": now}``); nothing else changes, as on EC2
``POST /_emulator/imds``              ``{"state_dir": DIR}``: write each instance's IMDS document to
                                      ``DIR/<address>.json`` for the test hosts' IMDS stand-ins
                                      (instances with an address-pool address; see ``imds.py``);
                                      ``null`` stops writing. ``GET``: the documents
``DELETE /_emulator/calls``           zero the counters
``GET  /_emulator/market``            the market rules in force (``market.py``)
``POST /_emulator/market``            merge: ``{"placement_scores": [{"region", "availability_zone"?,
                                      "instance_type"?, "score": 1-10}], "spot_prices": [{"region",
                                      "availability_zone"?, "instance_type"?, "price" | "factor"}],
                                      "offerings": [{"region", "availability_zone"?, "instance_type"?,
                                      "offered": false}], "on_demand_prices": [{"region"?,
                                      "instance_type"?, "price" (null = no product) | "factor"}]}``
``DELETE /_emulator/market``          back to the seeded market (so does ``reset``)

A capacity rule: ``{"region": "us-east-1", "availability_zone": "us-east-1a",
"instance_type": "t3.micro", "market": "spot", "code": "InsufficientInstanceCapacity",
"count": null}``; every key but ``region`` is optional (absent = any), ``count``
limits how many launches it refuses before it lapses. A capacity rule for spot launches
(``market`` absent or ``"spot"``) also drops the placement score of what it covers to 1.

Market rules (``availability_zone`` may be a zone name or id; absent keys = any) apply in
the order given, the last matching one winning; a spot ``factor`` multiplies what came before.

``drop_response``: the next N matching calls are carried out (moto launches, creates,
deletes), then their answer is lost, as when a connection breaks after AWS has acted.
``how`` is ``"reset"`` (the default: the connection is closed without an answer; botocore
raises ``ConnectionClosedError``) or ``"internal_error"`` (HTTP 500 ``InternalError``,
which retry policies retry). Absent ``operations``/``regions`` = any. A client that
retries such a launch without a stable ``ClientToken`` launches twice.
"""
from __future__ import annotations

import email.utils
import io
import json
import os
import re
import socket
import sys
import threading
import time
import uuid
from typing import Any, Callable
from urllib.parse import parse_qs, parse_qsl, urlencode

# moto reads these when its modules are imported: set them first.
os.environ.setdefault("MOTO_EC2_ENABLE_INSTANCE_TYPE_VALIDATION", "true")
os.environ.setdefault("MOTO_ENABLE_AMI_VALIDATION", "true")
os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")

from moto.ec2.models import ec2_backends  # noqa: E402
from moto.ec2.models.amis import Ami, AmiBackend  # noqa: E402
from moto.ec2.models.elastic_network_interfaces import NetworkInterface  # noqa: E402
from moto.ec2.models.instances import Instance, InstanceBackend, StateReason  # noqa: E402
from moto.ec2.models.instance_types import INSTANCE_TYPES  # noqa: E402
from moto.moto_api._internal import moto_api_backend  # noqa: E402
from moto.server import DomainDispatcherApplication, create_backend_app  # noqa: E402
from moto.ssm.models import Parameter, ParameterDict  # noqa: E402
from werkzeug.serving import WSGIRequestHandler, make_server  # noqa: E402
from . import market  # noqa: E402  (the spot market's answers)

from . import events as ec2_events  # noqa: E402  (EC2's events through EventBridge)
from . import seed  # noqa: E402
from .imds import InstanceMetadata, after, imds_time as imds_time_of  # noqa: E402
from .clock import CLOCK, install as install_clock, parse_time  # noqa: E402  (emulated time: clock.py)

ACCOUNT_ID = "123456789012"

# Error codes and HTTP statuses as EC2 answers them. InsufficientInstanceCapacity is
# a server error (500) on EC2; botocore's default retry policy retries 500s, so a
# client that wants a fast fallback must not leave that policy on for launches.
LAUNCH_ERROR_STATUS = {
    "InsufficientInstanceCapacity": 500,
    "InsufficientHostCapacity": 500,
    "InsufficientReservedInstanceCapacity": 500,
    "SpotMaxPriceTooLow": 400,
    "MaxSpotInstanceCountExceeded": 400,
    "InstanceLimitExceeded": 400,
    "VcpuLimitExceeded": 400,
    "Unsupported": 400,
}
LAUNCH_ERROR_MESSAGE = {
    "InsufficientInstanceCapacity": (
        "We currently do not have sufficient {type} capacity in the Availability Zone you "
        "requested ({az}). Our system will be working on provisioning additional capacity. "
        "You can currently get {type} capacity by not specifying an Availability Zone in "
        "your request or choosing a different Availability Zone."
    ),
    "SpotMaxPriceTooLow": "Your Spot request price of {price} is lower than the minimum required Spot request fulfillment price.",
    "MaxSpotInstanceCountExceeded": "Max spot instance count exceeded",
}
LAUNCH_OPERATIONS = {"RunInstances", "CreateFleet", "RequestSpotInstances", "RequestSpotFleet"}
# Calls whose ClientToken makes a repeat answer the first answer again (EC2's "Ensuring
# idempotency in Amazon EC2 API requests"; moto ignores the token).
IDEMPOTENT_OPERATIONS = LAUNCH_OPERATIONS
IDEMPOTENT_MISMATCH = (
    "Arguments on this idempotent request are inconsistent with arguments used in previous request(s)."
)
# Request parameters that are not part of what a repeat must match.
_NOT_COMPARED = {"Action", "Version", "ClientToken"}
DROP_MODES = ("reset", "internal_error")


# --------------------------------------------------------------------------- seeding
class _EmulatedDate(WSGIRequestHandler):
    """Answers carry the emulated time in their ``Date`` header, as AWS's carry AWS's time (the
    engine takes it as "now" for the pool history; clock.py)."""

    def date_time_string(self, timestamp: float | None = None) -> str:
        if timestamp is not None:
            return super().date_time_string(timestamp)
        return email.utils.format_datetime(CLOCK.now(), usegmt=True)


def _patch_moto() -> None:
    """Teach moto's EC2 and SSM backends about Canonical's images, once."""
    if getattr(AmiBackend, "_bacalhau_seeded", False):
        return
    original_load = AmiBackend._load_amis

    def _load_amis(self: Any) -> None:
        original_load(self)
        region = self.region_name
        zone = f"{region}a"
        for spec in seed.ubuntu_images(region):
            spec = dict(spec, region_name=zone)
            self.amis[spec["ami_id"]] = Ami(self, **spec)

    AmiBackend._load_amis = _load_amis  # type: ignore[method-assign]

    original_check = ParameterDict._check_loading_status

    def _check_loading_status(self: Any, key: str) -> None:
        original_check(self, key)
        if str(key or "").startswith("/aws/service/canonical") and not getattr(
            self, "_bacalhau_canonical_loaded", False
        ):
            self._bacalhau_canonical_loaded = True
            for name, value in seed.current_ubuntu_parameters(self.region_name).items():
                super(ParameterDict, self).__getitem__(name).append(
                    Parameter(
                        account_id=self.account_id,
                        name=name,
                        value=value,
                        parameter_type="String",
                        description=None,
                        allowed_pattern=None,
                        keyid=None,
                        last_modified_date=_now(),
                        version=1,
                        data_type="aws:ec2:image",
                    )
                )

    ParameterDict._check_loading_status = _check_loading_status  # type: ignore[method-assign]

    market.patch_moto()  # offerings, spot prices, placement scores, requirements (market.py)

    original_run = InstanceBackend.run_instances

    def run_instances(self: Any, image_id: str, count: int, user_data: Any, security_group_names: list,
                      **kwargs: Any) -> Any:
        # EC2 tags the network interfaces it makes for the launch with TagSpecifications'
        # "network-interface" tags (moto applies only "instance" and "volume" ones), and the
        # primary interface it makes from SubnetId is deleted on termination (moto keeps it).
        eni_tags = dict((kwargs.get("tags") or {}).get("network-interface") or {})
        given = {int(n.get("DeviceIndex", 0)): n for n in kwargs.get("nics") or []}
        reservation = original_run(self, image_id, count, user_data, security_group_names, **kwargs)
        for instance in reservation.instances:
            for index, nic in instance.nics.items():
                spec = given.get(index) or {}
                if spec.get("NetworkInterfaceId"):
                    continue  # an existing interface, attached: EC2 leaves it as it is
                if eni_tags:
                    nic.add_tags(eni_tags)
                if index == 0 and "DeleteOnTermination" not in spec:
                    nic.delete_on_termination = True
            if instance.public_ip and instance.public_ip in ADDRESS_POOL.addresses:
                IMDS.launched(instance, instance.public_ip)  # a test host's address: its IMDS
        return reservation

    InstanceBackend.run_instances = run_instances  # type: ignore[method-assign]

    original_terminate = Instance.terminate

    def terminate(self: Any) -> Any:
        # EC2 detaches what survives a termination (interfaces not deleted with it); moto
        # leaves them attached, in use by a terminated instance, for ever.
        kept = [nic for nic in self.nics.values() if not nic.delete_on_termination]
        state = original_terminate(self)
        for nic in kept:
            self.detach_eni(nic)
        IMDS.terminated(self)
        return state

    Instance.terminate = terminate  # type: ignore[method-assign]
    AmiBackend._bacalhau_seeded = True  # type: ignore[attr-defined]


class AddressPool:
    """Public addresses handed to new instances instead of moto's random 54.x ones.

    Empty (the default) means moto's own fake addresses. The sandbox fills it with
    the addresses of its test hosts, so that an emulated instance's public IP is a
    real machine on this host's private bridge, and the unchanged playbooks and
    inventory reach it over SSH. An address is free again once its instance is gone.
    """

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.addresses: list[str] = []

    def in_use(self) -> set[str]:
        used = set()
        for backend in dict.values(ec2_backends[ACCOUNT_ID]):
            for eni in backend.enis.values():
                if eni.public_ip:
                    used.add(eni.public_ip)
        return used

    def free(self) -> list[str]:
        with self.lock:
            used = self.in_use()
            return [a for a in self.addresses if a not in used]

    def take(self) -> str | None:
        free = self.free()
        return free[0] if free else None


ADDRESS_POOL = AddressPool()
# What the instances on test hosts find in their IMDS (imds.py): written when told a directory.
IMDS = InstanceMetadata()


def _patch_addresses() -> None:
    if getattr(NetworkInterface, "_bacalhau_pool", False):
        return
    original = NetworkInterface.check_auto_public_ip

    def check_auto_public_ip(self: Any) -> None:
        with ADDRESS_POOL.lock:
            original(self)
            if self.public_ip and ADDRESS_POOL.addresses:
                self.public_ip = None  # so that in_use() does not count moto's random one
                self.public_ip = ADDRESS_POOL.take()

    NetworkInterface.check_auto_public_ip = check_auto_public_ip  # type: ignore[method-assign]
    NetworkInterface._bacalhau_pool = True  # type: ignore[attr-defined]


def interrupt_instances(region: str, instance_ids: list[str]) -> list[str]:
    """Terminate instances the way a spot interruption does (state reason and all)."""
    backend = ec2_backends[ACCOUNT_ID][region]
    done = []
    for instance_id in instance_ids:
        instance = backend.get_instance(instance_id)
        instance.terminate()
        instance._reason = "Spot instance termination"
        instance.state_reason = StateReason(
            "Server.SpotInstanceTermination: Spot instance termination", "Server.SpotInstanceTermination"
        )
        IMDS.terminated(instance)
        done.append(instance_id)
    return done


def live_instances(region: str, instance_ids: list[str]) -> list[str]:
    """The given instances, checked to exist (InvalidInstanceID.NotFound otherwise), minus
    those already terminated."""
    backend = ec2_backends[ACCOUNT_ID][region]
    live = []
    for instance_id in instance_ids:
        try:
            instance = backend.get_instance(instance_id)
        except Exception as exc:  # moto's InvalidInstanceIdError
            raise ValueError(f"{region}: no instance {instance_id} ({exc})") from exc
        if instance.state != "terminated":
            live.append(instance_id)
    return live


def _now():
    from moto.core.utils import utcnow

    return utcnow()


# --------------------------------------------------------------------------- faults
class Faults:
    """Fault state shared by every request thread."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.clear()

    def clear(self) -> None:
        self.capacity: list[dict[str, Any]] = []
        self.throttle: dict[str, Any] = {"count": 0, "operations": [], "regions": []}
        self.latency_ms: float = 0.0
        self.expired_credentials: bool = False
        self.drop_response: dict[str, Any] = {"count": 0, "operations": [], "regions": [], "how": "reset"}

    def as_dict(self) -> dict[str, Any]:
        return {"capacity": self.capacity, "throttle": self.throttle, "latency_ms": self.latency_ms,
                "expired_credentials": self.expired_credentials, "drop_response": self.drop_response}

    def update(self, body: dict[str, Any]) -> None:
        unknown = set(body) - {"capacity", "throttle", "latency_ms", "expired_credentials", "drop_response"}
        if unknown:
            raise ValueError(f"unknown fault kinds: {sorted(unknown)}")
        for rule in body.get("capacity") or []:
            if "region" not in rule:
                raise ValueError("a capacity rule needs a region")
            code = rule.setdefault("code", "InsufficientInstanceCapacity")
            if code not in LAUNCH_ERROR_STATUS:
                raise ValueError(f"unknown launch error code {code}; known: {sorted(LAUNCH_ERROR_STATUS)}")
            self.capacity.append(rule)
        if "throttle" in body:
            throttle = body["throttle"] or {}
            self.throttle = {
                "count": int(throttle.get("count", 0)),
                "operations": list(throttle.get("operations") or []),
                "regions": list(throttle.get("regions") or []),
            }
        if "latency_ms" in body:
            self.latency_ms = float(body["latency_ms"] or 0)
        if "expired_credentials" in body:
            self.expired_credentials = bool(body["expired_credentials"])
        if "drop_response" in body:
            drop = body["drop_response"] or {}
            how = drop.get("how") or "reset"
            if how not in DROP_MODES:
                raise ValueError(f"drop_response: unknown how {how!r}; known: {', '.join(DROP_MODES)}")
            self.drop_response = {
                "count": int(drop.get("count", 0)),
                "operations": list(drop.get("operations") or []),
                "regions": list(drop.get("regions") or []),
                "how": how,
            }

    def _take(self, rule: dict[str, Any], operation: str, region: str) -> bool:
        with self.lock:
            if rule["count"] <= 0:
                return False
            if rule["operations"] and operation not in rule["operations"]:
                return False
            if rule["regions"] and region not in rule["regions"]:
                return False
            rule["count"] -= 1
            return True

    def take_throttle(self, operation: str, region: str) -> bool:
        return self._take(self.throttle, operation, region)

    def take_drop(self, operation: str, region: str) -> str | None:
        """How to lose this call's answer, or None to give it."""
        rule = self.drop_response
        return rule["how"] if self._take(rule, operation, region) else None

    def capacity_rules(self) -> list[dict[str, Any]]:
        """The capacity rules in force, copied (for reading; nothing is consumed)."""
        with self.lock:
            return [dict(rule) for rule in self.capacity]

    def match_capacity(self, region: str, az: str | None, itype: str | None, market: str) -> dict | None:
        with self.lock:
            for rule in self.capacity:
                if rule["region"] != region:
                    continue
                if rule.get("availability_zone") and rule["availability_zone"] != az:
                    continue
                if rule.get("instance_type") and rule["instance_type"] != itype:
                    continue
                if rule.get("market") and rule["market"] != market:
                    continue
                if rule.get("count") is not None:
                    if rule["count"] <= 0:
                        continue
                    rule["count"] -= 1
                return dict(rule)
        return None


class Calls:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.clear()

    def clear(self) -> None:
        with self.lock:
            self.log: list[dict[str, Any]] = []
            self.t0 = time.monotonic()

    def add(self, entry: dict[str, Any]) -> None:
        with self.lock:
            self.log.append(entry)

    def summary(self) -> dict[str, Any]:
        with self.lock:
            log = list(self.log)
        by_op: dict[str, int] = {}
        by_region: dict[str, int] = {}
        for e in log:
            by_op[e["operation"]] = by_op.get(e["operation"], 0) + 1
            by_region[e["region"]] = by_region.get(e["region"], 0) + 1
        return {"total": len(log), "by_operation": by_op, "by_region": by_region, "log": log}


# --------------------------------------------------------------------------- middleware
_CRED_RE = re.compile(r"Credential=[^/]+/\d+/([a-z0-9-]+)/([a-z0-9-]+)/")


def _xml_error(code: str, message: str, status: int) -> tuple[int, list[tuple[str, str]], bytes]:
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error>'
        f"<Code>{code}</Code><Message>{_xml_escape(message)}</Message></Error></Errors>"
        f"<RequestID>{uuid.uuid4()}</RequestID></Response>"
    ).encode()
    return status, [("Content-Type", "text/xml;charset=UTF-8")], body


def _query_error(code: str, message: str, status: int) -> tuple[int, list[tuple[str, str]], bytes]:
    """The error shape of query-protocol services other than EC2 (STS, IAM...)."""
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n<ErrorResponse><Error><Type>Sender</Type>'
        f"<Code>{code}</Code><Message>{_xml_escape(message)}</Message></Error>"
        f"<RequestId>{uuid.uuid4()}</RequestId></ErrorResponse>"
    ).encode()
    return status, [("Content-Type", "text/xml;charset=UTF-8")], body


def _json_error(code: str, message: str, status: int) -> tuple[int, list[tuple[str, str]], bytes]:
    body = json.dumps({"__type": code, "message": message}).encode()
    return status, [("Content-Type", "application/x-amz-json-1.1"), ("x-amzn-ErrorType", code)], body


def _xml_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _agent(user_agent: str) -> str:
    """Who made a call: this collection's own clients, amazon.aws (Ansible's modules and
    plugins), or anything else (tests setting the scene, the benchmarks' checks)."""
    if "bacalhau.aws_spot" in user_agent:
        return "bacalhau.aws_spot"
    if "Ansible/" in user_agent:
        return "amazon.aws"
    return "other"


_STATUS_TEXT = {200: "OK", 400: "Bad Request", 404: "Not Found", 500: "Internal Server Error", 503: "Service Unavailable"}


class EmulatorApp:
    """WSGI middleware in front of moto's dispatcher."""

    def __init__(self, inner: Callable) -> None:
        self.inner = inner
        self.faults = Faults()
        self.calls = Calls()
        self.moto_lock = threading.Lock()
        # (region, operation, ClientToken) -> (the parameters compared, status, headers, body)
        self.tokens: dict[tuple[str, str, str], tuple[Any, str, list, list]] = {}
        self.reclaims: list[threading.Timer] = []  # spot interruptions whose notice is running

    # -- WSGI entry
    def __call__(self, environ: dict, start_response: Callable) -> Any:
        path = environ.get("PATH_INFO", "")
        if path.startswith("/_emulator/"):
            return self._control(environ, start_response, path[len("/_emulator/"):])

        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        environ["wsgi.input"] = io.BytesIO(body)
        region, service = self._scope(environ)
        operation, params, protocol = self._operation(environ, body)

        start = time.monotonic()
        if self.faults.latency_ms:
            time.sleep(self.faults.latency_ms / 1000.0)

        # moto is not safe for concurrent requests (seen: "dictionary changed size during
        # iteration" in its serializer under parallel calls), so requests reach it one at a
        # time. The added latency above is outside the lock: calls still overlap in time as
        # on AWS, only moto's own (CPU-bound, GIL-held) work is serialised.
        waited = time.monotonic()
        if service == "sqs" and operation == "ReceiveMessage" and protocol == "json":  # long polling (events.py)
            return ec2_events.long_poll(self, environ, start_response, region, lambda env, respond: self._locked(
                env, respond, region, service, operation, params, protocol, start, waited))
        return self._locked(environ, start_response, region, service, operation, params, protocol, start, waited)

    def _locked(self, *args: Any) -> Any:
        with self.moto_lock:
            return self._dispatch(*args)

    def _dispatch(self, environ: dict, start_response: Callable, region: str, service: str, operation: str,
                  params: dict[str, str], protocol: str, start: float, waited: float) -> Any:
        entered = time.monotonic()
        error = None
        replay = None
        token_key = None
        if operation in IDEMPOTENT_OPERATIONS and params.get("ClientToken"):
            token_key = (region, operation, params["ClientToken"])
            compared = self._compared(environ)  # before the address pool or MaxCount rewrite the body
        if operation and self.faults.expired_credentials:
            # as AWS answers a request signed with an expired session token
            message = "The security token included in the request is expired"
            if protocol == "json":
                error = _json_error("ExpiredTokenException", message, 400)
            elif service == "ec2":
                error = _xml_error("RequestExpired", message, 400)
            else:
                error = _query_error("ExpiredToken", message, 403)
        elif operation and self.faults.take_throttle(operation, region):
            if protocol == "json":
                error = _json_error("ThrottlingException", "Rate exceeded", 400)
            else:
                error = _xml_error("RequestLimitExceeded", "Request limit exceeded.", 503)
        elif token_key is not None and token_key in self.tokens:
            first, status, headers, body = self.tokens[token_key]
            if first == compared:
                replay = (status, headers, body)  # the first answer again; nothing launched
            else:
                error = _xml_error("IdempotentParameterMismatch", IDEMPOTENT_MISMATCH, 400)
        elif operation in LAUNCH_OPERATIONS:
            error = self._launch_fault(region, operation, params)
            if error is None and operation == "RunInstances" and ADDRESS_POOL.addresses:
                error = self._fit_address_pool(environ, params)
            if error is None and operation == "RunInstances":
                self._fill_max_count(environ, params)

        status_code = 200
        if error is not None:
            status_code, headers, payload = error
            start_response(f"{status_code} {_STATUS_TEXT.get(status_code, 'Error')}", headers)
            result: Any = [payload]
        else:
            if replay is not None:
                status, headers, result = replay
            elif service == "pricing":  # no moto backend: the Price List service is ours (market.py)
                status, headers, result = market.price_list_answer(operation, environ["wsgi.input"].getvalue())
            else:
                status, headers, result = self._moto(environ)
                if token_key is not None and status.startswith("200"):
                    self.tokens[token_key] = (compared, status, headers, result)
            try:
                status_code = int(str(status).split()[0])
            except ValueError:
                status_code = 0
            dropped = self.faults.take_drop(operation, region) if operation else None
            if dropped is not None:
                error = True  # logged as a fault
                self._log(operation, service, region, start, entered, waited, 0 if dropped == "reset" else 500,
                          True, environ)
                if dropped == "reset":
                    # the work is done; the client never hears of it
                    sock = environ.get("werkzeug.socket")
                    if sock is not None:
                        try:
                            sock.shutdown(socket.SHUT_RDWR)
                        except OSError:
                            pass
                    raise ConnectionResetError("drop_response: the answer is lost")  # werkzeug: connection dropped
                status_code, headers, payload = _xml_error(
                    "InternalError", "An internal error has occurred", 500)
                start_response(f"500 {_STATUS_TEXT[500]}", headers)
                return [payload]
            start_response(status, headers)
        if operation:
            self._log(operation, service, region, start, entered, waited, status_code, error is not None, environ)
        return result

    def _moto(self, environ: dict) -> tuple[str, list, list]:
        """moto's answer to the request: (status line, headers, body chunks)."""
        captured: dict[str, Any] = {"status": "200 OK", "headers": []}
        written: list[bytes] = []

        def _start(status: str, headers: list, exc_info: Any = None) -> Any:
            captured["status"], captured["headers"] = status, headers
            return written.append

        inner = self.inner(environ, _start)
        try:
            result = written + list(inner)  # produced while the lock is held
        finally:
            if hasattr(inner, "close"):
                inner.close()
        return captured["status"], captured["headers"], result

    def _log(self, operation: str, service: str, region: str, start: float, entered: float, waited: float,
             status_code: int, fault: bool, environ: dict) -> None:
        now = time.monotonic()
        self.calls.add(
            {
                # the emulator's own time: waiting for moto, and moto's work (CPU, GIL held)
                "queued_ms": round(1000.0 * (entered - waited), 2),
                "service_ms": round(1000.0 * (now - entered), 2),
                "operation": operation,
                "service": service,
                "region": region,
                "start": round(start - self.calls.t0, 6),
                "end": round(now - self.calls.t0, 6),
                "status": status_code,
                "fault": fault,
                "agent": _agent(environ.get("HTTP_USER_AGENT", "")),
            }
        )

    @staticmethod
    def _compared(environ: dict) -> tuple:
        """The request's parameters that a repeat with the same ClientToken must match."""
        raw = environ["wsgi.input"].getvalue().decode("utf-8", "replace")
        return tuple(sorted((k, v) for k, v in parse_qsl(raw, keep_blank_values=True) if k not in _NOT_COMPARED))

    # -- request introspection
    @staticmethod
    def _scope(environ: dict) -> tuple[str, str]:
        m = _CRED_RE.search(environ.get("HTTP_AUTHORIZATION", ""))
        if m:
            return m.group(1), m.group(2)
        return "us-east-1", "unknown"

    @staticmethod
    def _operation(environ: dict, body: bytes) -> tuple[str, dict[str, str], str]:
        target = environ.get("HTTP_X_AMZ_TARGET")
        if target:
            return target.split(".")[-1], {}, "json"
        params: dict[str, str] = {}
        ctype = environ.get("CONTENT_TYPE", "")
        if body and "x-www-form-urlencoded" in ctype:
            params = {k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace")).items()}
        elif environ.get("QUERY_STRING"):
            params = {k: v[0] for k, v in parse_qs(environ["QUERY_STRING"]).items()}
        action = params.get("Action", "")
        return action, params, "query"

    def _launch_fault(self, region: str, operation: str, params: dict[str, str]):
        backend = ec2_backends[ACCOUNT_ID][region]
        if operation == "RunInstances":
            itype = params.get("InstanceType", "m1.small")
            subnet_id = params.get("SubnetId") or params.get("NetworkInterface.1.SubnetId")
            az = params.get("Placement.AvailabilityZone")
            if subnet_id and not az:
                try:
                    az = backend.get_subnet(subnet_id).availability_zone
                except Exception:  # unknown subnet: moto answers for it
                    az = None
            unsupported = market.unsupported_launch(region, az, itype)
            if unsupported:
                return _xml_error("Unsupported", unsupported, LAUNCH_ERROR_STATUS["Unsupported"])
            market_type = params.get("InstanceMarketOptions.MarketType") or "on-demand"
            rule = self.faults.match_capacity(region, az, itype, market_type)
            if rule:
                code = rule["code"]
                message = LAUNCH_ERROR_MESSAGE.get(code, code).format(
                    type=itype, az=az or region, price=params.get("InstanceMarketOptions.SpotOptions.MaxPrice", "")
                )
                return _xml_error(code, message, LAUNCH_ERROR_STATUS[code])
            image_id = params.get("ImageId")
            return self._architecture_mismatch(backend, image_id, itype)
        if operation == "CreateFleet":
            # moto launches only the first override; refuse the call when that one is
            # covered by a capacity rule (real EC2 would report it in the Errors list).
            itype = params.get("LaunchTemplateConfigs.1.Overrides.1.InstanceType")
            subnet_id = params.get("LaunchTemplateConfigs.1.Overrides.1.SubnetId")
            az = params.get("LaunchTemplateConfigs.1.Overrides.1.AvailabilityZone")
            if subnet_id and not az:
                try:
                    az = backend.get_subnet(subnet_id).availability_zone
                except Exception:
                    az = None
            unsupported = market.unsupported_launch(region, az, itype)
            if unsupported:
                return _xml_error("Unsupported", unsupported, LAUNCH_ERROR_STATUS["Unsupported"])
            market_type = params.get("TargetCapacitySpecification.DefaultTargetCapacityType", "on-demand")
            rule = self.faults.match_capacity(region, az, itype, market_type)
            if rule:
                return _xml_error(rule["code"], rule["code"], LAUNCH_ERROR_STATUS[rule["code"]])
        return None

    @staticmethod
    def _fit_address_pool(environ: dict, params: dict[str, str]):
        """With an address pool, launch no more instances than there are free addresses."""
        free = len(ADDRESS_POOL.free())
        try:
            min_count, max_count = int(params.get("MinCount", "1")), int(params.get("MaxCount", "1"))
        except ValueError:
            return None
        if free < min_count:
            return _xml_error(
                "InsufficientInstanceCapacity",
                f"We currently do not have sufficient capacity: the sandbox has {free} free test host(s) "
                f"and {min_count} were asked for. Start more test hosts, or ask for fewer instances.",
                500,
            )
        if max_count > free:
            raw = environ["wsgi.input"].getvalue().decode("utf-8", "replace")
            pairs = [(k, str(free) if k == "MaxCount" else v) for k, v in parse_qsl(raw, keep_blank_values=True)]
            body = urlencode(pairs).encode()
            environ["wsgi.input"] = io.BytesIO(body)
            environ["CONTENT_LENGTH"] = str(len(body))
            params["MaxCount"] = str(free)
        return None

    @staticmethod
    def _fill_max_count(environ: dict, params: dict[str, str]) -> None:
        """EC2 launches up to MaxCount when it has the capacity; moto launches MinCount.

        With no capacity fault in force, ask moto for MaxCount instances, as EC2 would
        give them.
        """
        try:
            min_count, max_count = int(params.get("MinCount", "1")), int(params.get("MaxCount", "1"))
        except ValueError:
            return
        if max_count <= min_count or "x-www-form-urlencoded" not in environ.get("CONTENT_TYPE", ""):
            return
        raw = environ["wsgi.input"].getvalue().decode("utf-8", "replace")
        pairs = [(k, str(max_count) if k == "MinCount" else v) for k, v in parse_qsl(raw, keep_blank_values=True)]
        body = urlencode(pairs).encode()
        environ["wsgi.input"] = io.BytesIO(body)
        environ["CONTENT_LENGTH"] = str(len(body))

    @staticmethod
    def _architecture_mismatch(backend: Any, image_id: str | None, itype: str):
        if not image_id or itype not in INSTANCE_TYPES:
            return None
        ami = backend.amis.get(image_id)
        if ami is None or not ami.architecture:
            return None
        supported = INSTANCE_TYPES[itype]["ProcessorInfo"]["SupportedArchitectures"]
        if ami.architecture in supported:
            return None
        message = (
            f"The architecture '{supported[0]}' of the specified instance type does not match the "
            f"architecture '{ami.architecture}' of the specified AMI. Specify an instance type and an "
            "AMI that have matching architectures, and try again. You can use "
            "'describe-instance-types' or 'describe-images' to discover the architecture of the "
            "instance type or AMI."
        )
        return _xml_error("InvalidParameterValue", message, 400)

    # -- control API
    def _control(self, environ: dict, start_response: Callable, what: str) -> Any:
        method = environ.get("REQUEST_METHOD", "GET")
        length = int(environ.get("CONTENT_LENGTH") or 0)
        raw = environ["wsgi.input"].read(length) if length else b""
        try:
            body = json.loads(raw) if raw.strip() else {}
            status, answer = self._dispatch_control(method, what.strip("/"), body)
        except (ValueError, TypeError, KeyError) as exc:
            status, answer = 400, {"error": str(exc)}
        payload = json.dumps(answer, default=str).encode()
        start_response(f"{status} {_STATUS_TEXT.get(status, 'Error')}", [("Content-Type", "application/json")])
        return [payload]

    def _interrupt(self, region: str, instance_ids: list[str], notice_seconds: float) -> dict[str, Any]:
        """A spot interruption: the notice in the instances' IMDS now, reclaimed after it."""
        if notice_seconds < 0:
            raise ValueError("notice_seconds must be >= 0")
        with self.moto_lock:
            ids = live_instances(region, instance_ids)
            at = after(notice_seconds)
            shown = {i: IMDS.notice(i, at) for i in ids}
            ec2_events.interruption_warnings(region, ids)  # the reclaim sends the state changes
            if notice_seconds == 0:
                interrupt_instances(region, ids)
        if notice_seconds > 0:  # at the clock's time (real time passing, or POST /_emulator/clock)
            CLOCK.schedule(at, f"reclaim {', '.join(ids)} in {region}", lambda: self._reclaim(region, ids))
        return {"interrupted": ids, "notice": {"action": "terminate", "time": imds_time_of(at)},
                "reclaim_at": imds_time_of(at), "notice_seconds": notice_seconds,
                "in_imds": [i for i, n in shown.items() if n]}

    def _later(self, what: str, body: dict) -> dict[str, Any]:
        """An interruption or a rebalance recommendation at a chosen (emulated) time."""
        at = parse_time(body["at"]) if "at" in body else CLOCK.after(float(body["after_seconds"]))
        now = {k: v for k, v in body.items() if k not in ("at", "after_seconds")}
        with self.moto_lock:
            live_instances(body["region"], list(body["instance_ids"]))  # unknown ids refused now

        def happen() -> None:
            try:
                self._dispatch_control("POST", what, now)
            except ValueError:  # gone meanwhile (a reset)
                pass

        return {"scheduled": CLOCK.schedule(at, f"{what} {', '.join(body['instance_ids'])} in {body['region']}",
                                            happen)}

    def _reclaim(self, region: str, instance_ids: list[str]) -> None:
        with self.moto_lock:
            try:
                interrupt_instances(region, live_instances(region, instance_ids))
            except ValueError:  # gone meanwhile (a reset)
                pass

    def _dispatch_control(self, method: str, what: str, body: dict) -> tuple[int, Any]:
        if what == "health":
            return 200, {"status": "ok"}
        if what == "reset" and method == "POST":
            with self.moto_lock:
                moto_api_backend.reset()
            with ADDRESS_POOL.lock:
                ADDRESS_POOL.addresses = []
            for timer in self.reclaims:
                timer.cancel()
            self.reclaims = []
            CLOCK.reset()
            IMDS.clear()
            self.faults.clear()
            self.calls.clear()
            self.tokens.clear()
            market.MARKET.clear()
            return 200, {"reset": True}
        if what == "faults":
            if method == "GET":
                return 200, self.faults.as_dict()
            if method == "POST":
                self.faults.update(body)
                return 200, self.faults.as_dict()
            if method == "DELETE":
                self.faults.clear()
                return 200, self.faults.as_dict()
        if what == "address_pool":
            if method == "POST":
                addresses = [str(a) for a in body.get("addresses", [])]
                for address in addresses:
                    if not re.fullmatch(r"\d+\.\d+\.\d+\.\d+", address):
                        raise ValueError(f"not an IPv4 address: {address}")
                with ADDRESS_POOL.lock:
                    ADDRESS_POOL.addresses = addresses
            with self.moto_lock:  # free() reads moto's backends
                return 200, {"addresses": ADDRESS_POOL.addresses, "free": ADDRESS_POOL.free()}
        if what == "market":
            if method == "POST":
                market.MARKET.update(body)
            elif method == "DELETE":
                market.MARKET.clear()
            return 200, market.MARKET.as_dict()
        if what in ("interrupt", "rebalance") and method == "POST" and ("at" in body or "after_seconds" in body):
            return 200, self._later(what, body)
        if what == "clock":
            if method == "POST":
                return 200, (CLOCK.move_to(parse_time(body["to"])) if "to" in body
                             else CLOCK.advance(float(body["advance_seconds"])))
            return 200, CLOCK.as_dict()
        if what == "interrupt" and method == "POST":
            return 200, self._interrupt(body["region"], list(body["instance_ids"]), float(body.get("notice_seconds") or 0))
        if what == "rebalance" and method == "POST":
            with self.moto_lock:
                ids = live_instances(body["region"], list(body["instance_ids"]))
                at = after(0)
                shown = {i: IMDS.rebalance(i, at) for i in ids}
                ec2_events.rebalance_recommendations(body["region"], ids)
            return 200, {"recommended": ids, "recommendation": next(iter(shown.values()), None),
                         "in_imds": [i for i, r in shown.items() if r]}
        if what == "imds":
            if method == "POST":
                IMDS.configure(body.get("state_dir") or None)
            return 200, IMDS.summary()
        if what == "calls":
            if method == "GET":
                return 200, self.calls.summary()
            if method == "DELETE":
                self.calls.clear()
                return 200, {"total": 0}
        return 404, {"error": f"no control endpoint {method} /_emulator/{what}"}


def make_app() -> EmulatorApp:
    install_clock()  # launch times, end times and listings on the emulator's clock (clock.py)
    _patch_moto()
    _patch_addresses()
    ec2_events.patch_moto()  # EC2's events through moto's EventBridge (events.py)
    app = EmulatorApp(DomainDispatcherApplication(create_backend_app))
    market.MARKET.capacity_rules = app.faults.capacity_rules  # placement scores see capacity faults
    return app


def serve(host: str = "127.0.0.1", port: int = 0, on_ready: Callable[[str], None] | None = None) -> None:
    """Serve until interrupted. Only loopback addresses are accepted."""
    if not host.startswith("127.") and host not in ("localhost", "::1"):
        raise SystemExit(f"the emulator listens on loopback only, not {host}")
    import logging

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    # moto's work holds the GIL for tens of milliseconds per call; with Python's default
    # 5 ms switch interval a request arriving meanwhile waits that long for each step of
    # being read, and calls sent together are logged (and answered) as if sent apart.
    sys.setswitchinterval(0.0005)
    app = make_app()
    server = make_server(host, port, app, threaded=True, request_handler=_EmulatedDate)
    url = f"http://{host}:{server.server_port}"
    if on_ready:
        on_ready(url)
    try:
        server.serve_forever()
    finally:
        server.server_close()
