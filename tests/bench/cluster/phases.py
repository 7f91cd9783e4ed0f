"""From the timer's events (tests/bench/callback_plugins/play_timer.py) to phases and tasks.

Everything here is pure: events, CPU samples and the emulator's call log in, numbers out, so
tests/unit/test_cluster_time.py can check it without hosts. Times are on the system-wide
monotonic clock (the timer, the harness and the emulator all read it).

A play's time runs from its start to the next play's start (the last one to the playbook's
stats); a task's from its start to the next task's start in the same play, or the play's end.
With the linear strategy that is when every host is done with it: the time the run really
waited for the task, whatever ran in parallel inside it.
"""
from __future__ import annotations

import re
from typing import Any, Callable, Iterable

# Phases, in order, and the plays of playbooks/create.yml (and configure.yml, which it imports)
# that make them, matched by the start of the play's name. Any other play goes to "other", so a
# renamed or new play shows up instead of vanishing.
PHASES: list[tuple[str, str, tuple[str, ...]]] = [
    ("startup", "Ansible's start-up (process start to the first play)", ()),
    ("aws", "AWS half: credentials, checks, spot_cluster", ("Create the cluster's AWS resources",)),
    ("inventory", "the cluster's aws_ec2 inventory", ("Find the cluster's nodes by their tags",)),
    ("ssh", "wait for SSH", ("Wait until every node answers over SSH",)),
    ("configuration", "configuration: orchestrator, then compute nodes",
     ("Install and start the orchestrator", "Install and start the compute nodes")),
    ("checks", "checks: CONNECTED, smoke job, the table",
     ("Check that every compute node is connected", "Prove the cluster runs jobs",
      "Ask every node whether Bacalhau is alive", "Show the cluster")),
    ("other", "plays no phase knows (renamed or new)", ()),
    ("exit", "after the last play (stats, process exit)", ()),
]
PHASE_KEYS = [key for key, _, _ in PHASES]
SMOKE_PLAY = "Prove the cluster runs jobs"


def phase_of_play(name: str) -> str:
    for key, _, prefixes in PHASES:
        if any(name.startswith(p) for p in prefixes):
            return key
    return "other"


def rel_path(path: str) -> str:
    """A task's file, from the repository (or collection) root: ``roles/x/tasks/y.yml``."""
    path = re.sub(r":\d+$", "", path or "")
    m = re.search(r"(?:^|/)((?:roles|playbooks|tests)/.*)$", path)
    return m.group(1) if m else path.rsplit("/", 1)[-1]


# Parts of a phase, by task: (phase, label, test). The first that matches wins; tasks that match
# none are the phase's "rest".
def _file_is(suffix: str) -> Callable[[dict[str, Any]], bool]:
    return lambda t: t["file"].endswith(suffix)


SUBPHASES: list[tuple[str, str, Callable[[dict[str, Any]], bool]]] = [
    ("aws", "credential check (tasks/credentials.yml)", _file_is("playbooks/tasks/credentials.yml")),
    ("aws", "spot_cluster calls", lambda t: t["action"].endswith("spot_cluster")),
    ("aws", "other tasks (checks, facts, security group rules)", lambda t: True),
    ("configuration", "gathering facts", lambda t: t["action"] in ("gather_facts", "ansible.builtin.gather_facts",
                                                                  "setup", "ansible.builtin.setup")),
    ("configuration", "controller: download + verify (bacalhau_node/tasks/download.yml)",
     _file_is("roles/bacalhau_node/tasks/download.yml")),
    ("configuration", "Docker (bacalhau_compute/tasks/docker.yml)", _file_is("roles/bacalhau_compute/tasks/docker.yml")),
    ("configuration", "start + wait for the API (bacalhau_node/tasks/service.yml)",
     _file_is("roles/bacalhau_node/tasks/service.yml")),
    ("configuration", "other per-host work (preflight, user, files, config, token)", lambda t: True),
    ("checks", "CONNECTED check", lambda t: t["play"].startswith("Check that every compute node is connected")),
    ("checks", "smoke job", lambda t: t["play"].startswith(SMOKE_PLAY)),
    ("checks", "the table (health per node)",
     lambda t: t["play"].startswith(("Ask every node whether Bacalhau is alive", "Show the cluster"))),
    ("checks", "other checks", lambda t: True),
]


def one_playbook(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The events up to the first playbook's stats (a second run appended to the file is not this one)."""
    for i, e in enumerate(events):
        if e["event"] == "stats":
            return events[:i + 1]
    return events


def plays(events: list[dict[str, Any]], end: float | None = None) -> list[dict[str, Any]]:
    """Every play with its phase, start and end."""
    events = one_playbook(events)
    stats = next((e["t"] for e in events if e["event"] == "stats"), None)
    last = stats if stats is not None else (end if end is not None else max((e["t"] for e in events), default=0.0))
    starts = [e for e in events if e["event"] == "play_start"]
    out = []
    for i, e in enumerate(starts):
        stop = starts[i + 1]["t"] if i + 1 < len(starts) else last
        out.append({"name": e["name"], "phase": phase_of_play(e["name"]), "start": e["t"], "end": stop,
                    "seconds": round(stop - e["t"], 3)})
    return out


def tasks(events: list[dict[str, Any]], end: float | None = None) -> list[dict[str, Any]]:
    """Every task that started, in order, with its play, phase, part, time, hosts and retries."""
    events = one_playbook(events)
    play_list = plays(events, end)
    out: list[dict[str, Any]] = []
    by_uuid: dict[str, list[dict[str, Any]]] = {}
    for e in events:
        if e["event"] != "task_start":
            continue
        play = next((p for p in reversed(play_list) if p["start"] <= e["t"]), None)
        task = {"name": e["name"], "action": e.get("action", ""), "file": rel_path(e.get("path", "")),
                "role": e.get("role", ""), "play": play["name"] if play else "", "phase": play["phase"] if play else "other",
                "start": e["t"], "end": None, "hosts": set(), "results": 0, "retries": 0, "items": 0,
                "loop": bool(e.get("loop")), "run_once": bool(e.get("run_once")),
                "delegate_to": e.get("delegate_to")}
        task["part"] = part_of(task)
        out.append(task)
        by_uuid.setdefault(e["uuid"], []).append(task)
    for e in events:
        if e["event"] not in ("result", "host_start"):
            continue
        candidates = [t for t in by_uuid.get(e.get("uuid", ""), []) if t["start"] <= e["t"]]
        if not candidates:
            continue
        task = candidates[-1]
        if e["event"] == "host_start":
            task["hosts"].add(e["host"])
        elif e["status"] == "retry":
            task["retries"] += 1
        elif e.get("item"):
            task["items"] += 1
        else:
            task["results"] += 1
    for i, task in enumerate(out):
        play = next((p for p in play_list if p["name"] == task["play"] and p["start"] <= task["start"] <= p["end"]), None)
        following = out[i + 1]["start"] if i + 1 < len(out) else None
        stop = play["end"] if play else task["start"]
        if following is not None and (play is None or following <= play["end"]):
            stop = following
        task["end"] = stop
        task["seconds"] = round(stop - task["start"], 3)
        task["hosts"] = sorted(task["hosts"])
    return out


def part_of(task: dict[str, Any]) -> str:
    for phase, label, test in SUBPHASES:
        if phase == task["phase"] and test(task):
            return label
    return ""


def phase_windows(events: list[dict[str, Any]], proc_start: float, proc_end: float) -> dict[str, list[tuple[float, float]]]:
    """Each phase's time windows (a phase can be several plays, not always next to one another)."""
    play_list = plays(events, proc_end)
    windows: dict[str, list[tuple[float, float]]] = {k: [] for k in PHASE_KEYS}
    first = play_list[0]["start"] if play_list else proc_end
    windows["startup"].append((proc_start, first))
    for p in play_list:
        windows[p["phase"]].append((p["start"], p["end"]))
    last = play_list[-1]["end"] if play_list else proc_end
    windows["exit"].append((last, proc_end))
    return windows


def seconds(windows: Iterable[tuple[float, float]]) -> float:
    return round(float(sum(b - a for a, b in windows)), 3)


def phase_seconds(events: list[dict[str, Any]], proc_start: float, proc_end: float) -> dict[str, float]:
    return {k: seconds(w) for k, w in phase_windows(events, proc_start, proc_end).items()}


def part_seconds(task_list: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Seconds per part of each phase that has parts, in SUBPHASES' order."""
    out: dict[str, dict[str, float]] = {}
    for phase, label, _ in SUBPHASES:
        out.setdefault(phase, {})[label] = 0.0
    for t in task_list:
        if t["part"]:
            out[t["phase"]][t["part"]] = round(out[t["phase"]][t["part"]] + t["seconds"], 3)
    return out


def smoke_end(events: list[dict[str, Any]], proc_end: float) -> float | None:
    """When the smoke job's play ended (None: create.yml has no such play yet)."""
    for p in plays(events, proc_end):
        if p["name"].startswith(SMOKE_PLAY):
            return p["end"]
    return None


# --------------------------------------------------------------------------- CPU
def proc_stat_times(text: str) -> tuple[float, float]:
    """(busy, total) jiffies from /proc/stat's first line (iowait counts as idle)."""
    fields = [float(x) for x in text.split("\n", 1)[0].split()[1:]]
    fields += [0.0] * (8 - len(fields))
    user, nice, system, idle, iowait, irq, softirq, steal = fields[:8]
    busy = user + nice + system + irq + softirq + steal
    return busy, busy + idle + iowait


def tree_cpu(stats: dict[int, tuple[int, float]], roots: Iterable[int]) -> float:
    """CPU ticks of the process trees under ``roots``: each live member's own time and that of its
    children it has reaped (so work of short-lived processes is not lost once they exit).

    ``stats``: pid -> (ppid, utime + stime + cutime + cstime).
    """
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in stats.items():
        children.setdefault(ppid, []).append(pid)
    seen: set[int] = set()
    stack = [r for r in roots if r in stats]
    total = 0.0
    while stack:
        pid = stack.pop()
        if pid in seen:
            continue
        seen.add(pid)
        total += stats[pid][1]
        stack.extend(children.get(pid, []))
    return total


def parse_pid_stat(text: str) -> tuple[int, int, float]:
    """(pid, ppid, utime + stime + cutime + cstime) from /proc/<pid>/stat (the name may hold spaces)."""
    head, _, rest = text.rpartition(")")
    pid = int(head.split("(", 1)[0])
    fields = rest.split()
    # after the name: state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime cutime cstime
    return pid, int(fields[1]), float(fields[11]) + float(fields[12]) + float(fields[13]) + float(fields[14])


def ipv4_from_hex(word: str) -> str:
    """/proc/net/tcp's address (little-endian hex, as the kernel prints it) as dotted IPv4."""
    n = int(word, 16)
    return ".".join(str((n >> s) & 0xFF) for s in (0, 8, 16, 24))


def interpolate(samples: list[dict[str, Any]], t: float, key: str) -> float | None:
    """A counter's value at ``t``, linear between the samples around it."""
    if not samples or t < samples[0]["t"] - 1.0 or t > samples[-1]["t"] + 1.0:
        return None
    if t <= samples[0]["t"]:
        return samples[0][key]
    for a, b in zip(samples, samples[1:]):
        if a["t"] <= t <= b["t"]:
            span = b["t"] - a["t"]
            return a[key] + (b[key] - a[key]) * ((t - a["t"]) / span if span else 0.0)
    return samples[-1][key]


CPU_KEYS = ("controller", "hosts", "emulator", "standin")


def cpu_in(samples: list[dict[str, Any]], windows: Iterable[tuple[float, float]], ncpu: int) -> dict[str, Any] | None:
    """CPU used in the windows: the machine's busy share (1.0 = every CPU busy all the time), and
    CPU-seconds of the controller (ansible-playbook's tree), the test hosts, the emulator, the
    stand-in release server and everything else on the machine (other users, the kernel)."""
    windows = [w for w in windows if w[1] > w[0]]
    if not samples or not windows:
        return None
    out = {k: 0.0 for k in ("busy", "total", *CPU_KEYS)}
    for a, b in windows:
        for key in ("busy", "total", *CPU_KEYS):
            va, vb = interpolate(samples, a, key), interpolate(samples, b, key)
            if va is None or vb is None:
                return None
            out[key] += max(0.0, vb - va)
    wall = sum(b - a for a, b in windows)
    busy_seconds = out["busy"] / out["total"] * ncpu * wall if out["total"] else 0.0
    result = {"machine_busy": round(out["busy"] / out["total"], 3) if out["total"] else 0.0,
              "machine_cpu_s": round(busy_seconds, 2)}
    for key in CPU_KEYS:
        result[f"{key}_cpu_s"] = round(out[key], 2)
    result["rest_cpu_s"] = round(max(0.0, busy_seconds - sum(out[k] for k in CPU_KEYS)), 2)
    return result


# --------------------------------------------------------------------------- API calls
def calls_in(log: list[dict[str, Any]], offset: float, windows: Iterable[tuple[float, float]]) -> dict[str, Any]:
    """API calls that started in the windows (``offset``: the call log's zero on the monotonic
    clock): how many, and how many round trips deep (tests/bench/analysis.py)."""
    from tests.bench.analysis import chain_depth

    windows = list(windows)
    inside = [e for e in log if any(a <= e["start"] + offset < b for a, b in windows)]
    ops: dict[str, int] = {}
    for e in inside:
        ops[e["operation"]] = ops.get(e["operation"], 0) + 1
    return {"calls": len(inside), "depth": chain_depth(inside),
            "by_operation": dict(sorted(ops.items(), key=lambda kv: (-kv[1], kv[0])))}


# --------------------------------------------------------------------------- one run
def summarize_run(events: list[dict[str, Any]], proc_start: float, proc_end: float, *,
                  samples: list[dict[str, Any]] | None = None, ncpu: int = 2,
                  calls_log: list[dict[str, Any]] | None = None, calls_offset: float | None = None) -> dict[str, Any]:
    """One create.yml run: its phases (seconds, share, CPU, API calls), parts and tasks."""
    windows = phase_windows(events, proc_start, proc_end)
    total = round(proc_end - proc_start, 3)
    task_list = tasks(events, proc_end)
    phases = {}
    for key, label, _ in PHASES:
        secs = seconds(windows[key])
        entry: dict[str, Any] = {"label": label, "seconds": secs, "share": round(secs / total, 4) if total else 0.0,
                                 "plays": [p["name"] for p in plays(events, proc_end) if p["phase"] == key]}
        if samples:
            entry["cpu"] = cpu_in(samples, windows[key], ncpu)
        if calls_log is not None and calls_offset is not None:
            entry["api"] = calls_in(calls_log, calls_offset, windows[key])
        phases[key] = entry
    smoke = smoke_end(events, proc_end)
    unknown = [p["name"] for p in plays(events, proc_end) if p["phase"] == "other"]
    return {
        "total": total,
        "to_smoke_end": round(smoke - proc_start, 3) if smoke is not None else None,
        "smoke_play": smoke is not None,
        "unknown_plays": unknown,
        "phases": phases,
        "parts": part_seconds(task_list),
        "plays": [{k: p[k] for k in ("name", "phase", "seconds")} for p in plays(events, proc_end)],
        "tasks": [{k: t[k] for k in ("play", "phase", "part", "file", "name", "action", "seconds", "hosts",
                                     "results", "items", "retries", "loop", "run_once", "delegate_to")}
                  for t in task_list],
        "cpu_total": cpu_in(samples, [(proc_start, proc_end)], ncpu) if samples else None,
    }
