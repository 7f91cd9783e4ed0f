"""The release on real test hosts: each node fetches and verifies it itself, from whichever layout
answers; the controller sends no release bytes; nothing is fetched again; a bad signature fails
naming the node with nothing installed; the controller mode copies the verified binary; a too old
version is refused.

Runs after test_cluster.py (the cluster is up, every host has v1.9.3); the tests remove the binary
where they need a fetch and leave every host with the good v1.9.3. The stand-in release server
(tests/roles/env.sh) serves good/ (publish layout only), flat/ (flat only) and bad/ (tampered).
Bytes are counted by iptables (tests/roles/traffic.py), so these tests need root, as the hosts do.
"""

from __future__ import annotations

import json
import os
import re
import shutil

import pytest

from tests.roles.test_cluster import recap
from tests.roles.traffic import Traffic

PORT = int(os.environ.get("BACALHAU_STANDIN_PORT", "18799"))
ARCHIVE = "bacalhau_v1.9.3_linux_amd64.tar.gz"
STAGE = "/var/cache/bacalhau.aws_spot-release"


def release_url(env, tree: str) -> str:
    """vars.yml's URL (…/good) with another tree of the release server."""
    url = re.search(r"^bacalhau_node_release_url: (\S+)$", env.vars.read_text(), re.M).group(1)
    return url.rsplit("/", 1)[0] + "/" + tree


def http_log(env) -> list[str]:
    return (env.token_file.parent / "http.log").read_text().splitlines()


def archive_size(env) -> int:
    return (env.token_file.parent / "release" / "flat" / ARCHIVE).stat().st_size


def installed_version(env, host: str) -> str:
    return json.loads(env.ssh(host, "/usr/local/bin/bacalhau version --client --output json"))["clientVersion"]["GitVersion"]


def has_v193(env, host: str) -> bool:
    out = env.ssh(host, "/usr/local/bin/bacalhau version --client --output json 2>/dev/null || true")
    return '"GitVersion": "v1.9.3"' in out


def counting(env, *hosts: str) -> Traffic:
    return Traffic({h: env.ip(h) for h in hosts}, PORT, f"test-release-{os.getpid()}")


def test_nodes_fetch_and_verify_the_release_themselves(env):
    for host in ("testhost2", "testhost3"):
        env.ssh(host, "sudo rm -f /usr/local/bin/bacalhau")
    orchestrator_had_it = has_v193(env, "testhost1")  # after test_cluster.py it has
    seen = len(http_log(env))
    with counting(env, "testhost1", "testhost2", "testhost3") as traffic:
        res = env.playbook("cluster.yml")
        sent = traffic.read()
    assert res.returncode == 0, res.output[-4000:]
    new = http_log(env)[seen:]
    size = archive_size(env)
    assert size > 40_000_000, "the stand-in release should have a real release's size"
    for host in ("testhost2", "testhost3"):
        ip = re.escape(env.ip(host))
        # the publish workflow's layout answered (good/ has no flat files)
        assert any(re.match(rf"{ip} .*\"GET /good/stable/v1\.9\.3/{re.escape(ARCHIVE)} HTTP/1\.1\" 200", line)
                   for line in new), new
        assert installed_version(env, host) == "v1.9.3"
        assert env.ssh(host, f"sudo test -e {STAGE} && echo left || echo gone").strip() == "gone"
        # the node downloaded the archive; the controller sent it nothing of that size
        assert sent[host]["release"] >= size, sent
        assert sent[host]["ssh"] < size / 4, sent  # Ansible itself: some MB per node
    # a host that already had v1.9.3 asked for nothing
    if orchestrator_had_it:
        assert not [line for line in new if line.startswith(env.ip("testhost1") + " ")], new


def test_installed_version_is_not_fetched_again(env):
    seen = len(http_log(env))
    res = env.playbook("cluster.yml")
    assert res.returncode == 0, res.output[-4000:]
    assert {h: r["changed"] for h, r in recap(res.output).items()} == {"testhost1": 0, "testhost2": 0, "testhost3": 0}
    assert http_log(env)[seen:] == []


def test_check_mode_downloads_nothing_onto_the_node(env):
    env.ssh("testhost3", "sudo rm -f /usr/local/bin/bacalhau")
    seen = len(http_log(env))
    res = env.playbook("cluster.yml", "-e", "orchestrator_hosts=none", "-e", "compute_hosts=testhost3", "--check")
    assert "testhost3: would fetch and verify bacalhau_v1.9.3_linux_amd64.tar.gz" in re.sub(r"\s+", " ", res.output), \
        res.output[-3000:]
    assert not [line for line in http_log(env)[seen:] if line.startswith(env.ip("testhost3") + " ")]
    assert env.ssh("testhost3", "test -e /usr/local/bin/bacalhau && echo there || echo absent").strip() == "absent"
    assert env.ssh("testhost3", f"sudo test -e {STAGE} && echo left || echo gone").strip() == "gone"
    # and for real (the next tests want the binary back)
    res = env.playbook("cluster.yml", "-e", "orchestrator_hosts=none", "-e", "compute_hosts=testhost3")
    assert res.returncode == 0, res.output[-4000:]
    assert installed_version(env, "testhost3") == "v1.9.3"


def test_flat_layout_alone_is_found(env):
    env.ssh("testhost3", "sudo rm -f /usr/local/bin/bacalhau")
    seen = len(http_log(env))
    res = env.playbook("cluster.yml", "-e", "orchestrator_hosts=none", "-e", "compute_hosts=testhost3",
                       "-e", f"bacalhau_node_release_url={release_url(env, 'flat')}")
    assert res.returncode == 0, res.output[-4000:]
    new = [line for line in http_log(env)[seen:] if line.startswith(env.ip("testhost3") + " ")]
    # the publish layout is tried first and is not there; then the flat one answers
    assert any(f'"HEAD /flat/stable/v1.9.3/{ARCHIVE}.signature.sha256 HTTP/1.1" 404' in line for line in new), new
    assert any(f'"GET /flat/{ARCHIVE} HTTP/1.1" 200' in line for line in new), new
    assert installed_version(env, "testhost3") == "v1.9.3"


def test_bad_signature_on_the_node_names_it_and_installs_nothing(env):
    before = env.ssh("testhost3", "sha256sum /usr/local/bin/bacalhau")
    res = env.playbook("cluster.yml", "-e", "orchestrator_hosts=none", "-e", "compute_hosts=testhost3",
                       "-e", f"bacalhau_node_release_url={release_url(env, 'bad')}",
                       "-e", "bacalhau_node_version=v1.9.2")
    assert res.returncode != 0
    assert re.search(r"testhost3: BAD SIGNATURE: the Bacalhau release archive\s+bacalhau_v1\.9\.2_linux_amd64\.tar\.gz",
                     res.output), res.output[-3000:]
    assert "Verification failure" in res.output
    assert "nothing was installed" in res.output
    assert env.ssh("testhost3", "sha256sum /usr/local/bin/bacalhau") == before
    assert installed_version(env, "testhost3") == "v1.9.3"
    assert env.ssh("testhost3", f"sudo test -e {STAGE} && echo left || echo gone").strip() == "gone"


def test_controller_mode_copies_the_binary_it_verified(env):
    env.ssh("testhost3", "sudo rm -f /usr/local/bin/bacalhau")
    cache = env.token_file.parent / "cache-controller-mode"
    shutil.rmtree(cache, ignore_errors=True)
    seen = len(http_log(env))
    with counting(env, "testhost3") as traffic:
        res = env.playbook("cluster.yml", "-e", "orchestrator_hosts=none", "-e", "compute_hosts=testhost3",
                           "-e", "bacalhau_node_release_source=controller", "-e", f"bacalhau_node_cache_dir={cache}")
        sent = traffic.read()
    assert res.returncode == 0, res.output[-4000:]
    new = http_log(env)[seen:]
    assert not [line for line in new if line.startswith(env.ip("testhost3") + " ")], new
    assert any(f"GET /good/stable/v1.9.3/{ARCHIVE} HTTP/1.1\" 200" in line for line in new), new
    assert list(cache.glob(f"*/{ARCHIVE}")), "the controller keeps the verified archive in its cache"
    # the binary went over SSH, from the controller
    assert sent["testhost3"]["ssh"] > archive_size(env) * 0.9, sent
    assert sent["testhost3"]["release"] == 0, sent
    assert installed_version(env, "testhost3") == "v1.9.3"


def test_controller_mode_reads_a_file_url(env):
    """A release tree on the controller's disk (file://), flat: found by stat, not by HTTP."""
    env.ssh("testhost3", "sudo rm -f /usr/local/bin/bacalhau")
    cache = env.token_file.parent / "cache-file-url"
    shutil.rmtree(cache, ignore_errors=True)
    seen = len(http_log(env))
    res = env.playbook("cluster.yml", "-e", "orchestrator_hosts=none", "-e", "compute_hosts=testhost3",
                       "-e", "bacalhau_node_release_source=controller", "-e", f"bacalhau_node_cache_dir={cache}",
                       "-e", f"bacalhau_node_release_url=file://{env.token_file.parent / 'release' / 'flat'}")
    assert res.returncode == 0, res.output[-4000:]
    assert http_log(env)[seen:] == []
    assert installed_version(env, "testhost3") == "v1.9.3"


@pytest.mark.parametrize("version", ["v1.6.0", "v1.5.2"])
def test_too_old_version_is_refused_with_the_reason(env, version):
    res = env.playbook("cluster.yml", "-e", "orchestrator_hosts=none", "-e", "compute_hosts=testhost3",
                       "-e", f"bacalhau_node_version={version}")
    assert res.returncode != 0
    text = re.sub(r"\s+", " ", res.output)
    assert f"testhost3: bacalhau_node_version {version} is older than v1.7.0, the oldest release these roles support" in text, \
        res.output[-3000:]
    assert "API.Auth.Users" in text
