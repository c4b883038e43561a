"""The figures of the report as data: per-condition summaries, the three CSV files, the JSON document.

The CSV files are the report's promise that anyone can recompute its statistics: every float is
written with ``repr`` (the shortest text that reads back to the same double), so
``float(cell) == value`` holds exactly. ``comparisons.csv`` has one row per test the report shows (the
primary test and each check of every comparison, and the loop-by-loop tests), each naming the file and
column its samples come from (``data``, ``metric``): scipy on those samples gives its p to the last bit.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
from pathlib import Path
from typing import Any

import numpy as np

from UltrasoundRefineLib.stats import COMPARISON_COLUMNS, ComparisonRow, StatsInputError, describe

from .model import METRIC_NAMES, PER_LOOP_COLUMNS, RUN_COLUMNS, ExperimentResult, is_finite, pairs_match

#: Columns of ``comparisons.csv``: those of :data:`COMPARISON_COLUMNS` (``p_holm`` only on the primary test
#: of the repeated runs, which Holm's correction covers), then what the row is: ``role`` (primary or
#: check), ``data`` (``runs.csv``, or ``per_loop.csv, repeat R``), ``metric`` (the column compared) and
#: ``note`` (why a test could not be computed).
COMPARISONS_CSV_COLUMNS = (*COMPARISON_COLUMNS, "role", "data", "metric", "note")


@dataclasses.dataclass(frozen=True)
class ConditionSummary:
    """One condition's runs on one metric. ``sd`` and ``ci95`` are nan with fewer than 2 finite runs."""

    name: str
    metric: str
    n: int
    mean: float
    sd: float
    ci95: tuple[float, float]
    n_not_finite: int = 0


def summarise(result: ExperimentResult, name: str, metric: str) -> ConditionSummary:
    values = result.values(name, metric)
    finite = [v for v in values if is_finite(v)]
    bad = len(values) - len(finite)
    if len(finite) >= 2:
        try:
            s = describe(finite, name=name)
            return ConditionSummary(name, metric, len(values), s.mean, s.sd, tuple(s.ci95), bad)
        except StatsInputError:
            pass
    mean = float(np.mean(finite)) if finite else math.nan
    if bad and not finite:
        mean = float(np.mean(values))  # e.g. inf: every run's hd95 undefined
    return ConditionSummary(name, metric, len(values), mean, math.nan, (math.nan, math.nan), bad)


def baseline_rows(result: ExperimentResult) -> dict[str, ComparisonRow]:
    """Condition name -> its comparison against the baseline."""
    return {row.a: row for row in result.comparisons if row.b == result.baseline}


def other_rows(result: ExperimentResult) -> list[ComparisonRow]:
    """Comparisons not of the form (condition, baseline): asked-for pairs first, in the order asked."""
    rows = [row for row in result.comparisons if row.b != result.baseline]

    def order(row: ComparisonRow) -> int:
        for i, pair in enumerate(result.extra_comparisons):
            if pairs_match(pair, row.a, row.b):
                return i
        return len(result.extra_comparisons)

    return sorted(rows, key=order)


def asked_rows(result: ExperimentResult) -> list[tuple[tuple[str, str], ComparisonRow | None]]:
    """Each explicitly asked pair with the comparison that answers it (None when none does)."""
    out = []
    for pair in result.extra_comparisons:
        a, b = tuple(pair)
        match = next((r for r in result.comparisons if (r.a, r.b) == (a, b)), None)
        match = match or next((r for r in result.comparisons if (r.a, r.b) == (b, a)), None)
        out.append(((a, b), match))
    return out


def n_tests(result: ExperimentResult) -> int:
    """How many comparisons Holm's correction ran over (the testable ones)."""
    return sum(1 for r in result.comparisons if is_finite(r.p))


def best_against_baseline(result: ExperimentResult) -> ComparisonRow | None:
    """The comparison of the best-scoring condition with the baseline: the headline."""
    from .model import HIGHER_IS_BETTER

    rows = baseline_rows(result)
    if not rows:
        return None
    sign = 1.0 if HIGHER_IS_BETTER.get(result.metric, True) else -1.0

    def score(row: ComparisonRow) -> float:
        m = row.primary.mean_a
        return sign * m if is_finite(m) else -math.inf

    return max(rows.values(), key=score)


# ----------------------------------------------------------------------------- CSV


def _cell(v: Any) -> str:
    """Exact text of one value: repr of floats (round-trips), plain ints and strings."""
    if isinstance(v, (bool, np.bool_)):
        return "true" if v else "false"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        return repr(float(v))
    if v is None:
        return ""
    return str(v)


def _csv(header: tuple[str, ...], rows: list[list[Any]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    for row in rows:
        w.writerow([_cell(v) for v in row])
    return buf.getvalue()


def runs_csv(result: ExperimentResult) -> str:
    """``condition,repeat,seed,dice,iou,accuracy,hd95,seconds``: one row per run."""
    rows = []
    for name in result.condition_names():
        for r in result.runs_of(name):
            rows.append(
                [r.condition, int(r.repeat), int(r.seed)]
                + [float(getattr(r, m)) for m in METRIC_NAMES]
                + [float(r.seconds)]
            )
    return _csv(RUN_COLUMNS, rows)


def test_rows(result: ExperimentResult) -> list[dict]:
    """One record per test the report shows, as :data:`COMPARISONS_CSV_COLUMNS`: each comparison of the
    repeated runs (primary, then its checks), then each loop-by-loop comparison."""
    out = []
    sources = [(row, "runs.csv", True) for row in result.comparisons]
    sources += [(row, f"per_loop.csv, repeat {result.loop_repeat}", False) for row in result.loop_comparisons]
    for row, data, holm in sources:
        for role, c in [("primary", row.primary), *(("check", check) for check in row.checks.values())]:
            out.append({
                "a": row.a, "b": row.b, "test": c.test, "statistic": c.statistic, "p": c.pvalue,
                "p_holm": row.p_holm if (holm and role == "primary") else None,
                "effect_size": c.effect_size, "n_a": c.n_a, "n_b": c.n_b,
                "role": role, "data": data, "metric": result.metric, "note": c.note,
            })
    return out


def comparisons_csv(result: ExperimentResult) -> str:
    """One row per test shown (:func:`test_rows`), in the report's order."""
    return _csv(COMPARISONS_CSV_COLUMNS, [[r[c] for c in COMPARISONS_CSV_COLUMNS] for r in test_rows(result)])


def per_loop_csv(result: ExperimentResult) -> str:
    """``condition,repeat,seed,loop,dice,iou,accuracy,hd95``: every run's score on every test loop."""
    rows = []
    for name in result.condition_names():
        for r in result.runs_of(name):
            for loop in sorted(r.per_loop):
                scores = r.per_loop[loop]
                rows.append([r.condition, int(r.repeat), int(r.seed), loop]
                            + [float(scores.get(m, math.nan)) for m in METRIC_NAMES])
    return _csv(PER_LOOP_COLUMNS, rows)


# ----------------------------------------------------------------------------- JSON


def jsonable(v: Any) -> Any:
    """Plain JSON values: numpy scalars and arrays unwrapped, non-finite floats as null."""
    if isinstance(v, dict):
        return {str(k): jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [jsonable(x) for x in v]
    if isinstance(v, np.ndarray):
        return jsonable(v.tolist())
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if isinstance(v, (int, np.integer)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        v = float(v)
        return v if math.isfinite(v) else None
    if isinstance(v, Path):
        return str(v)
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        return jsonable(dataclasses.asdict(v))
    if v is None or isinstance(v, str):
        return v
    return str(v)


def comparison_record(row: ComparisonRow) -> dict:
    d = row.to_dict()
    d["ci_method"] = row.primary.ci_method
    d["checks"] = {name: dataclasses.asdict(check) for name, check in row.checks.items()}
    return d


def report_document(result: ExperimentResult, headline: str, versions: dict, created: str, files: dict) -> dict:
    """The content of ``report.json``: the same figures as the HTML, machine-readable."""
    conditions = []
    base = baseline_rows(result)
    for name in result.condition_names():
        info = result.info(name)
        conditions.append(
            {
                "name": name,
                "description": info.description,
                "kind": info.kind,
                "is_baseline": name == result.baseline,
                "summary": {m: dataclasses.asdict(summarise(result, name, m)) for m in METRIC_NAMES},
                "against_baseline": comparison_record(base[name]) if name in base else None,
            }
        )
    doc = {
        "format": "UltrasoundRefine experiment report 1",
        "name": result.name,
        "created": created,
        "headline": headline,
        "metric": result.metric,
        "baseline": result.baseline,
        "alpha": result.alpha,
        "repeats": result.repeats,
        "paired": result.paired,
        "primary_test": "paired" if result.paired else "student",
        "correction": "holm",
        "varied": list(result.varied),
        "fixed": list(result.fixed),
        "conditions": conditions,
        "comparisons": [comparison_record(r) for r in result.comparisons],
        "loop_comparisons": [{**comparison_record(r), "data": f"per_loop.csv, repeat {result.loop_repeat}"}
                             for r in result.loop_comparisons],
        "extra_comparisons": [list(p) for p in result.extra_comparisons],
        "runs": [
            {
                **{c: getattr(r, c) for c in RUN_COLUMNS},
                "history": r.history,
                "per_loop": r.per_loop,
            }
            for name in result.condition_names()
            for r in result.runs_of(name)
        ],
        "overlays": [
            {"condition": o.condition, "stem": o.stem, "dice": o.dice} for o in result.overlays
        ],
        "machine": result.machine,
        "versions": versions,
        "notes": list(result.notes),
        "files": files,
        "null_means": "a value that is not a finite number (nan: not testable; inf: e.g. hd95 with one "
        "mask empty); runs.csv and comparisons.csv keep the exact value",
    }
    return jsonable(doc)
