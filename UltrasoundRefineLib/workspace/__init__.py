"""The workspace: the on-disk project shared by the Slicer panel, the CLI and training.

A folder with ``workspace.db`` (SQLite, WAL) and mask files. See :class:`Workspace`.

Producers: anything ``(loop) -> MaskSuggestion``-like (``mask``, ``quality``, optional ``uncertainty``
and ``details``) can fill a round through :meth:`Workspace.suggest`; :func:`method_producer` wraps the
auto-mask methods, and a trained model plugs in the same way.
"""

from __future__ import annotations

import functools

from UltrasoundRefineLib.workspace.errors import (
    DuplicateSuggestionError,
    MaskShapeError,
    UnknownItemError,
    WorkspaceError,
)
from UltrasoundRefineLib.workspace.human_masks import ExportReport, ImportReport, mask_stem, read_human_mask
from UltrasoundRefineLib.workspace.review import (
    CsvReport,
    SimulationReport,
    apply_decisions_csv,
    simulate_review,
)
from UltrasoundRefineLib.workspace.schema import SCHEMA_VERSION
from UltrasoundRefineLib.workspace.store import (
    DECISIONS,
    STAGES,
    AddReport,
    Example,
    Item,
    SuggestReport,
    Suggestion,
    Workspace,
)


def method_producer(method: str, **params):
    """An auto-mask method (``threshold``, ``fanfit``) as a producer ``(loop) -> MaskSuggestion``."""
    from UltrasoundRefineLib.automask import METHODS, suggest_mask

    if method not in METHODS:
        raise ValueError(f"unknown auto-mask method {method!r}; choose from {sorted(METHODS)}")
    return functools.partial(suggest_mask, method=method, **params)


__all__ = [
    "DECISIONS",
    "SCHEMA_VERSION",
    "STAGES",
    "AddReport",
    "CsvReport",
    "DuplicateSuggestionError",
    "Example",
    "ExportReport",
    "ImportReport",
    "Item",
    "MaskShapeError",
    "SimulationReport",
    "SuggestReport",
    "Suggestion",
    "UnknownItemError",
    "Workspace",
    "WorkspaceError",
    "apply_decisions_csv",
    "mask_stem",
    "method_producer",
    "read_human_mask",
    "simulate_review",
]
