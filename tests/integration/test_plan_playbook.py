"""playbooks/plan.yml against the emulator: the needs of issue 13's example become a cluster file
that create.yml brings up as planned, and destroy.yml takes away."""
from __future__ import annotations

from collections import Counter

import boto3
import pytest
import yaml

from tests.conftest import REPO
from tests.integration.test_create_destroy import instances, ssh_key  # noqa: F401  (a fixture)

PLAN = REPO / "playbooks" / "plan.yml"
CREATE = REPO / "playbooks" / "create.yml"
DESTROY = REPO / "playbooks" / "destroy.yml"
NEEDS = {"nodes": "40", "vcpus": "2", "memory_gib": "4", "max_hourly_cost": "1.0", "regions": "all",
         "max_regions": "5"}


@pytest.fixture(autouse=True)
def own_price_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def needs(**kw: str) -> list[str]:
    out: list[str] = []
    for key, value in dict(NEEDS, **kw).items():
        out += ["-e", f"{key}={value}"]
    return out


def role_of(instance: dict) -> str:
    return {t["Key"]: t["Value"] for t in instance["Tags"]}["bacalhau:role"]


def test_the_example_needs_become_a_cluster_that_create_brings_up(playbook, aws, tmp_path, ssh_key):  # noqa: F811
    plan_file = tmp_path / "planned.yml"
    planned = playbook(PLAN, *needs(cluster_name="planned", plan_file=str(plan_file)))
    assert planned.returncode == 0, planned.stdout[-4000:] + planned.stderr[-2000:]
    for column in ("REGION", "ZONE", "TYPE", "ARCH", "SPOT $/H", "SCORE", "COUNT", "COST $/H", "Total: 40"):
        assert column in planned.stdout

    text = plan_file.read_text()
    assert text.startswith("---\n") and "planned by playbooks/plan.yml" in text
    cluster = yaml.safe_load(text)
    assert cluster["cluster_name"] == "planned"
    entries = cluster["cluster_regions"]
    assert 1 <= len(entries) <= 5 and sum(e["count"] for e in entries) == 40
    enabled = {r["RegionName"] for r in boto3.client("ec2", region_name="us-east-1").describe_regions()["Regions"]
               if r["OptInStatus"] != "not-opted-in"}
    assert {e["region"] for e in entries} <= enabled
    assert cluster["cluster_max_hourly_cost"] == 1.0
    assert cluster["cluster_orchestrator"]["mode"] == "managed"
    # read only: nothing was launched or made
    assert not any(op.startswith(("Run", "Create", "Import")) for op in aws.calls()["by_operation"])

    created = playbook(CREATE, "-e", f"@{plan_file}", extra_vars={**ssh_key, "cluster_configure": False})
    assert created.returncode == 0, created.stdout[-4000:] + created.stderr[-2000:]
    for entry in entries:
        live = [i for i in instances(entry["region"], "planned") if role_of(i) == "compute"]
        assert len(live) == entry["count"], entry["region"]
        assert {i["InstanceType"] for i in live} <= set(entry["instance_types"])
        assert set(Counter(i["Placement"]["AvailabilityZone"] for i in live)) <= set(entry["availability_zones"])
    orchestrator = cluster["cluster_orchestrator"]
    orchestrators = [i for i in instances(orchestrator["region"], "planned") if role_of(i) == "orchestrator"]
    assert [i["InstanceType"] for i in orchestrators] == [orchestrator["instance_type"]]

    destroyed = playbook(DESTROY, "-e", f"@{plan_file}")
    assert destroyed.returncode == 0, destroyed.stdout[-4000:] + destroyed.stderr[-2000:]
    for entry in entries:
        assert instances(entry["region"], "planned") == []


def test_a_plan_over_the_cap_is_refused_and_writes_nothing(playbook, aws, tmp_path):
    plan_file = tmp_path / "dear.yml"
    refused = playbook(PLAN, *needs(max_hourly_cost="0.05", regions="eu-west-1,us-east-1", max_regions="2",
                                    plan_file=str(plan_file)))
    assert refused.returncode != 0
    assert "above max_hourly_cost 0.0500" in refused.stdout
    assert not plan_file.exists()


def test_an_existing_cluster_file_is_not_overwritten(playbook, aws, tmp_path):
    plan_file = tmp_path / "mine.yml"
    plan_file.write_text("cluster_name: mine\n")
    refused = playbook(PLAN, *needs(regions="eu-west-1", plan_file=str(plan_file)))
    assert refused.returncode != 0 and "plan_force=true" in refused.stdout
    assert plan_file.read_text() == "cluster_name: mine\n"
    # and no AWS call was made for it
    assert aws.calls()["by_operation"] == {}


def test_zero_nodes_is_named_as_the_problem(playbook, aws, tmp_path):
    plan_file = tmp_path / "none.yml"
    refused = playbook(PLAN, *needs(nodes="0", regions="eu-west-1", plan_file=str(plan_file)))
    assert refused.returncode != 0
    assert "nodes: 0 must be from 1" in refused.stdout, refused.stdout[-3000:]
    assert "Say what the cluster needs" not in refused.stdout
    assert not plan_file.exists()
    assert not {op for op in aws.calls()["by_operation"] if not op.startswith(("Get", "List"))}
