#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: bacalhau.aws_spot contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: bacalhau_nodes
short_description: List, approve, forget and wait for a Bacalhau cluster's nodes, and say why one cannot join
version_added: 0.3.0
description:
  - Reads the nodes a Bacalhau orchestrator knows (C(GET /api/v1/orchestrator/nodes)) and sorts them by
    the cluster's instances. A node is the cluster's when its C(instance-id) label, which the collection's
    roles set, is one of O(instance_ids).
  - Approves the cluster's own C(PENDING) nodes (O(approve)) and no other, forgets nodes
    (O(forget), O(forget_gone)) with C(PUT /api/v1/orchestrator/nodes/<id>) and the action C(delete),
    and waits until the nodes of O(wait_for) are C(CONNECTED) and C(APPROVED).
  - For each node of O(wait_for) that is still missing, RV(causes) says why, in one table of the lines
    Bacalhau logs when a compute node cannot join - a wrong token, a TLS or CA problem, an orchestrator
    without TLS, an orchestrator that refuses the connection or that cannot be reached at all (a dial
    that times out, most often a security group that does not admit the node on 4222) - with what to
    check. The journal is given in O(logs), or read by the module itself on the host it runs on
    (O(journal_unit), for a task that runs on the compute node).
  - Runs where the task runs. Against the orchestrator's own host (C(http://127.0.0.1:1234), the default)
    the API port needs to be open to nobody.
author:
  - Bacalhau aws_spot maintainers (@bacalhau-project)
extends_documentation_fragment:
  - bacalhau.aws_spot.bacalhau_api
options:
  instance_ids:
    description:
      - The cluster's live instance ids. RV(connected), RV(pending) and RV(rejected) then hold the cluster's
        own nodes only, and RV(gone) the disconnected nodes labelled with an instance that is not among them.
      - Required by O(approve) and O(forget_gone).
    type: list
    elements: str
  approve:
    description:
      - Approve the C(PENDING) compute nodes whose C(instance-id) label is in O(instance_ids) (with
        C(Orchestrator.NodeManager.ManualApproval) the orchestrator admits no node before that). Never any other.
    type: bool
    default: false
  forget:
    description:
      - Nodes to delete from the orchestrator's list, by instance id (their C(instance-id) label) or Bacalhau node id,
        for example the instances just released. A node the orchestrator no longer lists is no change.
    type: list
    elements: str
  forget_gone:
    description:
      - Also delete every C(DISCONNECTED) compute node labelled with an instance id that is not in O(instance_ids)
        (the instance was terminated or interrupted). Nodes without the label are never deleted, nor, with
        O(cluster_name), those whose C(cluster) label names another cluster.
    type: bool
    default: false
  wait_for:
    description:
      - Nodes, by instance id or Bacalhau node id, to wait for until each is C(CONNECTED) and C(APPROVED)
        (approving on the way with O(approve)). The wait ends early when every missing one is C(REJECTED).
      - The module fails, naming each missing node with its cause, unless O(fail_on_missing=false).
    type: list
    elements: str
  wait_for_self:
    description:
      - Also wait for the node that serves O(api_url) (its id read from C(/api/v1/agent/node), which needs
        C(read:agent)), for an orchestrator checking that it lists itself.
    type: bool
    default: false
  timeout:
    description:
      - Seconds to wait for O(wait_for). V(0) reads once.
    type: int
    default: 60
  poll_interval:
    description:
      - Seconds between two reads while waiting (and between tries while the API does not answer).
    type: float
    default: 2.0
  fail_on_missing:
    description:
      - Fail when a node of O(wait_for) is not C(CONNECTED) and C(APPROVED) at the end. With V(false) the
        missing ones and their causes are only returned.
    type: bool
    default: true
  logs:
    description:
      - The journal text (C(journalctl -u bacalhau)) of nodes that may be missing, by the id used in O(wait_for).
        RV(causes) is read from the last connection error in it.
    type: dict
  journal_unit:
    description:
      - Read this systemd unit's journal (its last 80 lines of the last O(timeout) + 60 seconds) on the host the
        module runs on, for every missing node without O(logs). Meant for a task that runs on a compute node
        and waits for that node.
    type: str
  nats_port:
    description:
      - The orchestrator's NATS port, named in the causes.
    type: int
    default: 4222
  cluster_name:
    description:
      - The cluster's name, written in the message the orchestrator keeps with an approval or deletion.
      - With O(forget_gone), a node whose C(cluster) label (C(bacalhau_compute_cluster)) names another cluster is
        never counted as gone - on an orchestrator several clusters share, their instances are not in O(instance_ids).
    type: str
  busy:
    description:
      - Also say which compute nodes run a job now (RV(busy)) - every job not in a terminal state and its executions
        (one call for the jobs, one per such job), an execution holding its node from its accepted bid until it has
        published. Used by C(heal.yml) for C(cluster_rebalance), which does not move busy nodes. Needs C(read:job).
    type: bool
    default: false
    version_added: 0.2.0
  disconnected_as_joined:
    description:
      - Count the cluster's C(DISCONNECTED) compute nodes in RV(joined) too. A heal the autoheal rulebook runs sets it -
        a node EC2 warned after that heal read the journals has had its Bacalhau stopped by its spot watcher, and
        configuring it again would fail the heal, late for the warning; the node's own event comes next. A heal by
        hand or from cron leaves it off, and so restarts them.
    type: bool
    default: false
    version_added: 0.2.0
  refusal_hint:
    description:
      - What to do when the API refuses the key (a 401), in the words of the caller (which variable gives it).
    type: str
    default: give the cluster's API key (cluster_api_key_file)
notes:
  - Approving or forgetting a node is a change; reading, waiting and diagnosing are not.
  - The module talks to the orchestrator's API only. With C(API.Auth.Users) the key needs C(read:node), and
    C(write:node) to approve or forget.
attributes:
  check_mode:
    support: full
    description: Approves and deletes nothing and does not wait; RV(approved) and RV(forgotten) say what would be done.
  diff_mode:
    support: none
    description: The lists of approved and forgotten nodes say what changed.
  idempotent:
    support: full
    description: A node approved or forgotten once is not again.
"""

EXAMPLES = r"""
- name: Wait for the cluster's compute nodes, approving the cluster's own pending ones
  bacalhau.aws_spot.bacalhau_nodes:
    instance_ids: "{{ groups['bacalhau_demo'] }}"
    approve: true
    wait_for: "{{ groups['bacalhau_demo_role_compute'] }}"
    timeout: 120
  delegate_to: "{{ groups['bacalhau_demo_role_orchestrator'] | first }}"

- name: Forget the nodes whose instances were just released
  bacalhau.aws_spot.bacalhau_nodes:
    forget: [i-0abc, i-0def]
  delegate_to: "{{ groups['bacalhau_demo_role_orchestrator'] | first }}"

- name: Forget every disconnected node whose instance is gone
  bacalhau.aws_spot.bacalhau_nodes:
    instance_ids: "{{ live_instance_ids }}"
    forget_gone: true

- name: On a compute node, wait until the orchestrator lists it, and say why not from its own journal
  bacalhau.aws_spot.bacalhau_nodes:
    api_url: https://orchestrator.example.org:1234
    api_key: "{{ cluster_api_key }}"
    ca_path: /etc/bacalhau/tls/ca.crt
    wait_for: ["{{ my_bacalhau_node_id }}"]
    journal_unit: bacalhau
"""

RETURN = r"""
nodes:
  description: Every node the orchestrator lists (compute nodes and the orchestrator itself), as read last.
  returned: always
  type: list
  elements: dict
  contains:
    node_id:
      description: Bacalhau's node id.
      type: str
    node_type:
      description: C(Compute) or C(Requester) (an orchestrator).
      type: str
    instance_id:
      description: The node's C(instance-id) label; null without one.
      type: str
    connection:
      description: C(ConnectionState.Status) (C(CONNECTED), C(DISCONNECTED)).
      type: str
    membership:
      description: C(Membership) (C(PENDING), C(APPROVED), C(REJECTED)).
      type: str
    labels:
      description: The node's labels.
      type: dict
    last_heartbeat:
      description: C(ConnectionState.LastHeartbeat), RFC 3339.
      type: str
connected:
  description: Compute nodes C(CONNECTED) and C(APPROVED) (of the cluster, with O(instance_ids)), by instance id
    (a node without the label by its node id). In check mode, as they would be after the approvals and deletions.
  returned: always
  type: list
  elements: str
  sample: [i-0abc]
pending:
  description: Compute nodes whose membership is C(PENDING) (of the cluster, with O(instance_ids)).
  returned: always
  type: list
  elements: str
rejected:
  description: Compute nodes whose membership is C(REJECTED) (of the cluster, with O(instance_ids)).
  returned: always
  type: list
  elements: str
disconnected:
  description: Every C(DISCONNECTED) compute node, the cluster's or not.
  returned: always
  type: list
  elements: str
joined:
  description:
    - The compute nodes a heal counts as joined and configures no more (C(spot_cluster joined_instance_ids)) -
      those of RV(connected), and with O(disconnected_as_joined) the C(DISCONNECTED) ones as well (of the cluster,
      with O(instance_ids)).
  returned: always
  type: list
  elements: str
  sample: [i-0abc, i-0def]
busy:
  description: With O(busy), the compute nodes that run an execution now, by instance id (the node id when it has
    no instance label).
  returned: with O(busy)
  type: list
  elements: str
gone:
  description: C(DISCONNECTED) compute nodes labelled with an instance id that is not in O(instance_ids), as read
    before this run's deletions (so, with O(forget_gone), the ones it forgot or would forget).
  returned: always
  type: list
  elements: str
approved:
  description: Nodes approved by this run (would be, in check mode).
  returned: always
  type: list
  elements: str
forgotten:
  description: Nodes deleted by this run (would be, in check mode).
  returned: always
  type: list
  elements: str
missing:
  description: Nodes of O(wait_for) (and, with O(wait_for_self), the node serving the API, by its node id) not
    C(CONNECTED) and C(APPROVED) at the end.
  returned: always
  type: list
  elements: str
causes:
  description: For each node of RV(missing), why.
  returned: always
  type: dict
  sample:
    i-0abc:
      key: unreachable_timeout
      title: ORCHESTRATOR UNREACHABLE
      message: >-
        ORCHESTRATOR UNREACHABLE: failed to connect to nats://203.0.113.7:4222: dial tcp 203.0.113.7:4222: i/o timeout
        - the dial timed out: ... Check the orchestrator's security group admits this node's public address on 4222 ...
      line: 'ERR Connection attempt failed error="failed to setup transport: ..."'
  contains:
    key:
      description: >-
        The cause: C(wrong_token), C(no_tls), C(wrong_ca), C(bad_certificate), C(ca_file), C(tls_first), C(tls),
        C(unreachable_timeout), C(unreachable_refused), C(unreachable_network), C(unknown), C(no_error),
        C(pending), C(rejected), C(disconnected), C(not_listed).
      type: str
    title:
      description: Its name in capitals, as the messages start.
      type: str
    message:
      description: The whole sentence - the cause, the words of the log that show it, what it means, what to check.
      type: str
    meaning:
      description: What it means.
      type: str
    check:
      description: What to check.
      type: str
    line:
      description: The log line it was read from.
      type: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.bacalhau.aws_spot.plugins.module_utils._bacalhau.api import API_ARGUMENT_SPEC
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._bacalhau.nodes import Nodes


def main() -> None:
    argument_spec = dict(
        API_ARGUMENT_SPEC,
        instance_ids=dict(type="list", elements="str"),
        approve=dict(type="bool", default=False),
        forget=dict(type="list", elements="str"),
        forget_gone=dict(type="bool", default=False),
        wait_for=dict(type="list", elements="str"),
        wait_for_self=dict(type="bool", default=False),
        timeout=dict(type="int", default=60),
        poll_interval=dict(type="float", default=2.0),
        fail_on_missing=dict(type="bool", default=True),
        logs=dict(type="dict"),
        journal_unit=dict(type="str"),
        nats_port=dict(type="int", default=4222),
        cluster_name=dict(type="str"),
        busy=dict(type="bool", default=False),
        disconnected_as_joined=dict(type="bool", default=False),
        refusal_hint=dict(type="str", default="give the cluster's API key (cluster_api_key_file)"),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)

    def read_journal() -> str:
        since = module.params["timeout"] + 60
        _rc, out, _err = module.run_command(
            ["journalctl", "-u", module.params["journal_unit"], "-n", "80", "--no-pager", "-o", "cat",
             f"--since=-{since}s"])
        return out

    result, failure = Nodes(module.params, module.check_mode, read_journal).run()
    if failure:
        module.fail_json(msg=failure, **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
