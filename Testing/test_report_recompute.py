"""Statistics anyone can recompute: every p-value of an experiment's report is a row of comparisons.csv
(the primary test and each check, and the loop-by-loop tests of conditions without spread), and scipy
on runs.csv / per_loop.csv alone gives each of them to the last bit. A comparison that cannot be tested
says why, in the CSV and in the report.

The runs here are synthetic (no training): the analysis and the report are what is under test."""

from __future__ import annotations

import csv
import html as h
import math
import re
import warnings
from html.parser import HTMLParser

import numpy as np
import pytest
from scipy import stats as sps

from UltrasoundRefineLib.experiment import spec_from_dict
from UltrasoundRefineLib.experiment.analysis import analyse
from UltrasoundRefineLib.experiment.runner import ExperimentRun

CONDITIONS = ["threshold", "fanfit", "human-only", "threshold-pretrained", "threshold-pretrained+finetuned"]
REPEATS = 4
LOOPS = [f"loop{k:02d}" for k in range(7)]


def _run(condition: str, repeat: int, per_loop_dice: np.ndarray) -> dict:
    per_loop = {s: {"dice": float(d), "iou": float(d / (2 - d)), "accuracy": float(0.5 + d / 2),
                    "hd95": float(10 * (1 - d))} for s, d in zip(LOOPS, per_loop_dice)}
    mean = {m: float(np.mean([v[m] for v in per_loop.values()])) for m in ("dice", "iou", "accuracy", "hd95")}
    return {"condition": condition, "repeat": repeat, "seed": repeat, **mean, "seconds": 1.0 + repeat,
            "history": [], "per_loop": per_loop}


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    spec = spec_from_dict({"name": "recompute", "repeats": REPEATS, "conditions": CONDITIONS,
                           "shared_pretrain": True, "baseline": "threshold"})
    rng = np.random.default_rng(4)
    fixed = {"threshold": rng.uniform(0.85, 0.95, len(LOOPS)), "fanfit": rng.uniform(0.9, 0.99, len(LOOPS)),
             "threshold-pretrained": rng.uniform(0.9, 0.97, len(LOOPS))}
    runs = []
    for r in range(REPEATS):
        for name in CONDITIONS:
            dice = fixed.get(name)
            if dice is None:  # trained per repeat: spread between repeats
                dice = np.clip(rng.uniform(0.93, 0.99, len(LOOPS)) + (0.01 if "finetuned" in name else 0.0), 0, 1)
            runs.append(_run(name, r, dice))
    out = tmp_path_factory.mktemp("report")
    result = ExperimentRun(spec=spec, runs=runs, root=out / "exp", seconds=12.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        paths = analyse(result, out / "no-workspace", out / "report")
    return paths


def _read(path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _scipy(test: str, a: list[float], b: list[float]):
    """Each test as scipy states it, independent of UltrasoundRefineLib.stats."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if test == "paired":
            return sps.ttest_rel(a, b)
        if test == "student":
            return sps.ttest_ind(a, b, equal_var=True)
        if test == "welch":
            return sps.ttest_ind(a, b, equal_var=False)
        if test == "wilcoxon":
            return sps.wilcoxon(a, b, zero_method="wilcox", correction=False, method="auto")
        if test == "mannwhitney":
            return sps.mannwhitneyu(a, b, use_continuity=True, method="auto")
    raise AssertionError(f"unknown test {test!r}")


def test_every_p_value_recomputes_from_the_csv_files(report):
    runs = _read(report["runs"])
    per_loop = _read(report["per_loop"])
    comps = _read(report["comparisons"])

    def from_runs(condition, metric):
        rows = sorted((r for r in runs if r["condition"] == condition), key=lambda r: int(r["repeat"]))
        return [float(r[metric]) for r in rows]

    def from_loops(condition, repeat, metric):
        rows = sorted((r for r in per_loop if r["condition"] == condition and int(r["repeat"]) == repeat),
                      key=lambda r: r["loop"])
        return [float(r[metric]) for r in rows]

    recomputed = 0
    for row in comps:
        if row["data"] == "runs.csv":
            a, b = from_runs(row["a"], row["metric"]), from_runs(row["b"], row["metric"])
        else:
            assert row["data"].startswith("per_loop.csv, repeat ")
            repeat = int(row["data"].rsplit(" ", 1)[1])
            a, b = from_loops(row["a"], repeat, row["metric"]), from_loops(row["b"], repeat, row["metric"])
        assert (int(row["n_a"]), int(row["n_b"])) == (len(a), len(b))
        if row["p"] == "nan":
            assert row["note"], row  # not testable: says why
            continue
        res = _scipy(row["test"], a, b)
        assert float(row["p"]) == float(res.pvalue), row
        assert float(row["statistic"]) == float(res.statistic), row
        recomputed += 1
    # 4 comparisons with the baseline x (paired + 3 checks), most testable; 2 loop-by-loop pairs x 2 tests
    assert recomputed >= 12


def test_one_row_per_test_shown(report):
    comps = _read(report["comparisons"])
    by_pair: dict[tuple, list] = {}
    for row in comps:
        by_pair.setdefault((row["a"], row["b"], row["data"]), []).append((row["test"], row["role"]))
    against_baseline = [k for k in by_pair if k[1] == "threshold" and k[2] == "runs.csv"]
    assert len(against_baseline) == len(CONDITIONS) - 1
    for key in against_baseline:
        assert sorted(by_pair[key]) == [("paired", "primary"), ("student", "check"), ("welch", "check"),
                                        ("wilcoxon", "check")], key
    loop_rows = {k: v for k, v in by_pair.items() if k[2] != "runs.csv"}
    assert {(a, b) for a, b, _ in loop_rows} == {("fanfit", "threshold"), ("threshold-pretrained", "threshold")}
    for tests in loop_rows.values():
        assert sorted(tests) == [("paired", "primary"), ("wilcoxon", "check")]
    # Holm covers the primary tests of the repeated runs only
    for row in comps:
        assert (row["p_holm"] != "") == (row["role"] == "primary" and row["data"] == "runs.csv"), row


def test_an_untestable_comparison_says_why_in_the_csv_and_the_report(report):
    comps = _read(report["comparisons"])
    row = next(r for r in comps if (r["a"], r["b"], r["test"], r["data"]) ==
               ("threshold-pretrained", "threshold", "paired", "runs.csv"))
    assert row["p"] == "nan"
    assert "one pretraining" in row["note"] and "loop by loop" in row["note"]
    html = report["html"].read_text(encoding="utf-8")
    assert h.escape(row["note"], quote=True) in html
    # the loop-by-loop p-values the report states are the CSV's
    loop = next(r for r in comps if (r["a"], r["b"], r["test"]) == ("threshold-pretrained", "threshold", "paired")
                and r["data"] != "runs.csv")
    assert f"paired t-test p = {float(loop['p']):.3g}" in html
    assert math.isfinite(float(loop["p"]))


class _Tables(HTMLParser):
    """Each table of a page as rows of cell texts (header row included)."""

    def __init__(self):
        super().__init__()
        self.tables: list[list[list[str]]] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.tables.append([])
        elif tag == "tr" and self.tables:
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None and self.tables and self.tables[-1]:
            self.tables[-1][-1].append(" ".join("".join(self._cell).split()))
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


P_HEADERS = {"p", "p (Holm)", "p vs baseline"}
P_NUMBER = r"< 0\.0001|\d+(?:\.\d+)?(?:e[-+]?\d+)?"


def _shown_p_values(page: str) -> list[str]:
    """Every p-value the page states: the cells of its p columns and each 'p = X' / 'p < X' of its text."""
    parser = _Tables()
    parser.feed(page)
    shown = []
    for table in parser.tables:
        header = table[0] if table else []
        columns = [i for i, name in enumerate(header) if name in P_HEADERS]
        shown += [row[i] for row in table[1:] for i in columns if i < len(row)]
    text = h.unescape(re.sub(r"<[^>]+>", " ", page))
    shown += re.findall(rf"\bp (?:= (?:{P_NUMBER})|< 0\.0001)", text)
    return [s.removeprefix("p ").removeprefix("= ") for s in shown]


def test_every_p_value_the_report_shows_is_in_the_csv(report):
    """Not only are the CSV's p-values right: the report shows no p-value that is not one of them."""
    comps = _read(report["comparisons"])
    values = [float(r[k]) for r in comps for k in ("p", "p_holm") if r[k] not in ("", "nan")]
    written = {f"{v:.3g}" for v in values} | ({"< 0.0001"} if any(v < 1e-4 for v in values) else set())
    # cells that are no number ("n/a", or the baseline's own row saying what it is) state no p-value
    shown = [s for s in _shown_p_values(report["html"].read_text(encoding="utf-8")) if re.fullmatch(P_NUMBER, s)]
    assert len(shown) >= 12, shown  # the tables and the sentences were read
    assert [s for s in shown if s not in written] == [], shown
