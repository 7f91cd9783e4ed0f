"""A no-op ``heal.yml``: its AWS calls and round trips in a row (docs/benchmarks.md).

Creates a healthy 5-region cluster on the emulator (``cluster_configure=false``: the AWS half),
then runs ``playbooks/heal.yml`` at 0 and 100 ms per call and prints, per latency, the calls by
operation and the chain depth. Not part of ``make test``::

    .venv/bin/python -m tests.bench.heal_noop
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from tests.bench.analysis import chain_depth
from tests.conftest import playbook_env
from tests.emulator import Emulator

REPO = Path(__file__).resolve().parents[2]
REGIONS = ["us-east-1", "eu-west-1", "us-west-2", "ap-southeast-1", "eu-central-1"]


def cluster(tmp: Path) -> dict:
    key = ed25519.Ed25519PrivateKey.generate()
    (tmp / "id").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                               serialization.NoEncryption()))
    (tmp / "id.pub").write_bytes(key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                                               serialization.PublicFormat.OpenSSH))
    return {"cluster_name": "bench-heal", "cluster_configure": False,
            "cluster_regions": [{"region": r, "count": 4, "instance_types": ["t3.small", "t3a.small"]} for r in REGIONS],
            "cluster_orchestrator": {"mode": "managed", "region": "us-east-1", "instance_type": "t3.small",
                                     "market": "on-demand"},
            "cluster_overflow_regions": [{"region": "us-east-2", "instance_types": ["t3.small"]}],
            "cluster_ssh_public_key_file": str(tmp / "id.pub"), "cluster_ssh_private_key_file": str(tmp / "id")}


def main() -> int:
    emulator = Emulator.start()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            env = {**playbook_env(emulator), "HOME": tmp}
            extra = json.dumps(cluster(Path(tmp)))

            def play(name: str) -> None:
                result = subprocess.run([str(Path(sys.executable).parent / "ansible-playbook"),
                                         f"playbooks/{name}.yml", "-e", extra],
                                        cwd=REPO, env=env, capture_output=True, text=True)
                if result.returncode:
                    raise SystemExit(f"heal_noop: {name}.yml failed:\n{result.stdout[-3000:]}")

            play("create")
            for latency in (0, 100):
                emulator.latency(latency)
                emulator.reset_calls()
                start = time.monotonic()
                play("heal")
                calls = emulator.calls()
                print(json.dumps({"latency_ms": latency, "wall_s": round(time.monotonic() - start, 2),
                                  "calls": calls["total"], "by_operation": calls["by_operation"],
                                  "round_trips_in_a_row": chain_depth(calls["log"])}))
            play("destroy")
    finally:
        emulator.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
