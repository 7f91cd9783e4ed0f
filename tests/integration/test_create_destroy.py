"""playbooks/create.yml and playbooks/destroy.yml against the emulator, as a user runs them."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import boto3
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from tests.conftest import REPO, playbook_env
from tests.emulator.client import SCRUBBED_VARS

CREATE = REPO / "playbooks" / "create.yml"
DESTROY = REPO / "playbooks" / "destroy.yml"


@pytest.fixture
def ssh_key(tmp_path: Path) -> dict[str, str]:
    key = ed25519.Ed25519PrivateKey.generate()
    private = tmp_path / "id_ed25519"
    public = tmp_path / "id_ed25519.pub"
    private.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                          serialization.NoEncryption()))
    os.chmod(private, 0o600)
    public.write_bytes(key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                                     serialization.PublicFormat.OpenSSH) + b" test@example\n")
    return {"cluster_ssh_public_key_file": str(public), "cluster_ssh_private_key_file": str(private)}


def cluster_vars(ssh_key: dict[str, str], **kw) -> dict:
    out = {
        "cluster_name": "it-demo",
        "cluster_regions": [
            {"region": "us-east-1", "count": 2, "instance_types": ["t3.small", "t3a.small"]},
            {"region": "eu-west-1", "count": 1, "instance_types": ["t4g.small"]},
        ],
        "cluster_orchestrator": {"mode": "managed", "region": "us-east-1", "instance_type": "t3.small",
                                 "market": "on-demand"},
        "cluster_ssh_cidrs": ["198.51.100.0/24"],
        "cluster_api_cidrs": ["198.51.100.0/24"],
        # The AWS half only: the emulator's made-up addresses are never dialled. The
        # Bacalhau half runs on real test hosts in tests/integration/test_sandbox.py.
        "cluster_configure": False,
        **ssh_key,
    }
    out.update(kw)
    return out


def instances(region: str, cluster: str = "it-demo") -> list[dict]:
    res = boto3.client("ec2", region_name=region).describe_instances(Filters=[
        {"Name": "tag:bacalhau:cluster", "Values": [cluster]},
        {"Name": "instance-state-name", "Values": ["pending", "running"]},
    ])["Reservations"]
    return [i for r in res for i in r["Instances"]]


def cluster_resources(region: str, cluster: str = "it-demo") -> int:
    client = boto3.client("ec2", region_name=region)
    f = [{"Name": "tag:bacalhau:cluster", "Values": [cluster]}]
    return (len(instances(region, cluster)) + len(client.describe_vpcs(Filters=f)["Vpcs"])
            + len(client.describe_subnets(Filters=f)["Subnets"])
            + len(client.describe_security_groups(Filters=f)["SecurityGroups"])
            + len(client.describe_internet_gateways(Filters=f)["InternetGateways"])
            + len(client.describe_route_tables(Filters=f)["RouteTables"])
            + len(client.describe_key_pairs(Filters=f)["KeyPairs"]))


def event_path(region: str, cluster: str = "it-demo") -> tuple[bool, bool]:
    """(rule, queue) of the cluster's autoheal event path in ``region`` (cluster_autoheal, default true)."""
    name = f"bacalhau-{cluster}-spot-events"
    rules = boto3.client("events", region_name=region).list_rules(NamePrefix=name)["Rules"]
    queues = boto3.client("sqs", region_name=region).list_queues(QueueNamePrefix=name).get("QueueUrls", [])
    return any(r["Name"] == name for r in rules), any(u.endswith("/" + name) for u in queues)


def role(instance: dict) -> str:
    return {t["Key"]: t["Value"] for t in instance["Tags"]}["bacalhau:role"]


def test_create_rerun_destroy(playbook, aws, ssh_key):
    variables = cluster_vars(ssh_key)
    first = playbook(CREATE, extra_vars=variables)
    assert first.returncode == 0, first.stdout[-4000:] + first.stderr[-2000:]
    assert "REGION" in first.stdout and "REQUESTED" in first.stdout
    east, west = instances("us-east-1"), instances("eu-west-1")
    assert sorted(role(i) for i in east) == ["compute", "compute", "orchestrator"]
    assert [role(i) for i in west] == ["compute"] and west[0]["Architecture"] == "arm64"
    # the orchestrator is on-demand, the compute nodes spot
    assert {role(i): i.get("InstanceLifecycle", "on-demand") for i in east} == {
        "orchestrator": "on-demand", "compute": "spot"}
    # the autoheal event path in every region the cluster uses
    assert event_path("us-east-1") == (True, True) and event_path("eu-west-1") == (True, True)

    again = playbook(CREATE, extra_vars=variables)
    assert again.returncode == 0, again.stdout[-4000:]
    assert "changed=0" in again.stdout
    assert len(instances("us-east-1")) == 3

    # another cluster in the same region survives the destroy
    other = playbook(CREATE, extra_vars=cluster_vars(ssh_key, cluster_name="it-other", cluster_regions=[
        {"region": "us-east-1", "count": 1, "instance_types": ["t3.small"]}],
        cluster_orchestrator={"mode": "external", "endpoints": ["nats://203.0.113.5:4222"]}))
    assert other.returncode == 0, other.stdout[-4000:]

    # the autoheal rulebook's state on this host, a heal request still waiting among it
    autoheal = Path(playbook.home) / ".config" / "bacalhau.aws_spot" / "it-demo" / "autoheal"
    autoheal.mkdir(parents=True, exist_ok=True)
    (autoheal / "pending.json").write_text('[{"drain": ["i-0123456789abcdef0"], "at": 0}]')

    gone = playbook(DESTROY, extra_vars={"cluster_name": "it-demo"})  # default: search every region
    assert gone.returncode == 0, gone.stdout[-4000:] + gone.stderr[-2000:]
    assert "TERMINATED" in gone.stdout
    assert cluster_resources("us-east-1") == 0 and cluster_resources("eu-west-1") == 0
    assert len(instances("us-east-1", "it-other")) == 1
    assert cluster_resources("us-east-1", "it-other") > 1
    # destroy took the event path away too, and left the other cluster's
    assert event_path("us-east-1") == (False, False) and event_path("eu-west-1") == (False, False)
    assert event_path("us-east-1", "it-other") == (True, True)
    assert not autoheal.exists()  # no request of this cluster is run for the next one of its name


def test_check_mode_and_bad_input_create_nothing(playbook, aws, ssh_key):
    check = playbook(CREATE, extra_vars=cluster_vars(ssh_key), check=True)
    assert check.returncode == 0, check.stdout[-4000:]
    assert cluster_resources("us-east-1") == 0 and cluster_resources("eu-west-1") == 0
    assert event_path("us-east-1") == (False, False) and event_path("eu-west-1") == (False, False)

    bad = playbook(CREATE, extra_vars=cluster_vars(ssh_key, cluster_regions=[
        {"region": "eu-west-1", "count": 1, "instance_types": ["t4g.small", "t9.nonsense"]}]))
    assert bad.returncode != 0
    assert "t9.nonsense" in bad.stdout
    # the orchestrator (valid on its own) was not launched either
    assert cluster_resources("us-east-1") == 0 and cluster_resources("eu-west-1") == 0

    no_key = playbook(CREATE, extra_vars=cluster_vars(ssh_key, cluster_ssh_public_key_file="/nonexistent/key.pub"))
    assert no_key.returncode != 0 and "ssh-keygen" in no_key.stdout


def test_missing_credentials_stop_before_anything(aws, ssh_key):
    env = playbook_env(aws)
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", *SCRUBBED_VARS):
        env.pop(var, None)
    import json
    import sys

    cmd = [str(Path(sys.executable).parent / "ansible-playbook"), str(CREATE), "-e", json.dumps(cluster_vars(ssh_key))]
    result = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert "No usable AWS credentials" in result.stdout and "AWS_PROFILE" in result.stdout
    assert "Validate the orchestrator" not in result.stdout  # it stopped first
    assert aws.calls()["total"] == 0


def test_expired_credentials_stop_before_anything(playbook, aws, ssh_key):
    aws.expire_credentials()
    result = playbook(CREATE, extra_vars=cluster_vars(ssh_key))
    assert result.returncode != 0
    assert "No usable AWS credentials" in result.stdout
    assert "security token included in the request is expired" in result.stdout
    assert "aws sso login" in result.stdout
    assert "Validate the orchestrator" not in result.stdout  # it stopped first
    assert set(aws.calls()["by_operation"]) == {"GetCallerIdentity"}
    aws.expire_credentials(False)
    assert not instances("us-east-1") and not instances("eu-west-1")


def test_ansible_doc_renders_spot_cluster():
    import sys

    out = subprocess.run([str(Path(sys.executable).parent / "ansible-doc"), "bacalhau.aws_spot.spot_cluster"],
                         cwd=REPO, capture_output=True, text=True,
                         env={"ANSIBLE_CONFIG": str(REPO / "ansible.cfg"), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    for words in ("instance_types", "allow_partial", "RETURN VALUES", "estimated_hourly_cost"):
        assert words in out.stdout
