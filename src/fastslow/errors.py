"""User-facing errors: one line naming the problem and the fix.

The CLI prints them as ``error: <message>`` and exits with code 2, no traceback.
"""


class FastslowError(Exception):
    """A problem with what the user gave (data, config, checkpoint, profile)."""


class DataError(FastslowError):
    """The dataset cannot be read or is not valid for training/evaluation."""


class ConfigError(FastslowError):
    """A configuration file or option is invalid."""


class CheckpointError(FastslowError):
    """A checkpoint folder is missing files or holds a corrupt file."""


class ProfileError(FastslowError):
    """An energy profile is unknown or malformed."""
