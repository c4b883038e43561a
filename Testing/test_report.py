"""The experiment report: exact CSV files anyone can recompute from, JSON with the same figures, a
self-contained HTML page whose words come from the data, and all-or-nothing writing.

Inputs are built by running the real ``stats.compare_conditions`` on synthetic Dice scores.
"""

from __future__ import annotations

import ast
import csv
import io
import warnings
from html import escape
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as sps

from UltrasoundRefineLib import stats
from UltrasoundRefineLib.errors import OutputError
from UltrasoundRefineLib.report import (
    COMPARISONS_CSV_COLUMNS,
    COMPARISON_COLUMNS,
    RUN_COLUMNS,
    ConditionInfo,
    ExperimentResult,
    Overlay,
    ReportInputError,
    RunRecord,
    write_report,
)
from UltrasoundRefineLib.report import html as report_html
from UltrasoundRefineLib.report import tables

REPO = Path(__file__).resolve().parents[1]
REPEATS = 5

# name -> (description, kind, mean Dice, sd Dice; sd 0 = the same masks every repeat, no training)
CONDITIONS = {
    "threshold": ("Threshold masks used as they are, no network", "automask", 0.902, 0.0),
    "fanfit": ("Geometric fan-fit masks used as they are, no network", "automask", 0.951, 0.0),
    "human_only": ("Network trained from scratch on 10 human masks", "scratch", 0.95, 0.01),
    "pretrain_threshold_finetune": (
        "Network pretrained on 200 accepted threshold masks, then fine-tuned on 10 human masks",
        "pretrain+finetune", 0.981, 0.004,
    ),
    "pretrain_fanfit_finetune": (
        "Network pretrained on 200 accepted fan-fit masks, then fine-tuned on 10 human masks",
        "pretrain+finetune", 0.980, 0.005,
    ),
}
BASELINE = "threshold"
EXTRA = [("pretrain_threshold_finetune", "pretrain_fanfit_finetune"), ("fanfit", "threshold")]


def _history(rng, stages):
    out = []
    for stage, epochs, start, end in stages:
        for ep in range(1, epochs + 1):
            f = ep / epochs
            out.append({
                "stage": stage, "epoch": ep,
                "loss": float(0.6 * (1 - f) + 0.05 + rng.normal(0, 0.01)),
                "val_dice": float(start + (end - start) * (1 - math.exp(-4 * f)) + rng.normal(0, 0.003)),
            })
    return out


def make_runs(seed=7, conditions=CONDITIONS, repeats=REPEATS):
    rng = np.random.default_rng(seed)
    runs = []
    for name, (_, kind, mean, sd) in conditions.items():
        for rep in range(repeats):
            dice = float(np.clip(mean + rng.normal(0, sd), 0, 1)) if sd else mean
            if kind == "pretrain+finetune":
                hist = _history(rng, [("pretrain", 8, 0.6, 0.93), ("finetune", 6, 0.93, dice)])
            elif kind == "scratch":
                hist = _history(rng, [("scratch", 12, 0.5, dice)])
            else:
                hist = []
            runs.append(RunRecord(
                condition=name, repeat=rep, seed=1000 + rep, dice=dice, iou=dice / (2 - dice),
                accuracy=float(1 - (1 - dice) * 0.4), hd95=float(40 * (1 - dice) + rng.uniform(0, 1)) if sd else 4.1,
                seconds=float(rng.uniform(20, 60)) if kind != "automask" else 0.2,
                history=hist, per_loop={f"loop{k:02x}": {"dice": dice} for k in range(2)},
            ))
    return runs


def _fan(h, w, cx, apex, r, half_angle):
    yy, xx = np.mgrid[:h, :w]
    ang = np.arctan2(xx - cx, yy - apex)
    dist = np.hypot(xx - cx, yy - apex)
    return (dist < r) & (np.abs(ang) < half_angle) & (yy >= apex)


def make_overlays():
    out = []
    for i, (cond, r) in enumerate([("threshold", 100), ("pretrain_threshold_finetune", 108)]):
        truth = _fan(120, 160, 80, 10, 108, 0.7)
        mask = _fan(120, 160, 80, 10, r, 0.7 if i else 0.6)
        rng = np.random.default_rng(i)
        frame = (rng.uniform(0, 60, truth.shape) * truth + 5).astype(np.uint8)
        frame[2:8, 4:60] = 220  # burned-in text bar outside the region
        dice = 2 * (mask & truth).sum() / (mask.sum() + truth.sum())
        out.append(Overlay(condition=cond, stem=f"a1b2c3d{i}", frame=frame, mask=mask, truth=truth, dice=float(dice)))
    return out


def make_result(runs=None, paired=False, conditions=CONDITIONS, extra=EXTRA, baseline=BASELINE, **kw):
    runs = runs if runs is not None else make_runs(conditions=conditions)
    by_condition = {n: [r.dice for r in sorted(runs, key=lambda r: r.repeat) if r.condition == n] for n in conditions}
    rows = stats.compare_conditions(by_condition, baseline, paired=paired, alpha=0.05, pairs=extra)
    args = dict(
        name="Phantom demo: does pretraining on cheap masks help?",
        conditions=[ConditionInfo(n, d, k) for n, (d, k, *_ ) in conditions.items()],
        baseline=baseline, alpha=0.05, repeats=REPEATS, paired=paired,
        varied=["network initialisation", "data order", "augmentation", "which human masks are drawn"],
        fixed=["the 50 test loops", "the 200 accepted threshold masks"],
        runs=runs, comparisons=rows, overlays=[], machine={"device": "cpu", "cores": 2},
        notes=["synthetic figures for the test suite"], extra_comparisons=list(extra),
    )
    args.update(kw)
    return ExperimentResult(**args)


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    result = make_result(overlays=make_overlays())
    out = tmp_path_factory.mktemp("report")
    paths = write_report(result, out)
    return result, paths


def _read_csv(path):
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    return rows[0], rows[1:]


def _same(x, y):
    return (math.isnan(x) and math.isnan(y)) if isinstance(x, float) and math.isnan(x) else x == y


# ----------------------------------------------------------------------------- CSV files


def test_files_written(written):
    result, paths = written
    assert set(paths) == {"html", "json", "runs", "comparisons", "per_loop"}
    assert {p.name for p in paths.values()} == {"report.html", "report.json", "runs.csv", "comparisons.csv",
                                                "per_loop.csv"}
    assert all(p.is_file() for p in paths.values())
    # nothing temporary left behind
    assert sorted(x.name for x in paths["html"].parent.iterdir()) == sorted(p.name for p in paths.values())


def test_runs_csv_columns_rows_and_exact_values(written):
    result, paths = written
    header, rows = _read_csv(paths["runs"])
    assert header == ["condition", "repeat", "seed", "dice", "iou", "accuracy", "hd95", "seconds"]
    assert tuple(header) == RUN_COLUMNS
    assert len(rows) == len(result.runs) == len(CONDITIONS) * REPEATS
    by_key = {(r.condition, r.repeat): r for r in result.runs}
    for row in rows:
        rec = by_key[(row[0], int(row[1]))]
        assert int(row[2]) == rec.seed
        for col, cell in zip(header[3:], row[3:]):
            assert float(cell) == getattr(rec, col), (col, cell)  # exact, not approx


def test_runs_csv_round_trips_awkward_floats(tmp_path):
    runs = make_runs()
    runs[0].dice = 0.1 + 0.2  # 0.30000000000000004
    runs[1].iou = np.float32(0.7)  # a float32 from a tensor
    runs[2].hd95 = math.inf  # one mask empty
    runs[3].seconds = 1e-300
    text = tables.runs_csv(make_result(runs=runs))
    rows = list(csv.DictReader(text.splitlines()))
    assert float(rows[0]["dice"]) == 0.1 + 0.2
    assert float(rows[1]["iou"]) == float(np.float32(0.7))
    assert float(rows[2]["hd95"]) == math.inf
    assert float(rows[3]["seconds"]) == 1e-300


def test_comparisons_csv_matches_the_rows(written):
    """One row per test the report shows: each comparison's primary test, then each of its checks."""
    result, paths = written
    header, rows = _read_csv(paths["comparisons"])
    assert header == ["a", "b", "test", "statistic", "p", "p_holm", "effect_size", "n_a", "n_b",
                      "role", "data", "metric", "note"]
    assert tuple(header) == COMPARISONS_CSV_COLUMNS and tuple(header[:9]) == COMPARISON_COLUMNS
    assert len(result.comparisons) == len(CONDITIONS) - 1 + 1  # fanfit-threshold asked twice
    expected = [x for row in result.comparisons
                for x in [(row, "primary", row.primary), *((row, "check", c) for c in row.checks.values())]]
    assert len(rows) == len(expected)
    for cells, (row, role, c) in zip(rows, expected):
        d = dict(zip(header, cells))
        assert (d["a"], d["b"], d["test"], d["role"]) == (row.a, row.b, c.test, role)
        assert (d["data"], d["metric"], d["note"]) == ("runs.csv", result.metric, c.note)
        assert _same(float(d["p"]), c.pvalue)
        assert d["p_holm"] == "" if role == "check" else _same(float(d["p_holm"]), row.p_holm)
        assert _same(float(d["statistic"]), c.statistic)
        assert _same(float(d["effect_size"]), c.effect_size)
        assert (int(d["n_a"]), int(d["n_b"])) == (c.n_a, c.n_b)


def test_anyone_can_recompute_p_from_runs_csv(written):
    """The promise of the CSV files: scipy on runs.csv gives comparisons.csv's p, to the last bit."""
    _, paths = written
    _, runs = _read_csv(paths["runs"])
    score = lambda c: [float(r[3]) for r in runs if r[0] == c]  # noqa: E731
    _, comps = _read_csv(paths["comparisons"])
    checked = 0
    for a, b, test, statistic, p, _p_holm, _effect, _na, _nb, role, *_ in comps:
        if role != "primary":
            continue  # the checks: Testing/test_report_recompute.py
        assert test == "student"
        if math.isnan(float(p)):
            continue  # no spread at all: not testable, shown as such
        with warnings.catch_warnings():  # the baseline has no spread: scipy warns, the result stands
            warnings.simplefilter("ignore", RuntimeWarning)
            res = sps.ttest_ind(score(a), score(b))
        assert float(p) == pytest.approx(float(res.pvalue), rel=1e-12, abs=0)
        assert float(statistic) == pytest.approx(float(res.statistic), rel=1e-12)
        checked += 1
    assert checked >= 4


def test_paired_experiment_recomputes_with_ttest_rel():
    result = make_result(paired=True)
    runs = list(csv.DictReader(tables.runs_csv(result).splitlines()))
    comps = list(csv.DictReader(tables.comparisons_csv(result).splitlines()))

    def score(c):
        rows = sorted((r for r in runs if r["condition"] == c), key=lambda r: int(r["repeat"]))
        return [float(r["dice"]) for r in rows]

    for row in comps:
        if row["p"] == "nan" or row["role"] != "primary":
            continue
        assert row["test"] == "paired"
        assert float(row["p"]) == pytest.approx(sps.ttest_rel(score(row["a"]), score(row["b"])).pvalue, rel=1e-12)


# ----------------------------------------------------------------------------- JSON


def test_report_json_holds_the_same_figures(written):
    result, paths = written
    doc = json.loads(paths["json"].read_text(encoding="utf-8"))
    assert doc["baseline"] == BASELINE and doc["metric"] == "dice" and doc["repeats"] == REPEATS
    assert doc["varied"] == result.varied and doc["fixed"] == result.fixed
    assert len(doc["runs"]) == len(result.runs)
    for got, rec in zip(sorted(doc["runs"], key=lambda r: (r["condition"], r["repeat"])),
                        sorted(result.runs, key=lambda r: (r.condition, r.repeat))):
        assert got["dice"] == rec.dice and got["seed"] == rec.seed and got["history"] == rec.history
    for got, row in zip(doc["comparisons"], result.comparisons):
        assert (got["a"], got["b"]) == (row.a, row.b)
        for key, value in (("p", row.p), ("p_holm", row.p_holm), ("effect_size", row.effect_size),
                           ("ci_low", row.primary.ci_low), ("ci_high", row.primary.ci_high)):
            assert got[key] == (value if math.isfinite(value) else None), key
        assert got["significant"] == row.significant and got["n_for_power"] == row.n_for_power
        assert set(got["checks"]) == set(row.checks)
    conds = {c["name"]: c for c in doc["conditions"]}
    for name in CONDITIONS:
        s = stats.describe(result.values(name))
        assert conds[name]["summary"]["dice"]["mean"] == s.mean
        assert conds[name]["summary"]["dice"]["n"] == REPEATS
    assert doc["headline"].startswith("“Network pretrained on 200 accepted threshold masks")
    assert "frame" not in json.dumps(doc["overlays"])  # only stems and numbers


# ----------------------------------------------------------------------------- HTML


def test_html_is_self_contained(written):
    _, paths = written
    page = paths["html"].read_text(encoding="utf-8")
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page, re.I)
    assert "http://" not in page and "https://" not in page
    assert "<script" not in page.lower() and "<link" not in page.lower() and "@import" not in page
    imgs = re.findall(r"<img[^>]*\ssrc=\"([^\"]*)\"", page)
    assert len(imgs) == 4  # Dice, other metrics, training curves, overlays
    assert all(src.startswith("data:image/png;base64,") for src in imgs)
    hrefs = re.findall(r"href='([^']*)'", page)
    assert set(hrefs) == {"report.json", "runs.csv", "comparisons.csv", "per_loop.csv"}


def test_html_headline_says_what_was_found(written):
    result, paths = written
    page = paths["html"].read_text(encoding="utf-8")
    best = next(r for r in result.comparisons if r.a == "pretrain_threshold_finetune" and r.b == BASELINE)
    s = stats.describe(result.values("pretrain_threshold_finetune"))
    assert best.significant
    headline = page.split("<div class='headline'>")[1].split("</div>")[0]
    expected = (
        f"(pretrain_threshold_finetune) reaches Dice {s.mean:.3f} ± {s.sd:.3f} (mean ± SD over 5 runs each), "
        f"against 0.902 ± 0 for the baseline, “Threshold masks used as they are, no network” (threshold).</strong>"
    )
    assert expected in headline
    d = best.primary
    assert f"That is {d.difference:.3f} higher (better; 95% confidence interval of the difference " \
           f"+{d.ci_low:.3f} to +{d.ci_high:.3f}), and the difference is significant" in headline
    assert "the difference is significant (Student&#x27;s t-test, p " in headline
    assert "Holm-corrected p " in headline and "Hedges&#x27; g = " in headline
    # the asked comparison of the two pretraining sources, with its p-value whatever it is
    asked = next(r for r in result.comparisons if r.a == "pretrain_threshold_finetune" and r.b == "pretrain_fanfit_finetune")
    assert not asked.significant
    assert "not significant" in headline
    from UltrasoundRefineLib.report.text import fmt_p
    assert f"p = {fmt_p(asked.p)}" in headline
    # what Dice and the p-value mean, in one sentence each
    assert "Dice measures how well a predicted mask overlaps the true image region" in page
    assert "The p-value is the chance of seeing a difference at least this large" in page


def test_html_table_has_a_row_per_condition_with_verdicts(written):
    result, paths = written
    page = paths["html"].read_text(encoding="utf-8")
    main = page.split("<h2>Every condition against the baseline</h2>")[1].split("<h2>")[0]
    rows = re.findall(r"<tr[ >].*?</tr>", main, re.S)
    assert len(rows) == 1 + len(CONDITIONS)  # header + one per condition
    for name, (desc, *_rest) in CONDITIONS.items():
        row = next(r for r in rows if f"<strong>{name}</strong>" in r)
        assert desc in row
        if name == BASELINE:
            assert "(baseline)" in row
            continue
        cmp_row = next(c for c in result.comparisons if c.a == name and c.b == BASELINE)
        s = stats.describe(result.values(name))
        assert f">{s.mean:.3f}<" in row
        from UltrasoundRefineLib.report.text import fmt_p, verdict
        assert f">{escape(fmt_p(cmp_row.p))}<" in row and f">{escape(fmt_p(cmp_row.p_holm))}<" in row
        assert f">{verdict(cmp_row)}<" in row
    assert "Effect size (Hedges&#x27; g)" in main and "Runs for 80% power" in main
    other = page.split("<h2>Other comparisons</h2>")[1].split("<h2>")[0]
    assert "pretrain_fanfit_finetune" in other and ">not significant<" in other
    assert "Mann-Whitney U test (check)" in page and "Welch&#x27;s t-test (check)" in page
    assert "network initialisation" in page and "the 50 test loops" in page


def test_untestable_comparison_says_so_with_the_note(written):
    """Two conditions without any spread (masks used as they are): p is nan, the page says why."""
    result, paths = written
    row = next(r for r in result.comparisons if r.a == "fanfit" and r.b == BASELINE)
    assert math.isnan(row.p) and row.primary.note
    page = paths["html"].read_text(encoding="utf-8")
    main = page.split("<h2>Every condition against the baseline</h2>")[1].split("<h2>")[0]
    fan_row = next(r for r in re.findall(r"<tr[ >].*?</tr>", main, re.S) if "<strong>fanfit</strong>" in r)
    assert ">not testable<" in fan_row and ">n/a<" in fan_row
    assert "not testable (every run of both conditions scored the same" in page


def test_headline_follows_the_data_when_nothing_beats_the_baseline():
    conds = {
        "threshold": ("Threshold masks", "automask", 0.95, 0.01),
        "worse": ("A worse recipe", "scratch", 0.949, 0.01),
    }
    result = make_result(conditions=conds, extra=[])
    sentences = report_html.headline_sentences(result)
    assert len(sentences) == 1
    assert "“A worse recipe” (worse) reaches Dice" in sentences[0] and "for the baseline, “Threshold masks”" in sentences[0]
    assert "higher (better" in sentences[0] or "No condition scored better" in sentences[0]
    assert "the difference is not significant (Student's t-test, p = " in sentences[0]
    assert "Holm" not in sentences[0]  # one comparison: nothing to correct

    conds["worse"] = ("A worse recipe", "scratch", 0.80, 0.01)
    sentences = report_html.headline_sentences(make_result(conditions=conds, extra=[]))
    assert sentences[0].startswith("No condition scored better than the baseline on average. The best of them, ")
    assert "lower (worse; 95% confidence interval" in sentences[0] and "the difference is significant" in sentences[0]


def test_text_is_escaped(tmp_path):
    conds = dict(CONDITIONS)
    conds["human_only"] = ("<script>alert('x')</script> & more", "scratch", 0.95, 0.01)
    result = make_result(conditions=conds, notes=["<b>note</b>"], machine={"<gpu>": "a&b"})
    page = report_html.render(result, {}, {"v": "<1>"}, "now", {"runs": "runs.csv"})
    assert "<script>" not in page and "<b>note</b>" not in page and "<gpu>" not in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; more" in page


# ----------------------------------------------------------------------------- writing


def test_unwritable_folder_raises_output_error_naming_it(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    target = blocker / "report"
    with pytest.raises(OutputError) as info:
        write_report(make_result(), target)
    assert str(target) in str(info.value)


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root may write anywhere")
def test_read_only_folder_raises_output_error(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with pytest.raises(OutputError) as info:
            write_report(make_result(), ro)
        assert str(ro) in str(info.value)
    finally:
        ro.chmod(0o700)


def test_existing_report_replaced_only_by_a_complete_one(tmp_path, monkeypatch):
    out = tmp_path / "report"
    out.mkdir()
    old = {n: f"old {n}\n" for n in ("report.html", "report.json", "runs.csv", "comparisons.csv", "per_loop.csv")}
    for n, t in old.items():
        (out / n).write_text(t)

    def snapshot():
        return {p.name: p.read_text() for p in out.iterdir()}

    # the disk fails while the third file is being written: nothing is replaced, nothing left over
    real_fsync, calls = os.fsync, []

    def failing_fsync(fd):
        calls.append(fd)
        if len(calls) == 3:
            raise OSError(28, "No space left on device")
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(OutputError) as info:
        write_report(make_result(), out)
    assert str(out) in str(info.value) and "No space left" in str(info.value)
    assert snapshot() == old
    monkeypatch.undo()

    # bad input is refused before anything is touched
    bad = make_result()
    bad.baseline = "nope"
    with pytest.raises(ReportInputError, match="baseline condition 'nope'"):
        write_report(bad, out)
    assert snapshot() == old

    # a complete report replaces the old one
    paths = write_report(make_result(), out)
    assert set(snapshot()) == set(old)
    assert paths["runs"].read_text().startswith("condition,repeat,seed,dice,iou,accuracy,hd95,seconds\n")
    assert oct(paths["html"].stat().st_mode & 0o777) == "0o644"


# ----------------------------------------------------------------------------- hygiene


def test_importing_the_report_does_not_import_matplotlib_or_torch():
    code = (
        "import sys, UltrasoundRefineLib.report as r; "
        "print('matplotlib' in sys.modules, 'torch' in sys.modules)"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert res.stdout.split() == ["False", "False"]


def test_metric_names_match_the_metrics_module():
    tree = ast.parse((REPO / "UltrasoundRefineLib" / "metrics.py").read_text())
    value = next(
        ast.literal_eval(n.value) for n in tree.body
        if isinstance(n, ast.Assign) and any(getattr(t, "id", "") == "METRIC_NAMES" for t in n.targets)
    )
    from UltrasoundRefineLib.report.model import METRIC_NAMES
    assert tuple(value) == METRIC_NAMES


def test_sparse_result_still_reads(tmp_path):
    """No training history, no overlays but one RGB frame, a missing repeat, an infinite hd95, a
    paired design and an asked pair that was never computed: the page says so instead of failing."""
    conds = {"threshold": CONDITIONS["threshold"], "human_only": CONDITIONS["human_only"]}
    runs = make_runs(conditions=conds)
    for r in runs:
        r.history = []
    runs[-1].hd95 = math.inf
    runs = runs[:-2] + runs[-1:]  # human_only lost a repeat
    with pytest.raises(stats.StatsInputError):  # paired needs equal counts: the runner must drop the pair
        make_result(runs=runs, conditions=conds, extra=[], paired=True)
    result = make_result(runs=runs, conditions=conds, extra=[])
    result.extra_comparisons = [("human_only", "nowhere")]
    frame = np.zeros((40, 50, 3), np.uint8)
    mask = np.ones((40, 50), bool)  # touches every edge: the outline must still be drawn
    result.overlays = [Overlay("human_only", "ffee01", frame, mask, None, None)]
    paths = write_report(result, tmp_path / "out")
    page = paths["html"].read_text(encoding="utf-8")
    assert "No training history was recorded" in page
    assert "human_only has 4 of 5 runs" in page
    assert "human_only against nowhere was asked for, but no comparison of the two was computed." in page
    assert "(1 not finite)" in page  # hd95 summary
    rows = list(csv.DictReader(paths["runs"].read_text().splitlines()))
    assert len(rows) == 9 and rows[-1]["hd95"] == "inf"
    doc = json.loads(paths["json"].read_text())
    assert doc["runs"][-1]["hd95"] is None  # JSON has no infinity: null, runs.csv keeps it
    assert len(re.findall(r"<img ", page)) == 3  # Dice, other metrics, overlay; no curves


def test_example_panels_show_the_image_region_only():
    """Burned-in text outside the region (names, IDs, dates) never reaches a report picture: the panel
    is the frame inside the true region, black elsewhere, cropped to the region and the prediction."""
    from UltrasoundRefineLib.report.plots import region_view

    frame = np.zeros((60, 80, 3), np.uint8)
    frame[2:8, 2:40] = 255  # a burned-in name in the header
    truth = np.zeros((60, 80), bool)
    truth[20:50, 20:60] = True
    frame[truth] = 90
    mask = np.zeros_like(truth)
    mask[22:55, 18:60] = True  # a prediction that strays a little past the region
    shown, m, t = region_view(Overlay("c", "s", frame, mask, truth, 0.9))
    assert shown.max() == 90 and (shown == 255).sum() == 0
    assert shown.shape[:2] == (55 + 3 - 17, 60 + 3 - 15) == m.shape == t.shape
    assert m.sum() == mask.sum() and t.sum() == truth.sum()
    # without a reference, the prediction bounds what is shown
    shown, _, t = region_view(Overlay("c", "s", frame, mask, None, None))
    assert t is None and (shown == 255).sum() == 0


def test_ocr_reads_no_burned_in_identifier_in_the_example_panels(ocr_words, burned_words, phantom_set, monkeypatch):
    """The phantom's own loops in the report's example figure: tesseract reads none of the names, IDs or
    institution burned into their headers; drawn from whole frames, as before issue 14, the same
    figure shows several of them legibly (so the OCR can see a leak at the figure's size)."""
    from PIL import Image

    from UltrasoundRefineLib.io import read_loop, read_mask
    from UltrasoundRefineLib.report import plots

    phantom = phantom_set(2, 3)
    overlays, burned = [], set()
    for path in sorted((phantom / "loops").glob("*.dcm")):
        truth = np.asarray(read_mask(phantom / "truth" / f"{path.stem}.nrrd"), bool)
        overlays.append(Overlay("fanfit", path.stem, read_loop(path).frames[0], truth, truth, 1.0))
        burned |= burned_words(phantom, path.stem)

    def read_figure() -> set[str]:
        png = plots.overlays(make_result(overlays=overlays))
        return ocr_words(np.asarray(Image.open(io.BytesIO(png)).convert("RGB")))

    assert not burned & read_figure()
    monkeypatch.setattr(plots, "region_view", lambda o: (o.frame, o.mask, o.truth))
    assert len(burned & read_figure()) >= 2
