"""ami_arch_lookup used the way users use it: from a playbook, by FQCN."""
from __future__ import annotations

from pathlib import Path

TARGETS = Path(__file__).parent / "targets"


def test_ami_arch_lookup_playbook(playbook, aws):
    result = playbook(TARGETS / "ami_arch_lookup" / "main.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "failed=0" in result.stdout
    # it really talked to the emulator, and only to it
    assert aws.calls()["by_operation"].get("DescribeInstanceTypes", 0) >= 2


def test_ansible_doc_renders():
    import subprocess
    import sys

    from tests.conftest import REPO

    out = subprocess.run([str(Path(sys.executable).parent / "ansible-doc"), "bacalhau.aws_spot.ami_arch_lookup"],
                         cwd=REPO, capture_output=True, text=True, env={"ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
                                                                       "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    assert "instance_types" in out.stdout and "RETURN VALUES" in out.stdout
