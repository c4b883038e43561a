"""Statistics for comparing training recipes over repeated runs (Zahn & Perrin, arXiv 2304.00990).

An improvement is only claimed when it survives a test across runs with different seeds. The
method uses Student's t-test; we also attach the checks a reviewer would ask for (Welch or paired
t, a rank test), effect sizes, intervals, Holm's correction across all comparisons of an
experiment, and how many repeats 80 % power would need at the observed effect.

Conventions, everywhere in this module:

- ``a`` is the condition under study and ``b`` what it is compared with (the baseline). The
  difference is ``mean_a - mean_b`` and every statistic, interval and effect size has that sign,
  as in ``scipy.stats.ttest_ind(a, b)`` and R's ``t.test(a, b)``: positive means ``a`` scored higher.
- ``alternative`` is scipy's: ``"greater"`` tests whether ``a`` is larger than ``b``.
- Tests, intervals and distributions come from scipy.stats (needs scipy >= 1.11 for
  ``ttest_ind(...).confidence_interval()``). Holm's correction and the Hodges-Lehmann estimate
  are written here because scipy.stats has neither.
- Bad input (NaN, fewer than 2 runs, unequal pairs) raises :class:`StatsInputError` (a
  ``ValueError``) naming the condition. Degenerate but valid input (no spread at all, so the test
  statistic is 0/0 or x/0) gives ``pvalue = nan`` and says why in ``note``: such a result is never
  significant and is left out of the Holm correction.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

import numpy as np
from scipy import special, stats

from .errors import UltrasoundRefineError

TESTS = ("student", "welch", "paired", "mannwhitney", "wilcoxon")
PAIRED_TESTS = ("paired", "wilcoxon")
ALTERNATIVES = ("two-sided", "less", "greater")

#: Columns of the report's ``comparisons.csv``, in order; :meth:`ComparisonRow.to_dict` starts with them.
COMPARISON_COLUMNS = ("a", "b", "test", "statistic", "p", "p_holm", "effect_size", "n_a", "n_b")

# A/A simulation: Dice scores of a good region segmenter, mean 0.95, sd 0.01, as a beta
# distribution (bounded by 1 and slightly skewed, like real Dice scores).
_DICE_MEAN, _DICE_SD = 0.95, 0.01
_DICE_CONCENTRATION = _DICE_MEAN * (1 - _DICE_MEAN) / _DICE_SD**2 - 1
_DICE_BETA = (_DICE_MEAN * _DICE_CONCENTRATION, (1 - _DICE_MEAN) * _DICE_CONCENTRATION)


class StatsInputError(UltrasoundRefineError, ValueError):
    """Run scores that cannot be compared; the message names the condition."""


# ----------------------------------------------------------------------------- result types


@dataclass(frozen=True)
class ConfidenceInterval:
    low: float
    high: float


@dataclass(frozen=True)
class Summary:
    """One condition over its runs: ``sd`` with ddof=1, ``ci95`` t-based around the mean."""

    n: int
    mean: float
    sd: float
    sem: float
    ci95: tuple[float, float]


@dataclass(frozen=True)
class Comparison:
    """The result of one test of ``a`` against ``b``.

    ``df`` is nan for the rank tests. ``ci_low``/``ci_high`` bound ``difference`` (= ``mean_a -
    mean_b``) at ``confidence``; ``ci_method`` says which t interval that is: pooled for student,
    Welch-Satterthwaite for welch, of the paired differences for paired. The rank tests have no
    interval of the mean difference of their own, so they carry the matching t interval (Welch for
    mannwhitney, paired for wilcoxon) and, in ``hodges_lehmann``, their own location-shift estimate
    (median of all pairwise differences a_i - b_j, or of the Walsh averages of the paired
    differences); ``hodges_lehmann`` is nan for the t-tests. ``effect_size`` is Hedges' g for
    independent groups and Cohen's d_z (mean / sd of the paired differences) for paired tests,
    named in ``effect_size_name``. ``statistic`` is scipy's: t, Mann-Whitney U of ``a``, or the
    Wilcoxon signed-rank statistic.
    """

    test: str
    alternative: str
    statistic: float
    pvalue: float
    df: float
    n_a: int
    n_b: int
    mean_a: float
    mean_b: float
    difference: float
    ci_low: float
    ci_high: float
    confidence: float
    ci_method: str
    effect_size: float
    effect_size_name: str
    hodges_lehmann: float = math.nan
    note: str = ""

    def confidence_interval(self) -> ConfidenceInterval:
        return ConfidenceInterval(self.ci_low, self.ci_high)


@dataclass(frozen=True)
class ComparisonRow:
    """One comparison of an experiment: the primary test, Holm-adjusted, with its checks attached.

    ``n_for_power`` is the number of runs per condition that 80 % power (``power`` of
    :func:`compare_conditions`) would need at the observed effect size, ``None`` where the observed
    effect is zero or undefined, or the number exceeds ``max_n`` of :func:`repeats_for_power`.
    """

    a: str
    b: str
    primary: Comparison
    p_holm: float
    significant: bool
    alpha: float
    n_for_power: int | None
    checks: Mapping[str, Comparison] = field(default_factory=dict)

    @property
    def test(self) -> str:
        return self.primary.test

    @property
    def statistic(self) -> float:
        return self.primary.statistic

    @property
    def p(self) -> float:
        return self.primary.pvalue

    @property
    def effect_size(self) -> float:
        return self.primary.effect_size

    @property
    def n_a(self) -> int:
        return self.primary.n_a

    @property
    def n_b(self) -> int:
        return self.primary.n_b

    def to_dict(self) -> dict:
        """Flat row for CSV/JSON: :data:`COMPARISON_COLUMNS` first, then details and checks."""
        c = self.primary
        row = {
            "a": self.a,
            "b": self.b,
            "test": c.test,
            "statistic": c.statistic,
            "p": c.pvalue,
            "p_holm": self.p_holm,
            "effect_size": c.effect_size,
            "n_a": c.n_a,
            "n_b": c.n_b,
            "effect_size_name": c.effect_size_name,
            "alternative": c.alternative,
            "df": c.df,
            "mean_a": c.mean_a,
            "mean_b": c.mean_b,
            "difference": c.difference,
            "ci_low": c.ci_low,
            "ci_high": c.ci_high,
            "confidence": c.confidence,
            "significant": self.significant,
            "alpha": self.alpha,
            "n_for_power": self.n_for_power,
            "note": c.note,
        }
        for name, check in self.checks.items():
            row[f"statistic_{name}"] = check.statistic
            row[f"p_{name}"] = check.pvalue
        return row


# ----------------------------------------------------------------------------- input checks


def _sample(values: Iterable[float], name: str) -> np.ndarray:
    """Validate one condition's run scores: a 1-D finite float array of at least 2 runs."""
    try:
        x = np.asarray(list(values) if not isinstance(values, np.ndarray) else values, dtype=float)
    except (TypeError, ValueError) as e:
        raise StatsInputError(f"condition {name!r}: scores are not numbers ({e})") from None
    if x.ndim != 1:
        raise StatsInputError(f"condition {name!r}: expected a flat list of run scores, got shape {x.shape}")
    if np.isnan(x).any():
        raise StatsInputError(f"condition {name!r}: {int(np.isnan(x).sum())} of {x.size} run scores are NaN")
    if not np.isfinite(x).all():
        raise StatsInputError(f"condition {name!r}: run scores contain infinity")
    if x.size < 2:
        raise StatsInputError(f"condition {name!r}: needs at least 2 runs to estimate a spread, got {x.size}")
    return x


def _pair(a, b, names: tuple[str, str], paired: bool) -> tuple[np.ndarray, np.ndarray]:
    x, y = _sample(a, names[0]), _sample(b, names[1])
    if paired and x.size != y.size:
        raise StatsInputError(
            f"conditions {names[0]!r} and {names[1]!r}: a paired test needs one run of each per seed/split, "
            f"got {x.size} and {y.size} runs"
        )
    return x, y


def _check_choice(value: str, allowed: Sequence[str], what: str) -> str:
    if value not in allowed:
        raise ValueError(f"{what} must be one of {', '.join(map(repr, allowed))}; got {value!r}")
    return value


def _check_probability(value: float, what: str) -> float:
    if not (0.0 < float(value) < 1.0):
        raise ValueError(f"{what} must lie strictly between 0 and 1; got {value!r}")
    return float(value)


# ----------------------------------------------------------------------------- building blocks


def describe(values: Iterable[float], *, name: str = "values") -> Summary:
    """Mean, sd and a t-based 95 % interval of one condition's run scores."""
    x = _sample(values, name)
    n = x.size
    mean, sd = float(x.mean()), float(x.std(ddof=1))
    sem = sd / math.sqrt(n)
    half = float(stats.t.ppf(0.975, n - 1)) * sem
    return Summary(n=n, mean=mean, sd=sd, sem=sem, ci95=(mean - half, mean + half))


def cohens_d(a: Iterable[float], b: Iterable[float], paired: bool = False) -> float:
    """Standardised mean difference ``(mean_a - mean_b) / sd``.

    Independent groups: the pooled sd (ddof=1 in each group). Paired: Cohen's d_z, mean over sd of
    the differences, the effect size that drives a paired t-test's power. nan when the sd is 0.
    """
    x, y = _pair(a, b, ("a", "b"), paired)
    if paired:
        d = x - y
        sd = float(d.std(ddof=1))
        return float(d.mean()) / sd if sd > 0 else math.nan
    na, nb = x.size, y.size
    pooled = math.sqrt(((na - 1) * x.var(ddof=1) + (nb - 1) * y.var(ddof=1)) / (na + nb - 2))
    return float(x.mean() - y.mean()) / pooled if pooled > 0 else math.nan


def hedges_correction(df: float) -> float:
    """Hedges' exact small-sample factor J(df) = Gamma(df/2) / (sqrt(df/2) Gamma((df-1)/2)).

    Exact rather than the usual 1 - 3/(4 df - 1) because with 3-5 runs per condition the
    approximation is no longer negligible to many decimals.
    """
    if df <= 1:
        raise ValueError(f"Hedges' correction needs df > 1; got {df}")
    return math.exp(special.gammaln(df / 2) - special.gammaln((df - 1) / 2) - 0.5 * math.log(df / 2))


def hedges_g(a: Iterable[float], b: Iterable[float]) -> float:
    """Cohen's d of independent groups times Hedges' exact J(n_a + n_b - 2): unbiased for few runs."""
    x, y = _pair(a, b, ("a", "b"), paired=False)
    return cohens_d(x, y, paired=False) * hedges_correction(x.size + y.size - 2)


def hodges_lehmann(a: Iterable[float], b: Iterable[float], *, paired: bool) -> float:
    """Location shift of a against b that matches the rank tests.

    Independent: median of all n_a * n_b differences a_i - b_j (goes with Mann-Whitney). Paired:
    median of the Walsh averages (d_i + d_j) / 2, i <= j, of the differences d = a - b (goes with
    the Wilcoxon signed-rank test).
    """
    x, y = _pair(a, b, ("a", "b"), paired)
    if paired:
        d = x - y
        i, j = np.triu_indices(d.size)
        return float(np.median((d[i] + d[j]) / 2))
    return float(np.median(np.subtract.outer(x, y)))


def holm(pvalues: Iterable[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values, in the input order: monotone, capped at 1.

    Controls the family-wise error over all comparisons of an experiment without assuming they are
    independent (they share a baseline). NaN p-values (degenerate comparisons, no test was possible)
    stay NaN and do not count towards the number of tests.
    """
    p = np.asarray(list(pvalues), dtype=float)
    if p.ndim != 1:
        raise ValueError(f"expected a flat list of p-values, got shape {p.shape}")
    finite = ~np.isnan(p)
    outside = finite & ((p < 0) | (p > 1))
    if outside.any():
        raise ValueError(f"p-values must lie in [0, 1]; got {p[outside].tolist()}")
    out = np.full(p.shape, np.nan)
    q = p[finite]
    m = q.size
    if m == 0:
        return out
    order = np.argsort(q, kind="stable")
    stepped = np.maximum.accumulate((m - np.arange(m)) * q[order])
    adjusted = np.empty(m)
    adjusted[order] = np.minimum(stepped, 1.0)
    out[finite] = adjusted
    return out


def _t_power(n: int, effect: float, alpha: float, paired: bool, two_sided: bool) -> float:
    df = n - 1 if paired else 2 * n - 2
    ncp = effect * math.sqrt(n if paired else n / 2)
    if two_sided:
        crit = stats.t.ppf(1 - alpha / 2, df)
        return float(stats.nct.sf(crit, df, ncp) + stats.nct.cdf(-crit, df, ncp))
    return float(stats.nct.sf(stats.t.ppf(1 - alpha, df), df, ncp))


def repeats_for_power(
    effect_size: float,
    alpha: float = 0.05,
    power: float = 0.8,
    test: str = "student",
    *,
    alternative: str = "two-sided",
    max_n: int = 100_000,
) -> int:
    """Runs per condition for a t-test to reach ``power`` at ``effect_size``: exact noncentral t.

    ``test="student"``: two independent groups of n runs each, effect = Cohen's d (or Hedges' g).
    ``test="paired"``: n pairs, effect = Cohen's d_z. One-sided alternatives use |effect| in the
    tested direction. Tells the user how many more seeds would settle a non-significant result.
    Raises ValueError when the effect is zero or not finite, or more than ``max_n`` runs are needed.
    """
    _check_choice(test, ("student", "paired"), "test")
    _check_choice(alternative, ALTERNATIVES, "alternative")
    alpha, power = _check_probability(alpha, "alpha"), _check_probability(power, "power")
    effect = abs(float(effect_size))
    if not math.isfinite(effect) or effect == 0:
        raise ValueError(f"no finite number of runs gives power at effect size {effect_size!r}")
    paired, two_sided = test == "paired", alternative == "two-sided"

    def enough(n: int) -> bool:
        return _t_power(n, effect, alpha, paired, two_sided) >= power

    lo = 2  # smallest n with a t distribution (df >= 1)
    if enough(lo):
        return lo
    hi = 4
    while not enough(hi):  # power grows with n: double, then bisect
        lo, hi = hi, hi * 2
        if lo > max_n:
            raise ValueError(f"more than {max_n} runs per condition needed at effect size {effect_size!r}")
    while hi - lo > 1:  # invariant: not enough(lo), enough(hi)
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if enough(mid) else (mid, hi)
    if hi > max_n:
        raise ValueError(f"more than {max_n} runs per condition needed at effect size {effect_size!r}")
    return hi


# ----------------------------------------------------------------------------- one comparison


def compare(
    a: Iterable[float],
    b: Iterable[float],
    *,
    test: str,
    alternative: str = "two-sided",
    confidence: float = 0.95,
    names: tuple[str, str] = ("a", "b"),
) -> Comparison:
    """Test run scores ``a`` against ``b`` with the named test; see :class:`Comparison`.

    ``test`` has no default on purpose: "student" (pooled-variance t, what the method uses),
    "welch" (unequal variances), "paired" (runs share seeds and splits, pairs in order),
    "mannwhitney" / "wilcoxon" (rank tests as a non-parametric check; scipy's method="auto":
    exact for small samples without ties). ``names`` only label error messages.

    The rank tests are coarse with the few runs an experiment affords: with 5 pairs the smallest
    two-sided Wilcoxon p is 2/32 = 0.0625, so it can never reach 0.05; 5 against 5 runs gives
    Mann-Whitney a false-positive rate of about 0.03 at alpha 0.05. Read them as a check on the
    t-test's normality assumption, not as the verdict.
    """
    _check_choice(test, TESTS, "test")
    _check_choice(alternative, ALTERNATIVES, "alternative")
    confidence = _check_probability(confidence, "confidence")
    paired = test in PAIRED_TESTS
    x, y = _pair(a, b, names, paired)
    common = dict(
        test=test,
        alternative=alternative,
        n_a=int(x.size),
        n_b=int(y.size),
        mean_a=float(x.mean()),
        mean_b=float(y.mean()),
        difference=float(x.mean() - y.mean()),
        confidence=confidence,
        effect_size=cohens_d(x, y, paired=True) if paired else hedges_g(x, y),
        effect_size_name="cohens_dz" if paired else "hedges_g",
        hodges_lehmann=hodges_lehmann(x, y, paired=paired) if test in ("mannwhitney", "wilcoxon") else math.nan,
    )

    # The interval of the mean difference always comes from a t-test (scipy's own interval).
    ci_test = {"mannwhitney": "welch", "wilcoxon": "paired"}.get(test, test)
    note = _degenerate(x, y, test)
    with warnings.catch_warnings():
        if note or _flat(x, x, y) or _flat(y, x, y) or (paired and _flat(x - y, x, y)):
            # scipy warns about the 0/0 we report in the note, or about a constant group, which
            # is harmless while the other group has spread
            warnings.simplefilter("ignore", RuntimeWarning)
        if ci_test == "paired":
            t_res = stats.ttest_rel(x, y, alternative=alternative)
        else:
            t_res = stats.ttest_ind(x, y, equal_var=(ci_test == "student"), alternative=alternative)
        ci = t_res.confidence_interval(confidence_level=confidence)
    ci_method = {
        "student": "student t (pooled variance)",
        "welch": "welch t (Welch-Satterthwaite df)",
        "paired": "paired t",
    }[ci_test]
    if ci_test != test:
        ci_method += f"; {test} has no interval of the mean difference, see hodges_lehmann"
    common.update(ci_low=float(ci.low), ci_high=float(ci.high), ci_method=ci_method)

    if note:  # rounding noise must not pose as an effect either
        common["effect_size"] = math.nan
        return Comparison(statistic=math.nan, pvalue=math.nan, df=_df(x, y, test), note=note, **common)

    if test in ("student", "welch", "paired"):
        t, p, df = float(t_res.statistic), float(t_res.pvalue), float(t_res.df)
        return Comparison(statistic=t, pvalue=p, df=df, **common)
    if test == "mannwhitney":
        res = stats.mannwhitneyu(x, y, use_continuity=True, alternative=alternative, method="auto")
    else:
        res = stats.wilcoxon(
            x, y, zero_method="wilcox", correction=False, alternative=alternative, method="auto"
        )
    return Comparison(statistic=float(res.statistic), pvalue=float(res.pvalue), df=math.nan, **common)


def _df(x: np.ndarray, y: np.ndarray, test: str) -> float:
    if test == "student":
        return float(x.size + y.size - 2)
    if test == "paired":
        return float(x.size - 1)
    return math.nan  # welch df is 0/0 without spread; rank tests have none


def _flat(v: np.ndarray, x: np.ndarray, y: np.ndarray) -> bool:
    """No spread in ``v``, allowing float rounding (1e-12 of the scores' magnitude): runs that
    scored the same, or differ by the same amount, must not turn rounding noise into a huge t."""
    tol = 1e-12 * max(float(np.abs(x).max()), float(np.abs(y).max()), 1e-300)
    return float(np.ptp(v)) <= tol


def _degenerate(x: np.ndarray, y: np.ndarray, test: str) -> str:
    """Why the test cannot be computed on this input, or "" when it can."""
    if test in ("student", "welch") and _flat(x, x, y) and _flat(y, x, y):
        return "every run of both conditions scored the same: no spread, so the t statistic is undefined"
    if test == "paired" and _flat(x - y, x, y):
        return "every paired difference is the same: no spread, so the t statistic is undefined"
    if test == "mannwhitney" and _flat(np.concatenate([x, y]), x, y):
        return "every run of both conditions scored the same: nothing to rank"
    if test == "wilcoxon" and _flat(np.append(x - y, 0.0), x, y):
        return "every paired difference is zero: nothing to rank"
    return ""


# ----------------------------------------------------------------------------- an experiment


def compare_conditions(
    runs: Mapping[str, Sequence[float]],
    baseline: str | None,
    *,
    paired: bool,
    alpha: float = 0.05,
    pairs: Sequence[tuple[str, str]] | None = None,
    alternative: str = "two-sided",
    confidence: float = 0.95,
    power: float = 0.8,
) -> list[ComparisonRow]:
    """Every condition against ``baseline`` (and/or the explicit ``pairs`` ``(a, b)``), Holm-corrected.

    The primary test is Student's t, as the method uses: the pooled-variance two-sample t when runs
    are independent (``paired=False``), Student's paired t when the runs of every condition share
    seeds and splits in the same order (``paired=True``). Attached as checks: Welch and
    Mann-Whitney for independent runs; the unpaired Student and Welch t (what an analysis ignoring
    the pairing would say) and Wilcoxon for paired runs. Holm runs over the primary p-values of all
    rows; ``significant`` means ``p_holm < alpha``.
    """
    alpha = _check_probability(alpha, "alpha")
    todo: list[tuple[str, str]] = []
    if baseline is not None:
        if baseline not in runs:
            raise StatsInputError(f"baseline condition {baseline!r} has no runs; conditions: {sorted(runs)}")
        todo += [(name, baseline) for name in runs if name != baseline]
    for a, b in pairs or ():
        for name in (a, b):
            if name not in runs:
                raise StatsInputError(f"condition {name!r} has no runs; conditions: {sorted(runs)}")
        if a == b:
            raise StatsInputError(f"condition {a!r} compared with itself")
        if (a, b) not in todo:
            todo.append((a, b))
    if not todo:
        raise StatsInputError("nothing to compare: give a baseline with at least one other condition, or pairs")

    primary_test = "paired" if paired else "student"
    check_tests = ("student", "welch", "wilcoxon") if paired else ("welch", "mannwhitney")
    options = dict(alternative=alternative, confidence=confidence)
    results = []
    for a, b in todo:
        names = (a, b)
        primary = compare(runs[a], runs[b], test=primary_test, names=names, **options)
        checks = {t: compare(runs[a], runs[b], test=t, names=names, **options) for t in check_tests}
        results.append((a, b, primary, checks))

    p_holm = holm([r[2].pvalue for r in results])
    rows = []
    for (a, b, primary, checks), ph in zip(results, p_holm):
        try:
            n_power = repeats_for_power(
                primary.effect_size, alpha, power, primary_test, alternative=alternative
            )
        except ValueError:
            n_power = None
        rows.append(
            ComparisonRow(
                a=a,
                b=b,
                primary=primary,
                p_holm=float(ph),
                significant=bool(ph < alpha),  # nan < alpha is False: degenerate rows never count
                alpha=alpha,
                n_for_power=n_power,
                checks=checks,
            )
        )
    return rows


# ----------------------------------------------------------------------------- calibration


def aa_false_positive_rate(
    n_experiments: int,
    n_repeats: int,
    alpha: float,
    seed: int,
    test: str = "student",
) -> float:
    """Fraction of A/A experiments (a condition against itself) that ``compare`` calls significant.

    Checks that the whole path, not just scipy, holds its nominal error rate at the run counts we
    use. Scores are Dice-like: beta with mean 0.95 and sd 0.01. For the paired tests, both runs of
    a pair also share a seed/split offset (normal, sd 0.01), as real paired runs do.
    """
    _check_choice(test, TESTS, "test")
    alpha = _check_probability(alpha, "alpha")
    if n_experiments < 1 or n_repeats < 2:
        raise ValueError(f"need n_experiments >= 1 and n_repeats >= 2; got {n_experiments}, {n_repeats}")
    rng = np.random.default_rng(seed)
    scores = rng.beta(*_DICE_BETA, size=(n_experiments, 2, n_repeats))
    if test in PAIRED_TESTS:
        scores += rng.normal(0.0, _DICE_SD, size=(n_experiments, 1, n_repeats))
    hits = sum(compare(a, b, test=test).pvalue < alpha for a, b in scores)
    return hits / n_experiments
