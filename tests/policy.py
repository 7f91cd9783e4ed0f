"""The IAM policy users are told to give (``docs/iam-policy.json``), checked against real runs.

The emulator's call log says, per call, which client made it (its User-Agent): this
collection's own boto3 clients (``bacalhau.aws_spot``), amazon.aws's (the inventory
plugin and modules our playbooks use), or anything else (tests setting a scene up).
Every action of the first two must be allowed by the policy.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable

POLICY = Path(__file__).resolve().parents[1] / "docs" / "iam-policy.json"
OURS = ("bacalhau.aws_spot", "amazon.aws")


def policy_actions() -> set[str]:
    actions: set[str] = set()
    for statement in json.loads(POLICY.read_text(encoding="utf-8"))["Statement"]:
        found = statement["Action"]
        actions.update([found] if isinstance(found, str) else found)
    return actions


def actions_called(log: Iterable[dict[str, Any]]) -> set[str]:
    """``service:Operation`` of every call made by this collection or by amazon.aws."""
    return {f"{e['service']}:{e['operation']}" for e in log if e.get("agent") in OURS}


def actions_not_in_policy(log: Iterable[dict[str, Any]]) -> set[str]:
    return actions_called(log) - policy_actions()
