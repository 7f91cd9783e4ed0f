#!/usr/bin/env python3
# -*- coding: utf-8 -*-
# Copyright: bacalhau.aws_spot contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""One heal of a cluster at a time on this host; requests that come meanwhile join the next one.

``playbooks/autoheal_heal.yml`` (what the rulebook ``bacalhau.aws_spot.autoheal`` runs for
each event) calls this with the event's instances to drain, the cluster's variables on
standard input, and the heal's command after ``--``::

    autoheal_runner.py --state-dir DIR [--drain i-1,i-2] [--vars-file my-cluster.yml] -- ansible-playbook .../heal.yml

In ``DIR`` (the cluster's ``~/.config/bacalhau.aws_spot/<cluster>/autoheal``, mode 0700):

1. the request (its instances to drain) is added to ``pending.json`` (under ``queue.lock``);
2. if another request is already waiting for the heal now running (``waiter.lock`` held),
   this one is done: that waiter takes it along. Otherwise this one waits for ``heal.lock``
   (held for the whole heal: one heal at a time, whatever starts it on this host);
3. holding it, it takes every pending request, and those of a heal that was cut short
   (``running.json``: a killed rulebook's heal is finished by the next event or tick). Nothing
   left: a heal that started after the request took it ("coalesced"). Otherwise it runs the
   heal once for all of them, with ``[-e @<vars-file>] -e @<variables> -e {"heal_drain_instance_ids":
   [...], "heal_interrupted_instance_ids": [...]}`` (the union of their instances to drain, and of
   those EC2 sent an interruption warning for; the variables from standard input in a 0600
   file, removed after);
4. a heal that succeeds clears ``running.json``; one that fails leaves it, so the next event
   or tick runs it again with the same instances.

Locks are ``flock``s: the kernel releases them when their holder dies.

``destroy.yml`` holds heals off first (``--hold``, no command): it writes ``held`` and waits
for a heal running now to end (``heal.lock``), so no heal on this host launches nodes while the
cluster is taken down. A heal that gets ``heal.lock`` with ``held`` there does nothing and drops
its requests. ``create.yml`` lets heals run again (``--release``). The rulebook on another host
is not held: stop it before ``destroy.yml`` (docs/heal.md).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Any, Iterator

PENDING = "pending.json"
RUNNING = "running.json"
HELD = "held"


@contextlib.contextmanager
def locked(path: str, blocking: bool = True) -> Iterator[bool]:
    """Hold ``flock(path)``; yields False (holding nothing) when ``blocking`` is off and it is taken."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)  # releases the lock


def _read(path: str) -> list[dict[str, Any]]:
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, ValueError):
        return []
    return data if isinstance(data, list) else []


def _write(path: str, requests: list[dict[str, Any]]) -> None:
    tmp = f"{path}.tmp"
    with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w", encoding="utf-8") as handle:
        json.dump(requests, handle)
    os.replace(tmp, path)


def child_environment(environ: dict[str, str] | None = None) -> dict[str, str]:
    """Ours, less what ansible-runner (under ansible-rulebook) set for the playbook it runs:
    its event-encoding output callback would garble the heal's output."""
    env = dict(os.environ if environ is None else environ)
    if env.get("ANSIBLE_STDOUT_CALLBACK") == "awx_display":
        del env["ANSIBLE_STDOUT_CALLBACK"]
    if "ansible_runner" in env.get("ANSIBLE_CALLBACK_PLUGINS", ""):
        del env["ANSIBLE_CALLBACK_PLUGINS"]
    for key in [k for k in env if k.startswith(("RUNNER_", "AWX_"))]:
        del env[key]
    return env


def interrupted_ids(requests: list[dict[str, Any]]) -> list[str]:
    """Of the instances to drain, those EC2 sent an interruption warning for, once each."""
    return list(dict.fromkeys(i for request in requests for i in request.get("interrupted") or []))


def drain_ids(requests: list[dict[str, Any]]) -> list[str]:
    """Every instance to drain of ``requests``, once each, in the order asked."""
    return list(dict.fromkeys(i for request in requests for i in request.get("drain") or []))


class Runner:
    def __init__(self, state_dir: str, vars_file: str = "") -> None:
        self.vars_file = os.path.expanduser(vars_file) if vars_file else ""
        self.dir = os.path.expanduser(state_dir)
        os.makedirs(self.dir, mode=0o700, exist_ok=True)

    def path(self, name: str) -> str:
        return os.path.join(self.dir, name)

    def request(self, drain: list[str], interrupted: list[str] | None = None) -> None:
        with locked(self.path("queue.lock")):
            pending = _read(self.path(PENDING))
            pending.append({"drain": drain, "interrupted": list(interrupted or []), "at": time.time()})
            _write(self.path(PENDING), pending)

    def take(self) -> list[dict[str, Any]]:
        """Every pending request and those of a heal cut short; they become the running heal's."""
        with locked(self.path("queue.lock")):
            taken = _read(self.path(RUNNING)) + _read(self.path(PENDING))
            if taken:
                _write(self.path(RUNNING), taken)
            _write(self.path(PENDING), [])
        return taken

    def done(self) -> None:
        with locked(self.path("queue.lock")):
            with contextlib.suppress(FileNotFoundError):
                os.remove(self.path(RUNNING))

    def run(self, drain: list[str], command: list[str], variables: dict[str, Any],
            interrupted: list[str] | None = None) -> int:
        self.request(drain, interrupted)
        with locked(self.path("waiter.lock"), blocking=False) as waiter:
            if not waiter:
                print("autoheal: a heal is running and another waits for it; this request goes with that one",
                      flush=True)
                return 0
            heal = contextlib.ExitStack()
            heal.enter_context(locked(self.path("heal.lock")))
        with heal:  # the waiter's lock is let go as soon as this one holds the heal's
            if os.path.exists(self.path(HELD)):
                self.take()
                self.done()
                print("autoheal: heals are held off (destroy.yml is taking the cluster down, or did not finish); "
                      "this request is dropped. create.yml lets heals run again", flush=True)
                return 0
            taken = self.take()
            if not taken:
                print("autoheal: coalesced: the heal that ran meanwhile took this request", flush=True)
                return 0
            ids = drain_ids(taken)
            print(f"autoheal: healing for {len(taken)} request(s); instances to drain: {', '.join(ids) or 'none'}",
                  flush=True)
            rc = self.heal(command, variables, ids, interrupted_ids(taken))
            if rc == 0:
                self.done()
            else:
                print(f"autoheal: the heal failed (exit {rc}); the next event or tick runs it again", flush=True)
            return rc

    def hold(self, wait_seconds: float, poll: float = 0.5) -> int:
        """Hold heals off (``held``), then wait until no heal runs; 1 if one still runs after ``wait_seconds``."""
        with open(os.open(self.path(HELD), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w", encoding="utf-8") as f:
            json.dump({"at": time.time(), "pid": os.getpid()}, f)
        deadline = time.monotonic() + wait_seconds
        said = False
        while True:
            with locked(self.path("heal.lock"), blocking=False) as free:
                if free:
                    print("autoheal: heals held off; none runs now", flush=True)
                    return 0
            if time.monotonic() >= deadline:
                print(f"autoheal: a heal still runs after {wait_seconds:.0f} s; heals are held off from its end. "
                      "Stop the rulebook (and its heal), then run this again", flush=True)
                return 1
            if not said:
                print("autoheal: heals held off; waiting for the heal running now to end", flush=True)
                said = True
            time.sleep(poll)

    def release(self) -> int:
        with contextlib.suppress(FileNotFoundError):
            os.remove(self.path(HELD))
        print("autoheal: heals may run", flush=True)
        return 0

    def heal(self, command: list[str], variables: dict[str, Any], ids: list[str],
             interrupted: list[str] | None = None) -> int:
        fd, vars_file = tempfile.mkstemp(prefix="vars-", suffix=".json", dir=self.dir)  # 0600
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(variables, handle)
            given = ["-e", f"@{self.vars_file}"] if self.vars_file else []
            asked = {"heal_drain_instance_ids": ids, "heal_interrupted_instance_ids": list(interrupted or [])}
            full = list(command) + given + ["-e", f"@{vars_file}", "-e", json.dumps(asked)]
            return subprocess.call(full, env=child_environment())  # its output goes straight to ours
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.remove(vars_file)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--hold" in argv or "--release" in argv:
        holder = argparse.ArgumentParser(description="hold heals off (destroy.yml), or let them run (create.yml)")
        holder.add_argument("--state-dir", required=True)
        holder.add_argument("--hold", action="store_true")
        holder.add_argument("--release", action="store_true")
        holder.add_argument("--wait", type=float, default=900.0, help="seconds to wait for a running heal")
        given = holder.parse_args(argv)
        runner = Runner(given.state_dir)
        return runner.release() if given.release else runner.hold(given.wait)
    if "--" not in argv:
        print("autoheal_runner.py: give the heal's command after --", file=sys.stderr)
        return 2
    split = argv.index("--")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--state-dir", required=True)
    parser.add_argument("--drain", default="", help="instances to drain, comma-separated")
    parser.add_argument("--interrupted", default="",
                        help="of those, the ones EC2 sent an interruption warning for, comma-separated")
    parser.add_argument("--vars-file", default="", help="the cluster file, given to the heal first")
    parser.add_argument("--no-stdin", action="store_true", help="no variables on standard input")
    args = parser.parse_args(argv[:split])
    command = argv[split + 1:]
    variables = {} if args.no_stdin else json.loads(sys.stdin.read() or "{}")
    drain = [i.strip() for i in args.drain.split(",") if i.strip()]
    interrupted = [i.strip() for i in args.interrupted.split(",") if i.strip()]
    return Runner(args.state_dir, args.vars_file).run(drain, command, variables, interrupted)


if __name__ == "__main__":
    sys.exit(main())
