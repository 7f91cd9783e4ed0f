"""What a secret looks like in Ansible's output, for the tests that grep whole runs for them
(tests/roles/test_secrets.py, the sandbox's create.yml -vvv run)."""

from __future__ import annotations

from cryptography.hazmat.primitives import serialization


def key_body(path: str) -> list[str]:
    """The base64 lines of a PEM key that hold private bytes, and the whole key as one line (as a
    JSON dump would carry it). An EC key's PEM ends with its public point: lines found in the
    public key's PEM are public and left out."""
    pem = open(path, "rb").read()
    public = serialization.load_pem_private_key(pem, None).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode().replace("\n", "")
    lines = [ln for ln in pem.decode().splitlines() if ln and not ln.startswith("-----")]
    return [ln for ln in lines if ln not in public] + ["\\n".join(lines)]


def leaked(output: str, secrets: dict[str, list[str]]) -> list[str]:
    """The names of the secrets any of whose pieces appear in the output."""
    return [name for name, pieces in secrets.items() if any(p and p in output for p in pieces)]
