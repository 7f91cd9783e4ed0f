# -*- coding: utf-8 -*-
# Copyright: bacalhau.aws_spot contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The options of the modules that talk to a Bacalhau orchestrator's HTTP API
(bacalhau_job, bacalhau_nodes): where it is, its key, its TLS."""

from __future__ import annotations


class ModuleDocFragment:

    DOCUMENTATION = r"""
options:
  api_url:
    description:
      - Base URL of the orchestrator's API (C(API.Host) and C(API.Port) in Bacalhau's config).
      - The default is the orchestrator's own host, where the API needs to be open to nobody.
    type: str
    default: http://127.0.0.1:1234
  api_key:
    description:
      - An API key of the orchestrator (C(API.Auth.Users[].APIKey)), sent as a Bearer token as the
        C(bacalhau) CLI sends C(BACALHAU_API_KEY). Never logged.
    type: str
  ca_path:
    description:
      - PEM file of the CA that signed the API's certificate, when O(api_url) is C(https://).
    type: path
  validate_certs:
    description:
      - Verify the API's TLS certificate.
    type: bool
    default: true
"""
