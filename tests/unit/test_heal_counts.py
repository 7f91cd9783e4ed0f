"""heal.yml's arithmetic (plugins/filter/heal.py): make before break, never below the count."""
from __future__ import annotations

from ansible_collections.bacalhau.aws_spot.plugins.filter.heal import heal_counts, heal_short

HOME = [{"region": "eu-west-1", "count": 2, "instance_types": ["t4g.small"]}]
OVER = [{"region": "us-west-2", "instance_types": ["t4g.small"]}, {"region": "us-east-2", "instance_types": ["t3.small"]}]


def node(iid, region, state="running", role="compute"):
    return {"instance_id": iid, "region": region, "state": state, "role": role}


def counts(entries):
    return {e["region"]: e["count"] for e in entries}


def test_grow_adds_replacements_for_draining_nodes_and_never_shrinks():
    now = [node("i-1", "eu-west-1"), node("i-2", "eu-west-1"), node("i-3", "eu-west-1")]  # one more than asked
    assert counts(heal_counts(HOME, now, "grow")) == {"eu-west-1": 3}
    assert counts(heal_counts(HOME, now[:2], "grow", drain=["i-1"])) == {"eu-west-1": 3}
    ended = now[:1] + [node("i-9", "eu-west-1", state="terminated")]
    assert counts(heal_counts(HOME, ended, "grow")) == {"eu-west-1": 2}
    # orchestrators and other regions do not count
    assert counts(heal_counts(HOME, [node("i-o", "eu-west-1", role="orchestrator")], "grow")) == {"eu-west-1": 2}


def test_overflow_takes_what_home_lacks_beyond_what_overflow_holds_in_order():
    short = [node("i-1", "eu-west-1")]
    assert counts(heal_counts(HOME, short, "overflow", overflow_regions=OVER, index=0)) == {"us-west-2": 1}
    held = short + [node("i-o1", "us-west-2")]
    assert counts(heal_counts(HOME, held, "overflow", overflow_regions=OVER, index=0)) == {"us-west-2": 1}
    assert counts(heal_counts(HOME, held, "overflow", overflow_regions=OVER, index=1)) == {"us-east-2": 0}
    # the first could not hold it: the second gets the rest
    assert counts(heal_counts(HOME, [], "overflow", overflow_regions=OVER, index=1)) == {"us-east-2": 2}
    assert heal_short(HOME, short) == ["eu-west-1"] and heal_short(HOME, short + [node("i-2", "eu-west-1")]) == []


def test_final_lets_go_of_the_drained_only_once_replaced_and_of_spare_overflow_last_first():
    replaced = [node("i-1", "eu-west-1"), node("i-2", "eu-west-1"), node("i-new", "eu-west-1")]
    assert counts(heal_counts(HOME, replaced, "final", drain=["i-1"], overflow_regions=OVER)) == \
        {"eu-west-1": 2, "us-west-2": 0, "us-east-2": 0}
    not_replaced = [node("i-1", "eu-west-1"), node("i-2", "eu-west-1")]
    assert counts(heal_counts(HOME, not_replaced, "final", drain=["i-1"], overflow_regions=OVER))["eu-west-1"] == 2
    home_again = replaced[1:] + [node("i-o1", "us-west-2"), node("i-o2", "us-east-2")]
    assert counts(heal_counts(HOME, home_again, "final", overflow_regions=OVER)) == \
        {"eu-west-1": 2, "us-west-2": 0, "us-east-2": 0}
    still_short = [node("i-2", "eu-west-1"), node("i-o1", "us-west-2"), node("i-o2", "us-east-2")]
    assert counts(heal_counts(HOME, still_short, "final", overflow_regions=OVER)) == \
        {"eu-west-1": 1, "us-west-2": 1, "us-east-2": 0}  # the later overflow region goes first
