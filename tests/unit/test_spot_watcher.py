"""The spot interruption watcher (roles/bacalhau_compute/files/bacalhau-spot-watcher) against the
test hosts' IMDS stand-in (tests/hosts/imds_standin.py), both on loopback.

The watcher runs unchanged; a FAKE `systemctl` first on its PATH records when it was asked to
stop Bacalhau (and says whether Bacalhau is active), so "stopped within 10 s of the notice" is
measured from the moment the notice was written to the moment the stop was asked for and done.
The IMDS stand-in runs as it does on a test host, only bound to 127.0.0.1 on a free port."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
WATCHER = ROOT / "roles" / "bacalhau_compute" / "files" / "bacalhau-spot-watcher"
IMDS = ROOT / "tests" / "hosts" / "imds_standin.py"
ADDRESS = "10.213.250.12"  # only names the state file; never dialled

FAKE_SYSTEMCTL = r'''#!/bin/bash
# fake systemctl: is-active answers from $D/active; stop records the time and ends "bacalhau"
D=$FAKE_SYSTEMCTL_DIR
echo "$(date +%s.%N) $*" >>"$D/calls"
case $1 in
  is-active) [[ -e $D/active ]] ;;
  stop) sleep "$(cat "$D/stop-seconds" 2>/dev/null || echo 0.2)"; rm -f "$D/active"; echo "$(date +%s.%N)" >>"$D/stopped" ;;
  *) exit 1 ;;
esac
'''


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def instance(**meta) -> dict:
    data = {"instance-id": "i-0123456789abcdef0", "instance-type": "t3.medium", "instance-life-cycle": "spot",
            "placement/region": "eu-west-1", "placement/availability-zone": "eu-west-1b"}
    data.update(meta)
    return {"state": "running", "meta-data": data}


class Imds:
    """The IMDS stand-in as a process, and its state file."""

    def __init__(self, tmp: Path, pid_file: str = "") -> None:
        self.dir, self.port, self.pid_file = tmp / "imds", free_port(), pid_file
        self.dir.mkdir(exist_ok=True)
        self.url = f"http://127.0.0.1:{self.port}"
        self.p = None

    def write(self, state: dict) -> None:
        path = self.dir / f"{ADDRESS}.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state))
        os.replace(tmp, path)

    def start(self) -> "Imds":
        args = [sys.executable, str(IMDS), "--state-dir", str(self.dir), "--address", ADDRESS,
                "--bind", "127.0.0.1", "--port", str(self.port)]
        if self.pid_file:
            args += ["--poweroff-pid-file", self.pid_file]
        self.p = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=open(self.dir / "log", "a"))
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError((self.dir / "log").read_text())

    def stop(self) -> None:
        if self.p and self.p.poll() is None:
            self.p.terminate()
            self.p.wait(10)

    def request(self, method: str, path: str, headers: dict | None = None) -> tuple[int, str, dict]:
        req = urllib.request.Request(self.url + path, method=method, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=5) as resp:
                return resp.status, resp.read().decode(), dict(resp.headers)
        except urllib.error.HTTPError as err:
            return err.code, err.read().decode(), dict(err.headers)

    def token(self) -> str:
        status, body, _ = self.request("PUT", "/latest/api/token", {"X-aws-ec2-metadata-token-ttl-seconds": "60"})
        assert status == 200
        return body


class Watcher:
    def __init__(self, tmp: Path, imds: Imds, **env: str) -> None:
        self.fake = tmp / "fakebin"
        self.fake.mkdir(exist_ok=True)
        (self.fake / "systemctl").write_text(FAKE_SYSTEMCTL)
        (self.fake / "systemctl").chmod(0o755)
        (self.fake / "active").write_text("")
        self.out = tmp / "watcher.log"
        environ = dict(os.environ, PATH=f"{self.fake}:{os.environ['PATH']}", FAKE_SYSTEMCTL_DIR=str(self.fake),
                       BACALHAU_SPOT_IMDS=imds.url, BACALHAU_SPOT_INTERVAL="1", BACALHAU_SPOT_HTTP_TIMEOUT="1")
        environ.update(env)
        self.p = subprocess.Popen(["/bin/bash", str(WATCHER)], env=environ, stdout=open(self.out, "w"),
                                  stderr=subprocess.STDOUT, start_new_session=True)

    def lines(self) -> list[str]:
        return self.out.read_text().splitlines()

    def wait_line(self, text: str, timeout: float = 15) -> str:
        deadline = time.time() + timeout
        while time.time() < deadline:
            hits = [line for line in self.lines() if text in line]
            if hits:
                return hits[0]
            time.sleep(0.1)
        raise AssertionError(f"no line with {text!r} within {timeout} s:\n" + "\n".join(self.lines()))

    def calls(self) -> list[str]:
        path = self.fake / "calls"
        return path.read_text().splitlines() if path.exists() else []

    def stops(self) -> list[float]:
        path = self.fake / "stopped"
        return [float(x) for x in path.read_text().split()] if path.exists() else []

    def stop_asked(self) -> list[float]:
        return [float(c.split()[0]) for c in self.calls() if c.split()[1:2] == ["stop"]]

    def close(self) -> None:
        if self.p.poll() is None:
            os.killpg(self.p.pid, signal.SIGTERM)
            self.p.wait(10)


@pytest.fixture
def imds(tmp_path):
    server = Imds(tmp_path)
    server.write(instance())
    server.start()
    yield server
    server.stop()


@pytest.fixture
def watch(tmp_path, imds):
    started = []

    def _start(**env) -> Watcher:
        w = Watcher(tmp_path, imds, **env)
        started.append(w)
        return w

    yield _start
    for w in started:
        w.close()


def notice(seconds_ahead: int = 120) -> dict:
    return {"action": "terminate", "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + seconds_ahead))}


# ----------------------------------------------------------------------------- the IMDS stand-in
def test_imds_standin_refuses_imdsv1_and_answers_imdsv2_as_aws_does(imds):
    # IMDSv1 (no token) is refused, as HttpTokens=required makes AWS do
    status, _, _ = imds.request("GET", "/latest/meta-data/instance-id")
    assert status == 401
    assert imds.request("GET", "/latest/meta-data/instance-id", {"X-aws-ec2-metadata-token": "made-up"})[0] == 401
    # a token needs its TTL header, 1..21600 s; the answer echoes it
    assert imds.request("PUT", "/latest/api/token")[0] == 400
    assert imds.request("PUT", "/latest/api/token", {"X-aws-ec2-metadata-token-ttl-seconds": "21601"})[0] == 400
    assert imds.request("PUT", "/latest/api/token", {"X-aws-ec2-metadata-token-ttl-seconds": "60",
                                                     "X-Forwarded-For": "10.0.0.1"})[0] == 403
    status, token, headers = imds.request("PUT", "/latest/api/token", {"X-aws-ec2-metadata-token-ttl-seconds": "60"})
    assert status == 200 and len(token) > 40 and headers["X-aws-ec2-metadata-token-ttl-seconds"] == "60"
    t = {"X-aws-ec2-metadata-token": token}
    assert imds.request("GET", "/latest/meta-data/instance-id", t)[:2] == (200, "i-0123456789abcdef0")
    assert imds.request("GET", "/latest/meta-data/instance-life-cycle", t)[:2] == (200, "spot")
    assert imds.request("GET", "/latest/meta-data/placement/region", t)[:2] == (200, "eu-west-1")
    assert imds.request("GET", "/latest/meta-data/placement/availability-zone", t)[:2] == (200, "eu-west-1b")
    assert imds.request("GET", "/latest/meta-data/instance-type", t)[:2] == (200, "t3.medium")
    assert imds.request("GET", "/latest/meta-data/placement/", t)[:2] == (200, "availability-zone\nregion")
    # no notice yet: 404, as on EC2
    assert imds.request("GET", "/latest/meta-data/spot/instance-action", t)[0] == 404
    assert imds.request("GET", "/latest/meta-data/events/recommendations/rebalance", t)[0] == 404
    imds.write(instance(**{"spot/instance-action": {"action": "terminate", "time": "2026-12-01T14:00:00Z"},
                           "events/recommendations/rebalance": {"noticeTime": "2026-12-01T13:58:00Z"}}))
    # the file is read on every request: the notice shows at once, in IMDS's JSON
    assert imds.request("GET", "/latest/meta-data/spot/instance-action", t)[:2] == (
        200, '{"action": "terminate", "time": "2026-12-01T14:00:00Z"}')
    assert imds.request("GET", "/latest/meta-data/events/recommendations/rebalance", t)[:2] == (
        200, '{"noticeTime": "2026-12-01T13:58:00Z"}')
    assert imds.request("GET", "/latest/meta-data/spot/instance-action")[0] == 401  # still no IMDSv1


def test_imds_standin_without_an_instance_answers_404(tmp_path):
    server = Imds(tmp_path).start()  # no state file: no instance launched on this host
    try:
        t = {"X-aws-ec2-metadata-token": server.token()}
        assert server.request("GET", "/latest/meta-data/instance-life-cycle", t)[0] == 404
        assert server.request("GET", "/latest/meta-data/instance-id", t)[0] == 404
    finally:
        server.stop()


def test_reclaimed_instance_powers_its_host_off_once(tmp_path):
    host = subprocess.Popen(["sleep", "60"])  # stands for the host's systemd-nspawn
    pid_file = tmp_path / "pid"
    pid_file.write_text(str(host.pid))
    server = Imds(tmp_path, str(pid_file))
    server.write(instance())
    server.start()
    try:
        time.sleep(1)
        assert host.poll() is None
        server.write(dict(instance(), state="terminated", **{"state-reason": "Server.SpotInstanceTermination"}))
        assert host.wait(5) == -signal.SIGTERM
    finally:
        server.stop()
        if host.poll() is None:
            host.kill()


def test_a_host_brought_back_is_not_powered_off_by_its_predecessors_state(tmp_path):
    host = subprocess.Popen(["sleep", "60"])
    pid_file = tmp_path / "pid"
    pid_file.write_text(str(host.pid))
    server = Imds(tmp_path, str(pid_file))
    server.write(dict(instance(), state="terminated"))  # terminated before this server started
    server.start()
    try:
        time.sleep(1.5)
        assert host.poll() is None
    finally:
        server.stop()
        host.kill()
        host.wait()


# ----------------------------------------------------------------------------- the watcher
def test_notice_stops_bacalhau_within_10_s_of_the_notice(imds, watch):
    w = watch()
    w.wait_line("instance i-0123456789abcdef0, instance-life-cycle spot")
    time.sleep(1.5)
    assert w.stop_asked() == []
    action = notice()
    t_notice = time.time()
    imds.write(instance(**{"spot/instance-action": action}))
    w.wait_line("stopped bacalhau.service in")
    [asked], [stopped] = w.stop_asked(), w.stops()
    assert asked - t_notice < 10 and stopped - t_notice < 10, (asked - t_notice, stopped - t_notice)
    assert f"interruption notice: action=terminate time={action['time']} " in w.wait_line("interruption notice:")
    assert "stopping bacalhau.service: spot interruption notice (action=terminate time=" in "\n".join(w.lines())
    time.sleep(2.5)  # later polls see the notice again and Bacalhau already stopped: nothing more
    assert len(w.stop_asked()) == 1
    assert [line for line in w.lines() if line.startswith("interruption notice:")] == [
        f"interruption notice: action=terminate time={action['time']} ({json.dumps(action)})"]


def test_notice_stops_bacalhau_again_if_something_starts_it(imds, watch):
    w = watch()
    imds.write(instance(**{"spot/instance-action": notice()}))
    w.wait_line("stopped bacalhau.service in")
    (w.fake / "active").write_text("")  # e.g. a converge started it during the two minutes
    deadline = time.time() + 10
    while len(w.stop_asked()) < 2 and time.time() < deadline:
        time.sleep(0.1)
    assert len(w.stop_asked()) == 2


def test_404_is_no_notice_and_nothing_is_stopped(imds, watch):
    w = watch()
    w.wait_line("started: polling")
    time.sleep(4)  # about four polls, every one answered 404
    assert w.calls() == []  # not even asked whether Bacalhau runs
    assert not [line for line in w.lines() if "IMDS error" in line or "notice" in line.split(":")[0]]


def test_keeps_polling_across_imds_errors_and_fires_once_imds_answers(tmp_path, imds, watch):
    w = watch()
    w.wait_line("started: polling")
    # 500s: an error, not a notice
    imds.write(dict(instance(), faults={"status": 500}))
    w.wait_line("IMDS error: GET /latest/meta-data/spot/instance-action: HTTP 500; still polling every 1s")
    w.wait_line("IMDS error: GET /latest/meta-data/events/recommendations/rebalance: HTTP 500; still polling every 1s")
    time.sleep(2.5)  # more failed polls: the same error is not logged again
    assert len([x for x in w.lines() if x.startswith("IMDS error: GET /latest/meta-data/spot/instance-action: HTTP 500")]) == 1
    # answers later than the watcher waits
    imds.write(dict(instance(), faults={"delay_seconds": 3}))
    w.wait_line("timed out")
    # nothing listens at all
    imds.stop()
    w.wait_line("no answer (connection refused)")
    assert w.stop_asked() == []
    # IMDS back (a new process: the old token is unknown to it, so the watcher must take a new one)
    imds.write(instance(**{"spot/instance-action": notice()}))
    t_notice = time.time()
    imds.start()
    w.wait_line("stopped bacalhau.service in")
    assert w.stop_asked()[0] - t_notice < 10
    assert "IMDS answers again (/latest/meta-data/spot/instance-action, after " in "\n".join(w.lines())
    assert w.p.poll() is None


def test_expired_token_is_replaced(imds, watch):
    w = watch()
    w.wait_line("started: polling")
    time.sleep(1.5)
    imds.stop()  # a restarted IMDS knows none of the old tokens: the next GET gets 401
    imds.start()
    time.sleep(2.5)
    assert not [line for line in w.lines() if "IMDS error: GET" in line and "401" in line], w.lines()
    imds.write(instance(**{"spot/instance-action": notice()}))
    w.wait_line("stopped bacalhau.service in")


def test_rebalance_recommendation_is_logged_and_stops_nothing(imds, watch):
    w = watch()
    w.wait_line("started: polling")
    imds.write(instance(**{"events/recommendations/rebalance": {"noticeTime": "2026-12-01T13:58:00Z"}}))
    line = w.wait_line("rebalance recommendation:")
    assert line == 'rebalance recommendation: noticeTime=2026-12-01T13:58:00Z ({"noticeTime": "2026-12-01T13:58:00Z"})'
    time.sleep(2.5)
    assert w.calls() == []
    assert len([x for x in w.lines() if x.startswith("rebalance recommendation:")]) == 1


def test_a_stop_that_takes_too_long_is_logged_and_left_to_systemd(imds, watch, tmp_path):
    w = watch(BACALHAU_SPOT_STOP_TIMEOUT="1")
    (w.fake / "stop-seconds").write_text("5")
    imds.write(instance(**{"spot/instance-action": notice()}))
    line = w.wait_line("did not stop within")
    assert line == "bacalhau.service did not stop within 1s (systemctl stop: exit 124); systemd finishes the stop"
