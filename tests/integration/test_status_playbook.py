"""playbooks/status.yml against the emulator: it never dials the emulator's made-up addresses."""
from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
STATUS = REPO / "playbooks" / "status.yml"

CLUSTER = {
    "cluster_name": "st-demo",
    "cluster_regions": [{"region": "eu-west-1", "count": 1, "instance_types": ["t3.small"]}],
    "cluster_orchestrator": {"mode": "external", "endpoints": ["nats://192.0.2.1:4222"]},
}


def test_status_refuses_emulator_addresses(aws, run_module, playbook):
    made = run_module("spot_cluster", {"cluster_name": "st-demo", "regions": CLUSTER["cluster_regions"]})
    assert not made.failed, made
    address = made["instances"][0]["public_ip"]
    assert address  # moto's made-up one

    result = playbook(STATUS, extra_vars=CLUSTER)
    assert result.returncode != 0
    assert "refusing to connect to" in result.stdout and address in result.stdout
    assert "cluster_allowed_addresses" in result.stdout
    # it stopped before any play that connects to the instances
    assert "Ask the node's own API" not in result.stdout
    assert not (playbook.home / ".config/bacalhau.aws_spot/st-demo/st-demo.aws_ec2.yml").exists()
