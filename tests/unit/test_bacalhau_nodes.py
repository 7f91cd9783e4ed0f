"""bacalhau.aws_spot.bacalhau_nodes against the stand-in Bacalhau on loopback (an orchestrator and
compute nodes as real processes), and its cause table against the lines Bacalhau v1.9.3 logs."""

from __future__ import annotations

import time

import pytest

from ansible_collections.bacalhau.aws_spot.plugins.module_utils._bacalhau.causes import CAUSES, diagnose
from tests.unit.test_bacalhau_job import cluster  # noqa: F401 (fixture: i-aaa in us-east-1, i-bbb in eu-west-1)
from tests.unit.test_standin import ADMIN_KEY, KEY, World, api, free_port, pki, secured  # noqa: F401 (fixtures)


def states(world: World) -> dict[str, dict]:
    """The orchestrator's compute nodes by instance-id label (or node id)."""
    out = {}
    for s in api(world.orch.port, "GET", "/api/v1/orchestrator/nodes")["Nodes"]:
        if s["Info"]["NodeType"] == "Compute":
            out[(s["Info"].get("Labels") or {}).get("instance-id") or s["Info"]["NodeID"]] = s
    return out


def args(world: World, **extra) -> dict:
    return {"api_url": f"http://127.0.0.1:{world.orch.port}", "poll_interval": 0.2, **extra}


def wait_until(check, timeout: float = 10.0):
    deadline = time.time() + timeout
    while not check():
        assert time.time() < deadline, "timed out"
        time.sleep(0.1)


def test_lists_and_classifies_without_changing_anything(cluster, run_local_module):
    res = run_local_module("bacalhau_nodes", args(cluster, instance_ids=["i-aaa", "i-bbb", "i-ccc"]))
    assert not res.failed, res
    assert not res.changed
    assert sorted(res["connected"]) == ["i-aaa", "i-bbb"]
    assert res["pending"] == [] and res["disconnected"] == [] and res["gone"] == [] and res["missing"] == []
    by_id = {n["instance_id"]: n for n in res["nodes"] if n["node_type"] == "Compute"}
    assert by_id["i-bbb"]["labels"]["region"] == "eu-west-1"
    assert by_id["i-aaa"]["connection"] == "CONNECTED" and by_id["i-aaa"]["membership"] == "APPROVED"
    assert by_id["i-aaa"]["node_id"] == cluster.computes["a"].node_id and by_id["i-aaa"]["last_heartbeat"]
    assert [n["node_type"] for n in res["nodes"]].count("Requester") == 1
    # only the cluster's own are counted as its connected nodes
    assert run_local_module("bacalhau_nodes", args(cluster, instance_ids=["i-aaa"]))["connected"] == ["i-aaa"]


def test_wait_for_a_node_that_is_there_returns_at_once(cluster, run_local_module):
    start = time.monotonic()
    res = run_local_module("bacalhau_nodes", args(cluster, wait_for=["i-aaa", cluster.computes["b"].node_id]))
    assert not res.failed and res["missing"] == [] and not res.changed
    assert time.monotonic() - start < 5


def test_approves_the_clusters_own_pending_nodes_and_no_other(tmp_path, run_local_module):
    w = World(tmp_path, {"a": {"labels": {"instance-id": "i-aaa"}}, "b": {"labels": {"instance-id": "i-bbb"}},
                         "x": {"labels": {"instance-id": "i-other"}}, "y": {}},
              orch_cfg={"NodeManager": {"ManualApproval": True}})
    try:
        assert len(w.wait_nodes(4)) == 4
        mine = ["i-aaa", "i-bbb"]
        # check mode: says what it would approve, approves nothing, does not wait
        res = run_local_module("bacalhau_nodes", args(w, instance_ids=mine, approve=True, wait_for=mine, timeout=30),
                               check_mode=True)
        assert not res.failed and res.changed, res
        assert sorted(res["approved"]) == mine and sorted(res["connected"]) == mine and res["missing"] == []
        assert {k: s["Membership"] for k, s in states(w).items() if k.startswith("i-")} == {
            "i-aaa": "PENDING", "i-bbb": "PENDING", "i-other": "PENDING"}

        res = run_local_module("bacalhau_nodes", args(w, instance_ids=mine, approve=True, wait_for=mine, timeout=30))
        assert not res.failed and res.changed, res
        assert sorted(res["approved"]) == mine and sorted(res["connected"]) == mine and res["pending"] == []
        after = states(w)
        assert after["i-aaa"]["Membership"] == after["i-bbb"]["Membership"] == "APPROVED"
        # another cluster's node and a node without the label stay as they were
        assert after["i-other"]["Membership"] == "PENDING"
        assert [s["Membership"] for k, s in after.items() if not k.startswith("i-")] == ["PENDING"]

        again = run_local_module("bacalhau_nodes", args(w, instance_ids=mine, approve=True, wait_for=mine))
        assert not again.failed and not again.changed and again["approved"] == []
    finally:
        w.close()


def test_a_pending_node_not_approved_is_missing_with_its_cause(tmp_path, run_local_module):
    w = World(tmp_path, {"a": {"labels": {"instance-id": "i-aaa", "region": "eu-west-1"}}},
              orch_cfg={"NodeManager": {"ManualApproval": True}})
    try:
        assert len(w.wait_nodes(1)) == 1
        res = run_local_module("bacalhau_nodes", args(w, instance_ids=["i-aaa"], wait_for=["i-aaa"], timeout=1))
        assert res.failed and res["missing"] == ["i-aaa"]
        assert res["causes"]["i-aaa"]["key"] == "pending"
        assert "1 node(s) not CONNECTED and APPROVED" in res["msg"]
        assert "i-aaa (eu-west-1): PENDING approval on the orchestrator" in res["msg"]
        assert f"bacalhau node approve {w.computes['a'].node_id}" in res["msg"]
        assert states(w)["i-aaa"]["Membership"] == "PENDING"
    finally:
        w.close()


def test_approve_and_forget_gone_need_the_clusters_instances(cluster, run_local_module):
    for opt in ("approve", "forget_gone"):
        res = run_local_module("bacalhau_nodes", args(cluster, **{opt: True}))
        assert res.failed and "give instance_ids" in res["msg"]


def test_forget_deletes_the_named_nodes_once(tmp_path, run_local_module):
    w = World(tmp_path, {"a": {"labels": {"instance-id": "i-aaa"}}, "b": {"labels": {"instance-id": "i-bbb"}}})
    try:
        assert len(w.wait_nodes(2)) == 2
        w.computes["b"].stop()  # a graceful stop: DISCONNECTED at once (nodes/manager.go ShutdownNotice)
        wait_until(lambda: states(w)["i-bbb"]["ConnectionState"]["Status"] == "DISCONNECTED")

        res = run_local_module("bacalhau_nodes", args(w, forget=["i-bbb"]), check_mode=True)
        assert res.changed and res["forgotten"] == ["i-bbb"] and "i-bbb" in states(w)

        res = run_local_module("bacalhau_nodes", args(w, forget=["i-bbb"], instance_ids=["i-aaa", "i-bbb"]))
        assert not res.failed and res.changed and res["forgotten"] == ["i-bbb"], res
        assert set(states(w)) == {"i-aaa"}
        assert res["disconnected"] == [] and res["connected"] == ["i-aaa"]

        again = run_local_module("bacalhau_nodes", args(w, forget=["i-bbb"]))
        assert not again.failed and not again.changed and again["forgotten"] == []
    finally:
        w.close()


def test_forget_gone_deletes_disconnected_nodes_of_gone_instances_only(tmp_path, run_local_module):
    w = World(tmp_path, {"live": {"labels": {"instance-id": "i-live"}},
                         "gone": {"labels": {"instance-id": "i-gone"}},
                         "down": {"labels": {"instance-id": "i-down"}},
                         "nolabel": {}})
    try:
        assert len(w.wait_nodes(4)) == 4
        for name in ("gone", "down", "nolabel"):
            w.computes[name].stop()
        wait_until(lambda: sum(s["ConnectionState"]["Status"] == "DISCONNECTED" for s in states(w).values()) == 3)
        live = ["i-live", "i-down"]  # i-down's instance still exists: it is kept, only disconnected

        res = run_local_module("bacalhau_nodes", args(w, instance_ids=live))
        assert not res.changed and res["gone"] == ["i-gone"] and len(res["disconnected"]) == 3
        # what a heal configures no more: by hand, the connected only (so it restarts i-down); for the
        # autoheal rulebook, the cluster's disconnected too (not i-gone's, nor the unlabelled node)
        assert res["joined"] == ["i-live"]
        rulebook = run_local_module("bacalhau_nodes", args(w, instance_ids=live, disconnected_as_joined=True))
        assert sorted(rulebook["joined"]) == ["i-down", "i-live"] and not rulebook.changed

        res = run_local_module("bacalhau_nodes", args(w, instance_ids=live, forget_gone=True), check_mode=True)
        assert res.changed and res["forgotten"] == ["i-gone"] and "i-gone" in states(w)

        res = run_local_module("bacalhau_nodes", args(w, instance_ids=live, forget_gone=True, cluster_name="demo"))
        assert not res.failed and res.changed and res["forgotten"] == ["i-gone"], res
        left = states(w)
        assert "i-gone" not in left and {"i-live", "i-down"} <= set(left)
        assert len(left) == 3  # the node without an instance-id label is no instance of ours: kept

        again = run_local_module("bacalhau_nodes", args(w, instance_ids=live, forget_gone=True))
        assert not again.changed and again["forgotten"] == []
    finally:
        w.close()


def test_forget_gone_on_a_shared_orchestrator_leaves_other_clusters_nodes_alone(tmp_path, run_local_module):
    # an external orchestrator two clusters share: beta's node is restarting (DISCONNECTED), and its
    # instance is not among demo's; demo's heal must not delete it. demo's own gone node goes.
    w = World(tmp_path, {"ours": {"labels": {"instance-id": "i-ours", "cluster": "demo"}},
                         "gone": {"labels": {"instance-id": "i-gone", "cluster": "demo"}},
                         "beta": {"labels": {"instance-id": "i-beta", "cluster": "beta"}}})
    try:
        assert len(w.wait_nodes(3)) == 3
        for name in ("gone", "beta"):
            w.computes[name].stop()
        wait_until(lambda: sum(s["ConnectionState"]["Status"] == "DISCONNECTED" for s in states(w).values()) == 2)
        res = run_local_module("bacalhau_nodes", args(w, instance_ids=["i-ours"], forget_gone=True, cluster_name="demo"))
        assert not res.failed and res["gone"] == ["i-gone"] and res["forgotten"] == ["i-gone"], res
        assert "i-beta" in states(w) and "i-gone" not in states(w)
        # without the cluster's name there is nothing to tell them apart by: the old rule (instance ids only)
        blind = run_local_module("bacalhau_nodes", args(w, instance_ids=["i-ours"]))
        assert blind["gone"] == ["i-beta"]
    finally:
        w.close()


def test_missing_nodes_are_named_with_the_cause_in_their_journal(tmp_path, run_local_module):
    w = World(tmp_path, {"ok": {"labels": {"instance-id": "i-ok"}}})
    try:
        dead = free_port()
        lost = w.add_compute("lost", labels={"instance-id": "i-lost"}, orchestrator=f"nats://127.0.0.1:{dead}")
        bad = w.add_compute("bad", labels={"instance-id": "i-bad"}, token="wrong")
        assert len(w.wait_nodes(1)) == 1
        wait_until(lambda: "Connection attempt failed" in lost.log.read_text()
                   and "Authorization Violation" in bad.log.read_text())
        logs = {"i-lost": lost.log.read_text(), "i-bad": bad.log.read_text()}
        res = run_local_module("bacalhau_nodes", args(w, instance_ids=["i-ok", "i-lost", "i-bad"],
                                                      wait_for=["i-ok", "i-lost", "i-bad"], timeout=1, logs=logs))
        assert res.failed and sorted(res["missing"]) == ["i-bad", "i-lost"]
        assert res["causes"]["i-bad"]["key"] == "wrong_token"
        assert res["causes"]["i-lost"]["key"] == "unreachable_refused"
        assert "WRONG AUTH TOKEN: nats: Authorization Violation" in res["msg"]
        assert f"ORCHESTRATOR UNREACHABLE: no orchestrator available for connection at nats://127.0.0.1:{dead} " \
               in res["msg"]
        # fail_on_missing=false: the same, returned
        res = run_local_module("bacalhau_nodes", args(w, wait_for=["i-lost"], timeout=0, logs=logs,
                                                      fail_on_missing=False))
        assert not res.failed and res["missing"] == ["i-lost"] and res["causes"]["i-lost"]["check"]
        # the address given is no orchestrator (a compute node's API has no such route): the module
        # waits its timeout, then names the API's answer and the cause from the node's journal
        res = run_local_module("bacalhau_nodes", {"api_url": f"http://127.0.0.1:{lost.port}", "poll_interval": 0.2,
                                                  "wait_for": ["i-lost"], "timeout": 1, "logs": logs})
        assert res.failed and "its API did not answer: Bacalhau's API answered 404" in res["msg"], res["msg"]
        assert "i-lost: ORCHESTRATOR UNREACHABLE: no orchestrator available for connection at" in res["msg"]
        # a node without a journal that the orchestrator never saw
        res = run_local_module("bacalhau_nodes", args(w, wait_for=["i-nowhere"], timeout=0))
        assert res.failed and "i-nowhere: not listed by the orchestrator" in res["msg"]
    finally:
        w.close()


def test_an_api_that_does_not_answer_is_named(run_local_module):
    res = run_local_module("bacalhau_nodes", {"api_url": f"http://127.0.0.1:{free_port()}", "timeout": 0})
    assert res.failed and "cannot reach Bacalhau's API" in res["msg"] and "Is Bacalhau running there?" in res["msg"]


def test_an_orchestrator_waits_for_itself_over_tls_with_its_key(secured, pki, run_local_module):
    orch, _ctx, _bearer = secured
    base = {"api_url": f"https://127.0.0.1:{orch.port}", "ca_path": str(pki / "ca.crt"), "poll_interval": 0.2,
            "timeout": 5, "refusal_hint": "give the key"}
    res = run_local_module("bacalhau_nodes", dict(base, api_key=ADMIN_KEY, wait_for_self=True))
    assert not res.failed and res["missing"] == [], res
    assert ADMIN_KEY not in str(res)
    me = [n for n in res["nodes"] if n["node_id"] == orch.node_id]
    assert me and me[0]["node_type"] == "Requester"


@pytest.mark.parametrize("key, words", [
    (None, "MISSING API KEY: the orchestrator API answered 401 Request Unauthorized (Missing Authorization header): "
           "give the key."),
    ("wrong-key-wrong-key-wrong", "WRONG API KEY: the orchestrator API answered 401 Request Unauthorized "
                                  "(invalid API key): give the key."),
    # the ops key may read nodes, not the agent (read:agent)
    (KEY, "API KEY LACKS A CAPABILITY: the orchestrator API answered 403"),
])
def test_the_apis_refusals_are_named_as_bacalhau_answers_them(secured, pki, run_local_module, key, words):
    orch, _ctx, _bearer = secured
    args_ = {"api_url": f"https://127.0.0.1:{orch.port}", "ca_path": str(pki / "ca.crt"), "timeout": 5,
             "wait_for_self": True, "refusal_hint": "give the key"}
    if key:
        args_["api_key"] = key
    res = run_local_module("bacalhau_nodes", args_)
    assert res.failed and res["msg"].startswith(words), res["msg"]
    assert not key or key not in str(res)


# ------------------------------------------------------------------- the cause table, line by line
PREFIX = '15:04:05.000 | ERR Connection attempt failed error="failed to setup transport: failed to connect to NATS: '
URL = "nats://203.0.113.7:4222"

# One line per cause, as Bacalhau v1.9.3 writes it (pkg/nats/errors.go around nats.go's and Go's errors).
LINES = {
    "wrong_token": f"failed to connect to {URL}: nats: Authorization Violation",
    "no_tls": f"failed to connect to {URL}: nats: secure connection not available",
    "wrong_ca": f"failed to connect to {URL}: nats: tls error: tls: failed to verify certificate: "
                "x509: certificate signed by unknown authority",
    "bad_certificate": f"failed to connect to {URL}: nats: tls error: tls: failed to verify certificate: "
                       "x509: certificate is valid for 10.0.0.1, not 203.0.113.7",
    "ca_file": f"failed to connect to {URL}: nats: error loading or parsing rootCA file: open /etc/bacalhau/tls/ca.crt: "
               "no such file or directory",
    "tls_first": f"failed to connect to {URL}: nats: tls error: tls: first record does not look like a TLS handshake",
    "tls": f"failed to connect to {URL}: nats: tls error: remote error: tls: handshake failure",
    # a security group that drops 4222: nats.go keeps the dial error (only "connection refused" is ErrNoServers)
    "unreachable_timeout": f"failed to connect to {URL}: dial tcp 203.0.113.7:4222: i/o timeout",
    # nothing listens: nats.go's ErrNoServers, as pkg/nats/errors.go words it
    "unreachable_refused": f"no orchestrator available for connection at {URL}",
    "unreachable_network": f"failed to connect to {URL}: dial tcp 203.0.113.7:4222: connect: no route to host",
}


def journal(error: str) -> str:
    return ("15:04:01.000 | INF starting bacalhau\n"
            '15:04:02.000 | WRN failed to start legacy connection manager. falling back to ncl protocol '
            f'error="failed to create NATS client: {error}"\n'
            f'{PREFIX}{error}" backoffDuration=2s consecutiveFailures=3\n')


def test_every_cause_has_a_line_and_every_line_its_cause():
    assert set(LINES) == {c.key for c in CAUSES}
    for key, error in LINES.items():
        d = diagnose(journal(error))
        assert d["key"] == key, (key, d)
        assert d["message"].startswith(d["title"] + ": ") and d["check"] and d["line"].startswith(PREFIX[:12])


def test_both_unreachable_forms_are_named_with_the_cause_and_what_to_check():
    timeout = diagnose(journal(LINES["unreachable_timeout"]))
    assert timeout["message"].startswith(
        f"ORCHESTRATOR UNREACHABLE: failed to connect to {URL}: dial tcp 203.0.113.7:4222: i/o timeout - ")
    assert "security group" in timeout["meaning"] and "4222" in timeout["check"]
    refused = diagnose(journal(LINES["unreachable_refused"]))
    assert refused["message"].startswith(f"ORCHESTRATOR UNREACHABLE: no orchestrator available for connection at {URL} - ")
    assert "connection refused" in refused["meaning"] and "systemctl status bacalhau" in refused["check"]


def test_the_last_error_counts_and_a_quiet_journal_says_so():
    text = journal(LINES["wrong_token"]) + journal(LINES["unreachable_timeout"])
    assert diagnose(text)["key"] == "unreachable_timeout"
    assert diagnose("15:04:01.000 | INF starting bacalhau\n")["key"] == "no_error"
    assert diagnose(journal("failed to connect to nats://h:4222: something new"))["key"] == "unknown"


def test_the_module_reads_the_timeout_line_from_given_logs(cluster, run_local_module):
    res = run_local_module("bacalhau_nodes", args(cluster, wait_for=["i-new"], timeout=0,
                                                  logs={"i-new": journal(LINES["unreachable_timeout"])}))
    assert res.failed and res["causes"]["i-new"]["key"] == "unreachable_timeout"
    assert "i/o timeout - the dial timed out" in res["msg"]
