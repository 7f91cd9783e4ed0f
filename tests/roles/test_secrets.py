"""Secrets on the nodes: owned by bacalhau, mode 0600, in the right config keys, and never in
Ansible's output, even at -vvv --diff, while a converge changes them.

Runs tests/roles/playbooks/cluster.yml with TLS files (a CA and an orchestrator certificate
made here) and the API key on, on the same test hosts as test_cluster.py (after it: it leaves
TLS on). The stand-in does not check TLS or the key yet; this test checks what the roles
write and print, which real Bacalhau reads (pkg/config/types/{orchestrator,compute,api,auth}.go).
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
import json

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.roles.conftest import TEST_DIR
from tests.secrets import key_body


def make_pki(orchestrator_ip: str) -> dict[str, str]:
    now = datetime.datetime.now(datetime.timezone.utc)
    tls = TEST_DIR / "tls"
    tls.mkdir(mode=0o700, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now)
          .not_valid_after(now + datetime.timedelta(days=2))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True).sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    san = x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(orchestrator_ip)),
                                       x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, orchestrator_ip)]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(san, critical=False).sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    files = {
        "ca.key": ca_key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
        "ca.crt": ca.public_bytes(pem),
        "server.key": key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
        "server.crt": cert.public_bytes(pem),
    }
    for name, data in files.items():
        (tls / name).write_bytes(data)
        (tls / name).chmod(0o600)
    return {name: str(tls / name) for name in files}


def stat(env, host: str, path: str) -> str:
    return env.ssh(host, f"sudo stat -c '%U %a' {path}").strip()


def test_secrets_are_private_and_never_printed(env):
    files = make_pki(env.ip("testhost1"))
    api_key_file = TEST_DIR / "given-api-key"  # not the default (api-key beside the token): the variable counts
    res = env.playbook(
        "cluster.yml", "-vvv", "--diff",
        "-e", json.dumps({"bacalhau_orchestrator_tls_cert_file": files["server.crt"],
                          "bacalhau_orchestrator_tls_key_file": files["server.key"],
                          "bacalhau_orchestrator_tls_ca_file": files["ca.crt"],
                          "bacalhau_orchestrator_api_key_file": str(api_key_file),
                          "bacalhau_orchestrator_api_auth": True}))
    assert res.returncode == 0, res.output[-4000:]
    assert "ESTABLISH SSH CONNECTION" in res.output  # really -vvv

    token = env.token_file.read_text().strip()
    api_key = api_key_file.read_text().strip()
    assert len(api_key) >= 20 and (api_key_file.stat().st_mode & 0o777) == 0o600
    secrets = {"the auth token": [token], "the API key": [api_key, base64.b64encode(api_key.encode()).decode()],
               "the server key": key_body(files["server.key"]), "the CA key": key_body(files["ca.key"])}
    for what, values in secrets.items():
        for value in values:
            assert value not in res.output, f"{what} appears in the -vvv --diff output"

    # on the hosts: the secrets' files are the service user's, 0600, in Bacalhau's own keys
    assert stat(env, "testhost1", "/etc/bacalhau/config.yaml") == "bacalhau 600"
    assert stat(env, "testhost1", "/etc/bacalhau/tls/server.key") == "bacalhau 600"
    assert stat(env, "testhost1", "/etc/bacalhau/tls") == "bacalhau 700"
    assert stat(env, "testhost2", "/etc/bacalhau/config.yaml") == "bacalhau 600"
    assert stat(env, "testhost2", "/etc/bacalhau/tls/ca.crt").startswith("bacalhau ")
    orchestrator = yaml.safe_load(env.ssh("testhost1", "sudo cat /etc/bacalhau/config.yaml"))
    assert orchestrator["Orchestrator"]["TLS"] == {"ServerCert": "/etc/bacalhau/tls/server.crt",
                                                   "ServerKey": "/etc/bacalhau/tls/server.key",
                                                   "CACert": "/etc/bacalhau/tls/ca.crt"}
    (user,) = orchestrator["API"]["Auth"]["Users"]
    assert user["APIKey"] == api_key and user["Alias"] == "bacalhau-aws-spot"
    assert {"read:job", "write:job", "read:node"} <= set(user["Capabilities"][0]["Actions"])
    assert "TLS" not in orchestrator["API"]  # the API is not reachable from outside in this test
    compute = yaml.safe_load(env.ssh("testhost2", "sudo cat /etc/bacalhau/config.yaml"))
    # CACert only: RequireTLS would make the node start with a TLS handshake, which Bacalhau's
    # own NATS server does not answer (see roles/bacalhau_compute/defaults/main.yml)
    assert compute["Compute"]["TLS"] == {"CACert": "/etc/bacalhau/tls/ca.crt"}
    assert env.ssh("testhost2", "sudo cat /etc/bacalhau/tls/ca.crt") == open(files["ca.crt"]).read()
    # the CA's key never leaves the controller
    for host in ("testhost1", "testhost2"):
        assert "ca.key" not in env.ssh(host, "sudo ls /etc/bacalhau/tls")
