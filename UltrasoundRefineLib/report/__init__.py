"""The experiment report: self-contained HTML, JSON, and three CSV files anyone can recompute
every p-value from (runs.csv, per_loop.csv, and comparisons.csv, one row per test).

``write_report(result, out_dir)`` is the one entry point; the runner fills an
:class:`ExperimentResult`. Importing this package does not import matplotlib or torch.
"""

from UltrasoundRefineLib.stats import COMPARISON_COLUMNS

from .model import (
    METRIC_NAMES,
    PER_LOOP_COLUMNS,
    RUN_COLUMNS,
    ConditionInfo,
    ExperimentResult,
    Overlay,
    ReportInputError,
    RunRecord,
)
from .tables import COMPARISONS_CSV_COLUMNS
from .writer import FILES, render, write_report

__all__ = [
    "COMPARISONS_CSV_COLUMNS",
    "COMPARISON_COLUMNS",
    "FILES",
    "METRIC_NAMES",
    "PER_LOOP_COLUMNS",
    "RUN_COLUMNS",
    "ConditionInfo",
    "ExperimentResult",
    "Overlay",
    "ReportInputError",
    "RunRecord",
    "render",
    "write_report",
]
