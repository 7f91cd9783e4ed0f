"""Jobs on the real test hosts, in real Docker: the cluster tests/roles/playbooks/cluster.yml builds
runs `bacalhau docker run` on the orchestrator host and an ops job sent to the HTTP API in
Bacalhau's JSON shapes, and a compute node whose Docker is stopped fails its execution with
Docker's own message. The image comes from the environment's registry, so it has RepoDigests; a
local image without them is refused when its registry cannot answer, as Bacalhau v1.9.3 does; a
compute node behind a dropping firewall logs the dial timeout Bacalhau logs.

test_cluster.py (collected first) reuses testhost3 for its failure cases and leaves it joined
to nothing, so this module converges the cluster again before it starts."""

from __future__ import annotations

import json
import re
import time
import urllib.request

import pytest

# pulled from the environment's registry at boot: it has RepoDigests (tests/hosts/testhosts.sh)
IMAGE = "registry.testhosts:5213/testhost/busybox:1.35"
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


def test_every_host_pulled_the_image_so_it_carries_repodigests(env, cluster):
    for host in ("testhost1", "testhost2", "testhost3"):
        digests = json.loads(env.ssh(host, f"sudo docker image inspect --format '{{{{json .RepoDigests}}}}' {IMAGE}"))
        assert [d.split("@")[0] for d in digests] == [IMAGE.rsplit(":", 1)[0]], (host, digests)
        assert all(re.fullmatch(r"\S+@sha256:[0-9a-f]{64}", d) for d in digests), digests


def test_an_image_without_digests_is_refused_with_dockers_error_when_its_registry_cannot_answer(env, cluster):
    # `docker commit` makes a local image without RepoDigests (as `docker import` and `docker build`
    # do): Bacalhau v1.9.3 then asks the image's registry (here localhost:80, where nothing listens)
    # before it bids (pkg/docker/docker.go ImageDistribution), and fails with Docker's error.
    local = "localhost/testhost/committed:1"
    for host in ("testhost2", "testhost3"):
        env.ssh(host, f"c=$(sudo docker create {IMAGE}) && sudo docker commit $c {local} >/dev/null && sudo docker rm $c")
        assert env.ssh(host, f"sudo docker image inspect --format '{{{{json .RepoDigests}}}}' {local}").strip() == "[]"
    job = ops_job("echo", "hello")
    job["Tasks"][0]["Engine"]["Params"]["Image"] = local
    done = wait_job(env, api(env, "PUT", "/api/v1/orchestrator/jobs", {"Job": job})["JobID"])
    assert done["Job"]["State"] == {"StateType": "Failed",
                                    "Message": "Job failed because one or more executions failed"}
    assert sorted(e["NodeID"] for e in done["Executions"]["Items"]) == sorted(cluster.values())
    for ex in done["Executions"]["Items"]:
        assert ex["ComputeState"] == {"StateType": 10, "Message": 'Error response from daemon: Get "http://localhost/v2/": '
                                                                  "dial tcp 127.0.0.1:80: connect: connection refused"}, ex


def test_an_orchestrator_behind_a_dropping_firewall_is_logged_as_a_dial_timeout(env, cluster):
    """A security group that drops port 4222, as iptables DROP on the orchestrator host for
    testhost3's address: nats.go's dial times out and Bacalhau logs the dial error, not "no
    orchestrator available" (nats.go v1.52 nats.go:2813-2824; Bacalhau pkg/nats/errors.go)."""
    orch = env.ip("testhost1")
    rule = f"INPUT -p tcp -s {env.ip('testhost3')} --dport 4222 -j DROP"
    since = int(env.ssh("testhost3", "date +%s"))
    env.ssh("testhost1", f"sudo iptables -I {rule}")
    env.ssh("testhost3", "sudo systemctl restart bacalhau")
    try:
        want = (f'ERR Connection attempt failed error="failed to setup transport: failed to connect to NATS: '
                f"failed to connect to nats://{orch}:4222: dial tcp {orch}:4222: i/o timeout\"")
        deadline = time.time() + 60
        journal = ""
        while time.time() < deadline and want not in journal:
            time.sleep(2)
            journal = env.ssh("testhost3", f"sudo journalctl -u bacalhau -o cat --no-pager --since=@{since}")
        assert want in journal, journal[-3000:]
        assert "no orchestrator available" not in journal
    finally:
        env.ssh("testhost1", f"sudo iptables -D {rule}")
        env.ssh("testhost3", "sudo systemctl restart bacalhau")
    deadline = time.time() + 60
    while time.time() < deadline:
        listed = json.loads(cli(env, "bacalhau node list --output json"))
        if any(n["Info"]["NodeID"] == cluster["i-testhost3"] and n["ConnectionState"]["Status"] == "CONNECTED"
               for n in listed):
            break
        time.sleep(2)
    else:
        pytest.fail("testhost3 did not join again once the firewall let it through")
