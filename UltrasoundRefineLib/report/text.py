"""Numbers and results in words a clinician reads without the code: formatting and sentences.

Every sentence is generated from the figures; nothing here knows what the experiment found.
"""

from __future__ import annotations

import math

from UltrasoundRefineLib.stats import ComparisonRow

from .model import HIGHER_IS_BETTER, ExperimentResult, is_finite

TEST_NAMES = {
    "student": "Student's t-test",
    "welch": "Welch's t-test",
    "paired": "paired Student's t-test",
    "mannwhitney": "Mann-Whitney U test",
    "wilcoxon": "Wilcoxon signed-rank test",
}
EFFECT_NAMES = {"hedges_g": "Hedges' g", "cohens_dz": "Cohen's d_z"}
EFFECT_SYMBOLS = {"hedges_g": "g", "cohens_dz": "d_z"}
METRIC_LABELS = {"dice": "Dice", "iou": "IoU", "accuracy": "pixel accuracy", "hd95": "HD95"}

METRIC_EXPLAINED = {
    "dice": (
        "Dice measures how well a predicted mask overlaps the true image region: "
        "1 means the two are identical, 0 means they do not overlap at all."
    ),
    "iou": "IoU (intersection over union) is the overlap of predicted and true region divided by their union: 1 is perfect.",
    "accuracy": "Pixel accuracy is the share of pixels labelled correctly as inside or outside the image region.",
    "hd95": (
        "HD95 is the 95th-percentile distance between the edges of the predicted and the true region "
        "(smaller is better; pixels, or millimetres where the spacing was known)."
    ),
}


def describe_test(test: str) -> str:
    return TEST_NAMES.get(test, test)


def effect_name(name: str) -> str:
    return EFFECT_NAMES.get(name, name)


def metric_label(metric: str) -> str:
    return METRIC_LABELS.get(metric, metric)


def fmt_p(p: float) -> str:
    """p-values as people read them: three significant digits, never 0, "n/a" when untestable."""
    if not is_finite(p):
        return "n/a"
    p = float(p)
    if p < 1e-4:
        return "< 0.0001"
    return f"{p:.3g}"


def fmt_p_eq(p: float) -> str:
    """``p = 0.012`` or ``p < 0.0001``: for running text."""
    s = fmt_p(p)
    return f"p {s}" if s.startswith("<") else f"p = {s}"


def fmt_value(x: float, metric: str = "dice") -> str:
    """A metric value: three decimals for the [0, 1] scores, three significant digits for hd95."""
    if x is None:
        return "n/a"
    x = float(x)
    if math.isnan(x):
        return "n/a"
    if math.isinf(x):
        return "∞" if x > 0 else "-∞"
    if metric == "hd95":
        return f"{x:.3g}" if abs(x) < 1000 else f"{x:.0f}"
    return f"{x:.3f}"


def fmt_spread(x: float, metric: str = "dice") -> str:
    """A standard deviation or small difference: like :func:`fmt_value` but never rounds a real
    spread to 0.000."""
    if x is None or not is_finite(x):
        return fmt_value(x if x is not None else math.nan, metric)
    x = float(x)
    if abs(x) < 1e-9:  # floating-point noise of identical runs, not a spread
        return "0"
    if abs(x) < 0.001 and metric != "hd95":
        return f"{x:.2g}"
    return fmt_value(x, metric)


def fmt_signed(x: float, metric: str = "dice") -> str:
    s = fmt_spread(x, metric)
    return f"+{s}" if is_finite(x) and float(x) > 0 else s.replace("-", "−", 1)


def fmt_effect(x: float) -> str:
    """Effect sizes to two decimals; an absurd one (a standardised difference over a spread that is
    only floating-point noise, e.g. two conditions that score the same every run) as undefined."""
    if not is_finite(x):
        return "n/a"
    x = float(x)
    if abs(x) > 1e6:
        return "undefined (no spread)"
    return f"{x:.2f}" if abs(x) < 10 else f"{x:.1f}"


def fmt_seconds(s: float) -> str:
    if not is_finite(s):
        return "n/a"
    s = float(s)
    if s < 120:
        return f"{s:.1f} s"
    if s < 7200:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.1f} h"


def verdict(row: ComparisonRow) -> str:
    """"significant", "not significant" or "not testable": the words of the table's last column."""
    if not is_finite(row.p):
        return "not testable"
    return "significant" if row.significant else "not significant"


def label(result: ExperimentResult, name: str) -> str:
    """A condition for running text: its description, with the short name in brackets."""
    d = result.info(name).description.strip()
    return f"“{d}” ({name})" if d else name


def p_clause(row: ComparisonRow, n_tests: int) -> str:
    """The verdict with the figures behind it, e.g. "significant (Student's t-test, p = 0.0003,
    Holm-corrected p = 0.0012; Hedges' g = 5.1)"."""
    c = row.primary
    if not is_finite(row.p):
        why = c.note or "the test statistic is undefined"
        return f"not testable ({why})"
    figures = f"{describe_test(c.test)}, {fmt_p_eq(row.p)}"
    if n_tests > 1:
        figures += f", Holm-corrected {fmt_p_eq(row.p_holm)}"
    if is_finite(c.effect_size):
        figures += f"; {effect_name(c.effect_size_name)} = {fmt_effect(c.effect_size)}"
    if row.significant:
        return f"significant ({figures})"
    words = "not significant"
    if row.p < row.alpha <= row.p_holm:
        words += f" once corrected for the {n_tests} comparisons made (alone it would pass alpha = {row.alpha:g})"
    return f"{words} ({figures})"


def _mean_sd(result: ExperimentResult, name: str) -> tuple[str, int]:
    from .tables import summarise

    s = summarise(result, name, result.metric)
    if s.n == 0:
        return "n/a", 0
    if is_finite(s.sd):
        return f"{fmt_value(s.mean, result.metric)} ± {fmt_spread(s.sd, result.metric)}", s.n
    return fmt_value(s.mean, result.metric), s.n


def comparison_parts(result: ExperimentResult, row: ComparisonRow, n_tests: int, *, lead: bool = False) -> tuple[str, str]:
    """One comparison in words: (what was measured, what it means). ``lead`` phrases the first
    part as the report's headline."""
    m = metric_label(result.metric)
    c = row.primary
    a_ms, n_a = _mean_sd(result, row.a)
    b_ms, n_b = _mean_sd(result, row.b)
    runs = f"over {n_a} runs each" if n_a == n_b else f"over {n_a} and {n_b} runs"
    b_role = "the baseline, " if row.b == result.baseline else ""
    better = HIGHER_IS_BETTER.get(result.metric, True)
    worse_or_equal = is_finite(c.difference) and (c.difference <= 0 if better else c.difference >= 0)
    if lead and worse_or_equal and row.b == result.baseline:
        first = (
            f"No condition scored better than the baseline on average. The best of them, {label(result, row.a)}, "
            f"reaches {m} {a_ms} (mean ± SD {runs}), against {b_ms} for the baseline, {label(result, row.b)}."
        )
    elif lead:
        first = (
            f"{label(result, row.a)} reaches {m} {a_ms} (mean ± SD {runs}), "
            f"against {b_ms} for {b_role}{label(result, row.b)}."
        )
    else:
        first = (
            f"{label(result, row.a)} against {label(result, row.b)}: {m} {a_ms} vs {b_ms} (mean ± SD {runs})."
        )
    if is_finite(c.difference):
        ci = ""
        if is_finite(c.ci_low) and is_finite(c.ci_high):
            ci = (
                f"95% confidence interval of the difference {fmt_signed(c.ci_low, result.metric)} "
                f"to {fmt_signed(c.ci_high, result.metric)}"
            )
        if c.difference == 0:
            direction = "The means are equal" + (f" ({ci})" if ci else "")
        else:
            higher = c.difference > 0
            word = "higher" if higher else "lower"
            good = "better" if higher == better else "worse"
            direction = f"That is {fmt_spread(abs(c.difference), result.metric)} {word} ({good}" + (
                f"; {ci})" if ci else ")"
            )
        second = f"{direction}, and the difference is {p_clause(row, n_tests)}."
    else:
        second = f"The difference is {p_clause(row, n_tests)}."
    return first, second


def p_value_sentence(result: ExperimentResult, n_tests: int) -> str:
    holm = (
        f" Because {n_tests} comparisons were made, the p-values are Holm-corrected, and a difference is "
        f"called significant only when the corrected p-value is below {result.alpha:g}."
        if n_tests > 1
        else f" A difference is called significant when p is below {result.alpha:g}."
    )
    return (
        "The p-value is the chance of seeing a difference at least this large if the two recipes were in "
        "truth equally good, so a small p-value means the difference is unlikely to be luck of the seeds."
        + holm
    )


def design_sentence(result: ExperimentResult) -> str:
    test = "a paired Student's t-test" if result.paired else "Student's t-test (two independent groups)"
    why = (
        "each repeat shares its seed and data split across conditions, so the runs are compared pair by pair"
        if result.paired
        else "the runs of different conditions are treated as independent"
    )
    return (
        f"Every condition was trained {result.repeats} times with different seeds; {why}. "
        f"The primary test is {test}, as in the method (Zahn & Perrin, arXiv 2304.00990)."
    )
