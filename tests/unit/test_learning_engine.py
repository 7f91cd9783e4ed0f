"""spot_cluster learns from the cluster's own nodes (issue 21), against the emulator and its clock.

What is asserted is what the emulator has afterwards (where nodes run), the pool history file on
the controller, and the module's own account of every pool (verdict and why).
"""
from __future__ import annotations

import datetime
import json
import os
from pathlib import Path

import pytest

from tests.unit.test_spot_cluster import KEY, live

REGION = "us-east-1"
CHEAP, STEADY = "us-east-1a", "us-east-1b"
SCORE = 7
R0 = 0.05 * (10 - SCORE) / 9  # the documented prior rate of a pool of score 7
H0 = 24.0


def cluster(name, count=1, **kw):
    args = {
        "cluster_name": name,
        "orchestrator": {"mode": "managed", "region": REGION, "instance_type": "t3.small", "market": "on-demand"},
        "regions": [{"region": REGION, "count": count, "instance_types": ["t3.small"]}],
        "availability_zone_strategy": "packed",
        "ssh_public_key": KEY,
        "ssh_cidrs": ["198.51.100.0/24"],
    }
    args.update(kw)
    return args


def market(aws, steady_price):
    aws.spot_price(REGION, price=0.02, instance_type="t3.small")
    aws.spot_price(REGION, price=0.0100, availability_zone=CHEAP, instance_type="t3.small")
    aws.spot_price(REGION, price=steady_price, availability_zone=STEADY, instance_type="t3.small")
    aws.placement_score(REGION, SCORE)
    aws.on_demand_price("t3.small", 0.0208)


def zones_of(name):
    return sorted(i["Placement"]["AvailabilityZone"] for i in live(REGION, name, "compute"))


def pools_of(result):
    row = next(r for r in result["summary"] if r["role"] == "compute")
    return {p["availability_zone"]: p for p in row["placement"]["pools"]}


def history_file(name) -> Path:
    return Path(os.environ["HOME"]) / ".config" / "bacalhau.aws_spot" / name / "pool-history.json"


def document(name):
    return json.loads(history_file(name).read_text())


def records(name):
    return {r["instance_id"]: r for r in document(name)["records"]}


def interrupt_the_node(aws, name):
    ids = [i["InstanceId"] for i in live(REGION, name, "compute")]
    aws.interrupt(REGION, ids)
    return ids


def test_a_pool_that_just_interrupted_is_avoided_then_chosen_again_after_the_cool_down(aws, run_module):
    market(aws, steady_price=0.0150)
    first = run_module("spot_cluster", cluster("cool"))
    assert not first.failed, first.get("msg")
    assert zones_of("cool") == [CHEAP]
    assert pools_of(first)[CHEAP]["verdict"] == "chosen"
    [taken] = interrupt_the_node(aws, "cool")

    heal = run_module("spot_cluster", cluster("cool", mode="heal"))
    assert not heal.failed, heal.get("msg")
    assert zones_of("cool") == [STEADY]  # the cheap pool just took a node back: not chosen while another holds
    pools = pools_of(heal)
    assert pools[CHEAP]["verdict"] == "avoided" and "cooling down" in pools[CHEAP]["why"] and taken in pools[CHEAP]["why"]
    assert pools[STEADY]["verdict"] == "chosen"
    assert set(pools) == {p for p in pools}  # every pool considered is listed
    assert all(p["why"] for p in pools.values())
    assert records("cool")[taken]["end_reason"] == "spot-interruption"

    aws.advance(31 * 60)  # past cluster_pool_cooldown (30 minutes)
    grow = run_module("spot_cluster", cluster("cool", count=2))
    assert not grow.failed, grow.get("msg")
    assert zones_of("cool") == [CHEAP, STEADY]  # chosen again: still cheaper by expected cost
    assert pools_of(grow)[CHEAP]["verdict"] == "chosen" and pools_of(grow)[CHEAP]["cooling_until"] is None


def test_a_pool_with_interruptions_loses_to_a_slightly_dearer_steadier_one_by_the_formula(aws, run_module):
    market(aws, steady_price=0.0102)
    assert not run_module("spot_cluster", cluster("steady")).failed
    assert zones_of("steady") == [CHEAP]
    interrupt_the_node(aws, "steady")
    assert not run_module("spot_cluster", cluster("steady", mode="heal")).failed
    aws.advance(31 * 60)  # the cool-down is over: only the formula speaks now

    plan = run_module("spot_cluster", cluster("steady", count=2), check_mode=True)
    assert not plan.failed, plan.get("msg")
    pools = pools_of(plan)
    cheap, steady = pools[CHEAP], pools[STEADY]
    assert cheap["verdict"] == "candidate" and cheap["interruptions"] == 1
    assert steady["verdict"] == "chosen" and steady["rank"] < cheap["rank"]
    for pool, price in ((cheap, 0.0100), (steady, 0.0102)):  # docs/spot_cluster.md: the formula, by hand
        rate = (pool["interruptions"] + R0 * H0) / (pool["node_hours"] + H0)
        assert pool["interruption_rate_per_node_hour"] == pytest.approx(rate, abs=2e-6)
        assert pool["expected_price"] == pytest.approx(price * (1 + rate), abs=2e-6)
    assert steady["expected_price"] < cheap["expected_price"] and 0.0102 > 0.0100
    assert "1 interruption(s)" in cheap["why"]


def test_own_terminations_are_released_first_and_check_mode_writes_nothing(aws, run_module):
    market(aws, steady_price=0.0150)
    assert not run_module("spot_cluster", cluster("own", count=2)).failed
    before = history_file("own").read_text()
    plan = run_module("spot_cluster", cluster("own", count=1), check_mode=True)
    assert not plan.failed and plan["pool_history"]["written"] is False
    assert history_file("own").read_text() == before  # check mode reads, never writes
    down = run_module("spot_cluster", cluster("own", count=1))
    assert not down.failed, down.get("msg")
    [gone] = down["terminated"]
    doc = document("own")
    assert gone in doc["released"] or records("own")[gone]["end_reason"] == "by-collection"
    again = run_module("spot_cluster", cluster("own", count=1))  # the next read sees it terminated
    assert not again.failed
    record = records("own")[gone]
    assert record["end_reason"] == "by-collection" and record["release_reason"] == "scale-down"


def test_the_history_survives_a_corrupt_file_and_a_killed_save(aws, run_module):
    market(aws, steady_price=0.0150)
    assert not run_module("spot_cluster", cluster("tough")).failed
    [taken] = interrupt_the_node(aws, "tough")
    assert not run_module("spot_cluster", cluster("tough", mode="heal")).failed
    path = history_file("tough")
    # a save killed half-way leaves its temporary file beside the whole, older one
    leftover = path.parent / f".{path.name}.killed.tmp"
    leftover.write_text('{"version": 1, "records": {"i-trunc')
    aws.advance(2 * 3600)  # EC2 no longer lists the interrupted node: only the file remembers it
    after = run_module("spot_cluster", cluster("tough"))
    assert not after.failed, after.get("msg")
    assert not leftover.exists()
    assert records("tough")[taken]["end_reason"] == "spot-interruption"

    path.write_text("{ not json")
    rebuilt = run_module("spot_cluster", cluster("tough"))
    assert not rebuilt.failed, rebuilt.get("msg")  # never fails a run
    assert any("pool history" in w and "unreadable" in w for w in rebuilt["pool_history"]["warnings"])
    assert (path.parent / f"{path.name}.corrupt").exists()
    now = records("tough")
    assert {i["InstanceId"] for i in live(REGION, "tough")} <= set(now)  # rebuilt from what EC2 lists


def test_the_cost_cap_chooses_pools_and_never_sets_a_max_price(aws, run_module):
    market(aws, steady_price=0.0102)
    # the orchestrator (0.0208 on demand) + one node at the dearest pool (0.02) would break 0.035;
    # at the cheaper pools it holds
    result = run_module("spot_cluster", cluster("capped", max_hourly_cost=0.035))
    assert not result.failed, result.get("msg")
    assert zones_of("capped") == [CHEAP]
    pools = pools_of(result)
    dear = [p for z, p in pools.items() if z not in (CHEAP, STEADY)]
    assert dear and all(p["verdict"] == "avoided" and "cluster_max_hourly_cost" in p["why"] for p in dear)
    assert pools[STEADY]["verdict"] == "candidate"
    assert result["plan_cost"]["worst_case"] <= 0.035
    requests = [c for c in aws.calls()["log"] if c["operation"] == "RunInstances"]
    assert requests  # and none of them carried a MaxPrice (the module never sets one from the cap)
    for i in live(REGION, "capped", "compute"):
        assert i.get("InstanceLifecycle") == "spot"


def _prices_from(aws, moment, cheap_zone, dear_zone):
    """From ``moment`` on (emulated time), one zone's t3.small at 0.010 and the other's at 0.020."""
    at = moment.isoformat()
    aws.set_market(spot_prices=[
        {"region": REGION, "availability_zone": cheap_zone, "instance_type": "t3.small", "price": 0.010, "from": at},
        {"region": REGION, "availability_zone": dear_zone, "instance_type": "t3.small", "price": 0.020, "from": at}])


def _emulated_now(aws):
    return datetime.datetime.fromisoformat(aws.clock()["now"])


def test_rebalance_moves_make_before_break_past_the_threshold_and_does_not_flap(aws, run_module):
    aws.spot_price(REGION, price=0.05, instance_type="t3.small")  # the other zones: never worth it
    aws.placement_score(REGION, SCORE)
    aws.on_demand_price("t3.small", 0.0208)
    _prices_from(aws, _emulated_now(aws) - datetime.timedelta(days=1), CHEAP, STEADY)
    move = {"min_saving": 0.2, "max_moves": 2}
    assert not run_module("spot_cluster", cluster("mover")).failed
    [node] = [i["InstanceId"] for i in live(REGION, "mover", "compute")]
    assert zones_of("mover") == [CHEAP]

    # the pools swap prices, and stay so for 7 hours: the other pool is 50% cheaper, also on average
    _prices_from(aws, _emulated_now(aws) + datetime.timedelta(minutes=1), STEADY, CHEAP)
    aws.advance(7 * 3600)
    busy = run_module("spot_cluster", cluster("mover", mode="heal", rebalance=move, busy_instance_ids=[node]))
    assert not busy.failed, busy.get("msg")
    assert busy["rebalance"]["moves"] == [] and "runs a job" in busy["rebalance"]["kept"][0]["why"]
    assert zones_of("mover") == [CHEAP]

    heal = run_module("spot_cluster", cluster("mover", mode="heal", rebalance=move))
    assert not heal.failed, heal.get("msg")
    [moved] = heal["rebalance"]["moves"]
    assert moved["instance_id"] == node and moved["to"]["availability_zone"] == STEADY and moved["saving"] >= 0.2
    # make before break: the replacement runs beside the node, which only drains
    assert zones_of("mover") == [CHEAP, STEADY] and node in heal["drain_instance_ids"]
    released = run_module("spot_cluster", cluster("mover", mode="release", drain_instance_ids=heal["drain_instance_ids"]))
    assert not released.failed, released.get("msg")
    assert released["released"] == [node] and zones_of("mover") == [STEADY]
    again = run_module("spot_cluster", cluster("mover"))
    assert records("mover")[node]["release_reason"] == "moved" and not again.failed

    # prices alternate: the first pool is cheap again now, and again the other a little later
    for hours in (1, 2):
        cheap, dear = (CHEAP, STEADY) if hours == 1 else (STEADY, CHEAP)
        _prices_from(aws, _emulated_now(aws) + datetime.timedelta(minutes=1), cheap, dear)
        aws.advance(3600)
        flap = run_module("spot_cluster", cluster("mover", mode="heal", rebalance=move))
        assert not flap.failed, flap.get("msg")
        assert flap["rebalance"]["moves"] == [], flap["rebalance"]
        assert zones_of("mover") == [STEADY]


def test_a_cooling_pool_is_the_last_resort_before_overflow(aws, run_module):
    # "not chosen for new nodes while another pool holds": when the other pools turn out to have no
    # room, the cooling pool is tried last in its region, before the cluster spills over elsewhere
    market(aws, steady_price=0.0150)
    two = [{"region": REGION, "count": 1, "instance_types": ["t3.small"], "availability_zones": [CHEAP, STEADY]}]
    first = run_module("spot_cluster", cluster("last", regions=two))
    assert not first.failed, first.get("msg")
    assert zones_of("last") == [CHEAP]
    [taken] = interrupt_the_node(aws, "last")
    aws.capacity_error(REGION, availability_zone=STEADY, market="spot")

    heal = run_module("spot_cluster", cluster("last", regions=two, mode="heal"))
    assert not heal.failed, heal.get("msg")
    row = next(r for r in heal["summary"] if r["role"] == "compute")
    attempts = [(a["availability_zone"], a["error_code"]) for a in row["attempts"]]
    assert attempts == [(STEADY, "InsufficientInstanceCapacity"), (CHEAP, None)]  # the steady pool first
    assert zones_of("last") == [CHEAP]
    assert pools_of(heal)[CHEAP]["verdict"] == "chosen" and "last resort" in pools_of(heal)[CHEAP]["why"]


def test_an_interruption_warning_cools_its_pool_at_once_and_its_release_counts_as_taken_back(aws, run_module):
    # the autoheal path: the node is let go after its replacement joined, before EC2's reclaim, so EC2's
    # own code never says "interrupted"; the warning says it, and its pool must not get the replacement
    market(aws, steady_price=0.0150)
    assert not run_module("spot_cluster", cluster("warn")).failed
    [warned] = [i["InstanceId"] for i in live(REGION, "warn", "compute")]
    heal = run_module("spot_cluster", cluster("warn", mode="heal", drain_instance_ids=[warned],
                                              interrupted_instance_ids=[warned]))
    assert not heal.failed, heal.get("msg")
    assert zones_of("warn") == [CHEAP, STEADY]  # the replacement is not put where EC2 is taking nodes back
    assert pools_of(heal)[CHEAP]["verdict"] == "avoided" and warned in pools_of(heal)[CHEAP]["why"]
    assert heal["interrupted_instance_ids"] == [warned]

    released = run_module("spot_cluster", cluster("warn", mode="release", drain_instance_ids=[warned],
                                                  interrupted_instance_ids=[warned]))
    assert released["released"] == [warned]
    assert records("warn")[warned]["end_reason"] is None  # released: ended once a read sees it gone
    assert not run_module("spot_cluster", cluster("warn", mode="heal")).failed  # the next read (a tick's heal)
    assert records("warn")[warned]["end_reason"] == "spot-interruption"  # counted, and its pool cools down

    # a node drained for a rebalance recommendation (no warning): recorded as such
    [recommended] = [i["InstanceId"] for i in live(REGION, "warn", "compute")]
    assert not run_module("spot_cluster", cluster("warn", mode="heal", drain_instance_ids=[recommended])).failed
    run_module("spot_cluster", cluster("warn", mode="release", drain_instance_ids=[recommended]))
    assert not run_module("spot_cluster", cluster("warn", mode="heal")).failed
    assert records("warn")[recommended]["end_reason"] == "rebalance"


def test_the_event_sources_exact_times_end_the_history_records(aws, run_module):
    # the autoheal rulebook's event source on this host keeps EC2's events; the next read of the
    # engine takes the end of an interrupted node from them, not from when it happened to look
    from tests.unit.test_spot_events_source import run_source, spot

    market(aws, steady_price=0.0150)
    assert not run_module("spot_cluster", cluster("exact")).failed  # makes the event path too (autoheal)
    [node] = [i["InstanceId"] for i in live(REGION, "exact", "compute")]
    state = history_file("exact").parent / "autoheal"
    got = spot(run_source({"cluster_name": "exact", "regions": [REGION], "state_dir": str(state)},
                          lambda: aws.interrupt(REGION, [node]), lambda got: len(got) >= 3))
    [terminated] = [e for e in got if e["state"] == "terminated"]
    aws.advance(600)  # the engine's next read comes ten minutes later
    heal = run_module("spot_cluster", cluster("exact", mode="heal"))
    assert not heal.failed, heal.get("msg")
    record = records("exact")[node]
    at = datetime.datetime.fromisoformat(terminated["time"].replace("Z", "+00:00"))
    assert record["end_reason"] == "spot-interruption"
    assert record["end_exact"] and datetime.datetime.fromisoformat(record["end_time"]) == at, record
