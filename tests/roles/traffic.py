"""Bytes this machine sends to each test host, counted by iptables (used by tests/roles/test_release.py
and tests/bench/cluster).

One counting rule (no target: it only counts) per host and kind in the OUTPUT chain, tagged with a
comment of our own, so that several environments (one per BACALHAU_TESTHOSTS_SUBNET) can count at
once and ``close()`` removes exactly ours:
- ``ssh``: TCP to the host's port 22, i.e. everything Ansible sends it (modules, files, copies);
- ``release``: TCP from the stand-in release server's port (tests/roles/env.sh), i.e. what the
  host downloads from the release server. On AWS that server is Bacalhau's, not the controller.
Bytes are IP packet bytes (headers included), as iptables counts them.
"""

from __future__ import annotations

import re
import subprocess

KINDS = ("ssh", "release")


class Traffic:
    def __init__(self, hosts: dict[str, str], release_port: int, tag: str) -> None:
        self.hosts = dict(hosts)  # name -> IPv4 address
        self.port = int(release_port)
        self.tag = tag
        self.rules: list[list[str]] = []

    def _spec(self, ip: str, kind: str) -> list[str]:
        match = ["--dport", "22"] if kind == "ssh" else ["--sport", str(self.port)]
        return ["OUTPUT", "-d", ip, "-p", "tcp", *match, "-m", "comment", "--comment", f"{self.tag}:{kind}:{ip}"]

    def open(self) -> "Traffic":
        for ip in self.hosts.values():
            for kind in KINDS:
                spec = self._spec(ip, kind)
                subprocess.run(["iptables", "-w", "-I", *spec], check=True)
                self.rules.append(spec)
        return self

    def read(self) -> dict[str, dict[str, int]]:
        """{host: {"ssh": bytes, "release": bytes}} since open()."""
        text = subprocess.run(["iptables", "-w", "-L", "OUTPUT", "-n", "-v", "-x"], check=True,
                              capture_output=True, text=True).stdout
        by_ip: dict[tuple[str, str], int] = {}
        for line in text.splitlines():
            m = re.match(r"\s*\d+\s+(\d+)\s.*/\* " + re.escape(self.tag) + r":(\w+):([\d.]+) \*/", line)
            if m:
                by_ip[(m.group(3), m.group(2))] = by_ip.get((m.group(3), m.group(2)), 0) + int(m.group(1))
        return {name: {kind: by_ip.get((ip, kind), 0) for kind in KINDS} for name, ip in self.hosts.items()}

    def close(self) -> None:
        while self.rules:
            subprocess.run(["iptables", "-w", "-D", *self.rules.pop()], check=False)

    def __enter__(self) -> "Traffic":
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()
