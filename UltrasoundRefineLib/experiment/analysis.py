"""From finished runs to the statistics and the report: the tests, example overlays, the files."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from UltrasoundRefineLib.experiment.runner import ExperimentRun, variance_sources
from UltrasoundRefineLib.experiment.spec import REFINED

log = logging.getLogger(__name__)

N_OVERLAY_LOOPS = 3


def comparisons(result: ExperimentRun):
    """Every condition against the baseline plus the spec's pairs, Holm-corrected together.

    The repeats of every condition share seeds, human-mask draws and test loops, so the primary test
    is Student's paired t (with the unpaired Student and Welch t and Wilcoxon attached as checks). A test
    that cannot be computed because both conditions are deterministic says why in its note."""
    from UltrasoundRefineLib.stats import compare_conditions

    spec = result.spec
    rows = compare_conditions(result.values(spec.metric), spec.baseline, paired=True, alpha=spec.alpha,
                              pairs=spec.comparisons)
    return [_explain_untestable(spec, row) for row in rows]


def _no_spread_reason(spec, condition) -> str:
    if condition.kind == "automask":
        return f"{condition.name} is an auto-mask method, the same in every repeat"
    return (f"{condition.name} is one pretraining (seed {spec.base_seed}) that served every repeat "
            "(shared_pretrain), so its repeats are identical")


def _explain_untestable(spec, row):
    """Name the cause of a comparison's missing spread: two deterministic conditions."""
    import dataclasses

    a, b = spec.condition(row.a), spec.condition(row.b)
    if not (spec.is_deterministic(a) and spec.is_deterministic(b)):
        return row
    why = (f"{_no_spread_reason(spec, a)}; {_no_spread_reason(spec, b)}: the repeats cannot compare them, "
           "so they are compared loop by loop instead")

    def explained(c):
        return dataclasses.replace(c, note=f"{c.note} ({why})") if c.note else c

    return dataclasses.replace(row, primary=explained(row.primary),
                               checks={name: explained(c) for name, c in row.checks.items()})


def loop_comparisons(result: ExperimentRun, rows) -> tuple[int, list]:
    """Two deterministic conditions (e.g. threshold vs fanfit) have no spread over repeats, so the
    repeated-run test cannot judge them; their per-loop scores over the same test loops can: paired t
    over loops (Wilcoxon as the check), on the first repeat both have (their repeats are identical).
    Returns ``(repeat, rows)``; the rows are outside Holm's correction (they judge these loops only)."""
    from UltrasoundRefineLib.stats import ComparisonRow, compare

    spec = result.spec
    first = {}
    for r in sorted(result.runs, key=lambda r: r["repeat"]):
        first.setdefault(r["condition"], r)
    out = []
    repeat = min((r["repeat"] for r in first.values()), default=0)
    for row in rows:
        a, b = spec.condition(row.a), spec.condition(row.b)
        if not (spec.is_deterministic(a) and spec.is_deterministic(b)):
            continue
        ra, rb = first.get(a.name), first.get(b.name)
        if ra is None or rb is None or ra["repeat"] != repeat or rb["repeat"] != repeat:
            continue
        la, lb = ra.get("per_loop", {}), rb.get("per_loop", {})
        stems = sorted(set(la) & set(lb))
        if len(stems) < 3:
            continue
        va, vb = [la[k][spec.metric] for k in stems], [lb[k][spec.metric] for k in stems]
        t = compare(va, vb, test="paired", names=(a.name, b.name))
        w = compare(va, vb, test="wilcoxon", names=(a.name, b.name))
        out.append(ComparisonRow(a=a.name, b=b.name, primary=t, p_holm=float("nan"),
                                 significant=bool(t.pvalue < spec.alpha), alpha=spec.alpha, n_for_power=None,
                                 checks={"wilcoxon": w}))
    return repeat, out


def per_loop_notes(result: ExperimentRun, rows) -> list[str]:
    """The loop-by-loop comparisons (:func:`loop_comparisons`) in words, for the report's notes."""
    metric = result.spec.metric
    notes = []
    for row in loop_comparisons(result, rows)[1]:
        t, w = row.primary, row.checks["wilcoxon"]
        notes.append(
            f"{row.a} against {row.b} loop by loop (both are deterministic, so their repeats cannot be "
            f"compared): mean {metric} {t.mean_a:.4f} vs {t.mean_b:.4f} over the same {t.n_a} test "
            f"loops, difference {t.difference:+.4f} (95% CI {t.ci_low:+.4f} to {t.ci_high:+.4f}), paired t-test "
            f"p = {t.pvalue:.3g}, Wilcoxon p = {w.pvalue:.3g}. This judges these loops, not new data; "
            "comparisons.csv has both tests, per_loop.csv the scores.")
    return notes


def _overlays(result: ExperimentRun, workspace_path: Path) -> list:
    """A few test loops (the baseline's worst, median and best) with the baseline's and the refined
    model's masks against the reference."""
    from UltrasoundRefineLib.automask import suggest_mask
    from UltrasoundRefineLib.metrics import mask_metrics
    from UltrasoundRefineLib.report.model import Overlay
    from UltrasoundRefineLib.workspace import Workspace

    spec = result.spec
    base = spec.condition(spec.baseline)
    base_runs = [r for r in result.runs if r["condition"] == base.name]
    if not base_runs or not base_runs[0].get("per_loop"):
        return []
    per_loop = base_runs[0]["per_loop"]
    ranked = sorted(per_loop, key=lambda stem: per_loop[stem]["dice"])
    picks = [ranked[0], ranked[len(ranked) // 2], ranked[-1]][:N_OVERLAY_LOOPS]
    refined_runs = [r for r in result.runs if r["condition"] == REFINED and r.get("model_dir")]
    model = None
    if refined_runs:
        from UltrasoundRefineLib.train.model import load_model

        model = load_model(result.root / refined_runs[0]["model_dir"], device="cpu")
    overlays = []
    with Workspace.open(workspace_path, readonly=True) as ws:
        examples = {e.stem: e for e in ws.examples("test")}
        for stem in dict.fromkeys(picks):
            if stem not in examples:
                continue
            loop = examples[stem].load()
            truth = examples[stem].mask
            frame = loop.frames[0]
            producers = []
            if base.automask:
                producers.append((base.name, lambda lp: suggest_mask(lp, base.automask).mask))
            if model is not None:
                from UltrasoundRefineLib.train.model import predict_loop

                producers.append((REFINED, lambda lp: predict_loop(model, lp).mask))
            for name, produce in producers:
                mask = produce(loop)
                dice = mask_metrics(mask, truth)["dice"]
                overlays.append(Overlay(condition=name, stem=stem, frame=np.asarray(frame), mask=mask,
                                        truth=truth, dice=dice))
    return overlays


def analyse(result: ExperimentRun, workspace_path: str | Path, out_dir: str | Path,
            notes: list[str] | None = None) -> dict[str, Path]:
    """Statistics and report files for a finished experiment; returns the written paths."""
    from UltrasoundRefineLib import __version__
    from UltrasoundRefineLib.report import write_report
    from UltrasoundRefineLib.report.model import ConditionInfo, ExperimentResult, RunRecord

    spec = result.spec
    rows = comparisons(result)
    loop_repeat, by_loop = loop_comparisons(result, rows)
    varied, fixed = variance_sources(spec)
    try:
        overlays = _overlays(result, Path(workspace_path))
    except Exception as e:  # the figures are a courtesy: never lose the statistics over them
        log.warning("example overlays skipped: %s", e)
        overlays = []
    records = [RunRecord(**{k: r[k] for k in ("condition", "repeat", "seed", "dice", "iou", "accuracy",
                                                 "hd95", "seconds")},
                         history=r.get("history", []), per_loop=r.get("per_loop", {})) for r in result.runs]
    report = ExperimentResult(
        name=spec.name,
        conditions=[ConditionInfo(c.name, c.description, c.kind) for c in spec.conditions],
        baseline=spec.baseline,
        alpha=spec.alpha,
        repeats=spec.repeats,
        paired=True,
        varied=varied,
        fixed=fixed,
        runs=records,
        comparisons=rows,
        overlays=overlays,
        machine=result.machine,
        notes=[*(notes or []), *per_loop_notes(result, rows), f"Runs took {result.seconds:.0f} s in all ({result.skipped} were already done "
                               "and were not run again)."],
        extra_comparisons=list(spec.comparisons),
        metric=spec.metric,
        versions={"UltrasoundRefine": __version__},
        loop_comparisons=by_loop,
        loop_repeat=loop_repeat,
    )
    return write_report(report, out_dir)
