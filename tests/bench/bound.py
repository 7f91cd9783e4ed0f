"""The critical path: the least number of sequential API round trips each scenario needs.

Each scenario is a dependency graph of the API calls one region needs (a call can only
be made once the calls it depends on have answered). Calls with no path between them can
be in flight at the same time, so the least number of sequential round trips is the
number of calls on the longest path. Regions are independent (their own endpoints and
rate limits), so the cluster's bound is the bound of one region, not the sum.

The graphs are of the work as this collection defines it (the network of
``spot_cluster``: VPC, a public subnet per zone, internet gateway and default route,
security group with its rules, key pair; instances with one ``RunInstances``), done the
cheapest way AWS allows:

* every read that decides what to do (what exists, by tag; zones; image; instance
  types) is one round, in parallel, and nothing is read twice;
* the VPC's main route table carries the default route (no route table to create,
  associate, or delete);
* public addresses come from the launch's network interface (no subnet attribute call);
* waiting costs one ``DescribeInstances`` when the instances are already in the state
  waited for (the emulator's case; on AWS a launch takes ~10-30 s to reach ``running``
  whatever the tool, which no tool can shorten).

Bound time = depth x added latency per call (the emulator's own processing time comes
on top and is reported separately).
"""
from __future__ import annotations

from typing import Mapping, Sequence

Graph = Mapping[str, Sequence[str]]  # call -> the calls it needs answered first

DISCOVER = "Describe* (what exists, by tag; zones; image; instance types)"

GRAPHS: dict[str, dict[str, list[str]]] = {
    "create": {
        DISCOVER: [],
        "CreateVpc": [DISCOVER],
        "CreateInternetGateway": [DISCOVER],
        "ImportKeyPair": [DISCOVER],
        "CreateSubnet (one per zone, in parallel)": ["CreateVpc"],
        "CreateSecurityGroup": ["CreateVpc"],
        "AttachInternetGateway": ["CreateVpc", "CreateInternetGateway"],
        "DescribeRouteTables (the VPC's main table)": ["CreateVpc"],
        "AuthorizeSecurityGroupIngress": ["CreateSecurityGroup"],
        "CreateRoute 0.0.0.0/0": ["AttachInternetGateway", "DescribeRouteTables (the VPC's main table)"],
        "RunInstances (all N in one call)": [
            DISCOVER, "CreateSubnet (one per zone, in parallel)", "CreateSecurityGroup", "ImportKeyPair",
        ],
        "DescribeInstances (wait running, addresses)": ["RunInstances (all N in one call)"],
    },
    "rerun": {
        DISCOVER: [],
    },
    "scale_down": {
        DISCOVER: [],
        "TerminateInstances (the surplus, one call)": [DISCOVER],
        "DescribeInstances (wait terminated)": ["TerminateInstances (the surplus, one call)"],
    },
    "destroy": {
        DISCOVER: [],
        "TerminateInstances (one call)": [DISCOVER],
        "DeleteKeyPair": [DISCOVER],
        "DescribeInstances (wait terminated)": ["TerminateInstances (one call)"],
        "DeleteSecurityGroup": ["DescribeInstances (wait terminated)"],
        "DeleteSubnet (every zone, in parallel)": ["DescribeInstances (wait terminated)"],
        "DetachInternetGateway": ["DescribeInstances (wait terminated)"],
        "DeleteInternetGateway": ["DetachInternetGateway"],
        "DeleteVpc": ["DeleteSecurityGroup", "DeleteSubnet (every zone, in parallel)", "DetachInternetGateway"],
    },
}
# The nuke does the destroy's work, found by tag only (regions given: no DescribeRegions).
GRAPHS["nuke"] = dict(GRAPHS["destroy"])


def depths(graph: Graph) -> dict[str, int]:
    """Round trip at which each call can be made at the earliest (1 = first)."""
    memo: dict[str, int] = {}

    def depth(node: str, seen: tuple[str, ...] = ()) -> int:
        if node in seen:
            raise ValueError(f"cycle through {node}")
        if node not in memo:
            memo[node] = 1 + max((depth(d, seen + (node,)) for d in graph[node]), default=0)
        return memo[node]

    for node in graph:
        depth(node)
    return memo


def critical_depth(graph: Graph) -> int:
    return max(depths(graph).values(), default=0)


def critical_path(graph: Graph) -> list[str]:
    """One longest chain of calls, first to last."""
    d = depths(graph)
    if not d:
        return []
    node = max(d, key=lambda n: d[n])
    path = [node]
    while graph[node]:
        node = max(graph[node], key=lambda n: d[n])
        path.append(node)
    return list(reversed(path))


def bound(scenario: str, latency_ms: float) -> dict:
    graph = GRAPHS[scenario]
    depth = critical_depth(graph)
    return {
        "depth": depth,
        "seconds": round(depth * latency_ms / 1000.0, 3),
        "path": critical_path(graph),
        "levels": _levels(graph),
    }


def _levels(graph: Graph) -> list[list[str]]:
    d = depths(graph)
    out: list[list[str]] = [[] for _ in range(max(d.values(), default=0))]
    for node, level in d.items():
        out[level - 1].append(node)
    return out
