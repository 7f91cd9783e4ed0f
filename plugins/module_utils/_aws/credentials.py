# -*- coding: utf-8 -*-
# Copyright: bacalhau.aws_spot contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Missing or expired AWS credentials, said so that the user knows what to do. Private."""

from __future__ import annotations

from typing import Any

try:
    import botocore.exceptions
except ImportError:
    pass  # AnsibleAWSModule reports a missing botocore

from ansible_collections.bacalhau.aws_spot.plugins.module_utils._aws.common import AwsSpotError
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._aws.common import error_code
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._aws.common import error_text

CREDENTIAL_ERRORS = frozenset({
    "ExpiredToken", "ExpiredTokenException", "RequestExpired", "InvalidClientTokenId",
    "UnrecognizedClientException", "AuthFailure", "SignatureDoesNotMatch", "InvalidToken",
})
CREDENTIAL_HINT = (
    "Give Ansible AWS credentials: export AWS_PROFILE=<profile> (and run 'aws sso login --profile <profile>' "
    "when it uses SSO), or export AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY (plus AWS_SESSION_TOKEN for "
    "temporary ones), then run again."
)


def credential_problem(exc: BaseException) -> str | None:
    """A message for missing or expired credentials, or None for any other error."""
    if isinstance(exc, botocore.exceptions.NoCredentialsError):
        return f"No AWS credentials found. {CREDENTIAL_HINT}"
    if isinstance(exc, (botocore.exceptions.TokenRetrievalError, botocore.exceptions.SSOTokenLoadError)):
        return f"The AWS SSO session has expired or was never started ({exc}). {CREDENTIAL_HINT}"
    if error_code(exc) in CREDENTIAL_ERRORS:
        return f"AWS refused the credentials ({error_text(exc)}): they are wrong or expired. {CREDENTIAL_HINT}"
    return None


def fail(module: Any, exc: BaseException, doing: str) -> None:
    """Fail ``module`` for an error of its helpers: their own message (``AwsSpotError``), missing or
    expired credentials said plainly, or AWS's error with what was being done."""
    if isinstance(exc, AwsSpotError):
        module.fail_json(msg=str(exc), **exc.details)
    hint = credential_problem(exc)
    if hint:
        module.fail_json(msg=hint)
    module.fail_json_aws(exc, msg=doing)
