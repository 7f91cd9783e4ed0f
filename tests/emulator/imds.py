"""What each emulated instance's metadata service (IMDS) answers, for the test hosts.

An instance launched with an address from the emulator's address pool runs on the test host that
has that address (the sandbox binding, ``server.AddressPool``). Once told a directory
(``POST /_emulator/imds {"state_dir": ...}``, normally ``$BACALHAU_TESTHOSTS_STATE/imds``), the
emulator writes ``<state_dir>/<address>.json`` for every such instance, and the IMDS stand-in
that ``tests/hosts/testhosts.sh`` runs in that host's network namespace
(``tests/hosts/imds_standin.py``) serves it at 169.254.169.254, reading it on every request.
The file is rewritten atomically whenever the emulator changes what IMDS would say:

* at launch: ``instance-id``, ``instance-type``, ``instance-life-cycle`` (``spot`` when launched
  with spot market options, else ``on-demand``), ``placement/region``,
  ``placement/availability-zone``, ``ami-id``, ``local-ipv4``, ``public-ipv4``;
* on a spot interruption notice: ``spot/instance-action`` = ``{"action": "terminate", "time":
  <when the instance is reclaimed>}`` (404 before, as on EC2);
* on a rebalance recommendation: ``events/recommendations/rebalance`` = ``{"noticeTime": ...}``;
* at termination (reclaimed, or ``TerminateInstances``): ``"state": "terminated"`` and the state
  reason's code; the IMDS stand-in then powers its host off (a terminated instance's machine
  goes away).

Times are UTC, ``YYYY-MM-DDTHH:MM:SSZ``, as IMDS writes them.
"""
from __future__ import annotations

import json
import os
import threading
from datetime import datetime, timedelta, timezone
from typing import Any


def imds_time(at: datetime) -> str:
    return at.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class InstanceMetadata:
    """Per-address IMDS documents of the instances that run on test hosts."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.state_dir: str | None = None
        self.records: dict[str, dict[str, Any]] = {}  # address -> document
        self.by_instance: dict[str, str] = {}  # instance id -> address

    # -- configuration
    def configure(self, state_dir: str | None) -> None:
        with self.lock:
            self.state_dir = state_dir
            if state_dir:
                os.makedirs(state_dir, exist_ok=True)
                for address in self.records:
                    self._write(address)

    def clear(self) -> None:
        """Forget every document, and remove the files this emulator wrote."""
        with self.lock:
            if self.state_dir:
                for address in self.records:
                    try:
                        os.remove(self._path(address))
                    except OSError:
                        pass
            self.records.clear()
            self.by_instance.clear()
            self.state_dir = None

    def summary(self) -> dict[str, Any]:
        with self.lock:
            return {"state_dir": self.state_dir, "instances": json.loads(json.dumps(self.records))}

    # -- what happens to instances
    def launched(self, instance: Any, address: str) -> None:
        backend = instance.ec2_backend
        meta = {
            "instance-id": instance.id,
            "instance-type": instance.instance_type,
            "instance-life-cycle": "spot" if getattr(instance, "lifecycle", None) == "spot" else "on-demand",
            "ami-id": instance.image_id,
            "placement/region": backend.region_name,
            "placement/availability-zone": instance.placement.zone,
            "local-ipv4": instance.private_ip or "",
            "public-ipv4": address,
        }
        with self.lock:
            self.records[address] = {"state": "running", "meta-data": meta}
            self.by_instance[instance.id] = address
            self._write(address)

    def notice(self, instance_id: str, at: datetime) -> dict[str, str] | None:
        """A spot interruption notice: the instance is reclaimed at ``at``."""
        action = {"action": "terminate", "time": imds_time(at)}
        return action if self._set(instance_id, "spot/instance-action", action) else None

    def rebalance(self, instance_id: str, at: datetime) -> dict[str, str] | None:
        recommendation = {"noticeTime": imds_time(at)}
        return recommendation if self._set(instance_id, "events/recommendations/rebalance", recommendation) else None

    def terminated(self, instance: Any) -> None:
        with self.lock:
            address = self.by_instance.get(instance.id)
            record = self.records.get(address or "")
            if record is None or record["meta-data"].get("instance-id") != instance.id:
                return  # the address went to another instance since
            record["state"] = "terminated"
            record["state-reason"] = getattr(instance.state_reason, "code", "") or ""
            self._write(address)

    # -- files
    def _set(self, instance_id: str, key: str, value: Any) -> bool:
        with self.lock:
            address = self.by_instance.get(instance_id)
            record = self.records.get(address or "")
            if record is None or record["meta-data"].get("instance-id") != instance_id:
                return False
            record["meta-data"][key] = value
            self._write(address)
            return True

    def _path(self, address: str) -> str:
        return os.path.join(self.state_dir or "", f"{address}.json")

    def _write(self, address: str) -> None:
        if not self.state_dir:
            return
        path = self._path(address)
        tmp = f"{path}.tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(self.records[address], f, indent=1)
        os.replace(tmp, path)


def after(seconds: float) -> datetime:
    """``seconds`` after the emulator's now (its clock, ``clock.py``, which tests move forward)."""
    from .clock import CLOCK

    return CLOCK.now() + timedelta(seconds=seconds)
