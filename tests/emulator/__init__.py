"""The offline AWS world every test, benchmark and the sandbox talk to."""
from __future__ import annotations

from .client import Emulator, aws_env

__all__ = ["Emulator", "aws_env"]
