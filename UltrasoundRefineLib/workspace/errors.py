"""Workspace errors a user can act on; each names the workspace (or file) and what is wrong."""

from __future__ import annotations

from UltrasoundRefineLib.errors import InputError


class WorkspaceError(InputError):
    """The workspace cannot be used as asked (missing, corrupt, newer schema, read-only, ...)."""


class UnknownItemError(WorkspaceError):
    """A decision, mask or lookup named an item (or suggestion) the workspace does not hold."""


class MaskShapeError(InputError):
    """A mask does not lie on its loop's pixel grid."""


class DuplicateSuggestionError(WorkspaceError):
    """The item already has a suggestion in that round (one mask per item per round)."""
