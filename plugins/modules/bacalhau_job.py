#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: bacalhau.aws_spot contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: bacalhau_job
short_description: Run a job on a Bacalhau cluster and wait for its outcome
version_added: 0.2.0
description:
  - Submits a job in Bacalhau's own JSON shape to an orchestrator's HTTP API
    (C(PUT /api/v1/orchestrator/jobs)), waits until the job is C(Completed), C(Failed) or C(Stopped),
    and returns the job's state and every execution with the node it ran on, its exit code, stdout and stderr.
  - Each execution carries the labels of its node, so a failure can be told by region and instance
    (the collection labels compute nodes with C(region), C(zone), C(instance-type) and C(instance-id)).
  - Runs where the task runs. Against the orchestrator's own host (C(http://127.0.0.1:1234), the default)
    the API port needs to be open to nobody.
  - C(playbooks/create.yml) uses it for its smoke job, an C(ops) job on every compute node.
author:
  - Bacalhau aws_spot maintainers (@bacalhau-project)
extends_documentation_fragment:
  - bacalhau.aws_spot.bacalhau_api
options:
  job:
    description:
      - The job, with Bacalhau's field names (C(Name), C(Type), C(Count), C(Constraints), C(Tasks), ...),
        as in a C(bacalhau job run) file. Bacalhau fills in C(ID), C(Namespace) and the rest.
      - C(Type=ops) runs to completion on every node that matches C(Constraints), C(Type=batch) on C(Count) nodes.
    type: dict
    required: true
  wait:
    description:
      - Wait for the job to end. With V(false), return once Bacalhau accepted it.
    type: bool
    default: true
  timeout:
    description:
      - Seconds to wait for the job to end. A job still running then is stopped when O(stop_on_timeout) is set,
        and the module fails.
    type: int
    default: 300
  poll_interval:
    description:
      - Seconds between two reads of the job's state while waiting.
    type: float
    default: 1.0
  stop_on_timeout:
    description:
      - Stop (C(DELETE /api/v1/orchestrator/jobs/<id>)) a job that did not end within O(timeout).
    type: bool
    default: true
  expect_nodes:
    description:
      - Nodes that must each run the job successfully, by the value of their label O(expect_label)
        (for example every compute node's instance id). The task fails naming each one that did not, with its
        region and the reason (Bacalhau's or Docker's message, or what the orchestrator says of the node,
        that it is disconnected, not approved or without that engine).
    type: list
    elements: str
  expect_label:
    description:
      - The node label that O(expect_nodes) lists values of.
    type: str
    default: instance-id
  fail_on_job_failure:
    description:
      - Fail the task when the job ends C(Failed) or C(Stopped), or an execution exits non-zero, naming each
        failed node with its labels and Bacalhau's or Docker's message. With V(false), the outcome is only returned.
    type: bool
    default: true
notes:
  - Submitting a job is a change (C(changed=true)); a playbook that only checks the cluster sets C(changed_when).
  - In check mode nothing is submitted and C(changed) is V(true).
  - Bacalhau takes a job whose C(Name) already exists in its namespace as a new version of that job, and refuses
    an unchanged one (C(no changes detected for new job spec)). Leave C(Name) out, or make it unique, for a job
    submitted again and again.
attributes:
  check_mode:
    support: full
    description: Validates the job and submits nothing; reports C(changed=true).
  diff_mode:
    support: none
    description: A job has no before and after to compare.
  idempotent:
    support: none
    description: Every run submits a job (a new version of it, when its C(Name) already exists).
"""

EXAMPLES = r"""
- name: Hello from every compute node (an ops job), on the orchestrator's host
  bacalhau.aws_spot.bacalhau_job:
    job:
      Name: hello
      Type: ops
      Tasks:
        - Name: main
          Engine:
            Type: docker
            Params:
              Image: ubuntu:24.04
              Entrypoint: [/bin/sh, -c]
              Parameters: ["echo hello from $(hostname)"]
  register: hello

- name: One batch job on a compute node in eu-west-1, its output shown
  bacalhau.aws_spot.bacalhau_job:
    job:
      Name: uname
      Type: batch
      Count: 1
      Constraints:
        - {Key: region, Operator: "=", Values: [eu-west-1]}
      Tasks:
        - Name: main
          Engine: {Type: docker, Params: {Image: "ubuntu:24.04", Entrypoint: [uname, -a]}}
  register: uname

- name: Print it
  ansible.builtin.debug:
    msg: "{{ uname.executions | map(attribute='stdout') | list }}"
"""

RETURN = r"""
job_id:
  description: The id Bacalhau gave the job; null in check mode.
  returned: always
  type: str
  sample: j-6a3b4f5e-8c2d-4c3e-9a51-3d0c6a1f2b7e
evaluation_id:
  description: The evaluation Bacalhau made for the submission.
  returned: when submitted
  type: str
job_warnings:
  description: Bacalhau's warnings about the job (C(Warnings) of its answer to the submission).
  returned: when submitted
  type: list
  elements: str
state:
  description: The job's C(State.StateType) when the module returned (C(Completed), C(Failed), C(Stopped), ...).
  returned: when submitted
  type: str
  sample: Completed
state_message:
  description: The job's C(State.Message).
  returned: when submitted
  type: str
job:
  description: The job as Bacalhau returns it (C(GET /api/v1/orchestrator/jobs/<id>)), field names as Bacalhau's.
  returned: when submitted
  type: dict
executions:
  description: The job's executions, one per node it was sent to.
  returned: when waited for
  type: list
  elements: dict
  contains:
    id:
      description: The execution's id.
      type: str
    node_id:
      description: The node it ran on.
      type: str
    node_labels:
      description: That node's labels, as the orchestrator lists them (empty if the node is gone).
      type: dict
    state:
      description: The execution's C(ComputeState) as text (C(Completed), C(Failed), C(Cancelled), ...).
      type: str
    message:
      description: C(ComputeState.Message), Bacalhau's reason for the state.
      type: str
    desired_state:
      description: C(DesiredState) as text.
      type: str
    exit_code:
      description: The task's exit code, when it ran.
      type: int
    stdout:
      description: What the task wrote to standard output.
      type: str
    stderr:
      description: What the task wrote to standard error.
      type: str
    error:
      description: C(RunOutput.ErrorMsg), the executor's error (Docker's message when Docker failed).
      type: str
expected:
  description: With O(expect_nodes), one entry per expected node, in that order.
  returned: when waited for, with O(expect_nodes)
  type: list
  elements: dict
  contains:
    label:
      description: O(expect_label).
      type: str
    value:
      description: The node's value of that label.
      type: str
    node_id:
      description: The node's Bacalhau id, null if the orchestrator does not list it.
      type: str
    labels:
      description: All of the node's labels.
      type: dict
    ok:
      description: Whether the node ran the job to completion with exit code 0.
      type: bool
    reason:
      description: Why not, when RV(expected[].ok) is false.
      type: str
    stdout:
      description: The successful execution's stdout.
      type: str
      returned: when ok
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.bacalhau.aws_spot.plugins.module_utils._bacalhau.api import API_ARGUMENT_SPEC
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._bacalhau.jobs import run


def main() -> None:
    argument_spec = dict(
        API_ARGUMENT_SPEC,
        job=dict(type="dict", required=True),
        wait=dict(type="bool", default=True),
        timeout=dict(type="int", default=300),
        poll_interval=dict(type="float", default=1.0),
        stop_on_timeout=dict(type="bool", default=True),
        expect_nodes=dict(type="list", elements="str"),
        expect_label=dict(type="str", default="instance-id"),
        fail_on_job_failure=dict(type="bool", default=True),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    result, failure = run(module.params, module.check_mode)
    if failure:
        module.fail_json(msg=failure, **result)
    for warning in result.get("job_warnings") or []:
        module.warn(f"Bacalhau: {warning}")
    module.exit_json(**result)


if __name__ == "__main__":
    main()
