# -*- coding: utf-8 -*-
# Copyright: bacalhau.aws_spot contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The work of the bacalhau_nodes module: read the orchestrator's nodes, classify them by the
cluster's instances, approve the cluster's own pending ones, forget the gone ones, wait for some,
and say why the missing ones are missing.

A node is the cluster's when its `instance-id` label (the roles set it: bacalhau_compute's
`_bacalhau_compute_auto_labels`, the orchestrator play's `bacalhau_orchestrator_labels`) is one of
the cluster's instance ids. Node state as Bacalhau v1.9.3 has it (pkg/models/node_state.go):
`ConnectionState.Status` (CONNECTED, DISCONNECTED; the top-level `Connection` is deprecated) and
`Membership` (PENDING, APPROVED, REJECTED; pkg/models/node_membership.go). Only an APPROVED node
gets work (pkg/orchestrator/selection/selector/node_selector.go).
"""

from __future__ import annotations

import time
from typing import Any, Callable

from ansible_collections.bacalhau.aws_spot.plugins.module_utils._bacalhau.api import (
    BacalhauAPI,
    BacalhauAPIError,
)
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._bacalhau.causes import diagnose

LABEL = "instance-id"
CLUSTER_LABEL = "cluster"  # bacalhau_compute_cluster (configure.yml: the cluster's name)


def summarise(state: dict) -> dict:
    """One NodeState as a snake_case dict."""
    info = state.get("Info") or {}
    labels = info.get("Labels") or {}
    conn = state.get("ConnectionState") or {}
    return {
        "node_id": info.get("NodeID") or "",
        "node_type": info.get("NodeType") or "",
        "instance_id": labels.get(LABEL) or None,
        "connection": conn.get("Status") or state.get("Connection") or "",
        "membership": state.get("Membership") or "",
        "labels": labels,
        "last_heartbeat": conn.get("LastHeartbeat") or None,
    }


def name(node: dict) -> str:
    """How the lists name a node: its instance id, else its Bacalhau node id."""
    return node["instance_id"] or node["node_id"]


def is_ready(node: dict) -> bool:
    return node["connection"] == "CONNECTED" and node["membership"] == "APPROVED"


def find(nodes: list[dict], wanted: str) -> dict | None:
    """The node an id means: an instance id (its label) or a Bacalhau node id. A node that
    registered again under the same instance keeps one entry per node id: the connected one wins."""
    hits = [n for n in nodes if wanted in (n["instance_id"], n["node_id"])]
    hits.sort(key=lambda n: (n["connection"] == "CONNECTED", n["membership"] == "APPROVED"), reverse=True)
    return hits[0] if hits else None


def own_compute(nodes: list[dict], instance_ids: list[str] | None) -> list[dict]:
    """The compute nodes; with instance_ids, the cluster's own only (by their instance-id label)."""
    compute = [n for n in nodes if n["node_type"] == "Compute"]
    return compute if instance_ids is None else [n for n in compute if n["instance_id"] in instance_ids]


def classify(nodes: list[dict], instance_ids: list[str] | None) -> dict[str, list[str]]:
    """The compute nodes by state; with instance_ids, `connected`, `pending` and `rejected` hold the
    cluster's own only."""
    compute = [n for n in nodes if n["node_type"] == "Compute"]
    own = own_compute(nodes, instance_ids)
    out = {
        "connected": [name(n) for n in own if is_ready(n)],
        "pending": [name(n) for n in own if n["membership"] == "PENDING"],
        "rejected": [name(n) for n in own if n["membership"] == "REJECTED"],
        "disconnected": [name(n) for n in compute if n["connection"] == "DISCONNECTED"],
    }
    return out


def joined(nodes: list[dict], instance_ids: list[str] | None, disconnected_too: bool = False) -> list[str]:
    """The cluster's compute nodes a heal counts as joined (configures no more): CONNECTED and
    APPROVED, and with ``disconnected_too`` the DISCONNECTED ones as well. A heal the autoheal
    rulebook runs passes that: a node EC2 warned after the heal read the journals has had its
    Bacalhau stopped by its watcher, and configuring it again would fail that heal, late for the
    warning; its own event comes next. By hand or from cron, a heal restarts them."""
    return list(dict.fromkeys(name(n) for n in own_compute(nodes, instance_ids)
                              if is_ready(n) or (disconnected_too and n["connection"] == "DISCONNECTED")))


def gone_nodes(nodes: list[dict], instance_ids: list[str], cluster: str | None = None) -> list[dict]:
    """DISCONNECTED compute nodes labelled with an instance id that is not among the live ones.
    Nodes without the label are no instance of ours: they are never counted as gone. With
    ``cluster``, nor are nodes whose ``cluster`` label names another (on an orchestrator several
    clusters share, their instances are not among ours, and they may only be restarting)."""
    return [n for n in nodes if n["node_type"] == "Compute" and n["connection"] == "DISCONNECTED"
            and n["instance_id"] and n["instance_id"] not in instance_ids
            and not (cluster and (n["labels"].get(CLUSTER_LABEL) or cluster) != cluster)]


def api_refusal(exc: BacalhauAPIError, key_hint: str) -> str | None:
    """The cause when the API refused the request (pkg/publicapi/middleware/authz.go: 401 with
    Details.reason "Missing Authorization header" / "invalid API key"; 403 for a key without the
    capability); None for other errors."""
    answer = exc.answer or ("Request Unauthorized" if exc.status == 401 else "Request Forbidden")
    reason = exc.reason or exc.answer
    if exc.status == 401 and "Missing" in reason:
        return f"MISSING API KEY: the orchestrator API answered 401 {answer} ({reason}): {key_hint}."
    if exc.status == 401:
        return f"WRONG API KEY: the orchestrator API answered 401 {answer} ({reason}): {key_hint}."
    if exc.status == 403:
        return (f"API KEY LACKS A CAPABILITY: the orchestrator API answered 403 {answer} ({reason}): the key needs "
                "read:node, and write:node to approve or forget nodes (bacalhau_orchestrator_api_capabilities).")
    return None


def membership_cause(node: dict) -> str | None:
    """The cause for a node the orchestrator lists but that is not CONNECTED and APPROVED."""
    nid = node["node_id"]
    if node["membership"] == "REJECTED":
        return (f"REJECTED on the orchestrator (Bacalhau node {nid}): approve it there "
                f"(bacalhau node approve {nid}) if that was a mistake.")
    if node["connection"] == "CONNECTED" and node["membership"] == "PENDING":
        return (f"PENDING approval on the orchestrator (Bacalhau node {nid}): approve it "
                f"(bacalhau node approve {nid}), or let the collection approve the cluster's own nodes "
                "(bacalhau_nodes approve=true: configure.yml does with bacalhau_orchestrator_manual_approval: true), "
                "or set manual approval off (Orchestrator.NodeManager.ManualApproval).")
    return None


def causes_for(missing: list[str], nodes: list[dict], logs: dict[str, str], port: int) -> dict[str, dict]:
    """Why each missing node is missing: its membership when the orchestrator lists it connected,
    else its journal (the cause table), else what the orchestrator says of it."""
    out: dict[str, dict] = {}
    for wanted in missing:
        node = find(nodes, wanted)
        by_state = membership_cause(node) if node else None
        if node and by_state:
            out[wanted] = {"key": node["membership"].lower(), "title": node["membership"], "message": by_state, "meaning": by_state,
                           "check": "", "line": ""}
            continue
        if wanted in logs:
            out[wanted] = diagnose(logs[wanted], port)
            if out[wanted]["key"] != "no_error" or node is None:
                continue
        where = (f"{node['connection']} on the orchestrator (Bacalhau node {node['node_id']}, last heartbeat "
                 f"{node['last_heartbeat'] or 'never'})") if node else "not listed by the orchestrator"
        msg = where + (": " + out[wanted]["message"] if wanted in out else "")
        out[wanted] = {"key": "not_listed" if node is None else "disconnected", "title": "NOT CONNECTED",
                       "message": msg, "meaning": msg, "check": "`journalctl -u bacalhau` on the node", "line": ""}
    return out


class Nodes:
    """One run of the module over one orchestrator API."""

    def __init__(self, params: dict[str, Any], check_mode: bool,
                 read_journal: Callable[[], str] | None = None, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.p = params
        self.check_mode = check_mode
        self.read_journal = read_journal
        self.clock, self.sleep = clock, sleep
        self.api = BacalhauAPI(params["api_url"], params.get("api_key"), validate_certs=params["validate_certs"],
                               ca_path=params.get("ca_path"), timeout=10.0)
        self.approved: list[str] = []
        self.forgotten: list[str] = []
        self.nodes: list[dict] = []
        self.gone: list[str] = []
        self.busy: list[str] = []
        self.wanted: list[str] = []
        self.api_error = ""

    def refusal(self, exc: BacalhauAPIError) -> str:
        return api_refusal(exc, self.p["refusal_hint"]) or str(exc)

    def read(self, deadline: float) -> list[dict]:
        """The nodes, retrying while the API does not answer (it may be starting) until the deadline."""
        self.nodes = [summarise(s) for s in self.patiently(self.api.nodes, deadline)]
        return self.nodes

    def patiently(self, call: Callable[[], Any], deadline: float) -> Any:
        while True:
            try:
                return call()
            except BacalhauAPIError as exc:
                # a refusal stays a refusal; anything else (no answer, no such route on a node that
                # is not an orchestrator yet, a 5xx) may pass while the orchestrator starts
                if exc.status in (401, 403) or self.clock() >= deadline:
                    raise
                self.sleep(self.p["poll_interval"])

    def message(self, why: str) -> str:
        tag = f"{why} (bacalhau.aws_spot"
        return tag + (f", cluster {self.p['cluster_name']})" if self.p.get("cluster_name") else ")")

    def act(self, node: dict, action: str, why: str) -> bool:
        """approve or delete one node; False when the orchestrator says it is already so (409) or gone (404)."""
        if not self.check_mode:
            try:
                self.api.update_node(node["node_id"], action, self.message(why))
            except BacalhauAPIError as exc:
                if exc.status in (404, 409):
                    return False
                raise
        return True

    def forget(self) -> None:
        instance_ids = self.p.get("instance_ids")
        targets: dict[str, dict] = {}
        for wanted in self.p.get("forget") or []:
            for n in self.nodes:
                if wanted in (n["instance_id"], n["node_id"]) and n["node_type"] == "Compute":
                    targets[n["node_id"]] = n
        if self.p["forget_gone"]:
            for n in gone_nodes(self.nodes, instance_ids or [], self.p.get("cluster_name")):
                targets[n["node_id"]] = n
        for n in targets.values():
            if self.act(n, "delete", f"instance {name(n)} gone"):
                self.forgotten.append(name(n))

    def approve(self) -> bool:
        ids = self.p.get("instance_ids") or []
        done = False
        for n in self.nodes:
            if (n["node_type"] == "Compute" and n["membership"] == "PENDING" and n["instance_id"] in ids
                    and name(n) not in self.approved):
                if self.act(n, "approve", f"instance {n['instance_id']} of the cluster"):
                    self.approved.append(name(n))
                    done = True
        return done

    def missing(self) -> list[str]:
        out = []
        for wanted in self.wanted:
            node = find(self.nodes, wanted)
            if node is not None and self.check_mode and name(node) in self.approved:
                node = dict(node, membership="APPROVED")  # what it would be
            if node is None or not is_ready(node):
                out.append(wanted)
        return out

    def hopeless(self, missing: list[str]) -> bool:
        """Every missing node is REJECTED: waiting longer changes nothing."""
        found = [find(self.nodes, w) for w in missing]
        return bool(found) and all(n is not None and n["membership"] == "REJECTED" for n in found)

    def run(self) -> tuple[dict[str, Any], str | None]:
        p = self.p
        self.wanted = list(p.get("wait_for") or [])
        waiting = bool(self.wanted) or p["wait_for_self"]
        deadline = self.clock() + (p["timeout"] if waiting else 0)
        if (p["approve"] or p["forget_gone"]) and p.get("instance_ids") is None:
            return {"changed": False}, ("approve and forget_gone act on the cluster's own nodes only: give "
                                        "instance_ids, the cluster's live instance ids.")
        try:
            if p["wait_for_self"]:
                node_id = self.patiently(self.api.agent_node, deadline).get("NodeID")
                if node_id and node_id not in self.wanted:
                    self.wanted.append(node_id)
            self.read(deadline)
            if p.get("instance_ids") is not None:
                self.gone = [n["instance_id"] for n in gone_nodes(self.nodes, p["instance_ids"], p.get("cluster_name"))]
            if p.get("busy"):
                by_node = {n["node_id"]: n["instance_id"] or n["node_id"] for n in self.nodes}
                self.busy = sorted({by_node.get(i, i) for i in busy_node_ids(self.api.jobs(), self.api.executions)})
            if p.get("forget") or p["forget_gone"]:
                self.forget()
                if self.forgotten and not self.check_mode:
                    self.read(deadline)
            while True:
                if p["approve"] and self.approve() and not self.check_mode:
                    self.read(deadline)
                missing = self.missing()
                if not missing or self.check_mode or self.clock() >= deadline or self.hopeless(missing):
                    break
                self.sleep(p["poll_interval"])
                self.read(deadline)
        except BacalhauAPIError as exc:
            if exc.status in (401, 403) or not self.wanted:
                return self.result([]), self.refusal(exc) if exc.status else f"{exc}. Is Bacalhau running there?"
            # Waiting for nodes, the API never answered: they are missing, and their journals may say why
            self.api_error = str(exc)
            missing = self.missing() if self.nodes else list(self.wanted)
        return self.finish(missing)

    def result(self, missing: list[str]) -> dict[str, Any]:
        ids = self.p.get("instance_ids")
        view = self.nodes
        if self.check_mode:
            # what the lists would say once the approvals and deletions were made
            forgotten = set(self.forgotten)
            view = [dict(n, membership="APPROVED") if name(n) in self.approved else n
                    for n in view if name(n) not in forgotten]
        classes = classify(view, ids)
        classes["gone"] = self.gone
        classes["joined"] = joined(view, ids, bool(self.p.get("disconnected_as_joined")))
        if self.p.get("busy"):
            classes["busy"] = self.busy
        return {"changed": bool(self.approved or self.forgotten), "nodes": self.nodes, **classes,
                "approved": self.approved, "forgotten": self.forgotten, "missing": missing, "causes": {}}

    def finish(self, missing: list[str]) -> tuple[dict[str, Any], str | None]:
        result = self.result(missing)
        if not missing:
            return result, None
        logs = dict(self.p.get("logs") or {})
        if self.p.get("journal_unit") and self.read_journal is not None:
            text = self.read_journal()
            for wanted in missing:
                logs.setdefault(wanted, text)
        result["causes"] = causes_for(missing, self.nodes, logs, self.p["nats_port"])
        if self.check_mode or not self.p["fail_on_missing"]:
            return result, None
        lines = "; ".join(f"{w}{where(find(self.nodes, w))}: {result['causes'][w]['message']}" for w in missing)
        of = f" of cluster {self.p['cluster_name']}" if self.p.get("cluster_name") else ""
        after = f" after {self.p['timeout']} s" if self.p["timeout"] > 0 else ""
        api = f" (its API did not answer: {self.api_error})" if self.api_error else ""
        return result, (f"{len(missing)} node(s){of} not CONNECTED and APPROVED on the orchestrator "
                        f"({self.p['api_url']}){after}{api}: {lines}")


# pkg/models/execution.go (v1.9.3): ExecutionStateType has no text marshaller, so JSON carries the iota
# integers; an execution holds its node from its bid being accepted until it has published.
# AskForBidAccepted 3, BidAccepted 5, Running 6, Publishing 7; DesiredState Stopped 2.
HOLDS_NODE = (3, 5, 6, 7)
HOLDS_NODE_NAMES = ("AskForBidAccepted", "BidAccepted", "Running", "Publishing")
DESIRED_STOPPED = (2, "Stopped")
JOB_TERMINAL = ("Completed", "Failed", "Stopped")


def busy_node_ids(jobs: list[dict], executions_of: Callable[[str], list[dict]]) -> list[str]:
    """The node ids that run an execution now: of every job not in a terminal state, the executions whose
    compute state holds the node and that are not asked to stop."""
    out: set[str] = set()
    for job in jobs:
        if ((job.get("State") or {}).get("StateType")) in JOB_TERMINAL:
            continue
        for execution in executions_of(job.get("ID") or ""):
            state = (execution.get("ComputeState") or {}).get("StateType")
            desired = (execution.get("DesiredState") or {}).get("StateType")
            if (state in HOLDS_NODE or state in HOLDS_NODE_NAMES) and desired not in DESIRED_STOPPED:
                if execution.get("NodeID"):
                    out.add(execution["NodeID"])
    return sorted(out)


def where(node: dict | None) -> str:
    region = ((node or {}).get("labels") or {}).get("region")
    return f" ({region})" if region else ""
