"""The emulator's clock: real time plus an offset that tests move forward, and what happens at
chosen (emulated) times.

Everything in the emulated world that has a time reads it here: instances' ``LaunchTime``
and the time in a ``User initiated (...)`` ``StateTransitionReason`` (moto's ``utcnow``, as
moto's instance model sees it), the spot price history (``market.py``: prices step every
``PRICE_STEP`` of emulated time, and ``DescribeSpotPriceHistory`` ends at emulated now),
the IMDS notices' times and the reclaim that follows a notice.

``POST /_emulator/clock {"advance_seconds": N}`` (or ``{"to": "<ISO time>"}``, never
backwards) moves the clock forward. What was scheduled in between (a reclaim after a notice,
an interruption asked for at a chosen time: ``POST /_emulator/interrupt {..., "at": "<ISO
time>"}`` or ``"after_seconds": N``) is carried out in time order, each with the clock set to
its own time, so a terminated instance's times are those it was scheduled for. A scheduled
event also happens when real time reaches it (the clock keeps running).

Also as on EC2: a terminated instance stays listed by ``DescribeInstances`` (without
instance ids) for about an hour after it ended, then no longer (:data:`LISTED_AFTER_END`);
by instance id it is still answered (EC2 answers ``InvalidInstanceID.NotFound`` once it
forgets it).

Differences from AWS: the offset is the emulator's alone (the test hosts, the stand-in
Bacalhau and the controller keep real time); it never goes back; moto's other timestamps
(volumes' attach times, network interfaces, SSM parameters) keep real time.
"""
from __future__ import annotations

import datetime
import heapq
import itertools
import threading
from typing import Any, Callable

LISTED_AFTER_END = datetime.timedelta(hours=1)


def _real_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def parse_time(value: Any) -> datetime.datetime:
    if isinstance(value, datetime.datetime):
        stamp = value
    else:
        stamp = datetime.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=datetime.timezone.utc)


class Clock:
    """Real time plus an offset; events at emulated times."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.offset = datetime.timedelta(0)
        self._events: list[tuple[datetime.datetime, int, str, Callable[[], Any]]] = []
        self._seq = itertools.count()
        self._timer: threading.Timer | None = None
        self._running = threading.Lock()  # one runner of due events at a time

    # -- reading
    def now(self) -> datetime.datetime:
        with self.lock:
            return _real_now() + self.offset

    def utcnow(self) -> datetime.datetime:
        """Naive UTC, as moto's ``utcnow`` gives it."""
        return self.now().replace(tzinfo=None)

    def after(self, seconds: float) -> datetime.datetime:
        return self.now() + datetime.timedelta(seconds=seconds)

    def as_dict(self) -> dict[str, Any]:
        with self.lock:
            return {"now": self.now().isoformat(), "offset_seconds": self.offset.total_seconds(),
                    "scheduled": [{"at": at.isoformat(), "what": what} for at, _n, what, _fn in sorted(
                        self._events, key=lambda e: (e[0], e[1]))]}

    # -- moving
    def advance(self, seconds: float) -> dict[str, Any]:
        if seconds < 0:
            raise ValueError("the emulator's clock only moves forward: advance_seconds must be >= 0")
        return self.move_to(self.now() + datetime.timedelta(seconds=float(seconds)))

    def move_to(self, target: datetime.datetime) -> dict[str, Any]:
        """Carry out every event up to ``target`` at its own time, then stand at ``target``."""
        target = parse_time(target)
        if target < self.now() - datetime.timedelta(seconds=1):
            raise ValueError(f"the emulator's clock only moves forward: {target.isoformat()} is before "
                             f"{self.now().isoformat()}")
        done = []
        with self._running:
            while True:
                with self.lock:
                    if not self._events or self._events[0][0] > target:
                        break
                    at, _n, what, fn = heapq.heappop(self._events)
                    if at > self.now():
                        self.offset = at - _real_now()
                fn()
                done.append({"at": at.isoformat(), "what": what})
            with self.lock:
                if target > self.now():
                    self.offset = target - _real_now()
        self._arm()
        return dict(self.as_dict(), done=done)

    def reset(self) -> None:
        with self.lock:
            self.offset = datetime.timedelta(0)
            self._events = []
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

    # -- events
    def schedule(self, at: datetime.datetime, what: str, fn: Callable[[], Any]) -> dict[str, str]:
        """Run ``fn`` when the clock reaches ``at`` (by real time passing or by an advance)."""
        at = parse_time(at)
        with self.lock:
            heapq.heappush(self._events, (at, next(self._seq), what, fn))
        self._arm()
        return {"at": at.isoformat(), "what": what}

    def run_due(self) -> list[dict[str, str]]:
        done = []
        with self._running:
            while True:
                with self.lock:
                    if not self._events or self._events[0][0] > self.now():
                        break
                    at, _n, what, fn = heapq.heappop(self._events)
                fn()
                done.append({"at": at.isoformat(), "what": what})
        self._arm()
        return done

    def _arm(self) -> None:
        """A real-time timer for the next event (real time moves the clock too)."""
        with self.lock:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            if not self._events:
                return
            wait = max(0.0, (self._events[0][0] - self.now()).total_seconds())
            self._timer = threading.Timer(wait, self.run_due)
            self._timer.daemon = True
            self._timer.start()


CLOCK = Clock()


def install() -> None:
    """Make moto's instances read this clock, remember when each ended, and drop terminated
    instances from listings an hour after they ended (once)."""
    from moto.ec2.models import instances as moto_instances
    from moto.ec2.models.instances import Instance, InstanceBackend

    if getattr(InstanceBackend, "_bacalhau_clock", False):
        return
    moto_instances.utcnow = CLOCK.utcnow  # LaunchTime, "User initiated (...)"

    terminate = Instance.terminate

    def terminated_now(self: Any) -> Any:
        state = terminate(self)
        if getattr(self, "_bacalhau_ended_at", None) is None:
            self._bacalhau_ended_at = CLOCK.now()
        return state

    Instance.terminate = terminated_now  # type: ignore[method-assign]

    describe = InstanceBackend.describe_instances

    def describe_instances(self: Any, filters: Any = None) -> Any:
        horizon = CLOCK.now() - LISTED_AFTER_END
        listed = []
        for reservation in describe(self, filters):
            kept = [i for i in reservation.instances
                    if getattr(i, "_bacalhau_ended_at", None) is None or i._bacalhau_ended_at >= horizon]
            if kept:
                reservation.instances = kept  # a copy of moto's reservation (all_reservations copies)
                listed.append(reservation)
        return listed

    InstanceBackend.describe_instances = describe_instances  # type: ignore[method-assign]
    InstanceBackend._bacalhau_clock = True  # type: ignore[attr-defined]
