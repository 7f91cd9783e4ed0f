"""spot_cluster with orchestrator: the whole cluster in one call (plan once, apply once), heal and release.

Against the emulator: what exists afterwards, and how many planning passes a call makes.
"""
from __future__ import annotations

import json

import boto3

from tests.unit.test_spot_cluster import KEY, live, tags, writes

FALLBACK = ("bacalhau:market", "on-demand-fallback")


def ec2(region):
    return boto3.client("ec2", region_name=region)


def whole(name="whole", **kw):
    args = {
        "cluster_name": name,
        "orchestrator": {"mode": "managed", "region": "us-east-1", "instance_type": "t3.small", "market": "on-demand"},
        "regions": [
            {"region": "us-east-1", "count": 2, "instance_types": ["t3.small", "t3a.small"]},
            {"region": "eu-west-1", "count": 2, "instance_types": ["t3.small"]},
        ],
        "ssh_public_key": KEY,
        "ssh_cidrs": ["198.51.100.0/24"],
        "nats_cidrs": ["192.0.2.0/24"],
    }
    args.update(kw)
    return args


def nats_sources(region: str, cluster: str) -> set[str]:
    groups = ec2(region).describe_security_groups(
        Filters=[{"Name": "tag:bacalhau:cluster", "Values": [cluster]}])["SecurityGroups"]
    return {r["CidrIp"] for g in groups for p in g["IpPermissions"] if p.get("FromPort") == 4222
            for r in p.get("IpRanges", [])}


def public_32s(region: str, cluster: str) -> set[str]:
    return {f"{i['PublicIpAddress']}/32" for i in live(region, cluster, "compute") if i.get("PublicIpAddress")}


def test_one_call_one_planning_pass_both_roles_and_the_nats_rule(aws, run_module):
    first = run_module("spot_cluster", whole())
    assert not first.failed, first.get("msg")
    assert len(live("us-east-1", "whole", "orchestrator")) == 1
    assert len(live("us-east-1", "whole", "compute")) == 2 and len(live("eu-west-1", "whole", "compute")) == 2
    # one planning pass: one DescribeInstances per region, though both roles live in us-east-1
    by_region = {}
    for call in aws.calls()["log"]:
        if call["operation"] == "DescribeInstances" and call.get("status", 200) == 200:
            by_region[call["region"]] = by_region.get(call["region"], 0) + 1
    reads = aws.calls()["by_operation"]
    assert reads["DescribeVpcs"] == 2 and reads["CreateVpc"] == 2  # one network per region, both roles in it
    # the NATS rule: nats_cidrs and the compute nodes outside the orchestrator's region, nothing else
    want = {"192.0.2.0/24"} | public_32s("eu-west-1", "whole")
    assert nats_sources("us-east-1", "whole") == want and len(want) == 3
    assert sorted(first["nats_cidrs"]) == sorted(want)
    orchestrator = live("us-east-1", "whole", "orchestrator")[0]
    assert first["orchestrator_endpoints"] == [f"nats://{orchestrator['PublicIpAddress']}:4222"]
    rows = {(r["region"], r["role"]): r for r in first["summary"]}
    assert set(rows) == {("us-east-1", "orchestrator"), ("us-east-1", "compute"), ("eu-west-1", "compute")}
    assert rows[("eu-west-1", "compute")]["reasons"]["launch"].startswith("2 missing of count 2")
    assert {i["role"] for i in first["instances"]} == {"orchestrator", "compute"} and len(first["instances"]) == 5

    aws.reset_calls()
    again = run_module("spot_cluster", whole())
    assert not again.failed and not again.changed, again.get("summary")
    ops = aws.calls()["by_operation"]
    assert ops["DescribeInstances"] == 2, ops  # one planning pass, the regions' reads shared by the roles
    assert not {"RunInstances", "TerminateInstances", "AuthorizeSecurityGroupIngress"} & set(ops)


def test_a_stale_nats_address_is_revoked_by_a_healthy_heal(aws, run_module):
    assert not run_module("spot_cluster", whole()).failed
    group = ec2("us-east-1").describe_security_groups(
        Filters=[{"Name": "tag:bacalhau:cluster", "Values": ["whole"]}])["SecurityGroups"][0]
    # an address no run of ours knows of (a node let go by an earlier heal, say)
    ec2("us-east-1").authorize_security_group_ingress(GroupId=group["GroupId"], IpPermissions=[
        {"IpProtocol": "tcp", "FromPort": 4222, "ToPort": 4222, "IpRanges": [{"CidrIp": "198.18.0.7/32"}]}])
    healed = run_module("spot_cluster", whole(mode="heal"))
    assert not healed.failed, healed.get("msg")
    assert healed.changed and not healed["launched"] and not healed["terminated"]
    assert nats_sources("us-east-1", "whole") == {"192.0.2.0/24"} | public_32s("eu-west-1", "whole")
    assert not run_module("spot_cluster", whole(mode="heal")).changed


def test_heal_replaces_the_draining_then_release_lets_them_go_never_below_the_count(aws, run_module):
    assert not run_module("spot_cluster", whole()).failed
    draining = live("eu-west-1", "whole", "compute")[0]["InstanceId"]
    healed = run_module("spot_cluster", whole(mode="heal", drain_instance_ids=[draining]))
    assert not healed.failed, healed.get("msg")
    assert len(healed["launched"]) == 1 and not healed["terminated"]
    assert len(live("eu-west-1", "whole", "compute")) == 3  # make before break
    row = next(r for r in healed["summary"] if r["region"] == "eu-west-1")
    assert "replacement(s) for draining nodes" in row["reasons"]["launch"]

    released = run_module("spot_cluster", whole(mode="release", drain_instance_ids=[draining]))
    assert not released.failed, released.get("msg")
    assert released["released"] == [draining]
    assert len(live("eu-west-1", "whole", "compute")) == 2 and draining not in {
        i["InstanceId"] for i in live("eu-west-1", "whole", "compute")}
    row = next(r for r in released["summary"] if r["region"] == "eu-west-1")
    assert row["reasons"]["terminate"].startswith("drained")
    # nothing left to release: the count holds
    assert run_module("spot_cluster", whole(mode="release", drain_instance_ids=[]))["released"] == []


def test_a_drain_heal_with_room_at_home_launches_nothing_in_overflow(aws, run_module):
    # the replacement of a draining node lands at home: the overflow region is for what home cannot hold
    args = whole(overflow_regions=[{"region": "us-west-2", "instance_types": ["t3.small"]}])
    assert not run_module("spot_cluster", args).failed
    draining = live("eu-west-1", "whole", "compute")[0]["InstanceId"]
    healed = run_module("spot_cluster", dict(args, mode="heal", drain_instance_ids=[draining]))
    assert not healed.failed, healed.get("msg")
    assert len(healed["launched"]) == 1 and not live("us-west-2", "whole")
    assert all(r["region"] != "us-west-2" or not r["launched"] for r in healed["summary"])


def test_heal_of_a_cluster_that_does_not_exist_makes_nothing(aws, run_module):
    # a heal from cron or the autoheal rulebook's tick after destroy.yml must not build the cluster again
    healed = run_module("spot_cluster", whole("gone", mode="heal"))
    assert healed.failed and "cluster gone does not exist" in healed["msg"] and "create.yml" in healed["msg"]
    assert writes(aws) == {}
    assert not live("us-east-1", "gone") and not live("eu-west-1", "gone")
    planned = run_module("spot_cluster", whole("gone", mode="heal"), check_mode=True)  # status.yml's plan
    assert not planned.failed and "cluster gone does not exist" in str(planned.get("warnings"))


def test_heal_overflows_in_order_then_returns_home(aws, run_module):
    args = whole(regions=[{"region": "eu-west-1", "count": 2, "instance_types": ["t3.small"]}],
                 overflow_regions=[{"region": "us-west-2", "instance_types": ["t3.small"]},
                                   {"region": "eu-central-1", "instance_types": ["t3.small"]}],
                 market="spot")
    aws.capacity_error("eu-west-1", market="spot")
    created = run_module("spot_cluster", dict(args, allow_partial=True))  # the orchestrator; no room at home
    assert not created.failed and not created["failed_regions"] == {}, created.get("msg")
    assert not live("us-west-2", "whole")  # create does not overflow
    healed = run_module("spot_cluster", dict(args, mode="heal"))
    assert not healed.failed, healed.get("msg")
    assert len(live("eu-west-1", "whole", "compute")) == 0
    over = live("us-west-2", "whole", "compute")
    assert len(over) == 2 and all(tags(i)["bacalhau:overflow-for"] == "eu-west-1" for i in over)
    assert not live("eu-central-1", "whole", "compute")
    # the overflow nodes may reach the orchestrator (us-east-1)
    assert public_32s("us-west-2", "whole") <= nats_sources("us-east-1", "whole")

    aws.clear_faults()  # home has room again
    home = run_module("spot_cluster", dict(args, mode="heal"))
    assert len(live("eu-west-1", "whole", "compute")) == 2 and len(live("us-west-2", "whole", "compute")) == 2
    assert not home.failed
    gone = run_module("spot_cluster", dict(args, mode="release"))
    assert sorted(gone["released"]) == sorted(i["InstanceId"] for i in over)
    assert not live("us-west-2", "whole", "compute")
    assert nats_sources("us-east-1", "whole") == {"192.0.2.0/24"} | public_32s("eu-west-1", "whole")


def test_heal_swaps_stand_ins_for_spot_and_stand_ins_are_spread_over_zones(aws, run_module):
    args = whole(regions=[{"region": "eu-west-1", "count": 3, "instance_types": ["t3.small"]}],
                 market="spot-then-on-demand", allow_partial=True)
    aws.capacity_error("eu-west-1", market="spot")
    first = run_module("spot_cluster", args)
    assert not first.failed, first.get("msg")
    stand_ins = live("eu-west-1", "whole", "compute")
    assert len(stand_ins) == 3 and all(tags(i).get(FALLBACK[0]) == FALLBACK[1] for i in stand_ins)
    assert len({i["Placement"]["AvailabilityZone"] for i in stand_ins}) == 3  # spread, not all in one zone

    aws.clear_faults()
    healed = run_module("spot_cluster", dict(args, mode="heal"))
    assert not healed.failed, healed.get("msg")
    now = live("eu-west-1", "whole", "compute")
    assert len(now) == 3 and all(i.get("InstanceLifecycle") == "spot" for i in now)
    assert sorted(next(r for r in healed["summary"] if r["region"] == "eu-west-1")["replaced"]) == \
        sorted(i["InstanceId"] for i in stand_ins)


def test_problems_anywhere_stop_everything_in_the_file_s_words(aws, run_module):
    bad = whole(regions=[{"region": "us-east-1", "count": 1, "instance_types": ["t3.small"]},
                         {"region": "eu-west-1", "cout": 3, "instance_types": ["t4g.small"]}],
                orchestrator={"mode": "managed", "region": "us-east-1", "instance_type": "t3", "market": "on-demand"},
                overflow_regions=[{"region": "eu-west-1", "count": 1, "instance_types": ["t3.small"]}],
                ssh_cidrs=["203.0.113.0/33"])
    result = run_module("spot_cluster", bad)
    assert result.failed
    msg = result["msg"]
    assert msg.startswith("Nothing was created, because: ")
    assert "cluster_regions[1] (eu-west-1): unknown key 'cout' (did you mean 'count'?)" in msg
    assert "cluster_orchestrator.instance_type: 't3' is not an instance type name" in msg
    assert "cluster_overflow_regions[0] (eu-west-1): no 'count'" in msg
    assert "cluster_overflow_regions[0] (eu-west-1): is a region of cluster_regions" in msg
    assert msg.count("cluster_ssh_cidrs: '203.0.113.0/33'") == 1
    assert aws.calls()["total"] == 0

    huge = [{"region": "us-east-1", "count": 100000, "instance_types": ["t3.small"]}]
    many = run_module("spot_cluster", whole(regions=huge))
    assert "cluster_regions[0] (us-east-1): count 100000" in many["msg"]
    assert "100001 nodes" in many["msg"] and "cluster_max_nodes 100" in many["msg"]

    typo = run_module("spot_cluster", whole(orchestrator={"mode": "managed", "region": "us-esat-1",
                                                          "instance_type": "t3.small"}))
    assert typo.failed and "cluster_orchestrator.region (us-esat-1): unknown region" in typo["msg"], typo["msg"]
    assert "regions[0]" not in typo["msg"]
    assert not live("us-east-1", "whole") and not live("eu-west-1", "whole")


def far(east: int, west: int, sydney: int) -> list[dict]:
    return [{"region": "us-east-1", "count": east, "instance_types": ["t3.small"]},
            {"region": "eu-west-1", "count": west, "instance_types": ["t3.small"]},
            {"region": "ap-southeast-2", "count": sydney, "instance_types": ["t3.small"]}]


def test_a_cluster_whose_nats_rule_would_not_fit_the_security_group_quota_is_refused_before_anything(aws, run_module):
    # 58 compute nodes outside the orchestrator's region: 58 /32s, SSH, a NATS block and the group's
    # own rule make 61 rules, and AWS holds 60 by default
    result = run_module("spot_cluster", whole(regions=far(2, 29, 29)))
    assert result.failed
    msg = result["msg"]
    assert msg.startswith("Nothing was created, because: ")
    assert "could need 61 inbound rules" in msg and "29 in eu-west-1, 29 in ap-southeast-2" in msg
    assert "cluster_security_group_rules_quota" in msg and "cluster_nats_cidrs" in msg
    assert aws.calls()["total"] == 0
    # overflow regions may take the orchestrator region's nodes: they count too
    spill = run_module("spot_cluster", whole(regions=far(3, 28, 28),
                                             overflow_regions=[{"region": "us-west-2", "instance_types": ["t3.small"]}]))
    assert spill.failed and "3 in the overflow regions (for us-east-1's nodes)" in spill["msg"], spill["msg"]
    assert aws.calls()["total"] == 0
    # one node fewer fits; so does a raised quota (checked in check mode: nothing made)
    assert not run_module("spot_cluster", whole(regions=far(2, 29, 28)), check_mode=True).failed
    assert not run_module("spot_cluster", whole(regions=far(2, 29, 29), security_group_rules_quota=61),
                          check_mode=True).failed


def test_nats_open_to_every_address_needs_no_32s(aws, run_module):
    # a block that holds every address makes each node's /32 moot: none is added
    result = run_module("spot_cluster", whole(nats_cidrs=["0.0.0.0/0"]))
    assert not result.failed, result.get("msg")
    assert nats_sources("us-east-1", "whole") == {"0.0.0.0/0"} and result["nats_cidrs"] == ["0.0.0.0/0"]
    assert "whole internet" in str(result.get("warnings")), result.get("warnings")  # open to the world: said so
    # and the quota check knows: 58 nodes outside are no /32s
    assert not run_module("spot_cluster", whole(regions=far(2, 29, 29), nats_cidrs=["0.0.0.0/0"]),
                          check_mode=True).failed


def test_a_quota_lower_than_the_file_says_is_named_in_the_users_words(aws, run_module):
    # the file says 200, but the account has AWS's default 60: AWS refuses the rules at the NATS
    # rule's update, and the error says which setting is wrong
    result = run_module("spot_cluster", whole(regions=far(1, 30, 30), security_group_rules_quota=200))
    assert result.failed
    text = json.dumps(result)
    assert "RulesPerSecurityGroupLimitExceeded" in text and "cluster_security_group_rules_quota" in text, text[-3000:]


def test_the_cap_counts_the_orchestrator(aws, run_module):
    result = run_module("spot_cluster", whole(max_nodes=4))  # 4 compute + 1 orchestrator
    assert result.failed and "5 nodes" in result["msg"] and "cluster_max_nodes 4" in result["msg"]
    assert not live("us-east-1", "whole")


def test_a_32_inside_a_nats_block_gets_no_rule_of_its_own():
    from ansible_collections.bacalhau.aws_spot.plugins.module_utils._cluster import desc as cluster_desc
    from ansible_collections.bacalhau.aws_spot.plugins.module_utils._cluster import reconcile

    desc = cluster_desc.parse(whole(nats_cidrs=["198.18.0.0/15"]))
    views = [{"public_ip": "198.19.3.4", "region": "eu-west-1", "state": "running"},  # inside the block
             {"public_ip": "203.0.113.9", "region": "eu-west-1", "state": "pending"},
             {"public_ip": "203.0.113.10", "region": "us-east-1", "state": "running"},  # the orchestrator's region
             {"public_ip": "203.0.113.11", "region": "eu-west-1", "state": "terminated"}]
    assert reconcile.nats_rule(desc, views) == ["198.18.0.0/15", "203.0.113.9/32"]


class _NoRetry:
    """A boto3 client taking the aws_retry argument amazon.aws's clients take."""

    def __init__(self, client):
        self.client = client

    def __getattr__(self, name):
        found = getattr(self.client, name)
        if not callable(found) or name in ("get_paginator", "can_paginate"):
            return found
        return lambda *args, aws_retry=None, **kwargs: found(*args, **kwargs)


def test_a_swap_of_addresses_in_a_full_security_group_revokes_before_it_authorizes(aws, run_module):
    # 57 nodes outside us-east-1, SSH, a NATS block and the group's own rule: the group is full (60).
    # One /32 going and another coming in one update only fits if the old one goes first.
    from ansible_collections.bacalhau.aws_spot.plugins.module_utils._cluster import build, network
    from ansible_collections.bacalhau.aws_spot.plugins.module_utils._cluster import desc as cluster_desc

    args = whole(regions=far(1, 29, 28))
    assert not run_module("spot_cluster", args).failed
    ec2_east = _NoRetry(ec2("us-east-1"))
    spec = cluster_desc.parse(args).orchestrator

    def rules() -> int:
        groups = ec2("us-east-1").describe_security_groups(
            Filters=[{"Name": "tag:bacalhau:cluster", "Values": ["whole"]}])["SecurityGroups"]
        return sum(len(p.get("IpRanges", [])) + len(p.get("UserIdGroupPairs", [])) for g in groups
                   for p in g["IpPermissions"])

    filler = {f"198.18.0.{n}/32" for n in range(60 - rules())}  # full, whatever addresses moto gave
    spec.regions[0].nats_cidrs = sorted(nats_sources("us-east-1", "whole") | filler)
    build.prepare(ec2_east, spec, network.find(ec2_east, spec, "us-east-1"))()
    assert rules() == 60
    for n in range(5):  # the parallel way fails about half the time: five swaps
        have = nats_sources("us-east-1", "whole")
        old = sorted(a for a in have if a.endswith("/32"))[0]
        new = f"203.0.113.{n + 1}/32"
        spec.regions[0].nats_cidrs = sorted(have - {old} | {new})
        build.prepare(ec2_east, spec, network.find(ec2_east, spec, "us-east-1"))()
        assert nats_sources("us-east-1", "whole") == have - {old} | {new} and rules() == 60
