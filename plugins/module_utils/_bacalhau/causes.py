# -*- coding: utf-8 -*-
# Copyright: bacalhau.aws_spot contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Why a compute node cannot join its orchestrator, from the lines Bacalhau logs: the one table.

A compute node that cannot connect keeps running and logs, with backoff
(pkg/transport/nclprotocol/compute/manager.go maintainConnection):

  ERR Connection attempt failed error="failed to setup transport: failed to connect to NATS: <err>"

where <err> is what pkg/nats/errors.go interceptConnectionError makes of the NATS client's error:
  - nats.ErrNoServers becomes "no orchestrator available for connection at nats://h:4222". nats.go
    (v1.52, the version v1.9.3's go.mod pins; nats.go:2813-2824) turns only a dial error that
    says "connection refused" into ErrNoServers;
  - anything else is wrapped: "failed to connect to nats://h:4222: <nats.go's or Go's error>", so a
    dial that times out (a security group or firewall that drops the packets) reads
    "failed to connect to nats://h:4222: dial tcp h:4222: i/o timeout", a wrong token
    "... nats: Authorization Violation" (nats.go ErrAuthorization), a TLS problem
    "... nats: tls error: tls: failed to verify certificate: x509: ..." (nats.go ErrTLS wrapping
    Go's crypto/tls and crypto/x509 errors), a secure-only client before a plain server
    "... nats: secure connection not available" (nats.go ErrSecureConnWanted), an unreadable CA
    "... nats: error loading or parsing rootCA file: ..." (nats.go RootCAs).

Each Cause names the problem, what it means, what to check, and the part of the line to quote.
The first cause whose pattern is found in the node's last connection error wins, so the specific
ones come before the general ones. Used by the bacalhau_nodes module (its diagnosis) and through it
by the roles and playbooks; tests/unit/test_bacalhau_nodes.py has one case per cause.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# The lines that tell of a failed connection (the last one is the node's current trouble).
CONNECTION_ERROR = re.compile(r"failed to connect to|no orchestrator available|Connection attempt failed")

NATS_PORT = 4222


@dataclass(frozen=True)
class Cause:
    key: str
    title: str
    pattern: str  # searched (re.search) in the node's last connection error
    meaning: str
    check: str
    quote: str  # the part of the line to show (re.search; the whole error when it does not match)

    def matches(self, line: str) -> bool:
        return re.search(self.pattern, line) is not None


_TLS_ERROR = r"nats: tls error: [^\"]+"
_FAILED_TO_CONNECT = r"failed to connect to (?:nats|tls)://[^\s\"]+: [^\"]+"

CAUSES: tuple[Cause, ...] = (
    Cause("wrong_token", "WRONG AUTH TOKEN", r"Authorization Violation",
          "the orchestrator refused this node's Compute.Auth.Token (nats: Authorization Violation)",
          "give every node the cluster's token (cluster_auth_token_file, bacalhau_compute_auth_token)",
          r"nats: Authorization Violation"),
    Cause("no_tls", "ORCHESTRATOR WITHOUT TLS", r"secure connection not available",
          "this node trusts a CA (Compute.TLS.CACert) and speaks TLS only, the orchestrator serves plain NATS "
          "(nats: secure connection not available)",
          "give the orchestrator its certificate (bacalhau_orchestrator_tls_cert_file and _key_file, cluster_tls), "
          "or the node no CA", r"nats: secure connection not available"),
    Cause("wrong_ca", "WRONG CA", r"certificate signed by unknown authority",
          "the orchestrator's certificate is not signed by the CA this node trusts (Compute.TLS.CACert)",
          "give bacalhau_compute_tls_ca_file, the cluster's CA (cluster_tls_dir/ca.crt), or the CA that signed "
          "an external orchestrator's certificate (cluster_tls_ca_file)", _TLS_ERROR),
    Cause("bad_certificate", "BAD CERTIFICATE",
          r"certificate is valid for|doesn't contain any IP SANs|certificate has expired|is not yet valid"
          r"|bad certificate|tls: failed to verify certificate",
          "the orchestrator's certificate does not verify for the address this node dials (its SAN) or has expired",
          "issue it for that address (playbooks/tasks/pki.yml names the orchestrator's addresses and DNS names), "
          "or dial a name it holds", _TLS_ERROR),
    Cause("ca_file", "CA FILE MISSING", r"error loading or parsing rootCA file|failed to parse root certificate",
          "this node cannot read its Compute.TLS.CACert", "the CA file on the node (bacalhau_compute_tls_ca_file)",
          r"nats: (?:error loading or parsing rootCA file|failed to parse root certificate)[^\"]*"),
    Cause("tls_first", "TLS HANDSHAKE FIRST REFUSED", r"first record does not look like a TLS handshake",
          "Compute.TLS.RequireTLS makes the node start with TLS; Bacalhau's own NATS server sends its INFO first",
          "set bacalhau_compute_tls_handshake_first: false unless a TLS proxy fronts the orchestrator", _TLS_ERROR),
    Cause("tls", "BAD CERTIFICATE", r"nats: tls error",
          "the TLS handshake with the orchestrator failed",
          "the orchestrator's certificate (playbooks/tasks/pki.yml) and the CA the node trusts", _TLS_ERROR),
    # The two forms of an unreachable orchestrator (pkg/nats/errors.go; nats.go:2813-2824).
    Cause("unreachable_timeout", "ORCHESTRATOR UNREACHABLE", r"i/o timeout",
          "the dial timed out: nothing answered on the orchestrator's NATS port (%(port)s), its packets are dropped. "
          "Most often the orchestrator's security group (or a firewall, a network ACL) does not admit this "
          "node's address on %(port)s, or the address dialled is not the orchestrator's (an old address, "
          "a private address from another network)",
          "the orchestrator's security group admits this node's public address on %(port)s "
          "(create.yml and heal.yml set that rule from the running compute nodes; cluster_nats_cidrs adds "
          "others), Compute.Orchestrators names the orchestrator's current address, and the orchestrator runs",
          r"failed to connect to (?:nats|tls)://[^\s\"]+: dial tcp [^\s\"]+: i/o timeout"),
    Cause("unreachable_refused", "ORCHESTRATOR UNREACHABLE", r"no orchestrator available for connection at",
          "the address answered but refused the connection on port %(port)s (connection refused): nothing "
          "listens there. Bacalhau is not running on the orchestrator, it listens on another port "
          "(Orchestrator.Port), or the address is another machine's",
          "`systemctl status bacalhau` and `journalctl -u bacalhau` on the orchestrator, its "
          "Orchestrator.Port, and that Compute.Orchestrators names its current address",
          r"no orchestrator available for connection at [^\s\"]+"),
    Cause("unreachable_network", "ORCHESTRATOR UNREACHABLE",
          r"no route to host|network is unreachable|no such host|connection refused|connection reset",
          "the orchestrator's address cannot be reached from this node (no route, a name that does not "
          "resolve, or nothing listening)",
          "that Compute.Orchestrators names the orchestrator's current address or DNS name, and that this "
          "node has a route to it", _FAILED_TO_CONNECT),
)

NO_ERROR = ("no connection error in its journal (journalctl -u bacalhau): the node may still be starting, "
            "or Bacalhau is not running on it")


def last_connection_error(text: str) -> str:
    """The node's last line about a failed connection, or ''."""
    lines = [ln for ln in (text or "").splitlines() if CONNECTION_ERROR.search(ln)]
    return lines[-1].strip() if lines else ""


def find_cause(line: str) -> Cause | None:
    for cause in CAUSES:
        if cause.matches(line):
            return cause
    return None


def excerpt(line: str, cause: Cause | None, limit: int = 240) -> str:
    """The part of the line worth showing: the cause's quote, else the error after Bacalhau's prefixes."""
    if cause is not None:
        m = re.search(cause.quote, line)
        if m:
            return m.group(0).rstrip('"')[:limit]
    m = re.search(r"(?:failed to connect to|no orchestrator available).*", line)
    text = (m.group(0) if m else line).rstrip('"')
    return text if len(text) <= limit else text[: limit - 3] + "..."


def diagnose(text: str, port: int = NATS_PORT) -> dict:
    """What a compute node's journal says about why it cannot join, as a dict:
    key, title, message (TITLE: quote - meaning. Check: ...), meaning, check, line."""
    line = last_connection_error(text)
    if not line:
        return {"key": "no_error", "title": "NO CONNECTION ERROR", "message": NO_ERROR, "meaning": NO_ERROR,
                "check": "`systemctl status bacalhau` and `journalctl -u bacalhau` on the node", "line": ""}
    cause = find_cause(line)
    quote = excerpt(line, cause)
    if cause is None:
        return {"key": "unknown", "title": "CANNOT CONNECT", "message": f"CANNOT CONNECT: {quote}",
                "meaning": "", "check": "`journalctl -u bacalhau` on the node", "line": line}
    meaning = cause.meaning % {"port": port}
    check = cause.check % {"port": port}
    return {"key": cause.key, "title": cause.title, "meaning": meaning, "check": check, "line": line,
            "message": f"{cause.title}: {quote} - {meaning}. Check {check}."}
