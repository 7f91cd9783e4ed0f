"""playbooks/tasks/pki.yml on the controller: the cluster CA and the orchestrator's certificate.

Runs the real tasks file with ansible-playbook against a one-host inventory that carries the
hostvars the amazon.aws.aws_ec2 inventory gives an instance; no AWS call, no host is dialled.
"""
from __future__ import annotations

import datetime
import ipaddress
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tests.conftest import REPO

PLAY = """
- name: The PKI of a cluster
  hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - name: Make the CA and the orchestrator certificate
      ansible.builtin.include_tasks: {pki}
      vars:
        _cluster_pki_host: i-orchestrator
        _cluster_pki_dir: {dir}
"""


def run(tmp_path: Path, addresses: dict[str, str], *extra: str) -> subprocess.CompletedProcess:
    tls = tmp_path / "tls"
    play = tmp_path / "play.yml"
    play.write_text(PLAY.format(pki=REPO / "playbooks" / "tasks" / "pki.yml", dir=tls))
    inventory = tmp_path / "inventory.json"
    inventory.write_text(json.dumps({"all": {"hosts": {"i-orchestrator": addresses, "localhost": {
        "ansible_connection": "local", "ansible_python_interpreter": sys.executable}}}}))
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0")
    cmd = [str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(inventory), str(play),
           "-e", "cluster_name=pki-test", *extra]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def cert(tmp_path: Path, name: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate((tmp_path / "tls" / name).read_bytes())


def san(certificate: x509.Certificate) -> set[str]:
    ext = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return {str(v) for v in ext.get_values_for_type(x509.IPAddress)} | set(ext.get_values_for_type(x509.DNSName))


ORCH = {"public_ip_address": "198.51.100.10", "private_ip_address": "10.0.1.10",
        "public_dns_name": "ec2-198-51-100-10.compute-1.amazonaws.com",
        "private_dns_name": "ip-10-0-1-10.ec2.internal"}


def test_ca_once_certificate_for_the_orchestrators_names_renewed_when_they_change(tmp_path):
    first = run(tmp_path, ORCH, "-vvv")
    assert first.returncode == 0, first.stdout[-3000:]
    tls = tmp_path / "tls"
    # at -vvv, while both keys are made and used, neither appears in the output
    # (an EC private key's PEM ends with its public point, which the modules rightly show: those
    # lines are left out, the private scalar is not)
    for name in ("ca.key", "orchestrator.key"):
        pem = (tls / name).read_bytes()
        public = serialization.load_pem_private_key(pem, None).public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
        body = [ln for ln in pem.decode().splitlines() if ln and not ln.startswith("-----")]
        private = [ln for ln in body if ln not in public.replace("\n", "")]
        assert private and not any(ln in first.stdout + first.stderr for ln in private), f"{name} was printed"
        assert "\\n".join(body) not in first.stdout
    # the CA key and the server key are readable by their owner only; so is the directory
    for name in ("ca.key", "orchestrator.key"):
        assert stat.S_IMODE((tls / name).stat().st_mode) == 0o600, name
    assert stat.S_IMODE(tls.stat().st_mode) == 0o700

    ca, server = cert(tmp_path, "ca.crt"), cert(tmp_path, "orchestrator.crt")
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert server.issuer == ca.subject
    ca.public_key().verify(server.signature, server.tbs_certificate_bytes,
                           *([] if not hasattr(server, "signature_algorithm_parameters")
                             else [server.signature_algorithm_parameters]))
    assert not server.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    # every address and name compute nodes (and the orchestrator itself) dial
    assert set(ORCH.values()) | {"127.0.0.1", "localhost"} <= san(server)
    # and nothing else: no wildcard address, no address the instance does not have (issue 19)
    assert san(server) == set(ORCH.values()) | {"127.0.0.1", "localhost"}
    assert ipaddress.ip_address("198.51.100.10") in server.extensions.get_extension_for_class(
        x509.SubjectAlternativeName).value.get_values_for_type(x509.IPAddress)

    # again: nothing changes, the CA and the certificate are kept
    again = run(tmp_path, ORCH)
    assert again.returncode == 0 and "changed=0" in again.stdout, again.stdout[-3000:]
    assert cert(tmp_path, "orchestrator.crt").serial_number == server.serial_number

    # the orchestrator was replaced: a new address, the same CA, a new certificate naming it
    moved = dict(ORCH, public_ip_address="198.51.100.77")
    third = run(tmp_path, moved)
    assert third.returncode == 0, third.stdout[-3000:]
    assert cert(tmp_path, "ca.crt").fingerprint(ca.signature_hash_algorithm) == ca.fingerprint(
        ca.signature_hash_algorithm)
    renewed = cert(tmp_path, "orchestrator.crt")
    assert renewed.serial_number != server.serial_number
    assert "198.51.100.77" in san(renewed) and "198.51.100.10" not in san(renewed)


def test_certificate_is_renewed_before_it_expires(tmp_path):
    # a certificate valid for 10 days, renewed when it expires within 30: every run renews it
    short = run(tmp_path, ORCH, "-e", "cluster_tls_cert_days=10")
    assert short.returncode == 0, short.stdout[-3000:]
    first = cert(tmp_path, "orchestrator.crt")
    assert first.not_valid_after_utc - datetime.datetime.now(datetime.timezone.utc) < datetime.timedelta(days=11)
    again = run(tmp_path, ORCH)
    assert again.returncode == 0, again.stdout[-3000:]
    renewed = cert(tmp_path, "orchestrator.crt")
    assert renewed.serial_number != first.serial_number
    assert renewed.not_valid_after_utc - datetime.datetime.now(datetime.timezone.utc) > datetime.timedelta(days=300)
    # and a full-length one is then kept
    kept = run(tmp_path, ORCH)
    assert "changed=0" in kept.stdout and cert(tmp_path, "orchestrator.crt").serial_number == renewed.serial_number
