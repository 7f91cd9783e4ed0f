"""Placement that learns (plugins/module_utils/_placement/{expected_cost,rebalance}.py): the
cool-down, the expected-cost ranking by the formula of docs/spot_cluster.md, and moving nodes
to cheaper pools without flapping."""
from __future__ import annotations

import datetime

import pytest

from ansible_collections.bacalhau.aws_spot.plugins.module_utils._placement import expected_cost as ec
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._placement import rebalance as rb
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._placement.history import History
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._placement.pools import Pool
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._placement.pools import assign
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._placement.pools import rank_pools

T0 = datetime.datetime(2026, 12, 1, 12, 0, tzinfo=datetime.timezone.utc)
R = "eu-west-1"


def at(minutes: float) -> datetime.datetime:
    return T0 + datetime.timedelta(minutes=minutes)


def pool(zone, price, score=7, itype="t4g.small"):
    return Pool(region=R, instance_type=itype, zone=f"{R}{zone}", spot_price=price, on_demand_price=0.0168,
                zone_score=score)


def seen(iid, zone, launched, ended=None, code="Server.SpotInstanceTermination", itype="t4g.small"):
    found = {"InstanceId": iid, "State": {"Name": "terminated" if ended is not None else "running"},
             "Placement": {"AvailabilityZone": f"{R}{zone}"}, "InstanceType": itype, "InstanceLifecycle": "spot",
             "LaunchTime": at(launched), "Tags": [{"Key": "bacalhau:role", "Value": "compute"}]}
    if ended is not None:
        found["StateReason"] = {"Code": code}
    return found


def lived(history, iid, zone, launched, ended=None, code="Server.SpotInstanceTermination"):
    """Record one instance's life: seen running at launch, then ended (at ``ended``)."""
    history.observe({R: [seen(iid, zone, launched)]}, at(launched))
    if ended is not None:
        history.observe({R: [seen(iid, zone, launched, ended, code)]}, at(ended))


def keys(pools):
    return [p.zone[-1] for p in pools]


# --------------------------------------------------------------------------- cool-down
def test_a_pool_that_just_took_a_node_back_is_avoided_while_another_holds_then_chosen_again():
    a, b = pool("a", 0.0100, score=8), pool("b", 0.0120, score=8)
    ranked_pools = rank_pools([b, a], by="price")
    assert keys(ranked_pools) == ["a", "b"]  # by price alone a comes first
    h = History()
    lived(h, "i-1", "a", launched=0, ended=120)  # two hours in a, then taken back
    soon = ec.rerank(ranked_pools, h, at(125))
    assert [(keys([r.pool])[0], r.verdict) for r in soon] == [("b", "candidate"), ("a", "avoided")]
    assert "cooling down: took back i-1 5 min ago" in soon[1].why
    assert keys(ec.choosable(soon)) == ["b"]
    # the engine places with choosable(): no node goes to a while b holds, even spread over zones
    launches = assign(ec.choosable(soon), 2)
    assert [launch.zone for launch in launches] == [f"{R}b"]
    later = ec.rerank(ranked_pools, h, at(120 + 31))
    assert [(keys([r.pool])[0], r.verdict) for r in later] == [("a", "candidate"), ("b", "candidate")]
    assert later[0].cooling_until is None and later[0].stats.interruptions == 1
    # a cool-down of one's own
    assert ec.rerank(ranked_pools, h, at(120 + 31), cooldown=3600)[0].pool.zone == f"{R}b"


def test_when_every_pool_is_cooling_down_they_stay_in_order_and_say_so():
    h = History()
    lived(h, "i-1", "a", 0, 100)
    lived(h, "i-2", "b", 0, 101)
    ranked = ec.rerank([pool("a", 0.010), pool("b", 0.012)], h, at(105))
    assert [r.verdict for r in ranked] == ["candidate", "candidate"]
    assert all("every pool is cooling down" in r.why for r in ranked)
    assert len(ec.choosable(ranked)) == 2


def test_a_rebalance_acted_on_cools_the_pool_but_our_own_terminations_do_not():
    h = History()
    h.release(["i-r"], "rebalance", at(50))
    lived(h, "i-r", "a", 0, 50, code="Client.UserInitiatedShutdown")
    h.release(["i-s"], "scale-down", at(50))
    lived(h, "i-s", "b", 0, 50, code="Client.UserInitiatedShutdown")
    ranked = ec.rerank([pool("a", 0.010), pool("b", 0.012)], h, at(55))
    assert {r.pool.zone[-1]: r.verdict for r in ranked} == {"a": "avoided", "b": "candidate"}


# --------------------------------------------------------------------------- the formula
def test_a_pool_with_a_history_of_interruptions_loses_to_a_slightly_dearer_steadier_one_by_the_formula():
    shaky, steady = pool("a", 0.0100, score=7), pool("b", 0.0105, score=7)
    h = History()
    for n in range(4):  # four nodes of 10 h each in a, every one taken back; the last 2 h ago
        lived(h, f"i-a{n}", "a", launched=n * 600, ended=n * 600 + 600)
    for n in range(4):  # four nodes of 10 h each in b, ended by us
        h.release([f"i-b{n}"], "scale-down", at(n * 600 + 600))
        lived(h, f"i-b{n}", "b", launched=n * 600, ended=n * 600 + 600, code="Client.UserInitiatedShutdown")
    now = at(4 * 600 + 120)
    assert keys(rank_pools([shaky, steady], by="price")) == ["a", "b"]  # price alone
    ranked = ec.rerank(rank_pools([shaky, steady], by="price"), h, now)
    assert keys([r.pool for r in ranked]) == ["b", "a"]
    # by hand: r0(7) = 0.05 * 3/9; rate = (k + r0 * 24) / (40 + 24); expected = price * (1 + rate * 1)
    r0 = 0.05 * 3 / 9
    rate_a, rate_b = (4 + r0 * 24) / 64, (0 + r0 * 24) / 64
    by_zone = {r.pool.zone[-1]: r for r in ranked}
    assert by_zone["a"].stats.node_hours == pytest.approx(40) and by_zone["a"].stats.interruptions == 4
    assert by_zone["a"].rate == pytest.approx(rate_a) and by_zone["b"].rate == pytest.approx(rate_b)
    assert by_zone["a"].expected == pytest.approx(0.0100 * (1 + rate_a))  # 0.010688
    assert by_zone["b"].expected == pytest.approx(0.0105 * (1 + rate_b))  # 0.010566
    assert "4 interruption(s) in 40.0 node-h" in by_zone["a"].why
    # a far dearer steady pool does not win: the penalty is what the formula says, no more
    dear = pool("b", 0.0110, score=7)
    assert keys([r.pool for r in ec.rerank([shaky, dear], h, now)]) == ["a", "b"]


def test_with_no_history_the_score_is_the_prior_and_low_scores_stay_last():
    ranked = ec.rerank([pool("a", 0.0100, score=3), pool("b", 0.0101, score=9), pool("c", 0.005, score=2)],
                       History(), T0)
    assert keys([r.pool for r in ranked]) == ["b", "a", "c"]  # 3 -> r0 0.039: a costs 0.0104 > 0.0101
    assert ranked[-1].verdict == "last resort"
    assert ranked[0].rate == pytest.approx(ec.prior_rate(9))


def test_preference_order_is_kept_but_cooling_pools_go_last_and_on_demand_has_no_rate():
    h = History()
    lived(h, "i-1", "a", 0, 100)
    given = [pool("a", 0.010), pool("b", 0.030), pool("c", 0.020)]
    assert keys([r.pool for r in ec.rerank(given, h, at(110), by="preference")]) == ["b", "c", "a"]
    od = ec.rerank(given, h, at(110), market="on-demand")
    assert {r.rate for r in od} == {0.0} and all(r.cooling_until is None for r in od)
    assert od[0].as_dict()["expected_price"] == 0.0168


def test_mark_chosen_and_the_result_shape():
    ranked = ec.rerank([pool("a", 0.010), pool("b", 0.012)], History(), T0)
    entries = [r.as_dict() for r in ec.mark_chosen(ranked, [(R, f"{R}a", "t4g.small")])]
    assert [e["verdict"] for e in entries] == ["chosen", "candidate"]
    assert set(entries[0]) >= {"region", "availability_zone", "instance_type", "rank", "why", "expected_price",
                               "interruption_rate_per_node_hour", "interruptions", "node_hours", "cooling_until"}


# --------------------------------------------------------------------------- rebalance
def node(iid, zone, launched, busy=False, itype="t4g.small"):
    return rb.Node(iid, R, f"{R}{zone}", itype, at(launched), busy=busy)


def test_rebalance_moves_only_past_the_threshold_and_at_most_max_moves_largest_saving_first():
    h = History()
    nodes = [node("i-1", "a", 0), node("i-2", "a", 0), node("i-3", "c", 0)]
    for n in nodes:
        lived(h, n.instance_id, n.zone[-1], 0)
    now = at(180)
    near = ec.rerank([pool("a", 0.0100), pool("b", 0.0085), pool("c", 0.0110)], h, now)
    assert rb.plan(nodes[:2], near, h, now).moves == []  # 15% cheaper: under min_saving 0.2
    # c -> b saves 0.0110 - 0.0075 (32%), a -> b 0.0100 - 0.0075 (25%)
    far = ec.rerank([pool("a", 0.0100), pool("b", 0.0075), pool("c", 0.0110)], h, now)
    plan = rb.plan(nodes, far, h, now, max_moves=2)
    assert [(m.instance_id, m.target.zone) for m in plan.moves] == [("i-3", f"{R}b"), ("i-1", f"{R}b")]
    assert plan.moves[1].saving == pytest.approx(0.25, abs=0.01)
    assert {k["instance_id"]: k["why"][:12] for k in plan.kept} == {"i-2": "max_moves 2 "}
    assert "launch the replacement" in plan.as_dict()["moves"][0]["order"]
    assert len(rb.plan(nodes, far, h, now, min_saving=0.3).moves) == 1


def test_rebalance_never_moves_a_busy_or_young_node_nor_into_a_cooling_pool():
    h = History()
    lived(h, "i-old", "c", -600, 170)  # c took a node back 10 minutes ago
    nodes = [node("i-busy", "a", 0, busy=True), node("i-new", "a", 150), node("i-ok", "a", 0)]
    ranked = ec.rerank([pool("a", 0.0100), pool("c", 0.0050), pool("b", 0.0079)], h, at(180))
    plan = rb.plan(nodes, ranked, h, at(180))
    assert [(m.instance_id, m.target.zone) for m in plan.moves] == [("i-ok", f"{R}b")]  # not c: cooling
    why = {k["instance_id"]: k["why"] for k in plan.kept}
    assert why["i-busy"].startswith("runs a job") and why["i-new"].startswith("younger than")
    assert [m.instance_id for m in rb.plan(nodes, ranked, h, at(180), move_busy=True).moves] == ["i-busy", "i-ok"]


def _simulate(runs, mean_window=None):
    """Prices of pools a and b swap every run (a 30% saving each time); heal runs every 30 min
    and does what the plan says, make before break. Returns the moves made."""
    h = History()
    lived(h, "i-0", "a", -24 * 60)
    nodes = {"i-0": node("i-0", "a", -24 * 60)}
    series = []
    made = []
    for run in range(runs):
        now = at(run * 30)
        cheap_a = run % 2 == 1
        prices = {"a": 0.0070 if cheap_a else 0.0100, "b": 0.0100 if cheap_a else 0.0070}
        series.append(prices)
        means = None
        if mean_window:
            recent = series[-mean_window:]
            means = {(R, f"{R}{z}", "t4g.small"): sum(p[z] for p in recent) / len(recent) for z in "ab"}
        ranked = ec.rerank([pool(z, prices[z]) for z in "ab"], h, now)
        plan = rb.plan(list(nodes.values()), ranked, h, now, mean_prices=means)
        for move in plan.moves:
            new_id = f"i-{len(made) + 1}"
            made.append((run, move.source[1][-1], move.target.zone[-1]))
            lived(h, new_id, move.target.zone[-1], run * 30)  # the replacement first
            h.release([move.instance_id], rb.MOVED, now)  # then ours ends
            old = nodes.pop(move.instance_id)
            h.observe({R: [seen(old.instance_id, old.zone[-1], (old.launch_time - T0).total_seconds() / 60,
                                run * 30, code="Client.UserInitiatedShutdown")]}, now)
            nodes[new_id] = node(new_id, move.target.zone[-1], run * 30)
    return made


def test_rebalance_does_not_flap_when_prices_alternate():
    # twelve hours of runs every 30 minutes, the cheap pool swapping each time
    without_means = _simulate(24)
    assert without_means[0] == (0, "a", "b")
    # a moved node is never moved back into the pool it left within the hold (6 h)
    assert len(without_means) <= 2
    assert all(later[0] - earlier[0] >= 12 for earlier, later in zip(without_means, without_means[1:]))
    # with the pools' mean prices over the last 6 h (what heal reads), alternating prices move nothing
    # once the means have seen both prices
    # (the first run, with one price seen, moves once: b was 30% cheaper then)
    assert _simulate(48, mean_window=12) == [(0, "a", "b")]


def test_the_users_settings_are_checked_in_their_words():
    problems = []
    assert ec.parse_cooldown(None, "cluster_pool_cooldown", problems) == datetime.timedelta(minutes=30)
    assert ec.parse_cooldown(45, "cluster_pool_cooldown", problems) == datetime.timedelta(minutes=45)
    assert ec.parse_cooldown("2h", "cluster_pool_cooldown", problems) == datetime.timedelta(hours=2)
    assert ec.parse_cooldown("0", "cluster_pool_cooldown", problems) == datetime.timedelta(0)
    assert problems == []
    assert ec.parse_cooldown("soon", "cluster_pool_cooldown", problems) is None
    assert problems == ["cluster_pool_cooldown: 'soon' must be minutes (30) or a duration such as 90s, 30m, 2h"]
    problems = []
    assert rb.parse_settings(None, "cluster_rebalance", problems) is None
    assert rb.parse_settings({}, "cluster_rebalance", problems) == {"min_saving": 0.2, "max_moves": 2,
                                                                    "move_busy": False}
    assert rb.parse_settings({"min_saving": 0.3, "max_moves": 1, "move_busy": True}, "cluster_rebalance",
                             problems) == {"min_saving": 0.3, "max_moves": 1, "move_busy": True}
    assert problems == []
    assert rb.parse_settings({"min_saving": 20, "max_moves": 1.5, "fast": 1}, "cluster_rebalance", problems) is None
    assert len(problems) == 3 and "fraction between 0 and 1" in problems[1] and "whole number" in problems[2]
