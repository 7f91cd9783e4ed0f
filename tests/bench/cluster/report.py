"""The cluster-time report: per run the phases, then how each grows from the smallest N to the largest."""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from tests.bench.cluster.phases import PHASES, SUBPHASES

# What bounds each phase, as far as the code says; the measured figures next to it say how much.
BOUNDS = {
    "startup": "Python imports and parsing every inventory source (inventory/*.yml, other clusters' "
               "aws_ec2 files too); flat in N",
    "aws": "API round trips one after the other (spot_cluster runs the regions in parallel) times the "
           "API's latency, plus the controller's CPU for botocore; flat in N",
    "inventory": "the aws_ec2 inventory's DescribeInstances per region (refresh_inventory); flat in N",
    "ssh": "on AWS: the instances' boot time, flat in N; here the hosts are already up, so one SSH "
           "connection + Python per host, in parallel (forks=20)",
    "configuration": "one SSH round trip + module run per task per host, hosts in parallel (forks=20 >= N); "
                     "the 2 CPUs shared by the controller and the N hosts once N grows",
    "checks": "polling: retries every 2 s until the orchestrator lists every node (and, with the smoke job, "
              "its executions); the table asks each node in turn (a loop with delegate_to)",
    "other": "-",
    "exit": "-",
}


def _ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or a <= 0:
        return "-"
    return f"{b / a:.2f}"


def _s(x: float | None) -> str:
    return "-" if x is None else f"{x:.1f}"


def pick(tries: list[dict[str, Any]]) -> dict[str, Any]:
    """Of several runs of one N, the median by total (the lower middle of an even count), with every
    run's total and phases alongside. A failed run is the one shown: it is what needs looking at."""
    failed = [t for t in tries if t.get("rc") != 0]
    ordered = sorted(tries, key=lambda t: t["total"] if "total" in t else float("inf"))
    chosen = dict(failed[0] if failed else ordered[(len(ordered) - 1) // 2])
    chosen["repeats"] = [{"total": t.get("total"), "rc": t.get("rc"),
                          "others_cpu_s": (t.get("cpu_total") or {}).get("rest_cpu_s"),
                          "phases": {k: v["seconds"] for k, v in t.get("phases", {}).items()}} for t in tries]
    return chosen


def _cpu(cpu: dict[str, Any] | None) -> tuple[str, ...]:
    if not cpu:
        return "-", "-", "-", "-", "-"
    return (f"{100 * cpu['machine_busy']:.0f}%", f"{cpu['controller_cpu_s']:.1f}", f"{cpu['hosts_cpu_s']:.1f}",
            f"{cpu['emulator_cpu_s'] + cpu['standin_cpu_s']:.1f}", f"{cpu['rest_cpu_s']:.1f}")


def _range(run: dict[str, Any], key: str) -> str:
    values = [r["phases"].get(key) for r in run.get("repeats", []) if r["phases"].get(key) is not None]
    if len(values) < 2:
        return ""
    return f" ({min(values):.1f}-{max(values):.1f})"


def _api(api: dict[str, Any] | None) -> str:
    if not api or not api["calls"]:
        return "-"
    return f"{api['calls']} ({api['depth']})"


def run_table(run: dict[str, Any]) -> list[str]:
    lines = ["| phase | s | share | machine CPU busy | controller CPU-s | test hosts CPU-s | emulator + release "
             "server CPU-s | everything else CPU-s | API calls (depth) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for key, label, _ in PHASES:
        p = run["phases"][key]
        if key in ("other", "exit") and p["seconds"] < 0.05 and not p["plays"]:
            continue
        cells = " | ".join(_cpu(p.get("cpu")))
        lines.append(f"| {key}: {label} | {p['seconds']:.1f}{_range(run, key)} | {100 * p['share']:.0f}% | {cells} | "
                     f"{_api(p.get('api'))} |")
    cells = " | ".join(_cpu(run.get("cpu_total")))
    totals = [r["total"] for r in run.get("repeats", []) if r.get("total") is not None]
    spread = f" ({min(totals):.1f}-{max(totals):.1f})" if len(totals) > 1 else ""
    lines.append(f"| **create.yml, process start to exit** | **{run['total']:.1f}**{spread} | 100% | {cells} | "
                 f"{sum(p.get('api', {}).get('calls', 0) for p in run['phases'].values()) or '-'} |")
    if run.get("to_smoke_end") is not None:
        lines.append(f"| to the smoke job's end | {run['to_smoke_end']:.1f} | | | | | | | |")
    return lines


def _bytes(x: float) -> str:
    return f"{x / 1e6:.2f} MB" if x >= 1e6 else f"{x / 1e3:.0f} kB"


def _f2(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def release_cost(run: dict[str, Any]) -> dict[str, Any] | None:
    """Per node: the bytes this machine sent it over SSH and the release server sent it (means over
    the nodes), the controller's CPU-seconds divided by the node count, the configuration phase's s."""
    traffic = run.get("traffic")
    if not traffic:
        return None
    n = len(traffic)
    cpu = (run.get("cpu_total") or {}).get("controller_cpu_s")
    conf_cpu = (run["phases"]["configuration"].get("cpu") or {}).get("controller_cpu_s")
    return {
        "nodes": n,
        "ssh_bytes_per_node": round(sum(t["ssh"] for t in traffic.values()) / n),
        "ssh_bytes_max": max(t["ssh"] for t in traffic.values()),
        "release_bytes_per_node": round(sum(t["release"] for t in traffic.values()) / n),
        "controller_cpu_s_per_node": round(cpu / n, 2) if cpu is not None else None,
        "configuration_controller_cpu_s_per_node": round(conf_cpu / n, 2) if conf_cpu is not None else None,
        "configuration_s": run["phases"]["configuration"]["seconds"],
        "archive_bytes": run.get("archive_bytes", {}),
        "release_source": run.get("release_source", "?"),
        "release_size": run.get("release_size", "?"),
    }


def release_table(runs: dict[int, dict[str, Any]]) -> list[str]:
    lines = ["| N | release source | archive (amd64) | controller -> node over SSH, per node (max) | "
             "release server -> node, per node | controller CPU-s per node: whole run (configuration phase) | "
             "configuration phase s |",
             "|---:|---|---:|---:|---:|---:|---:|"]
    for n in sorted(runs):
        c = release_cost(runs[n])
        if not c:
            continue
        arch = c["archive_bytes"].get("amd64")
        lines.append(f"| {n} | {c['release_source']} | {_bytes(arch)} | {_bytes(c['ssh_bytes_per_node'])} "
                     f"({_bytes(c['ssh_bytes_max'])}) | {_bytes(c['release_bytes_per_node'])} | "
                     f"{_f2(c['controller_cpu_s_per_node'])} ({_f2(c['configuration_controller_cpu_s_per_node'])}) | "
                     f"{c['configuration_s']:.1f} |"
                     if arch is not None else f"| {n} | {c['release_source']} | ? | - | - | - | - |")
    return lines


def growth_table(runs: dict[int, dict[str, Any]]) -> list[str]:
    ns = sorted(runs)
    lo, hi = ns[0], ns[-1]
    head = " | ".join(f"N={n} s" for n in ns)
    lines = [f"| phase | {head} | {lo} -> {hi} | bounded by |",
             "|---|" + "---:|" * len(ns) + "---:|---|"]
    for key, label, _ in PHASES:
        vals = [runs[n]["phases"][key]["seconds"] for n in ns]
        if key in ("other", "exit") and max(vals) < 0.05:
            continue
        lines.append(f"| {key} | " + " | ".join(f"{v:.1f}" for v in vals)
                     + f" | {_ratio(vals[0], vals[-1])} | {BOUNDS[key]} |")
    totals = [runs[n]["total"] for n in ns]
    lines.append("| **total** | " + " | ".join(f"**{v:.1f}**" for v in totals) + f" | {_ratio(totals[0], totals[-1])} | |")
    smoke = [runs[n].get("to_smoke_end") for n in ns]
    if all(v is not None for v in smoke):
        lines.append("| to the smoke job's end | " + " | ".join(f"{v:.1f}" for v in smoke)
                     + f" | {_ratio(smoke[0], smoke[-1])} | |")
    return lines


def parts_table(runs: dict[int, dict[str, Any]]) -> list[str]:
    ns = sorted(runs)
    head = " | ".join(f"N={n} s" for n in ns)
    lines = [f"| phase: part | {head} | {ns[0]} -> {ns[-1]} |", "|---|" + "---:|" * len(ns) + "---:|"]
    for phase, label, _ in SUBPHASES:
        vals = [runs[n]["parts"].get(phase, {}).get(label, 0.0) for n in ns]
        if max(vals) < 0.05:
            continue
        lines.append(f"| {phase}: {label} | " + " | ".join(f"{v:.1f}" for v in vals) + f" | {_ratio(vals[0], vals[-1])} |")
    return lines


def task_growth(runs: dict[int, dict[str, Any]], top: int = 12) -> list[dict[str, Any]]:
    """Tasks of the smallest and the largest run side by side, the most grown first.

    A task is known by its play, file and name; one that ran several times (a role in two plays) is summed.
    """
    ns = sorted(runs)
    lo, hi = runs[ns[0]], runs[ns[-1]]

    def index(run: dict[str, Any]) -> dict[tuple[str, str, str], dict[str, Any]]:
        out: dict[tuple[str, str, str], dict[str, Any]] = {}
        for t in run["tasks"]:
            # a count in a task's name ("... the compute nodes (8)") is not part of its identity
            key = (t["play"], t["file"], re.sub(r"\(\d+\)", "(N)", t["name"]))
            entry = out.setdefault(key, {"seconds": 0.0, "hosts": 0, "retries": 0, "items": 0, "loop": t["loop"],
                                         "run_once": t["run_once"], "delegate_to": t["delegate_to"],
                                         "phase": t["phase"]})
            entry["seconds"] += t["seconds"]
            entry["hosts"] = max(entry["hosts"], len(t["hosts"]))
            entry["retries"] += t["retries"]
            entry["items"] += t["items"]
        return out

    a, b = index(lo), index(hi)
    rows = []
    for key in set(a) | set(b):
        sa, sb = a.get(key, {}).get("seconds", 0.0), b.get(key, {}).get("seconds", 0.0)
        info = b.get(key) or a.get(key)
        rows.append({"play": key[0], "file": key[1], "task": key[2], "phase": info["phase"],
                     "lo": round(sa, 3), "hi": round(sb, 3), "grew": round(sb - sa, 3),
                     "hosts_lo": a.get(key, {}).get("hosts", 0), "hosts_hi": b.get(key, {}).get("hosts", 0),
                     "retries_lo": a.get(key, {}).get("retries", 0), "retries_hi": b.get(key, {}).get("retries", 0),
                     "items_hi": b.get(key, {}).get("items", 0), "loop": info["loop"],
                     "run_once": info["run_once"], "delegate_to": info["delegate_to"]})
    rows.sort(key=lambda r: (-r["grew"], r["play"], r["task"]))
    return rows[:top]


def slowest_tasks(run: dict[str, Any], top: int = 10) -> list[dict[str, Any]]:
    return sorted(run["tasks"], key=lambda t: -t["seconds"])[:top]


def markdown(data: dict[str, Any]) -> str:
    meta = data["meta"]
    runs = {int(n): r for n, r in data["runs"].items()}
    ns = sorted(runs)
    lines = ["# Time to a working cluster (tests/bench/cluster)", "",
             f"Commit {meta['commit']}{' (with uncommitted changes in playbooks/, roles/ or plugins/)' if meta.get('dirty') else ''}, "
             f"{meta['date']}; {meta['machine']}; {meta['ansible']}; forks {meta.get('forks', '?')}; "
             f"API latency added by the emulator: {meta['latency_ms']:g} ms.",
             f"Load average before the runs: {meta.get('loadavg', '?')}; the machine's other users show in the "
             "'everything else' column.", ""]
    smoke = [n for n in ns if runs[n]["smoke_play"]]
    if len(smoke) == len(ns):
        lines.append("create.yml has the smoke job (a play named \"Prove the cluster runs jobs...\").")
    elif not smoke:
        lines.append("create.yml has NO smoke job yet (no play named \"Prove the cluster runs jobs...\"): the checks "
                     "phase is the CONNECTED check and the table only, and the total ends there.")
    else:
        lines.append(f"The smoke job's play ran only for N={', '.join(map(str, smoke))}: the runs are not comparable.")
    lines.append("")
    for n in ns:
        r = runs[n]
        lines += [f"## {n} test hosts (1 orchestrator + {n - 1} compute nodes, 2 regions)", "",
                  f"Before create.yml: {n} test hosts booted in {_s(r.get('boot_seconds'))} s (tests/roles/env.sh up; it "
                  "stands in for the instances' boot, which the SSH phase would wait for on AWS, and is not in the total). "
                  f"destroy.yml afterwards: {_s(r.get('destroy_seconds'))} s. create.yml rc {r.get('rc')}; "
                  f"controller CPU for the whole run (rusage): {_s(r.get('controller_rusage_s'))} s.", ""]
        totals = [t["total"] for t in r.get("repeats", []) if t.get("total") is not None]
        if len(totals) > 1:
            others = [t.get("others_cpu_s") for t in r["repeats"]]
            load = (f" (the machine's other users took {', '.join('?' if o is None else f'{o:.0f}' for o in others)} "
                    "CPU-s during them)") if any(o is not None for o in others) else ""
            lines += [f"{len(totals)} runs, totals {', '.join(f'{t:.1f}' for t in totals)} s{load}; shown: the median "
                      "run (in brackets: each phase's lowest and highest over the runs).", ""]
        lines += run_table(r)
        if r["unknown_plays"]:
            lines += ["", "Plays no phase knows (counted in 'other'): " + "; ".join(r["unknown_plays"])]
        lines += ["", "Slowest tasks:", "", "| task | play | s | hosts | retries |", "|---|---|---:|---:|---:|"]
        for t in slowest_tasks(r):
            lines.append(f"| {t['name']} ({t['file']}) | {t['play']} | {t['seconds']:.1f} | {len(t['hosts'])} | {t['retries']} |")
        lines.append("")
    if any(runs[n].get("traffic") for n in ns):
        lines += ["## The release: what each node costs the controller", "",
                  "Bytes counted by iptables on this machine's OUTPUT chain per test host (tests/roles/traffic.py): "
                  "TCP to its port 22 (everything Ansible sends it) and from the stand-in release server's port "
                  "(what the node downloads itself; on AWS that is Bacalhau's server, not the controller). "
                  "Controller CPU: ansible-playbook's process tree and its SSH connection masters, whole run.", ""]
        lines += release_table(runs)
        lines.append("")
    if len(ns) > 1:
        lines += [f"## Growth {ns[0]} -> {ns[-1]} hosts", ""]
        lines += growth_table(runs)
        lines += ["", "Parts of the phases:", ""]
        lines += parts_table(runs)
        lines += ["", f"Tasks that grew the most ({ns[0]} -> {ns[-1]} hosts):", "",
                  f"| task | phase | N={ns[0]} s | N={ns[-1]} s | grew s | hosts | retries | shape |",
                  "|---|---|---:|---:|---:|---:|---:|---|"]
        for row in task_growth(runs):
            shape = ", ".join(x for x in (
                "loop" + (f" ({row['items_hi']} items)" if row["items_hi"] else "") if row["loop"] else "",
                "run_once" if row["run_once"] else "",
                f"delegate_to {row['delegate_to']}" if row["delegate_to"] else "") if x) or "-"
            lines.append(f"| {row['task']} ({row['file']}) | {row['phase']} | {row['lo']:.1f} | {row['hi']:.1f} | "
                         f"{row['grew']:+.1f} | {row['hosts_lo']} -> {row['hosts_hi']} | "
                         f"{row['retries_lo']} -> {row['retries_hi']} | {shape} |")
        lines.append("")
    lines += ["Reproduce: `make bench-cluster` (default `BENCH_CLUSTER_ARGS=\"--hosts 3,9\"`); see docs/benchmarks.md.", ""]
    return "\n".join(lines)


def write(data: dict[str, Any], out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "cluster_time.json").write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    path = out_dir / "cluster_time.md"
    path.write_text(markdown(data), encoding="utf-8")
    return path
