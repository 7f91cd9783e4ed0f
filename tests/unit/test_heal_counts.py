"""The heal's arithmetic (plugins/module_utils/_cluster/counts.py): make before break, never below the count."""
from __future__ import annotations

from ansible_collections.bacalhau.aws_spot.plugins.module_utils._cluster import counts

HOME = {"eu-west-1": 2}
OVER = ["us-west-2", "us-east-2"]


def node(iid, region, state="running", role="compute"):
    return {"instance_id": iid, "region": region, "state": state, "role": role}


def test_grow_adds_replacements_for_draining_nodes_and_never_shrinks():
    now = [node("i-1", "eu-west-1"), node("i-2", "eu-west-1"), node("i-3", "eu-west-1")]  # one more than asked
    assert counts.grow(HOME, now, set()) == {"eu-west-1": 3}
    assert counts.grow(HOME, now[:2], {"i-1"}) == {"eu-west-1": 3}
    ended = now[:1] + [node("i-9", "eu-west-1", state="terminated")]
    assert counts.grow(HOME, ended, set()) == {"eu-west-1": 2}
    # orchestrators and other regions do not count
    assert counts.grow(HOME, [node("i-o", "eu-west-1", role="orchestrator")], set()) == {"eu-west-1": 2}


def test_overflow_takes_what_home_lacks_beyond_what_overflow_holds_in_order():
    short = [node("i-1", "eu-west-1")]
    assert counts.overflow(HOME, OVER, 0, short, set()) == 1
    held = short + [node("i-o1", "us-west-2")]
    assert counts.overflow(HOME, OVER, 0, held, set()) == 1
    assert counts.overflow(HOME, OVER, 1, held, set()) == 0
    # the first could not hold it: the second gets the rest
    assert counts.overflow(HOME, OVER, 1, [], set()) == 2
    assert counts.short_regions(HOME, short, set()) == ["eu-west-1"]
    assert counts.short_regions(HOME, short + [node("i-2", "eu-west-1")], set()) == []


def test_final_lets_go_of_the_drained_only_once_replaced_and_of_spare_overflow_last_first():
    replaced = [node("i-1", "eu-west-1"), node("i-2", "eu-west-1"), node("i-new", "eu-west-1")]
    assert counts.final(HOME, OVER, replaced, {"i-1"}) == {"eu-west-1": 2, "us-west-2": 0, "us-east-2": 0}
    not_replaced = [node("i-1", "eu-west-1"), node("i-2", "eu-west-1")]
    assert counts.final(HOME, OVER, not_replaced, {"i-1"})["eu-west-1"] == 2
    home_again = replaced[1:] + [node("i-o1", "us-west-2"), node("i-o2", "us-east-2")]
    assert counts.final(HOME, OVER, home_again, set()) == {"eu-west-1": 2, "us-west-2": 0, "us-east-2": 0}
    still_short = [node("i-2", "eu-west-1"), node("i-o1", "us-west-2"), node("i-o2", "us-east-2")]
    assert counts.final(HOME, OVER, still_short, set()) == \
        {"eu-west-1": 1, "us-west-2": 1, "us-east-2": 0}  # the later overflow region goes first
