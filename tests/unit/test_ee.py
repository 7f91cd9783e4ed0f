"""Execution environments: what ansible-builder makes of the collection (no container is built).

The collection is built with `ansible-galaxy collection build` and installed into a temporary
directory, as an EE build installs it; `ansible-builder introspect` must then find its Python and
system requirements through meta/execution-environment.yml, and `ansible-builder create` must
write a build context for an EE with the collection, and for the example decision environment."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def tool(name: str) -> str:
    exe = BIN / name
    if exe.exists():
        return str(exe)
    found = shutil.which(name)
    if not found:
        pytest.skip(f"{name} is not installed (requirements-dev.txt)")
    return found


def run(*cmd: str, cwd: Path = ROOT) -> str:
    res = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=300, check=False)
    assert res.returncode == 0, f"{' '.join(cmd)}\n{res.stdout}\n{res.stderr}"
    return res.stdout


def requirement_lines(path: Path) -> list[str]:
    return [ln.strip() for ln in path.read_text().splitlines() if ln.strip() and not ln.startswith("#")]


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("collection")
    run(tool("ansible-galaxy"), "collection", "build", "--force", "--output-path", str(out), str(ROOT))
    [tarball] = out.glob("bacalhau-aws_spot-*.tar.gz")
    return tarball


def test_the_built_collection_declares_its_ee_requirements_to_ansible_builder(built, tmp_path):
    run(tool("ansible-galaxy"), "collection", "install", "--no-deps", "--force", "-p", str(tmp_path), str(built))
    installed = tmp_path / "ansible_collections" / "bacalhau" / "aws_spot"
    meta = yaml.safe_load((installed / "meta" / "execution-environment.yml").read_text())
    assert meta["version"] == 3
    assert (installed / meta["dependencies"]["python"]).is_file()
    assert (installed / meta["dependencies"]["system"]).is_file()
    found = yaml.safe_load(run(tool("ansible-builder"), "introspect", str(tmp_path)))
    ours = "  # from collection bacalhau.aws_spot"
    assert found["python"] == [f"{ln}{ours}" for ln in requirement_lines(ROOT / "requirements.txt")]
    assert found["system"] == [f"{ln}{ours}" for ln in requirement_lines(ROOT / "bindep.txt")]
    assert f"boto3>=1.34.0{ours}" in found["python"]
    assert f"openssl [platform:dpkg platform:rpm]{ours}" in found["system"]


def test_ansible_builder_creates_an_ee_context_with_the_collection(built, tmp_path):
    # The example definition users build (docs/ee/), with the collection from this checkout's
    # tarball instead of Galaxy, and its requirements given as files (as a checkout would).
    definition = yaml.safe_load((ROOT / "docs" / "ee" / "execution-environment.yml").read_text())
    galaxy = definition["dependencies"]["galaxy"]["collections"]
    assert [c["name"] for c in galaxy][0] == "bacalhau.aws_spot"
    galaxy[0] = {"name": f"/build/collections/{built.name}", "type": "file"}
    definition["dependencies"]["galaxy"] = {"collections": galaxy}
    definition["dependencies"]["python"] = str(ROOT / "requirements.txt")
    definition["dependencies"]["system"] = str(ROOT / "bindep.txt")
    definition["additional_build_files"] = [{"src": str(built), "dest": "collections"}]
    ee = tmp_path / "execution-environment.yml"
    ee.write_text(yaml.safe_dump(definition))
    context = tmp_path / "context"
    run(tool("ansible-builder"), "create", "-f", str(ee), "--context", str(context), "--output-filename",
        "Containerfile")
    containerfile = (context / "Containerfile").read_text()
    assert "quay.io/centos/centos:stream9" in containerfile
    assert (context / "_build" / "collections" / built.name).is_file()
    assert (context / "_build" / "requirements.txt").read_text() == (ROOT / "requirements.txt").read_text()
    assert (context / "_build" / "bindep.txt").read_text() == (ROOT / "bindep.txt").read_text()
    reqs = yaml.safe_load((context / "_build" / "requirements.yml").read_text())
    assert {"name": f"/build/collections/{built.name}", "type": "file"} in reqs["collections"]
    assert "ansible-galaxy collection install" in containerfile or "install-from-bindep" in containerfile


def test_ansible_builder_creates_the_example_decision_environment_context(tmp_path):
    context = tmp_path / "context"
    run(tool("ansible-builder"), "create", "-f", str(ROOT / "docs" / "ee" / "decision-environment.yml"),
        "--context", str(context), "--output-filename", "Containerfile")
    containerfile = (context / "Containerfile").read_text()
    assert "ENV JAVA_HOME=/usr/lib/jvm/jre-17-openjdk" in containerfile
    assert "java-17-openjdk" in (context / "_build" / "bindep.txt").read_text()
    assert "ansible-rulebook" in (context / "_build" / "requirements.txt").read_text()
    names = [c["name"] for c in yaml.safe_load((context / "_build" / "requirements.yml").read_text())["collections"]]
    assert names == ["ansible.eda", "bacalhau.aws_spot"]
