#!/usr/bin/env python3
"""Push the test world's one image to the test hosts' registry (tests/hosts/testhosts.sh).

The image is Debian's busybox-static (the binary from the test hosts' rootfs and its applet
links) in one layer, the same content the hosts' `docker import` used to make. Pushed to a
registry, it has a manifest digest, so a host that pulls it gets `RepoDigests`, as Bacalhau
expects of a local image it may use without asking the registry (pkg/docker/docker.go
ImageDistribution in Bacalhau v1.9.3).

No Docker daemon on the controller: the layer is built here (reproducible bytes: fixed times
and owners, sorted names) and pushed with the registry's HTTP API (Docker Registry HTTP API v2:
blob upload POST + PUT ?digest=, then the schema-2 manifest PUT).

  registry_image.py --rootfs ROOTFS.tar.zst --cache DIR --registry HOST:PORT --image REPO:TAG
prints the manifest digest (sha256:...).
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

MANIFEST_V2 = "application/vnd.docker.distribution.manifest.v2+json"
CONFIG_V1 = "application/vnd.docker.container.image.v1+json"
LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
GO_ARCH = {"amd64": "amd64", "arm64": "arm64", "x86_64": "amd64", "aarch64": "arm64"}


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def extract_busybox(rootfs: Path, out: Path) -> None:
    """usr/bin/busybox from the rootfs tarball (bookworm is merged-usr: /bin -> usr/bin)."""
    with tempfile.TemporaryDirectory() as d:
        zstd = subprocess.Popen(["zstd", "-q", "-dc", str(rootfs)], stdout=subprocess.PIPE)
        subprocess.run(["tar", "-C", d, "-xf", "-", "./usr/bin/busybox"], stdin=zstd.stdout, check=True)
        zstd.stdout.close()
        zstd.wait()
        os.replace(Path(d) / "usr" / "bin" / "busybox", out)


def build_layer(busybox: Path) -> bytes:
    """The uncompressed layer tar: /bin/busybox, one symlink per applet, /tmp."""
    applets = subprocess.run([str(busybox), "--list"], capture_output=True, text=True, check=True).stdout.split()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        def add(name: str, kind: bytes, mode: int, data: bytes = b"", link: str = "") -> None:
            info = tarfile.TarInfo(name)
            info.type, info.mode, info.mtime, info.uid, info.gid = kind, mode, 0, 0, 0
            info.uname = info.gname = "root"
            info.linkname, info.size = link, len(data)
            tar.addfile(info, io.BytesIO(data) if data else None)
        add("bin", tarfile.DIRTYPE, 0o755)
        add("bin/busybox", tarfile.REGTYPE, 0o755, busybox.read_bytes())
        for a in sorted(set(applets) - {"busybox"}):
            add(f"bin/{a}", tarfile.SYMTYPE, 0o777, link="busybox")
        add("tmp", tarfile.DIRTYPE, 0o1777)
    return buf.getvalue()


def image_blobs(rootfs: Path, cache: Path, arch: str) -> tuple[bytes, bytes]:
    """(config JSON, gzipped layer), cached beside the rootfs tarball they come from."""
    key = cache / f"image-busybox-{rootfs.name.removesuffix('.tar.zst')}"
    layer_file, config_file = key.with_suffix(".layer.tar.gz"), key.with_suffix(".config.json")
    if layer_file.is_file() and config_file.is_file():
        return config_file.read_bytes(), layer_file.read_bytes()
    with tempfile.TemporaryDirectory() as d:
        bb = Path(d) / "busybox"
        extract_busybox(rootfs, bb)
        tar = build_layer(bb)
    gz = io.BytesIO()
    with gzip.GzipFile(fileobj=gz, mode="wb", mtime=0) as g:
        g.write(tar)
    layer = gz.getvalue()
    created = "1970-01-01T00:00:00Z"
    config = json.dumps({
        "architecture": GO_ARCH.get(arch, arch), "os": "linux", "created": created,
        "config": {"Env": ["PATH=/bin"], "Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": [sha256(tar)]},
        "history": [{"created": created, "created_by": "tests/hosts/registry_image.py: Debian busybox-static"}],
    }, sort_keys=True, separators=(",", ":")).encode()
    for path, data in ((layer_file, layer), (config_file, config)):
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)  # atomic: the cache is shared by every environment
    return config, layer


def request(method: str, url: str, data: bytes | None = None, headers: dict | None = None):
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    return urllib.request.urlopen(req, timeout=30)  # noqa: S310 - the test registry, plain HTTP


def push_blob(base: str, repo: str, blob: bytes) -> str:
    digest = sha256(blob)
    try:
        with request("HEAD", f"{base}/v2/{repo}/blobs/{digest}"):
            return digest  # already there
    except urllib.error.HTTPError as exc:
        if exc.code != 404:
            raise
    with request("POST", f"{base}/v2/{repo}/blobs/uploads/", b"") as resp:
        location = urllib.parse.urljoin(base + "/", resp.headers["Location"])
    sep = "&" if "?" in location else "?"
    with request("PUT", f"{location}{sep}digest={urllib.parse.quote(digest)}", blob,
                 {"Content-Type": "application/octet-stream"}):
        return digest


def push(registry: str, image: str, config: bytes, layer: bytes) -> str:
    base = f"http://{registry}"
    repo, _, tag = image.rpartition(":")
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": MANIFEST_V2,
        "config": {"mediaType": CONFIG_V1, "size": len(config), "digest": push_blob(base, repo, config)},
        "layers": [{"mediaType": LAYER_GZIP, "size": len(layer), "digest": push_blob(base, repo, layer)}],
    }, separators=(",", ":")).encode()
    with request("PUT", f"{base}/v2/{repo}/manifests/{tag}", manifest, {"Content-Type": MANIFEST_V2}) as resp:
        return resp.headers.get("Docker-Content-Digest") or sha256(manifest)


def wait_ready(registry: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with request("GET", f"http://{registry}/v2/"):
                return
        except (OSError, urllib.error.URLError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rootfs", type=Path, required=True)
    p.add_argument("--cache", type=Path, required=True)
    p.add_argument("--registry", required=True, help="HOST:PORT, plain HTTP")
    p.add_argument("--image", required=True, help="REPO:TAG inside the registry")
    p.add_argument("--arch", default="")
    a = p.parse_args(argv)
    arch = a.arch or subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True,
                                    check=True).stdout.strip()
    config, layer = image_blobs(a.rootfs, a.cache, arch)
    wait_ready(a.registry)
    print(push(a.registry, a.image, config, layer))
    return 0


if __name__ == "__main__":
    sys.exit(main())
