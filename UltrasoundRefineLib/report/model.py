"""What an experiment hands to the report: plain records of runs, conditions, comparisons, overlays.

The experiment runner fills these; the report only reads them. Nothing here identifies a patient:
loops appear by their stem (a stable hash), frames only as pixels of the image region's overlay.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from UltrasoundRefineLib.errors import UltrasoundRefineError
from UltrasoundRefineLib.stats import ComparisonRow

#: The metrics of :mod:`UltrasoundRefineLib.metrics` (repeated here so that the report does not
#: import torch; a test keeps the two equal).
METRIC_NAMES = ("dice", "iou", "accuracy", "hd95")

#: Columns of ``runs.csv``, in order: one row per (condition, repeat).
RUN_COLUMNS = ("condition", "repeat", "seed", *METRIC_NAMES, "seconds")

#: Columns of ``per_loop.csv``: one row per (condition, repeat, test loop).
PER_LOOP_COLUMNS = ("condition", "repeat", "seed", "loop", *METRIC_NAMES)

#: Whether a larger value of the metric is better (hd95 is a distance: smaller is better).
HIGHER_IS_BETTER = {"dice": True, "iou": True, "accuracy": True, "hd95": False}

STAGES = ("pretrain", "finetune", "scratch")


class ReportInputError(UltrasoundRefineError, ValueError):
    """An experiment result the report cannot describe honestly; the message says what is wrong."""


@dataclass
class RunRecord:
    """One training run of one condition: its seed, test-set metrics and duration.

    ``history`` holds one dict per epoch, ``{"stage": "pretrain"|"finetune"|"scratch", "epoch",
    "loss", "val_dice"}``; ``per_loop`` maps a loop stem to that loop's metrics.
    """

    condition: str
    repeat: int
    seed: int
    dice: float
    iou: float
    accuracy: float
    hd95: float
    seconds: float
    history: list[dict] = field(default_factory=list)
    per_loop: dict[str, dict] = field(default_factory=dict)

    def metric(self, name: str) -> float:
        if name not in METRIC_NAMES:
            raise ReportInputError(f"unknown metric {name!r}; metrics: {', '.join(METRIC_NAMES)}")
        return float(getattr(self, name))


@dataclass
class ConditionInfo:
    """A training recipe as a clinician would describe it.

    ``description`` is plain words, e.g. "Network pretrained on 200 accepted threshold masks, then
    fine-tuned on 10 human masks"; ``kind`` is the runner's word for the recipe ("threshold",
    "pretrain+finetune", ...).
    """

    name: str
    description: str = ""
    kind: str = ""


@dataclass
class Overlay:
    """One example prediction on one frame: ``frame`` (H, W) or (H, W, 3) uint8, masks (H, W) bool."""

    condition: str
    stem: str
    frame: np.ndarray
    mask: np.ndarray
    truth: np.ndarray | None = None
    dice: float | None = None


@dataclass
class ExperimentResult:
    """Everything the report shows about one experiment.

    ``comparisons`` come from :func:`UltrasoundRefineLib.stats.compare_conditions` on ``metric``
    (Dice unless said otherwise); ``varied`` names the sources of variance that changed between
    repeats, ``fixed`` what was held the same; ``extra_comparisons`` are the ``(a, b)`` pairs that
    were asked for explicitly (beyond every condition against ``baseline``). ``loop_comparisons`` compare
    conditions without spread over repeats (deterministic ones) loop by loop instead, over the test loops
    of repeat ``loop_repeat`` (paired by loop; outside Holm's correction: they judge these loops only).
    """

    name: str
    conditions: list[ConditionInfo]
    baseline: str
    alpha: float
    repeats: int
    paired: bool
    varied: list[str]
    fixed: list[str]
    runs: list[RunRecord]
    comparisons: list[ComparisonRow]
    overlays: list[Overlay] = field(default_factory=list)
    machine: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    extra_comparisons: list[tuple[str, str]] = field(default_factory=list)
    metric: str = "dice"
    versions: dict = field(default_factory=dict)
    loop_comparisons: list[ComparisonRow] = field(default_factory=list)
    loop_repeat: int = 0

    # ------------------------------------------------------------------ derived views

    def condition_names(self) -> list[str]:
        """Conditions in the order given, then any that only appear in runs or comparisons."""
        names = [c.name for c in self.conditions]
        for n in [r.condition for r in self.runs] + [x for row in self.comparisons for x in (row.a, row.b)]:
            if n not in names:
                names.append(n)
        return names

    def info(self, name: str) -> ConditionInfo:
        for c in self.conditions:
            if c.name == name:
                return c
        return ConditionInfo(name=name)

    def runs_of(self, name: str) -> list[RunRecord]:
        return sorted((r for r in self.runs if r.condition == name), key=lambda r: (r.repeat, r.seed))

    def values(self, name: str, metric: str | None = None) -> list[float]:
        """The metric of every run of one condition, in repeat order (the order stats used)."""
        return [r.metric(metric or self.metric) for r in self.runs_of(name)]


def validate(result: ExperimentResult) -> None:
    """Refuse inconsistent input before anything is drawn or written."""
    if result.metric not in METRIC_NAMES:
        raise ReportInputError(f"metric {result.metric!r} is not one of {', '.join(METRIC_NAMES)}")
    names = [c.name for c in result.conditions]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ReportInputError(f"conditions listed twice: {', '.join(dupes)}")
    known = set(result.condition_names())
    if result.baseline not in known:
        raise ReportInputError(
            f"baseline condition {result.baseline!r} is not among the conditions: {', '.join(sorted(known))}"
        )
    if not (0.0 < float(result.alpha) < 1.0):
        raise ReportInputError(f"alpha must lie strictly between 0 and 1; got {result.alpha!r}")
    seen: set[tuple[str, int]] = set()
    for r in result.runs:
        key = (r.condition, int(r.repeat))
        if key in seen:
            raise ReportInputError(f"condition {r.condition!r}: repeat {r.repeat} recorded twice")
        seen.add(key)
        for m in (*METRIC_NAMES, "seconds"):
            v = getattr(r, m)
            try:
                float(v)
            except (TypeError, ValueError):
                raise ReportInputError(
                    f"condition {r.condition!r}, repeat {r.repeat}: {m} is not a number ({v!r})"
                ) from None
    for pair in result.extra_comparisons:
        if len(tuple(pair)) != 2:
            raise ReportInputError(f"extra comparison {pair!r} is not a pair (a, b)")
    for o in result.overlays:
        frame, mask = np.asarray(o.frame), np.asarray(o.mask)
        if frame.ndim not in (2, 3) or (frame.ndim == 3 and frame.shape[2] not in (3, 4)):
            raise ReportInputError(
                f"overlay {o.condition!r}/{o.stem!r}: frame must be (H, W) or (H, W, 3), got {frame.shape}"
            )
        for what, m in (("mask", mask), ("truth", o.truth)):
            if m is not None and np.asarray(m).shape != frame.shape[:2]:
                raise ReportInputError(
                    f"overlay {o.condition!r}/{o.stem!r}: {what} shape {np.asarray(m).shape} "
                    f"does not match the frame {frame.shape[:2]}"
                )


def is_finite(x: Any) -> bool:
    try:
        return math.isfinite(float(x))
    except (TypeError, ValueError):
        return False


def pairs_match(pair: Sequence[str], a: str, b: str) -> bool:
    return tuple(pair) in ((a, b), (b, a))
