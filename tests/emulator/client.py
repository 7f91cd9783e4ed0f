"""Start the emulator in a child process and drive its control API.

Used by the pytest fixtures (``tests/conftest.py``), the benchmarks and the
sandbox. Nothing here talks to anything but loopback.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]


def aws_env(url: str, region: str = "us-east-1") -> dict[str, str]:
    """Environment that points boto3, amazon.aws and our modules at the emulator only."""
    return {
        "AWS_ENDPOINT_URL": url,
        "AWS_URL": url,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": region,
        "AWS_REGION": region,
        # no profile, no shared files: a slip can never pick up real credentials
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "AWS_EC2_METADATA_DISABLED": "true",
    }


SCRUBBED_VARS = ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN")


class Emulator:
    """A running emulator process and a client for its control API."""

    def __init__(self, url: str, process: subprocess.Popen | None = None) -> None:
        if not url.startswith(("http://127.", "http://localhost", "http://[::1]")):
            raise ValueError(f"refusing a non-loopback emulator URL: {url}")
        self.url = url.rstrip("/")
        self.process = process

    # -- lifecycle
    @classmethod
    def start(cls, port: int = 0, timeout: float = 60.0) -> "Emulator":
        tmp = tempfile.mkdtemp(prefix="bacalhau-emulator-")
        ready = os.path.join(tmp, "url")
        log = open(os.path.join(tmp, "emulator.log"), "wb")
        env = {k: v for k, v in os.environ.items() if k not in SCRUBBED_VARS}
        env.update(aws_env("http://127.0.0.1:1"))  # never real AWS, even by accident
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.emulator", "--port", str(port), "--ready-file", ready],
            cwd=REPO_ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while not os.path.exists(ready):
            if proc.poll() is not None:
                raise RuntimeError(f"emulator exited early; see {log.name}")
            if time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError(f"emulator did not start in {timeout}s; see {log.name}")
            time.sleep(0.05)
        with open(ready, encoding="utf-8") as f:
            emulator = cls(f.read().strip(), proc)
        emulator.log_path = log.name
        return emulator

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()

    @property
    def env(self) -> dict[str, str]:
        return aws_env(self.url)

    # -- control API
    def _call(self, method: str, path: str, body: Any = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"{self.url}/_emulator/{path}", data=data, method=method)
        req.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(req, timeout=30) as resp:  # loopback only
            return json.loads(resp.read())

    def reset(self) -> None:
        self._call("POST", "reset", {})

    def faults(self) -> dict:
        return self._call("GET", "faults")

    def set_faults(self, **faults: Any) -> dict:
        return self._call("POST", "faults", faults)

    def clear_faults(self) -> dict:
        return self._call("DELETE", "faults")

    def capacity_error(self, region: str, availability_zone: str | None = None,
                       instance_type: str | None = None, market: str | None = None,
                       code: str = "InsufficientInstanceCapacity", count: int | None = None) -> dict:
        rule = {"region": region, "code": code}
        for key, value in (("availability_zone", availability_zone), ("instance_type", instance_type),
                           ("market", market), ("count", count)):
            if value is not None:
                rule[key] = value
        return self.set_faults(capacity=[rule])

    def throttle(self, count: int, operations: list[str] | None = None, regions: list[str] | None = None) -> dict:
        return self.set_faults(throttle={"count": count, "operations": operations or [], "regions": regions or []})

    def drop_response(self, operations: list[str] | None = None, count: int = 1, regions: list[str] | None = None,
                      how: str = "reset") -> dict:
        """The next ``count`` matching calls are carried out and their answer lost (``how``:
        ``reset`` closes the connection, ``internal_error`` answers HTTP 500)."""
        return self.set_faults(drop_response={"count": count, "operations": operations or [],
                                              "regions": regions or [], "how": how})

    def expire_credentials(self, expired: bool = True) -> dict:
        return self.set_faults(expired_credentials=expired)

    def latency(self, ms: float) -> dict:
        return self.set_faults(latency_ms=ms)

    def address_pool(self, addresses: list[str]) -> dict:
        return self._call("POST", "address_pool", {"addresses": list(addresses)})

    def interrupt(self, region: str, instance_ids: list[str], notice_seconds: float = 0,
                  at: str | None = None, after_seconds: float | None = None) -> dict:
        """A spot interruption. ``notice_seconds`` 0: reclaimed at once (``terminated``,
        ``Server.SpotInstanceTermination``). N > 0: the notice (``{"action": "terminate",
        "time": now + N}``) shows in the instances' IMDS at once, they stay ``running`` and are
        reclaimed N seconds later (EC2 gives two minutes: 120). ``at`` (ISO time) or
        ``after_seconds``: all of that at that emulated time instead (see :meth:`advance`)."""
        body = {"region": region, "instance_ids": list(instance_ids)}
        if notice_seconds:
            body["notice_seconds"] = notice_seconds
        if at is not None:
            body["at"] = at
        if after_seconds is not None:
            body["after_seconds"] = after_seconds
        return self._call("POST", "interrupt", body)

    def rebalance(self, region: str, instance_ids: list[str], at: str | None = None,
                  after_seconds: float | None = None) -> dict:
        """A rebalance recommendation in the instances' IMDS (``{"noticeTime": now}``), now or
        at a chosen emulated time."""
        body = {"region": region, "instance_ids": list(instance_ids)}
        if at is not None:
            body["at"] = at
        if after_seconds is not None:
            body["after_seconds"] = after_seconds
        return self._call("POST", "rebalance", body)

    # -- the emulated clock (clock.py)
    def clock(self) -> dict:
        """``{"now", "offset_seconds", "scheduled": [{"at", "what"}]}``."""
        return self._call("GET", "clock")

    def advance(self, seconds: float) -> dict:
        """Move the emulated clock ``seconds`` forward, carrying out what was scheduled meanwhile
        (``done``), each at its own time."""
        return self._call("POST", "clock", {"advance_seconds": seconds})

    def imds(self, state_dir: str | None = None) -> dict:
        """Write the IMDS documents of instances on test hosts to ``state_dir/<address>.json``
        (``tests/emulator/imds.py``; the test hosts' IMDS stand-ins read them); ``None`` only
        reads them: ``{"state_dir", "instances": {address: document}}``."""
        if state_dir is None:
            return self._call("GET", "imds")
        return self._call("POST", "imds", {"state_dir": str(state_dir)})

    # -- the spot market (market.py): every rule is added after the ones in force
    def market(self) -> dict:
        return self._call("GET", "market")

    def set_market(self, **rules: Any) -> dict:
        """``placement_scores=[...]``, ``spot_prices=[...]``, ``offerings=[...]``, ``on_demand_prices=[...]``."""
        return self._call("POST", "market", rules)

    def clear_market(self) -> dict:
        return self._call("DELETE", "market")

    @staticmethod
    def _rule(region: str | None, availability_zone: str | None, instance_type: str | None,
              **values: Any) -> dict:
        rule = {k: v for k, v in (("region", region), ("availability_zone", availability_zone),
                                  ("instance_type", instance_type)) if v is not None}
        rule.update(values)
        return rule

    def placement_score(self, region: str, score: int, availability_zone: str | None = None,
                        instance_type: str | None = None) -> dict:
        """The score (1-10) of a region, or of one of its zones (name or id), for one type or all."""
        return self.set_market(placement_scores=[self._rule(region, availability_zone, instance_type, score=score)])

    def spot_price(self, region: str, price: float | None = None, factor: float | None = None,
                   availability_zone: str | None = None, instance_type: str | None = None) -> dict:
        """A fixed spot price (USD/hour, the same at every time) or a factor on the seeded one."""
        value = {"price": price} if price is not None else {"factor": factor}
        return self.set_market(spot_prices=[self._rule(region, availability_zone, instance_type, **value)])

    def offering(self, region: str, offered: bool, availability_zone: str | None = None,
                 instance_type: str | None = None) -> dict:
        """Offer (or withdraw) a type, or every type, in a zone or a whole region."""
        return self.set_market(offerings=[self._rule(region, availability_zone, instance_type, offered=offered)])

    def on_demand_price(self, instance_type: str, price: float | None, region: str | None = None) -> dict:
        """The Price List's Linux on-demand price (USD/hour; None = no product) in a region or all."""
        return self.set_market(on_demand_prices=[self._rule(region, None, instance_type, price=price)])

    def calls(self) -> dict:
        return self._call("GET", "calls")

    def reset_calls(self) -> None:
        self._call("DELETE", "calls")
