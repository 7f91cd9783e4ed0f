"""Every rule of every security group the collection makes, checked against its promise.

The promise (docs/security.md): nothing is open to 0.0.0.0/0 or ::/0 unless the user asked for
it (and then a warning says so); SSH (22) only from cluster_ssh_cidrs; Bacalhau's API only
from cluster_api_cidrs; NATS (4222) only to the cluster's own nodes: the group itself (the
nodes of one region reach each other) and, in the orchestrator's region only, the /32 of each
compute node of the other regions. Outbound: AWS's default rule (everything out), which the
nodes need for packages and images, and nothing else.
"""
from __future__ import annotations

import ipaddress

import boto3

from tests.integration.test_create_destroy import CREATE, cluster_vars, instances, ssh_key  # noqa: F401

SSH = ["198.51.100.0/24"]
API = ["203.0.113.0/24"]
PORTS = {"ssh": 22, "api": 1234, "nats": 4222}
WORLD = {"0.0.0.0/0", "::/0"}


def all_regions() -> list[str]:
    return [r["RegionName"] for r in boto3.client("ec2", region_name="us-east-1").describe_regions()["Regions"]]


def managed_groups() -> dict[str, list[dict]]:
    """Every security group tagged as ours, in every region (not only the cluster's)."""
    out = {}
    for region in all_regions():
        groups = boto3.client("ec2", region_name=region).describe_security_groups(Filters=[
            {"Name": "tag:bacalhau:managed-by", "Values": ["bacalhau.aws_spot"]}])["SecurityGroups"]
        if groups:
            out[region] = groups
    return out


def rules(group: dict, direction: str = "IpPermissions") -> list[tuple]:
    """One (protocol, from, to, kind, source) per source of every permission: nothing is skipped."""
    out = []
    for perm in group.get(direction) or []:
        proto, start, end = perm["IpProtocol"], perm.get("FromPort"), perm.get("ToPort")
        for r in perm.get("IpRanges") or []:
            out.append((proto, start, end, "cidr", r["CidrIp"]))
        for r in perm.get("Ipv6Ranges") or []:
            out.append((proto, start, end, "cidr", r["CidrIpv6"]))
        for r in perm.get("PrefixListIds") or []:
            out.append((proto, start, end, "prefix-list", r["PrefixListId"]))
        for r in perm.get("UserIdGroupPairs") or []:
            out.append((proto, start, end, "group", r["GroupId"]))
        if not any(perm.get(k) for k in ("IpRanges", "Ipv6Ranges", "PrefixListIds", "UserIdGroupPairs")):
            out.append((proto, start, end, "none", None))
    return out


def broken_promises(region: str, group: dict, orchestrator_region: str, other_nodes: set[str]) -> list[str]:
    """Every ingress or egress rule of one group that its promise does not allow."""
    bad = []
    for proto, start, end, kind, source in rules(group):
        where = f"{region} {group['GroupId']}: {proto} {start}-{end} from {kind} {source}"
        if kind == "group":
            if source != group["GroupId"] or proto != "-1":
                bad.append(where + " (only the group itself, the cluster's own nodes, may be a group source)")
            continue
        if kind != "cidr" or proto != "tcp" or start != end:
            bad.append(where + " (only single TCP ports from CIDR blocks)")
            continue
        if str(ipaddress.ip_network(source, strict=False)) in WORLD:
            bad.append(where + " (open to the whole internet, never asked for)")
        elif start == PORTS["ssh"]:
            if source not in SSH:
                bad.append(where + f" (SSH only from cluster_ssh_cidrs {SSH})")
        elif start == PORTS["api"]:
            if source not in API:
                bad.append(where + f" (the API only from cluster_api_cidrs {API})")
        elif start == PORTS["nats"]:
            if region != orchestrator_region:
                bad.append(where + " (NATS is opened in the orchestrator's region only)")
            elif source not in other_nodes:
                bad.append(where + f" (NATS only to the cluster's own nodes of other regions {sorted(other_nodes)})")
        else:
            bad.append(where + " (a port the collection never opens)")
    egress = rules(group, "IpPermissionsEgress")
    if egress != [("-1", None, None, "cidr", "0.0.0.0/0")]:
        bad.append(f"{region} {group['GroupId']}: outbound rules {egress} (expected AWS's default only)")
    return bad


def test_every_rule_of_every_group_keeps_the_promise(playbook, aws, ssh_key):  # noqa: F811
    variables = cluster_vars(ssh_key, cluster_ssh_cidrs=SSH, cluster_api_cidrs=API)
    created = playbook(CREATE, extra_vars=variables)
    assert created.returncode == 0, created.stdout[-4000:] + created.stderr[-2000:]
    assert "whole internet" not in created.stdout  # nothing was asked to be open to it

    # the compute nodes outside the orchestrator's region, by their public addresses
    others = {f"{i['PublicIpAddress']}/32" for i in instances("eu-west-1")}
    assert others, "the test needs a compute node in a second region"
    groups = managed_groups()
    assert set(groups) == {"us-east-1", "eu-west-1"}  # one group per region, none elsewhere
    assert all(len(g) == 1 for g in groups.values())

    listed = {}
    problems = []
    for region, region_groups in groups.items():
        for group in region_groups:
            listed[region] = rules(group) + rules(group, "IpPermissionsEgress")
            problems += broken_promises(region, group, "us-east-1", others)
    assert not problems, "\n".join(problems)

    # and the promise is not kept by having nothing: each opening is there, exactly once
    east = {r[3:] for r in rules(groups["us-east-1"][0])}
    west = {r[3:] for r in rules(groups["eu-west-1"][0])}
    assert {("cidr", SSH[0]), ("cidr", API[0]), ("group", groups["us-east-1"][0]["GroupId"])} <= east
    assert {("cidr", c) for c in others} <= east
    assert not {("cidr", c) for c in others} & west
    assert sum(len(v) for v in listed.values()) == len(rules(groups["us-east-1"][0])) + len(
        rules(groups["eu-west-1"][0])) + 2


def test_an_asked_for_world_open_rule_is_made_and_warned_about(playbook, aws, ssh_key):  # noqa: F811
    variables = cluster_vars(ssh_key, cluster_name="it-world", cluster_ssh_cidrs=["0.0.0.0/0"],
                             cluster_api_cidrs=[], cluster_regions=[
                                 {"region": "us-east-1", "count": 1, "instance_types": ["t3.small"]}])
    created = playbook(CREATE, extra_vars=variables)
    assert created.returncode == 0, created.stdout[-4000:]
    assert "[WARNING]: spot_cluster opens ports to the whole internet, as asked: ssh_cidrs: 0.0.0.0/0" in (
        created.stdout + created.stderr)
    (group,) = managed_groups()["us-east-1"]
    assert ("tcp", 22, 22, "cidr", "0.0.0.0/0") in rules(group)


def test_an_api_open_without_its_key_is_refused_before_anything_exists(playbook, aws, ssh_key):  # noqa: F811
    variables = cluster_vars(ssh_key, cluster_api_auth=False)
    refused = playbook(CREATE, extra_vars=variables)
    assert refused.returncode != 0
    assert "cluster_api_cidrs opens Bacalhau's API to 198.51.100.0/24, but cluster_api_auth is false" in refused.stdout
    assert managed_groups() == {} and instances("us-east-1") == []
    writes = {op for op in aws.calls()["by_operation"] if op.startswith(("Create", "Run", "Authorize", "Import"))}
    assert not writes, writes


def test_the_check_catches_each_kind_of_broken_promise():
    """The checker itself: a group with one rule of each wrong kind is caught, rule by rule."""
    group = {"GroupId": "sg-1", "IpPermissionsEgress": [{"IpProtocol": "-1", "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}],
             "IpPermissions": [
                 {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "IpRanges": [{"CidrIp": "192.0.2.0/24"}]},
                 {"IpProtocol": "tcp", "FromPort": 1234, "ToPort": 1234, "Ipv6Ranges": [{"CidrIpv6": "::/0"}]},
                 {"IpProtocol": "tcp", "FromPort": 4222, "ToPort": 4222, "IpRanges": [{"CidrIp": "10.9.9.9/32"}]},
                 {"IpProtocol": "-1", "UserIdGroupPairs": [{"GroupId": "sg-other"}]},
                 {"IpProtocol": "tcp", "FromPort": 8080, "ToPort": 8080, "IpRanges": [{"CidrIp": API[0]}]},
             ]}
    problems = broken_promises("us-east-1", group, "us-east-1", {"192.0.2.77/32"})
    assert len(problems) == 5, problems
    assert ["SSH only" in p for p in problems].count(True) == 1
    assert any("whole internet" in p for p in problems)
    assert any("NATS only to the cluster's own nodes" in p for p in problems)
    assert any("group itself" in p for p in problems)
    assert any("never opens" in p for p in problems)
    assert broken_promises("us-east-1", {"GroupId": "sg-1", "IpPermissions": [], "IpPermissionsEgress": []},
                           "us-east-1", set()) != []  # outbound rules changed: caught too
