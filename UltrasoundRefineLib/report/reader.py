"""An experiment's report (``report.json``) or ``comparisons.csv`` as one table to show: the Slicer
panel's Statistics section reads it with this."""

from __future__ import annotations

import csv
import json
import pathlib

from UltrasoundRefineLib.errors import InputError


def read_report_table(path) -> tuple:
    """``(headers, rows)`` of an experiment's ``comparisons.csv`` or report JSON, and a summary line.

    A JSON report may be a list of comparison records or an object holding one under "comparisons"
    (else its top-level values are shown as name/value rows). Returns ``(headers, rows, summary)``.
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise InputError(path, "report file not found")
    if path.suffix.lower() == ".csv":
        with open(path, newline="", encoding="utf-8") as f:
            table = list(csv.reader(f))
        if not table:
            raise InputError(path, "empty file")
        return table[0], table[1:], "{n} comparisons".format(n=len(table) - 1)
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as e:
        raise InputError(path, f"not valid JSON ({e})") from None
    records, summary = None, ""
    if isinstance(report, list):
        records = report
    elif isinstance(report, dict):
        for key in ("comparisons", "results", "rows"):
            if isinstance(report.get(key), list):
                records = report[key]
                break
        # an UltrasoundRefine experiment report says in one sentence what it found
        summary = str(report["headline"]) if report.get("headline") else " · ".join(
            f"{k}: {v}" for k, v in report.items() if isinstance(v, (str, int, float, bool))
        )[:500]
    if records is not None and all(isinstance(r, dict) for r in records):
        headers = []
        for r in records:
            headers += [k for k in r if k not in headers]
        # nested records (e.g. the assumption checks of each comparison) do not fit a cell
        headers = [h for h in headers if not all(isinstance(r.get(h), dict) for r in records if h in r)]
        rows = [[_cell(r.get(h)) for h in headers] for r in records]
        return headers, rows, summary or "{n} comparisons".format(n=len(rows))
    if isinstance(report, dict):
        return ["name", "value"], [[str(k), _cell(v)] for k, v in report.items()], summary
    raise InputError(path, "no table found in the report")


def cell_value(text: str):
    """A table cell as the panel shows it: a number as a float (it then sorts numerically and shows
    with sensible precision), anything else as its text."""
    try:
        return float(text)
    except (TypeError, ValueError):
        return text


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return str(value)
