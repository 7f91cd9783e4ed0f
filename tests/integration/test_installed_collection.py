"""The collection as users get it: built, installed with ansible-galaxy, and its playbooks run
by FQCN (ansible-playbook bacalhau.aws_spot.create) from a directory with no checkout, no
ansible.cfg and no inventory, against the emulator."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.test_create_destroy import cluster_resources, cluster_vars, instances, ssh_key  # noqa: F401

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """ansible-galaxy collection build, then install into a path of its own (no Galaxy: --no-deps,
    amazon.aws and community.crypto come from the ansible package, as for users who pip install it)."""
    where = tmp_path_factory.mktemp("installed")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    build = subprocess.run([str(BIN / "ansible-galaxy"), "collection", "build", str(REPO), "--output-path", str(where)],
                           cwd=where, env=env, capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stdout + build.stderr
    tarball = next(where.glob("bacalhau-aws_spot-*.tar.gz"))
    install = subprocess.run([str(BIN / "ansible-galaxy"), "collection", "install", str(tarball), "--no-deps",
                              "-p", str(where / "collections")], cwd=where, env=env, capture_output=True, text=True,
                             timeout=300)
    assert install.returncode == 0, install.stdout + install.stderr
    root = where / "collections" / "ansible_collections" / "bacalhau" / "aws_spot"
    assert (root / "playbooks" / "create.yml").is_file()
    assert not (root / "tests").exists() and not (root / ".venv").exists(), "the tarball carries test or venv files"
    return where


def test_playbooks_run_from_the_installed_collection(playbook, aws, ssh_key, installed, tmp_path):  # noqa: F811
    work = tmp_path / "project"  # the user's own directory: no ansible.cfg, no inventory
    work.mkdir()
    site = next(Path(p) for p in sys.path if p.endswith("site-packages") and (Path(p) / "ansible_collections").is_dir())
    env = {"ANSIBLE_CONFIG": "", "ANSIBLE_COLLECTIONS_PATH": f"{installed / 'collections'}:{site}",
           "ANSIBLE_ROLES_PATH": "", "ANSIBLE_INVENTORY": ""}
    # the instances' public addresses are loopback ones (nothing listens there): status.yml may
    # dial them and reports them unreachable, and nothing else is ever dialled
    aws.address_pool([f"127.0.0.{n}" for n in range(11, 20)])
    cluster = cluster_vars(ssh_key, cluster_name="it-installed", cluster_configure=False,
                           cluster_allowed_addresses=r"^127\.0\.0\.[0-9]+$",
                           cluster_orchestrator={"mode": "external", "endpoints": ["nats://127.0.0.1:4222"]},
                           cluster_tls=False)
    cluster_file = work / "my-cluster.yml"
    cluster_file.write_text(json.dumps(cluster))

    def run(name: str, *args: str) -> subprocess.CompletedProcess:
        result = playbook(f"bacalhau.aws_spot.{name}", *args, cwd=work, env=env)
        assert "ansible-playbook: error" not in result.stderr, result.stderr
        return result

    created = run("create", "-e", f"@{cluster_file}")
    assert created.returncode == 0, created.stdout[-4000:] + created.stderr[-2000:]
    assert len(instances("us-east-1", "it-installed")) == 2 and len(instances("eu-west-1", "it-installed")) == 1
    inventory = playbook.home / ".config/bacalhau.aws_spot/it-installed/it-installed.aws_ec2.yml"
    assert not inventory.exists(), "create.yml with cluster_configure=false should not have configured anything"

    status = run("status", "-e", f"@{cluster_file}")
    assert status.returncode == 0, status.stdout[-4000:] + status.stderr[-2000:]
    assert "NOT REACHABLE" in status.stdout and "us-east-1 compute: 2 live of 2 wanted" in status.stdout, status.stdout[-3000:]
    assert inventory.is_file(), "status.yml writes the cluster's inventory under ~/.config"
    listed = subprocess.run([str(BIN / "ansible-inventory"), "-i", str(inventory.parent), "--list"], cwd=work,
                            env={**playbook_env_of(playbook, aws), **env}, capture_output=True, text=True, timeout=300)
    assert listed.returncode == 0, listed.stderr
    hosts = json.loads(listed.stdout)["_meta"]["hostvars"]
    assert set(hosts) == {i["InstanceId"] for r in ("us-east-1", "eu-west-1") for i in instances(r, "it-installed")}

    destroyed = run("destroy", "-e", "cluster_name=it-installed")
    assert destroyed.returncode == 0, destroyed.stdout[-4000:]
    assert cluster_resources("us-east-1", "it-installed") == 0 and cluster_resources("eu-west-1", "it-installed") == 0
    # destroy.yml keeps the pool history for the next cluster of the name (issue 21), and nothing else
    left = sorted(p.name for p in inventory.parent.iterdir()) if inventory.parent.exists() else []
    assert left in ([], ["pool-history.json"]), f"destroy.yml leaves only the pool history: {left}"
    forgot = run("destroy", "-e", "cluster_name=it-installed", "-e", "destroy_forget_history=true")
    assert forgot.returncode == 0, forgot.stdout[-4000:]
    assert not inventory.parent.exists(), "destroy.yml -e destroy_forget_history=true removes the cluster's directory"

    nuked = run("nuke")
    assert nuked.returncode == 0, nuked.stdout[-4000:]
    assert "Dry run" in nuked.stdout


def playbook_env_of(playbook, aws) -> dict[str, str]:
    from tests.conftest import playbook_env
    return {**playbook_env(aws), "HOME": str(playbook.home)}
