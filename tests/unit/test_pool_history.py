"""The pool history (plugins/module_utils/_placement/history.py): what each instance's life
says about its pool, merged by instance id, bounded, and safe against a killed run or a
corrupt file."""
from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys
import textwrap

from ansible_collections.bacalhau.aws_spot.plugins.module_utils._placement import history as ph

T0 = datetime.datetime(2026, 12, 1, 12, 0, tzinfo=datetime.timezone.utc)


def at(minutes: float) -> datetime.datetime:
    return T0 + datetime.timedelta(minutes=minutes)


def instance(iid, state="running", zone="eu-west-1a", itype="t4g.small", launched=0, code=None, spot=True,
             transition="", tags=None, role="compute"):
    found = {"InstanceId": iid, "State": {"Name": state}, "Placement": {"AvailabilityZone": zone},
             "InstanceType": itype, "LaunchTime": at(launched), "StateTransitionReason": transition,
             "Tags": [{"Key": "bacalhau:role", "Value": role}] + [{"Key": k, "Value": v} for k, v in (tags or {}).items()]}
    if spot:
        found["InstanceLifecycle"] = "spot"
    if code:
        found["StateReason"] = {"Code": code, "Message": f"{code}: ..."}
    return found


def test_records_pool_market_launch_and_each_kind_of_end():
    h = ph.History()
    h.release(["i-ours"], "scale-down", at(55))
    h.release(["i-reb"], "rebalance", at(56))
    h.observe({"eu-west-1": [
        instance("i-run"),
        instance("i-od", spot=False, role="orchestrator"),
        instance("i-int", "terminated", code="Server.SpotInstanceTermination"),
        instance("i-ours", "terminated", code="Client.UserInitiatedShutdown",
                 transition="User initiated (2026-12-01 12:57:00 GMT)"),
        instance("i-reb", "shutting-down", code="Client.UserInitiatedShutdown"),
        instance("i-tag", "terminated", code="Client.UserInitiatedShutdown", tags={ph.RELEASE_TAG: "moved"}),
        instance("i-else", "terminated", code="Client.UserInitiatedShutdown"),
    ]}, at(60))
    r = h.records
    assert (r["i-run"]["region"], r["i-run"]["zone"], r["i-run"]["instance_type"], r["i-run"]["market"]) == \
        ("eu-west-1", "eu-west-1a", "t4g.small", "spot")
    assert r["i-run"]["launch_time"] == "2026-12-01T12:00:00Z" and r["i-run"]["end_time"] is None
    assert r["i-od"]["market"] == "on-demand" and r["i-od"]["role"] == "orchestrator"
    assert {i: r[i]["end_reason"] for i in r if r[i]["end_time"]} == {
        "i-int": "spot-interruption", "i-ours": "by-collection", "i-reb": "rebalance",
        "i-tag": "by-collection", "i-else": "by-someone-else"}
    assert r["i-int"]["state_reason"] == "Server.SpotInstanceTermination"
    # exact times: StateTransitionReason's, else our release's; else the read's (an upper bound)
    assert (r["i-ours"]["end_time"], r["i-ours"]["end_exact"]) == ("2026-12-01T12:57:00Z", True)
    assert (r["i-reb"]["end_time"], r["i-reb"]["end_exact"]) == ("2026-12-01T12:56:00Z", True)
    assert (r["i-int"]["end_time"], r["i-int"]["end_exact"]) == ("2026-12-01T13:00:00Z", False)


def test_events_give_exact_end_times_even_after_the_first_read():
    h = ph.History()
    h.observe({"eu-west-1": [instance("i-1", "terminated", code="Server.SpotInstanceTermination")]}, at(60))
    assert h.records["i-1"]["end_exact"] is False
    warning = {"detail-type": "EC2 Spot Instance Interruption Warning", "time": "2026-12-01T12:40:00Z",
               "detail": {"instance-id": "i-1", "instance-action": "terminate"}}
    assert h.observe({"eu-west-1": []}, at(70), events=[warning])
    assert (h.records["i-1"]["end_time"], h.records["i-1"]["end_exact"]) == ("2026-12-01T12:42:00Z", True)
    state = {"detail-type": "EC2 Instance State-change Notification", "time": "2026-12-01T12:41:30Z",
             "detail": {"instance-id": "i-2", "state": "terminated"}}
    h.observe({"eu-west-1": [instance("i-2", "terminated", code="Server.SpotInstanceTermination")]}, at(90),
              events=[state, dict(warning, detail={"instance-id": "i-2"})])
    assert h.records["i-2"]["end_time"] == "2026-12-01T12:41:30Z"  # the state change wins over the warning


def test_merge_is_idempotent_and_later_reads_only_add_what_is_new():
    h = ph.History()
    seen = {"eu-west-1": [instance("i-1"), instance("i-2", "terminated", code="Server.SpotInstanceTermination")]}
    assert h.observe(seen, at(10))
    first = json.dumps(h.as_document(), sort_keys=True)
    assert not h.observe(seen, at(10))
    assert not h.observe(seen, at(30))  # the same instances read later: nothing changes
    assert json.dumps(h.as_document(), sort_keys=True) == first
    # i-1 ends: its record is closed once; AWS's code later wins over a guess
    h.observe({"eu-west-1": [instance("i-1", "terminated", code="Client.UserInitiatedShutdown")]}, at(40))
    assert h.records["i-1"]["end_reason"] == "by-someone-else"
    assert not h.observe({"eu-west-1": [instance("i-1", "terminated", code="Client.UserInitiatedShutdown")]}, at(50))
    assert h.records["i-1"]["end_time"] == "2026-12-01T12:40:00Z"


def test_a_release_not_carried_out_is_dropped_after_an_hour_so_a_later_end_is_not_taken_for_ours():
    h = ph.History()
    h.release(["i-1", "i-2"], "scale-down", at(0))
    h.observe({"eu-west-1": [instance("i-1"), instance("i-2")]}, at(30))
    assert set(h.released) == {"i-1", "i-2"}  # within the grace: the termination may be under way
    h.observe({"eu-west-1": [instance("i-1"), instance("i-2")]}, at(61))
    assert h.released == {}
    h.observe({"eu-west-1": [instance("i-1", "terminated", code="Client.UserInitiatedShutdown")]}, at(90))
    assert h.records["i-1"]["end_reason"] == "by-someone-else"


def test_an_instance_gone_from_a_complete_read_is_closed_as_unknown_and_only_there():
    h = ph.History()
    h.observe({"eu-west-1": [instance("i-1")], "us-east-1": [instance("i-2", zone="us-east-1a")]}, at(0))
    h.observe({"eu-west-1": [], "us-east-1": []}, at(180), complete_regions=["eu-west-1"])
    assert h.records["i-1"]["end_reason"] == "unknown" and h.records["i-1"]["end_exact"] is False
    assert h.records["i-2"]["end_time"] is None  # us-east-1 was not read whole


def test_bound_keeps_running_ones_and_the_newest_ended_within_the_window():
    h = ph.History()
    h.observe({"eu-west-1": [instance("i-run", launched=-60 * 24 * 90)]}, at(0))
    for n in range(10):
        h.observe({"eu-west-1": [instance(f"i-{n}", "terminated", code="Server.SpotInstanceTermination")]}, at(n))
    h.observe({"eu-west-1": [instance("i-old", "terminated", code="Server.SpotInstanceTermination")]},
              at(-60 * 24 * 40))
    dropped = h.bound(at(20), max_records=5, window_days=30)
    assert dropped == 7
    assert sorted(h.records) == ["i-6", "i-7", "i-8", "i-9", "i-run"]


def test_a_corrupt_file_is_set_aside_and_rebuilt_with_a_warning(tmp_path):
    path = str(tmp_path / "c1" / ph.HISTORY_FILE)
    history, warning = ph.load(path)
    assert history.records == {} and warning is None  # a first run: nothing to warn about
    assert "missing" in ph.load(path, expect_existing=True)[1]
    os.makedirs(os.path.dirname(path))
    for broken in ('{"version": 1, "records": [{"instance_id": 5}]', "not json", '{"version": 99}',
                   '{"version": 1, "records": [{"instance_id": "i-1", "region": "r", "launch_time": "yesterday"}]}'):
        with open(path, "w", encoding="utf-8") as f:
            f.write(broken)
        history, warning = ph.load(path)
        assert history.records == {} and "rebuilt" in warning and "corrupt" in warning
        assert open(path + ".corrupt", encoding="utf-8").read() == broken
        assert not os.path.exists(path)
    history.observe({"eu-west-1": [instance("i-1")]}, at(0))
    ph.save(path, history)
    again, warning = ph.load(path)
    assert warning is None and again.records == history.records


def test_a_save_killed_half_way_leaves_the_old_file_and_the_next_save_clears_the_leftover(tmp_path):
    path = str(tmp_path / ph.HISTORY_FILE)
    old = ph.History()
    old.observe({"eu-west-1": [instance("i-1")]}, at(0))
    ph.save(path, old)
    # a run killed while writing: a process writes half a temporary file and dies (SIGKILL)
    script = textwrap.dedent(f"""
        import os, signal, tempfile
        handle, tmp = tempfile.mkstemp(prefix=".{ph.HISTORY_FILE}.", suffix=".tmp", dir={str(tmp_path)!r})
        os.write(handle, b'{{"version": 1, "records": [{{"instance_id": "i-')
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    assert subprocess.run([sys.executable, "-c", script], check=False).returncode == -9
    leftovers = [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]
    assert len(leftovers) == 1
    history, warning = ph.load(path)
    assert warning is None and sorted(history.records) == ["i-1"]  # the old file, whole
    history.observe({"eu-west-1": [instance("i-2")]}, at(5))
    ph.save(path, history)
    assert [n for n in os.listdir(tmp_path) if n.endswith(".tmp")] == []
    assert sorted(ph.load(path)[0].records) == ["i-1", "i-2"]


def test_history_path_is_beside_the_clusters_other_state():
    assert ph.history_path("demo").endswith(os.path.join(".config", "bacalhau.aws_spot", "demo", "pool-history.json"))
