"""playbooks/autoheal_heal.yml (what the rulebook bacalhau.aws_spot.autoheal runs for each event)
against the emulator: heal.yml under the host's lock, with the event's instances to drain, the
cluster's variables handed over without showing them."""
from __future__ import annotations

from tests.integration.test_create_destroy import CREATE, cluster_vars, instances, ssh_key  # noqa: F401

AUTOHEAL = CREATE.parent / "autoheal_heal.yml"


def test_an_interrupted_node_is_replaced_and_no_variable_is_shown(playbook, aws, ssh_key):  # noqa: F811
    cluster = cluster_vars(ssh_key, cluster_name="it-autoheal", cluster_api_key="do-not-show-this-key")
    made = playbook(CREATE, extra_vars=cluster)
    assert made.returncode == 0, made.stdout[-4000:]
    victim = instances("eu-west-1", "it-autoheal")[0]["InstanceId"]
    aws.interrupt("eu-west-1", [victim])

    healed = playbook(AUTOHEAL, extra_vars=dict(cluster, heal_drain_instance_ids=[victim]))
    assert healed.returncode == 0, healed.stdout[-4000:]
    assert "autoheal: healing for 1 request(s); instances to drain: " + victim in healed.stdout
    assert len(instances("eu-west-1", "it-autoheal")) == 1  # replaced
    assert "do-not-show-this-key" not in healed.stdout + healed.stderr
    state = playbook.home / ".config" / "bacalhau.aws_spot" / "it-autoheal" / "autoheal"
    assert not (state / "running.json").exists()  # done: nothing left for the next event

    again = playbook(AUTOHEAL, extra_vars=cluster)  # a tick: the cluster is whole, nothing changes
    assert again.returncode == 0, again.stdout[-4000:]
    assert len(instances("eu-west-1", "it-autoheal")) == 1
