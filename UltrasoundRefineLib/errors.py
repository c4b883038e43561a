"""Errors a user can act on: each names the file (or item) and what is wrong with it."""

from __future__ import annotations

from pathlib import Path


class UltrasoundRefineError(Exception):
    """Base class: the CLI prints ``str(error)`` on one line, with no traceback, and exits 2."""


class _PathError(UltrasoundRefineError):
    """An error about one file or folder: ``path`` and ``reason``; survives pickling (errors raised in a
    worker process reach the parent whole)."""

    def __init__(self, path: str | Path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")

    def __reduce__(self):
        return type(self), (self.path, self.reason)


class InputError(_PathError):
    """A file or folder we were given cannot be used."""


class OutputError(_PathError):
    """We cannot write where we were asked to write."""
