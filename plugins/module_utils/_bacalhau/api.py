# -*- coding: utf-8 -*-
# Copyright: bacalhau.aws_spot contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A small client for Bacalhau's orchestrator HTTP API (private to this collection).

It keeps to the routes and JSON shapes of Bacalhau v1.7-v1.9, as read in Bacalhau's source:
  - routes: pkg/publicapi/endpoint/orchestrator/endpoint.go (PUT /api/v1/orchestrator/jobs,
    GET /jobs/:id, GET /jobs/:id/executions, DELETE /jobs/:id, GET /nodes, GET|PUT /nodes/:id);
  - node bodies: pkg/publicapi/apimodels/node.go (ListNodesResponse {"Nodes"}, GetNodeResponse
    {"Node"}, PutNodeRequest {"Action": approve|reject|delete, "Message", "NodeID"},
    PutNodeResponse {"Success", "Error"}); the handler is updateNode in
    pkg/publicapi/endpoint/orchestrator/node.go;
  - bodies: pkg/publicapi/apimodels/job.go (PutJobRequest {"Job", "Force"}, PutJobResponse
    {"JobID", "EvaluationID", "Warnings"}, GetJobResponse {"Job"}, ListJobExecutionsResponse
    {"NextToken", "Items"});
  - states: pkg/models/job.go (JobStateType marshals as text: Pending, Queued, Running, Completed,
    Failed, Stopped) and pkg/models/execution.go (ExecutionStateType has no text marshaller, so an
    execution's ComputeState.StateType is the enum's number; the order is the stringer's in
    pkg/models/execution_state_string.go);
  - errors: {"Status", "Message", "Code", "Component", "RequestID", "Hint"?}
    (pkg/publicapi/apimodels/error.go); the authorizer's refusals add {"Details": {"reason"}}
    (pkg/publicapi/middleware/authz.go).
It runs where the module runs (the orchestrator host, usually), with Ansible's open_url.
"""

from __future__ import annotations

import json
import time
from typing import Any

from ansible.module_utils.six.moves.urllib.error import HTTPError, URLError
from ansible.module_utils.urls import open_url

# pkg/models/execution.go, in the order of its iota (pkg/models/execution_state_string.go).
EXECUTION_STATES = (
    "Undefined", "New", "AskForBid", "AskForBidAccepted", "AskForBidRejected", "BidAccepted",
    "Running", "Publishing", "BidRejected", "Completed", "Failed", "Cancelled",
)
# pkg/models/execution.go ExecutionDesiredStateType: Pending, Running, Stopped.
DESIRED_STATES = ("Pending", "Running", "Stopped")
JOB_TERMINAL = ("Completed", "Failed", "Stopped")


# The connection options every module over this API takes (doc fragment bacalhau_api).
API_ARGUMENT_SPEC: dict[str, dict[str, Any]] = {
    "api_url": {"type": "str", "default": "http://127.0.0.1:1234"},
    "api_key": {"type": "str", "no_log": True},
    "ca_path": {"type": "path"},
    "validate_certs": {"type": "bool", "default": True},
}


class BacalhauAPIError(Exception):
    """An answer from Bacalhau's API that is not a success, or no answer at all."""

    def __init__(self, message: str, status: int | None = None, code: str | None = None,
                 answer: str = "", reason: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        # Bacalhau's own words: the answer's Message and, for the authorizer's refusals, Details.reason
        self.answer = answer
        self.reason = reason


def state_name(value: Any, names: tuple[str, ...]) -> str:
    """A state as text, whether the API gave its number (ExecutionStateType) or its name."""
    if isinstance(value, int) and 0 <= value < len(names):
        return names[value]
    return str(value) if value not in (None, "") else names[0]


class BacalhauAPI:
    """Orchestrator API calls, JSON in and out."""

    def __init__(self, url: str, api_key: str | None = None, timeout: float = 10.0,
                 validate_certs: bool = True, ca_path: str | None = None) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.validate_certs = validate_certs
        self.ca_path = ca_path
        self.headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if api_key:
            # The CLI sends BACALHAU_API_KEY as a Bearer token (cmd/util/api.go).
            self.headers["Authorization"] = f"Bearer {api_key}"

    def call(self, method: str, path: str, body: Any = None) -> Any:
        data = json.dumps(body) if body is not None else None
        kwargs: dict[str, Any] = {}
        if self.ca_path:
            kwargs["ca_path"] = self.ca_path
        try:
            resp = open_url(self.url + path, data=data, method=method, headers=self.headers,
                            timeout=self.timeout, validate_certs=self.validate_certs, **kwargs)
            raw = resp.read()
        except HTTPError as exc:
            raise self._error(exc) from None
        except (URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise BacalhauAPIError(f"cannot reach Bacalhau's API at {self.url}: {reason}") from None
        return json.loads(raw) if raw else None

    def _error(self, exc: HTTPError) -> BacalhauAPIError:
        message, code, reason = "", None, ""
        try:
            body = json.loads(exc.read() or b"{}")
            message, code = body.get("Message") or body.get("message") or "", body.get("Code")
            reason = str((body.get("Details") or {}).get("reason") or "")
        except (ValueError, AttributeError):
            pass
        if exc.code == 401:
            message = message or "unauthorized"
            return BacalhauAPIError(
                f"Bacalhau's API at {self.url} refused the request ({exc.code} {message}): give the cluster's API key",
                exc.code, code, message, reason)
        return BacalhauAPIError(f"Bacalhau's API answered {exc.code}: {message or exc.reason}", exc.code, code,
                                message, reason)

    # ----------------------------------------------------------------- jobs
    def submit(self, job: dict) -> dict:
        return self.call("PUT", "/api/v1/orchestrator/jobs", {"Job": job, "Force": False}) or {}

    def job(self, job_id: str) -> dict:
        return (self.call("GET", f"/api/v1/orchestrator/jobs/{job_id}") or {}).get("Job") or {}

    def jobs(self) -> list[dict]:
        """Every job of every namespace (GET /api/v1/orchestrator/jobs?namespace=*, pkg/publicapi/endpoint/
        orchestrator/endpoint.go listJobs), following NextToken."""
        return self._paged("/api/v1/orchestrator/jobs?namespace=*&limit=1000")

    def executions(self, job_id: str) -> list[dict]:
        return self._paged(f"/api/v1/orchestrator/jobs/{job_id}/executions")

    def _paged(self, path: str) -> list[dict]:
        """Every ``Items`` of a list endpoint, following ``NextToken`` (``next_token`` in the query)."""
        items: list[dict] = []
        token = ""
        while True:
            page = self.call("GET", f"{path}{'&' if '?' in path else '?'}next_token={token}" if token else path) or {}
            items.extend(page.get("Items") or [])
            token = page.get("NextToken") or ""
            if not token:
                return items

    def stop(self, job_id: str, reason: str) -> dict:
        # The client sends StopJobRequest as the DELETE's body (pkg/publicapi/client/v2/api_jobs.go).
        return self.call("DELETE", f"/api/v1/orchestrator/jobs/{job_id}", {"reason": reason}) or {}

    # ---------------------------------------------------------------- nodes
    def nodes(self) -> list[dict]:
        return (self.call("GET", "/api/v1/orchestrator/nodes?limit=1000") or {}).get("Nodes") or []

    def agent_node(self) -> dict:
        """The NodeInfo of the node that serves this API (GET /api/v1/agent/node; read:agent)."""
        return self.call("GET", "/api/v1/agent/node") or {}

    def update_node(self, node_id: str, action: str, message: str = "") -> dict:
        """approve, reject or delete a node: PUT /api/v1/orchestrator/nodes/:id with a PutNodeRequest
        (pkg/publicapi/endpoint/orchestrator/endpoint.go: g.PUT("/nodes/:id", e.updateNode))."""
        body = {"Action": action, "Message": message, "NodeID": node_id}
        return self.call("PUT", f"/api/v1/orchestrator/nodes/{node_id}", body) or {}

    def wait(self, job_id: str, timeout: float, interval: float) -> dict:
        """Poll the job until it is Completed, Failed or Stopped (Bacalhau has no blocking read)."""
        deadline = time.monotonic() + timeout
        while True:
            job = self.job(job_id)
            if job_state(job) in JOB_TERMINAL:
                return job
            if time.monotonic() >= deadline:
                return job
            time.sleep(interval)


def job_state(job: dict) -> str:
    return str(((job or {}).get("State") or {}).get("StateType") or "Undefined")


def summarise_execution(execution: dict, labels_by_node: dict[str, dict]) -> dict:
    """One execution as a snake_case dict, with its node's labels (to name the node's region and instance)."""
    out = execution.get("RunOutput") or {}
    compute = execution.get("ComputeState") or {}
    desired = execution.get("DesiredState") or {}
    node_id = execution.get("NodeID") or ""
    return {
        "id": execution.get("ID"),
        "node_id": node_id,
        "node_labels": labels_by_node.get(node_id, {}),
        "state": state_name(compute.get("StateType"), EXECUTION_STATES),
        "message": compute.get("Message") or "",
        "desired_state": state_name(desired.get("StateType"), DESIRED_STATES),
        "exit_code": out.get("ExitCode"),
        "stdout": out.get("Stdout") or "",
        # Bacalhau's RunOutput tags stderr in lower case (pkg/models/execution.go RunCommandResult).
        "stderr": out.get("stderr") or out.get("Stderr") or "",
        "error": out.get("ErrorMsg") or "",
    }
