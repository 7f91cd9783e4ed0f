"""Tables that say in prose what a code table says: kept in step with it (CONTRIBUTING.md).

A launch fallback rule is a code in ``_spot_instances.CAPACITY_ERRORS`` (next zone) or
``QUOTA_ERRORS`` (next type) and a row of the table in ``docs/spot_cluster.md``; an emulator
fault is a kind ``Faults.update`` accepts and a row of the README's control-API table.
"""
from __future__ import annotations

import re
from pathlib import Path

from ansible_collections.bacalhau.aws_spot.plugins.module_utils._cluster import instances as _spot_instances
from tests.emulator import server

ROOT = Path(__file__).resolve().parents[2]


def _table_row(text: str, first_cell_has: str) -> str:
    rows = [line for line in text.splitlines() if line.startswith("|") and first_cell_has in line.split("|")[2]]
    assert len(rows) == 1, (first_cell_has, rows)
    return rows[0].split("|")[1]


def test_every_fallback_code_is_in_the_spot_cluster_table_in_its_row():
    doc = (ROOT / "docs" / "spot_cluster.md").read_text(encoding="utf-8")
    next_zone = set(re.findall(r"`(\w+)`", _table_row(doc, "next zone")))
    next_type = set(re.findall(r"`(\w+)`", _table_row(doc, "next type")))
    assert next_zone == set(_spot_instances.CAPACITY_ERRORS)
    assert next_type == set(_spot_instances.QUOTA_ERRORS)


def test_the_emulator_answers_fallback_codes_only_with_ec2s_codes():
    """Each code the emulator can fail a launch with is one the module classifies."""
    fallback = _spot_instances.CAPACITY_ERRORS | _spot_instances.QUOTA_ERRORS
    assert set(server.LAUNCH_ERROR_STATUS) <= fallback
    assert set(server.LAUNCH_ERROR_STATUS.values()) <= {400, 500}


def test_every_emulator_fault_kind_is_in_the_readme_control_table():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    rows = [line for line in readme.splitlines() if line.startswith("| `POST /_emulator/faults`")]
    documented = {kind for row in rows for kind in re.findall(r'`\{"(\w+)"', row)}
    assert documented == set(server.Faults().as_dict())
