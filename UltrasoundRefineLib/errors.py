"""Errors a user can act on: each names the file (or item) and what is wrong with it."""

from __future__ import annotations

from pathlib import Path


class UltrasoundRefineError(Exception):
    """Base class: the CLI prints ``str(error)`` on one line, with no traceback, and exits 2."""


class InputError(UltrasoundRefineError):
    """A file or folder we were given cannot be used."""

    def __init__(self, path: str | Path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class OutputError(UltrasoundRefineError):
    """We cannot write where we were asked to write."""

    def __init__(self, path: str | Path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")
