"""docs/iam-policy.json: every destructive action is limited to resources tagged as ours."""
from __future__ import annotations

import json
from pathlib import Path

POLICY = Path(__file__).resolve().parents[2] / "docs" / "iam-policy.json"
DESTRUCTIVE = ("Delete", "Terminate", "Cancel", "Detach", "Disassociate", "Release", "RevokeSecurityGroupEgress")
CONDITION = {"StringEquals": {"aws:ResourceTag/bacalhau:managed-by": "bacalhau.aws_spot"}}


def actions(statement: dict) -> list[str]:
    value = statement["Action"]
    return [value] if isinstance(value, str) else value


def test_every_destructive_action_needs_our_tag():
    statements = json.loads(POLICY.read_text(encoding="utf-8"))["Statement"]
    destructive = [(s.get("Sid"), a) for s in statements for a in actions(s)
                   if a.split(":", 1)[1].startswith(DESTRUCTIVE)]
    assert destructive, "the policy lists no destructive action at all"
    unguarded = [(sid, a) for sid, a in destructive
                 if next(s for s in statements if s.get("Sid") == sid).get("Condition") != CONDITION]
    assert not unguarded, f"destructive actions without the aws:ResourceTag condition: {unguarded}"
    assert ("BacalhauAwsSpotDelete", "ec2:TerminateInstances") in destructive
