"""The experiment report: self-contained HTML, JSON, and two CSV files anyone can recompute from.

``write_report(result, out_dir)`` is the one entry point; the runner fills an
:class:`ExperimentResult`. Importing this package does not import matplotlib or torch.
"""

from UltrasoundRefineLib.stats import COMPARISON_COLUMNS

from .model import (
    METRIC_NAMES,
    RUN_COLUMNS,
    ConditionInfo,
    ExperimentResult,
    Overlay,
    ReportInputError,
    RunRecord,
)
from .writer import FILES, render, write_report

__all__ = [
    "COMPARISON_COLUMNS",
    "FILES",
    "METRIC_NAMES",
    "RUN_COLUMNS",
    "ConditionInfo",
    "ExperimentResult",
    "Overlay",
    "ReportInputError",
    "RunRecord",
    "render",
    "write_report",
]
