#!/usr/bin/env python3
"""Build a STAND-IN Bacalhau release for tests (see README.md beside this file).

Writes into OUT:
  bacalhau_<tag>_linux_{amd64,arm64}.tar.gz            one member, `bacalhau` (the stand-in)
  bacalhau_<tag>_linux_{amd64,arm64}.tar.gz.signature.sha256
                                                       base64 of `openssl dgst -sha256 -sign`
  test-release-public.pem                              the test public key to verify them with
and keeps the test private key in KEYDIR (made once with openssl, never committed).

With --tamper the archives are changed AFTER signing, so their signature no longer verifies
(the bad-signature test). Archives are byte-for-byte reproducible for a given tag and arch.
"""

from __future__ import annotations

import argparse
import base64
import gzip
import io
import os
import subprocess
import sys
import tarfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ARCHES = ("amd64", "arm64")


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


def archive(tag: str, arch: str, tamper: bool) -> bytes:
    data = binary(tag, arch, tamper)
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.GNU_FORMAT) as tar:
        ti = tarfile.TarInfo("bacalhau")
        ti.size, ti.mode, ti.mtime, ti.uid, ti.gid = len(data), 0o755, 1735689600, 0, 0
        ti.uname = ti.gname = "root"
        tar.addfile(ti, io.BytesIO(data))
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", mtime=0, filename="") as gz:
        gz.write(raw.getvalue())
    return out.getvalue()


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
    args = ap.parse_args()
    keydir = args.keydir or args.out.parent / "keys"
    priv, pub = ensure_key(keydir)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "test-release-public.pem").write_bytes(pub.read_bytes())
    for arch in ARCHES:
        name = f"bacalhau_{args.tag}_linux_{arch}.tar.gz"
        path = args.out / name
        path.write_bytes(archive(args.tag, arch, tamper=False))
        (args.out / f"{name}.signature.sha256").write_bytes(sign(priv, path))
        if args.tamper:
            path.write_bytes(archive(args.tag, arch, tamper=True))
    print(f"stand-in release {args.tag} ({'TAMPERED' if args.tamper else 'signed'}) in {args.out}; "
          f"public key {args.out / 'test-release-public.pem'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
