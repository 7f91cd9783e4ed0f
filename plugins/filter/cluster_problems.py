# -*- coding: utf-8 -*-
# Copyright: bacalhau.aws_spot contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
name: cluster_problems
short_description: The problems spot_cluster found in a cluster file, in the file's own words
version_added: 0.2.0
description:
  - "Takes the registered results of M(bacalhau.aws_spot.spot_cluster) run (in check mode) once per role of a
    cluster, each with C(item.role), and returns the problems found, each once, named as the user wrote them in
    the cluster file. Ansible's refusal of an unknown key C(regions.cout) becomes
    C(cluster_regions[1] (eu-west-1): unknown key 'cout' (did you mean 'count'?)); the orchestrator's
    C(regions[0]) becomes C(cluster_orchestrator); C(ssh_cidrs) becomes C(cluster_ssh_cidrs). A problem both roles
    share (a bad CIDR, a bad key) is given once."
  - "Returns an empty list when no result failed. A result counts as failed when it says so, or when it carries
    a C(msg) (registered with C(failed_when: false), Ansible records C(failed=false))."
positional: _input
options:
  _input:
    description: The C(results) of a looped M(bacalhau.aws_spot.spot_cluster) task, each with C(item.role).
    type: list
    elements: dict
    required: true
"""

EXAMPLES = r"""
- name: Fail once, in the cluster file's words
  ansible.builtin.fail:
    msg: "{{ validated.results | bacalhau.aws_spot.cluster_problems | join('; ') }}"
  when: validated.results | bacalhau.aws_spot.cluster_problems | length > 0
"""

RETURN = r"""
_value:
  description: The problems, each once, in the order found.
  type: list
  elements: str
"""

import difflib
import re

# spot_cluster's parameter -> the cluster file's variable (playbooks/tasks/aws.yml passes them so).
_SHARED = {
    "ssh_cidrs": "cluster_ssh_cidrs",
    "api_cidrs": "cluster_api_cidrs",
    "nats_cidrs": "cluster_nats_cidrs",
    "ssh_public_key": "cluster_ssh_public_key_file (its content)",
    "tags": "cluster_tags",
    "kms_key_id": "cluster_kms_key_id",
    "cluster_name": "cluster_name",
}
_INVALID = "Invalid spot_cluster input, nothing was created: "
_REGION_OF_ORCHESTRATOR = re.compile(r"^regions\[0\](?: \([^)]*\))?(\.region|\.instance_types)?")


def _reword(problem: str, role: str) -> str:
    head, sep, rest = problem.partition(":")
    if head in _SHARED:
        return _SHARED[head] + sep + rest
    if role == "orchestrator":
        def orchestrator(match: re.Match) -> str:
            field = {".region": ".region", ".instance_types": ".instance_type"}.get(match.group(1) or "", "")
            return "cluster_orchestrator" + field
        return _REGION_OF_ORCHESTRATOR.sub(orchestrator, problem)
    return re.sub(r"^regions\b", "cluster_regions", problem)


_UNSUPPORTED = re.compile(r"Unsupported parameters for \([^)]*\) module: (?P<names>[^.]+(?:\.[^ .]+)*)\. "
                          r"Supported parameters include: (?P<known>[^.]+(?:\.[a-z_]+)*)\.?")


def _unsupported(msg: str, item: dict, role: str) -> list[str] | None:
    """Ansible's own refusal of an unknown key of a region entry (the argument spec refuses it
    before the module runs), given per entry, with the key it most looks like."""
    match = _UNSUPPORTED.search(msg)
    if not match:
        return None
    names = [n.strip() for n in match.group("names").split(",")]
    known = [k.strip() for k in match.group("known").split(",")]
    out = []
    for name in names:
        parent, key = name.rsplit(".", 1) if "." in name else ("", name)
        if parent != "regions":
            out.append(f"unknown setting {name!r}")
            continue
        close = difflib.get_close_matches(key, known, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else f"; a region entry takes {', '.join(known)}"
        for index, entry in enumerate(item.get("regions") or []):
            if isinstance(entry, dict) and key in entry:
                where = "cluster_orchestrator" if role == "orchestrator" else f"cluster_regions[{index}] ({entry.get('region')})"
                out.append(f"{where}: unknown key {key!r}{hint}")
    return out or None


def _problems_of(result: dict) -> list[str]:
    item = result.get("item") or {}
    role = item.get("role", "compute")
    unsupported = _unsupported(str(result.get("msg") or ""), item, role)
    if unsupported:
        return unsupported
    if result.get("problems"):
        return [_reword(str(p), role) for p in result["problems"]]
    regions = result.get("regions")
    msg = str(result.get("msg") or "")
    if isinstance(regions, dict) and regions and all(isinstance(v, str) for v in regions.values()):
        where = "cluster_orchestrator (region {0})" if role == "orchestrator" else "cluster_regions ({0})"
        return [f"{where.format(r)}: {why}" for r, why in sorted(regions.items())]
    if msg.startswith(_INVALID):
        return [_reword(p, role) for p in msg[len(_INVALID):].split("; ")]
    if role == "orchestrator" and re.search(r"unknown region|not enabled", msg):
        return [f"cluster_orchestrator.region: {msg}"]
    return [msg] if msg else []


def _failed(result: dict) -> bool:
    # With failed_when: false (so that the raw errors are not printed first) Ansible records
    # failed=false; a spot_cluster result only has a msg when the module failed.
    return bool(result.get("failed")) or ("msg" in result and not result.get("skipped"))


def cluster_problems(results: list) -> list[str]:
    out: list[str] = []
    for result in results or []:
        if not isinstance(result, dict) or not _failed(result):
            continue
        for problem in _problems_of(result):
            if problem not in out:
                out.append(problem)
    return out


class FilterModule:
    def filters(self) -> dict:
        return {"cluster_problems": cluster_problems}
