"""The playbooks' AWS half over a cluster's life: calls and round trips (docs/benchmarks.md).

``python -m tests.bench.lifecycle --regions 2 --instances 5 [--latency-ms 100]``

Runs, on the emulator with ``cluster_configure=false`` (the AWS half only), as a user would:
``create.yml`` from nothing, ``create.yml`` again (re-run), ``heal.yml`` on the healthy cluster
(heal no-op), ``create.yml`` with half the count (scale-down) and ``destroy.yml`` limited to the
file's regions, and prints one JSON line per step: the calls, the calls by operation, the
``spot_cluster`` planning passes (one ``DescribeInstances`` per region and pass) and the round
trips in a row (``analysis.chain_depth``). Not part of ``make test``.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from tests.bench.analysis import chain_depth
from tests.bench.runner import REGIONS
from tests.conftest import playbook_env
from tests.emulator import Emulator

REPO = Path(__file__).resolve().parents[2]


def cluster(tmp: Path, regions: int, instances: int, orchestrator: str = "managed") -> dict:
    key = ed25519.Ed25519PrivateKey.generate()
    (tmp / "id").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                               serialization.NoEncryption()))
    (tmp / "id.pub").write_bytes(key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                                               serialization.PublicFormat.OpenSSH))
    names = list(REGIONS[:regions])
    return {"cluster_name": "bench-life", "cluster_configure": False, "cluster_destroy_all_regions": False, "cluster_max_nodes": 1000,
            "cluster_regions": [{"region": r, "count": instances, "instance_types": ["t3.small", "t3a.small"]}
                                for r in names],
            # external: the NATS rule (a /32 per compute node outside the orchestrator's region) is left
            # out, as more than ~55 of them exceed a security group's 60 rules (both before and after)
            "cluster_orchestrator": {"mode": "managed", "region": names[0], "instance_type": "t3.small",
                                     "market": "on-demand"} if orchestrator == "managed" else
                                    {"mode": "external", "endpoints": ["nats://192.0.2.1:4222"]},
            "cluster_ssh_cidrs": ["203.0.113.0/24"],
            "cluster_ssh_public_key_file": str(tmp / "id.pub"), "cluster_ssh_private_key_file": str(tmp / "id")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.lifecycle", description=__doc__)
    parser.add_argument("--regions", type=int, default=2)
    parser.add_argument("--instances", type=int, default=5)
    parser.add_argument("--latency-ms", type=float, default=100.0)
    parser.add_argument("--orchestrator", choices=["managed", "external"], default="managed")
    args = parser.parse_args(argv)
    emulator = Emulator.start()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            env = {**playbook_env(emulator), "HOME": tmp}
            base = cluster(Path(tmp), args.regions, args.instances, args.orchestrator)
            half = dict(base, cluster_regions=[dict(r, count=args.instances // 2) for r in base["cluster_regions"]])
            steps = [("create", "create", base), ("rerun", "create", base), ("heal_noop", "heal", base),
                     ("scale_down", "create", half), ("destroy", "destroy", half)]
            for step, book, extra in steps:
                emulator.latency(args.latency_ms)
                emulator.reset_calls()
                start = time.monotonic()
                result = subprocess.run([str(Path(sys.executable).parent / "ansible-playbook"),
                                         f"playbooks/{book}.yml", "-e", json.dumps(extra)],
                                        cwd=REPO, env=env, capture_output=True, text=True, check=False)
                wall = time.monotonic() - start
                calls = emulator.calls()
                emulator.latency(0)
                if result.returncode:
                    raise SystemExit(f"lifecycle: {step} ({book}.yml) failed:\n{result.stdout[-3000:]}")
                ops = calls["by_operation"]
                print(json.dumps({"step": step, "regions": args.regions, "instances": args.instances,
                                  "orchestrator": args.orchestrator,
                                  "latency_ms": args.latency_ms, "wall_s": round(wall, 2), "calls": calls["total"],
                                  "describe_instances": ops.get("DescribeInstances", 0),
                                  "round_trips_in_a_row": chain_depth(calls["log"]),
                                  "by_operation": dict(sorted(ops.items()))}), flush=True)
    finally:
        emulator.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
