"""End to end on real test hosts: the cluster with TLS on the orchestrator link and on the API,
and an API key, as Bacalhau v1.9.3 enforces them (the stand-in does: tests/standin/README.md).
A compute node given another CA cannot join and the role names the cause; an API call without
the key, or with a wrong one, is refused with Bacalhau's 401. Collected last: it leaves testhost3
joined to nothing."""

from __future__ import annotations

import json
import re
import socket
import ssl
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from tests.roles.conftest import TEST_DIR


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_ca(d: Path, name: str) -> None:
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout",
            f"{name}.key", "-out", f"{name}.crt", "-days", "2", "-subj", f"/CN={name}",
            "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)


@pytest.fixture(scope="module")
def pki(env) -> Path:
    """A cluster CA with the orchestrator's certificate (its address and 127.0.0.1, as
    playbooks/tasks/pki.yml issues it), and another CA that signed nothing of this cluster."""
    d = TEST_DIR / "tls-e2e"
    d.mkdir(mode=0o700, exist_ok=True)
    make_ca(d, "ca")
    make_ca(d, "other")
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", "server.key",
            "-out", "server.csr", "-subj", f"/CN={env.ip('testhost1')}", cwd=d)
    (d / "server.ext").write_text(f"subjectAltName=IP:{env.ip('testhost1')},IP:127.0.0.1,DNS:localhost\n"
                                  "extendedKeyUsage=serverAuth\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", "server.crt", "-days", "1", "-extfile", "server.ext", cwd=d)
    return d


def tls_vars(pki: Path, **extra) -> str:
    return json.dumps({"bacalhau_orchestrator_tls_cert_file": str(pki / "server.crt"),
                       "bacalhau_orchestrator_tls_key_file": str(pki / "server.key"),
                       "bacalhau_orchestrator_tls_ca_file": str(pki / "ca.crt"),
                       "bacalhau_orchestrator_api_tls": True, **extra})


def api_key(env) -> str:
    return (env.token_file.parent / "api-key").read_text().strip()


def get(env, pki: Path, path: str, headers: dict | None = None) -> tuple[int, dict]:
    ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    req = urllib.request.Request(f"https://{env.ip('testhost1')}:1234{path}", headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=15, context=ctx) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


@pytest.fixture(scope="module")
def secured(env, pki):
    res = env.playbook("cluster.yml", "-e", tls_vars(pki))
    assert res.returncode == 0, res.output[-4000:]
    return res


def test_compute_nodes_join_over_tls_and_the_cli_uses_key_and_ca(env, pki, secured):
    # NATS on the orchestrator asks for TLS (nats-server's INFO, then the handshake)
    with socket.create_connection((env.ip("testhost1"), 4222), timeout=10) as s:
        assert b'"tls_required":true' in s.makefile("rb").readline()
    out = env.ssh("testhost1", f"sudo BACALHAU_API_KEY={api_key(env)} BACALHAU_API_HOST=127.0.0.1 "
                               "BACALHAU_API_TLS_USETLS=true BACALHAU_API_TLS_CAFILE=/etc/bacalhau/tls/ca.crt "
                               "bacalhau node list --output json")
    computes = [n for n in json.loads(out) if n["Info"]["NodeType"] == "Compute"
                and n["ConnectionState"]["Status"] == "CONNECTED"]
    assert sorted(n["Info"]["Labels"]["instance-id"] for n in computes) == ["i-testhost2", "i-testhost3"]
    assert api_key(env) not in secured.output


@pytest.mark.parametrize("headers, reason", [
    ({}, "Missing Authorization header"),
    ({"Authorization": "Bearer NotTheClusterKeyNotTheClusterKey"}, "invalid API key"),
])
def test_api_call_without_the_key_is_refused(env, pki, secured, headers, reason):
    code, body = get(env, pki, "/api/v1/orchestrator/nodes", headers)
    assert code == 401
    assert body["Message"] == "Request Unauthorized" and body["Details"] == {"reason": reason}
    assert get(env, pki, "/api/v1/orchestrator/nodes", {"Authorization": f"Bearer {api_key(env)}"})[0] == 200
    assert get(env, pki, "/api/v1/agent/alive")[0] == 200  # open route (pkg/authz/capabilities.go)


def test_compute_role_with_a_wrong_api_key_names_the_cause(env, pki, secured):
    res = env.playbook("cluster.yml", "-e", "orchestrator_hosts=none", "-e", "compute_hosts=testhost3",
                       "-e", tls_vars(pki, bacalhau_compute_orchestrator_api_key="NotTheClusterKeyNotTheClusterKey"),
                       "-e", "bacalhau_compute_connect_timeout=10")
    assert res.returncode != 0
    assert "testhost3: compute node" in res.output, res.output[-3000:]
    assert re.search(r"WRONG API KEY: the orchestrator API answered 401 Request Unauthorized\s+\(invalid API key\)",
                     res.output), res.output[-3000:]
    assert "NotTheClusterKeyNotTheClusterKey" not in res.output


def test_compute_node_with_the_wrong_ca_cannot_join_and_the_role_names_the_cause(env, pki, secured):
    res = env.playbook("cluster.yml", "-e", "orchestrator_hosts=none", "-e", "compute_hosts=testhost3",
                       "-e", tls_vars(pki, bacalhau_compute_tls_ca_file=str(pki / "other.crt")),
                       "-e", "bacalhau_compute_connect_timeout=12")
    assert res.returncode != 0
    assert re.search(r"testhost3: compute node \S+ did not\s+appear\s+CONNECTED", res.output), res.output[-3000:]
    assert "WRONG CA" in res.output, res.output[-3000:]
    assert re.search(r"x509:\s+certificate\s+signed\s+by\s+unknown\s+authority", res.output)
    journal = env.ssh("testhost3", "sudo journalctl -u bacalhau -n 20 --no-pager -o cat")
    assert (f'failed to connect to NATS: failed to connect to nats://{env.ip("testhost1")}:4222: nats: tls error: '
            "tls: failed to verify certificate: x509: certificate signed by unknown authority") in journal
