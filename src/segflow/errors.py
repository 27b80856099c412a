"""Typed errors. Every user-facing failure is one of these, with a message that names
the file or field, the bad value and what to do. The CLI prints ``str(err)`` on one line
and exits non-zero; it never shows a traceback for these."""


class SegflowError(Exception):
    """Base class for all errors meant for the user."""


class ConfigError(SegflowError, ValueError):
    """A config file, config key or command-line option is invalid."""


class DataError(SegflowError, ValueError):
    """A dataset, image or mask file is missing, unreadable or inconsistent."""


class CheckpointError(SegflowError, ValueError):
    """A checkpoint or exported model is not one, or is incompatible."""


class TrainingError(SegflowError, RuntimeError):
    """Training cannot continue (for example a NaN loss)."""


class InferenceError(SegflowError, ValueError):
    """An inference input or option is invalid (tile size, overlap, image size)."""
