"""``python -m tests.bench.cluster``: time ``playbooks/create.yml`` from nothing to a working cluster.

For each N of ``--hosts`` (default 3,9), as the sandbox (tests/sandbox) does it:

1. the AWS emulator on loopback, N test hosts and the stand-in release (tests/roles/env.sh), the
   emulator's address pool set to the hosts' addresses;
2. a cluster of its own (``--cluster``, default ``bench-time``: its inventory file and token
   directory are per cluster name, so it never meets the sandbox's): 1 orchestrator and N-1
   compute nodes over 2 regions;
3. the real ``playbooks/create.yml`` once, with the play_timer callback
   (tests/bench/callback_plugins) writing every play's, task's and host's times; meanwhile the
   machine's CPU (/proc/stat) and that of the controller's, the hosts', the emulator's and the
   release server's process trees are sampled, and the emulator logs every API call;
4. ``playbooks/destroy.yml``, then everything down (always), the inventory file and the token
   directory removed.

Meanwhile iptables counts, per test host, the bytes this machine sends it over SSH (everything
Ansible sends: modules, and in ``--release-source controller`` the binary) and the bytes the
stand-in release server sends it (what the node downloads itself); tests/roles/traffic.py. The
report's release table has, per node: those bytes, the controller's CPU-seconds (ansible-playbook's
tree and its SSH connection masters, sampled), and the configuration phase's time.
``--release-source`` (node, the roles' default, or controller) and ``--release-size`` (real: the
stand-in archive has the size of Bacalhau's; small: tens of kB) choose what is measured.

The report (phases, shares, CPU, API calls, growth from the smallest N to the largest, the tasks
that grew) goes to build/bench/cluster_time.md and .json. A benchmark, not a test: nothing in
it fails on a time.

Test-host environment: BACALHAU_SANDBOX_STATE (default /tmp/bacalhau-bench-cluster; the test
hosts' state and the roles' test dir go under it, as in the sandbox), BACALHAU_TESTHOSTS_SUBNET
and BACALHAU_STANDIN_PORT, as for the sandbox; give other values than a sandbox running beside it.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[3]
CALLBACKS = REPO / "tests" / "bench" / "callback_plugins"

# The sandbox module reads its paths from the environment when it is imported: set ours first.
os.environ.setdefault("BACALHAU_SANDBOX_STATE", "/tmp/bacalhau-bench-cluster")

from tests.bench.cluster import phases, report  # noqa: E402
from tests.roles.traffic import Traffic  # noqa: E402


def _sandbox():
    import tests.sandbox.__main__ as sandbox  # after BACALHAU_SANDBOX_STATE is set

    return sandbox


def say(text: str) -> None:
    print(f"\n== {text}", flush=True)


def run_logged(cmd: list[str], env: dict[str, str], log: Path, timeout: int = 3600) -> tuple[int, float, float]:
    """Run ``cmd`` with its output in ``log``; (rc, start, end) on the monotonic clock."""
    print("$ " + " ".join(cmd) + f"   > {log}", flush=True)
    with open(log, "w", encoding="utf-8") as out:
        start = time.monotonic()
        proc = subprocess.run(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, text=True, timeout=timeout)
        end = time.monotonic()
    return proc.returncode, start, end


# --------------------------------------------------------------------------- CPU sampling
class CpuSampler(threading.Thread):
    """Every ``interval`` s: /proc/stat's busy and total jiffies, and the CPU of process trees."""

    def __init__(self, roots: dict[str, Any], interval: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.roots = roots  # name -> callable returning the root pids now
        self.interval = interval
        self.samples: list[dict[str, Any]] = []
        self.tick = float(os.sysconf("SC_CLK_TCK"))
        self._halt = threading.Event()

    def sample(self) -> dict[str, Any]:
        t = time.monotonic()
        busy, total = phases.proc_stat_times(Path("/proc/stat").read_text())
        stats: dict[int, tuple[int, float]] = {}
        ssh: list[int] = []
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                with open(f"/proc/{entry.name}/stat", encoding="utf-8", errors="replace") as f:
                    text = f.read()
                pid, ppid, ticks = phases.parse_pid_stat(text)
            except (OSError, ValueError, IndexError):
                continue
            stats[pid] = (ppid, ticks)
            if text.startswith(f"{pid} (ssh) "):
                ssh.append(pid)
        s = {"t": t, "busy": busy / self.tick, "total": total / self.tick}
        for name, roots in self.roots.items():
            s[name] = phases.tree_cpu(stats, roots(ssh)) / self.tick
        return s

    def run(self) -> None:
        while not self._halt.is_set():
            self.samples.append(self.sample())
            self._halt.wait(self.interval)

    def stop(self) -> list[dict[str, Any]]:
        self._halt.set()
        self.join(5)
        self.samples.append(self.sample())
        return self._monotone(self.samples)

    @staticmethod
    def _monotone(samples: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """A tree's counter drops when a member with reaped children exits before its parent reaps
        it; keep each counter from going down (the loss is at most one sample's worth)."""
        keys = [k for k in samples[0] if k != "t"] if samples else []
        best = {k: 0.0 for k in keys}
        for s in samples:
            for k in keys:
                best[k] = max(best[k], s[k])
                s[k] = best[k]
        return samples


def _pids_from(paths: list[Path]) -> list[int]:
    out = []
    for p in paths:
        try:
            out.append(int(p.read_text().strip()))
        except (OSError, ValueError):
            pass
    return out


_SSH_OURS: dict[int, bool] = {}


def _ssh_to(pids: list[int], prefix: str) -> list[int]:
    """The ssh processes among ``pids`` that talk to an address starting with ``prefix``: by their
    command line (Ansible passes the host as a bare argument), or, for a ControlPersist master (it
    renames itself "ssh: <control path> [mux]" and leaves for init), by its TCP socket's peer."""
    out, peers = [], None
    for pid in pids:
        if pid not in _SSH_OURS:
            try:
                args = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
                ours = any(a.startswith(prefix) or a.split("@", 1)[-1].startswith(prefix) for a in args)
                if not ours and any("[mux]" in a for a in args):
                    peers = peers if peers is not None else _tcp_peers()
                    inodes = {os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")}
                    ours = any(peers.get(i, "").startswith(prefix) for i in inodes)
                _SSH_OURS[pid] = ours
            except OSError:
                continue
        if _SSH_OURS[pid]:
            out.append(pid)
    return out


def _tcp_peers() -> dict[str, str]:
    """'socket:[inode]' -> the peer's IPv4 address, from /proc/net/tcp."""
    peers = {}
    try:
        lines = Path("/proc/net/tcp").read_text().splitlines()[1:]
    except OSError:
        return peers
    for line in lines:
        f = line.split()
        if len(f) > 9:
            peers[f"socket:[{f[9]}]"] = phases.ipv4_from_hex(f[2].split(":")[0])
    return peers


# --------------------------------------------------------------------------- one N
def cluster_file(sandbox, hosts: int, cluster: str) -> Path:
    """The sandbox's cluster description (whatever it sets today), under our own cluster name."""
    saved = sandbox.CLUSTER
    sandbox.CLUSTER = cluster
    try:
        path = sandbox.write_cluster_vars(hosts)
    finally:
        sandbox.CLUSTER = saved
    text = path.read_text()
    body = json.loads(text[text.index("{"):])
    body["cluster_name"] = cluster
    ours = sandbox.STATE / f"{cluster}.cluster.yml"
    ours.write_text("# Written by tests/bench/cluster: the benchmark's cluster.\n" + json.dumps(body, indent=2) + "\n")
    path.unlink()
    return ours


def measure(hosts: int, args: argparse.Namespace, logs: Path, tag: str) -> dict[str, Any]:
    sandbox = _sandbox()
    from tests.emulator import Emulator

    state = sandbox.STATE
    state.mkdir(parents=True, exist_ok=True)
    token_dir = Path.home() / ".config" / "bacalhau.aws_spot" / args.cluster  # its inventory, token, key and CA
    for leftover in (token_dir,):
        if leftover.exists():
            raise SystemExit(f"bench-cluster: {leftover} exists (another run of cluster {args.cluster}?); "
                             "remove it or pick another --cluster")
    result: dict[str, Any] = {"hosts": hosts, "release_source": args.release_source, "release_size": args.release_size}
    emulator = None
    traffic = None
    tools_env = sandbox.env_for_tools()
    tools_env["BACALHAU_STANDIN_RELEASE_SIZE"] = args.release_size
    try:
        say(f"N={hosts}: the AWS emulator, {hosts} test hosts and the stand-in release")
        emulator = Emulator.start()
        for attempt in (1, 2):  # on a loaded machine a host's sshd can miss env.sh's 90 s: once more, from nothing
            rc, t0, t1 = run_logged([str(REPO / "tests/roles/env.sh"), "up", str(hosts)], tools_env,
                                    logs / f"{tag}-env-up-{attempt}.log")
            if rc == 0:
                break
            result["boot_failures"] = attempt
            subprocess.run([str(REPO / "tests/roles/env.sh"), "down"], cwd=REPO, env=tools_env, check=False,
                           stdout=subprocess.DEVNULL)
        else:
            raise SystemExit(f"bench-cluster: tests/roles/env.sh up {hosts} failed twice; see {logs}/{tag}-env-up-*.log")
        result["boot_seconds"] = round(t1 - t0, 3)
        addresses = sandbox.host_addresses()
        if len(addresses) != hosts:
            raise SystemExit(f"bench-cluster: {len(addresses)} test hosts up, wanted {hosts}")
        emulator.address_pool(addresses)
        if args.latency_ms:
            emulator.latency(args.latency_ms)
        cluster_vars = cluster_file(sandbox, hosts, args.cluster)
        release_vars = sandbox.ROLES_DIR / "vars.yml"
        env = sandbox.playbook_env(emulator)
        events_file = logs / f"{tag}-events.jsonl"
        events_file.unlink(missing_ok=True)
        env.update({"ANSIBLE_CALLBACK_PLUGINS": str(CALLBACKS), "ANSIBLE_CALLBACKS_ENABLED": "play_timer",
                    "BACALHAU_PLAY_TIMER_FILE": str(events_file), "ANSIBLE_FORCE_COLOR": "0"})
        book = [str(Path(sys.executable).parent / "ansible-playbook")]
        extra = ["-e", f"@{cluster_vars}", "-e", f"@{release_vars}",
                 "-e", f"bacalhau_node_release_source={args.release_source}"]
        if args.release_tree != "good":  # e.g. flat, for roles that know only the flat layout (before)
            url = re.search(r"^bacalhau_node_release_url: (\S+)$", release_vars.read_text(), re.M).group(1)
            extra += ["-e", f"bacalhau_node_release_url={url.rsplit('/', 1)[0]}/{args.release_tree}"]
        archives = sorted((sandbox.ROLES_DIR / "release" / "flat").glob("bacalhau_*_linux_*.tar.gz"))
        result["archive_bytes"] = {a.name.rsplit("_", 1)[-1].split(".")[0]: a.stat().st_size for a in archives}
        traffic = Traffic({f"node{i + 1}": ip for i, ip in enumerate(addresses)}, int(tools_env.get("BACALHAU_STANDIN_PORT", "18799")),
                          f"bench-cluster-{os.getpid()}")

        say(f"N={hosts}: ansible-playbook playbooks/create.yml, timed")
        emulator.reset_calls()
        calls_zero = time.monotonic()  # the emulator's call clock starts (within a ms) here
        controller: dict[str, int] = {}
        # ansible-playbook's tree, and the SSH connection masters it leaves behind (ControlPersist:
        # they leave its tree), known by our test hosts' subnet on their command line
        ours = f"10.213.{sandbox.SUBNET}."
        sampler = CpuSampler({
            "controller": lambda ssh: ([controller["pid"]] if "pid" in controller else []) + _ssh_to(ssh, ours),
            "hosts": lambda ssh: _pids_from(sorted((sandbox.HOSTS_STATE / "hosts").glob("testhost*/pid"))),
            "emulator": lambda ssh: [emulator.process.pid],
            "standin": lambda ssh: _pids_from([sandbox.ROLES_DIR / "http.pid"]),
        }, interval=args.sample_interval)
        sampler.start()
        time.sleep(2 * args.sample_interval)  # a sample or two before the start
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        traffic.open()
        log = logs / f"{tag}-create.log"
        cmd = book + ["playbooks/create.yml", *extra]
        print("$ " + " ".join(cmd) + f"   > {log}", flush=True)
        with open(log, "w", encoding="utf-8") as out:
            start = time.monotonic()
            proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, text=True)
            controller["pid"] = proc.pid
            rc = proc.wait(timeout=3600)
            end = time.monotonic()
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        result["traffic"] = traffic.read()
        traffic.close()
        time.sleep(args.sample_interval)
        samples = sampler.stop()
        calls = emulator.calls()
        events = [json.loads(line) for line in events_file.read_text().splitlines() if line.strip()]
        result.update(phases.summarize_run(events, start, end, samples=samples, ncpu=os.cpu_count() or 1,
                                           calls_log=calls.get("log", []), calls_offset=calls_zero))
        result["rc"] = rc
        result["controller_rusage_s"] = round((after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime), 2)
        result["log"] = str(log.relative_to(REPO)) if log.is_relative_to(REPO) else str(log)
        result["recap"] = sandbox.recap(log.read_text())
        (logs / f"{tag}-samples.json").write_text(json.dumps(samples) + "\n")
        (logs / f"{tag}-calls.json").write_text(json.dumps(calls) + "\n")
        print(f"create.yml: rc {rc}, {end - start:.1f} s")

        say(f"N={hosts}: ansible-playbook playbooks/destroy.yml")
        env.pop("BACALHAU_PLAY_TIMER_FILE")  # destroy.yml is not measured
        drc, d0, d1 = run_logged(book + ["playbooks/destroy.yml", "-e", f"@{cluster_vars}"], env, logs / f"{tag}-destroy.log")
        result["destroy_seconds"] = round(d1 - d0, 3)
        result["destroy_rc"] = drc
        return result
    finally:
        if traffic is not None:
            traffic.close()
        say(f"N={hosts}: down: test hosts, release server, emulator")
        subprocess.run([str(REPO / "tests/roles/env.sh"), "down"], cwd=REPO, env=tools_env, check=False,
                       stdout=subprocess.DEVNULL)
        if emulator is not None:
            emulator.stop()
        shutil.rmtree(token_dir, ignore_errors=True)
        shutil.rmtree(state, ignore_errors=True)


# --------------------------------------------------------------------------- the run
def _git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=REPO, text=True, capture_output=True, check=False).stdout.strip()


def meta(latency_ms: float, commit: str | None = None) -> dict[str, Any]:
    cpu = ""
    try:
        cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name")), "")
    except OSError:
        pass
    ansible = subprocess.run([str(Path(sys.executable).parent / "ansible"), "--version"], text=True,
                             capture_output=True, check=False).stdout.splitlines()[:1]
    forks = re.search(r"^forks\s*=\s*(\d+)", (REPO / "ansible.cfg").read_text(), re.M)
    return {
        # run from a `git archive` export (a commit, not a shared work tree in flux): --commit names it
        "commit": commit or _git("rev-parse", "--short=12", "HEAD") or "unknown",
        "dirty": False if commit else bool(_git("status", "--porcelain", "--", "playbooks", "roles", "plugins")),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{os.cpu_count()} CPUs ({cpu or platform.machine()}), "
                   f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB",
        "ansible": ansible[0] if ansible else "ansible ?",
        "forks": int(forks.group(1)) if forks else None,
        "latency_ms": latency_ms,
        "loadavg": " ".join(Path("/proc/loadavg").read_text().split()[:3]),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.cluster", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hosts", default="3,9", help="comma-separated test-host counts, each >= 3 (default 3,9)")
    parser.add_argument("--cluster", default="bench-time", help="the cluster's name (default bench-time)")
    parser.add_argument("--latency-ms", type=float, default=0.0,
                        help="latency the emulator adds to every API call (default 0, as in the sandbox)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="runs per N (each from nothing); the report shows the median run and every run's "
                             "total (default 1)")
    parser.add_argument("--sample-interval", type=float, default=0.5, help="CPU sampling interval, s (default 0.5)")
    parser.add_argument("--commit", help="the commit being measured, when this tree is an export (git archive), "
                                         "not a git checkout (default: git rev-parse HEAD)")
    parser.add_argument("--release-source", choices=("node", "controller"), default="node",
                        help="bacalhau_node_release_source for the run: node (each node fetches the release, the "
                             "roles' default) or controller (the controller downloads it and copies the binary)")
    parser.add_argument("--release-size", choices=("real", "small"), default="real",
                        help="the stand-in release: real (each archive the size of Bacalhau's) or small (tens of kB)")
    parser.add_argument("--release-tree", choices=("good", "flat"), default="good",
                        help="the release server's tree: good (Bacalhau's publish layout, <url>/stable/<tag>/) or "
                             "flat (<url>/<file> only: for roles from before both layouts were tried)")
    parser.add_argument("--out", default=str(REPO / "build" / "bench"), help="report directory (default build/bench)")
    args = parser.parse_args(argv)
    try:
        counts = [int(x) for x in args.hosts.split(",") if x.strip()]
    except ValueError:
        parser.error(f"--hosts: not a list of numbers: {args.hosts}")
    if not counts or min(counts) < 3:
        parser.error("--hosts: each count must be at least 3 (an orchestrator and a compute node in each of 2 regions)")
    if os.geteuid() != 0:
        raise SystemExit("bench-cluster: run as root (the test hosts are systemd-nspawn machines)")
    out = Path(args.out)
    logs = out / "cluster_logs"
    logs.mkdir(parents=True, exist_ok=True)
    data: dict[str, Any] = {"meta": meta(args.latency_ms, args.commit), "runs": {}}
    failed = []
    for n in counts:
        tries = []
        for i in range(args.repeat):
            run = measure(n, args, logs, f"n{n}-r{i + 1}" if args.repeat > 1 else f"n{n}")
            tries.append(run)
            (logs / f"n{n}-r{i + 1}-run.json").write_text(json.dumps(run, indent=1) + "\n")  # every run, in full
            if run.get("rc") != 0 or run.get("destroy_rc") != 0:
                failed.append(n)
                break
        data["runs"][str(n)] = report.pick(tries)
        report.write(data, out)  # what we have so far, should a later N fail
    path = report.write(data, out)
    print(path.read_text(encoding="utf-8"))
    print(f"written: {path} and {out / 'cluster_time.json'}; logs in {logs}")
    if failed:
        print(f"bench-cluster: create.yml or destroy.yml failed for N={failed}: see the logs", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
