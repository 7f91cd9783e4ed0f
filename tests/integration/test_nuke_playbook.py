"""``playbooks/nuke.yml`` against the emulator, as a user runs it."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

_path = Path(__file__).resolve().parents[1] / "unit" / "test_nuke_world.py"
_spec = importlib.util.spec_from_file_location("nuke_world", _path)
world = sys.modules.get("nuke_world") or importlib.util.module_from_spec(_spec)
if "nuke_world" not in sys.modules:
    sys.modules["nuke_world"] = world
    _spec.loader.exec_module(world)

PLAYBOOK = "playbooks/nuke.yml"
REGIONS = ["us-east-1", "eu-west-1"]


@pytest.fixture
def scene(aws):
    alpha = world.build_ours("us-east-1", "alpha") | world.build_ours("eu-west-1", "alpha", full=False)
    beta = world.build_ours("eu-west-1", "beta", full=False)
    foreign = world.build_foreign("us-east-1", "untagged") | world.build_foreign("eu-west-1", "other")
    return {"alpha": alpha, "beta": beta, "ours": alpha | beta, "foreign": foreign,
            "before": world.inventory(REGIONS)}


def _ok(run) -> str:
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    return run.stdout


def test_default_is_a_dry_run_that_says_how_to_proceed(scene, playbook):
    out = _ok(playbook(PLAYBOOK))  # no options at all: every enabled region, dry run
    assert "Dry run" in out and "account 123456789012" in out
    assert "every region enabled for the account" in out
    assert "ansible-playbook playbooks/nuke.yml -e force=true" in out
    for _, _, resource_id in scene["ours"].items:
        assert resource_id in out
    assert world.inventory(REGIONS) == scene["before"]
    # --check with force=true is still a dry run
    _ok(playbook(PLAYBOOK, "-e", "force=true", check=True, extra_vars={"regions": REGIONS}))
    assert world.inventory(REGIONS) == scene["before"]


def test_force_deletes_all_of_ours_and_a_second_run_finds_nothing(scene, playbook):
    out = _ok(playbook(PLAYBOOK, "-e", "force=true", "-e", "regions=us-east-1,eu-west-1"))
    assert "DELETING" in out and f"Deleted {len(scene['ours'].items)} resource(s)" in out
    after = world.inventory(REGIONS)
    assert not (scene["ours"].items & after)
    assert scene["foreign"].items <= after
    again = _ok(playbook(PLAYBOOK, "-e", "force=true", "-e", "regions=[us-east-1, eu-west-1]"))
    assert "nothing of ours to delete" in again
    assert "changed=0" in again


def test_cluster_name_and_regions_narrow(scene, playbook):
    out = _ok(playbook(PLAYBOOK, extra_vars={"force": True, "cluster_name": "alpha", "regions": ["eu-west-1"]}))
    assert "bacalhau:cluster=alpha" in out
    after = world.inventory(REGIONS)
    alpha_eu = {i for i in scene["alpha"].items if i[0] == "eu-west-1"}
    assert alpha_eu and not (alpha_eu & after)
    assert scene["alpha"].items - alpha_eu <= after  # alpha in us-east-1: another region
    assert scene["beta"].items <= after  # beta: another cluster
    assert scene["foreign"].items <= after


def test_what_cannot_be_deleted_fails_the_play_with_the_reason(aws, playbook):
    ours = world.build_ours("us-east-1", "alpha", full=False)
    c = world.ec2("us-east-1")
    subnet = sorted(i[2] for i in ours.of_type("subnets"))[0]
    foreign = c.run_instances(ImageId=world.image("us-east-1"), InstanceType="t3.micro", MinCount=1, MaxCount=1,
                              SubnetId=subnet)["Instances"][0]["InstanceId"]
    run = playbook(PLAYBOOK, extra_vars={"force": "true", "regions": "us-east-1"})
    assert run.returncode != 0
    assert "remain" in run.stdout and subnet in run.stdout and foreign in run.stdout
    assert ("us-east-1", "instances", foreign) in world.inventory(["us-east-1"])
