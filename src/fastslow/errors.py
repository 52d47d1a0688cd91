"""User-facing errors: one line naming the problem and the fix.

The CLI prints them as ``error: <message>`` and exits with code 2, no traceback.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pydantic import ValidationError


class FastslowError(Exception):
    """A problem with what the user gave (data, config, checkpoint, profile)."""


class DataError(FastslowError):
    """The dataset cannot be read or is not valid for training/evaluation."""


class ConfigError(FastslowError):
    """A configuration file or option is invalid."""


class CheckpointError(FastslowError):
    """A checkpoint folder is missing files or holds a corrupt file."""


class WriteError(FastslowError):
    """An output folder or file cannot be written (permission, no space, read-only file system)."""


class ProfileError(FastslowError):
    """An energy profile is unknown or malformed."""


class WorkerError(FastslowError):
    """A process of a multi-process fit failed (crashed, was killed, or waited past its timeout)."""


class ServiceError(FastslowError):
    """A System 2 service refuses this client: another System 2, a wrong token, a malformed request."""


def first_validation_problem(err: ValidationError) -> tuple[str, str]:
    """A pydantic ``ValidationError``'s first problem as (where, message): the field path dotted
    ("(top level)" for the model itself), pydantic's message. Its own text lists every problem, with links."""
    problem = err.errors()[0]
    return ".".join(str(part) for part in problem["loc"]) or "(top level)", problem["msg"]
