"""Jobs on the real test hosts, in real Docker: the cluster tests/roles/playbooks/cluster.yml builds
runs `bacalhau docker run` on the orchestrator host and an ops job sent to the HTTP API in
Bacalhau's JSON shapes, and a compute node whose Docker is stopped fails its execution with
Docker's own message.

test_cluster.py (collected first) reuses testhost3 for its failure cases and leaves it joined
to nothing, so this module converges the cluster again before it starts."""

from __future__ import annotations

import json
import re
import time
import urllib.request

import pytest

IMAGE = "localhost/testhost/busybox:1.35"
DOCKER_DOWN = "Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?"


def api_key(env) -> str:
    """The API key the orchestrator role generated beside the token file: Bacalhau's API refuses
    /api/v1/orchestrator/* without it (pkg/authz)."""
    return (env.token_file.parent / "api-key").read_text().strip()


def cli(env, command: str) -> str:
    """The bacalhau CLI on the orchestrator host, given the key as BACALHAU_API_KEY (cmd/util/api.go)."""
    return env.ssh("testhost1", f"BACALHAU_API_KEY={api_key(env)} {command}")


def api(env, method: str, path: str, body=None):
    req = urllib.request.Request(f"http://{env.ip('testhost1')}:1234{path}", method=method,
                                 data=json.dumps(body).encode() if body is not None else None,
                                 headers={"Content-Type": "application/json",
                                          "Authorization": f"Bearer {api_key(env)}"})
    with urllib.request.urlopen(req, timeout=15) as resp:
        return json.loads(resp.read())


def ops_job(*cmd: str) -> dict:
    return {"Type": "ops", "Tasks": [{"Name": "main", "Engine": {"Type": "docker", "Params": {
        "Image": IMAGE, "Entrypoint": ["/bin/busybox"], "Parameters": list(cmd)}}}]}


def wait_job(env, job_id: str, timeout: float = 90) -> dict:
    deadline = time.time() + timeout
    while True:
        res = api(env, "GET", f"/api/v1/orchestrator/jobs/{job_id}?include=executions")
        if res["Job"]["State"]["StateType"] in ("Completed", "Failed", "Stopped") or time.time() > deadline:
            return res
        time.sleep(1)


@pytest.fixture(scope="module")
def cluster(env):
    res = env.playbook("cluster.yml")
    assert res.returncode == 0, res.output[-4000:]
    listed = json.loads(cli(env, "bacalhau node list --output json"))
    nodes = {n["Info"]["Labels"]["instance-id"]: n["Info"]["NodeID"] for n in listed
             if n["Info"]["NodeType"] == "Compute" and n["ConnectionState"]["Status"] == "CONNECTED"}
    assert sorted(nodes) == ["i-testhost2", "i-testhost3"]
    return nodes


def test_docker_run_wait_on_the_orchestrator_runs_in_docker_and_returns_the_output(env, cluster):
    out = cli(env, f"bacalhau docker run --wait {IMAGE} -- /bin/busybox echo hello")
    m = re.search(r"^Job successfully submitted\. Job ID: (j-\S+)$", out, re.M)
    assert m, out
    assert f"bacalhau job describe {m.group(1)}" in out
    execs = json.loads(cli(env, f"bacalhau job executions {m.group(1)} --output json"))
    assert [(e["ComputeState"]["StateType"], e["RunOutput"]["Stdout"], e["RunOutput"]["ExitCode"]) for e in execs] \
        == [(9, "hello\n", 0)], execs
    desc = json.loads(cli(env, f"bacalhau job describe {m.group(1)} --output json"))
    assert desc["Job"]["State"]["StateType"] == "Completed"


def test_ops_job_over_http_runs_on_every_compute_node(env, cluster):
    res = api(env, "PUT", "/api/v1/orchestrator/jobs", {"Job": ops_job("sh", "-c", "echo hello from $(uname -m)")})
    done = wait_job(env, res["JobID"])
    assert done["Job"]["State"]["StateType"] == "Completed", done["Job"]["State"]
    by_node = {e["NodeID"]: e for e in done["Executions"]["Items"]}
    assert sorted(by_node) == sorted(cluster.values())
    for ex in by_node.values():
        assert ex["ComputeState"]["StateType"] == 9
        assert re.fullmatch(r"hello from \S+\n", ex["RunOutput"]["Stdout"]), ex["RunOutput"]


def test_stopped_docker_fails_that_nodes_execution_with_dockers_message(env, cluster):
    env.ssh("testhost3", "sudo systemctl stop docker.socket docker.service")
    try:
        res = api(env, "PUT", "/api/v1/orchestrator/jobs", {"Job": ops_job("echo", "hello")})
        done = wait_job(env, res["JobID"])
    finally:
        env.ssh("testhost3", "sudo systemctl start docker.socket docker.service")
    assert done["Job"]["State"] == {"StateType": "Failed",
                                    "Message": "Job failed because one or more executions failed"}
    by_node = {e["NodeID"]: e for e in done["Executions"]["Items"]}
    broken, healthy = by_node[cluster["i-testhost3"]], by_node[cluster["i-testhost2"]]
    assert broken["ComputeState"]["StateType"] == 10
    assert DOCKER_DOWN in broken["ComputeState"]["Message"], broken["ComputeState"]
    assert healthy["ComputeState"]["StateType"] == 9 and healthy["RunOutput"]["Stdout"] == "hello\n"
