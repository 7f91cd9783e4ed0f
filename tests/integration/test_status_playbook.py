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


from tests.integration.test_create_destroy import ssh_key  # noqa: F401,E402  (the fixture)


def test_status_shows_the_autoheal_event_path_per_region(aws, playbook, ssh_key):  # noqa: F811
    """Per region: the rule and queue, the queue's depth, the age of the last event (noted by the
    event source on this host); a region without the path says NO (status makes nothing)."""
    import json
    import time

    from ansible_collections.bacalhau.aws_spot.plugins.module_utils._events import path
    from tests.unit.test_events_path import our_client

    import boto3

    cluster = dict(CLUSTER, **ssh_key, cluster_name="st-heal",
                   cluster_regions=[{"region": "eu-west-1", "count": 1, "instance_types": ["t3.small"]},
                                    {"region": "us-east-1", "count": 1, "instance_types": ["t3.small"]}])
    made = path.ensure(our_client("events", "eu-west-1"), our_client("sqs", "eu-west-1"), "st-heal", "eu-west-1")
    boto3.client("sqs", region_name="eu-west-1").send_message(  # as EventBridge would (not the collection)
QueueUrl=made["queue_url"], MessageBody="{}")
    state = playbook.home / ".config/bacalhau.aws_spot/st-heal/autoheal"
    state.mkdir(parents=True)
    then = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 90))
    (state / "last-events.json").write_text(json.dumps(
        {"eu-west-1": {"time": then, "received": then, "kind": "interruption", "instance_id": "i-0abc"}}))

    result = playbook(STATUS, extra_vars=cluster)
    assert result.returncode == 0, result.stdout[-3000:]
    lines = [line for line in result.stdout.splitlines() if "eu-west-1" in line or "us-east-1" in line]
    west = next(line for line in lines if "eu-west-1   " in line and "ago" in line)
    assert " yes " in west and " 1 " in west and "s ago (interruption)" in west, west
    east = next(line for line in lines if "us-east-1   " in line and "none seen on this host" in line)
    assert " NO " in east, east
    assert "Missing parts are made by the next create.yml or heal.yml" in result.stdout
    # status made nothing
    assert path.read(our_client("events", "us-east-1"), our_client("sqs", "us-east-1"), "st-heal", "us-east-1")["rule"] is False

    off = playbook(STATUS, extra_vars=dict(cluster, cluster_autoheal=False))
    assert off.returncode == 0 and "Autoheal: off (cluster_autoheal: false)" in off.stdout
