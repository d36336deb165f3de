"""Errors a user can act on: each names the file or value and what is wrong with it."""

from __future__ import annotations


class EvalsvcError(Exception):
    """Base class; the CLI prints the message as one line and exits non-zero."""

    exit_code = 2


class InputError(EvalsvcError):
    """A file or value given by the user cannot be used."""


class CheckpointError(InputError):
    """A checkpoint file cannot be read, recognised or applied."""

    def __init__(self, path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class SuiteError(InputError):
    """A prompt-suite or sample-prompt file is malformed."""


class StoreInUseError(EvalsvcError):
    """Another process owns the store."""
