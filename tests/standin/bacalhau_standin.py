#!/usr/bin/env python3
"""A STAND-IN for the `bacalhau` binary, for tests only (see tests/standin/README.md).

It is NOT Bacalhau. It answers the small part of Bacalhau's CLI and HTTP API that the roles
of this collection rely on, with the shapes of Bacalhau v1.7-v1.9 (../shared/BACALHAU-API.md):

  bacalhau version [--output json] [--client]
  bacalhau serve --config FILE [-c KEY=VALUE|FILE ...] [--orchestrator] [--compute]
  bacalhau node list --output json [--filter-status S] [--filter-approval A] [--labels k=v]
  bacalhau node approve|reject|delete NODE_ID

HTTP (API.Port, 1234): GET /api/v1/agent/{alive,version,node}, GET /api/v1/orchestrator/nodes,
GET|PUT /api/v1/orchestrator/nodes/<id>.

The orchestrator <-> compute link on Orchestrator.Port (4222) is a NATS-looking line protocol
(INFO / CONNECT {"auth_token": ...} / PING / PONG / -ERR 'Authorization Violation'), not NATS.
A compute node with a wrong token is refused and logs, with backoff, what Bacalhau logs:
  failed to connect to NATS: failed to connect to nats://<host>:4222: nats: Authorization Violation

Only Python's standard library is needed; YAML configs need PyYAML (python3-yaml), JSON
configs do not. Unknown config keys are ignored, as Bacalhau does.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import signal
import socket
import socketserver
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# build_release.py replaces these two lines in the released copy.
GIT_VERSION = "v0.0.0-standin"
GOARCH = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())

STANDIN_COMMIT = "standin0000000000000000000000000000000000"


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def log(level: str, msg: str) -> None:
    sys.stderr.write(f"{now()} {level} {msg}\n")
    sys.stderr.flush()


def version_info() -> dict:
    parts = GIT_VERSION.lstrip("v").split(".")
    return {
        "Major": parts[0] if parts else "0",
        "Minor": parts[1] if len(parts) > 1 else "0",
        "GitVersion": GIT_VERSION,
        "GitCommit": STANDIN_COMMIT,
        "BuildDate": "2025-01-01T00:00:00Z",
        "GOOS": "linux",
        "GOARCH": GOARCH,
    }


# --------------------------------------------------------------------------- config
def load_yaml(path: str) -> dict:
    with open(path, encoding="utf-8") as fh:
        text = fh.read()
    if not text.strip():
        return {}
    try:
        return json.loads(text)
    except ValueError:
        pass
    try:
        import yaml  # type: ignore[import-untyped]
    except ImportError:
        raise SystemExit(f"Error: cannot read {path}: the stand-in needs python3-yaml for YAML configs")
    data = yaml.safe_load(text)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SystemExit(f"Error: config {path} is not a mapping")
    return data


def set_dotted(cfg: dict, key: str, value: str) -> None:
    parts = key.split(".")
    cur = cfg
    for p in parts[:-1]:
        cur = cur.setdefault(p, {})
    val: object = value
    if value.lower() in ("true", "false"):
        val = value.lower() == "true"
    elif value.isdigit():
        val = int(value)
    elif "," in value and parts[-1] in ("Orchestrators",):
        val = value.split(",")
    cur[parts[-1]] = val


def merge(dst: dict, src: dict) -> dict:
    for k, v in src.items():
        if isinstance(v, dict) and isinstance(dst.get(k), dict):
            merge(dst[k], v)
        else:
            dst[k] = v
    return dst


def get(cfg: dict, dotted: str, default=None):
    cur: object = cfg
    for p in dotted.split("."):
        if not isinstance(cur, dict) or p not in cur:
            return default
        cur = cur[p]
    return cur


def load_config(files: list[str], overrides: list[str]) -> dict:
    cfg: dict = {}
    for f in files:
        merge(cfg, load_yaml(f))
    for o in overrides:
        if "=" in o:
            k, v = o.split("=", 1)
            set_dotted(cfg, k, v)
        else:
            merge(cfg, load_yaml(o))
    return cfg


def parse_duration(value, default: float) -> float:
    if value is None:
        return default
    if isinstance(value, (int, float)):
        return float(value)
    s = str(value).strip()
    total, num = 0.0, ""
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    i = 0
    while i < len(s):
        c = s[i]
        if c.isdigit() or c == ".":
            num += c
            i += 1
            continue
        unit = "ms" if s[i:i + 2] == "ms" else c
        i += len(unit)
        if unit not in units or not num:
            return default
        total += float(num) * units[unit]
        num = ""
    if num:
        total += float(num)
    return total or default


# --------------------------------------------------------------------------- node state
class Node:
    def __init__(self, cfg: dict, orchestrator: bool, compute: bool) -> None:
        self.cfg = cfg
        self.orchestrator = orchestrator
        self.compute = compute
        self.data_dir = str(get(cfg, "DataDir") or os.path.expanduser("~/.bacalhau"))
        os.makedirs(self.data_dir, exist_ok=True)
        self.node_id = self._node_id()
        labels = dict(get(cfg, "Labels", {}) or {})
        self.labels = {str(k): str(v) for k, v in labels.items()}
        self.token = None
        # Orchestrator side: node id -> NodeState
        self.nodes: dict[str, dict] = {}
        self.lock = threading.Lock()
        self.stop = threading.Event()

    def _node_id(self) -> str:
        provider = str(get(self.cfg, "NameProvider", "puuid"))
        path = os.path.join(self.data_dir, "standin-node-id")
        if provider == "hostname":
            return socket.gethostname()
        try:
            with open(path, encoding="utf-8") as fh:
                saved = fh.read().strip()
            if saved:
                return saved
        except OSError:
            pass
        nid = str(uuid.uuid4()) if provider == "uuid" else "n-" + str(uuid.uuid4())
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(nid + "\n")
        return nid

    def info(self) -> dict:
        info = {
            "NodeID": self.node_id,
            "NodeType": "Requester" if self.orchestrator and not self.compute else "Compute",
            "Labels": self.labels,
            "SupportedProtocols": ["NCLv1"],
            "BacalhauVersion": version_info(),
        }
        if self.compute:
            cpus = os.cpu_count() or 1
            try:
                mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
            except (ValueError, OSError):
                mem = 0
            cap = {"CPU": float(cpus), "Memory": mem, "Disk": 0, "GPU": 0}
            info["ComputeNodeInfo"] = {
                "ExecutionEngines": ["docker", "wasm"],
                "Publishers": ["local", "noop"],
                "StorageSources": ["urlDownload", "inline"],
                "MaxCapacity": cap,
                "QueueCapacity": {},
                "AvailableCapacity": cap,
                "MaxJobRequirements": cap,
                "RunningExecutions": 0,
                "EnqueuedExecutions": 0,
                "Address": "",
            }
        return info

    # orchestrator membership -------------------------------------------------------
    def self_state(self) -> dict:
        t = now()
        return {
            "Info": self.info(),
            "Membership": "APPROVED",
            "Connection": "CONNECTED",
            "ConnectionState": {"Status": "CONNECTED", "LastHeartbeat": t, "ConnectedSince": t,
                                "DisconnectedSince": "0001-01-01T00:00:00Z", "LastError": ""},
        }

    def register(self, info: dict) -> None:
        manual = bool(get(self.cfg, "Orchestrator.NodeManager.ManualApproval", False))
        with self.lock:
            nid = info.get("NodeID", "")
            st = self.nodes.get(nid)
            t = now()
            if st is None:
                st = {"Info": info, "Membership": "PENDING" if manual else "APPROVED",
                      "Connection": "CONNECTED",
                      "ConnectionState": {"Status": "CONNECTED", "LastHeartbeat": t, "ConnectedSince": t,
                                          "DisconnectedSince": "0001-01-01T00:00:00Z", "LastError": ""}}
                self.nodes[nid] = st
            st["Info"] = info
            st["Connection"] = "CONNECTED"
            st["ConnectionState"].update({"Status": "CONNECTED", "LastHeartbeat": t, "ConnectedSince": t,
                                          "LastError": ""})
        log("INF", f"node {nid} connected")

    def heartbeat(self, nid: str) -> None:
        with self.lock:
            st = self.nodes.get(nid)
            if st:
                st["ConnectionState"]["LastHeartbeat"] = now()
                st["ConnectionState"]["_hb"] = time.time()

    def disconnect(self, nid: str, err: str) -> None:
        with self.lock:
            st = self.nodes.get(nid)
            if st and st["Connection"] == "CONNECTED":
                st["Connection"] = "DISCONNECTED"
                st["ConnectionState"].update({"Status": "DISCONNECTED", "DisconnectedSince": now(),
                                              "LastError": err})
        log("INF", f"node {nid} disconnected: {err}")

    def node_states(self) -> list[dict]:
        timeout = parse_duration(get(self.cfg, "Orchestrator.NodeManager.DisconnectTimeout"), 60.0)
        out = [self.self_state()] if self.orchestrator else []
        with self.lock:
            for nid, st in self.nodes.items():
                hb = st["ConnectionState"].get("_hb")
                if st["Connection"] == "CONNECTED" and hb and time.time() - hb > timeout:
                    st["Connection"] = "DISCONNECTED"
                    st["ConnectionState"].update({"Status": "DISCONNECTED", "DisconnectedSince": now(),
                                                  "LastError": "heartbeat timeout"})
                public = json.loads(json.dumps(st))
                public["ConnectionState"].pop("_hb", None)
                if nid != self.node_id:
                    out.append(public)
        return out


# --------------------------------------------------------------------------- HTTP API
def make_handler(node: Node):
    class Handler(BaseHTTPRequestHandler):
        server_version = "bacalhau-standin"

        def log_message(self, fmt, *args):  # quiet: the journal gets our own lines only
            return

        def _send(self, code: int, body) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json; charset=UTF-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _error(self, code: int, msg: str, kind: str) -> None:
            self._send(code, {"Status": code, "Message": msg, "Code": kind, "Component": "APIServer",
                              "RequestID": str(uuid.uuid4())})

        def do_GET(self):  # noqa: N802
            url = urllib.parse.urlparse(self.path)
            q = urllib.parse.parse_qs(url.query)
            path = url.path.rstrip("/")
            if path == "/api/v1/agent/alive":
                return self._send(200, {"Status": "OK"})
            if path == "/api/v1/agent/version":
                return self._send(200, version_info())
            if path == "/api/v1/agent/node":
                return self._send(200, node.info())
            if path == "/api/v1/auth":
                return self._send(200, {"NextToken": "", "Methods": {}})
            if node.orchestrator and path == "/api/v1/orchestrator/nodes":
                states = filter_states(node.node_states(), q)
                return self._send(200, {"NextToken": "", "Nodes": states})
            if node.orchestrator and path.startswith("/api/v1/orchestrator/nodes/"):
                nid = path.rsplit("/", 1)[1]
                for st in node.node_states():
                    if st["Info"]["NodeID"] == nid:
                        return self._send(200, {"Node": st})
                return self._error(404, f"node not found: {nid}", "NotFound")
            return self._error(404, "Not Found", "NotFound")

        def do_PUT(self):  # noqa: N802
            path = urllib.parse.urlparse(self.path).path.rstrip("/")
            if not (node.orchestrator and path.startswith("/api/v1/orchestrator/nodes/")):
                return self._error(404, "Not Found", "NotFound")
            nid = path.rsplit("/", 1)[1]
            try:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
            except ValueError:
                return self._error(400, "invalid request body", "BadRequest")
            action = str(body.get("Action", "")).lower()
            with node.lock:
                st = node.nodes.get(nid)
                if st is None:
                    return self._error(404, f"node not found: {nid}", "NotFound")
                if action == "approve":
                    st["Membership"] = "APPROVED"
                elif action == "reject":
                    st["Membership"] = "REJECTED"
                elif action == "delete":
                    del node.nodes[nid]
                else:
                    return self._error(400, f"unsupported action: {action}", "BadRequest")
            return self._send(200, {"Success": True})

    return Handler


def filter_states(states: list[dict], q: dict) -> list[dict]:
    status = (q.get("filter-status") or [""])[0].upper()
    approval = (q.get("filter-approval") or [""])[0].upper()
    labels = (q.get("labels") or [""])[0]
    out = []
    for st in states:
        if status and st["Connection"] != status:
            continue
        if approval and st["Membership"] != approval:
            continue
        if labels:
            ok = True
            for sel in labels.split(","):
                if "=" in sel:
                    k, v = sel.split("=", 1)
                    ok = ok and st["Info"].get("Labels", {}).get(k.strip()) == v.strip()
            if not ok:
                continue
        out.append(st)
    limit = (q.get("limit") or [""])[0]
    if limit.isdigit() and int(limit) > 0:
        out = out[: int(limit)]
    return out


# --------------------------------------------------------------------------- the "NATS" link
def make_transport_handler(node: Node, token: str | None):
    class Transport(socketserver.StreamRequestHandler):
        def handle(self):
            peer = f"{self.client_address[0]}:{self.client_address[1]}"
            self.wfile.write(b'INFO {"server_id":"standin","auth_required":%s}\r\n'
                             % (b"true" if token else b"false"))
            nid = None
            try:
                line = self.rfile.readline().decode(errors="replace").strip()
                if not line.startswith("CONNECT "):
                    self.wfile.write(b"-ERR 'Unknown Protocol Operation'\r\n")
                    return
                req = json.loads(line[len("CONNECT "):] or "{}")
                if token and req.get("auth_token") != token:
                    log("ERR", f"nats: authorization violation from {peer}")
                    self.wfile.write(b"-ERR 'Authorization Violation'\r\n")
                    return
                self.wfile.write(b"+OK\r\n")
                self.connection.settimeout(None)
                while not node.stop.is_set():
                    raw = self.rfile.readline()
                    if not raw:
                        break
                    line = raw.decode(errors="replace").strip()
                    if line == "PING":
                        self.wfile.write(b"PONG\r\n")
                    elif line.startswith("REGISTER "):
                        info = json.loads(line[len("REGISTER "):])
                        nid = info.get("NodeID")
                        node.register(info)
                        node.heartbeat(nid)
                        self.wfile.write(b"+OK\r\n")
                    elif line.startswith("HEARTBEAT ") and nid:
                        node.heartbeat(nid)
                        self.wfile.write(b"+OK\r\n")
            except (OSError, ValueError) as exc:
                if nid:
                    node.disconnect(nid, str(exc))
                    nid = None
            finally:
                if nid:
                    node.disconnect(nid, "connection closed")

    return Transport


class TCPServer(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True


def compute_link(node: Node, url: str, token: str, interval: float) -> None:
    """Keep one compute -> orchestrator link up, reconnecting with backoff."""
    parsed = urllib.parse.urlparse(url if "://" in url else "nats://" + url)
    host, port = parsed.hostname or "127.0.0.1", parsed.port or 4222
    backoff = 1.0
    while not node.stop.is_set():
        err = None
        try:
            addr = socket.gethostbyname(host)
        except OSError as exc:
            addr, err = None, f"dial tcp: lookup {host}: {exc}"
        if addr:
            try:
                with socket.create_connection((addr, port), timeout=5) as s:
                    f = s.makefile("rwb")
                    f.readline()  # INFO
                    f.write(b"CONNECT " + json.dumps({"auth_token": token, "verbose": False}).encode() + b"\r\n")
                    f.flush()
                    reply = f.readline().decode(errors="replace").strip()
                    if reply.startswith("-ERR"):
                        msg = reply[4:].strip().strip("'")
                        err = f"nats: {msg}"
                    elif not reply:
                        err = "nats: connection closed"
                    else:
                        f.write(b"REGISTER " + json.dumps(node.info()).encode() + b"\r\n")
                        f.flush()
                        if not f.readline():
                            raise OSError("connection closed")
                        log("INF", f"connected to orchestrator at {url} as {node.node_id}")
                        backoff = 1.0
                        s.settimeout(interval + 10)
                        while not node.stop.is_set():
                            f.write(b"HEARTBEAT " + node.node_id.encode() + b"\r\n")
                            f.flush()
                            if not f.readline():
                                raise OSError("connection closed by orchestrator")
                            node.stop.wait(interval)
                        return
            except socket.timeout:
                err = f"dial tcp {addr}:{port}: i/o timeout"
            except ConnectionRefusedError:
                err = f"dial tcp {addr}:{port}: connect: connection refused"
            except OSError as exc:
                err = f"dial tcp {addr}:{port}: {exc.strerror or exc}"
        log("ERR", f"failed to connect to NATS: failed to connect to {url}: {err}")
        node.stop.wait(backoff)
        backoff = min(backoff * 2, 30.0)


def cmd_serve(args) -> int:
    cfg = load_config(args.config or [], args.c or [])
    if not args.config and not args.c:
        default = os.path.join(str(get(cfg, "DataDir") or os.path.expanduser("~/.bacalhau")), "config.yaml")
        if os.path.exists(default):
            cfg = load_config([default], [])
    orch = bool(args.orchestrator or get(cfg, "Orchestrator.Enabled", False))
    comp = bool(args.compute or get(cfg, "Compute.Enabled", False))
    if not orch and not comp:
        log("ERR", "node must be either compute, orchestrator or both: set Orchestrator.Enabled or Compute.Enabled")
        return 1
    node = Node(cfg, orch, comp)
    servers = []
    api_host = str(get(cfg, "API.Host", "0.0.0.0"))
    api_port = int(get(cfg, "API.Port", 1234))
    try:
        api = ThreadingHTTPServer((api_host, api_port), make_handler(node))
    except OSError as exc:
        log("ERR", f"failed to start API server on {api_host}:{api_port}: {exc}")
        return 1
    api.daemon_threads = True
    servers.append(api)
    if orch:
        token = get(cfg, "Orchestrator.Auth.Token") or None
        nhost = str(get(cfg, "Orchestrator.Host", "0.0.0.0"))
        nport = int(get(cfg, "Orchestrator.Port", 4222))
        try:
            servers.append(TCPServer((nhost, nport), make_transport_handler(node, token)))
        except OSError as exc:
            log("ERR", f"failed to start NATS server on {nhost}:{nport}: {exc}")
            return 1
    for srv in servers:
        threading.Thread(target=srv.serve_forever, daemon=True).start()
    log("INF", f"bacalhau stand-in {GIT_VERSION} node {node.node_id} "
        f"(orchestrator={orch}, compute={comp}) API on {api_host}:{api_port}")
    if comp:
        orchestrators = get(cfg, "Compute.Orchestrators", []) or []
        if isinstance(orchestrators, str):
            orchestrators = [orchestrators]
        if not orchestrators and orch:
            orchestrators = [f"nats://127.0.0.1:{get(cfg, 'Orchestrator.Port', 4222)}"]
        ctoken = str(get(cfg, "Compute.Auth.Token", "") or "")
        interval = parse_duration(get(cfg, "Compute.Heartbeat.Interval"), 15.0)
        for url in orchestrators:
            threading.Thread(target=compute_link, args=(node, str(url), ctoken, interval), daemon=True).start()

    def _stop(signum, _frame):
        log("INF", f"received signal {signum}, shutting down")
        node.stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    node.stop.wait()
    for srv in servers:
        srv.shutdown()
    return 0


# --------------------------------------------------------------------------- client side
def api_base(args) -> str:
    host = args.api_host or os.environ.get("BACALHAU_API_HOST")
    port = args.api_port or os.environ.get("BACALHAU_API_PORT")
    for o in args.c or []:
        if o.startswith("API.Host="):
            host = host or o.split("=", 1)[1]
        if o.startswith("API.Port="):
            port = port or o.split("=", 1)[1]
    host = host or "localhost"
    if host in ("0.0.0.0", "::"):
        host = "localhost"
    return f"http://{host}:{port or 1234}"


def api_call(args, method: str, path: str, body: dict | None = None):
    url = api_base(args) + path
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        try:
            msg = json.loads(exc.read()).get("Message", str(exc))
        except ValueError:
            msg = str(exc)
        raise SystemExit(f"Error: {msg}")
    except (urllib.error.URLError, OSError) as exc:
        raise SystemExit(f"Error: failed to connect to {api_base(args)}: {getattr(exc, 'reason', exc)}")


def cmd_version(args) -> int:
    out: dict = {"clientVersion": version_info()}
    if not args.client:
        try:
            out["serverVersion"] = api_call(args, "GET", "/api/v1/agent/version")
        except SystemExit:
            pass
    if args.output == "json":
        print(json.dumps(out))
    elif args.output == "yaml":
        for k, v in out.items():
            print(f"{k}:")
            for kk, vv in v.items():
                print(f"  {kk}: {json.dumps(vv)}")
    else:
        print(f"{'CLIENT':<10} {'SERVER':<10}")
        print(f"{GIT_VERSION:<10} {out.get('serverVersion', {}).get('GitVersion', ''):<10}")
    return 0


def cmd_node(args) -> int:
    if args.node_cmd == "list":
        q = {}
        if args.filter_status:
            q["filter-status"] = args.filter_status
        if args.filter_approval:
            q["filter-approval"] = args.filter_approval
        if args.labels:
            q["labels"] = args.labels
        res = api_call(args, "GET", "/api/v1/orchestrator/nodes" + ("?" + urllib.parse.urlencode(q) if q else ""))
        nodes = res.get("Nodes", [])
        if args.output == "json":
            print(json.dumps(nodes))
        else:
            print(f"{'ID':<40} {'TYPE':<10} {'APPROVAL':<9} {'STATUS':<13}")
            for st in nodes:
                print(f"{st['Info']['NodeID']:<40} {st['Info']['NodeType']:<10} {st['Membership']:<9} "
                      f"{st['Connection']:<13}")
        return 0
    res = api_call(args, "PUT", f"/api/v1/orchestrator/nodes/{args.node_id}",
                   {"Action": args.node_cmd, "Message": args.message or ""})
    print(json.dumps(res) if args.output == "json" else f"Ok: {args.node_cmd} {args.node_id}")
    return 0


def main(argv: list[str] | None = None) -> int:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--api-host")
    common.add_argument("--api-port")
    common.add_argument("-c", "--config-value", dest="c", action="append")
    common.add_argument("--config", action="append")
    parser = argparse.ArgumentParser(prog="bacalhau", description="Bacalhau STAND-IN for tests")
    sub = parser.add_subparsers(dest="cmd", required=True)
    pv = sub.add_parser("version", parents=[common])
    pv.add_argument("--output", default="table", choices=["table", "json", "yaml"])
    pv.add_argument("--client", action="store_true")
    ps = sub.add_parser("serve", parents=[common])
    ps.add_argument("--orchestrator", action="store_true")
    ps.add_argument("--compute", action="store_true")
    pn = sub.add_parser("node", parents=[common])
    nsub = pn.add_subparsers(dest="node_cmd", required=True)
    pl = nsub.add_parser("list", parents=[common])
    pl.add_argument("--output", default="table", choices=["table", "json"])
    pl.add_argument("--filter-status")
    pl.add_argument("--filter-approval")
    pl.add_argument("--labels")
    for action in ("approve", "reject", "delete"):
        pa = nsub.add_parser(action, parents=[common])
        pa.add_argument("node_id")
        pa.add_argument("-m", "--message")
        pa.add_argument("--output", default="table", choices=["table", "json"])
    args = parser.parse_args(argv)
    if args.cmd == "version":
        return cmd_version(args)
    if args.cmd == "serve":
        return cmd_serve(args)
    return cmd_node(args)


if __name__ == "__main__":
    sys.exit(main())
