#!/usr/bin/env python3
"""A STAND-IN for the `bacalhau` binary, for tests only (see tests/standin/README.md).

It is NOT Bacalhau. It answers the part of Bacalhau's CLI and HTTP API that this collection
relies on, with the shapes of Bacalhau v1.9.3 as read from its source (the README cites the
paths):

  bacalhau version [--output json] [--client]
  bacalhau serve --config FILE [-c KEY=VALUE|FILE ...] [--orchestrator] [--compute]
  bacalhau node list --output json [--filter-status S] [--filter-approval A] [--labels k=v]
  bacalhau node approve|reject|delete NODE_ID
  bacalhau docker run [--wait[=false]] [--id-only] [--wait-timeout-secs N] [-e K=V] [-w DIR]
                      [--entrypoint A,B] [--constraints SEL] [--target any|all] [--count N] IMAGE [-- CMD...]
  bacalhau job run FILE|- [--wait[=false]] [--id-only] [--force]
  bacalhau job describe|executions ID --output json, job list --output json, job stop ID

HTTP (API.Port, 1234): GET /api/v1/agent/{alive,version,node}; GET /api/v1/orchestrator/nodes,
GET|PUT /api/v1/orchestrator/nodes/<id>; PUT|POST /api/v1/orchestrator/jobs, GET .../jobs,
GET|DELETE .../jobs/<id>, GET .../jobs/<id>/executions, GET .../jobs/<id>/history.

The orchestrator <-> compute link on Orchestrator.Port (4222) is a NATS-looking line protocol,
not NATS: the compute node dials, then INFO / CONNECT {"auth_token": ...} / +OK | -ERR
'Authorization Violation'; REGISTER <NodeInfo>, HEARTBEAT <id>, SHUTDOWN <id> from the compute
node; RUN <Execution> and CANCEL <id> from the orchestrator; UPDATE / RESULT <execution state>
back. With Orchestrator.TLS.ServerCert/ServerKey the INFO line says tls_required and TLS follows,
as nats-server does; compute nodes verify it against Compute.TLS.CACert as Go does. With
API.Auth.Users the API wants `Authorization: Bearer <APIKey>` (401/403 in Bacalhau's shape);
with API.TLS.CertFile/KeyFile it is HTTPS only. Compute nodes run docker jobs with the host's real `docker` CLI (create, start, wait,
logs, rm: what Bacalhau's executor does through Docker's API) as the user the service runs as.
Before that they apply Bacalhau's image rule: a local image with RepoDigests is used as it is;
any other one means asking its registry through Docker (Engine API GET /distribution/<image>/json),
and a refusal fails the execution with Docker's error (pkg/docker/docker.go ImageDistribution).

A compute node that cannot join logs what Bacalhau logs (pkg/nats/errors.go,
pkg/transport/nclprotocol/compute/manager.go), in zerolog's console format:
  15:04:05 | ERR Connection attempt failed error="failed to setup transport: failed to connect
  to NATS: no orchestrator available for connection at nats://<host>:4222" backoffDuration=2s ...
  (... failed to connect to nats://<host>:4222: dial tcp <ip>:4222: i/o timeout ... when nothing
  answers, e.g. a security group that drops: only a refusal is "no orchestrator available";
  ... failed to connect to nats://<host>:4222: nats: Authorization Violation ... for a wrong token)

Only Python's standard library is needed; YAML configs and job files need PyYAML
(python3-yaml), JSON ones do not. Unknown config keys are ignored, as Bacalhau does.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import ipaddress
import json
import os
import platform
import re
import shutil
import signal
import socket
import socketserver
import ssl
import subprocess
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
ZERO_TIME = "0001-01-01T00:00:00Z"


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def now_ns() -> int:
    return time.time_ns()


def rfc3339_ns(ns: int) -> str:
    return dt.datetime.fromtimestamp(ns / 1e9, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def log(level: str, msg: str, **fields) -> None:
    """One line as Bacalhau's zerolog console writer prints it without a terminal
    (pkg/logger/logger.go defaultLogFormat): `15:04:05 | LVL message error="..." key=value`,
    the error field first, the others sorted, values with spaces quoted."""
    parts = [f"{time.strftime('%H:%M:%S')} | {level} {msg}"]
    keys = sorted(fields)
    if "error" in keys:
        keys.remove("error")
        keys.insert(0, "error")
    for k in keys:
        v = str(fields[k])
        needs_quote = not v or re.search(r'[\s"=]', v) is not None
        parts.append(f"{k}={json.dumps(v) if needs_quote else v}")
    sys.stderr.write(" ".join(parts) + "\n")
    sys.stderr.flush()


def go_duration(seconds: float) -> str:
    if seconds >= 60 and seconds % 60 == 0:
        return f"{int(seconds // 60)}m0s"
    return f"{seconds:g}s"


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


def short_id(value: str) -> str:
    """pkg/util/idgen/short_id.go ShortUUID: `n-1a2b3c4d` for `n-<uuid>`, the first block of a bare uuid."""
    m = re.match(r"^([a-zA-Z])-(\w{8})-\w{4}-\w{4}-\w{4}-\w{12}$", value)
    if m:
        return f"{m.group(1)}-{m.group(2)}"
    m = re.match(r"^(\w{8})-\w{4}-\w{4}-\w{4}-\w{12}$", value)
    return m.group(1) if m else value


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


# --------------------------------------------------------------------------- jobs: shapes and rules
# pkg/models/job.go: JobStateType marshals as text.
JOB_PENDING, JOB_QUEUED, JOB_RUNNING, JOB_COMPLETED, JOB_FAILED, JOB_STOPPED = (
    "Pending", "Queued", "Running", "Completed", "Failed", "Stopped")
JOB_TERMINAL = (JOB_COMPLETED, JOB_FAILED, JOB_STOPPED)
# pkg/models/execution.go: ExecutionStateType / ExecutionDesiredStateType have no text
# marshaller in v1.9.3, so they are integers in JSON (order of the iota constants).
EX_NEW, EX_ASK_FOR_BID, EX_ASK_ACCEPTED, EX_ASK_REJECTED, EX_BID_ACCEPTED, EX_RUNNING = 1, 2, 3, 4, 5, 6
EX_PUBLISHING, EX_BID_REJECTED, EX_COMPLETED, EX_FAILED, EX_CANCELLED = 7, 8, 9, 10, 11
EX_TERMINAL = (EX_ASK_REJECTED, EX_BID_REJECTED, EX_COMPLETED, EX_FAILED, EX_CANCELLED)
EX_DISCARDED = (EX_ASK_REJECTED, EX_BID_REJECTED, EX_CANCELLED, EX_FAILED)
DESIRED_PENDING, DESIRED_RUNNING, DESIRED_STOPPED = 0, 1, 2
# pkg/system/utils.go MaxStdoutReturnLength / MaxStderrReturnLength: 2 KB, the first bytes kept.
OUTPUT_RETURN_LIMIT = 2048

# pkg/orchestrator/events.go
MSG_EXEC_STOPPED_BY_JOB_STOP = "Execution stop requested because job has been stopped"
MSG_EXEC_NODE_UNHEALTHY = "Execution stop requested because node has disappeared"
# pkg/node/config.go DefaultSystemConfig: NodeReEvaluatorBatchDelay 15 s, MaxBatchSize 50 (not in
# Bacalhau's config file). The variable is the stand-in's own, for fast unit tests only.
REEVALUATOR_BATCH_DELAY = float(os.environ.get("BACALHAU_STANDIN_REEVALUATOR_BATCH_DELAY", "15"))
REEVALUATOR_MAX_BATCH = 50
MSG_EXEC_JOB_FAILURE = "Execution stopped due to job failure"
MSG_JOB_EXECUTIONS_FAILED = "Job failed because one or more executions failed"


class APIError(Exception):
    """An error in Bacalhau's API shape (pkg/publicapi/apimodels/error.go)."""

    def __init__(self, status: int, message: str, code: str = "InternalError", component: str = "APIServer",
                 hint: str = "", details: dict | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.component, self.hint = status, message, code, component, hint
        self.details = details or {}

    def body(self) -> dict:
        out = {"Status": self.status, "Message": self.message, "RequestID": "", "Code": self.code,
               "Component": self.component}
        if self.hint:
            out["Hint"] = self.hint
        if self.details:
            out["Details"] = self.details
        return out


# Label selectors (k8s.io/apimachinery/pkg/selection operators, as pkg/models/selector.go uses them)
SELECTOR_OPERATORS = ("=", "==", "!=", "in", "notin", "exists", "!", "gt", "lt")


def requirement_error(req: dict) -> str | None:
    """models.LabelSelectorRequirement.Validate."""
    errs = []
    if not str(req.get("Key") or "").strip():
        errs.append("selector key cannot be blank")
    op, values = req.get("Operator"), req.get("Values") or []
    if op in ("in", "notin"):
        if not values:
            errs.append("selector values cannot be empty for In or NotIn operators")
    elif op in ("exists", "!"):
        if values:
            errs.append("selector values must be empty for Exists or KeyNotInImap operators")
    elif len(values) != 1:
        errs.append("selector values must have exactly one value for other operators")
    if op not in SELECTOR_OPERATORS and not errs:
        errs.append(f"operator '{op}' is not recognized")
    return "\n".join(errs) or None


def requirement_matches(req: dict, labels: dict) -> bool:
    """labels.Requirement.Matches: != and notin also match nodes without the key."""
    key, op, values = req.get("Key", ""), req.get("Operator"), [str(v) for v in req.get("Values") or []]
    has = key in labels
    val = labels.get(key)
    if op in ("=", "=="):
        return has and val == values[0]
    if op == "in":
        return has and val in values
    if op == "!=":
        return not has or val != values[0]
    if op == "notin":
        return not has or val not in values
    if op == "exists":
        return has
    if op == "!":
        return not has
    if op in ("gt", "lt"):
        try:
            lv, rv = int(val), int(values[0])
        except (TypeError, ValueError):
            return False
        return lv > rv if op == "gt" else lv < rv
    return False


def requirement_str(req: dict) -> str:
    """LabelSelectorRequirement.String: `key op v1|v2`."""
    return f"{req.get('Key')} {req.get('Operator')} {'|'.join(req.get('Values') or [])}"


def parse_selector(text: str) -> list[dict]:
    """A label selector as the CLI's --constraints takes it (cmd/util/parse NodeSelector,
    k8s syntax): `a=b,c!=d,e in (x,y),f notin (z),g,!h,n>3`."""
    out: list[dict] = []
    text = (text or "").strip()
    if not text:
        return out
    parts, depth, cur = [], 0, ""
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    for raw in parts:
        p = raw.strip()
        m = re.match(r"^([^\s!=<>(),]+)\s+(in|notin)\s+\((.*)\)$", p)
        if m:
            out.append({"Key": m.group(1), "Operator": m.group(2),
                        "Values": sorted(v.strip() for v in m.group(3).split(",") if v.strip())})
            continue
        m = re.match(r"^([^\s!=<>]+)\s*(==|!=|=|>|<)\s*(.*)$", p)
        if m:
            op = {">": "gt", "<": "lt"}.get(m.group(2), m.group(2))
            out.append({"Key": m.group(1), "Operator": op, "Values": [m.group(3).strip()]})
            continue
        if p.startswith("!"):
            out.append({"Key": p[1:].strip(), "Operator": "!"})
            continue
        if re.match(r"^[^\s!=<>(),]+$", p):
            out.append({"Key": p, "Operator": "exists"})
            continue
        raise ValueError(f"unable to parse requirement: {p!r}")
    return out


def validate_submission(job) -> list[str]:
    """models.Job.ValidateSubmission (+ Task.ValidateSubmission, ValidateEnvVars)."""
    if not isinstance(job, dict):
        return ["empty/nil job"]
    errs = []
    jtype = job.get("Type") or ""
    if jtype == "":
        errs.append("missing job type")
    elif jtype not in ("service", "batch", "daemon", "ops"):
        errs.append(f"invalid job type: {json.dumps(jtype)}")
    count = job.get("Count") or 0
    if not isinstance(count, int) or count < 0:
        errs.append("job count must be >= 0")
    elif count > 1 and jtype in ("daemon", "ops"):
        errs.append(f"{jtype} jobs cannot specify count > 1 as they run on all matching nodes")
    tasks = job.get("Tasks") or []
    if not tasks:
        errs.append("missing job tasks")
    for i, c in enumerate(job.get("Constraints") or []):
        err = requirement_error(c if isinstance(c, dict) else {})
        if err:
            errs.append(f"constraint {i + 1} validation failed: {err}")
    for task in tasks:
        task = task if isinstance(task, dict) else {}
        terrs = []
        if not str(task.get("Name") or "").strip():
            terrs.append("missing task name")
        for name, value in (task.get("Env") or {}).items():
            if name != name.upper():
                terrs.append(f"environment variable '{name}' must be uppercase")
            elif not name[:1].isalpha():
                terrs.append(f"environment variable '{name}' must start with a letter")
            elif not re.match(r"^\w+$", name):
                terrs.append(f"environment variable '{name}' can only contain letters, numbers, and underscores")
            elif name.upper().startswith("BACALHAU_"):
                terrs.append(f"environment variable '{name}' cannot start with BACALHAU_")
            elif str(value) == "":
                terrs.append(f"environment variable '{name}' cannot have empty value")
        engine = task.get("Engine")
        if not isinstance(engine, dict):
            terrs.append("invalid engine: nil spec config")
        elif not str(engine.get("Type") or "").strip():
            terrs.append("invalid engine: missing spec type")
        if terrs:
            errs.append(f"task {task.get('Name', '')} validation failed: " + "\n".join(terrs))
    return errs


def normalize_task(task: dict) -> dict:
    """models.Task.Normalize, plus the batch/ops task defaults of pkg/config/defaults.go."""
    task.setdefault("Meta", {})
    task["Meta"] = task["Meta"] or {}
    task["Env"] = task.get("Env") or {}
    task["InputSources"] = task.get("InputSources") or []
    task["ResultPaths"] = task.get("ResultPaths") or []
    res = task.get("Resources") or {}
    res.setdefault("CPU", "500m")
    res.setdefault("Memory", "512Mb")
    task["Resources"] = {k: v for k, v in res.items() if v}
    task["Publisher"] = task.get("Publisher") or {"Type": ""}
    task["Network"] = task.get("Network") or {"Type": "Default"}
    task["Timeouts"] = {k: v for k, v in (task.get("Timeouts") or {}).items() if v}
    engine = task.get("Engine") or {}
    engine["Type"] = str(engine.get("Type") or "").strip()
    engine["Params"] = engine.get("Params") or {}
    task["Engine"] = engine
    return task


# --------------------------------------------------------------------------- orchestrator: jobs
class Orchestration:
    """The job side of the orchestrator: submit, schedule (ops and batch), stop, and the
    executions' life, following pkg/orchestrator/{endpoint.go,scheduler/*.go} of v1.9.3.
    Everything runs under self.lock (an RLock)."""

    # history -----------------------------------------------------------------------
    def _event(self, job_id: str, topic: str, message: str, execution_id: str = "",
               details: dict | None = None, error: bool = False) -> None:
        job = self.jobs.get(job_id)
        self.seq += 1
        ev = {"Message": message, "Topic": topic, "Timestamp": rfc3339_ns(now_ns())}
        d = dict(details or {})
        if error:
            d["IsError"] = "true"
        if d:
            ev["Details"] = d
        entry = {"SeqNum": self.seq, "Type": "ExecutionLevel" if execution_id else "JobLevel",
                 "JobID": job_id, "JobVersion": job["Version"] if job else 1, "Event": ev,
                 "Time": ev["Timestamp"]}
        if execution_id:
            entry["ExecutionID"] = execution_id
        self.history.setdefault(job_id, []).append(entry)

    def _set_job_state(self, job: dict, state: str, message: str = "") -> None:
        if job["State"]["StateType"] == state:
            return
        job["State"] = {"StateType": state}
        if message:
            job["State"]["Message"] = message
        job["Revision"] += 1
        job["ModifyTime"] = now_ns()
        text = state + (f". {message}" if message and state not in (JOB_FAILED,) else "")
        self._event(job["ID"], "State Update", text, details={"NewState": state})
        log("INF", f"job {job['ID']} is {state}" + (f": {message}" if message else "").replace("\n", " "))

    def _set_exec(self, ex: dict, compute: int | None = None, desired: int | None = None,
                  message: str | None = None, run_output: dict | None = None) -> None:
        if compute is not None:
            ex["ComputeState"] = {"StateType": compute}
            if message:
                ex["ComputeState"]["Message"] = message
        if desired is not None:
            ex["DesiredState"] = {"StateType": desired}
            if message and compute is not None and compute in EX_TERMINAL:
                ex["DesiredState"]["Message"] = message
        if run_output is not None:
            ex["RunOutput"] = run_output
        ex["Revision"] += 1
        ex["ModifyTime"] = now_ns()

    # lookups -----------------------------------------------------------------------
    def find_job(self, id_or_name: str, namespace: str = "") -> dict:
        """jobstore GetJobByIDOrName: an ID, a unique ID prefix, or a name."""
        namespace = namespace or "default"
        with self.lock:
            if id_or_name in self.jobs:
                return self.jobs[id_or_name]
            named = [j for j in self.jobs.values() if j["Name"] == id_or_name and j["Namespace"] == namespace]
            if named:
                return named[0]
            pref = [j for j in self.jobs.values() if j["ID"].startswith(id_or_name)] if id_or_name else []
            if len(pref) == 1:
                return pref[0]
        raise APIError(404, f"job not found: {id_or_name}", "NotFound", "JobStore")

    def job_executions(self, job_id: str) -> list[dict]:
        with self.lock:
            return sorted((e for e in self.executions.values() if e["JobID"] == job_id),
                          key=lambda e: e["CreateTime"])

    # submit ------------------------------------------------------------------------
    def submit(self, body: dict) -> dict:
        if not isinstance(body, dict) or not isinstance(body.get("Job"), dict):
            raise APIError(400, "empty/nil job")
        job = json.loads(json.dumps(body["Job"]))
        force = bool(body.get("Force"))
        # models.Job.UnmarshalJSON: batch/service jobs without Count get 1
        if job.get("Type") in ("batch", "service") and job.get("Count") is None:
            job["Count"] = 1
        errs = validate_submission(job)
        if errs:
            raise APIError(400, "\n".join(errs))
        # Normalize + SanitizeSubmission (pkg/models/job.go)
        warnings = []
        job["Meta"] = job.get("Meta") or {}
        job["Labels"] = job.get("Labels") or {}
        job["Constraints"] = job.get("Constraints") or []
        job["Namespace"] = job.get("Namespace") or "default"
        if job["Type"] in ("daemon", "ops"):
            job["Count"] = 0
        job["Count"] = int(job.get("Count") or 0)
        job["Priority"] = int(job.get("Priority") or 0)
        state = (job.get("State") or {}).get("StateType")
        if state not in (None, "", "Undefined", 0):
            warnings.append("job state is ignored when submitting a job")
        for key, text in (("Revision", "revision"), ("Version", "version"), ("CreateTime", "create time"),
                          ("ModifyTime", "modify time")):
            if job.get(key):
                warnings.append(f"job {text} is ignored when submitting a job")
        if job["Type"] in ("batch", "ops") and job.get("ID"):
            warnings.append("job ID is ignored when submitting a batch job")
            job["ID"] = ""
        if len(job["Tasks"]) > 1:
            warnings.append("only one task is supported per job")
            job["Tasks"] = job["Tasks"][:1]
        for k in list(job["Meta"]):
            if k.startswith("bacalhau.org/"):
                warnings.append(f"job meta key {json.dumps(k)} is reserved and will be ignored")
                del job["Meta"][k]
        job["Tasks"] = [normalize_task(t) for t in job["Tasks"]]
        # transformers (pkg/node/requester.go): ID, name, orchestrator id
        job["ID"] = job.get("ID") or "j-" + str(uuid.uuid4())
        job["Name"] = job.get("Name") or job["ID"]
        job["Meta"]["bacalhau.org/orchestrator.id"] = self.node_id
        job["Meta"]["bacalhau.org/requester.id"] = self.node_id
        with self.lock:
            # SubmitJob: a job with this Name in the namespace is updated, not created anew
            existing = [j for j in self.jobs.values()
                        if j["Name"] == job["Name"] and j["Namespace"] == job["Namespace"]]
            t = now_ns()
            if existing:
                old = existing[0]
                if not force and self._spec(old) == self._spec(job):
                    raise APIError(500, f"no changes detected for new job spec. Job Name: '{job['Name']}', "
                                   f"Job Id: '{old['ID']}'", "", "Bacalhau",
                                   hint="Use the --force flag to override this warning")
                job["ID"] = old["ID"]
                job.update({"State": {"StateType": JOB_PENDING, "Message": "Job update requested by user"},
                            "Version": old["Version"] + 1, "Revision": old["Revision"] + 1,
                            "CreateTime": old["CreateTime"], "ModifyTime": t})
                for ex in self.job_executions(old["ID"]):
                    if ex["ComputeState"]["StateType"] not in EX_TERMINAL:
                        self._cancel_exec(ex, "Execution stopped for job update")
                self.jobs[job["ID"]] = job
                self._event(job["ID"], "Submission", "Job updated")
            else:
                job.update({"State": {"StateType": JOB_PENDING}, "Version": 1, "Revision": 1,
                            "CreateTime": t, "ModifyTime": t})
                self.jobs[job["ID"]] = job
                self._event(job["ID"], "Submission", "Job submitted")
            log("INF", f"job {job['ID']} submitted ({job['Type']})")
            eval_id = str(uuid.uuid4())
            self.evaluate(job["ID"], eval_id)
        return {"JobID": job["ID"], "EvaluationID": eval_id, "Warnings": warnings}

    @staticmethod
    def _spec(job: dict) -> str:
        """models.Job.CompareWith ignores ID, State, Version, Revision, times and bacalhau.org/ meta."""
        j = {k: v for k, v in job.items() if k not in ("ID", "State", "Version", "Revision", "CreateTime",
                                                      "ModifyTime")}
        j["Meta"] = {k: v for k, v in (job.get("Meta") or {}).items() if not k.startswith("bacalhau.org/")}
        return json.dumps(j, sort_keys=True)

    # stop --------------------------------------------------------------------------
    def stop_job(self, id_or_name: str, reason: str, namespace: str = "") -> dict:
        """orchestrator/endpoint.go StopJob."""
        with self.lock:
            job = self.find_job(id_or_name, namespace)
            state = job["State"]["StateType"]
            if state == JOB_STOPPED:
                return {"EvaluationID": ""}
            if state == JOB_COMPLETED:
                raise APIError(500, f"cannot stop job in state {state}", "", "Bacalhau")
            was_terminal = state in JOB_TERMINAL
            self._set_job_state(job, JOB_STOPPED, reason)
            self._event(job["ID"], "Scheduling", "Job requested to stop before completion",
                        details={"Reason": reason})
            eval_id = ""
            if not was_terminal:
                eval_id = str(uuid.uuid4())
                self.evaluate(job["ID"], eval_id)
            return {"EvaluationID": eval_id}

    def _cancel_exec(self, ex: dict, message: str) -> None:
        self._set_exec(ex, compute=EX_CANCELLED, desired=DESIRED_STOPPED, message=message)
        self._event(ex["JobID"], "Scheduling", message, ex["ID"])
        link = self.links.get(ex["NodeID"])
        if link:
            link.send(b"CANCEL " + json.dumps({"ExecutionID": ex["ID"]}).encode())

    def _fail_exec(self, ex: dict, message: str) -> None:
        self._set_exec(ex, compute=EX_FAILED, desired=DESIRED_STOPPED, message=message)
        self._event(ex["JobID"], "Scheduling", message, ex["ID"])

    # node selection (selection/selector/node_selector.go + ranking/*.go) -------------
    def _rank(self, job: dict) -> tuple[list[dict], list[tuple[dict, str]]]:
        """Compute nodes that are APPROVED and CONNECTED, split into suitable ones and
        (node, reason) for the rest; the last unsuitable ranker's reason wins (ranking/chain.go)."""
        task = job["Tasks"][0]
        engine = task["Engine"]["Type"]
        publisher = (task.get("Publisher") or {}).get("Type") or ""
        must = [c for c in job.get("Constraints") or [] if not str(c.get("Key", "")).startswith("favour_")]
        execs = [e for e in self.executions.values() if e["JobID"] == job["ID"] and e["JobVersion"] == job["Version"]]
        matching, rejected = [], []
        for nid, st in self.nodes.items():
            info = st["Info"]
            if info.get("NodeType") != "Compute" or st["Membership"] != "APPROVED" \
                    or st["ConnectionState"]["Status"] != "CONNECTED":
                continue
            reason = None
            cni = info.get("ComputeNodeInfo") or {}
            engines = cni.get("ExecutionEngines") or []
            if engine.lower() not in [e.lower() for e in engines]:
                reason = f"does not support {engine}, only {', '.join(engines)}"
            pubs = cni.get("Publishers") or []
            if publisher and publisher.lower() not in [p.lower() for p in pubs]:
                reason = f"does not support {publisher}, only {', '.join(pubs)}"
            labels = info.get("Labels") or {}
            if must and not all(requirement_matches(c, labels) for c in must):
                go_map = "map[" + " ".join(f"{k}:{labels[k]}" for k in sorted(labels)) + "]"
                reason = (f"labels {go_map} don't match required selectors "
                          f"[{' '.join(requirement_str(c) for c in job['Constraints'])}]")
            on_node = [e for e in execs if e["NodeID"] == nid]
            if len(on_node) > 1:
                reason = "job already executed on this node more than once"
            elif on_node and on_node[0]["ComputeState"]["StateType"] not in EX_DISCARDED:
                reason = "job rejected"
            if reason:
                rejected.append((info, reason))
            else:
                matching.append(info)
        return matching, rejected

    @staticmethod
    def _reasons(ranks: list[tuple[dict, str]], total: int) -> str:
        groups: dict[str, list[str]] = {}
        for info, reason in ranks:
            groups.setdefault(reason, []).append(info["NodeID"])
        out = ""
        for reason, ids in groups.items():
            who = f"{len(ids)} of {total} nodes" if len(ids) > 1 else f"Node {short_id(ids[0])}"
            out += f"\n• {who}: {reason}"
        return out

    def _new_exec(self, job: dict, node_id: str, eval_id: str, desired: int, partition: int = 0) -> dict:
        t = now_ns()
        ex = {
            "ID": "e-" + str(uuid.uuid4()), "Namespace": job["Namespace"], "EvalID": eval_id, "Name": "",
            "NodeID": node_id, "JobID": job["ID"], "Job": json.loads(json.dumps(job)),
            "JobVersion": job["Version"], "AllocatedResources": {"Tasks": {}},
            "DesiredState": {"StateType": desired}, "ComputeState": {"StateType": EX_NEW},
            "PublishedResult": {"Type": ""},
            "RunOutput": {"Stdout": "", "StdoutTruncated": False, "stderr": "", "StderrTruncated": False,
                          "ExitCode": 0, "ErrorMsg": ""},
            "PreviousExecution": "", "NextExecution": "", "FollowupEvalID": "",
            "Revision": 1, "CreateTime": t, "ModifyTime": t,
        }
        if partition:
            ex["PartitionIndex"] = partition
        self.executions[ex["ID"]] = ex
        self._event(job["ID"], "Scheduling", f"Requested execution on {short_id(node_id)}", ex["ID"],
                    details={"NodeID": node_id})
        return ex

    def _dispatch(self, ex: dict) -> None:
        link = self.links.get(ex["NodeID"])
        if link is None or not link.send(b"RUN " + json.dumps(ex).encode()):
            self._fail_exec(ex, MSG_EXEC_NODE_UNHEALTHY)

    # evaluation (scheduler/ops_job.go, scheduler/batch_service_job.go) ------------------
    def evaluate(self, job_id: str, eval_id: str = "") -> None:
        eval_id = eval_id or str(uuid.uuid4())
        with self.lock:
            job = self.jobs.get(job_id)
            if job is None:
                return
            execs = self.job_executions(job_id)
            nonterminal = [e for e in execs if e["ComputeState"]["StateType"] not in EX_TERMINAL]
            if job["State"]["StateType"] in JOB_TERMINAL:
                for ex in nonterminal:
                    self._cancel_exec(ex, MSG_EXEC_STOPPED_BY_JOB_STOP)
                return
            # executions on nodes that are no longer CONNECTED are lost (nodes.HealthyNodeFilter)
            for ex in list(nonterminal):
                st = self.nodes.get(ex["NodeID"])
                if st is None or st["ConnectionState"]["Status"] != "CONNECTED":
                    self._fail_exec(ex, MSG_EXEC_NODE_UNHEALTHY)
                    nonterminal.remove(ex)
            failed = [e for e in execs if e["ComputeState"]["StateType"] == EX_FAILED]
            current = [e for e in execs if e["JobVersion"] == job["Version"]]
            new: list[dict] = []
            if job["Type"] == "ops":
                matching, rejected = self._rank(job)
                if not matching and not current:
                    total = len(rejected)
                    self._fail_job(job, f"not matching nodes to run job out of {total} available nodes."
                                   + self._reasons(rejected, total), nonterminal)
                    return
                have = {e["NodeID"] for e in current}
                for info in matching:
                    if info["NodeID"] not in have:
                        new.append(self._new_exec(job, info["NodeID"], eval_id, DESIRED_RUNNING))
                if not nonterminal and not new:
                    if failed:
                        self._fail_job(job, MSG_JOB_EXECUTIONS_FAILED, [])
                    else:
                        self._set_job_state(job, JOB_COMPLETED)
                    return
            elif job["Type"] == "batch":
                completed = [e for e in current if e["ComputeState"]["StateType"] == EX_COMPLETED]
                remaining = job["Count"] - len(completed) - len(nonterminal)
                if remaining > 0:
                    matching, rejected = self._rank(job)
                    if len(matching) < remaining:
                        # Task.Timeouts.QueueTimeout 0 (the default): fail at once
                        total = len(matching) + len(rejected)
                        self._fail_job(job, f"not enough nodes to run job. requested: {remaining}, available: "
                                       f"{total}, suitable: {len(matching)}."
                                       + self._reasons(rejected, total), nonterminal)
                        return
                    for i, info in enumerate(matching[:remaining]):
                        new.append(self._new_exec(job, info["NodeID"], eval_id, DESIRED_PENDING))
                if len(completed) >= job["Count"]:
                    self._set_job_state(job, JOB_COMPLETED)
                    return
            else:
                self._fail_job(job, f"the stand-in runs batch and ops jobs only, not {job['Type']}", nonterminal)
                return
            if job["State"]["StateType"] in (JOB_PENDING, JOB_QUEUED) and (new or nonterminal):
                self._set_job_state(job, JOB_RUNNING)
            for ex in new:
                self._dispatch(ex)

    def _fail_job(self, job: dict, message: str, nonterminal: list[dict]) -> None:
        self._event(job["ID"], "Scheduling", message, error=True)
        self._set_job_state(job, JOB_FAILED, message)
        for ex in nonterminal:
            if ex["ComputeState"]["StateType"] not in EX_TERMINAL:
                self._cancel_exec(ex, MSG_EXEC_JOB_FAILURE)

    # messages from compute nodes ----------------------------------------------------
    def execution_update(self, nid: str, msg: dict) -> None:
        with self.lock:
            ex = self.executions.get(msg.get("ExecutionID", ""))
            if ex is None or ex["NodeID"] != nid or ex["ComputeState"]["StateType"] in EX_TERMINAL:
                return
            state = int(msg.get("ComputeState", EX_RUNNING))
            message = msg.get("Message") or ""
            if state == EX_RUNNING:
                self._set_exec(ex, compute=EX_RUNNING, desired=DESIRED_RUNNING)
                self._event(ex["JobID"], "Execution", "Running", ex["ID"])
                return
            self._set_exec(ex, compute=state, message=message, run_output=msg.get("RunOutput"))
            if state == EX_COMPLETED:
                self._event(ex["JobID"], "Execution", "Completed successfully", ex["ID"])
            else:
                self._event(ex["JobID"], msg.get("Topic") or "Execution", message, ex["ID"], error=True)
            self.evaluate(ex["JobID"])

    def node_changed(self, nid: str) -> None:
        """nodes/reevaluator.go HandleNodeConnectionEvent: a node that joined or left is batched;
        the batch is processed NodeReEvaluatorBatchDelay (15 s) after its last event (the timer is
        reset on every event), or at once when it holds MaxBatchSize (50) nodes. So the
        executions of a node that left are failed about 15 s after the orchestrator marked it
        DISCONNECTED, not at once."""
        with self.lock:
            self._reeval_nodes.add(nid)
            if self._reeval_timer is not None:
                self._reeval_timer.cancel()
                self._reeval_timer = None
            if len(self._reeval_nodes) < REEVALUATOR_MAX_BATCH:
                self._reeval_timer = threading.Timer(REEVALUATOR_BATCH_DELAY, self._reevaluate_batch)
                self._reeval_timer.daemon = True
                self._reeval_timer.start()
                return
        self._reevaluate_batch()

    def _reevaluate_batch(self) -> None:
        with self.lock:
            nids, self._reeval_nodes, self._reeval_timer = self._reeval_nodes, set(), None
            for nid in nids:
                self.reevaluate_node(nid)

    def reevaluate_node(self, nid: str) -> None:
        """nodes/reevaluator.go processEventBatch: jobs with in-progress executions on the node are
        evaluated again; each evaluation fails the executions of nodes no longer CONNECTED
        (scheduler/*_job.go groupByNodeHealth)."""
        with self.lock:
            job_ids = {e["JobID"] for e in self.executions.values()
                       if e["NodeID"] == nid and e["ComputeState"]["StateType"] not in EX_TERMINAL}
            for jid in job_ids:
                self.evaluate(jid)


# --------------------------------------------------------------------------- node state
class Link:
    """The orchestrator's end of one compute node's connection: writes are serialised."""

    def __init__(self, wfile) -> None:
        self.wfile = wfile
        self.lock = threading.Lock()

    def send(self, line: bytes) -> bool:
        with self.lock:
            try:
                self.wfile.write(line + b"\r\n")
                self.wfile.flush()
                return True
            except OSError:
                return False


class Node(Orchestration):
    def __init__(self, cfg: dict, orchestrator: bool, compute: bool) -> None:
        self.cfg = cfg
        self.orchestrator = orchestrator
        self.compute = compute
        self.data_dir = str(get(cfg, "DataDir") or os.path.expanduser("~/.bacalhau"))
        os.makedirs(self.data_dir, exist_ok=True)
        self.node_id = self._node_id()
        labels = dict(get(cfg, "Labels", {}) or {})
        # pkg/node/node.go registers the config labels, then the runtime labels (os_type,
        # os_arch: pkg/node/labels.go) and the node's name (label `name` = the node ID).
        self.labels = {str(k): str(v) for k, v in labels.items()}
        self.labels.update({"os_type": "linux", "os_arch": GOARCH, "name": self.node_id})
        self.token = None
        # Orchestrator side: node id -> NodeState, and the live links to compute nodes
        self.nodes: dict[str, dict] = {}
        self.links: dict[str, Link] = {}
        self.jobs: dict[str, dict] = {}
        self.executions: dict[str, dict] = {}
        self.history: dict[str, list] = {}
        self.seq = 0
        self.lock = threading.RLock()
        self.stop = threading.Event()
        self._reeval_nodes: set[str] = set()
        self._reeval_timer: threading.Timer | None = None
        # Compute side
        self._engines: list[str] | None = None
        self.executor = DockerExecutor(self) if compute else None

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

    def execution_engines(self) -> list[str]:
        """pkg/lib/provider/mapped.go: an engine is listed if its IsInstalled() was true at the
        first check, and that answer is cached for the life of the process. Docker's
        IsInstalled is `docker info` succeeding (pkg/docker/docker.go)."""
        if self._engines is None:
            ok = self.executor.docker_installed() if self.executor else False
            self._engines = (["docker"] if ok else []) + ["wasm"]
        return list(self._engines)

    def info(self) -> dict:
        info = {
            "NodeID": self.node_id,
            "NodeType": "Requester" if self.orchestrator and not self.compute else "Compute",
            "Labels": dict(self.labels),
            "SupportedProtocols": ["bprotocol/v2", "ncl/v1"],
            # models.NodeInfo.ComputeNodeInfo is a struct, so every node carries it (zeroed
            # on an orchestrator); Resources fields are omitempty; `address` is lower-case.
            "ComputeNodeInfo": {
                "ExecutionEngines": None, "Publishers": None, "StorageSources": None,
                "MaxCapacity": {}, "QueueCapacity": {}, "AvailableCapacity": {}, "MaxJobRequirements": {},
                "RunningExecutions": 0, "EnqueuedExecutions": 0, "address": "",
            },
            "BacalhauVersion": version_info(),
        }
        if self.compute:
            cpus = os.cpu_count() or 1
            try:
                mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
            except (ValueError, OSError):
                mem = 0
            cap = {"CPU": float(cpus), "Memory": mem}
            running = self.executor.running_count() if self.executor else 0
            info["ComputeNodeInfo"].update({
                "ExecutionEngines": self.execution_engines(),
                "Publishers": ["local", "noop"],
                "StorageSources": ["urlDownload", "inline"],
                "MaxCapacity": cap,
                "AvailableCapacity": cap,
                "MaxJobRequirements": cap,
                "RunningExecutions": running,
            })
        return info

    # orchestrator membership -------------------------------------------------------
    @staticmethod
    def _public_conn(cs: dict) -> dict:
        out = {k: v for k, v in cs.items() if not k.startswith("_")}
        if not out.get("LastError"):
            out.pop("LastError", None)  # omitempty (pkg/models/node_state.go)
        return out

    def self_state(self) -> dict:
        t = now()
        return {
            "Info": self.info(),
            "Membership": "APPROVED",
            "Connection": "CONNECTED",
            "ConnectionState": {"Status": "CONNECTED", "LastHeartbeat": t, "ConnectedSince": t,
                                "DisconnectedSince": ZERO_TIME},
        }

    def register(self, info: dict, link: Link | None = None) -> str | None:
        """nodes/manager.go Handshake: a REJECTED node is refused; a new node gets the default
        approval state (PENDING with Orchestrator.NodeManager.ManualApproval)."""
        manual = bool(get(self.cfg, "Orchestrator.NodeManager.ManualApproval", False))
        nid = info.get("NodeID", "")
        with self.lock:
            st = self.nodes.get(nid)
            if st is not None and st["Membership"] == "REJECTED":
                return "node has been rejected"
            t = now()
            if st is None:
                st = {"Info": info, "Membership": "PENDING" if manual else "APPROVED",
                      "Connection": "CONNECTED",
                      "ConnectionState": {"Status": "CONNECTED", "LastHeartbeat": t, "ConnectedSince": t,
                                          "DisconnectedSince": ZERO_TIME, "LastError": ""}}
                self.nodes[nid] = st
            st["Info"] = info
            st["Connection"] = "CONNECTED"
            st["ConnectionState"].update({"Status": "CONNECTED", "LastHeartbeat": t, "ConnectedSince": t,
                                          "LastError": "", "_hb": time.time()})
            if link is not None:
                self.links[nid] = link
        log("INF", f"handshake successful with node {nid}")
        return None

    def heartbeat(self, nid: str, info: dict | None = None) -> None:
        with self.lock:
            st = self.nodes.get(nid)
            if st:
                st["ConnectionState"]["LastHeartbeat"] = now()
                st["ConnectionState"]["_hb"] = time.time()
                if info:
                    st["Info"] = info

    def disconnect(self, nid: str, err: str) -> None:
        changed = False
        with self.lock:
            st = self.nodes.get(nid)
            if st and st["Connection"] == "CONNECTED":
                st["Connection"] = "DISCONNECTED"
                st["ConnectionState"].update({"Status": "DISCONNECTED", "DisconnectedSince": now(),
                                              "LastError": err})
                changed = True
            self.links.pop(nid, None)
        if changed:
            self.node_changed(nid)

    def check_heartbeats(self) -> None:
        timeout = parse_duration(get(self.cfg, "Orchestrator.NodeManager.DisconnectTimeout"), 60.0)
        lost = []
        with self.lock:
            for nid, st in self.nodes.items():
                hb = st["ConnectionState"].get("_hb")
                if st["Connection"] == "CONNECTED" and hb and time.time() - hb > timeout:
                    lost.append((nid, st["ConnectionState"].get("LastHeartbeat", "")))
        for nid, last in lost:
            # nodes/manager.go checkNodeHealth
            log("INF", "Marking node as disconnected", node=nid, lastHeartbeat=last)
            self.disconnect(nid, "heartbeat timeout")

    def node_states(self) -> list[dict]:
        self.check_heartbeats()
        out = [self.self_state()] if self.orchestrator else []
        with self.lock:
            for nid, st in self.nodes.items():
                public = json.loads(json.dumps({k: v for k, v in st.items() if k != "ConnectionState"}))
                public["ConnectionState"] = self._public_conn(st["ConnectionState"])
                if nid != self.node_id:
                    out.append(public)
        return out

# --------------------------------------------------------------------------- compute: docker executor
def docker_error(stderr: str) -> str:
    """The Docker client's own error text, as the docker CLI prints it (first line, without the
    CLI's `Error: ` prefix; `Error response from daemon: ...` stays, as Docker's Go client says it)."""
    for line in (stderr or "").splitlines():
        line = line.strip()
        if not line or line == "errors pretty printing info":
            continue
        for prefix in ("ERROR: ", "Error: "):
            if line.startswith(prefix):
                line = line[len(prefix):]
        return line
    return "docker failed without a message"


def docker_engine_get(path: str, timeout: float = 60) -> tuple[int, dict | list | None, str]:
    """GET on Docker's Engine API over its unix socket ($DOCKER_HOST, else /var/run/docker.sock,
    as Docker's Go client reads it): (HTTP status, JSON body, error text). The error text is what
    Docker's Go client makes of a refusal, `Error response from daemon: <message>` (0 and the
    client's own text when the daemon cannot be reached). Only for what the docker CLI cannot do:
    the registry query of the bid (`/distribution/<image>/json`, Docker's DistributionInspect)."""
    host = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
    if not host.startswith("unix://"):
        return 0, None, f"the stand-in reaches Docker only on a unix socket, not {host}"
    sock_path = host[len("unix://"):]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(sock_path)
            sock.sendall(f"GET {path} HTTP/1.0\r\nHost: docker\r\n\r\n".encode())
            raw = b""
            while chunk := sock.recv(65536):
                raw += chunk
    except OSError:
        return 0, None, f"Cannot connect to the Docker daemon at {host}. Is the docker daemon running?"
    head, _, body = raw.partition(b"\r\n\r\n")
    try:
        status = int(head.split(b" ", 2)[1])
    except (IndexError, ValueError):
        return 0, None, "docker answered without HTTP"
    try:
        data = json.loads(body or b"null")
    except ValueError:
        data = None
    if 200 <= status < 300:
        return status, data, ""
    message = data.get("message", "") if isinstance(data, dict) else body.decode(errors="replace").strip()
    return status, data, f"Error response from daemon: {message}"


def docker_image_error(status: int, text: str, image: str) -> str:
    """pkg/docker/errors.go NewDockerImageError: Docker's error by its kind (errdefs, from the
    Engine API's HTTP status): not found / permission denied, invalid argument, else Docker's text."""
    if status in (403, 404):
        return f"image not available: {json.dumps(image)}"
    if status == 400:
        return f"invalid image format: {json.dumps(image)}"
    return text


def parse_cpu(value: str) -> float | None:
    v = str(value or "").strip()
    try:
        return float(v[:-1]) / 1000 if v.endswith("m") else float(v)
    except ValueError:
        return None


def parse_memory(value: str) -> int | None:
    m = re.match(r"^\s*([\d.]+)\s*([kKmMgGtT]?)([iI]?)[bB]?\s*$", str(value or ""))
    if not m:
        return None
    base = 1024 if m.group(3) else 1000
    power = " kmgt".index(m.group(2).lower() or " ")
    return int(float(m.group(1)) * base ** power)


class DockerExecutor:
    """Runs an execution's docker task with the host's docker CLI, in the steps of Bacalhau's
    executor (pkg/executor/docker/executor.go, handler.go): check the image is there and usable
    (the bid), create the container, start it, wait, read its logs, remove it."""

    def __init__(self, node: "Node") -> None:
        self.node = node
        self.running: dict[str, str] = {}  # execution id -> container name
        self.cancelled: set[str] = set()
        self.lock = threading.Lock()
        self.platform: str | None = None
        # bidstrategy/semantic/image_platform.go ManifestCache: an image's registry answer is
        # kept for an hour (oneHourInSeconds), so the registry is asked once per image an hour.
        self.manifests: dict[str, tuple[float, list[str]]] = {}

    @staticmethod
    def docker(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        try:
            return subprocess.run(["docker", *args], capture_output=True, timeout=timeout, check=False)
        except FileNotFoundError:
            return subprocess.CompletedProcess(args, 127, b"", b'exec: "docker": executable file not found in $PATH')
        except subprocess.TimeoutExpired:
            return subprocess.CompletedProcess(args, 124, b"", b"context deadline exceeded")

    def docker_installed(self) -> bool:
        return self.docker("info", "--format", "{{.ServerVersion}}", timeout=20).returncode == 0

    def running_count(self) -> int:
        with self.lock:
            return len(self.running)

    def cancel(self, execution_id: str) -> None:
        with self.lock:
            name = self.running.get(execution_id)
            self.cancelled.add(execution_id)
        if name:
            self.docker("rm", "-f", name, timeout=30)

    def run(self, ex: dict, send) -> None:
        eid = ex["ID"]
        log("INF", "starting execution", executionID=eid, jobID=ex["JobID"])
        try:
            result = self._run(ex, send)
        except Exception as exc:  # noqa: BLE001 - an execution must end with an answer
            result = {"ComputeState": EX_FAILED, "Message": f"{type(exc).__name__}: {exc}"}
        with self.lock:
            self.running.pop(eid, None)
            if eid in self.cancelled:
                self.cancelled.discard(eid)
                return
        result["ExecutionID"] = eid
        if result["ComputeState"] == EX_FAILED:
            log("WRN", "execution failed", error=result.get("Message", ""), executionID=eid)
        else:
            log("INF", "container execution ended", executionID=eid,
                status=result["RunOutput"]["ExitCode"])
        send("RESULT", result)

    def _fail(self, message: str) -> dict:
        return {"ComputeState": EX_FAILED, "Message": message}

    def _image_manifest(self, image: str) -> tuple[str, bool]:
        """The bid's image check, Bacalhau v1.9.3's rule (pkg/docker/docker.go ImageDistribution,
        called by pkg/executor/docker/bidstrategy/semantic/image_platform.go ShouldBid):
        a local image of the host's platform WITH a RepoDigests entry is trusted as it is; any
        other image (no digest: built or `docker import`ed on the node, or not there at all) means
        asking the registry for its manifest, through Docker (DistributionInspect), and a refusal
        fails the execution with Docker's error (NewDockerImageError; compute/bidder.go
        handleError). Returns (error text or "", whether the image is on the node)."""
        r = self.docker("image", "inspect", "--format", "{{.Os}}/{{.Architecture}} {{json .RepoDigests}}", image)
        local = r.returncode == 0
        if not local:
            err = docker_error(r.stderr.decode(errors="replace"))
            if "no such image" not in err.lower():
                return err, False  # NewDockerImageError of a non-NotFound error: Docker's text
        else:
            plat, _, digests = r.stdout.decode().strip().partition(" ")
            try:
                has_digest = bool(json.loads(digests or "[]"))
            except ValueError:
                has_digest = False
            if plat == self.platform and has_digest:
                return "", True
            local = plat == self.platform  # another platform's image is pulled again (PullImage)
        cached = self.manifests.get(image)
        if cached and cached[0] > time.monotonic():
            return "", local
        status, body, err = docker_engine_get(f"/distribution/{image}/json")
        if err:
            return docker_image_error(status, err, image), local
        platforms = [f"{p.get('os')}/{p.get('architecture')}" for p in (body or {}).get("Platforms") or []
                     if isinstance(p, dict) and "unknown" not in (p.get("os"), p.get("architecture"))]
        # Kept as Bacalhau keeps them; the stand-in does not reject a bid on them (README).
        self.manifests[image] = (time.monotonic() + 3600, platforms)
        return "", local

    def _run(self, ex: dict, send) -> dict:
        task = ex["Job"]["Tasks"][0]
        engine = task.get("Engine") or {}
        if str(engine.get("Type", "")).lower() != "docker":
            return self._fail(f"getting executor {engine.get('Type')}: no matching key found on this server: "
                              f"{engine.get('Type')}. Only supports [docker]")
        p = engine.get("Params") or {}
        image = str(p.get("Image") or "")
        workdir = str(p.get("WorkingDirectory") or "")
        envs = [str(e) for e in p.get("EnvironmentVariables") or []]
        # executor/docker/models/types.go EngineSpec.Validate
        if not image:
            return self._fail("invalid docker engine param: 'Image' cannot be empty")
        if workdir and not workdir.startswith("/"):
            return self._fail(f"invalid docker engine param: 'WorkingDirectory' ({json.dumps(workdir)}) "
                              "must contain absolute path")
        for e in envs:
            if e.split("=", 1)[0].upper().startswith("BACALHAU_"):
                return self._fail(f"invalid docker engine param: environment variable '{e.split('=', 1)[0]}' "
                                  "cannot start with BACALHAU_")
        # the bid (bidstrategy/semantic/image_platform.go): the host platform, then the image
        if self.platform is None:
            r = self.docker("version", "--format", "{{.Server.Os}}/{{.Server.Arch}}")
            if r.returncode != 0:
                return self._fail("failed to get host platform: " + docker_error(r.stderr.decode(errors="replace")))
            self.platform = r.stdout.decode().strip()
        err, local = self._image_manifest(image)
        if err:
            return self._fail(err)
        if not local:
            # executor.go Start -> docker.go PullImage: an image that is not on the node is
            # pulled for the host's platform; a failure is Docker's text (NewDockerImageError).
            r = self.docker("pull", "--quiet", "--platform", self.platform, image, timeout=600)
            if r.returncode != 0:
                return self._fail(docker_error(r.stderr.decode(errors="replace")))
        send("UPDATE", {"ExecutionID": ex["ID"], "ComputeState": EX_RUNNING})
        name = f"bacalhau-{ex['ID']}"
        with self.lock:
            if ex["ID"] in self.cancelled:
                return self._fail("cancelled")
            self.running[ex["ID"]] = name
        args = ["create", "--name", name, "--label", f"bacalhau-executionID={ex['ID']}",
                "--label", f"bacalhau-jobID={ex['JobID']}"]
        for k, v in (task.get("Env") or {}).items():
            args += ["-e", f"{k}={v}"]
        for e in envs:
            args += ["-e", e]
        if workdir:
            args += ["-w", workdir]
        res = task.get("Resources") or {}
        cpu, mem = parse_cpu(res.get("CPU", "")), parse_memory(res.get("Memory", ""))
        if cpu:
            args += ["--cpus", f"{cpu:g}"]
        if mem:
            args += ["--memory", str(mem)]
        net = str((task.get("Network") or {}).get("Type") or "Default")
        args += ["--network", {"None": "none", "Host": "host", "Full": "host"}.get(net, "bridge")]
        entrypoint = [str(a) for a in p.get("Entrypoint") or []]
        params = [str(a) for a in p.get("Parameters") or []]
        if entrypoint:
            args += ["--entrypoint", entrypoint[0], image, *entrypoint[1:], *params]
        else:
            args += [image, *params]
        r = self.docker(*args)
        if r.returncode != 0:
            return self._fail("creating container: " + docker_error(r.stderr.decode(errors="replace")))
        try:
            r = self.docker("start", name)
            if r.returncode != 0:
                err = docker_error(r.stderr.decode(errors="replace"))
                why = "executable file not found" if "executable file not found" in err else "failed to start container"
                return self._fail(f"failed to start container: {why}: {err}")
            timeout = float((task.get("Timeouts") or {}).get("ExecutionTimeout") or 0) or 24 * 3600
            r = self.docker("wait", name, timeout=timeout)
            if r.returncode != 0:
                return self._fail("received error response from docker client while waiting on container: "
                                  + docker_error(r.stderr.decode(errors="replace")))
            code = int((r.stdout.decode().strip().splitlines() or ["0"])[-1])
            r = self.docker("logs", name)
            if r.returncode != 0:
                return self._fail("failed to follow container logs: " + docker_error(r.stderr.decode(errors="replace")))
            out, err = r.stdout, r.stderr
            return {"ComputeState": EX_COMPLETED, "RunOutput": {
                "Stdout": out[:OUTPUT_RETURN_LIMIT].decode(errors="replace"),
                "StdoutTruncated": len(out) > OUTPUT_RETURN_LIMIT,
                "stderr": err[:OUTPUT_RETURN_LIMIT].decode(errors="replace"),
                "StderrTruncated": len(err) > OUTPUT_RETURN_LIMIT,
                "ExitCode": code, "ErrorMsg": ""}}
        finally:
            self.docker("rm", "-f", name, timeout=30)


# --------------------------------------------------------------------------- HTTP API
NOT_FOUND_ROUTE = APIError(404, "The requested resource/URL was not found.", "NotFound", "APIServer",
                           "The server version may be older than this CLI version and does not support the "
                           "endpoint yet.")
JOBS = "/api/v1/orchestrator/jobs"


# --------------------------------------------------------------------------- TLS and API auth
# What Bacalhau v1.9.3 does, as read from its source; Go's and nats.go's error texts are
# reproduced because the roles' failure messages match on them.

def go_tls_error(exc: BaseException) -> str:
    """The text Go's crypto/tls gives for a failed client handshake, from Python's ssl error.
    Certificate chain errors come out of crypto/tls handshake_client.go as
    `tls: failed to verify certificate: <x509 error>` (crypto/x509/verify.go texts); a peer that
    does not speak TLS at all gives `tls: first record does not look like a TLS handshake`
    (crypto/tls conn.go readRecordOrCCS)."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        code = getattr(exc, "verify_code", 0)
        if code in (2, 18, 19, 20, 21):  # no issuer among the roots: Go's UnknownAuthorityError
            x509 = "x509: certificate signed by unknown authority"
        elif code in (9, 10):
            x509 = "x509: certificate has expired or is not yet valid"
        elif code == 26:
            x509 = "x509: certificate specifies an incompatible key usage"
        else:
            x509 = f"x509: {getattr(exc, 'verify_message', '') or exc}"
        return f"tls: failed to verify certificate: {x509}"
    if isinstance(exc, ssl.SSLError):
        reason = (getattr(exc, "reason", "") or "").upper()
        if reason.startswith(("TLSV1_ALERT", "SSLV3_ALERT")):
            return f"remote error: tls: {reason.split('ALERT_', 1)[-1].lower().replace('_', ' ')}"
        return "tls: first record does not look like a TLS handshake"
    return str(exc)


def go_hostname_error(cert: dict, host: str) -> str | None:
    """crypto/x509 Certificate.VerifyHostname and HostnameError.Error: an IP is matched against
    the IP SANs only, a name against the DNS SANs only (wildcards one label deep), never the CN."""
    sans = cert.get("subjectAltName", ())
    dns = [v for k, v in sans if k == "DNS"]
    ips = []
    for k, v in sans:
        if k == "IP Address":
            try:
                ips.append(ipaddress.ip_address(v.strip()))
            except ValueError:
                pass
    try:
        want = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        want = None
    if want is not None:
        if want in ips:
            return None
        if not ips:
            return f"x509: cannot validate certificate for {host} because it doesn't contain any IP SANs"
        valid = ", ".join(str(ip) for ip in ips)
    else:
        name = host.rstrip(".").lower()
        for pattern in dns:
            p = pattern.rstrip(".").lower()
            if p == name:
                return None
            if p.startswith("*.") and "." in name and name.split(".", 1)[1] == p[2:]:
                return None
        valid = ", ".join(dns)
    if not sans:
        cn = dict(x[0] for x in cert.get("subject", ())).get("commonName", "")
        if cn and cn.lower() == host.lower():
            return "x509: certificate relies on legacy Common Name field, use SANs instead"
    if not valid:
        return f"x509: certificate is not valid for any names, but wanted to match {host}"
    return f"x509: certificate is valid for {valid}, not {host}"


def tls_client_context(ca_file: str = "", insecure: bool = False) -> ssl.SSLContext:
    """Go's client defaults as nats.go and clientv2 set them: TLS 1.2 at least, the given CA
    file as the only roots (nats.RootCAs / clientv2.WithCACertificate), else the system's.
    The host name is checked by go_hostname_error, as Go checks it, not by OpenSSL."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.check_hostname = False
    if insecure:
        ctx.verify_mode = ssl.CERT_NONE
        return ctx
    ctx.verify_mode = ssl.CERT_REQUIRED
    if ca_file:
        ctx.load_verify_locations(cafile=ca_file)
    else:
        ctx.load_default_certs()
    return ctx


def tls_client_wrap(sock: socket.socket, ctx: ssl.SSLContext, host: str) -> ssl.SSLSocket:
    """Handshake and verify like Go's tls.Client with ServerName=host; raises ssl.SSLError
    whose str() is Go's text (see go_tls_error)."""
    try:
        ipaddress.ip_address(host.strip("[]"))
        sni = None  # Go sends no SNI for an IP address
    except ValueError:
        sni = host
    try:
        tls = ctx.wrap_socket(sock, server_hostname=sni)
    except (ssl.SSLError, OSError) as exc:
        raise ssl.SSLError(go_tls_error(exc)) from exc
    if ctx.verify_mode != ssl.CERT_NONE:
        bad = go_hostname_error(tls.getpeercert() or {}, host)
        if bad:
            tls.close()
            raise ssl.SSLError(f"tls: failed to verify certificate: {bad}")
    return tls


def tls_server_context(cert_file: str, key_file: str) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert_file, key_file)
    return ctx


# pkg/authz/capabilities.go GetDefaultEndpointPermissions: the longest prefix of the path
# decides (MapEndpointToResourceType); "open" needs no credentials.
ENDPOINT_PERMISSIONS = {
    "/api/v1/auth": "open",
    "/api/v1/version": "open",
    "/api/v1/agent": "agent",
    "/api/v1/agent/alive": "open",
    "/api/v1/agent/version": "open",
    "/api/v1/agent/authconfig": "open",
    "/api/v1/orchestrator/jobs": "job",
    "/api/v1/orchestrator/nodes": "node",
}
API_KEY_MIN, API_KEY_MAX = 20, 255  # pkg/authz/entry_point_authorizer.go


def resource_type(path: str) -> str:
    best = ""
    for endpoint in ENDPOINT_PERMISSIONS:
        if path.startswith(endpoint) and len(endpoint) > len(best):
            best = endpoint
    return ENDPOINT_PERMISSIONS.get(best, "")


def required_capability(resource: str, method: str) -> str:
    """capabilities.go GetRequiredCapability: GET reads, anything else writes; an endpoint
    outside the table needs write:node."""
    if resource in ("node", "job", "agent"):
        return f"{'read' if method == 'GET' else 'write'}:{resource}"
    return "write:node"


def has_capability(user: dict, required: str) -> bool:
    """capabilities.go HasRequiredCapability: exact action, "*", "read:*" for reads,
    "write:*" for anything that is not a read."""
    is_read = required.startswith("read:")
    for cap in user.get("Capabilities") or []:
        for action in (cap or {}).get("Actions") or []:
            if action == "*" or action == required or (is_read and action == "read:*") \
                    or (not is_read and action == "write:*"):
                return True
    return False


def user_identifier(user: dict) -> str:
    """entry_point_authorizer.go getUserIdentifier."""
    if user.get("Alias"):
        return user["Alias"]
    if user.get("Username"):
        return user["Username"]
    key = user.get("APIKey") or ""
    if key:
        return "API key ending in ..." + key[-5:] if len(key) > 5 else "API key " + key
    return "unknown user"


def validate_users(users: list) -> str | None:
    """entry_point_authorizer.go validateUser, the checks a key or password user meets
    (serve stops with `error initializing users: <this>`)."""
    for user in users:
        user = user or {}
        uid = user_identifier(user)
        has_pw = bool(user.get("Username")) and bool(user.get("Password"))
        has_key = bool(user.get("APIKey"))
        if has_pw and has_key:
            return f"user '{uid}' has both username/password and API key, must have only one authentication method"
        if not has_pw and not has_key:
            return f"user '{uid}' has neither username/password nor API key, must have one authentication method"
        key = str(user.get("APIKey") or "")
        if key and len(key) < API_KEY_MIN:
            return f"API key for user '{uid}' is too short, minimum length is {API_KEY_MIN} characters"
        if len(key) > API_KEY_MAX:
            return f"API key for user '{uid}' exceeds maximum length of {API_KEY_MAX} characters"
        if not user.get("Capabilities"):
            return f"user '{uid}' has no capabilities defined, must have at least one capability"
    return None


class Authorizer:
    """API.Auth.Users as pkg/authz/entry_point_authorizer.go Authorize checks them, with the
    errors pkg/publicapi/middleware/authz.go returns. No users: every request passes (the
    policy authorizer with its allow-all default, pkg/node/node.go)."""

    def __init__(self, users: list) -> None:
        self.users = [u or {} for u in users or []]
        self.by_key = {str(u["APIKey"]): u for u in self.users if u.get("APIKey")}
        self.by_name = {str(u["Username"]).lower(): u for u in self.users if u.get("Username")}

    def check(self, method: str, path: str, header: str | None) -> APIError | None:
        if not self.users:
            return None
        resource = resource_type(path)
        if resource == "open":
            return None
        if header is None:
            return self._unauthorized("Missing Authorization header")
        if header.startswith("Basic "):
            try:
                creds = base64.b64decode(header[6:], validate=True).decode()
            except (ValueError, UnicodeDecodeError):
                return self._unauthorized("failed to decode basic auth credentials")
            if ":" not in creds:
                return self._unauthorized("invalid basic auth credentials format")
            name, password = creds.split(":", 1)
            user = self.by_name.get(name.lower())
            if user is None or str(user.get("Password")) != password:
                return self._unauthorized("invalid basic auth credentials")
        elif header.startswith("Bearer "):
            key = header[7:]
            if not key:
                return self._unauthorized("empty API key provided")
            user = self.by_key.get(key)
            if user is None:
                return self._unauthorized("invalid API key")
        else:
            return self._unauthorized("unsupported authentication method")
        required = required_capability(resource, method)
        if not has_capability(user, required):
            return APIError(403, "Request Forbidden", code="Forbidden", component="Authorizer",
                            hint="Check if user have access to this resource. Event has been recorded.",
                            details={"reason": f"user '{user_identifier(user)}' does not have the required "
                                               f"capability '{required}'"})
        return None

    @staticmethod
    def _unauthorized(reason: str) -> APIError:
        return APIError(401, "Request Unauthorized", code="Unauthorized", component="Authorizer",
                        hint="Unauthorized principal. Event has been recorded.", details={"reason": reason})


class APIServer(ThreadingHTTPServer):
    """The HTTP API; with API.TLS.CertFile and KeyFile, HTTPS only (pkg/publicapi/server.go
    ServeTLS). A plain HTTP request on it gets what Go's net/http answers (net/http server.go)."""

    daemon_threads = True
    tls_context: ssl.SSLContext | None = None

    def finish_request(self, request, client_address):
        if self.tls_context is None:
            return super().finish_request(request, client_address)
        request.settimeout(10)
        try:
            first = request.recv(1, socket.MSG_PEEK)
            if first and first != b"\x16":
                request.sendall(b"HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n")
                return None
            tls = self.tls_context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError):
            return None
        try:
            tls.settimeout(None)
            super().finish_request(tls, client_address)
        finally:
            try:
                tls.close()
            except OSError:
                pass
        return None


def make_handler(node: Node, authorizer: Authorizer | None = None):
    authorizer = authorizer or Authorizer([])

    class Handler(BaseHTTPRequestHandler):
        server_version = "bacalhau-standin"

        def log_message(self, fmt, *args):  # quiet: the journal gets our own lines only
            return

        def _send(self, code: int, body) -> None:
            data = (json.dumps(body) + "\n").encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json; charset=UTF-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _api_error(self, err: APIError) -> None:
            self._send(err.status, err.body())

        def _error(self, code: int, msg: str, kind: str) -> None:
            self._send(code, {"Status": code, "Message": msg, "Code": kind, "Component": "APIServer",
                              "RequestID": str(uuid.uuid4())})

        def _body(self):
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            if not raw.strip():
                return {}
            return json.loads(raw)

        def _route(self, method: str) -> None:
            url = urllib.parse.urlparse(self.path)
            q = urllib.parse.parse_qs(url.query)
            path = url.path.rstrip("/")
            try:
                # pkg/publicapi/server.go: the Authorize middleware runs on every route, before the handler
                refused = authorizer.check(method, url.path, self.headers.get("Authorization"))
                if refused:
                    length = int(self.headers.get("Content-Length") or 0)
                    if length:  # read the body, so closing the connection does not reset it under the reply
                        self.rfile.read(length)
                    raise refused
                if method == "GET":
                    return self._get(path, q)
                if method in ("PUT", "POST") and node.orchestrator and path == JOBS:
                    try:
                        body = self._body()
                    except ValueError as exc:
                        raise APIError(400, f"code=400, message=Syntax error: {exc}")
                    return self._send(200, node.submit(body))
                if method == "PUT" and node.orchestrator and path.startswith("/api/v1/orchestrator/nodes/"):
                    return self._put_node(path)
                if method == "DELETE" and node.orchestrator and re.match(rf"^{JOBS}/[^/]+$", path):
                    try:
                        body = self._body()
                    except ValueError:
                        body = {}
                    reason = (q.get("reason") or [""])[0] or (body.get("reason") if isinstance(body, dict) else "")
                    ns = (q.get("namespace") or [""])[0]
                    return self._send(200, node.stop_job(urllib.parse.unquote(path.rsplit("/", 1)[1]),
                                                         reason or "", ns))
                raise NOT_FOUND_ROUTE
            except APIError as err:
                return self._api_error(err)

        def do_GET(self):  # noqa: N802
            self._route("GET")

        def do_PUT(self):  # noqa: N802
            self._route("PUT")

        def do_POST(self):  # noqa: N802
            self._route("POST")

        def do_DELETE(self):  # noqa: N802
            self._route("DELETE")

        def _get(self, path: str, q: dict) -> None:
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
                raise APIError(404, f"node not found: {nid}", "NotFound", "NodesManager")
            if node.orchestrator and path == JOBS:
                return self._send(200, list_jobs(node, q))
            m = re.match(rf"^{JOBS}/([^/]+)(?:/(executions|history))?$", path) if node.orchestrator else None
            if m:
                ns = (q.get("namespace") or [""])[0]
                with node.lock:
                    job = node.find_job(urllib.parse.unquote(m.group(1)), ns)
                    execs = json.loads(json.dumps(node.job_executions(job["ID"])))
                    hist = json.loads(json.dumps(node.history.get(job["ID"], [])))
                    job = json.loads(json.dumps(job))
                if m.group(2) == "executions":
                    return self._send(200, {"NextToken": "", "Items": execs})
                if m.group(2) == "history":
                    return self._send(200, {"NextToken": "", "Items": hist})
                resp = {"Job": job}
                for inc in (q.get("include") or [""])[0].split(","):
                    inc = inc.strip()
                    if inc == "executions":
                        resp["Executions"] = {"NextToken": "", "Items": execs}
                    elif inc == "history":
                        resp["History"] = {"NextToken": "", "Items": hist}
                    elif inc:
                        raise APIError(400, "code=400, message=Key: 'GetJobRequest.Include' Error:Field "
                                       "validation for 'Include' failed on the 'oneof' tag")
                return self._send(200, resp)
            raise NOT_FOUND_ROUTE

        def _put_node(self, path: str) -> None:
            nid = path.rsplit("/", 1)[1]
            try:
                body = self._body()
            except ValueError:
                raise APIError(400, "invalid request body", "BadRequest")
            action = str(body.get("Action", "")).lower()
            with node.lock:
                st = node.nodes.get(nid)
                if st is None:
                    raise APIError(404, f"node not found: {nid}", "NotFound", "NodesManager")
                if action in ("approve", "reject") and st["Membership"] == action.upper() + "D":
                    raise APIError(409, f"node {nid} already {action}d", "ConflictNodeState", "NodesManager")
                if action == "approve":
                    st["Membership"] = "APPROVED"
                elif action == "reject":
                    # nodes/manager.go RejectNode: rejected and disconnected
                    st["Membership"] = "REJECTED"
                    st["Connection"] = "DISCONNECTED"
                    st["ConnectionState"].update({"Status": "DISCONNECTED", "DisconnectedSince": now()})
                    node.links.pop(nid, None)
                elif action == "delete":
                    del node.nodes[nid]
                    node.links.pop(nid, None)
                else:
                    raise APIError(400, f"unsupported action: {action}", "BadRequest")
            if action != "approve":
                node.node_changed(nid)
            return self._send(200, {"Success": True})

    return Handler


def list_jobs(node: Node, q: dict) -> dict:
    ns = (q.get("namespace") or ["default"])[0] or "default"
    limit = (q.get("limit") or [""])[0]
    selectors = []
    for sel in q.get("labels") or []:
        try:
            selectors += parse_selector(sel)
        except ValueError as exc:
            raise APIError(400, str(exc))
    with node.lock:
        jobs = sorted(node.jobs.values(), key=lambda j: j["CreateTime"])
        jobs = [j for j in jobs if (ns == "*" or j["Namespace"] == ns)
                and all(requirement_matches(s, j.get("Labels") or {}) for s in selectors)]
        jobs = json.loads(json.dumps(jobs))
    if q.get("reverse", ["false"])[0] == "true":
        jobs.reverse()
    if limit.isdigit() and int(limit) > 0:
        jobs = jobs[: int(limit)]
    return {"NextToken": "", "Items": jobs}


def filter_states(states: list[dict], q: dict) -> list[dict]:
    status = (q.get("filter-status") or [""])[0].upper()
    approval = (q.get("filter-approval") or [""])[0].upper()
    labels = (q.get("labels") or [""])[0]
    out = []
    for st in states:
        if status and st["ConnectionState"]["Status"] != status:
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
def make_transport_handler(node: Node, token: str | None, tls_ctx: ssl.SSLContext | None = None,
                           tls_timeout: float = 10.0):
    class Transport(socketserver.StreamRequestHandler):
        def handle(self):
            peer = f"{self.client_address[0]}:{self.client_address[1]}"
            # nats-server (server/server.go createClientEx): INFO first, in plain text, even with
            # TLS (Bacalhau does not set TLSHandshakeFirst); tls_required tells the client to
            # upgrade, and the server then expects the TLS handshake.
            self.wfile.write(b'INFO {"server_id":"standin","auth_required":%s,"tls_required":%s}\r\n'
                             % (b"true" if token else b"false", b"true" if tls_ctx else b"false"))
            self.wfile.flush()
            if tls_ctx is not None:
                self.connection.settimeout(tls_timeout)
                try:
                    tls = tls_ctx.wrap_socket(self.connection, server_side=True)
                except (ssl.SSLError, OSError) as exc:
                    log("ERR", f"{peer} - TLS handshake error: {go_tls_error(exc)}")
                    return
                self.connection = self.request = tls
                self.rfile = tls.makefile("rb")
                self.wfile = tls.makefile("wb")
            nid = None
            link = Link(self.wfile)
            reason = "connection closed"
            received = 0  # execution messages from the node (NCL's compute sequence number)
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
                link.send(b"+OK")
                self.connection.settimeout(None)
                while not node.stop.is_set():
                    raw = self.rfile.readline()
                    if not raw:
                        break
                    line = raw.decode(errors="replace").strip()
                    verb, _, rest = line.partition(" ")
                    if verb == "PING":
                        link.send(b"PONG")
                    elif verb == "REGISTER":
                        info = json.loads(rest)
                        refused = node.register(info, link)
                        if refused:
                            link.send(b"-ERR '" + refused.encode() + b"'")
                            return
                        nid = info.get("NodeID")
                        link.send(b"+OK")
                    elif verb == "HEARTBEAT" and nid:
                        info = json.loads(rest) if rest.startswith("{") else None
                        node.heartbeat(nid, info)
                        link.send(b"+OK")
                    elif verb == "SHUTDOWN" and nid:
                        # messages.ShutdownNoticeRequest; nodes/manager.go ShutdownNotice: DISCONNECTED
                        # at once with LastError "graceful shutdown", then the reevaluator (above)
                        notice = json.loads(rest) if rest.startswith("{") else {}
                        log("INF", "Node shutdown notice received", node=nid, reason=notice.get("Reason", ""),
                            lastOrchestratorSeq=notice.get("LastOrchestratorSeqNum", 0), lastComputeSeq=received)
                        link.send(b"+OK")
                        reason = "graceful shutdown"
                        break
                    elif verb in ("UPDATE", "RESULT") and nid:
                        received += 1
                        node.execution_update(nid, json.loads(rest))
            except (OSError, ValueError) as exc:
                reason = str(exc)
            finally:
                if nid:
                    node.disconnect(nid, reason)

    return Transport


class TCPServer(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True


NATS_DIAL_TIMEOUT = 2.0  # nats.go DefaultTimeout; Bacalhau sets no nats.Timeout (pkg/nats/transport/nats.go)


def go_errno_text(exc: OSError) -> str:
    """Go's text for a syscall errno (syscall/zerrors_linux_*.go): glibc's, lower-case first."""
    text = exc.strerror or str(exc)
    return text[:1].lower() + text[1:]


def go_nameserver() -> str:
    """The first nameserver of /etc/resolv.conf as Go's resolver names it in a net.DNSError
    (`lookup <name> on <ns>:53: ...`); Go's default is 127.0.0.1:53."""
    try:
        with open("/etc/resolv.conf", encoding="utf-8") as fh:
            for line in fh:
                parts = line.split()
                if len(parts) >= 2 and parts[0] == "nameserver":
                    ns = parts[1]
                    return f"[{ns}]:53" if ":" in ns else f"{ns}:53"
    except OSError:
        pass
    return "127.0.0.1:53"


class ComputeLink:
    """The compute node's end of its link to one orchestrator: reads RUN/CANCEL in a thread,
    writes heartbeats and execution updates; messages that could not be sent wait for the
    next connection (NCL replays them by sequence number)."""

    def __init__(self, node: Node, url: str, token: str, interval: float, ca_cert: str = "",
                 require_tls: bool = False) -> None:
        self.node, self.url, self.token, self.interval = node, url, token, interval
        # Compute.TLS (pkg/nats/transport/nats.go CreateClient): CACert becomes nats.RootCAs,
        # which makes the client secure-only; RequireTLS becomes nats.TLSHandshakeFirst.
        self.ca_cert, self.handshake_first = ca_cert, require_tls
        self.secure = bool(ca_cert) or require_tls
        self.wlock = threading.Lock()
        self.wfile = None
        self.outbox: list[tuple[str, dict]] = []
        self.failures = 0
        self.received = 0

    def send(self, verb: str, msg: dict) -> None:
        line = verb.encode() + b" " + json.dumps(msg).encode() + b"\r\n"
        with self.wlock:
            if self.wfile is not None:
                try:
                    self.wfile.write(line)
                    self.wfile.flush()
                    return
                except OSError:
                    pass
            self.outbox.append((verb, msg))

    def _write(self, data: bytes) -> None:
        with self.wlock:
            self.wfile.write(data)
            self.wfile.flush()

    def _reader(self, f, dead: threading.Event) -> None:
        try:
            while not self.node.stop.is_set():
                raw = f.readline()
                if not raw:
                    break
                line = raw.decode(errors="replace").strip()
                verb, _, rest = line.partition(" ")
                if verb in ("RUN", "CANCEL"):
                    self.received += 1  # NCL's orchestrator sequence number
                if verb == "RUN":
                    ex = json.loads(rest)
                    threading.Thread(target=self.node.executor.run, args=(ex, self.send), daemon=True).start()
                elif verb == "CANCEL":
                    self.node.executor.cancel(json.loads(rest).get("ExecutionID", ""))
        except (OSError, ValueError):
            pass
        finally:
            dead.set()

    def serve(self) -> None:
        """Keep the link up, reconnecting with backoff, logging failures as Bacalhau does."""
        parsed = urllib.parse.urlparse(self.url if "://" in self.url else "nats://" + self.url)
        host, port = parsed.hostname or "127.0.0.1", parsed.port or 4222
        first = True
        while not self.node.stop.is_set():
            log("INF", "Attempting to establish connection", node_id=self.node.node_id)
            err = self._connect_once(host, port)
            if err is None:
                return
            if self.node.stop.is_set():
                return
            self.failures += 1
            backoff = min(2.0 ** (self.failures - 1), 30.0)
            if first:
                # pkg/node/compute.go: the legacy connection manager is tried first, once
                log("WRN", "failed to start legacy connection manager. falling back to ncl protocol",
                    error=f"failed to create NATS client: {err}")
                first = False
            # pkg/transport/nclprotocol/compute/manager.go maintainConnection
            log("ERR", "Connection attempt failed",
                error=f"failed to setup transport: failed to connect to NATS: {err}",
                backoffDuration=go_duration(backoff), consecutiveFailures=self.failures)
            self.node.stop.wait(backoff)

    def _connect_once(self, host: str, port: int) -> str | None:
        """None when the node stops; else the error text Bacalhau's NATS client gives
        (pkg/nats/errors.go interceptConnectionError): a dial failure is nats.ErrNoServers."""
        no_servers = f"no orchestrator available for connection at {self.url}"
        failed = f"failed to connect to {self.url}: "
        ctx = None
        if self.secure:
            # nats.go RootCAs: the file is read when the client is made
            try:
                ctx = tls_client_context(self.ca_cert)
            except FileNotFoundError:
                return failed + ("nats: error loading or parsing rootCA file: open "
                                 f"{self.ca_cert}: no such file or directory")
            except (ssl.SSLError, OSError):
                return failed + f'nats: failed to parse root certificate from "{self.ca_cert}"'
        # nats.go v1.52 createConn/connect (nats.go:2305-2365, 2779-2824): the dial error is
        # returned as it is, except that "connection refused" is dropped and then becomes
        # nats.ErrNoServers, which interceptConnectionError turns into "no orchestrator available";
        # every other dial error (a security group that drops: i/o timeout after the 2 s
        # nats.DefaultTimeout; no route; an unknown name) is wrapped "failed to connect to <url>: ".
        try:
            addr = socket.gethostbyname(host)
        except OSError:
            # the name is dialled as given and Go's resolver says why not (net.DNSError)
            return failed + f"dial tcp: lookup {host} on {go_nameserver()}: no such host"
        try:
            s = socket.create_connection((addr, port), timeout=NATS_DIAL_TIMEOUT)
        except ConnectionRefusedError:
            return no_servers
        except TimeoutError:
            return failed + f"dial tcp {addr}:{port}: i/o timeout"
        except OSError as exc:
            return failed + f"dial tcp {addr}:{port}: connect: {go_errno_text(exc)}"
        with s:
            try:
                if self.handshake_first:
                    # nats.go processConnectInit: TLS before the server's INFO
                    s = tls_client_wrap(s, ctx, host)
                f = s.makefile("rwb")
                info_line = f.readline().decode(errors="replace").strip()
                if not info_line.startswith("INFO "):
                    return no_servers
                try:
                    info = json.loads(info_line[5:] or "{}")
                except ValueError:
                    info = {}
                # nats.go checkForSecure: a secure-only client refuses a server without TLS;
                # a server that requires TLS switches any client to TLS (verified against the
                # system's roots when no CACert was given).
                if not self.handshake_first:
                    if self.secure and not info.get("tls_required") and not info.get("tls_available"):
                        return failed + "nats: secure connection not available"
                    if info.get("tls_required") or self.secure:
                        s = tls_client_wrap(s, ctx or tls_client_context(), host)
                        f = s.makefile("rwb")
            except ssl.SSLError as exc:
                # nats.go makeTLSConn: fmt.Errorf("%w: %w", ErrTLS, err)
                return failed + f"nats: tls error: {exc.args[0] if exc.args else exc}"
            except OSError:
                return no_servers
            try:
                f.write(b"CONNECT " + json.dumps({"auth_token": self.token, "verbose": False}).encode() + b"\r\n")
                f.flush()
                reply = f.readline().decode(errors="replace").strip()
                if reply.startswith("-ERR"):
                    return f"failed to connect to {self.url}: nats: {reply[4:].strip().strip(chr(39))}"
                if not reply:
                    return no_servers
                f.write(b"REGISTER " + json.dumps(self.node.info()).encode() + b"\r\n")
                f.flush()
                reply = f.readline().decode(errors="replace").strip()
                if reply.startswith("-ERR"):
                    return f"handshake failed: {reply[4:].strip().strip(chr(39))}"
                if not reply:
                    return no_servers
            except OSError:
                return no_servers
            log("INF", f"connected to orchestrator at {self.url} as {self.node.node_id}")
            self.failures = 0
            s.settimeout(self.interval + 10)
            dead = threading.Event()
            with self.wlock:
                self.wfile = f
                pending, self.outbox = self.outbox, []
            for verb, msg in pending:
                self.send(verb, msg)
            threading.Thread(target=self._reader, args=(f, dead), daemon=True).start()
            try:
                while not self.node.stop.is_set() and not dead.is_set():
                    self._write(b"HEARTBEAT " + json.dumps(self.node.info()).encode() + b"\r\n")
                    self.node.stop.wait(self.interval)
                if self.node.stop.is_set():
                    # nclprotocol/compute/controlplane.go Stop -> sendShutdownNotification (no Reason)
                    self._write(b"SHUTDOWN " + json.dumps({"NodeID": self.node.node_id,
                                                           "LastOrchestratorSeqNum": self.received}).encode() + b"\r\n")
                    return None
            except OSError:
                pass
            finally:
                with self.wlock:
                    self.wfile = None
            log("WRN", "Connection unhealthy, initiating reconnect", node_id=self.node.node_id)
            return no_servers if not self.node.stop.is_set() else None


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
    users = get(cfg, "API.Auth.Users") or []
    bad_users = validate_users(users if isinstance(users, list) else [])
    if bad_users:
        # pkg/node/node.go NewNode
        log("ERR", f"error initializing users: {bad_users}")
        return 1
    api_tls = None
    api_cert, api_key = str(get(cfg, "API.TLS.CertFile") or ""), str(get(cfg, "API.TLS.KeyFile") or "")
    if api_cert and api_key:
        try:
            api_tls = tls_server_context(api_cert, api_key)
        except (OSError, ssl.SSLError) as exc:
            log("ERR", f"failed to load the API's TLS certificate {api_cert}: {exc}")
            return 1
    nats_tls = None
    server_cert = str(get(cfg, "Orchestrator.TLS.ServerCert") or "")
    if orch and server_cert:
        try:
            nats_tls = tls_server_context(server_cert, str(get(cfg, "Orchestrator.TLS.ServerKey") or ""))
        except (OSError, ssl.SSLError) as exc:
            # pkg/nats/transport/nats.go NewNATSTransport
            log("ERR", f"failed to configure NATS server TLS: {exc}")
            return 1
    node = Node(cfg, orch, comp)
    servers = []
    api_host = str(get(cfg, "API.Host", "0.0.0.0"))
    api_port = int(get(cfg, "API.Port", 1234))
    try:
        api = APIServer((api_host, api_port), make_handler(node, Authorizer(users)))
    except OSError as exc:
        log("ERR", f"failed to start API server on {api_host}:{api_port}: {exc}")
        return 1
    api.tls_context = api_tls
    servers.append(api)
    if orch:
        token = get(cfg, "Orchestrator.Auth.Token") or None
        nhost = str(get(cfg, "Orchestrator.Host", "0.0.0.0"))
        nport = int(get(cfg, "Orchestrator.Port", 4222))
        tls_timeout = float(get(cfg, "Orchestrator.TLS.ServerTimeout", 0) or 10)  # NATSServerDefaultTLSTimeout
        try:
            servers.append(TCPServer((nhost, nport), make_transport_handler(node, token, nats_tls, tls_timeout)))
        except OSError as exc:
            log("ERR", f"failed to start NATS server on {nhost}:{nport}: {exc}")
            return 1
    for srv in servers:
        threading.Thread(target=srv.serve_forever, daemon=True).start()
    log("INF", f"bacalhau stand-in {GIT_VERSION} node {node.node_id} "
        f"(orchestrator={orch}, compute={comp}) API on {api_host}:{api_port}")
    links = []
    if comp:
        orchestrators = get(cfg, "Compute.Orchestrators", []) or []
        if isinstance(orchestrators, str):
            orchestrators = [orchestrators]
        if not orchestrators and orch:
            orchestrators = [f"nats://127.0.0.1:{get(cfg, 'Orchestrator.Port', 4222)}"]
        ctoken = str(get(cfg, "Compute.Auth.Token", "") or "")
        interval = parse_duration(get(cfg, "Compute.Heartbeat.Interval"), 15.0)
        ca_cert = str(get(cfg, "Compute.TLS.CACert") or "")
        require_tls = bool(get(cfg, "Compute.TLS.RequireTLS", False))
        for url in orchestrators:
            link = ComputeLink(node, str(url), ctoken, interval, ca_cert, require_tls)
            t = threading.Thread(target=link.serve, daemon=True)
            t.start()
            links.append(t)

    def _stop(signum, _frame):
        # main.go signal.NotifyContext(SIGINT, SIGTERM); cmd/cli/serve/serve.go after <-ctx.Done()
        log("INF", "bacalhau node shutting down...")
        node.stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    while not node.stop.wait(2.0):
        if orch:
            node.check_heartbeats()
    for t in links:
        t.join(timeout=2)
    for srv in servers:
        srv.shutdown()
    return 0


# --------------------------------------------------------------------------- client side
def client_setting(args, key: str, default: str = "") -> str:
    """A client config key as Bacalhau reads it: -c KEY=VALUE, else the BACALHAU_<KEY> variable
    (viper AutomaticEnv, "." as "_", upper case: pkg/config/config.go)."""
    for o in args.c or []:
        k, _, v = o.partition("=")
        if k.lower() == key.lower():
            return v
    return os.environ.get("BACALHAU_" + key.replace(".", "_").upper(), default)


def api_endpoint(args) -> tuple[str, bool]:
    """cmd/util/api.go ConstructAPIEndpoint: https when API.TLS.UseTLS, or the scheme of a host
    given as a URL; also whether the endpoint was set explicitly (apiEndpointExplicitlySet:
    only then are API.TLS.* read)."""
    host = args.api_host or os.environ.get("BACALHAU_API_HOST") or client_setting(args, "API.Host")
    port = args.api_port or os.environ.get("BACALHAU_API_PORT") or client_setting(args, "API.Port")
    explicit = (host or "0.0.0.0") != "0.0.0.0" or str(port or 1234) != "1234"
    host = host or "localhost"
    if host in ("0.0.0.0", "::"):
        host = "localhost"
    if re.match(r"^https?://", host):
        return host.rstrip("/"), explicit
    scheme = "https" if explicit and flag_bool(client_setting(args, "API.TLS.UseTLS", "false")) else "http"
    return f"{scheme}://{host}:{port or 1234}", explicit


def api_base(args) -> str:
    return api_endpoint(args)[0]


def api_call(args, method: str, path: str, body: dict | None = None):
    base, explicit = api_endpoint(args)
    url = base + path
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json"}
    # cmd/util/api.go GetAuthenticatedAPIClient: BACALHAU_API_KEY as a Bearer credential, or
    # BACALHAU_API_USERNAME/PASSWORD as Basic, never both (resolveAuthCredentials)
    key = os.environ.get("BACALHAU_API_KEY", "").strip()
    user, password = os.environ.get("BACALHAU_API_USERNAME", ""), os.environ.get("BACALHAU_API_PASSWORD", "")
    if key and (user or password):
        raise SystemExit("Error: authentication error: cannot use both BACALHAU_API_KEY and "
                         "BACALHAU_API_USERNAME/BACALHAU_API_PASSWORD")
    if key:
        headers["Authorization"] = f"Bearer {key}"
    elif user and password:
        headers["Authorization"] = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
    ctx = None
    if base.startswith("https://"):
        ca_file = client_setting(args, "API.TLS.CAFile") if explicit else ""
        insecure = explicit and flag_bool(client_setting(args, "API.TLS.Insecure", "false"))
        if ca_file and not os.path.exists(ca_file):
            raise SystemExit(f'Error: CA certificate file "{ca_file}" does not exist')
        ctx = tls_client_context(ca_file, insecure)
        if not insecure:
            ctx.check_hostname = True
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=30, context=ctx) as resp:
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
                      f"{st['ConnectionState']['Status']:<13}")
        return 0
    res = api_call(args, "PUT", f"/api/v1/orchestrator/nodes/{args.node_id}",
                   {"Action": args.node_cmd, "Message": args.message or ""})
    print(json.dumps(res) if args.output == "json" else f"Ok: {args.node_cmd} {args.node_id}")
    return 0


# jobs --------------------------------------------------------------------------------
PROGRESS_TIMEOUT = 300  # cmd/util/printer/progress_printer.go progressTimeout (--wait-timeout-secs is unused)


def print_warnings(warnings: list[str]) -> None:
    if len(warnings) == 1:
        sys.stderr.write(f"Warning: {warnings[0]}\n")
    elif warnings:
        sys.stderr.write("Warning: \n" + "".join(f"  * {w}\n" for w in warnings))


def print_job_progress(args, job_id: str) -> None:
    """cmd/util/printer/progress_printer.go PrintJobProgress."""
    if not args.wait:
        print(job_id)
        return
    if args.id_only:
        print(job_id, flush=True)
    quiet = args.id_only
    if not quiet:
        print(f"Job successfully submitted. Job ID: {job_id}")
        print("Checking job status... (Enter Ctrl+C to exit at any time, your job will continue running):\n",
              flush=True)
    seen, header = 0, False
    deadline = time.time() + PROGRESS_TIMEOUT
    state = ""
    while True:
        job = api_call(args, "GET", f"/api/v1/orchestrator/jobs/{job_id}?include=history")
        state = job["Job"]["State"]["StateType"]
        items = (job.get("History") or {}).get("Items") or []
        for h in items[seen:]:
            if quiet:
                continue
            if not header:
                print(f" {'TIME':<14}{'EXEC. ID':<12}{'TOPIC':<17}EVENT")
                header = True
            ev = h["Event"]
            t = ev["Timestamp"][11:23]
            msg = ("Error: " if (ev.get("Details") or {}).get("IsError") == "true" else "") + ev["Message"]
            print(f" {t:<14}{short_id(h.get('ExecutionID', '')):<12}{ev['Topic']:<17}{msg}", flush=True)
        seen = len(items)
        if state in JOB_TERMINAL:
            break
        if time.time() > deadline:
            if not quiet:
                sys.stderr.write(f"\nWarning: Progress tracking timed out after {PROGRESS_TIMEOUT // 60}m0s. "
                                 "The job is still running.\n")
            break
        time.sleep(0.5)
    if state == JOB_FAILED:
        print()
        sys.stderr.write("Error: job failed\n")  # printed, and the command still exits 0
    if not quiet:
        print("\nTo get more details about the run, execute:")
        print(f"\tbacalhau job describe {job_id}")
        print("\nTo get more details about the run executions, execute:")
        print(f"\tbacalhau job executions {job_id}")


def submit_and_follow(args, job: dict, force: bool = False) -> int:
    resp = api_call(args, "PUT", JOBS, {"Job": job, "Force": force})
    if not args.id_only and resp.get("Warnings") and not getattr(args, "hide_warnings", False):
        print_warnings(resp["Warnings"])
        print()
    print_job_progress(args, resp["JobID"])
    return 0


def cmd_docker_run(args) -> int:
    """cmd/cli/docker/docker_run.go build() + cmd/cli/helpers BuildJobFromFlags."""
    if not args.image:
        raise SystemExit("Error: requires at least 1 arg(s), only received 0")
    env = {}
    for e in args.env or []:
        k, _, v = e.partition("=")
        env[k] = v
    entrypoint = [p for e in args.entrypoint or [] for p in e.split(",")]
    try:
        constraints = parse_selector(args.constraints or "")
    except ValueError as exc:
        raise SystemExit(f"Error: failed to parse job constraints: {exc}")
    labels = {}
    for label in args.labels or []:
        for item in label.split(","):
            k, _, v = item.partition("=")
            labels[k] = v
    params = {"Image": args.image, "Entrypoint": entrypoint or None, "Parameters": args.command or None,
              "EnvironmentVariables": None, "WorkingDirectory": args.workdir or ""}
    task = {"Name": args.task_name, "Engine": {"Type": "docker", "Params": params}, "Publisher": {"Type": ""},
            "Resources": {k: v for k, v in (("CPU", args.cpu), ("Memory", args.memory)) if v},
            "Timeouts": {k: v for k, v in (("TotalTimeout", args.timeout), ("QueueTimeout", args.queue_timeout)) if v},
            "Env": env}
    if args.network and args.network.lower() != "default":
        task["Network"] = {"Type": args.network.capitalize()}
    job = {"Name": args.name or "", "Namespace": args.namespace, "Type": "ops" if args.target == "all" else "batch",
           "Priority": args.priority, "Count": args.count, "Constraints": constraints, "Labels": labels,
           "Tasks": [task]}
    errs = validate_submission(job)
    if errs:
        raise SystemExit("Error: the job provided is invalid: " + "\n".join(errs))
    if args.dry_run:
        print(json.dumps(job, indent=2))
        return 0
    return submit_and_follow(args, job)


def read_job_file(path: str) -> dict:
    text = sys.stdin.read() if path in ("", "-") else open(path, encoding="utf-8").read()
    try:
        data = json.loads(text)
    except ValueError:
        try:
            import yaml  # type: ignore[import-untyped]
        except ImportError:
            raise SystemExit("Error: the stand-in needs python3-yaml for YAML job specs")
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise SystemExit(f"Error: the job provided is invalid: {exc}")
    if not isinstance(data, dict):
        raise SystemExit("Error: the job provided is invalid: not a mapping")
    return data


def print_items(args, out_json: bool, items: list[dict], header: str, row) -> int:
    """`job executions` and `job list`: a bare JSON array with --output json, else a table."""
    if out_json:
        print(json.dumps(items, indent=2 if args.pretty else None))
    else:
        print(header)
        for item in items:
            print(row(item))
    return 0


def cmd_job(args) -> int:
    out_json = getattr(args, "output", "") == "json"
    if args.job_cmd == "run":
        job = read_job_file(args.file)
        if job.get("Type") in ("batch", "service") and job.get("Count") is None:
            job["Count"] = 1
        errs = validate_submission(job)
        if errs:
            raise SystemExit("Error: the job provided is invalid: " + "\n".join(errs))
        return submit_and_follow(args, job, force=args.force)
    if args.job_cmd == "describe":
        res = api_call(args, "GET", f"{JOBS}/{urllib.parse.quote(args.id)}?include=executions,history")
        if out_json:
            print(json.dumps(res, indent=2 if args.pretty else None))
            return 0
        job = res["Job"]
        print(f"ID            = {job['ID']}\nName          = {job['Name']}\nNamespace     = {job['Namespace']}\n"
              f"Type          = {job['Type']}\nState         = {job['State']['StateType']}\n"
              f"Message       = {job['State'].get('Message', '')}\nCount         = {job['Count']}")
        for ex in (res.get("Executions") or {}).get("Items") or []:
            ro = ex.get("RunOutput") or {}
            print(f"\nExecution {short_id(ex['ID'])} on {short_id(ex['NodeID'])}: state {ex['ComputeState']['StateType']}"
                  f" {ex['ComputeState'].get('Message', '')}\n{ro.get('Stdout', '')}{ro.get('stderr', '')}")
        return 0
    if args.job_cmd == "executions":
        res = api_call(args, "GET", f"{JOBS}/{urllib.parse.quote(args.id)}/executions")
        return print_items(
            args, out_json, res["Items"],
            f" {'CREATED':<10}{'MODIFIED':<10}{'ID':<12}{'NODE ID':<12}{'REV.':<6}{'COMPUTE STATE':<15}DESIRED STATE",
            lambda ex: (f" {'':<10}{'':<10}{short_id(ex['ID']):<12}{short_id(ex['NodeID']):<12}{ex['Revision']:<6}"
                        f"{ex['ComputeState']['StateType']:<15}{ex['DesiredState']['StateType']}"))
    if args.job_cmd == "list":
        q = {"limit": str(args.limit)}
        if args.labels:
            q["labels"] = args.labels
        res = api_call(args, "GET", f"{JOBS}?{urllib.parse.urlencode(q)}")
        return print_items(
            args, out_json, res["Items"], f" {'CREATED':<10}{'ID':<12}{'JOB':<20}{'TYPE':<7}{'STATE'}",
            lambda j: (f" {'':<10}{short_id(j['ID']):<12}{j['Tasks'][0]['Engine']['Type']:<20}{j['Type']:<7}"
                       f"{j['State']['StateType']}"))
    if args.job_cmd == "stop":
        if not args.quiet:
            print("Checking job status\n")
        job = api_call(args, "GET", f"{JOBS}/{urllib.parse.quote(args.id)}")["Job"]
        if job["State"]["StateType"] in JOB_TERMINAL:
            raise SystemExit(f"Error: Job is already in a terminal state.\nThe current state is: "
                             f"{job['State']['StateType']}\n")
        res = api_call(args, "DELETE", f"{JOBS}/{urllib.parse.quote(args.id)}", {"reason": "Stopped at user request"})
        if not args.quiet:
            print(f"\nJob stop successfully submitted with evaluation ID: {res['EvaluationID']}")
        return 0
    raise SystemExit(f"Error: unknown command {args.job_cmd!r} for \"bacalhau job\"")


def flag_bool(value) -> bool:
    return str(value).lower() in ("1", "t", "true", "yes")


def add_runtime_flags(p) -> None:
    """cmd/util/flags/cliflags/runtime.go NewRunTimeSettingsFlags."""
    # pflag bool: `--wait` or `--wait=false`, never `--wait false` (main() rewrites `--wait=V`)
    p.add_argument("--wait", action="store_true", default=True)
    p.add_argument("--wait=false", dest="wait", action="store_false", help=argparse.SUPPRESS)
    p.add_argument("--wait-timeout-secs", type=int, default=600)
    p.add_argument("--id-only", action="store_true")
    p.add_argument("--node-details", action="store_true")
    p.add_argument("-f", "--follow", action="store_true")
    p.add_argument("--dry-run", action="store_true")


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
    pd = sub.add_parser("docker", parents=[common])
    dsub = pd.add_subparsers(dest="docker_cmd", required=True)
    pr = dsub.add_parser("run", parents=[common])
    add_runtime_flags(pr)
    pr.add_argument("-e", "--env", action="append")
    pr.add_argument("-w", "--workdir")
    pr.add_argument("--entrypoint", action="append")
    pr.add_argument("--constraints")
    pr.add_argument("-s", "--selector", dest="constraints")
    pr.add_argument("--target", choices=["any", "all"], default="any")
    pr.add_argument("--count", type=int, default=1)
    pr.add_argument("--name")
    pr.add_argument("--namespace", default="default")
    pr.add_argument("--priority", type=int, default=0)
    pr.add_argument("-l", "--labels", action="append")
    pr.add_argument("--task-name", default="main")
    pr.add_argument("--cpu")
    pr.add_argument("--memory")
    pr.add_argument("--timeout", type=int, default=0)
    pr.add_argument("--queue-timeout", type=int, default=0)
    pr.add_argument("--network")
    pr.add_argument("image", nargs="?")
    pr.add_argument("command", nargs="*")
    pj = sub.add_parser("job", parents=[common])
    jsub = pj.add_subparsers(dest="job_cmd", required=True)
    pjr = jsub.add_parser("run", parents=[common])
    add_runtime_flags(pjr)
    pjr.add_argument("--force", action="store_true")
    pjr.add_argument("--hide-warnings", action="store_true")
    pjr.add_argument("--no-template", action="store_true")
    pjr.add_argument("file", nargs="?", default="-")
    for name in ("describe", "executions", "list"):
        pq = jsub.add_parser(name, parents=[common])
        if name != "list":
            pq.add_argument("id")
        pq.add_argument("--output", default="")
        pq.add_argument("--pretty", action="store_true")
        pq.add_argument("--namespace", default="")
        if name == "list":
            pq.add_argument("--limit", type=int, default=10)
            pq.add_argument("--labels", default="bacalhau_canary != true")
    pst = jsub.add_parser("stop", parents=[common])
    pst.add_argument("id")
    pst.add_argument("--quiet", action="store_true")
    pst.add_argument("--namespace", default="")
    argv = list(sys.argv[1:] if argv is None else argv)
    for i, a in enumerate(argv):
        if a == "--":
            break
        if a.startswith("--wait=") and not a.startswith("--wait=false"):
            argv[i] = "--wait" if flag_bool(a.split("=", 1)[1]) else "--wait=false"
    args = parser.parse_args(argv)
    if args.cmd == "version":
        return cmd_version(args)
    if args.cmd == "serve":
        return cmd_serve(args)
    if args.cmd == "docker":
        return cmd_docker_run(args)
    if args.cmd == "job":
        return cmd_job(args)
    return cmd_node(args)


if __name__ == "__main__":
    sys.exit(main())
