"""Which compute nodes run a job (cluster_rebalance does not move them): the rule, on Bacalhau v1.9.3's JSON
(ExecutionStateType as integers, pkg/models/execution.go), and through the stand-in's API."""
from __future__ import annotations

from ansible_collections.bacalhau.aws_spot.plugins.module_utils._bacalhau.nodes import busy_node_ids


def _ex(node, state, desired=1):
    return {"NodeID": node, "ComputeState": {"StateType": state}, "DesiredState": {"StateType": desired}}


def test_a_node_is_busy_while_an_execution_holds_it():
    jobs = [{"ID": "j-run", "State": {"StateType": "Running"}},
            {"ID": "j-done", "State": {"StateType": "Completed"}},
            {"ID": "j-queued", "State": {"StateType": "Queued"}}]
    executions = {
        "j-run": [_ex("n-running", 6), _ex("n-bid", 5), _ex("n-finished", 9), _ex("n-stopping", 6, desired=2)],
        "j-done": [_ex("n-old", 6)],  # a terminal job's executions are not read
        "j-queued": [_ex("n-asked", 2), _ex("n-publishing", 7)],
    }
    assert busy_node_ids(jobs, lambda job: executions[job]) == ["n-bid", "n-publishing", "n-running"]
