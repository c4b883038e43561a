"""The report as one self-contained HTML page: inline CSS, figures as data: URIs, no scripts.

Every piece of text that comes from the experiment passes through ``html.escape``; links point
only at the report's own files next to it.
"""

from __future__ import annotations

import base64
from html import escape
from typing import Iterable

from UltrasoundRefineLib.stats import ComparisonRow

from . import text as T
from .model import METRIC_NAMES, ExperimentResult, is_finite
from .tables import ConditionSummary, asked_rows, baseline_rows, other_rows, summarise

CSS = """
body{font-family:-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;color:#1b1b1b;max-width:1180px;
margin:0 auto;padding:1.2em 1.5em 3em;line-height:1.45;font-size:15px}
h1{font-size:1.55em;margin:.2em 0 .1em}h2{font-size:1.2em;margin-top:1.8em;border-bottom:1px solid #ddd;
padding-bottom:.2em}h3{font-size:1.02em;margin-top:1.2em}
.sub{color:#555;margin:0 0 1em}
.headline{background:#f3f7fb;border-left:5px solid #0072B2;padding:.8em 1.1em;margin:1em 0;font-size:1.08em}
.headline p{margin:.35em 0}.explain{color:#333;font-size:.95em}
table{border-collapse:collapse;margin:.6em 0;font-size:.9em;width:100%}
th,td{border-bottom:1px solid #e2e2e2;padding:.35em .5em;text-align:left;vertical-align:top}
th{background:#fafafa;font-weight:600}td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
td.num{white-space:nowrap}td.sig,td.nsig,td.nt{white-space:nowrap}
tr.baseline td{background:#f6f6f6}
.desc{color:#555;font-size:.88em;display:block;max-width:28em}
.sig{color:#0a6b2c;font-weight:600}.nsig{color:#8a5a00;font-weight:600}.nt{color:#8a1c1c;font-weight:600}
img{max-width:100%;height:auto;display:block;margin:.5em 0}
details{margin:.8em 0}summary{cursor:pointer;font-weight:600}
code,pre{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.88em}
pre{background:#f6f6f6;padding:.7em;overflow-x:auto}
.small{font-size:.85em;color:#555}
ul{margin:.3em 0 .6em 1.2em;padding:0}
.scroll{overflow-x:auto}
"""


def e(value) -> str:
    return escape(str(value), quote=True)


def _img(png: bytes | None, alt: str) -> str:
    if not png:
        return ""
    data = base64.b64encode(png).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{e(alt)}">'


def _verdict_cell(row: ComparisonRow) -> str:
    v = T.verdict(row)
    cls = {"significant": "sig", "not significant": "nsig"}.get(v, "nt")
    title = f' title="{e(row.primary.note)}"' if row.primary.note else ""
    return f'<td class="{cls}"{title}>{e(v)}</td>'


def _ci(row: ComparisonRow, metric: str) -> str:
    c = row.primary
    if not (is_finite(c.ci_low) and is_finite(c.ci_high)):
        return "n/a"
    return f"{T.fmt_signed(c.difference, metric)}\n[{T.fmt_signed(c.ci_low, metric)}, {T.fmt_signed(c.ci_high, metric)}]"


def _br(text: str) -> str:
    return "<br>".join(e(line) for line in text.split("\n"))


def _power(row: ComparisonRow) -> str:
    if row.n_for_power is None:
        return "—"
    return str(row.n_for_power)


def _effect(row: ComparisonRow) -> str:
    c = row.primary
    if not is_finite(c.effect_size):
        return "n/a"
    return f"{T.EFFECT_SYMBOLS.get(c.effect_size_name, '')} = {T.fmt_effect(c.effect_size)}".strip(" =")


def _condition_cell(result: ExperimentResult, name: str) -> str:
    desc = result.info(name).description.strip()
    tag = " <em>(baseline)</em>" if name == result.baseline else ""
    d = f'<span class="desc">{e(desc)}</span>' if desc else ""
    return f"<td><strong>{e(name)}</strong>{tag}{d}</td>"


def _mean_sd_cells(s: ConditionSummary) -> str:
    sd = T.fmt_spread(s.sd, s.metric) if is_finite(s.sd) else "n/a"
    return (
        f'<td class="num">{e(T.fmt_value(s.mean, s.metric))}</td><td class="num">{e(sd)}</td>'
        f'<td class="num">{s.n}</td>'
    )


def _effect_header(rows: Iterable[ComparisonRow]) -> str:
    names = {r.primary.effect_size_name for r in rows}
    if len(names) == 1:
        return f"Effect size ({e(T.effect_name(names.pop()))})"
    return "Effect size"


def main_table(result: ExperimentResult) -> str:
    """The method's table: every condition against the baseline."""
    m = T.metric_label(result.metric)
    base = baseline_rows(result)
    head = (
        f"<tr><th>Condition</th><th class='num'>Mean {e(m)}</th><th class='num'>SD</th><th class='num'>Runs (n)</th>"
        f"<th class='num'>p vs baseline</th><th class='num'>p (Holm)</th><th class='num'>{_effect_header(base.values())}</th>"
        f"<th class='num'>Difference vs baseline [95% CI]</th><th>Verdict</th>"
        f"<th class='num'>Runs for 80% power</th></tr>"
    )
    body = []
    for name in result.condition_names():
        s = summarise(result, name, result.metric)
        if name == result.baseline:
            body.append(
                f"<tr class='baseline'>{_condition_cell(result, name)}{_mean_sd_cells(s)}"
                f"<td colspan='6' class='small'>the reference every other condition is compared with</td></tr>"
            )
            continue
        row = base.get(name)
        if row is None:
            body.append(
                f"<tr>{_condition_cell(result, name)}{_mean_sd_cells(s)}"
                f"<td colspan='6'>not compared with the baseline</td></tr>"
            )
            continue
        body.append(
            f"<tr>{_condition_cell(result, name)}{_mean_sd_cells(s)}"
            f"<td class='num'>{e(T.fmt_p(row.p))}</td><td class='num'>{e(T.fmt_p(row.p_holm))}</td>"
            f"<td class='num'>{e(_effect(row))}</td><td class='num'>{_br(_ci(row, result.metric))}</td>"
            f"{_verdict_cell(row)}<td class='num'>{e(_power(row))}</td></tr>"
        )
    return f"<div class='scroll'><table>{head}{''.join(body)}</table></div>"


def other_table(result: ExperimentResult) -> str:
    rows = other_rows(result)
    if not rows:
        return ""
    m = T.metric_label(result.metric)
    asked = {tuple(p) for p in result.extra_comparisons} | {tuple(p)[::-1] for p in result.extra_comparisons}
    head = (
        f"<tr><th>Condition A</th><th>Condition B</th><th class='num'>Mean {e(m)} A</th>"
        f"<th class='num'>Mean {e(m)} B</th><th class='num'>A − B [95% CI]</th><th>Test</th>"
        f"<th class='num'>p</th><th class='num'>p (Holm)</th><th class='num'>{_effect_header(rows)}</th>"
        f"<th>Verdict</th><th class='num'>Runs for 80% power</th></tr>"
    )
    body = []
    for row in rows:
        c = row.primary
        star = " <span class='small'>(asked)</span>" if (row.a, row.b) in asked else ""
        body.append(
            f"<tr>{_condition_cell(result, row.a)}{_condition_cell(result, row.b)}"
            f"<td class='num'>{e(T.fmt_value(c.mean_a, result.metric))}</td>"
            f"<td class='num'>{e(T.fmt_value(c.mean_b, result.metric))}</td>"
            f"<td class='num'>{_br(_ci(row, result.metric))}</td><td>{e(T.describe_test(c.test))}{star}</td>"
            f"<td class='num'>{e(T.fmt_p(row.p))}</td><td class='num'>{e(T.fmt_p(row.p_holm))}</td>"
            f"<td class='num'>{e(_effect(row))}</td>{_verdict_cell(row)}<td class='num'>{e(_power(row))}</td></tr>"
        )
    return f"<div class='scroll'><table>{head}{''.join(body)}</table></div>"


def checks_table(result: ExperimentResult) -> str:
    """Every comparison with the primary test and its checks, all figures."""
    head = (
        "<tr><th>A vs B</th><th>Test</th><th class='num'>Statistic</th><th class='num'>df</th>"
        "<th class='num'>p</th><th class='num'>95% CI of A − B</th><th class='num'>Effect size</th>"
        "<th class='num'>Hodges-Lehmann shift</th><th>Note</th></tr>"
    )
    body = []
    for row in result.comparisons:
        tests = [("primary", row.primary)] + list(row.checks.items())
        for i, (role, c) in enumerate(tests):
            who = f"{row.a} vs {row.b}" if i == 0 else ""
            name = T.describe_test(c.test) + (" (primary)" if role == "primary" else " (check)")
            stat = f"{c.statistic:.4g}" if is_finite(c.statistic) else "n/a"
            df = f"{c.df:.4g}" if is_finite(c.df) else "—"
            ci = (
                f"[{T.fmt_signed(c.ci_low, result.metric)}, {T.fmt_signed(c.ci_high, result.metric)}]"
                if is_finite(c.ci_low) and is_finite(c.ci_high) else "n/a"
            )
            eff = (
                f"{T.effect_name(c.effect_size_name)} = {T.fmt_effect(c.effect_size)}"
                if is_finite(c.effect_size) else "n/a"
            )
            hl = T.fmt_signed(c.hodges_lehmann, result.metric) if is_finite(c.hodges_lehmann) else "—"
            body.append(
                f"<tr><td>{e(who)}</td><td>{e(name)}</td><td class='num'>{e(stat)}</td><td class='num'>{e(df)}</td>"
                f"<td class='num'>{e(T.fmt_p(c.pvalue))}</td><td class='num'>{e(ci)}</td>"
                f"<td class='num'>{e(eff)}</td><td class='num'>{e(hl)}</td><td class='small'>{e(c.note)}</td></tr>"
            )
    return f"<div class='scroll'><table>{head}{''.join(body)}</table></div>"


def _list(items: Iterable[str], empty: str) -> str:
    items = [i for i in items if str(i).strip()]
    if not items:
        return f"<p class='small'>{e(empty)}</p>"
    return "<ul>" + "".join(f"<li>{e(i)}</li>" for i in items) + "</ul>"


def _kv_table(d: dict, empty: str) -> str:
    if not d:
        return f"<p class='small'>{e(empty)}</p>"
    rows = "".join(f"<tr><th>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in d.items())
    return f"<table style='width:auto'>{rows}</table>"


def headline_parts(result: ExperimentResult) -> list[tuple[str, str]]:
    """The result in words: the best condition against the baseline, then each asked comparison;
    each as (what was measured, what it means)."""
    from .tables import best_against_baseline, n_tests

    k = max(n_tests(result), 1)
    out = []
    best = best_against_baseline(result)
    if best is None and result.comparisons:
        best = result.comparisons[0]
    if best is not None:
        out.append(T.comparison_parts(result, best, k, lead=True))
    else:
        out.append(("No comparisons were made in this experiment,", "so no difference can be claimed."))
    for (a, b), row in asked_rows(result):
        if row is None:
            out.append((f"{a} against {b} was asked for,", "but no comparison of the two was computed."))
        elif row is not best:
            out.append(T.comparison_parts(result, row, k))
    return out


def headline_sentences(result: ExperimentResult) -> list[str]:
    return [" ".join(p) for p in headline_parts(result)]


def _runs_note(result: ExperimentResult) -> str:
    short = [
        f"{n} has {len(result.runs_of(n))} of {result.repeats} runs"
        for n in result.condition_names()
        if len(result.runs_of(n)) != result.repeats
    ]
    return ("<p class='nt'>Not every condition has all its repeats: " + e("; ".join(short)) + ".</p>") if short else ""


def _timing(result: ExperimentResult) -> str:
    rows = []
    for n in result.condition_names():
        s = summarise(result, n, "dice")
        secs = [float(r.seconds) for r in result.runs_of(n) if is_finite(r.seconds)]
        mean = sum(secs) / len(secs) if secs else float("nan")
        rows.append(f"<tr><td>{e(n)}</td><td class='num'>{s.n}</td><td class='num'>{e(T.fmt_seconds(mean))}</td></tr>")
    return (
        "<table style='width:auto'><tr><th>Condition</th><th class='num'>Runs</th>"
        "<th class='num'>Mean time per run</th></tr>" + "".join(rows) + "</table>"
    )


def _other_metrics_table(result: ExperimentResult) -> str:
    metrics = list(METRIC_NAMES)
    head = "<tr><th>Condition</th>" + "".join(
        f"<th class='num'>{e(T.metric_label(m))} mean ± SD</th>" for m in metrics
    ) + "</tr>"
    body = []
    for n in result.condition_names():
        cells = []
        for m in metrics:
            s = summarise(result, n, m)
            sd = f" ± {T.fmt_spread(s.sd, m)}" if is_finite(s.sd) else ""
            extra = f" ({s.n_not_finite} not finite)" if s.n_not_finite else ""
            cells.append(f"<td class='num'>{e(T.fmt_value(s.mean, m) + sd + extra)}</td>")
        body.append(f"<tr><td>{e(n)}</td>{''.join(cells)}</tr>")
    return f"<div class='scroll'><table>{head}{''.join(body)}</table></div>"


def render(result: ExperimentResult, figures: dict[str, bytes | None], versions: dict, created: str,
           files: dict[str, str]) -> str:
    from .tables import n_tests

    k = max(n_tests(result), 1)
    m = T.metric_label(result.metric)
    parts = headline_parts(result)
    headline = "".join(
        f"<p><strong>{e(first)}</strong> {e(second)}</p>" if i == 0 else f"<p>{e(first)} {e(second)}</p>"
        for i, (first, second) in enumerate(parts)
    )
    explain = (
        f"<p class='explain'>{e(T.METRIC_EXPLAINED.get(result.metric, ''))} "
        f"Figures are mean ± standard deviation over the repeated runs. {e(T.p_value_sentence(result, k))}</p>"
    )
    from .tables import best_against_baseline

    best = best_against_baseline(result)
    example = best.a if best is not None else "A"
    recompute = (
        "import csv; from scipy import stats\n"
        "runs = list(csv.DictReader(open('runs.csv')))\n"
        f"score = lambda c: [float(r['{result.metric}']) for r in runs if r['condition'] == c]\n"
        + (
            f"print(stats.ttest_rel(score('{example}'), score('{result.baseline}')))  # rows in repeat order"
            if result.paired
            else f"print(stats.ttest_ind(score('{example}'), score('{result.baseline}')))  # Student's t, equal variances"
        )
    )
    parts = [
        "<!DOCTYPE html>",
        "<html lang='en'><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width, initial-scale=1'>",
        f"<title>{e(result.name)}: UltrasoundRefine experiment report</title>",
        f"<style>{CSS}</style></head><body>",
        f"<h1>{e(result.name)}</h1>",
        f"<p class='sub'>UltrasoundRefine experiment report · {e(created)} · "
        f"{len(result.condition_names())} conditions × {e(result.repeats)} repeats · baseline: {e(result.baseline)}</p>",
        f"<div class='headline'>{headline}</div>",
        explain,
        _runs_note(result),
        "<h2>Every condition against the baseline</h2>",
        f"<p class='small'>{e(T.design_sentence(result))} "
        f"“Runs for 80% power” is how many runs per condition a new experiment would need to detect the "
        f"observed difference 4 times out of 5 (— where the difference is zero or cannot be estimated).</p>",
        main_table(result),
    ]
    other = other_table(result)
    if other:
        parts += [
            "<h2>Other comparisons</h2>",
            "<p class='small'>Pairs of recipes compared directly with each other; p-values are shown whatever "
            "they are, and Holm's correction covers these too.</p>",
            other,
        ]
    parts += [
        f"<h2>{e(m)} of every run</h2>",
        _img(figures.get("metric"), f"{m} of every run, per condition"),
    ]
    if figures.get("others"):
        parts += [
            "<h3>The other metrics</h3>",
            _img(figures.get("others"), "IoU, pixel accuracy and HD95 of every run, per condition"),
            _other_metrics_table(result),
        ]
    parts.append("<h2>Training curves</h2>")
    if figures.get("curves"):
        parts.append(_img(figures["curves"], "training loss and validation Dice per epoch, per condition"))
    else:
        parts.append("<p class='small'>No training history was recorded (conditions without training, such as "
                     "threshold masks used as they are, have none).</p>")
    parts.append("<h2>Example masks</h2>")
    if figures.get("overlays"):
        parts.append("<p class='small'>Orange: the region the condition predicted; cyan dashed: the true region. "
                     "Loops are named by a stable hash, never by patient details.</p>")
        parts.append(_img(figures["overlays"], "example frames with predicted and true region outlines"))
    else:
        parts.append("<p class='small'>No example masks were recorded.</p>")
    parts += [
        "<h2>How the experiment was run</h2>",
        "<h3>Conditions</h3>",
        "<table><tr><th>Condition</th><th>What it is</th><th>Kind</th></tr>"
        + "".join(
            f"<tr><td>{e(n)}{' <em>(baseline)</em>' if n == result.baseline else ''}</td>"
            f"<td>{e(result.info(n).description)}</td><td>{e(result.info(n).kind)}</td></tr>"
            for n in result.condition_names()
        )
        + "</table>",
        "<h3>What was varied between repeats</h3>",
        _list(result.varied, "Not recorded."),
        "<h3>What was held fixed</h3>",
        _list(result.fixed, "Not recorded."),
        f"<p class='small'>Significance level alpha = {e(f'{result.alpha:g}')}; "
        f"primary test: {e('paired Student t' if result.paired else 'Student t')}; "
        f"Holm correction over {k} comparison(s).</p>",
        "<h3>Time</h3>",
        _timing(result),
        "<details><summary>All tests, with the checks (Welch, paired, Mann-Whitney / Wilcoxon)</summary>",
        "<p class='small'>The checks ask whether the verdict depends on the primary test's assumptions "
        "(equal spread, normally distributed runs, independence). With few runs the rank tests cannot reach "
        "small p-values (with 5 pairs the smallest two-sided Wilcoxon p is 0.0625): read them as a check, "
        "not as the verdict.</p>",
        checks_table(result),
        "</details>",
        "<h2>Machine and versions</h2>",
        _kv_table(result.machine, "Not recorded."),
        _kv_table(versions, "Not recorded."),
        "<h2>Notes</h2>",
        _list(result.notes, "None."),
        "<h2>Recompute it yourself</h2>",
        "<p>The numbers behind this page: "
        + ", ".join(f"<a href='{e(f)}'>{e(f)}</a>" for f in files.values())
        + f". Every run's scores are in runs.csv at full precision; for example, {e(example)} against the baseline:</p>",
        f"<pre>{e(recompute)}</pre>",
        "<p class='small'>comparisons.csv has one row per test on this page (the primary test and every check, "
        "and the loop-by-loop tests), each naming its data (runs.csv, or per_loop.csv and the repeat) and the "
        "metric, and saying why where a test could not be computed.</p>",
        "</body></html>",
    ]
    return "\n".join(p for p in parts if p) + "\n"
