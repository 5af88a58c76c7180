"""One exception hierarchy. The CLI prints a ``MedfmError`` as one line and exits 2;
anything else is a bug (exit 1, traceback)."""

from __future__ import annotations


class MedfmError(Exception):
    """Base of every error a user can cause and fix. The message names the file and the problem."""


class InputError(MedfmError):
    """A file, folder or array the user gave cannot be used (unreadable, wrong shape, bad values)."""


class ConfigError(MedfmError):
    """A name, option or combination of options is invalid (unknown id, protocol that does not fit)."""


class MissingWeightsError(MedfmError):
    """Model weights are not available locally and cannot be fetched (offline, gated)."""


class MissingDataError(MedfmError):
    """A dataset's files are not under the data location and cannot be downloaded."""


class ChecksumError(MedfmError):
    """A file's checksum differs from the one its card declares."""


class OutputError(MedfmError):
    """An output location cannot be written (not empty without --force, not writable)."""


class IncompleteResultsError(MedfmError):
    """A run ended with fewer results than it planned (cells missing); the message names them."""


class TrainingDivergedError(MedfmError):
    """Training stopped because the loss became NaN or infinite (the message names the step)."""
