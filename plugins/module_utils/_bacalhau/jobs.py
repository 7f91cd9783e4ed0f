# -*- coding: utf-8 -*-
# Copyright: bacalhau.aws_spot contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The work of the bacalhau_job module: check the job, submit it, wait, report per node."""

from __future__ import annotations

from typing import Any

from ansible_collections.bacalhau.aws_spot.plugins.module_utils._bacalhau.api import (
    JOB_TERMINAL,
    BacalhauAPI,
    BacalhauAPIError,
    job_state,
    summarise_execution,
)

# pkg/models/job.go: the job types Bacalhau knows.
JOB_TYPES = ("batch", "ops", "service", "daemon")


def check_job(job: dict) -> str | None:
    """The first problem with the job spec, in Bacalhau's field names, or None."""
    job_type = job.get("Type", "batch")
    if job_type not in JOB_TYPES:
        return f"job.Type must be one of {', '.join(JOB_TYPES)} (got {job_type!r})"
    tasks = job.get("Tasks")
    if not isinstance(tasks, list) or not tasks:
        return "job.Tasks must be a list with one task (Name, Engine: {Type, Params})"
    for i, task in enumerate(tasks):
        if not isinstance(task, dict) or not isinstance(task.get("Engine"), dict) or not task["Engine"].get("Type"):
            return f"job.Tasks[{i}].Engine.Type is missing (for example docker, with Params.Image)"
    return None


def node_name(execution: dict) -> str:
    """How a person finds the node again: its instance, region and zone where labelled, else its id."""
    labels = execution.get("node_labels") or {}
    where = ", ".join(f"{k} {labels[k]}" for k in ("instance-id", "region", "zone") if labels.get(k))
    return f"node {execution.get('node_id')}" + (f" ({where})" if where else "")


def expected_name(entry: dict) -> str:
    labels = dict(entry.get("labels") or {})
    labels.setdefault(entry["label"], entry["value"])
    return node_name({"node_id": entry.get("node_id") or "?", "node_labels": labels})


def execution_failure(execution: dict) -> str | None:
    """Why this execution did not succeed, in Bacalhau's or Docker's words; None if it did."""
    if execution["state"] == "Completed" and execution.get("exit_code") in (0, None):
        return None
    if execution["state"] == "Completed":
        detail = (execution.get("stderr") or execution.get("stdout") or "").strip().splitlines()
        return f"exited with {execution['exit_code']}" + (f": {detail[-1]}" if detail else "")
    reason = execution.get("error") or execution.get("message") or "no reason given"
    return f"{execution['state']}: {reason}"


def expected_results(expect: list[str], label: str, executions: list[dict], nodes: list[dict],
                     engine: str) -> list[dict]:
    """For each expected node (by the value of one of its labels): did it run the job, and if not, why."""
    by_value: dict[str, dict] = {}
    for node in nodes:
        value = (node.get("Info", {}).get("Labels") or {}).get(label)
        if value:
            by_value[value] = node
    out = []
    for value in expect:
        runs = [e for e in executions if (e.get("node_labels") or {}).get(label) == value]
        node = by_value.get(value)
        labels = (node or {}).get("Info", {}).get("Labels") or {}
        entry = {"label": label, "value": value, "node_id": (node or {}).get("Info", {}).get("NodeID"),
                 "labels": labels, "ok": False, "reason": ""}
        ok = [e for e in runs if execution_failure(e) is None]
        if ok:
            entry.update(ok=True, stdout=ok[0].get("stdout", ""))
        elif runs:
            entry["reason"] = execution_failure(runs[-1]) or ""
        elif node is None:
            entry["reason"] = "the orchestrator does not know this node"
        else:
            entry["reason"] = why_no_execution(node, engine)
        out.append(entry)
    return out


def why_no_execution(node: dict, engine: str) -> str:
    """Why the orchestrator sent a listed node no execution, from its NodeState."""
    status = (node.get("ConnectionState") or {}).get("Status") or node.get("Connection") or "?"
    if status != "CONNECTED":
        return f"it is {status} on the orchestrator"
    if node.get("Membership") != "APPROVED":
        return f"its membership is {node.get('Membership')}: approve it (bacalhau node approve <id>)"
    engines = ((node.get("Info") or {}).get("ComputeNodeInfo") or {}).get("ExecutionEngines") or []
    if engine and engine not in engines:
        return (f"Bacalhau on it offers no {engine} engine (it has {', '.join(engines) or 'none'}): "
                "check that Docker runs and that the bacalhau user may use it")
    return "the orchestrator sent it no execution"


def run(params: dict[str, Any], check_mode: bool) -> tuple[dict[str, Any], str | None]:
    """Returns (result, failure message or None)."""
    job = dict(params["job"])
    problem = check_job(job)
    if problem:
        return {"changed": False, "job_id": None}, f"Invalid job: {problem}."
    if params["timeout"] <= 0 or params["poll_interval"] <= 0:
        return {"changed": False, "job_id": None}, "timeout and poll_interval must be greater than 0."
    if check_mode:
        return {"changed": True, "job_id": None}, None

    api = BacalhauAPI(params["api_url"], params.get("api_key"), validate_certs=params["validate_certs"],
                      ca_path=params.get("ca_path"))
    try:
        submitted = api.submit(job)
    except BacalhauAPIError as exc:
        return {"changed": False, "job_id": None}, f"Bacalhau did not accept the job {job.get('Name') or ''!r}: {exc}"
    job_id = submitted.get("JobID")
    name = f"Job {job_id} ({job.get('Name') or job_id})"
    result: dict[str, Any] = {"changed": True, "job_id": job_id, "evaluation_id": submitted.get("EvaluationID"),
                              "job_warnings": submitted.get("Warnings") or []}
    try:
        if not params["wait"]:
            current = api.job(job_id)
        else:
            current = api.wait(job_id, params["timeout"], params["poll_interval"])
            if job_state(current) not in JOB_TERMINAL and params["stop_on_timeout"]:
                api.stop(job_id, f"not done within {params['timeout']} s (bacalhau.aws_spot.bacalhau_job)")
            nodes = api.nodes()
            labels = {n.get("Info", {}).get("NodeID", ""): n.get("Info", {}).get("Labels") or {} for n in nodes}
            # A job submitted under a Name it already had is a new version of that job: its
            # executions are the ones of the version now current (Execution.JobVersion, Job.Version).
            version = current.get("Version")
            executions = [summarise_execution(e, labels) for e in api.executions(job_id)
                          if not version or e.get("JobVersion") in (None, version)]
    except BacalhauAPIError as exc:
        return result, f"{name} was submitted, but reading its outcome failed: {exc}"

    state = job_state(current)
    message = (current.get("State") or {}).get("Message", "")
    result.update(job=current, state=state, state_message=message)
    if not params["wait"]:
        return result, None
    result["executions"] = executions
    expect = params.get("expect_nodes") or []
    if expect:
        engine = ((job["Tasks"][0].get("Engine") or {}).get("Type") or "")
        result["expected"] = expected_results(expect, params["expect_label"], executions, nodes, engine)
    if state not in JOB_TERMINAL:
        return result, (f"{name} did not end within {params['timeout']} s (state {state})"
                        + ("; it was stopped" if params["stop_on_timeout"] else "")
                        + f". Raise timeout, or look at `bacalhau job describe {job_id}` on the orchestrator.")
    if not params["fail_on_job_failure"]:
        return result, None
    missed = [r for r in result.get("expected", []) if not r["ok"]]
    if missed:
        lines = "; ".join(f"{expected_name(r)}: {r['reason']}" for r in missed)
        return result, f"{name} did not run on {len(missed)} of {len(expect)} node(s): {lines}"
    reasons = [(e, execution_failure(e)) for e in executions]
    failed = [(e, why) for e, why in reasons if why]
    if state != "Completed" or failed:
        lines = "; ".join(f"{node_name(e)}: {why}" for e, why in failed) or message or "no execution ran"
        return result, f"{name} ended {state}: {lines}"
    return result, None
