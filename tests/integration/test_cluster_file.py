"""A cluster file's mistakes get one message in the file's own words, and nothing is created.

playbooks/create.yml and destroy.yml against the emulator, as a user runs them.
"""
from __future__ import annotations

import re

from tests.integration.test_create_destroy import CREATE, DESTROY, cluster_resources, cluster_vars, ssh_key  # noqa: F401

STATUS = CREATE.parent / "status.yml"


def _error_lines(out: str) -> str:
    return "\n".join(line for line in out.splitlines() if "Nothing was created" in line or "msg:" in line)


def test_no_cluster_file_acts_on_nothing(playbook, aws):
    for book in (CREATE, DESTROY, STATUS):
        aws.reset_calls()
        result = playbook(book)
        assert result.returncode != 0, book
        assert "Which cluster? Pass your cluster file" in result.stdout, result.stdout[-3000:]
        assert aws.calls()["total"] == 0, f"{book.name} called AWS without a cluster: {aws.calls()['by_operation']}"


def test_misspelt_key_is_named_as_written(playbook, aws, ssh_key):  # noqa: F811
    result = playbook(CREATE, extra_vars=cluster_vars(ssh_key, cluster_regions=[
        {"region": "us-east-1", "count": 1, "instance_types": ["t3.small"]},
        {"region": "eu-west-1", "cout": 3, "instance_types": ["t4g.small"]}]))
    assert result.returncode != 0
    out = result.stdout
    assert "cluster_regions[1] (eu-west-1): unknown key 'cout' (did you mean 'count'?)" in out, out[-3000:]
    assert "must be a non-empty list" not in out
    assert cluster_resources("us-east-1") == 0 and cluster_resources("eu-west-1") == 0


def test_orchestrator_region_typo_is_reported_under_its_name(playbook, aws, ssh_key):  # noqa: F811
    result = playbook(CREATE, extra_vars=cluster_vars(ssh_key, cluster_orchestrator={
        "mode": "managed", "region": "us-esat-1", "instance_type": "t3.small", "market": "on-demand"}))
    assert result.returncode != 0
    message = next(line for line in result.stdout.splitlines() if "Nothing was created, because:" in line)
    assert "cluster_orchestrator.region" in message and "us-esat-1" in message, message
    assert "regions[0]" not in message
    assert cluster_resources("us-east-1") == 0 and cluster_resources("eu-west-1") == 0


def test_bad_cidr_is_reported_once(playbook, aws, ssh_key):  # noqa: F811
    result = playbook(CREATE, extra_vars=cluster_vars(ssh_key, cluster_ssh_cidrs=["203.0.113.0/33"]))
    assert result.returncode != 0
    message = next(line for line in result.stdout.splitlines() if "Nothing was created, because:" in line)
    assert len(re.findall(r"203\.0\.113\.0/33", message)) == 1, message
    assert "cluster_ssh_cidrs" in message
    assert cluster_resources("us-east-1") == 0


def test_destroy_limited_to_the_file_s_regions(playbook, aws, ssh_key):  # noqa: F811
    made = playbook(CREATE, extra_vars=cluster_vars(ssh_key, cluster_name="it-limited"))
    assert made.returncode == 0, made.stdout[-3000:]
    gone = playbook(DESTROY, extra_vars=cluster_vars(ssh_key, cluster_name="it-limited", cluster_destroy_all_regions=False))
    assert gone.returncode == 0, gone.stdout[-3000:]
    assert cluster_resources("us-east-1", "it-limited") == 0 and cluster_resources("eu-west-1", "it-limited") == 0
    regions = {c["region"] for c in aws.calls()["log"] if c.get("operation") == "DescribeInstances"}
    assert regions <= {"us-east-1", "eu-west-1"}, f"destroy.yml searched {regions} with cluster_destroy_all_regions=false"
