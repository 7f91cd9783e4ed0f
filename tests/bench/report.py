"""The report: one table of both sides with the ratios, API calls by operation, the bound."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.bench import bound

LABELS = {"create": "create from nothing", "rerun": "idempotent re-run", "scale_down": "scale down",
          "destroy": "destroy", "nuke": "nuke"}


def _ratio(a: float | None, b: float | None) -> str:
    if not a or not b:
        return "-"
    return f"{a / b:.2f}"


def _num(x: Any, fmt: str = "{:.2f}") -> str:
    return "-" if x is None else fmt.format(x)


def _by(data: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(r["side"], r["scenario"]): r for r in data["results"]}


def rows(data: dict[str, Any]) -> list[dict[str, Any]]:
    by = _by(data)
    out = []
    for scenario in LABELS:
        ours, stock = by.get(("ours", scenario)), by.get(("stock", scenario))
        if not ours and not stock:
            continue
        b = data["bounds"][scenario]
        stock_note = ""
        if scenario == "nuke" and stock is None and ("stock", "destroy") in by:
            stock, stock_note = by[("stock", "destroy")], " (its destroy)"
        out.append({
            "scenario": scenario,
            "label": LABELS[scenario],
            "ours": ours,
            "stock": stock,
            "stock_note": stock_note,
            "bound": b,
            "ours_over_stock": (ours["wall"] / stock["wall"]) if ours and stock else None,
            "speedup": (stock["wall"] / ours["wall"]) if ours and stock else None,
            "ours_over_bound_wall": (ours["wall"] / b["seconds"]) if ours and b["seconds"] else None,
            "ours_over_bound_span": (ours["calls"]["span"] / b["seconds"]) if ours and b["seconds"] else None,
            "ours_over_bound_depth": (ours["calls"]["region_depth"] / b["depth"]) if ours else None,
            "structural_depth": data.get("structural_depth", {}).get(scenario),
        })
    return out


def _structural(r: dict[str, Any]) -> str:
    depth = r.get("structural_depth")
    if depth is None:
        return "-"
    return f"{depth} ({depth / r['bound']['depth']:.2f})"


def _load(cfg: dict[str, Any]) -> str:
    load = cfg.get("load_average")
    return "/".join(f"{x:.1f}" for x in load) if load else "-"


def markdown(data: dict[str, Any]) -> str:
    cfg = data["config"]
    lines = [
        f"# Benchmark: {len(cfg['regions'])} regions x {cfg['instances_per_region']} instances, "
        f"{cfg['latency_ms']:g} ms added per API call",
        "",
        f"Regions: {', '.join(cfg['regions'])}; {cfg['instance_type']}; scale down to {cfg['scaled_to']} per region; "
        f"{cfg['cpus']} CPUs; emulator and Ansible on the same machine. "
        f"Baseline (ansible-playbook, one amazon.aws task, one call): {_num(data['baseline'].get('wall'))} s. "
        f"Whole run: {data['total_seconds']} s; load average {_load(cfg)}.",
        "",
    ]
    if cfg.get("stock_measured_regions", len(cfg["regions"])) < len(cfg["regions"]):
        lines += [
            f"**Stock side measured on {cfg['stock_measured_regions']} of {len(cfg['regions'])} regions and scaled "
            f"by {len(cfg['regions'])}/{cfg['stock_measured_regions']}** (its playbook does one region after the "
            "other, the same work in each; wall time, calls and depth scaled, `measured` in report.json).",
            "",
        ]
    lines += [
        "| scenario | ours s | stock s | ours/stock | speed-up | bound s (depth) | ours/bound wall | ours/bound API span | "
        f"ours/bound depth | ours depth | ours depth at {cfg.get('structural_latency_ms') or 0:g} ms (/bound) | "
        "ours calls | stock calls | stock depth | "
        "emulator busy s | ok |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows(data):
        o, s, b = r["ours"], r["stock"], r["bound"]
        ok = "/".join("ok" if (x and x["ok"]) else ("FAIL" if x else "-") for x in (o, s))
        lines.append(
            f"| {r['label']} | {_num(o and o['wall'])} | {_num(s and s['wall'])}{r['stock_note']} | "
            f"{_num(r['ours_over_stock'])} | {_num(r['speedup'], '{:.1f}x')} | {b['seconds']:.2f} ({b['depth']}) | "
            f"{_num(r['ours_over_bound_wall'])} | {_num(r['ours_over_bound_span'])} | "
            f"{_num(r['ours_over_bound_depth'])} | {_num(o and o['calls']['region_depth'], '{}')} | "
            f"{_structural(r)} | "
            f"{_num(o and o['calls']['total'], '{}')} | {_num(s and s['calls']['total'], '{}')} | "
            f"{_num(s and s['calls']['region_depth'], '{}')} | {_num(o and o['calls'].get('emulator_busy'))} | {ok} |"
        )
    lines += [
        "",
        "- *ours/stock*: wall time ratio (lower is better); *speed-up*: stock / ours.",
        "- *bound*: the least number of sequential API round trips the work needs (critical path of its "
        "dependency graph, regions in parallel) x the added latency; see docs/benchmarks.md.",
        "- *ours/bound wall*: ours' whole wall time (Ansible start-up included) over the bound; *API span*: first "
        "call to last answer; *depth*: observed sequential depth (longest chain of calls that waited for one "
        "another, max over regions) over the bound's depth.",
        f"- *ours depth at {cfg.get('structural_latency_ms') or 0:g} ms*: the same depth with {cfg.get('structural_latency_ms') or 0:g} ms per call, where "
        "this machine's CPU cannot chain calls that were sent together: the order of the code's calls alone "
        "(over the bound's depth in brackets).",
        "- *emulator busy*: seconds moto spent on ours' calls, one call at a time, on the same CPUs (AWS answers in "
        "parallel): part of the API span is the test world's own cost.",
        "",
        "## API calls by operation",
        "",
    ]
    by = _by(data)
    for scenario in LABELS:
        for side in ("ours", "stock"):
            m = by.get((side, scenario))
            if not m:
                continue
            c = m["calls"]
            ops = ", ".join(f"{op} {n}" for op, n in c["by_operation"].items())
            lines.append(f"- **{side}, {LABELS[scenario]}** ({c['total']} calls, depth {c['depth']} overall / "
                         f"{c['region_depth']} per region, concurrency {c['concurrency']}, mean call "
                         f"{c['mean_call_ms']} ms, emulator busy {c.get('emulator_busy', '-')} s, 4xx/5xx answers {c['errors']}, peak {c.get('peak_per_second', '-')}/s of one API "
                         f"in one region ({c.get('peak_what', '')}), changed tasks {m['changed']}): {ops}")
    lines += ["", "## Critical paths (one region)", ""]
    for scenario, b in data["bounds"].items():
        lines.append(f"- **{LABELS[scenario]}** (depth {b['depth']}): " + " -> ".join(b["path"]))
    failed = [m for m in data["results"] if not m["ok"]]
    if failed:
        lines += ["", "## Failures", ""]
        for m in failed:
            lines.append(f"- {m['side']} {m['scenario']}: rc {m['rc']}, check {json.dumps(m['check'])}, log {m['log']}")
    return "\n".join(lines) + "\n"


def write(data: dict[str, Any], out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "report.json").write_text(json.dumps(data, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    path = out_dir / "report.md"
    path.write_text(markdown(data), encoding="utf-8")
    return path


__all__ = ["markdown", "rows", "write", "bound"]
