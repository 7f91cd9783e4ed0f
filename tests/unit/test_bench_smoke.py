"""The benchmark harness (tests/bench) still runs: a tiny cluster, no latency, our side.

The real benchmark is ``make bench`` (docs/benchmarks.md), not part of ``make test``;
this only keeps its harness, bound and report from rotting.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.bench import analysis, bound, report
from tests.bench.runner import Bench

REPO = Path(__file__).resolve().parents[2]


def test_critical_path_depths():
    assert {s: bound.critical_depth(g) for s, g in bound.GRAPHS.items()} == {
        "create": 5, "rerun": 1, "scale_down": 3, "destroy": 5, "nuke": 5,
    }
    assert bound.bound("create", 100)["seconds"] == pytest.approx(0.5)


def test_observed_depth_counts_only_calls_that_waited_for_one_another():
    log = [
        {"operation": "A", "region": "r1", "start": 0.0, "end": 0.1},
        {"operation": "B", "region": "r2", "start": 0.01, "end": 0.11},  # alongside A
        {"operation": "C", "region": "r1", "start": 0.1, "end": 0.2},  # after A
        {"operation": "D", "region": "r1", "start": 0.25, "end": 0.35, "service_ms": 5.0},  # after C
    ]
    summary = analysis.summarize({"log": log, "by_operation": {}, "by_region": {}})
    assert summary["depth"] == 3
    assert summary["region_depth"] == 3
    assert summary["total"] == 4
    assert summary["emulator_busy"] == pytest.approx(0.005)


@pytest.mark.skipif(not (REPO / "plugins/modules/spot_cluster.py").exists(), reason="spot_cluster not there yet")
def test_ours_one_region_two_instances(aws, tmp_path):
    bench = Bench(1, 2, 0, tmp_path, sides=("ours",), scenarios=("create", "rerun", "destroy"),
                  emulator=aws, verbose=False, baseline=False, structural_latency_ms=50)
    data = bench.run()
    results = {r["scenario"]: r for r in data["results"]}
    assert set(results) == {"create", "rerun", "destroy"}
    for scenario, result in results.items():
        assert result["ok"], (scenario, result["check"], (tmp_path / result["log"]).read_text()[-3000:])
    assert results["create"]["calls"]["by_operation"].get("RunInstances", 0) >= 1
    assert results["rerun"]["changed"] == 0
    assert set(data["structural_depth"]) == {"create", "rerun", "destroy"}  # the second pass, depth only
    assert results["create"]["calls"]["emulator_busy"] > 0
    path = report.write(data, tmp_path)
    assert "| create from nothing |" in path.read_text()
    assert json.loads((tmp_path / "report.json").read_text())["config"]["instances_per_region"] == 2
