"""What the cluster cost (plugins/module_utils/_pricing/cost_report.py): the report matches a hand
computation over a known price history and known lifetimes, to the cent."""
from __future__ import annotations

import datetime

import pytest

from ansible_collections.bacalhau.aws_spot.plugins.module_utils._pricing import cost_report as cr

T0 = datetime.datetime(2026, 12, 1, 0, 0, tzinfo=datetime.timezone.utc)
R = "eu-west-1"
A = (R, "eu-west-1a", "t4g.small")
B = (R, "eu-west-1b", "t4g.small")
OD = 0.0168  # t4g.small on demand


def at(hours: float) -> datetime.datetime:
    return T0 + datetime.timedelta(hours=hours)


def life(iid, key, start, end=None, reason=None, market="spot", role="compute"):
    return {"instance_id": iid, "region": key[0], "zone": key[1], "instance_type": key[2], "market": market,
            "role": role, "launch_time": at(start).isoformat(), "end_time": None if end is None else at(end).isoformat(),
            "end_reason": reason}


PRICES = {
    A: [(at(-1), 0.0050), (at(2), 0.0060), (at(5), 0.0040)],
    B: [(at(-24), 0.0100)],
}
LIVES = [
    life("i-1", A, 0, 6, "spot-interruption"),  # 2 h at 0.005 + 3 h at 0.006 + 1 h at 0.004 = 0.032
    life("i-2", A, 4, None),  # running at 10: 1 h at 0.006 + 5 h at 0.004 = 0.026
    life("i-3", A, 7, 7.5, "spot-interruption"),  # EC2 took it back in its first hour: free
    life("i-4", B, 1, 1 + 30 / 3600, "by-collection"),  # 30 s, billed a minute: 0.01 / 60
    life("i-5", B, 2, 5, "rebalance"),  # 3 h at 0.01 = 0.03
    life("i-o", A, 0, None, market="on-demand", role="orchestrator"),  # 10 h on demand: 0.168
]


def test_the_report_matches_a_hand_computation_to_the_cent():
    cost = cr.report(LIVES, PRICES, {(R, "t4g.small"): OD}, at(10))
    rows = {(p["availability_zone"], p["market"]): p for p in cost["pools"]}
    spot_a, spot_b, orch = rows[("eu-west-1a", "spot")], rows[("eu-west-1b", "spot")], rows[("eu-west-1a", "on-demand")]
    assert spot_a["node_hours"] == pytest.approx(6 + 6 + 0.5)
    assert spot_a["paid_usd"] == pytest.approx(0.032 + 0.026 + 0.0, abs=0.005)
    assert round(spot_a["paid_usd"], 6) == 0.058
    assert spot_a["on_demand_usd"] == pytest.approx(12.5 * OD)  # 0.21
    assert round(spot_a["saving_usd"], 2) == 0.15  # 0.21 - 0.058 = 0.152
    assert spot_a["interruptions"] == 2 and spot_a["rebalances"] == 0
    assert spot_a["mean_time_to_interruption_hours"] == pytest.approx(12.5 / 2)
    assert round(spot_b["paid_usd"], 6) == round(0.01 / 60 + 0.03, 6)
    assert spot_b["rebalances"] == 1 and spot_b["interruptions"] == 0
    assert spot_b["mean_time_to_interruption_hours"] is None
    assert round(orch["paid_usd"], 6) == round(10 * OD, 6) == round(orch["on_demand_usd"], 6)
    assert orch["saving_usd"] == 0
    total = cost["total"]
    assert round(total["paid_usd"], 2) == round(0.058 + 0.01 / 60 + 0.03 + 0.168, 2) == 0.26
    assert round(total["on_demand_usd"], 2) == round((12.5 + 30 / 3600 + 3 + 10) * OD, 2) == 0.43
    assert total["interruptions"] == 2 and total["unpriced"] == 0
    assert total["node_hours"] == pytest.approx(12.5 + 30 / 3600 + 3 + 10, abs=1e-4)
    assert "eu-west-1a t4g.small spot" in cr.table(cost)


def test_unknown_prices_are_counted_never_guessed_and_the_first_price_covers_what_came_before():
    cost = cr.report([life("i-1", A, 0, 2), life("i-9", (R, "eu-west-1c", "t4g.small"), 0, 1)],
                     {A: [(at(1), 0.006)]}, {(R, "t4g.small"): OD}, at(3))
    rows = {p["availability_zone"]: p for p in cost["pools"]}
    assert rows["eu-west-1c"]["unpriced"] == 1 and rows["eu-west-1c"]["paid_usd"] == 0
    assert rows["eu-west-1a"]["paid_usd"] == pytest.approx(0.012)
    assert rows["eu-west-1a"]["notes"] == ["priced at its first known price before the spot price history begins"]
    assert cr.report([life("i-1", A, 0, 2)], PRICES, {}, at(3))["total"]["unpriced"] == 1  # no on-demand price


def test_integration_and_mean_price_step_at_each_change():
    points = PRICES[A]
    assert cr.price_at(points, at(2)) == 0.006 and cr.price_at(points, at(1.99)) == 0.005
    assert cr.integrate(points, at(1), at(3)) == pytest.approx(0.005 + 0.006)
    assert cr.mean_price(points, at(1), at(3)) == pytest.approx(0.0055)
    assert cr.integrate(points, at(3), at(3)) == 0


def test_windows_and_the_read_parameters_cover_each_pool_once():
    spans = cr.windows(LIVES, at(10))
    assert spans == {A: (at(0), at(10)), B: (at(1), at(5))}
    assert cr.history_params(A, *spans[A]) == {
        "InstanceTypes": ["t4g.small"], "AvailabilityZone": "eu-west-1a", "ProductDescriptions": ["Linux/UNIX"],
        "StartTime": at(0), "EndTime": at(10)}
    old = cr.windows([life("i-0", A, -24 * 200, -24 * 100)], at(0))
    assert old[A][0] == at(-24 * 90)  # EC2 keeps 90 days


def test_a_node_let_go_after_its_warning_is_billed_and_an_earlier_cluster_is_left_out():
    # autoheal lets a warned node go once its replacement joined, before EC2's reclaim: EC2 did not
    # interrupt it, so its first hour is billed (AWS: no charge only when EC2 interrupts it); it
    # still counts as an interruption of its pool
    warned = dict(life("i-w", B, 1, 1.5, "spot-interruption"), release_reason="spot-interruption")
    report = cr.report([warned], PRICES, {(R, "t4g.small"): OD}, at(10))
    assert report["total"]["paid_usd"] == pytest.approx(0.5 * 0.0100) and report["total"]["interruptions"] == 1
    # an earlier cluster of the same name, destroyed at 3: its nodes are not what this cluster cost
    old = dict(life("i-old", A, 0, 3, "by-collection"), release_reason="destroy")
    new = life("i-new", A, 4, 5)
    lives = [old, new]
    assert cr.last_destroyed(lives) == at(3)
    report = cr.report(lives, PRICES, {(R, "t4g.small"): OD}, at(10), since=cr.last_destroyed(lives))
    assert report["total"]["instances"] == 1 and report["total"]["node_hours"] == pytest.approx(1.0)
    assert cr.last_destroyed([new]) is None
