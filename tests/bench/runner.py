"""Run the scenarios, ours and the stock way, on one emulator with added latency.

Every measurement is one ``ansible-playbook`` run (what a user runs), timed from the
outside, with the emulator's call log zeroed before and read after. Between the two
sides the emulator is reset; after every reset each region is warmed up (moto builds a
region's backend, images included, on first use: that cost would otherwise land on
whichever side comes first). Set-up work that is not measured runs at zero latency.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.bench import analysis, bound
from tests.emulator import Emulator, seed
from tests.emulator.client import SCRUBBED_VARS

REPO = Path(__file__).resolve().parents[2]
PLAYBOOKS = Path(__file__).resolve().parent / "playbooks"

# Regions in the order they are used (all known to moto, all with t3.small).
REGIONS = (
    "us-east-1", "eu-west-1", "us-west-2", "eu-central-1", "ap-southeast-1",
    "ap-northeast-1", "sa-east-1", "ca-central-1", "ap-south-1", "eu-north-1",
    "us-east-2", "eu-west-2", "ap-southeast-2", "us-west-1", "eu-west-3",
)
INSTANCE_TYPE = "t3.small"
# A throwaway public key (no private half is kept anywhere); imported as a key pair.
SSH_PUBLIC_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOuoXLshW0bYFuf67OnQZgzFqnlmpbuu0gUChl6q5jaT bench"
OURS_CLUSTER = "bench"
STOCK_CLUSTER = "bench"

SCENARIOS = ("create", "rerun", "scale_down", "destroy", "nuke")
SIDES = ("ours", "stock")


@dataclass
class Measurement:
    side: str
    scenario: str
    wall: float
    rc: int
    changed: int | None
    calls: dict[str, Any]
    check: dict[str, Any] = field(default_factory=dict)
    log: str = ""

    @property
    def ok(self) -> bool:
        return self.rc == 0 and self.check.get("ok", True)

    def as_dict(self) -> dict[str, Any]:
        return {"side": self.side, "scenario": self.scenario, "wall": round(self.wall, 3), "rc": self.rc,
                "ok": self.ok, "changed": self.changed, "calls": self.calls, "check": self.check, "log": self.log}


def extrapolate(wall: float, calls: dict[str, Any], factor: float) -> tuple[float, dict[str, Any]]:
    """A sequential per-region run measured on K regions, scaled to R (factor R/K)."""
    scaled = dict(calls)
    scaled["measured"] = {"wall": round(wall, 3), "total": calls["total"], "depth": calls["depth"],
                          "span": calls["span"]}
    for key in ("total", "depth"):
        scaled[key] = round(calls[key] * factor)
    scaled["span"] = round(calls["span"] * factor, 3)
    scaled["by_operation"] = {op: round(n * factor) for op, n in calls["by_operation"].items()}
    return wall * factor, scaled


class Bench:
    def __init__(self, regions: int, instances: int, latency_ms: float, out_dir: Path,
                 sides: tuple[str, ...] = SIDES, scenarios: tuple[str, ...] = SCENARIOS,
                 emulator: Emulator | None = None, verbose: bool = True, baseline: bool = True,
                 stock_regions: int | None = None, structural_latency_ms: float = 0.0) -> None:
        if regions > len(REGIONS):
            raise ValueError(f"at most {len(REGIONS)} regions")
        self.regions = list(REGIONS[:regions])
        # The stock way does one region after the other, the same work in each: with
        # stock_regions=K < R it is measured on K regions and scaled by R/K (reported so).
        self.stock_regions = min(stock_regions or regions, regions)
        self.instances = instances
        self.scaled = max(1, instances // 2)
        self.latency_ms = latency_ms
        # Our side again at a latency so high that this machine's CPU cannot chain calls
        # that were sent together: the depth then is the code's order alone (0: skip).
        self.structural_latency_ms = structural_latency_ms
        self.structural: dict[str, int] = {}
        self.suffix = ""  # of log and call-log file names (the structural pass's own)
        self.out_dir = out_dir
        self.sides = sides
        self.scenarios = scenarios
        self.verbose = verbose
        self.want_baseline = baseline
        self._own_emulator = emulator is None
        self.emulator = emulator
        self.results: list[Measurement] = []
        self.baseline: dict[str, Any] = {}

    # ------------------------------------------------------------------ plumbing
    def say(self, text: str) -> None:
        if self.verbose:
            print(text, file=sys.stderr, flush=True)

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in SCRUBBED_VARS}
        env.update(self.emulator.env)
        env["ANSIBLE_CONFIG"] = str(REPO / "ansible.cfg")
        env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
        env["ANSIBLE_NOCOLOR"] = "1"
        env["ANSIBLE_FORCE_COLOR"] = "0"
        return env

    def playbook(self, name: str, extra_vars: dict[str, Any], label: str) -> tuple[float, int, int | None, str]:
        cmd = [str(Path(sys.executable).parent / "ansible-playbook"), str(PLAYBOOKS / name),
               "-e", json.dumps(extra_vars)]
        t0 = time.monotonic()
        proc = subprocess.run(cmd, cwd=REPO, env=self.env(), capture_output=True, text=True, timeout=3600)
        wall = time.monotonic() - t0
        logs = self.out_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        path = logs / f"{label}.log"
        path.write_text(proc.stdout + proc.stderr, encoding="utf-8")
        m = re.search(r"localhost\s*:\s*ok=\d+\s+changed=(\d+)", proc.stdout)
        changed = int(m.group(1)) if m else None
        return wall, proc.returncode, changed, str(path.relative_to(self.out_dir))

    def quiet(self):
        """Zero latency for set-up and checks; restores the configured latency after."""
        bench = self

        class _Quiet:
            def __enter__(self):
                bench.emulator.latency(0)

            def __exit__(self, *exc):
                bench.emulator.latency(bench.latency_ms)
                bench.emulator.reset_calls()

        return _Quiet()

    def ec2(self, region: str):
        import boto3

        return boto3.client("ec2", region_name=region, endpoint_url=self.emulator.url,
                            aws_access_key_id="testing", aws_secret_access_key="testing")

    def fresh(self) -> None:
        """Reset the emulator and warm every region up (unmeasured)."""
        self.emulator.reset()
        with self.quiet():
            for region in self.regions:
                ec2 = self.ec2(region)
                ec2.describe_images(ImageIds=[seed.ami_id(region, "24.04", "x86_64", seed.SERIALS[-1])])
                ec2.describe_availability_zones()
                ec2.describe_instance_type_offerings(LocationType="availability-zone",
                                                     Filters=[{"Name": "instance-type", "Values": [INSTANCE_TYPE]}])

    # ------------------------------------------------------------------ what each side runs
    def vars_for(self, side: str, count: int | None, state: str = "present") -> tuple[str, dict[str, Any]]:
        if side == "ours":
            if state == "present":
                regions = [{"region": r, "count": count, "instance_types": [INSTANCE_TYPE]} for r in self.regions_of(side)]
            else:
                regions = [{"region": r} for r in self.regions_of(side)]
            return "ours.yml", {"bench_cluster": OURS_CLUSTER, "bench_state": state, "bench_regions": regions,
                                "bench_ssh_public_key": SSH_PUBLIC_KEY}
        regions = [{"region": r, "count": count,
                    "image_id": seed.ami_id(r, "24.04", "x86_64", seed.SERIALS[-1])} for r in self.regions_of(side)]
        name = "stock_create.yml" if state == "present" else "stock_destroy.yml"
        return name, {"bench_cluster": STOCK_CLUSTER, "bench_regions": regions,
                      "bench_instance_type": INSTANCE_TYPE, "bench_ssh_public_key": SSH_PUBLIC_KEY}

    def regions_of(self, side: str) -> list[str]:
        return self.regions[:self.stock_regions] if side == "stock" else self.regions

    def tag_filter(self, side: str) -> list[dict[str, Any]]:
        if side == "ours":
            return [{"Name": "tag:bacalhau:cluster", "Values": [OURS_CLUSTER]}]
        return [{"Name": "tag:bench:cluster", "Values": [STOCK_CLUSTER]}]

    def census(self, side: str) -> dict[str, Any]:
        """Live instances and VPCs of the side, per region (read at zero latency)."""
        out: dict[str, Any] = {}
        with self.quiet():
            for region in self.regions_of(side):
                ec2 = self.ec2(region)
                filters = self.tag_filter(side)
                live = 0
                spot = 0
                for page in ec2.get_paginator("describe_instances").paginate(
                        Filters=filters + [{"Name": "instance-state-name", "Values": ["pending", "running"]}]):
                    for res in page["Reservations"]:
                        for i in res["Instances"]:
                            live += 1
                            spot += i.get("InstanceLifecycle") == "spot"
                vpcs = len(ec2.describe_vpcs(Filters=filters)["Vpcs"])
                out[region] = {"instances": live, "spot": spot, "vpcs": vpcs}
        return out

    def expect(self, side: str, instances: int, vpcs: int) -> dict[str, Any]:
        census = self.census(side)
        ok = all(c["instances"] == instances and c["vpcs"] == vpcs for c in census.values())
        return {"ok": ok, "expected": {"instances": instances, "vpcs": vpcs}, "census": census}

    def measure(self, side: str, scenario: str, name: str, extra_vars: dict[str, Any],
                expect: tuple[int, int]) -> Measurement:
        self.emulator.reset_calls()
        t_reset = time.monotonic()  # the emulator's call clock starts (within a ms) here
        self.say(f"  {side:5} {scenario:10} ...")
        wall, rc, changed, log = self.playbook(name, extra_vars, f"{side}_{scenario}{self.suffix}")
        t_play = time.monotonic() - wall
        raw = self.emulator.calls()
        calls = analysis.summarize(raw, offset=t_play - t_reset, wall=wall)
        calls_dir = self.out_dir / "calls"
        calls_dir.mkdir(parents=True, exist_ok=True)
        (calls_dir / f"{side}_{scenario}{self.suffix}.json").write_text(json.dumps(raw["log"]) + "\n", encoding="utf-8")
        m = Measurement(side, scenario, wall, rc, changed, calls, log=log)
        m.check = self.expect(side, *expect)
        measured_on = len(self.regions_of(side))
        if measured_on < len(self.regions):
            m.wall, m.calls = extrapolate(wall, calls, len(self.regions) / measured_on)
            m.calls["extrapolated_from_regions"] = measured_on
        self.say(f"  {side:5} {scenario:10} {wall:7.2f} s  {calls['total']:5d} calls  depth {calls['depth']:4d}"
                 f"  {'ok' if m.ok else 'FAILED (see ' + log + ')'}")
        self.results.append(m)
        return m

    # ------------------------------------------------------------------ the run
    def run_side(self, side: str) -> None:
        n, half, = self.instances, self.scaled
        self.fresh()
        self.emulator.latency(self.latency_ms)
        want = set(self.scenarios)
        if want & {"create", "rerun", "scale_down", "destroy"}:
            name, ev = self.vars_for(side, n)
            self.measure(side, "create", name, ev, (n, 1))
            if "rerun" in want:
                self.measure(side, "rerun", name, ev, (n, 1))
            if "scale_down" in want:
                name, ev = self.vars_for(side, half)
                self.measure(side, "scale_down", name, ev, (half, 1))
            if "destroy" in want or "nuke" in want:
                name, ev = self.vars_for(side, None, state="absent")
                if "destroy" in want:
                    self.measure(side, "destroy", name, ev, (0, 0))
        if "nuke" in want and side == "ours":
            # from a freshly created cluster (created unmeasured, at zero latency)
            self.fresh()
            name, ev = self.vars_for(side, n)
            with self.quiet():
                self.playbook(name, ev, f"{side}_nuke_setup{self.suffix}")
            self.emulator.latency(self.latency_ms)
            self.measure(side, "nuke", "ours_nuke.yml",
                         {"bench_cluster": OURS_CLUSTER, "bench_regions": [{"region": r} for r in self.regions]},
                         (0, 0))

    def run(self) -> dict[str, Any]:
        started = time.monotonic()
        if self.emulator is None:
            self.say("starting the emulator (loopback)")
            self.emulator = Emulator.start()
        try:
            if self.want_baseline:
                self.fresh()
                self.emulator.latency(self.latency_ms)
                wall, rc, _changed, _log = self.playbook("noop.yml", {}, "baseline")
                self.baseline = {"wall": round(wall, 3), "rc": rc,
                                 "what": "ansible-playbook with one amazon.aws task making one API call"}
                self.say(f"baseline (one AWS task): {wall:.2f} s")
            for side in self.sides:
                self.say(f"{side}:")
                self.run_side(side)
            if self.structural_latency_ms and "ours" in self.sides:
                self.run_structural()
        finally:
            if self._own_emulator and self.emulator is not None:
                self.emulator.clear_faults()
                self.emulator.stop()
        return self.data(time.monotonic() - started)

    def run_structural(self) -> None:
        """Our scenarios again at ``structural_latency_ms``; keeps only each one's depth per region."""
        kept, latency = self.results, self.latency_ms
        self.results, self.latency_ms = [], self.structural_latency_ms
        self.suffix = f"_at_{self.structural_latency_ms:g}ms"
        self.say(f"ours again at {self.structural_latency_ms:g} ms per call (depth only):")
        try:
            self.run_side("ours")
            self.structural = {m.scenario: m.calls["region_depth"] for m in self.results if m.ok}
        finally:
            self.results, self.latency_ms, self.suffix = kept, latency, ""
            self.emulator.latency(latency)

    def data(self, total: float) -> dict[str, Any]:
        return {
            "config": {"regions": self.regions, "instances_per_region": self.instances,
                       "stock_measured_regions": self.stock_regions,
                       "load_average": os.getloadavg(),
                       "scaled_to": self.scaled, "latency_ms": self.latency_ms, "instance_type": INSTANCE_TYPE,
                       "structural_latency_ms": self.structural_latency_ms,
                       "cpus": os.cpu_count(), "python": sys.version.split()[0]},
            "baseline": self.baseline,
            "bounds": {s: bound.bound(s, self.latency_ms) for s in SCENARIOS},
            "results": [m.as_dict() for m in self.results],
            "structural_depth": self.structural,
            "total_seconds": round(total, 1),
        }
