"""ami_arch_lookup against the emulator: every outcome the module promises."""
from __future__ import annotations

import boto3
import pytest

from tests.emulator import seed

NEWEST = seed.SERIALS[-1]


def newest(region, release, arch):
    return seed.ami_id(region, release, arch, NEWEST)


def test_images_for_both_architectures_in_many_regions(run_module):
    regions = ["us-east-1", "eu-west-1", "ap-northeast-1"]
    result = run_module("ami_arch_lookup", {"regions": regions})
    assert not result.failed, result
    assert not result.changed
    assert set(result["images"]) == set(regions)
    for region in regions:
        for arch in ("x86_64", "arm64"):
            image = result["images"][region][arch]
            assert image["image_id"] == newest(region, "24.04", arch)
            assert image["architecture"] == arch
            assert image["source"] == "ssm"
            assert "noble-24.04" in image["name"]
            assert image["owner_id"] == seed.CANONICAL_OWNER_ID
    assert "instance_types" not in result


def test_jammy_release_and_one_architecture(run_module):
    result = run_module("ami_arch_lookup", {"regions": ["us-west-2"], "architectures": ["arm64"],
                                            "ubuntu_release": "22.04"})
    assert not result.failed, result
    assert list(result["images"]["us-west-2"]) == ["arm64"]
    assert result["images"]["us-west-2"]["arm64"]["image_id"] == newest("us-west-2", "22.04", "arm64")
    assert "jammy-22.04-arm64" in result["images"]["us-west-2"]["arm64"]["name"]


def test_fallback_to_describe_images_when_ssm_has_no_parameter(run_module, monkeypatch):
    # Point the SSM name at a path Canonical never published: the module must fall back
    # to DescribeImages by owner and name and still find the newest build.
    from ansible_collections.bacalhau.aws_spot.plugins.module_utils._placement import images as _ami

    monkeypatch.setattr(_ami, "ssm_parameter_name", lambda release, arch: f"/nowhere/{release}/{arch}")
    result = run_module("ami_arch_lookup", {"regions": ["eu-central-1"]})
    assert not result.failed, result
    image = result["images"]["eu-central-1"]["arm64"]
    assert image["source"] == "describe_images"
    assert image["image_id"] == newest("eu-central-1", "24.04", "arm64")


def test_instance_types_get_their_architecture_and_image(run_module, aws):
    types = ["t3.small", "t4g.small", "c7g.large", "m6i.large", "r8g.large", "t2.micro"]
    result = run_module("ami_arch_lookup", {"regions": ["us-east-1", "eu-west-1"], "instance_types": types})
    assert not result.failed, result
    for region in ("us-east-1", "eu-west-1"):
        got = result["instance_types"][region]
        for itype, arch in {"t3.small": "x86_64", "t4g.small": "arm64", "c7g.large": "arm64",
                            "m6i.large": "x86_64", "r8g.large": "arm64", "t2.micro": "x86_64"}.items():
            assert got[itype]["architecture"] == arch, itype
            assert got[itype]["image_id"] == newest(region, "24.04", arch)
    # the architectures came from DescribeInstanceTypes, in one call per region
    assert aws.calls()["by_operation"]["DescribeInstanceTypes"] == 2


def test_unknown_instance_type(run_module):
    result = run_module("ami_arch_lookup", {"regions": ["us-east-1"], "instance_types": ["t3.small", "t3.mega"]})
    assert result.failed
    assert "us-east-1" in result["msg"] and "t3.mega" in result["msg"]
    assert "t3.small" not in result["msg"].split("unknown instance type(s):")[1]


def test_type_not_offered_in_region(run_module):
    ec2 = boto3.client("ec2", region_name="ap-southeast-2")
    offered = {o["InstanceType"] for o in ec2.describe_instance_type_offerings(
        LocationType="region")["InstanceTypeOfferings"]}
    all_types = {t["InstanceType"] for p in ec2.get_paginator("describe_instance_types").paginate()
                 for t in p["InstanceTypes"]}
    missing = sorted(t for t in all_types - offered if not t.startswith("mac"))
    assert missing, "the emulator offers every type everywhere; pick another region"
    result = run_module("ami_arch_lookup", {"regions": ["ap-southeast-2"], "instance_types": [missing[0]]})
    assert result.failed
    assert f"{missing[0]} is not offered in ap-southeast-2" in result["msg"]


def test_unknown_region(run_module):
    result = run_module("ami_arch_lookup", {"regions": ["us-east-1", "mars-north-1"]})
    assert result.failed
    assert "unknown region(s): mars-north-1" in result["msg"]


def test_given_image_validated(run_module):
    arm = newest("us-east-1", "24.04", "arm64")
    result = run_module("ami_arch_lookup", {"regions": ["us-east-1"], "instance_types": ["t4g.small"],
                                            "image_ids": {"us-east-1": arm}})
    assert not result.failed, result
    assert result["images"]["us-east-1"] == {"arm64": result["images"]["us-east-1"]["arm64"]}
    assert result["images"]["us-east-1"]["arm64"]["source"] == "given"
    assert result["instance_types"]["us-east-1"]["t4g.small"] == {"architecture": "arm64", "image_id": arm}


def test_architecture_mismatch_names_everything(run_module):
    x86 = newest("eu-west-1", "24.04", "x86_64")
    result = run_module("ami_arch_lookup", {"regions": ["eu-west-1"], "instance_types": ["c7g.large"],
                                            "image_ids": {"eu-west-1": x86}})
    assert result.failed
    msg = result["msg"]
    for word in ("eu-west-1", "c7g.large", x86, "arm64", "x86_64"):
        assert word in msg, (word, msg)


def test_image_of_another_region_is_not_found(run_module):
    # AMI ids differ per region: an us-east-1 id does not exist in eu-west-1
    result = run_module("ami_arch_lookup", {"regions": ["eu-west-1"],
                                            "image_ids": {"eu-west-1": newest("us-east-1", "24.04", "x86_64")}})
    assert result.failed
    assert "does not exist in eu-west-1" in result["msg"]


def test_no_image_found(run_module, monkeypatch):
    from ansible_collections.bacalhau.aws_spot.plugins.module_utils._placement import images as _ami

    monkeypatch.setattr(_ami, "ssm_parameter_name", lambda release, arch: f"/nowhere/{release}/{arch}")
    monkeypatch.setattr(_ami, "image_name_pattern", lambda release, arch: "no-such-image-*")
    result = run_module("ami_arch_lookup", {"regions": ["sa-east-1"], "architectures": ["arm64"]})
    assert result.failed
    assert "no Ubuntu 24.04 arm64 image" in result["msg"] and "sa-east-1" in result["msg"]


def test_one_bad_region_reported_with_the_others_checked(run_module):
    result = run_module("ami_arch_lookup", {
        "regions": ["us-east-1", "eu-west-1"], "instance_types": ["t4g.small"],
        "image_ids": {"us-east-1": newest("us-east-1", "24.04", "x86_64"),
                      "eu-west-1": newest("eu-west-1", "24.04", "arm64")}})
    assert result.failed
    assert result["failed_regions"] == ["us-east-1"]


@pytest.mark.parametrize("args, words", [
    ({"regions": []}, "at least one region"),
    ({"regions": ["us-east-1"], "instance_types": []}, "at least one instance type"),
    ({"regions": ["us-east-1"], "image_ids": {"eu-west-1": "ami-1"}}, "not in regions: eu-west-1"),
    ({"regions": ["us-east-1"], "architectures": ["s390x"]}, "s390x"),
])
def test_bad_input_one_clear_error(run_module, aws, args, words):
    result = run_module("ami_arch_lookup", args)
    assert result.failed
    assert words in result["msg"]


def test_check_mode_same_answer(run_module):
    normal = run_module("ami_arch_lookup", {"regions": ["us-east-1"]})
    checked = run_module("ami_arch_lookup", {"regions": ["us-east-1"]}, check_mode=True)
    assert not checked.failed and not checked.changed
    assert checked["images"] == normal["images"]


def test_throttling_survived(run_module, aws):
    aws.throttle(4)
    result = run_module("ami_arch_lookup", {"regions": ["us-east-1", "eu-west-1"], "instance_types": ["t3.small"]})
    assert not result.failed, result
    assert aws.faults()["throttle"]["count"] == 0


def max_in_flight(log):
    """Most API calls the emulator was serving at one moment."""
    events = sorted([(c["start"], 1) for c in log] + [(c["end"], -1) for c in log])
    best = now = 0
    for _t, step in events:
        now += step
        best = max(best, now)
    return best


def test_regions_are_looked_up_concurrently(run_module, aws):
    aws.latency(200)
    regions = ["us-east-1", "us-east-2", "us-west-2", "eu-west-1", "eu-central-1", "ap-south-1"]
    result = run_module("ami_arch_lookup", {"regions": regions, "instance_types": ["t3.small"]})
    assert not result.failed, result
    calls = aws.calls()
    # per region: DescribeInstanceTypes, offerings, SSM at once, then DescribeImages
    assert calls["by_operation"] == {"DescribeRegions": 1, "DescribeInstanceTypes": 6,
                                     "DescribeInstanceTypeOfferings": 6, "GetParameters": 6,
                                     "DescribeImages": 6}
    # all regions, and the independent look-ups within a region, were in flight together
    assert max_in_flight(calls["log"]) >= 12
