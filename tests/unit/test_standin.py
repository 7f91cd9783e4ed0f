"""The stand-in Bacalhau (tests/standin/bacalhau_standin.py) on loopback: an orchestrator and
compute nodes as real processes, jobs submitted in Bacalhau's JSON shapes through the HTTP API
and through the CLI. Docker's engine does not run on this machine, so each compute node finds a
FAKE `docker` first on its PATH: it runs the container's command on this machine and answers
like the docker CLI (tests/standin/README.md names what the real engine would say), and a fake
Docker Engine API on a unix socket ($DOCKER_HOST) for the one call the CLI cannot make, the bid's
registry query (`GET /distribution/<image>/json`), answering as Docker 20.10 answers on the test
hosts."""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from http.server import BaseHTTPRequestHandler
from socketserver import ThreadingUnixStreamServer

import pytest

STANDIN = Path(__file__).resolve().parents[2] / "tests" / "standin" / "bacalhau_standin.py"
DOCKER_DOWN = "Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?"

FAKE_DOCKER = r'''#!__PYTHON__ -S
"""A fake docker CLI: containers are the command run on this machine."""
import json, os, subprocess, sys, uuid
D = os.environ["FAKE_DOCKER_DIR"]
args = sys.argv[1:]
with open(os.path.join(D, "calls"), "a") as fh:
    fh.write(json.dumps(args) + "\n")
if os.path.exists(os.path.join(D, "down")):
    if args[:2] == ["image", "inspect"]:
        print("[]")
    sys.stderr.write("__DOWN__\n")
    sys.exit(1)
cdir = os.path.join(D, "containers")
os.makedirs(cdir, exist_ok=True)
def load(name):
    with open(os.path.join(cdir, name + ".json")) as fh:
        return json.load(fh)
def save(name, c):
    with open(os.path.join(cdir, name + ".json"), "w") as fh:
        json.dump(c, fh)
cmd = args[0]
if cmd == "info":
    print("24.0.7")
elif cmd == "version":
    print("linux/amd64")
elif cmd == "image" and args[1] == "inspect":
    images = open(os.path.join(D, "images")).read().split()
    if args[-1] not in images:
        sys.stderr.write("Error: No such image: %s\n" % args[-1])
        sys.exit(1)
    # pulled images carry RepoDigests; those listed in `nodigest` were built or imported here
    nodigest = open(os.path.join(D, "nodigest")).read().split() if os.path.exists(os.path.join(D, "nodigest")) else []
    digests = [] if args[-1] in nodigest else [args[-1].rsplit(":", 1)[0] + "@sha256:" + "ab" * 32]
    print("linux/amd64" + (" " + json.dumps(digests) if "RepoDigests" in " ".join(args) else ""))
elif cmd == "pull":
    registry = open(os.path.join(D, "registry")).read().split() if os.path.exists(os.path.join(D, "registry")) else []
    if args[-1] not in registry:
        sys.stderr.write("Error response from daemon: manifest unknown: manifest unknown\n")
        sys.exit(1)
    with open(os.path.join(D, "images"), "a") as fh:
        fh.write(" " + args[-1])
    print(args[-1])
elif cmd == "create":
    c = {"env": [], "workdir": "", "entrypoint": None}
    i = 1
    while i < len(args) and args[i].startswith("-"):
        flag, val = args[i], args[i + 1]
        if flag == "--name": c["name"] = val
        elif flag == "-e": c["env"].append(val)
        elif flag == "-w": c["workdir"] = val
        elif flag == "--entrypoint": c["entrypoint"] = val
        else: c.setdefault("flags", []).append([flag, val])
        i += 2
    c["image"], c["cmd"] = args[i], args[i + 1:]
    save(c["name"], c)
    print(uuid.uuid4().hex)
elif cmd == "start":
    c = load(args[1])
    argv = ([c["entrypoint"]] if c["entrypoint"] else []) + c["cmd"]
    env = {"PATH": "/usr/bin:/bin"}
    env.update(dict(e.split("=", 1) for e in c["env"]))
    try:
        p = subprocess.run(argv, capture_output=True, env=env, cwd=c["workdir"] or None, timeout=120)
    except FileNotFoundError:
        sys.stderr.write('Error response from daemon: failed to create shim task: OCI runtime create failed: '
                         'exec: "%s": executable file not found in $PATH: unknown\n' % argv[0])
        sys.exit(1)
    except subprocess.TimeoutExpired:
        sys.exit(1)
    c.update(rc=p.returncode, out=p.stdout.decode(), err=p.stderr.decode())
    save(args[1], c)
elif cmd == "wait":
    print(load(args[1])["rc"])
elif cmd == "logs":
    c = load(args[1])
    sys.stdout.write(c["out"])
    sys.stderr.write(c["err"])
elif cmd == "rm":
    try:
        os.remove(os.path.join(cdir, args[-1] + ".json"))
    except OSError:
        pass
else:
    sys.stderr.write("fake docker: unsupported %r\n" % args)
    sys.exit(2)
'''.replace("__DOWN__", DOCKER_DOWN).replace("__PYTHON__", sys.executable)


class FakeEngine(ThreadingUnixStreamServer):
    """Docker's Engine API, the part the stand-in asks for (the bid's DistributionInspect), on
    <dir>/docker.sock. The registry it reaches is the `registry` file (images it has) in the fake
    dir; an image listed in `unreachable` gets the 500 Docker 20.10 gives when its registry does
    not answer (seen on the test hosts); anything else the registry's 404."""

    daemon_threads = True

    def __init__(self, d: Path) -> None:
        self.dir = d
        self.calls: list[str] = []

        class Handler(BaseHTTPRequestHandler):
            def address_string(self):  # a unix socket has no client address
                return "docker"

            def log_message(self, *args):
                pass

            def do_GET(self):  # noqa: N802
                server: FakeEngine = self.server  # type: ignore[assignment]
                server.calls.append(self.path)
                image = self.path.removeprefix("/distribution/").removesuffix("/json")
                read = lambda name: (d / name).read_text().split() if (d / name).exists() else []  # noqa: E731
                if image in read("unreachable"):
                    host = image.split("/", 1)[0]
                    code, body = 500, {"message": f'Get "http://{host}/v2/": dial tcp 127.0.0.1:80: connect: '
                                                  "connection refused"}
                elif image in read("registry"):
                    code, body = 200, {"Descriptor": {"mediaType": "application/vnd.docker.distribution.manifest"
                                                      ".v2+json", "digest": "sha256:" + "ab" * 32, "size": 427},
                                       "Platforms": [{"architecture": "amd64", "os": "linux"}]}
                else:
                    code, body = 404, {"message": "manifest unknown: manifest unknown"}
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        super().__init__(str(d / "docker.sock"), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Proc:
    def __init__(self, tmp: Path, name: str, cfg: dict, env: dict | None = None, **api_opts) -> None:
        self.dir = tmp / name
        self.dir.mkdir(parents=True, exist_ok=True)
        cfg.setdefault("DataDir", str(self.dir / "data"))
        self.port = cfg.setdefault("API", {}).setdefault("Port", free_port())
        cfg["API"]["Host"] = "127.0.0.1"
        (self.dir / "config.json").write_text(json.dumps(cfg))
        self.log = self.dir / "log"
        self.p = subprocess.Popen([sys.executable, str(STANDIN), "serve", "--config", str(self.dir / "config.json")],
                                  stdout=subprocess.DEVNULL, stderr=open(self.log, "w"),
                                  env=dict(os.environ, **(env or {})))
        deadline = time.time() + 10
        while True:
            try:
                self.node_id = api(self.port, "GET", "/api/v1/agent/node", **api_opts)["NodeID"]
                break
            except (OSError, urllib.error.URLError):
                if time.time() > deadline:
                    raise RuntimeError(self.log.read_text())
                time.sleep(0.05)

    def stop(self, sig=signal.SIGTERM) -> None:
        if self.p.poll() is None:
            self.p.send_signal(sig)
            try:
                self.p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.p.kill()


def api(port: int, method: str, path: str, body=None, headers: dict | None = None, ctx=None):
    req = urllib.request.Request(f"{'https' if ctx else 'http'}://127.0.0.1:{port}{path}", method=method,
                                 data=json.dumps(body).encode() if body is not None else None,
                                 headers={"Content-Type": "application/json", **(headers or {})})
    with urllib.request.urlopen(req, timeout=10, context=ctx) as resp:
        return json.loads(resp.read())


def api_error(port: int, method: str, path: str, body=None, **opts) -> tuple[int, dict]:
    with pytest.raises(urllib.error.HTTPError) as err:
        api(port, method, path, body, **opts)
    return err.value.code, json.loads(err.value.read())


class World:
    """An orchestrator and compute nodes, each compute node with its own fake docker."""

    def __init__(self, tmp: Path, computes: dict[str, dict], orch_cfg: dict | None = None) -> None:
        self.tmp, self.procs, self.engines = tmp, [], []
        self.nats = free_port()
        cfg = {"Orchestrator": {"Enabled": True, "Port": self.nats, "Host": "127.0.0.1", "Auth": {"Token": "tok"}}}
        for k, v in (orch_cfg or {}).items():
            cfg["Orchestrator"][k] = v
        self.orch = self._start("orch", cfg)
        self.computes = {name: self.add_compute(name, **opts) for name, opts in computes.items()}

    def _start(self, name, cfg, env=None) -> Proc:
        p = Proc(self.tmp, name, cfg, env)
        self.procs.append(p)
        return p

    def add_compute(self, name: str, labels: dict | None = None, docker_down: bool = False,
                    token: str = "tok", orchestrator: str | None = None) -> Proc:
        fake = self.tmp / name / "fakebin"
        fake.mkdir(parents=True, exist_ok=True)
        (fake / "docker").write_text(FAKE_DOCKER)
        (fake / "docker").chmod(0o755)
        (fake / "images").write_text("busybox:1.35 registry.testhosts:5213/testhost/busybox:1.35\n")
        if docker_down:
            (fake / "down").write_text("")
        engine = FakeEngine(fake)
        self.engines.append(engine)
        cfg = {"Compute": {"Enabled": True, "Orchestrators": [orchestrator or f"nats://127.0.0.1:{self.nats}"],
                           "Auth": {"Token": token}, "Heartbeat": {"Interval": "1s"}},
               "Labels": labels or {}}
        p = self._start(name, cfg, env={"PATH": f"{fake}:{os.environ['PATH']}", "FAKE_DOCKER_DIR": str(fake),
                                        "DOCKER_HOST": f"unix://{fake}/docker.sock"})
        p.fake, p.engine = fake, engine
        return p

    def wait_nodes(self, n: int, timeout: float = 10) -> list[dict]:
        deadline = time.time() + timeout
        while True:
            nodes = [s for s in api(self.orch.port, "GET", "/api/v1/orchestrator/nodes")["Nodes"]
                     if s["Info"]["NodeType"] == "Compute" and s["ConnectionState"]["Status"] == "CONNECTED"]
            if len(nodes) >= n or time.time() > deadline:
                return nodes
            time.sleep(0.1)

    def submit(self, job: dict) -> dict:
        return api(self.orch.port, "PUT", "/api/v1/orchestrator/jobs", {"Job": job})

    def wait_job(self, job_id: str, timeout: float = 15, states=("Completed", "Failed", "Stopped")) -> dict:
        deadline = time.time() + timeout
        while True:
            res = api(self.orch.port, "GET", f"/api/v1/orchestrator/jobs/{job_id}?include=executions")
            if res["Job"]["State"]["StateType"] in states or time.time() > deadline:
                return res
            time.sleep(0.1)

    def cli(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, str(STANDIN), *args], input=stdin, capture_output=True, text=True,
                              timeout=60, env=dict(os.environ, BACALHAU_API_HOST="127.0.0.1",
                                                   BACALHAU_API_PORT=str(self.orch.port)))

    def close(self) -> None:
        for p in reversed(self.procs):
            p.stop()
        for e in self.engines:
            e.shutdown()
            e.server_close()


def docker_job(*cmd: str, job_type: str = "batch", **extra) -> dict:
    params = {"Image": "busybox:1.35", "Parameters": list(cmd)}
    params.update(extra.pop("params", {}))
    job = {"Type": job_type, "Tasks": [{"Name": "main", "Engine": {"Type": "docker", "Params": params}}]}
    job.update(extra)
    return job


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    w = World(tmp_path_factory.mktemp("standin"), {"eu": {"labels": {"region": "eu-west-1"}},
                                                   "us": {"labels": {"region": "us-east-1"}}})
    try:
        assert len(w.wait_nodes(2)) == 2
        yield w
    finally:
        w.close()


# ------------------------------------------------------------------- HTTP API, Bacalhau's shapes
def test_batch_job_over_http_completes_with_output_and_bacalhaus_defaults(world):
    res = world.submit(docker_job("echo", "hello"))
    assert res["JobID"].startswith("j-") and res["EvaluationID"] and res["Warnings"] == []
    done = world.wait_job(res["JobID"])
    job = done["Job"]
    assert job["State"]["StateType"] == "Completed"
    assert (job["Namespace"], job["Count"], job["Version"], job["Revision"] > 1) == ("default", 1, 1, True)
    assert job["Name"] == job["ID"] and isinstance(job["CreateTime"], int) and job["CreateTime"] > 10**18
    assert job["Tasks"][0]["Resources"] == {"CPU": "500m", "Memory": "512Mb"}
    assert job["Meta"]["bacalhau.org/orchestrator.id"] == world.orch.node_id
    [ex] = done["Executions"]["Items"]
    assert ex["ID"].startswith("e-") and ex["JobID"] == job["ID"]
    # ComputeState / DesiredState are integers in v1.9.3's JSON: 9 Completed, 1 Running
    assert ex["ComputeState"]["StateType"] == 9 and ex["DesiredState"]["StateType"] == 1
    assert ex["RunOutput"] == {"Stdout": "hello\n", "StdoutTruncated": False, "stderr": "", "StderrTruncated": False,
                               "ExitCode": 0, "ErrorMsg": ""}
    listed = api(world.orch.port, "GET", f"/api/v1/orchestrator/jobs/{job['ID']}/executions")
    assert listed["NextToken"] == "" and [e["ID"] for e in listed["Items"]] == [ex["ID"]]
    jobs = api(world.orch.port, "GET", "/api/v1/orchestrator/jobs")
    assert job["ID"] in [j["ID"] for j in jobs["Items"]] and "NextToken" in jobs


def test_engine_params_reach_the_container_and_a_nonzero_exit_is_completed(world):
    job = docker_job("-c", 'echo "$A $B"; pwd; echo oops >&2; exit 3',
                     params={"Entrypoint": ["/bin/sh"], "EnvironmentVariables": ["A=from-engine"],
                             "WorkingDirectory": "/tmp"})
    job["Tasks"][0]["Env"] = {"B": "from-task"}
    done = world.wait_job(world.submit(job)["JobID"])
    [ex] = done["Executions"]["Items"]
    assert done["Job"]["State"]["StateType"] == "Completed", done
    assert ex["ComputeState"]["StateType"] == 9
    assert ex["RunOutput"]["Stdout"] == "from-engine from-task\n/tmp\n"
    assert ex["RunOutput"]["stderr"] == "oops\n" and ex["RunOutput"]["ExitCode"] == 3


def test_ops_job_runs_on_every_compute_node(world):
    done = world.wait_job(world.submit(docker_job("echo", "hi", job_type="ops"))["JobID"])
    assert done["Job"]["State"]["StateType"] == "Completed" and done["Job"]["Count"] == 0
    execs = done["Executions"]["Items"]
    assert sorted(e["NodeID"] for e in execs) == sorted(p.node_id for p in world.computes.values())
    assert {e["RunOutput"]["Stdout"] for e in execs} == {"hi\n"}


@pytest.mark.parametrize(("constraint", "nodes"), [
    ({"Key": "region", "Operator": "=", "Values": ["eu-west-1"]}, ["eu"]),
    ({"Key": "region", "Operator": "in", "Values": ["us-east-1", "ap-south-1"]}, ["us"]),
    ({"Key": "region", "Operator": "!=", "Values": ["eu-west-1"]}, ["us"]),
    ({"Key": "region", "Operator": "notin", "Values": ["us-east-1"]}, ["eu"]),
    ({"Key": "region", "Operator": "exists"}, ["eu", "us"]),
    ({"Key": "os_arch", "Operator": "exists"}, ["eu", "us"]),
])
def test_constraints_pick_the_nodes_whose_labels_match(world, constraint, nodes):
    done = world.wait_job(world.submit(docker_job("true", job_type="ops", Constraints=[constraint]))["JobID"])
    assert done["Job"]["State"]["StateType"] == "Completed"
    assert sorted(e["NodeID"] for e in done["Executions"]["Items"]) == sorted(world.computes[n].node_id for n in nodes)


def test_ops_job_with_no_matching_node_fails_as_bacalhau_says(world):
    c = {"Key": "region", "Operator": "=", "Values": ["mars-1"]}
    done = world.wait_job(world.submit(docker_job("true", job_type="ops", Constraints=[c]))["JobID"])
    msg = done["Job"]["State"]["Message"]
    assert done["Job"]["State"]["StateType"] == "Failed" and done["Executions"]["Items"] == []
    # one reason line per distinct reason (here each node's labels differ)
    assert msg.startswith("not matching nodes to run job out of 2 available nodes.\n• Node n-"), msg
    eu = world.computes["eu"].node_id
    assert (f"\n• Node {eu[:10]}: labels map[name:{eu} os_arch:" in msg
            and "os_type:linux region:eu-west-1] don't match required selectors [region = mars-1]" in msg), msg


def test_batch_count_uses_that_many_nodes_and_fails_when_too_few(world):
    done = world.wait_job(world.submit(docker_job("echo", "x", Count=2))["JobID"])
    assert done["Job"]["State"]["StateType"] == "Completed"
    assert len({e["NodeID"] for e in done["Executions"]["Items"]}) == 2
    done = world.wait_job(world.submit(docker_job("echo", "x", Count=3))["JobID"])
    assert done["Job"]["State"]["StateType"] == "Failed"
    assert done["Job"]["State"]["Message"].startswith("not enough nodes to run job. requested: 3, available: 2, "
                                                      "suitable: 2.")


def test_missing_image_fails_without_a_pull(world):
    job = docker_job("true", job_type="ops", params={"Image": "nosuch/image:1"},
                     Constraints=[{"Key": "region", "Operator": "=", "Values": ["eu-west-1"]}])
    done = world.wait_job(world.submit(job)["JobID"])
    [ex] = done["Executions"]["Items"]
    assert done["Job"]["State"]["StateType"] == "Failed"
    assert done["Job"]["State"]["Message"] == "Job failed because one or more executions failed"
    assert ex["ComputeState"] == {"StateType": 10, "Message": 'image not available: "nosuch/image:1"'}
    calls = (world.computes["eu"].fake / "calls").read_text()
    assert '"pull"' not in calls
    # no digest to trust, so the registry was asked, and said it has no such image (404)
    assert "/distribution/nosuch/image:1/json" in world.computes["eu"].engine.calls


EU = [{"Key": "region", "Operator": "=", "Values": ["eu-west-1"]}]


def test_a_local_image_with_repodigests_runs_without_asking_the_registry(world):
    done = world.wait_job(world.submit(docker_job("echo", "ok", job_type="ops", Constraints=EU))["JobID"])
    assert done["Job"]["State"]["StateType"] == "Completed"
    assert not [c for c in world.computes["eu"].engine.calls if "busybox:1.35" in c]


def test_an_image_without_digests_is_refused_with_dockers_error_when_its_registry_cannot_answer(world):
    # what `docker import` makes (the test world's image before it came from a registry):
    # Bacalhau v1.9.3 asks the image's registry, here localhost:80, which refuses.
    fake = world.computes["eu"].fake
    (fake / "images").write_text((fake / "images").read_text() + " localhost/imported/busybox:1")
    (fake / "nodigest").write_text("localhost/imported/busybox:1")
    (fake / "unreachable").write_text("localhost/imported/busybox:1")
    job = docker_job("true", job_type="ops", params={"Image": "localhost/imported/busybox:1"}, Constraints=EU)
    done = world.wait_job(world.submit(job)["JobID"])
    [ex] = done["Executions"]["Items"]
    assert done["Job"]["State"]["StateType"] == "Failed"
    assert ex["ComputeState"] == {"StateType": 10, "Message": 'Error response from daemon: Get "http://localhost/v2/": '
                                                              "dial tcp 127.0.0.1:80: connect: connection refused"}
    assert ex["RunOutput"]["ErrorMsg"] == ""
    assert not [c for c in (fake / "calls").read_text().splitlines() if json.loads(c)[0] == "create"
                and "localhost/imported/busybox:1" in c]


def test_an_image_without_digests_runs_once_its_registry_answers_and_is_asked_once(world):
    fake, engine = world.computes["eu"].fake, world.computes["eu"].engine
    (fake / "images").write_text((fake / "images").read_text() + " registry.testhosts:5213/built/here:1")
    (fake / "nodigest").write_text("registry.testhosts:5213/built/here:1")
    (fake / "registry").write_text("registry.testhosts:5213/built/here:1")
    job = docker_job("echo", "built", job_type="ops", params={"Image": "registry.testhosts:5213/built/here:1"},
                     Constraints=EU)
    for _ in range(2):
        done = world.wait_job(world.submit(job)["JobID"])
        assert done["Job"]["State"]["StateType"] == "Completed", done["Job"]["State"]
        assert done["Executions"]["Items"][0]["RunOutput"]["Stdout"] == "built\n"
    # Bacalhau's manifest cache keeps the answer for an hour; the local image is used, not pulled
    assert engine.calls.count("/distribution/registry.testhosts:5213/built/here:1/json") == 1
    assert '"pull"' not in (fake / "calls").read_text()


def test_an_image_not_on_the_node_is_pulled_when_its_registry_has_it(world):
    fake = world.computes["eu"].fake
    (fake / "registry").write_text("registry.testhosts:5213/only/in-registry:2")
    job = docker_job("echo", "pulled", job_type="ops", params={"Image": "registry.testhosts:5213/only/in-registry:2"},
                     Constraints=EU)
    done = world.wait_job(world.submit(job)["JobID"])
    assert done["Job"]["State"]["StateType"] == "Completed", done["Job"]["State"]
    pulls = [json.loads(c) for c in (fake / "calls").read_text().splitlines() if json.loads(c)[0] == "pull"]
    assert pulls == [["pull", "--quiet", "--platform", "linux/amd64", "registry.testhosts:5213/only/in-registry:2"]]


def test_stop_cancels_the_running_execution(world):
    job_id = world.submit(docker_job("sleep", "30", job_type="ops",
                                     Constraints=[{"Key": "region", "Operator": "=", "Values": ["us-east-1"]}]))["JobID"]
    deadline = time.time() + 10
    while api(world.orch.port, "GET", f"/api/v1/orchestrator/jobs/{job_id}/executions")["Items"][0][
            "ComputeState"]["StateType"] != 6 and time.time() < deadline:
        time.sleep(0.1)
    res = api(world.orch.port, "DELETE", f"/api/v1/orchestrator/jobs/{job_id}", {"reason": "enough"})
    assert res["EvaluationID"]
    done = world.wait_job(job_id)
    [ex] = done["Executions"]["Items"]
    assert done["Job"]["State"] == {"StateType": "Stopped", "Message": "enough"}
    assert ex["ComputeState"]["StateType"] == 11 and ex["DesiredState"]["StateType"] == 2
    assert ex["ComputeState"]["Message"] == "Execution stop requested because job has been stopped"


def test_invalid_job_and_unknown_job_answer_in_bacalhaus_error_shape(world):
    code, body = api_error(world.orch.port, "PUT", "/api/v1/orchestrator/jobs", {"Job": {"Tasks": []}})
    assert code == 400 and body["Message"] == "missing job type\nmissing job tasks"
    assert body["Status"] == 400 and {"Code", "Component", "RequestID"} <= set(body)
    code, body = api_error(world.orch.port, "GET", "/api/v1/orchestrator/jobs/j-nope")
    assert (code, body["Message"], body["Code"]) == (404, "job not found: j-nope", "NotFound")
    bad = docker_job("true", job_type="ops", Count=2, Constraints=[{"Key": "a", "Operator": "in"}])
    code, body = api_error(world.orch.port, "PUT", "/api/v1/orchestrator/jobs", {"Job": bad})
    assert body["Message"] == ("ops jobs cannot specify count > 1 as they run on all matching nodes\n"
                               "constraint 1 validation failed: selector values cannot be empty for In or NotIn "
                               "operators")


def test_node_info_carries_bacalhaus_labels_and_compute_info(world):
    nodes = api(world.orch.port, "GET", "/api/v1/orchestrator/nodes")["Nodes"]
    orch = next(n for n in nodes if n["Info"]["NodeType"] == "Requester")
    comp = next(n for n in nodes if n["Info"]["NodeID"] == world.computes["eu"].node_id)
    assert orch["Info"]["ComputeNodeInfo"]["ExecutionEngines"] is None
    assert comp["Info"]["ComputeNodeInfo"]["ExecutionEngines"] == ["docker", "wasm"]
    assert comp["Info"]["Labels"]["os_type"] == "linux" and comp["Info"]["Labels"]["os_arch"]
    assert comp["Info"]["Labels"]["name"] == comp["Info"]["NodeID"]
    assert (comp["Membership"], comp["ConnectionState"]["Status"]) == ("APPROVED", "CONNECTED")
    assert "LastError" not in comp["ConnectionState"]


# ------------------------------------------------------------------- the CLI
def test_cli_docker_run_waits_and_prints_what_bacalhau_prints(world):
    # `--wait` is a bool flag: the image right after it is the image, not its value
    res = world.cli("docker", "run", "--wait-timeout-secs", "30", "-e", "GREETING=hi", "--wait", "busybox:1.35",
                    "--", "sh", "-c", "echo $GREETING")
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("Job successfully submitted. Job ID: j-")
    job_id = res.stdout.split("Job ID: ")[1].split()[0]
    assert f"\tbacalhau job describe {job_id}\n" in res.stdout and "Completed" in res.stdout
    execs = json.loads(world.cli("job", "executions", job_id, "--output", "json").stdout)
    assert [e["RunOutput"]["Stdout"] for e in execs] == ["hi\n"]
    desc = json.loads(world.cli("job", "describe", job_id, "--output", "json").stdout)
    assert desc["Job"]["State"]["StateType"] == "Completed" and len(desc["Executions"]["Items"]) == 1
    assert desc["History"]["Items"][0]["Event"]["Message"] == "Job submitted"
    listed = json.loads(world.cli("job", "list", "--output", "json", "--limit", "100").stdout)
    assert job_id in [j["ID"] for j in listed]


def test_cli_id_only_target_all_and_constraints(world):
    res = world.cli("docker", "run", "--id-only", "--target", "all", "--constraints", "region=us-east-1",
                    "busybox:1.35", "--", "echo", "only-us")
    assert res.returncode == 0, res.stderr
    job_id = res.stdout.strip()
    assert job_id.startswith("j-") and "\n" not in job_id
    done = world.wait_job(job_id)
    assert done["Job"]["Type"] == "ops"
    assert [e["NodeID"] for e in done["Executions"]["Items"]] == [world.computes["us"].node_id]


def test_cli_failed_job_prints_error_and_exits_zero_as_bacalhau_does(world):
    res = world.cli("docker", "run", "--target", "all", "--constraints", "region=nowhere", "busybox:1.35", "--", "true")
    assert res.returncode == 0
    assert "Error: job failed" in res.stderr


def test_cli_job_run_yaml_and_json_specs_and_stop(world, tmp_path):
    spec = tmp_path / "job.yaml"
    spec.write_text("Type: batch\nCount: 1\nTasks:\n  - Name: main\n    Engine:\n      Type: docker\n"
                    "      Params:\n        Image: busybox:1.35\n        Parameters: [echo, from-yaml]\n")
    pytest.importorskip("yaml")
    res = world.cli("job", "run", "--id-only", str(spec))
    assert res.returncode == 0, res.stderr
    done = world.wait_job(res.stdout.strip())
    assert done["Executions"]["Items"][0]["RunOutput"]["Stdout"] == "from-yaml\n"
    long = json.dumps(docker_job("sleep", "30", job_type="ops"))
    res = world.cli("job", "run", "--wait=false", stdin=long)
    job_id = res.stdout.strip()
    stop = world.cli("job", "stop", job_id)
    assert stop.returncode == 0, stop.stderr
    assert "Job stop successfully submitted with evaluation ID: " in stop.stdout
    assert world.wait_job(job_id)["Job"]["State"]["StateType"] == "Stopped"
    again = world.cli("job", "stop", job_id)
    assert again.returncode != 0 and "Job is already in a terminal state." in again.stderr


# ------------------------------------------------------------------- membership, Docker, links
def test_manual_approval_leaves_nodes_pending_and_pending_nodes_get_no_work(tmp_path):
    w = World(tmp_path, {"c1": {}}, orch_cfg={"NodeManager": {"ManualApproval": True}})
    try:
        [node] = w.wait_nodes(1)
        assert node["Membership"] == "PENDING"
        done = w.wait_job(w.submit(docker_job("true", job_type="ops"))["JobID"])
        assert done["Job"]["State"] == {"StateType": "Failed",
                                        "Message": "not matching nodes to run job out of 0 available nodes."}
        api(w.orch.port, "PUT", f"/api/v1/orchestrator/nodes/{node['Info']['NodeID']}", {"Action": "approve"})
        done = w.wait_job(w.submit(docker_job("true", job_type="ops"))["JobID"])
        assert done["Job"]["State"]["StateType"] == "Completed"
    finally:
        w.close()


def test_docker_down_fails_the_execution_with_dockers_message_or_is_not_advertised(tmp_path):
    w = World(tmp_path, {"up": {"labels": {"n": "up"}}, "down": {"labels": {"n": "down"}, "docker_down": True}})
    try:
        assert len(w.wait_nodes(2)) == 2
        # down when bacalhau started: docker is not advertised, the node is not chosen
        c = [{"Key": "n", "Operator": "=", "Values": ["down"]}]
        done = w.wait_job(w.submit(docker_job("true", job_type="ops", Constraints=c))["JobID"])
        msg = done["Job"]["State"]["Message"]
        assert msg.endswith(f"Node {w.computes['down'].node_id[:10]}: does not support docker, only wasm"), msg
        # stopped after bacalhau started: advertised, the execution fails with Docker's words
        (w.computes["up"].fake / "down").write_text("")
        c = [{"Key": "n", "Operator": "=", "Values": ["up"]}]
        done = w.wait_job(w.submit(docker_job("true", job_type="ops", Constraints=c))["JobID"])
        [ex] = done["Executions"]["Items"]
        assert done["Job"]["State"]["StateType"] == "Failed"
        assert ex["ComputeState"]["StateType"] == 10 and DOCKER_DOWN in ex["ComputeState"]["Message"]
        assert ex["RunOutput"]["ErrorMsg"] == ""
    finally:
        w.close()


def compute_state(w: World, name: str) -> dict:
    [node] = [n for n in api(w.orch.port, "GET", "/api/v1/orchestrator/nodes")["Nodes"]
              if n["Info"]["NodeID"] == w.computes[name].node_id]
    return node


def parse_rfc3339(text: str) -> float:
    import datetime as dt

    return dt.datetime.strptime(text[:19], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=dt.timezone.utc).timestamp()


def test_node_that_shuts_down_is_disconnected_at_once_and_its_executions_lost_after_the_batch_delay(
        tmp_path, monkeypatch):
    # nodes/manager.go ShutdownNotice + nodes/reevaluator.go: DISCONNECTED at once ("graceful
    # shutdown"), executions failed when the reevaluator's batch delay has passed (15 s in
    # Bacalhau; 3 s here, through the stand-in's own variable)
    monkeypatch.setenv("BACALHAU_STANDIN_REEVALUATOR_BATCH_DELAY", "3")
    w = World(tmp_path, {"c1": {}})
    try:
        w.wait_nodes(1)
        job_id = w.submit(docker_job("sleep", "30", job_type="ops"))["JobID"]
        w.wait_job(job_id, timeout=10, states=("Running",))
        time.sleep(0.3)
        stopping = time.time()  # the notice goes out during stop(), so the delay runs from here at the earliest
        w.computes["c1"].stop()
        stopped = time.time()
        node = compute_state(w, "c1")
        assert node["ConnectionState"]["Status"] == "DISCONNECTED"
        assert node["ConnectionState"]["LastError"] == "graceful shutdown"
        assert parse_rfc3339(node["ConnectionState"]["DisconnectedSince"]) <= stopped + 1
        assert f"INF Node shutdown notice received lastComputeSeq=1 lastOrchestratorSeq=1 node={w.computes['c1'].node_id} reason=\"\"" \
            in w.orch.log.read_text()
        assert "INF bacalhau node shutting down..." in w.computes["c1"].log.read_text()
        time.sleep(1.5)  # within the batch delay: the execution is not failed yet
        [ex] = api(w.orch.port, "GET", f"/api/v1/orchestrator/jobs/{job_id}/executions")["Items"]
        assert ex["ComputeState"]["StateType"] == 6
        done = w.wait_job(job_id)
        [ex] = done["Executions"]["Items"]
        assert done["Job"]["State"] == {"StateType": "Failed",
                                        "Message": "Job failed because one or more executions failed"}
        assert ex["ComputeState"] == {"StateType": 10, "Message": "Execution stop requested because node has disappeared"}
        assert ex["DesiredState"]["StateType"] == 2
        assert ex["ModifyTime"] / 1e9 - stopping >= 2.5
    finally:
        w.close()


def test_batch_job_on_a_node_that_shuts_down_is_retried_on_another_node(tmp_path, monkeypatch):
    # scheduler/batch_service_job.go: the lost execution is failed, and the retry strategy places
    # the job again on a node that matches
    monkeypatch.setenv("BACALHAU_STANDIN_REEVALUATOR_BATCH_DELAY", "1")
    w = World(tmp_path, {"c1": {}})
    try:
        w.wait_nodes(1)
        w.computes["c2"] = w.add_compute("c2")
        w.wait_nodes(2)
        job_id = w.submit(docker_job("sleep", "4"))["JobID"]
        w.wait_job(job_id, timeout=10, states=("Running",))
        [first] = api(w.orch.port, "GET", f"/api/v1/orchestrator/jobs/{job_id}/executions")["Items"]
        assert first["NodeID"] == w.computes["c1"].node_id
        time.sleep(0.5)
        w.computes["c1"].stop()
        done = w.wait_job(job_id, timeout=20)
        by_node = {e["NodeID"]: e for e in done["Executions"]["Items"]}
        assert done["Job"]["State"]["StateType"] == "Completed", done["Job"]["State"]
        assert by_node[w.computes["c1"].node_id]["ComputeState"] == {
            "StateType": 10, "Message": "Execution stop requested because node has disappeared"}
        assert by_node[w.computes["c2"].node_id]["ComputeState"]["StateType"] == 9
    finally:
        w.close()


def test_unreachable_orchestrator_and_wrong_token_log_bacalhaus_lines(tmp_path):
    w = World(tmp_path, {})
    try:
        dead = free_port()
        lost = w.add_compute("lost", orchestrator=f"nats://127.0.0.1:{dead}")
        bad = w.add_compute("bad", token="wrong")
        time.sleep(1.5)
        text = lost.log.read_text()
        assert (f'| ERR Connection attempt failed error="failed to setup transport: failed to connect to NATS: '
                f'no orchestrator available for connection at nats://127.0.0.1:{dead}"') in text, text
        assert "| WRN failed to start legacy connection manager. falling back to ncl protocol" in text
        text = bad.log.read_text()
        assert (f"failed to connect to NATS: failed to connect to nats://127.0.0.1:{w.nats}: "
                "nats: Authorization Violation") in text, text
    finally:
        w.close()


def test_an_orchestrator_that_drops_the_connection_logs_the_dial_timeout(tmp_path):
    """A security group that drops port 4222 answers nothing: nats.go's dial times out after its
    2 s default and only "connection refused" becomes "no orchestrator available" (nats.go v1.52
    nats.go:2813-2824), so Bacalhau logs the dial error. On loopback, a listener whose accept queue
    is full drops the SYNs the same way."""
    full = socket.socket()
    full.bind(("127.0.0.1", 0))
    full.listen(0)
    port = full.getsockname()[1]
    fillers = []
    w = World(tmp_path, {})
    try:
        for _ in range(8):  # fill the queue until a connect hangs
            c = socket.socket()
            c.settimeout(0.3)
            try:
                c.connect(("127.0.0.1", port))
                fillers.append(c)
            except TimeoutError:
                c.close()
                break
        else:
            pytest.skip("this kernel answered every SYN: cannot make a dropping listener on loopback")
        started = time.monotonic()
        dropped = w.add_compute("dropped", orchestrator=f"nats://127.0.0.1:{port}")
        deadline = time.monotonic() + 10
        line = ""
        while time.monotonic() < deadline and not line:
            line = next((ln for ln in dropped.log.read_text().splitlines() if "Connection attempt failed" in ln), "")
            time.sleep(0.2)
        assert line.endswith(f'| ERR Connection attempt failed error="failed to setup transport: failed to connect to '
                             f"NATS: failed to connect to nats://127.0.0.1:{port}: dial tcp 127.0.0.1:{port}: "
                             f'i/o timeout" backoffDuration=1s consecutiveFailures=1'), line
        assert time.monotonic() - started >= 2  # nats.DefaultTimeout
        assert "no orchestrator available" not in dropped.log.read_text()
    finally:
        w.close()
        for c in fillers:
            c.close()
        full.close()



# ------------------------------------------------------------------- TLS on the link, API keys
def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_ca(d: Path, name: str) -> Path:
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.crt",
            "-days", "2", "-subj", f"/CN={name}", "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)
    return d / f"{name}.crt"


def make_cert(d: Path, ca: str, name: str, san: str) -> tuple[Path, Path]:
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
            "-subj", f"/CN={name}", cwd=d)
    (d / f"{name}.ext").write_text(f"subjectAltName={san}\nextendedKeyUsage=serverAuth\n")
    openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key", "-CAcreateserial",
            "-out", f"{name}.crt", "-days", "2", "-extfile", f"{name}.ext", cwd=d)
    return d / f"{name}.crt", d / f"{name}.key"


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = tmp_path_factory.mktemp("pki")
    make_ca(d, "ca")
    make_ca(d, "other")
    make_cert(d, "ca", "orch", "IP:127.0.0.1,DNS:orch.example")
    make_cert(d, "ca", "elsewhere", "IP:10.9.9.9,DNS:orch.example")
    return d


def tls_orchestrator(tmp: Path, pki: Path, cert: str = "orch", extra: dict | None = None) -> tuple[Proc, int]:
    nats = free_port()
    cfg = {"Orchestrator": {"Enabled": True, "Port": nats, "Host": "127.0.0.1", "Auth": {"Token": "tok"}}}
    if cert:
        cfg["Orchestrator"]["TLS"] = {"ServerCert": str(pki / f"{cert}.crt"), "ServerKey": str(pki / f"{cert}.key")}
    cfg.update(extra or {})
    return Proc(tmp, "orch", cfg), nats


def compute(tmp: Path, name: str, nats: int, tls: dict | None = None, host: str = "127.0.0.1") -> Proc:
    cfg = {"Compute": {"Enabled": True, "Orchestrators": [f"nats://{host}:{nats}"], "Auth": {"Token": "tok"},
                       "Heartbeat": {"Interval": "1s"}}}
    if tls is not None:
        cfg["Compute"]["TLS"] = tls
    return Proc(tmp, name, cfg)


def wait_log(p: Proc, text: str, timeout: float = 8) -> str:
    deadline = time.time() + timeout
    while True:
        log = p.log.read_text()
        if text in log or time.time() > deadline:
            return log
        time.sleep(0.1)


def connected(orch: Proc, **opts) -> list[str]:
    return [s["Info"]["NodeID"] for s in api(orch.port, "GET", "/api/v1/orchestrator/nodes", **opts)["Nodes"]
            if s["Info"]["NodeType"] == "Compute" and s["ConnectionState"]["Status"] == "CONNECTED"]


def test_compute_node_with_the_cluster_ca_joins_over_tls(tmp_path, pki):
    orch, nats = tls_orchestrator(tmp_path, pki)
    node = compute(tmp_path, "c1", nats, {"CACert": str(pki / "ca.crt")})
    try:
        deadline = time.time() + 8
        while node.node_id not in connected(orch) and time.time() < deadline:
            time.sleep(0.1)
        assert node.node_id in connected(orch), node.log.read_text()
        # the link is TLS: a plain client is answered with tls_required and cannot talk NATS in clear
        with socket.create_connection(("127.0.0.1", nats), timeout=5) as s:
            info = s.makefile("rb").readline()
        assert b'"tls_required":true' in info
    finally:
        node.stop()
        orch.stop()


@pytest.mark.parametrize("case, tls, host, cert, error", [
    ("wrong CA", {"CACert": "other.crt"}, "127.0.0.1", "orch",
     "nats: tls error: tls: failed to verify certificate: x509: certificate signed by unknown authority"),
    ("address not in the SAN", {"CACert": "ca.crt"}, "127.0.0.1", "elsewhere",
     "nats: tls error: tls: failed to verify certificate: x509: certificate is valid for 10.9.9.9, not 127.0.0.1"),
    ("name not in the SAN", {"CACert": "ca.crt"}, "localhost", "orch",
     "nats: tls error: tls: failed to verify certificate: x509: certificate is valid for orch.example, not localhost"),
    ("plain orchestrator, CACert set", {"CACert": "ca.crt"}, "127.0.0.1", "",
     "nats: secure connection not available"),
    ("RequireTLS against an orchestrator that sends INFO first", {"CACert": "ca.crt", "RequireTLS": True},
     "127.0.0.1", "orch", "nats: tls error: tls: first record does not look like a TLS handshake"),
    ("RequireTLS, plain orchestrator", {"RequireTLS": True}, "127.0.0.1", "",
     "nats: tls error: tls: first record does not look like a TLS handshake"),
    ("no CACert: the system roots do not know the cluster CA", {}, "127.0.0.1", "orch",
     "nats: tls error: tls: failed to verify certificate: x509: certificate signed by unknown authority"),
])
def test_compute_node_refuses_an_orchestrator_it_cannot_verify_and_logs_bacalhaus_line(
        tmp_path, pki, case, tls, host, cert, error):
    orch, nats = tls_orchestrator(tmp_path, pki, cert=cert)
    tls = {k: (str(pki / v) if k == "CACert" else v) for k, v in tls.items()}
    node = compute(tmp_path, "c1", nats, tls, host=host)
    try:
        line = (f'| ERR Connection attempt failed error="failed to setup transport: failed to connect to NATS: '
                f'failed to connect to nats://{host}:{nats}: {error}"')
        text = wait_log(node, line)
        assert line in text, f"{case}: {text}"
        assert node.node_id not in connected(orch)
    finally:
        node.stop()
        orch.stop()


def test_missing_ca_file_is_named_as_nats_go_names_it(tmp_path, pki):
    orch, nats = tls_orchestrator(tmp_path, pki)
    node = compute(tmp_path, "c1", nats, {"CACert": str(tmp_path / "nope.crt")})
    try:
        line = (f"failed to connect to nats://127.0.0.1:{nats}: nats: error loading or parsing rootCA file: "
                f"open {tmp_path / 'nope.crt'}: no such file or directory")
        assert line in wait_log(node, line)
    finally:
        node.stop()
        orch.stop()


KEY, ADMIN_KEY = "k" * 24, "a" * 24
USERS = [{"Alias": "ops", "APIKey": KEY, "Capabilities": [{"Actions": ["read:node", "read:job", "write:job"]}]},
         {"Alias": "admin", "APIKey": ADMIN_KEY, "Capabilities": [{"Actions": ["*"]}]}]
UNAUTHORIZED = {"Status": 401, "Message": "Request Unauthorized", "RequestID": "", "Code": "Unauthorized",
                "Component": "Authorizer", "Hint": "Unauthorized principal. Event has been recorded."}


@pytest.fixture(scope="module")
def secured(tmp_path_factory, pki):
    """An orchestrator with API.Auth.Users and API.TLS, and a compute node joined over TLS."""
    tmp = tmp_path_factory.mktemp("secured")
    bearer = {"Authorization": f"Bearer {ADMIN_KEY}"}
    ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    api_tls = {"TLS": {"CertFile": str(pki / "orch.crt"), "KeyFile": str(pki / "orch.key")}, "Auth": {"Users": USERS}}
    nats = free_port()
    orch = Proc(tmp, "orch", {"Orchestrator": {"Enabled": True, "Port": nats, "Host": "127.0.0.1",
                                               "Auth": {"Token": "tok"},
                                               "TLS": {"ServerCert": str(pki / "orch.crt"),
                                                       "ServerKey": str(pki / "orch.key")}},
                              "API": api_tls}, headers=bearer, ctx=ctx)
    node = compute(tmp, "c1", nats, {"CACert": str(pki / "ca.crt")})
    try:
        deadline = time.time() + 8
        while node.node_id not in connected(orch, headers=bearer, ctx=ctx) and time.time() < deadline:
            time.sleep(0.1)
        yield orch, ctx, bearer
    finally:
        node.stop()
        orch.stop()


@pytest.mark.parametrize("headers, reason", [
    ({}, "Missing Authorization header"),
    ({"Authorization": "Bearer wrong-key-wrong-key-wrong"}, "invalid API key"),
    ({"Authorization": "Bearer "}, "empty API key provided"),
    ({"Authorization": KEY}, "unsupported authentication method"),
])
def test_api_refuses_a_request_without_the_right_key_with_bacalhaus_401(secured, headers, reason):
    orch, ctx, _ = secured
    code, body = api_error(orch.port, "GET", "/api/v1/orchestrator/nodes", headers=headers, ctx=ctx)
    assert code == 401
    assert body == {**UNAUTHORIZED, "Details": {"reason": reason}}


def test_api_key_grants_its_capabilities_only(secured):
    orch, ctx, _ = secured
    bearer = {"Authorization": f"Bearer {KEY}"}
    assert any(s["Info"]["NodeType"] == "Compute"
               for s in api(orch.port, "GET", "/api/v1/orchestrator/nodes", headers=bearer, ctx=ctx)["Nodes"])
    code, body = api_error(orch.port, "PUT", "/api/v1/orchestrator/nodes/x", {"Action": "approve"},
                           headers=bearer, ctx=ctx)
    assert code == 403
    assert body == {"Status": 403, "Message": "Request Forbidden", "RequestID": "", "Code": "Forbidden",
                    "Component": "Authorizer",
                    "Hint": "Check if user have access to this resource. Event has been recorded.",
                    "Details": {"reason": "user 'ops' does not have the required capability 'write:node'"}}
    # /api/v1/agent/node is "agent": read:agent, which this user lacks
    assert api_error(orch.port, "GET", "/api/v1/agent/node", headers=bearer, ctx=ctx)[0] == 403


@pytest.mark.parametrize("path", ["/api/v1/agent/alive", "/api/v1/agent/version"])
def test_open_routes_need_no_key(secured, path):
    orch, ctx, _ = secured
    assert api(orch.port, "GET", path, ctx=ctx)


def test_api_with_tls_refuses_plain_http_as_go_does(secured):
    orch, _, _ = secured
    with socket.create_connection(("127.0.0.1", orch.port), timeout=5) as s:
        s.sendall(b"GET /api/v1/agent/alive HTTP/1.1\r\nHost: x\r\n\r\n")
        reply = s.makefile("rb").read()
    assert reply == b"HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n"


def test_cli_sends_bacalhau_api_key_and_speaks_tls_with_the_given_ca(secured, pki):
    orch, _, _ = secured
    env = dict(os.environ, BACALHAU_API_HOST="127.0.0.1", BACALHAU_API_PORT=str(orch.port),
               BACALHAU_API_TLS_USETLS="true", BACALHAU_API_TLS_CAFILE=str(pki / "ca.crt"))
    env.pop("BACALHAU_API_KEY", None)

    def cli(**extra):
        return subprocess.run([sys.executable, str(STANDIN), "node", "list", "--output", "json"], capture_output=True,
                              text=True, timeout=60, env=dict(env, **extra))

    refused = cli()
    assert refused.returncode != 0 and "Request Unauthorized" in refused.stderr
    ok = cli(BACALHAU_API_KEY=KEY)
    assert ok.returncode == 0, ok.stderr
    assert any(n["Info"]["NodeType"] == "Compute" for n in json.loads(ok.stdout))
    wrong_ca = cli(BACALHAU_API_KEY=KEY, BACALHAU_API_TLS_CAFILE=str(pki / "other.crt"))
    assert wrong_ca.returncode != 0 and "certificate verify failed" in wrong_ca.stderr


def test_serve_refuses_an_api_key_shorter_than_bacalhau_allows(tmp_path):
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"Orchestrator": {"Enabled": True, "Port": free_port()},
                               "API": {"Port": free_port(), "Host": "127.0.0.1",
                                       "Auth": {"Users": [{"Alias": "ops", "APIKey": "short",
                                                           "Capabilities": [{"Actions": ["*"]}]}]}}}))
    p = subprocess.run([sys.executable, str(STANDIN), "serve", "--config", str(cfg)], capture_output=True, text=True,
                       timeout=30)
    assert p.returncode == 1
    assert ("error initializing users: API key for user 'ops' is too short, minimum length is 20 characters"
            in p.stderr)
