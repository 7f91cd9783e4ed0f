"""What the cluster cost, end to end: status.yml -e status_format=json against the emulator, from a
pool history of known lifetimes and known prices, matched to a hand computation to the cent; and
destroy.yml keeps the history unless asked.
"""
from __future__ import annotations

import datetime
import json
from pathlib import Path

import pytest

from tests.integration.test_create_destroy import ssh_key  # noqa: F401  (fixture)

REPO = Path(__file__).resolve().parents[2]
STATUS = REPO / "playbooks" / "status.yml"
DESTROY = REPO / "playbooks" / "destroy.yml"
REGION, ZONE = "us-east-1", "us-east-1a"
SPOT, ON_DEMAND = 0.0100, 0.0208


def _iso(moment: datetime.datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def _record(iid, market, launched, ended, reason, role="compute"):
    return {"instance_id": iid, "region": REGION, "zone": ZONE, "instance_type": "t3.small", "market": market,
            "role": role, "fallback": False, "launch_time": _iso(launched), "end_time": _iso(ended),
            "end_exact": True, "end_reason": reason, "state_reason": None, "release_reason": None}


def _history(home: Path, name: str, now: datetime.datetime) -> Path:
    hour = datetime.timedelta(hours=1)
    records = [
        # 2 h of spot at 0.0100: 0.0200 paid, 0.0416 on demand
        _record("i-00000000000000001", "spot", now - 5 * hour, now - 3 * hour, "by-collection"),
        # taken back by EC2 after 30 min: AWS charges nothing (first hour), 0.0104 on demand
        _record("i-00000000000000002", "spot", now - 3 * hour, now - 2.5 * hour, "spot-interruption"),
        # the orchestrator, on demand for 3 h: 0.0624 paid and on demand
        _record("i-00000000000000003", "on-demand", now - 4 * hour, now - 1 * hour, "by-collection",
                role="orchestrator"),
    ]
    path = home / ".config" / "bacalhau.aws_spot" / name / "pool-history.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"version": 1, "records": records, "released": {}}))
    return path


def _vars(name: str, keys: dict, **extra) -> dict:
    return {"cluster_name": name, "cluster_regions": [{"region": REGION, "count": 1, "instance_types": ["t3.small"]}],
            "cluster_orchestrator": {"mode": "external", "endpoints": ["nats://192.0.2.1:4222"]}, **keys, **extra}


def test_status_json_cost_report_matches_a_hand_computation_and_destroy_keeps_the_history(aws, playbook, ssh_key):  # noqa: F811
    aws.spot_price(REGION, price=SPOT, instance_type="t3.small")
    aws.on_demand_price("t3.small", ON_DEMAND)
    now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    path = _history(playbook.home, "cost-demo", now)
    out = playbook.home / "status.json"

    result = playbook(STATUS, extra_vars=_vars("cost-demo", ssh_key, status_format="json", status_file=str(out)))
    assert result.returncode == 0, result.stdout[-3000:]
    assert "What the cluster cost" in result.stdout and "node-h" in result.stdout
    report = json.loads(out.read_text())
    total = report["cost"]["total"]
    # by hand: node-hours 2 + 0.5 + 3; paid 0.0200 + 0 + 0.0624; on demand 0.0416 + 0.0104 + 0.0624
    assert total["node_hours"] == pytest.approx(5.5, abs=0.005)
    assert round(total["paid_usd"], 2) == 0.08 and total["paid_usd"] == pytest.approx(0.0824, abs=0.00005)
    assert round(total["on_demand_usd"], 2) == 0.11 and total["on_demand_usd"] == pytest.approx(0.1144, abs=0.00005)
    assert total["saving_usd"] == pytest.approx(0.0320, abs=0.00005)
    assert total["interruptions"] == 1
    assert total["mean_time_to_interruption_hours"] == pytest.approx(2.5, abs=0.005)
    spot = [p for p in report["cost"]["pools"] if p["market"] == "spot"]
    assert len(spot) == 1 and spot[0]["availability_zone"] == ZONE and spot[0]["interruptions"] == 1
    assert json.loads(path.read_text())["records"]  # status read the file and left it

    gone = playbook(DESTROY, extra_vars=_vars("cost-demo", ssh_key))
    assert gone.returncode == 0, gone.stdout[-3000:]
    assert path.exists()  # kept for the next cluster of the name
    forgot = playbook(DESTROY, extra_vars=_vars("cost-demo", ssh_key, destroy_forget_history=True))
    assert forgot.returncode == 0, forgot.stdout[-3000:]
    assert not path.exists()
