"""End to end on real test hosts: an orchestrator and two compute nodes connect; a second converge
changes nothing; a wrong token, an unreachable orchestrator and a bad signature each fail with a
message naming the host and the cause. Order matters: the failure cases reuse testhost3."""

from __future__ import annotations

import json
import re


def recap(output: str) -> dict[str, dict[str, int]]:
    out = {}
    for m in re.finditer(r"^(\S+)\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", output, re.M):
        out[m.group(1)] = {"ok": int(m.group(2)), "changed": int(m.group(3)),
                           "unreachable": int(m.group(4)), "failed": int(m.group(5))}
    return out


def api_key(env) -> str:
    """The API key the orchestrator role generated (bacalhau_orchestrator_api_key_file's default,
    beside the token file): the API refuses /api/v1/orchestrator/* without it."""
    return (env.token_file.parent / "api-key").read_text().strip()


def nodes(env) -> list[dict]:
    """`bacalhau node list` on the orchestrator host, with the key as the CLI takes it."""
    return json.loads(env.ssh("testhost1", f"BACALHAU_API_KEY={api_key(env)} bacalhau node list --output json"))


def test_cluster_connects_and_second_converge_changes_nothing(env):
    first = env.playbook("cluster.yml")
    assert first.returncode == 0, first.output[-4000:]
    assert recap(first.output)["testhost2"]["changed"] > 0

    computes = [n for n in nodes(env) if n["Info"]["NodeType"] == "Compute"]
    assert len(computes) == 2
    assert {n["ConnectionState"]["Status"] for n in computes} == {"CONNECTED"}
    assert {n["Membership"] for n in computes} == {"APPROVED"}
    assert sorted(n["Info"]["Labels"]["instance-id"] for n in computes) == ["i-testhost2", "i-testhost3"]

    second = env.playbook("cluster.yml")
    assert second.returncode == 0, second.output[-4000:]
    assert {h: r["changed"] for h, r in recap(second.output).items()} == {
        "testhost1": 0, "testhost2": 0, "testhost3": 0}

    token = env.token_file.read_text().strip()
    assert len(token) >= 32
    assert (env.token_file.stat().st_mode & 0o777) == 0o600
    assert token not in first.output and token not in second.output
    key = api_key(env)
    assert len(key) >= 20 and key not in first.output and key not in second.output


def test_wrong_token_fails_naming_host_and_cause(env):
    res = env.playbook("cluster.yml", "-e", "orchestrator_hosts=none", "-e", "compute_hosts=testhost3",
                       "-e", "bacalhau_compute_auth_token=ThisIsNotTheClusterToken42",
                       "-e", "bacalhau_compute_connect_timeout=12")
    assert res.returncode != 0
    assert re.search(r"testhost3: compute node \S+ did not\s+appear\s+CONNECTED\s+and\s+APPROVED", res.output), \
        res.output[-3000:]
    assert "WRONG AUTH TOKEN" in res.output
    assert "Authorization Violation" in res.output
    assert "ThisIsNotTheClusterToken42" not in res.output


def test_unreachable_orchestrator_fails_naming_host_and_cause(env):
    # testhost2 is up but runs no orchestrator: its NATS port refuses connections.
    res = env.playbook("cluster.yml", "-e", "orchestrator_hosts=none", "-e", "compute_hosts=testhost3",
                       "-e", f'{{"compute_orchestrators": ["{env.ip("testhost2")}"]}}',
                       "-e", "bacalhau_compute_connect_timeout=10")
    assert res.returncode != 0
    assert "testhost3: compute node" in res.output, res.output[-3000:]
    assert "ORCHESTRATOR UNREACHABLE" in res.output
    # Bacalhau v1.9.3 does not log the dial error: nats.go answers ErrNoServers, which
    # pkg/nats/errors.go words as "no orchestrator available for connection at <servers>".
    ip = re.escape(env.ip("testhost2"))
    assert re.search(rf"ORCHESTRATOR UNREACHABLE: no\s+orchestrator\s+available\s+for\s+connection\s+at\s+"
                     rf"nats://{ip}:4222\s", res.output), res.output[-3000:]


def test_bad_signature_fails_naming_host_and_archive_and_installs_nothing(env):
    before = env.ssh("testhost3", "sha256sum /usr/local/bin/bacalhau")
    bad_cache = env.token_file.parent / "cache-bad"
    res = env.playbook("cluster.yml", "-e", "orchestrator_hosts=none", "-e", "compute_hosts=testhost3",
                       "-e", f"bacalhau_node_release_url={env.vars.read_text().split('release_url: ')[1].split()[0][:-len('good')]}bad",
                       "-e", f"bacalhau_node_cache_dir={bad_cache}",
                       # the controller's cache is what this test looks at (the nodes' own fetch,
                       # the default, has its test in test_release.py)
                       "-e", "bacalhau_node_release_source=controller")
    assert res.returncode != 0
    assert re.search(r"testhost3: BAD SIGNATURE: the Bacalhau release archive\s+bacalhau_v1\.9\.3_linux_amd64\.tar\.gz",
                     res.output), res.output[-3000:]
    assert "Verification failure" in res.output
    assert env.ssh("testhost3", "sha256sum /usr/local/bin/bacalhau") == before
    assert not list(bad_cache.glob("*/*.tar.gz")), "the unverified archive must not stay in the cache"
