#!/usr/bin/env python3
"""Build a STAND-IN Bacalhau release for tests (see README.md beside this file).

Writes into OUT (with --layout publish, the default, into OUT/stable/<tag>/, or OUT/pre/<tag>/
for a pre-release tag: where Bacalhau's publish workflow uploads, .github/workflows/_s3_publish.yml;
with --layout flat into OUT/ itself, as install.sh downloads from https://get.bacalhau.org/releases/):
  bacalhau_<tag>_linux_{amd64,arm64}.tar.gz            one member, `bacalhau` (the stand-in)
  bacalhau_<tag>_linux_{amd64,arm64}.tar.gz.signature.sha256
                                                       base64 of `openssl dgst -sha256 -sign`
  test-release-public.pem                              the test public key to verify them with
and keeps the test private key in KEYDIR (made once with openssl, never committed).

The size of a real release (--size real, the default): the member `bacalhau` is a Python zip
application (a `#!/usr/bin/env python3` line, then a zip whose __main__.py is the stand-in) that
also holds incompressible padding, so that each .tar.gz has the size of Bacalhau's archive for
that architecture (REAL_SIZES; Python reads only the zip's directory, so the padding costs no
start-up time). --size small leaves the padding out (a few tens of kB).

With --tamper the archives are changed AFTER signing, so their signature no longer verifies
(the bad-signature test). Archives are byte-for-byte reproducible for a given tag, arch and size.
"""

from __future__ import annotations

import argparse
import base64
import gzip
import io
import os
import random
import re
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ARCHES = ("amd64", "arm64")
# Bytes of bacalhau_v1.9.3_linux_<arch>.tar.gz. ASSUMED: no file in Bacalhau's repository, docs or
# release manifests (.github/workflows/_s3_publish.yml writes names and paths, no sizes) states
# them, and the release server is out of reach here. Bacalhau is one statically linked Go binary
# (`go build -trimpath`, Makefile `build-bacalhau-tgz`) that embeds its web UI, the NATS server, the
# Docker client and the AWS SDK: about 120 MB, which gzip takes to about 40 % (Go binaries compress
# to 35-45 %); arm64 Go code is some 8 % smaller. Change them here when the real sizes are known.
REAL_SIZES = {"amd64": 50_000_000, "arm64": 46_000_000}


def ensure_key(keydir: Path) -> tuple[Path, Path]:
    keydir.mkdir(parents=True, exist_ok=True)
    priv, pub = keydir / "test-release-private.pem", keydir / "test-release-public.pem"
    if not priv.exists():
        subprocess.run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048",
                        "-out", str(priv)], check=True, capture_output=True)
        os.chmod(priv, 0o600)
    subprocess.run(["openssl", "pkey", "-in", str(priv), "-pubout", "-out", str(pub)],
                   check=True, capture_output=True)
    return priv, pub


def binary(tag: str, arch: str, tamper: bool) -> bytes:
    src = (HERE / "bacalhau_standin.py").read_text(encoding="utf-8")
    src = src.replace('GIT_VERSION = "v0.0.0-standin"', f'GIT_VERSION = "{tag}"', 1)
    lines = src.splitlines(keepends=True)
    for i, line in enumerate(lines):
        if line.startswith("GOARCH = "):
            lines[i] = f'GOARCH = "{arch}"\n'
            break
    src = "".join(lines)
    if tamper:
        src += "# tampered after signing\n"
    return src.encode()


def zipapp(source: bytes, padding: int, seed: str) -> bytes:
    """`#!/usr/bin/env python3` + a zip of __main__.py and ``padding`` incompressible bytes."""
    out = io.BytesIO()
    out.write(b"#!/usr/bin/env python3\n")
    with zipfile.ZipFile(out, "w") as zf:
        zf.writestr(zipfile.ZipInfo("__main__.py", (2025, 1, 1, 0, 0, 0)), source, zipfile.ZIP_DEFLATED)
        if padding > 0:
            # seeded, so the archive is reproducible; random bytes, so gzip cannot shrink them
            zf.writestr(zipfile.ZipInfo("padding.bin", (2025, 1, 1, 0, 0, 0)),
                        random.Random(seed).randbytes(padding), zipfile.ZIP_STORED)
    return out.getvalue()


def targz(data: bytes) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.GNU_FORMAT) as tar:
        ti = tarfile.TarInfo("bacalhau")
        ti.size, ti.mode, ti.mtime, ti.uid, ti.gid = len(data), 0o755, 1735689600, 0, 0
        ti.uname = ti.gname = "root"
        tar.addfile(ti, io.BytesIO(data))
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", mtime=0, filename="", compresslevel=6) as gz:
        gz.write(raw.getvalue())
    return out.getvalue()


def archive(tag: str, arch: str, tamper: bool, size: int = 0) -> bytes:
    """The .tar.gz; with ``size``, padded until it is ``size`` bytes (or within a few bytes of it)."""
    source = binary(tag, arch, tamper=False)
    seed = f"{tag}/{arch}" + ("/tampered" if tamper else "")
    if tamper:
        source += b"# tampered after signing\n"
    if size <= 0:
        return targz(source)
    # gzip adds about 0.03 % to random data, and the stand-in itself takes some tens of kB:
    # start there, correct once by the difference (the result is within some bytes of ``size``).
    padding = int(size / 1.0003) - len(targz(zipapp(source, 0, seed)))
    data = targz(zipapp(source, padding, seed))
    if abs(len(data) - size) > 64:
        data = targz(zipapp(source, padding + size - len(data), seed))
    return data


def sign(priv: Path, path: Path) -> bytes:
    sig = subprocess.run(["openssl", "dgst", "-sha256", "-sign", str(priv), str(path)],
                         check=True, capture_output=True).stdout
    return base64.b64encode(sig) + b"\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tag", default="v1.9.3")
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--keydir", type=Path, help="where the test key pair lives [OUT/../keys]")
    ap.add_argument("--tamper", action="store_true", help="change the archives after signing")
    ap.add_argument("--layout", choices=("publish", "flat"), default="publish",
                    help="publish: OUT/stable/<tag>/ (OUT/pre/<tag>/ for a pre-release), as the publish "
                         "workflow uploads; flat: OUT/, as install.sh reads [publish]")
    ap.add_argument("--size", choices=("real", "small"), default="real",
                    help="real: each archive the size of Bacalhau's (REAL_SIZES); small: no padding [real]")
    args = ap.parse_args()
    keydir = args.keydir or args.out.parent / "keys"
    priv, pub = ensure_key(keydir)
    out = args.out
    if args.layout == "publish":
        channel = "stable" if re.fullmatch(r"v\d+\.\d+\.\d+", args.tag) else "pre"
        out = out / channel / args.tag
    out.mkdir(parents=True, exist_ok=True)
    (out / "test-release-public.pem").write_bytes(pub.read_bytes())
    for arch in ARCHES:
        name = f"bacalhau_{args.tag}_linux_{arch}.tar.gz"
        path = out / name
        size = REAL_SIZES[arch] if args.size == "real" else 0
        path.write_bytes(archive(args.tag, arch, tamper=False, size=size))
        (out / f"{name}.signature.sha256").write_bytes(sign(priv, path))
        if args.tamper:
            path.write_bytes(archive(args.tag, arch, tamper=True, size=size))
    print(f"stand-in release {args.tag} ({'TAMPERED' if args.tamper else 'signed'}, {args.size} size) in {out}; "
          f"public key {out / 'test-release-public.pem'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
