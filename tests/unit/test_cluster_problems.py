"""The cluster_problems filter: spot_cluster's and Ansible's words turned into the cluster file's."""
from __future__ import annotations

from ansible_collections.bacalhau.aws_spot.plugins.filter import cluster_problems as FILTER

problems = FILTER.cluster_problems
UNSUPPORTED = ("Unsupported parameters for (bacalhau.aws_spot.spot_cluster) module: regions.cout. "
               "Supported parameters include: availability_zones, count, image_id, instance_types, max_price, "
               "nats_cidrs, region.")


def test_unknown_key_names_the_entry_and_the_likely_key():
    result = {"item": {"role": "compute", "regions": [{"region": "us-east-1", "count": 1},
                                                      {"region": "eu-west-1", "cout": 3}]},
              "failed": False, "failed_when_result": False, "msg": UNSUPPORTED}
    assert problems([result]) == ["cluster_regions[1] (eu-west-1): unknown key 'cout' (did you mean 'count'?)"]


def test_orchestrator_problems_use_its_own_name():
    result = {"item": {"role": "orchestrator"}, "msg": "x",
              "problems": ["regions[0] (us-east-1).instance_types: 't3' is not an instance type name such as t3.small"]}
    assert problems([result]) == ["cluster_orchestrator.instance_type: 't3' is not an instance type name such as t3.small"]
    region = {"item": {"role": "orchestrator"}, "msg": "Nothing was created or changed, because: unknown region(s): us-esat-1."}
    assert problems([region])[0].startswith("cluster_orchestrator.region: ")


def test_a_problem_both_roles_share_is_given_once():
    bad = "ssh_cidrs: '203.0.113.0/33' is not a CIDR block such as 203.0.113.0/24"
    results = [{"item": {"role": role}, "msg": "m", "problems": [bad]} for role in ("orchestrator", "compute")]
    assert problems(results) == ["cluster_ssh_cidrs: '203.0.113.0/33' is not a CIDR block such as 203.0.113.0/24"]


def test_successful_and_skipped_results_are_no_problem():
    assert problems([{"item": {"role": "compute"}, "instances": [], "regions": {}},
                     {"item": {"role": "orchestrator"}, "skipped": True, "msg": "skipped"}]) == []
