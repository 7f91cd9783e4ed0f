"""bacalhau.aws_spot.bacalhau_job against the stand-in Bacalhau on loopback (an orchestrator and
compute nodes as real processes; each compute node's `docker` is the fake one of test_standin.py,
since Docker's engine does not run on this machine; the test hosts run it with real Docker)."""

from __future__ import annotations

import pytest

from tests.unit.test_standin import World, api


def smoke(*instance_ids: str, cmd: str = "echo ok on $(uname -m)", image: str = "busybox:1.35") -> dict:
    return {
        "Name": "smoke",
        "Type": "ops",
        "Constraints": [{"Key": "instance-id", "Operator": "in", "Values": list(instance_ids)}],
        "Tasks": [{"Name": "smoke", "Engine": {"Type": "docker", "Params": {
            "Image": image, "Entrypoint": ["/bin/sh", "-c"], "Parameters": [cmd]}}}],
    }


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    w = World(tmp_path_factory.mktemp("job"), {
        "a": {"labels": {"region": "us-east-1", "instance-id": "i-aaa"}},
        "b": {"labels": {"region": "eu-west-1", "instance-id": "i-bbb"}},
    })
    try:
        assert len(w.wait_nodes(2)) == 2
        yield w
    finally:
        w.close()


def job_count(world: World) -> int:
    return len(api(world.orch.port, "GET", "/api/v1/orchestrator/jobs?limit=1000")["Items"])


def args(world: World, job: dict, **extra) -> dict:
    return {"api_url": f"http://127.0.0.1:{world.orch.port}", "job": job, "poll_interval": 0.1, **extra}


def test_ops_job_runs_on_every_expected_node_and_returns_its_output(cluster, run_local_module):
    res = run_local_module("bacalhau_job", args(cluster, smoke("i-aaa", "i-bbb"), expect_nodes=["i-aaa", "i-bbb"]))
    assert not res.failed, res
    assert res.changed and res["job_id"].startswith("j-")
    assert res["state"] == "Completed"
    by_node = {e["node_labels"]["instance-id"]: e for e in res["executions"]}
    assert set(by_node) == {"i-aaa", "i-bbb"}
    for execution in by_node.values():
        assert execution["state"] == "Completed" and execution["exit_code"] == 0
        assert execution["stdout"].startswith("ok on ")
    assert [(r["value"], r["ok"]) for r in res["expected"]] == [("i-aaa", True), ("i-bbb", True)]
    assert res["expected"][1]["labels"]["region"] == "eu-west-1"


def test_a_node_that_exits_non_zero_is_named_with_its_region_and_stderr(cluster, run_local_module):
    res = run_local_module("bacalhau_job", args(cluster, smoke("i-bbb", cmd="echo broken >&2; exit 3"),
                                                expect_nodes=["i-bbb"]))
    assert res.failed
    assert "did not run on 1 of 1 node(s)" in res["msg"]
    assert "(instance-id i-bbb, region eu-west-1)" in res["msg"]
    assert "exited with 3: broken" in res["msg"]


def test_an_expected_node_the_job_never_reached_is_named(cluster, run_local_module):
    # i-zzz is no node of the cluster: the orchestrator cannot have sent it anything
    res = run_local_module("bacalhau_job", args(cluster, smoke("i-aaa"), expect_nodes=["i-aaa", "i-zzz"]))
    assert res.failed
    assert "did not run on 1 of 2 node(s)" in res["msg"]
    assert "i-zzz" in res["msg"] and "the orchestrator does not know this node" in res["msg"]


def test_a_name_submitted_again_is_judged_by_its_new_version_only(cluster, run_local_module):
    # Bacalhau takes a known Name as a new version of that job: the first version's success on
    # i-aaa must not hide the second version's failure there.
    first = smoke("i-aaa")
    first["Name"] = "resubmitted"
    assert not run_local_module("bacalhau_job", args(cluster, first, expect_nodes=["i-aaa"])).failed
    second = smoke("i-aaa", cmd="exit 4")
    second["Name"] = "resubmitted"
    res = run_local_module("bacalhau_job", args(cluster, second, expect_nodes=["i-aaa"]))
    assert res.failed and "exited with 4" in res["msg"]
    assert res["job"]["Version"] == 2
    assert len(res["executions"]) == 1


def test_fail_on_job_failure_false_returns_the_outcome_without_failing(cluster, run_local_module):
    res = run_local_module("bacalhau_job", args(cluster, smoke("i-aaa", cmd="exit 1"), expect_nodes=["i-aaa"],
                                                fail_on_job_failure=False))
    assert not res.failed, res
    assert res["expected"][0]["ok"] is False and res["expected"][0]["reason"] == "exited with 1"


def test_check_mode_submits_nothing(cluster, run_local_module):
    before = job_count(cluster)
    res = run_local_module("bacalhau_job", args(cluster, smoke("i-aaa")), check_mode=True)
    assert not res.failed and res.changed and res["job_id"] is None
    assert job_count(cluster) == before


def test_an_invalid_job_fails_before_anything_is_submitted(cluster, run_local_module):
    before = job_count(cluster)
    res = run_local_module("bacalhau_job", args(cluster, {"Name": "x", "Type": "ops", "Tasks": []}))
    assert res.failed and "job.Tasks must be a list with one task" in res["msg"]
    res = run_local_module("bacalhau_job", args(cluster, {"Type": "cron", "Tasks": [{"Name": "t"}]}))
    assert res.failed and "job.Type must be one of batch, ops, service, daemon" in res["msg"]
    assert job_count(cluster) == before


def test_bacalhaus_own_refusal_is_passed_on(cluster, run_local_module):
    job = smoke("i-aaa")
    job["Constraints"] = [{"Key": "instance-id", "Operator": "in", "Values": []}]
    res = run_local_module("bacalhau_job", args(cluster, job))
    assert res.failed
    assert "Bacalhau did not accept the job 'smoke'" in res["msg"]
    assert "answered 400" in res["msg"] and "cannot be empty for In or NotIn operators" in res["msg"]


def test_a_job_still_running_at_the_timeout_is_stopped_and_fails(cluster, run_local_module):
    res = run_local_module("bacalhau_job", args(cluster, smoke("i-aaa", cmd="sleep 30"), timeout=1))
    assert res.failed
    assert "did not end within 1 s" in res["msg"] and "it was stopped" in res["msg"]
    job = api(cluster.orch.port, "GET", f"/api/v1/orchestrator/jobs/{res['job_id']}")["Job"]
    assert job["State"]["StateType"] == "Stopped"


def test_an_unreachable_api_says_where_it_looked(run_local_module):
    res = run_local_module("bacalhau_job", {"api_url": "http://127.0.0.1:1", "job": smoke("i-aaa")})
    assert res.failed
    assert "cannot reach Bacalhau's API at http://127.0.0.1:1" in res["msg"]
