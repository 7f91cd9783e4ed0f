#!/usr/bin/env python3
"""An EC2 instance metadata service (IMDSv2 only) for one test host. Tests only: this is not AWS.

tests/hosts/testhosts.sh runs one per test host, inside the host's own network namespace, on
169.254.169.254:80 (the address is put on the namespace's loopback device), so software on the
host reaches it at IMDS's real address and nothing else is dialled. Standard library only.

What it answers comes from a JSON file written by the AWS emulator (tests/emulator/imds.py):
``<state-dir>/<address>.json``, where <address> is the host's own address, which the emulator's
address pool gives to the instance launched on it. The file is read on every request, so a
notice the emulator writes shows at once. Its shape::

    {"state": "running" | "terminated",
     "meta-data": {"instance-id": "i-...", "instance-type": "t3.medium",
                   "instance-life-cycle": "spot" | "on-demand",
                   "placement/region": "eu-west-1", "placement/availability-zone": "eu-west-1a",
                   "spot/instance-action": {"action": "terminate", "time": "2026-12-01T14:00:00Z"},
                   "events/recommendations/rebalance": {"noticeTime": "2026-12-01T13:58:00Z"}, ...},
     "faults": {"status": 500, "delay_seconds": 0}}      # tests only: every answer fails / is late

As IMDS answers with ``HttpTokens=required`` (what bacalhau.aws_spot launches with):
- ``PUT /latest/api/token`` with ``X-aws-ec2-metadata-token-ttl-seconds: 1..21600`` -> 200, the
  token as text, the TTL echoed in the same header; no or a bad TTL -> 400; a request carrying
  ``X-Forwarded-For`` -> 403 (IMDS refuses proxied token requests).
- ``GET /latest/meta-data/...`` needs ``X-aws-ec2-metadata-token``: without one (IMDSv1), or with
  an unknown or expired one -> 401. With one: the value (JSON documents serialised as IMDS does,
  ``{"action": "terminate", "time": "..."}``), a directory listing for a prefix
  (``placement/`` -> ``availability-zone\\nregion``), or 404 for anything else:
  ``spot/instance-action`` and ``events/recommendations/rebalance`` are 404 until the emulator
  writes a notice. With no file (no instance on this host) every meta-data path is 404.
- Hop limit 1: answers leave with IP TTL 1, so a container behind the host's Docker bridge (one
  routed hop away) gets no answer (stricter than AWS, where only the token answer is limited).

When the file says ``"state": "terminated"`` (the emulator reclaimed or terminated the instance),
the host powers off: SIGTERM to the systemd-nspawn process named by ``--poweroff-pid-file``
(nspawn turns it into a clean poweroff, as ``testhosts.sh down`` does). Only for an instance that
was not already terminated when this server started, and once per instance id, so a host that
``testhosts.sh up`` brings back is not powered off again by its predecessor's state.

    imds_standin.py --state-dir DIR --address 10.213.7.12 [--bind 169.254.169.254] [--port 80]
                    [--poweroff-pid-file FILE]
"""
from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MAX_TTL = 21600  # seconds; IMDS refuses longer token lifetimes
TTL_HEADER = "X-aws-ec2-metadata-token-ttl-seconds"
TOKEN_HEADER = "X-aws-ec2-metadata-token"
PAGE = ('<?xml version="1.0" encoding="iso-8859-1"?>\n'
        '<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.0 Transitional//EN"\n'
        '\t"http://www.w3.org/TR/xhtml1/DTD/xhtml1-transitional.dtd">\n'
        '<html xmlns="http://www.w3.org/1999/xhtml" xml:lang="en" lang="en">\n'
        ' <head>\n  <title>{0}</title>\n </head>\n <body>\n  <h1>{0}</h1>\n </body>\n</html>\n')
REASONS = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
           405: "Method Not Allowed", 500: "Internal Server Error", 503: "Service Unavailable"}


def log(msg: str) -> None:
    print(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} imds-standin: {msg}", file=sys.stderr, flush=True)


class Metadata:
    """The state file for this host's address, and the tokens handed out."""

    def __init__(self, state_dir: str, address: str) -> None:
        self.path = os.path.join(state_dir, f"{address}.json")
        self.tokens: dict[str, float] = {}
        self.lock = threading.Lock()

    def load(self) -> dict:
        try:
            with open(self.path, encoding="utf-8") as f:
                data = json.load(f)
            return data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            return {}

    def new_token(self, ttl: int) -> str:
        token = secrets.token_urlsafe(42)
        with self.lock:
            now = time.monotonic()
            self.tokens = {t: exp for t, exp in self.tokens.items() if exp > now}
            self.tokens[token] = now + ttl
        return token

    def valid(self, token: str | None) -> bool:
        if not token:
            return False
        with self.lock:
            expiry = self.tokens.get(token)
        return expiry is not None and expiry > time.monotonic()


def render(value) -> str:
    if isinstance(value, (dict, list)):
        return json.dumps(value)  # IMDS's own spacing: {"action": "terminate", "time": "..."}
    return str(value)


def lookup(meta: dict, path: str) -> str | None:
    """A meta-data path's answer: the value, a directory listing, or None (404)."""
    path = path.strip("/")
    if path in meta:
        return render(meta[path])
    prefix = f"{path}/" if path else ""
    entries = []
    for key in meta:
        if key.startswith(prefix):
            head, sep, _ = key[len(prefix):].partition("/")
            entry = head + ("/" if sep else "")
            if entry not in entries:
                entries.append(entry)
    return "\n".join(sorted(entries)) if entries else None


def make_handler(md: Metadata):
    class Handler(BaseHTTPRequestHandler):
        server_version = "EC2ws"
        sys_version = ""
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt, *args):  # token requests and refusals only: polls are many
            status = str(args[1]) if len(args) > 1 else ""
            if self.command == "PUT" or status not in ("200", "404"):
                log(f"{self.command} {self.path} -> {status}")

        def _answer(self, status: int, body: str = "", headers: dict | None = None) -> None:
            if status != 200:
                body = PAGE.format(f"{status} - {REASONS.get(status, 'Error')}")
            data = body.encode()
            self.send_response(status, REASONS.get(status))
            self.send_header("Content-Type", "text/plain" if status == 200 else "text/html")
            self.send_header("Content-Length", str(len(data)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        def _faults(self, state: dict) -> bool:
            faults = state.get("faults") or {}
            delay = float(faults.get("delay_seconds") or 0)
            if delay:
                time.sleep(delay)
            status = int(faults.get("status") or 0)
            if status:
                self._answer(status)
                return True
            return False

        def do_PUT(self):  # noqa: N802
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            state = md.load()
            if self._faults(state):
                return
            if self.path.rstrip("/") != "/latest/api/token":
                self._answer(405)
                return
            if self.headers.get("X-Forwarded-For"):
                self._answer(403)
                return
            ttl = self.headers.get(TTL_HEADER, "")
            if not ttl.isdigit() or not 1 <= int(ttl) <= MAX_TTL:
                self._answer(400)
                return
            self._answer(200, md.new_token(int(ttl)), {TTL_HEADER: ttl})

        def do_GET(self):  # noqa: N802
            state = md.load()
            if self._faults(state):
                return
            if self.path.rstrip("/") == "/latest/api/token":
                self._answer(405)
                return
            # HttpTokens=required: no token (IMDSv1) or a bad one is refused
            if not md.valid(self.headers.get(TOKEN_HEADER)):
                self._answer(401)
                return
            path = self.path.split("?", 1)[0]
            if path in ("/latest", "/latest/"):
                self._answer(200, "dynamic\nmeta-data\nuser-data" if state else "dynamic\nmeta-data")
                return
            if not path.startswith("/latest/meta-data"):
                self._answer(404)
                return
            answer = lookup(state.get("meta-data") or {}, path[len("/latest/meta-data"):])
            if answer is None:
                self._answer(404)
            else:
                self._answer(200, answer)

        do_HEAD = do_GET

    return Handler


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def server_bind(self):
        # IMDS hop limit 1: answers do not survive a routed hop (a container behind docker0)
        self.socket.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, 1)
        super().server_bind()


def watch_for_reclaim(md: Metadata, pid_file: str, stop: threading.Event, period: float = 0.5) -> None:
    """Power the host off when its instance becomes terminated (once per instance)."""
    first = md.load()
    done = set()
    if first.get("state") == "terminated":
        done.add((first.get("meta-data") or {}).get("instance-id"))
    while not stop.wait(period):
        state = md.load()
        iid = (state.get("meta-data") or {}).get("instance-id")
        if state.get("state") != "terminated" or iid in done:
            continue
        done.add(iid)
        try:
            with open(pid_file, encoding="utf-8") as f:
                pid = int(f.read().strip())
            os.kill(pid, signal.SIGTERM)
            log(f"instance {iid} is terminated ({state.get('state-reason', '')}): powering the host off "
                f"(SIGTERM to systemd-nspawn pid {pid})")
        except (OSError, ValueError) as exc:
            log(f"instance {iid} is terminated, but the host could not be powered off: {exc}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--state-dir", required=True)
    p.add_argument("--address", required=True, help="this host's address: names its state file")
    p.add_argument("--bind", default="169.254.169.254")
    p.add_argument("--port", type=int, default=80)
    p.add_argument("--poweroff-pid-file", default="", help="pid of the host's systemd-nspawn")
    args = p.parse_args(argv)
    md = Metadata(args.state_dir, args.address)
    server = Server((args.bind, args.port), make_handler(md))
    stop = threading.Event()
    if args.poweroff_pid_file:
        threading.Thread(target=watch_for_reclaim, args=(md, args.poweroff_pid_file, stop), daemon=True).start()
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown, daemon=True).start())
    log(f"listening on {args.bind}:{server.server_port} for {args.address} ({md.path})")
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        stop.set()
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
