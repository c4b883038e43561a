"""UltrasoundRefineLib.stats against published worked examples and formulas computed by hand here.

References used below:
- R's ``datasets::sleep`` (Cushny & Peebles 1905, the data of Student 1908): extra hours of sleep
  of 10 patients under two drugs. R 4.x prints, for ``t.test(extra ~ group, data = sleep)``
  (Welch): t = -1.8608, df = 17.776, p-value = 0.07939, 95 percent CI -3.3654832 0.2054832;
  with ``var.equal = TRUE``: t = -1.8608, df = 18, p-value = 0.07919, CI -3.363874 0.203874;
  paired (``t.test(g1, g2, paired = TRUE)``): t = -4.0621, df = 9, p-value = 0.002833,
  CI -2.4598858 -0.7001142, mean difference -1.58.
  (With equal group sizes the pooled and Welch standard errors coincide, so t is the same; the
  intervals differ only through df 18 vs 17.776. The pooled CI is NOT the Welch one.)
- R's ``?wilcox.test`` examples (Hollander & Wolfe 1973, pp. 29 and 69): paired "depression"
  data, alternative "greater": V = 40, p-value = 0.01953; two-sample "permeability" data,
  alternative "greater": W = 35, p-value = 0.1272.
- Cohen (1988), Statistical Power Analysis, Table 2.4.1 (two-sided alpha .05, power .80): n per
  group 64 for d = .5 and 26 for d = .8; for d = .2 the exact noncentral-t answer is 394 (as G*Power
  gives; Cohen's printed table, built on an approximation, says 393). G*Power's paired (d_z = .5)
  answer is 34 pairs; one-tailed: 51 per group and 27 pairs.
- Hedges (1981): the exact small-sample factor J(df), checked against its closed forms at
  half-integer Gamma arguments, and the approximation 1 - 3 / (4 df - 1) for large df.
"""

from __future__ import annotations

import dataclasses
import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats as sps

from UltrasoundRefineLib import stats
from UltrasoundRefineLib.errors import UltrasoundRefineError

SLEEP_1 = [0.7, -1.6, -0.2, -1.2, -0.1, 3.4, 3.7, 0.8, 0.0, 2.0]
SLEEP_2 = [1.9, 0.8, 1.1, 0.1, -0.1, 4.4, 5.5, 1.6, 4.6, 3.4]


def _var(x):
    m = sum(x) / len(x)
    return sum((v - m) ** 2 for v in x) / (len(x) - 1)


def _mean(x):
    return sum(x) / len(x)


# ----------------------------------------------------------------------------- t-tests: sleep data


def test_student_matches_r_sleep_and_hand_formula():
    r = stats.compare(SLEEP_1, SLEEP_2, test="student")
    assert r.test == "student" and r.effect_size_name == "hedges_g"
    # R's printed figures
    assert r.statistic == pytest.approx(-1.8608, abs=5e-5)
    assert r.df == 18
    assert r.pvalue == pytest.approx(0.07919, abs=5e-6)
    assert r.ci_low == pytest.approx(-3.363874, abs=1e-6)
    assert r.ci_high == pytest.approx(0.203874, abs=1e-6)
    assert (r.mean_a, r.mean_b) == pytest.approx((0.75, 2.33), abs=1e-12)
    assert r.difference == pytest.approx(-1.58, abs=1e-12)
    # the textbook pooled-variance formulas, by hand
    n1, n2 = len(SLEEP_1), len(SLEEP_2)
    sp2 = ((n1 - 1) * _var(SLEEP_1) + (n2 - 1) * _var(SLEEP_2)) / (n1 + n2 - 2)
    se = math.sqrt(sp2 * (1 / n1 + 1 / n2))
    diff = _mean(SLEEP_1) - _mean(SLEEP_2)
    t = diff / se
    assert r.statistic == pytest.approx(t, rel=1e-12)
    assert r.pvalue == pytest.approx(2 * sps.t.sf(abs(t), 18), rel=1e-10)
    q = sps.t.ppf(0.975, 18)
    assert (r.ci_low, r.ci_high) == pytest.approx((diff - q * se, diff + q * se), rel=1e-12)
    assert r.confidence_interval().low == r.ci_low


def test_welch_matches_r_sleep_and_hand_df():
    r = stats.compare(SLEEP_1, SLEEP_2, test="welch")
    assert r.statistic == pytest.approx(-1.8608, abs=5e-5)
    assert r.df == pytest.approx(17.776, abs=5e-4)
    assert r.pvalue == pytest.approx(0.07939, abs=5e-6)
    assert r.ci_low == pytest.approx(-3.3654832, abs=1e-6)
    assert r.ci_high == pytest.approx(0.2054832, abs=1e-6)
    # Welch-Satterthwaite by hand
    v1, v2 = _var(SLEEP_1) / 10, _var(SLEEP_2) / 10
    df = (v1 + v2) ** 2 / (v1**2 / 9 + v2**2 / 9)
    assert r.df == pytest.approx(df, rel=1e-12)
    assert r.statistic == pytest.approx(-1.58 / math.sqrt(v1 + v2), rel=1e-12)


def test_welch_unequal_sizes_hand_formula():
    a = [0.951, 0.962, 0.948, 0.955, 0.970, 0.941, 0.958]
    b = [0.931, 0.960, 0.902, 0.945]
    r = stats.compare(a, b, test="welch")
    va, vb = _var(a) / len(a), _var(b) / len(b)
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    t = (_mean(a) - _mean(b)) / math.sqrt(va + vb)
    assert r.df == pytest.approx(df, rel=1e-12)
    assert r.statistic == pytest.approx(t, rel=1e-12)
    assert r.pvalue == pytest.approx(2 * sps.t.sf(abs(t), df), rel=1e-10)
    diff, half = _mean(a) - _mean(b), sps.t.ppf(0.975, df) * math.sqrt(va + vb)
    assert (r.ci_low, r.ci_high) == pytest.approx((diff - half, diff + half), rel=1e-12)
    assert (r.n_a, r.n_b) == (7, 4)


def test_paired_matches_r_sleep_and_hand_formula():
    r = stats.compare(SLEEP_1, SLEEP_2, test="paired")
    assert r.test == "paired" and r.effect_size_name == "cohens_dz"
    assert r.statistic == pytest.approx(-4.0621, abs=5e-5)
    assert r.df == 9
    assert r.pvalue == pytest.approx(0.002833, abs=5e-7)
    assert r.difference == pytest.approx(-1.58, abs=1e-12)
    assert r.ci_low == pytest.approx(-2.4598858, abs=1e-6)
    assert r.ci_high == pytest.approx(-0.7001142, abs=1e-6)
    d = [x - y for x, y in zip(SLEEP_1, SLEEP_2)]
    sd = math.sqrt(_var(d))
    t = _mean(d) / (sd / math.sqrt(10))
    assert r.statistic == pytest.approx(t, rel=1e-12)
    assert r.pvalue == pytest.approx(2 * sps.t.sf(abs(t), 9), rel=1e-10)
    assert r.effect_size == pytest.approx(_mean(d) / sd, rel=1e-12)


def test_one_sided_follows_scipy_direction():
    # "greater" asks whether a is larger: drug 2 (a) against drug 1 (b)
    r = stats.compare(SLEEP_2, SLEEP_1, test="paired", alternative="greater")
    assert r.statistic > 0 and r.difference == pytest.approx(1.58)
    assert r.pvalue == pytest.approx(0.002832890197384273 / 2, rel=1e-9)
    assert r.ci_high == math.inf and r.ci_low > 0
    assert stats.compare(SLEEP_2, SLEEP_1, test="paired", alternative="less").pvalue > 0.99


def test_confidence_level_is_honoured():
    r90 = stats.compare(SLEEP_1, SLEEP_2, test="paired", confidence=0.90)
    d = [x - y for x, y in zip(SLEEP_1, SLEEP_2)]
    half = sps.t.ppf(0.95, 9) * math.sqrt(_var(d) / 10)
    assert (r90.ci_low, r90.ci_high) == pytest.approx((-1.58 - half, -1.58 + half), rel=1e-12)
    assert r90.confidence == 0.90


# ----------------------------------------------------------------------------- rank tests


def test_wilcoxon_signed_rank_matches_r_example():
    x = [1.83, 0.50, 1.62, 2.48, 1.68, 1.88, 1.55, 3.06, 1.30]
    y = [0.878, 0.647, 0.598, 2.05, 1.06, 1.29, 1.06, 3.14, 1.29]
    r = stats.compare(x, y, test="wilcoxon", alternative="greater")
    assert r.test == "wilcoxon" and math.isnan(r.df)
    assert r.statistic == 40
    assert r.pvalue == pytest.approx(0.01953, abs=5e-6)
    assert r.pvalue == 10 / 512  # exact: 10 of the 2^9 sign patterns have V >= 40
    # Hodges-Lehmann: median of the Walsh averages, by brute force
    d = [a - b for a, b in zip(x, y)]
    walsh = sorted((d[i] + d[j]) / 2 for i in range(len(d)) for j in range(i, len(d)))
    assert r.hodges_lehmann == pytest.approx(float(np.median(walsh)), rel=1e-12)
    assert r.effect_size_name == "cohens_dz" and r.ci_method.startswith("paired t")


def test_mann_whitney_matches_r_example():
    x = [0.80, 0.83, 1.89, 1.04, 1.45, 1.38, 1.91, 1.64, 0.73, 1.46]
    y = [1.15, 0.88, 0.90, 0.74, 1.21]
    r = stats.compare(x, y, test="mannwhitney", alternative="greater")
    assert r.statistic == 35  # R's W is the U of x
    assert r.pvalue == pytest.approx(0.1272, abs=5e-5)
    # exact: count the rank-sum splits of 15 distinct values with U >= 35, out of C(15, 5)
    ranks = range(1, 16)
    hits = sum(1 for c in itertools.combinations(ranks, 10) if sum(c) - 55 >= 35)
    assert r.pvalue == pytest.approx(hits / math.comb(15, 10), rel=1e-12)
    hl = float(np.median([a - b for a in x for b in y]))
    assert r.hodges_lehmann == pytest.approx(hl, rel=1e-12)
    assert r.effect_size_name == "hedges_g" and r.ci_method.startswith("welch t")
    welch = stats.compare(x, y, test="welch", alternative="greater")
    assert (r.ci_low, r.ci_high) == (welch.ci_low, welch.ci_high)


# ----------------------------------------------------------------------------- effect sizes


def test_cohens_d_and_hedges_g_by_hand():
    a, b = [2.0, 4.0, 6.0], [1.0, 2.0, 3.0]
    # means 4 and 2, variances 4 and 1, pooled sd sqrt((2*4 + 2*1) / 4) = sqrt(2.5)
    d = 2 / math.sqrt(2.5)
    assert stats.cohens_d(a, b) == pytest.approx(d, rel=1e-14)
    assert stats.cohens_d(b, a) == pytest.approx(-d, rel=1e-14)
    # J(4) = Gamma(2) / (sqrt(2) Gamma(3/2)) = 2 / sqrt(2 pi)
    assert stats.hedges_g(a, b) == pytest.approx(d * 2 / math.sqrt(2 * math.pi), rel=1e-12)
    assert stats.compare(a, b, test="student").effect_size == stats.hedges_g(a, b)


def test_cohens_dz_by_hand():
    a, b = [3.0, 5.0, 4.0], [1.0, 2.0, 4.0]
    # differences 2, 3, 0: mean 5/3, sd sqrt(7/3)
    assert stats.cohens_d(a, b, paired=True) == pytest.approx((5 / 3) / math.sqrt(7 / 3), rel=1e-14)


@pytest.mark.parametrize(
    "df, closed_form",
    [
        # J(df) = Gamma(df/2) / (sqrt(df/2) Gamma((df-1)/2)) with Gamma(1/2) = sqrt(pi),
        # Gamma(x + 1) = x Gamma(x): worked by hand
        (2, 1 / math.sqrt(math.pi)),
        (3, (math.sqrt(math.pi) / 2) / math.sqrt(1.5)),
        (4, math.sqrt(2 / math.pi)),
        (5, (3 * math.sqrt(math.pi) / 4) / math.sqrt(2.5)),
        (10, 24 / (math.sqrt(5) * (105 / 16) * math.sqrt(math.pi))),
    ],
)
def test_hedges_exact_correction_closed_forms(df, closed_form):
    assert stats.hedges_correction(df) == pytest.approx(closed_form, rel=1e-13)


def test_hedges_correction_approximation():
    # the usual approximation 1 - 3 / (4 df - 1) converges to the exact factor
    for df in (20, 50, 200):
        assert abs(stats.hedges_correction(df) - (1 - 3 / (4 * df - 1))) < 2 / df**2


# ----------------------------------------------------------------------------- Holm


def test_holm_hand_example():
    # sorted 0.005, 0.01, 0.03, 0.04 -> x4, x3, x2, x1 = 0.02, 0.03, 0.06, 0.04 -> running max
    # 0.02, 0.03, 0.06, 0.06 -> back in input order:
    got = stats.holm([0.01, 0.04, 0.03, 0.005])
    np.testing.assert_allclose(got, [0.03, 0.06, 0.06, 0.02], rtol=1e-14)


def test_holm_caps_at_one_and_keeps_nan_out_of_the_count():
    np.testing.assert_allclose(stats.holm([0.5, 0.6, 0.01]), [1.0, 1.0, 0.03], rtol=1e-14)
    got = stats.holm([0.01, math.nan, 0.04])
    assert math.isnan(got[1])
    np.testing.assert_allclose(got[[0, 2]], [0.02, 0.04], rtol=1e-14)
    assert stats.holm([]).size == 0
    with pytest.raises(ValueError):
        stats.holm([0.5, 1.5])


def _holm_brute_force(p):
    """Holm's definition: max over the more significant of min(1, (m - rank + 1) p)."""
    m = len(p)
    order = sorted(range(m), key=lambda i: (p[i], i))
    rank = {i: r for r, i in enumerate(order)}
    return [max(min(1.0, (m - rank[j]) * p[j]) for j in range(m) if rank[j] <= rank[i]) for i in range(m)]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(0, 1), min_size=1, max_size=12))
def test_holm_properties(p):
    got = stats.holm(p)
    np.testing.assert_allclose(got, _holm_brute_force(p), rtol=1e-12, atol=0)
    assert np.all(got >= np.asarray(p)) and np.all(got <= 1)
    order = np.argsort(p, kind="stable")
    assert np.all(np.diff(got[order]) >= 0)  # monotone in the raw p-values


# ----------------------------------------------------------------------------- power


@pytest.mark.parametrize(
    "effect, test, alternative, n",
    [
        (0.5, "student", "two-sided", 64),
        (0.8, "student", "two-sided", 26),
        (0.2, "student", "two-sided", 394),
        (-0.5, "student", "two-sided", 64),  # the sign of the observed effect does not matter
        (0.5, "paired", "two-sided", 34),
        (0.5, "student", "greater", 51),
        (0.5, "paired", "greater", 27),
    ],
)
def test_repeats_for_power_matches_published_tables(effect, test, alternative, n):
    assert stats.repeats_for_power(effect, 0.05, 0.8, test, alternative=alternative) == n


def test_repeats_for_power_is_the_smallest_n():
    n = stats.repeats_for_power(1.3, 0.05, 0.8, "student")

    def power(k):  # by hand: two-sided, df 2k - 2, noncentrality d sqrt(k / 2)
        c = sps.t.ppf(0.975, 2 * k - 2)
        nc = 1.3 * math.sqrt(k / 2)
        return sps.nct.sf(c, 2 * k - 2, nc) + sps.nct.cdf(-c, 2 * k - 2, nc)

    assert power(n) >= 0.8 > power(n - 1)
    assert stats.repeats_for_power(10.0, 0.05, 0.8, "student") == 2


def test_repeats_for_power_refuses_impossible():
    for bad in (0.0, math.nan, math.inf):
        with pytest.raises(ValueError):
            stats.repeats_for_power(bad)
    with pytest.raises(ValueError, match="more than 1000"):
        stats.repeats_for_power(0.01, max_n=1000)
    with pytest.raises(ValueError):
        stats.repeats_for_power(0.5, test="welch")


# ----------------------------------------------------------------------------- describe


def test_describe_by_hand():
    s = stats.describe(SLEEP_1)
    assert s.n == 10 and s.mean == pytest.approx(0.75, abs=1e-14)
    assert s.sd == pytest.approx(math.sqrt(_var(SLEEP_1)), rel=1e-14)
    assert s.sd == pytest.approx(1.78901, abs=5e-6)  # R: sd(sleep$extra[1:10])
    assert s.sem == pytest.approx(s.sd / math.sqrt(10), rel=1e-14)
    half = sps.t.ppf(0.975, 9) * s.sem
    assert s.ci95 == pytest.approx((0.75 - half, 0.75 + half), rel=1e-12)
    assert s.ci95 == pytest.approx((-0.5297804, 2.0297804), abs=1e-7)  # R: t.test(sleep$extra[1:10])


# ----------------------------------------------------------------------------- an experiment


RUNS = {
    "auto_only": [0.930, 0.925, 0.941, 0.928, 0.935],
    "pretrain+finetune": [0.962, 0.958, 0.966, 0.960, 0.957],
    "finetune_only": [0.938, 0.929, 0.945, 0.931, 0.936],
}


def _assert_same(got, want):
    np.testing.assert_equal(dataclasses.asdict(got), dataclasses.asdict(want))  # nan == nan here


def test_compare_conditions_unpaired():
    rows = stats.compare_conditions(RUNS, "auto_only", paired=False, alpha=0.05)
    assert [(r.a, r.b) for r in rows] == [("pretrain+finetune", "auto_only"), ("finetune_only", "auto_only")]
    ps = []
    for r in rows:
        ref = stats.compare(RUNS[r.a], RUNS[r.b], test="student")
        _assert_same(r.primary, ref)
        assert r.test == "student" and r.p == ref.pvalue
        assert set(r.checks) == {"welch", "mannwhitney"}
        _assert_same(r.checks["welch"], stats.compare(RUNS[r.a], RUNS[r.b], test="welch"))
        _assert_same(r.checks["mannwhitney"], stats.compare(RUNS[r.a], RUNS[r.b], test="mannwhitney"))
        assert r.n_for_power == stats.repeats_for_power(ref.effect_size, 0.05, 0.8, "student")
        ps.append(ref.pvalue)
    np.testing.assert_array_equal([r.p_holm for r in rows], stats.holm(ps))
    best = rows[0]
    assert best.primary.difference > 0 and best.effect_size > 0  # a scored higher: positive
    assert best.significant and best.p_holm < 0.05
    assert not rows[1].significant
    d = best.to_dict()
    assert tuple(d)[: len(stats.COMPARISON_COLUMNS)] == stats.COMPARISON_COLUMNS
    assert d["a"] == "pretrain+finetune" and d["test"] == "student" and d["n_a"] == 5
    assert d["p_welch"] == best.checks["welch"].pvalue and "p_mannwhitney" in d


def test_compare_conditions_paired_and_explicit_pairs():
    rows = stats.compare_conditions(
        RUNS,
        "auto_only",
        paired=True,
        pairs=[("pretrain+finetune", "finetune_only"), ("finetune_only", "auto_only")],
    )
    assert [(r.a, r.b) for r in rows] == [
        ("pretrain+finetune", "auto_only"),
        ("finetune_only", "auto_only"),
        ("pretrain+finetune", "finetune_only"),
    ]
    for r in rows:
        assert r.test == "paired" and r.primary.effect_size_name == "cohens_dz"
        _assert_same(r.primary, stats.compare(RUNS[r.a], RUNS[r.b], test="paired"))
        _assert_same(r.checks["wilcoxon"], stats.compare(RUNS[r.a], RUNS[r.b], test="wilcoxon"))
        assert r.n_for_power == stats.repeats_for_power(r.effect_size, 0.05, 0.8, "paired")
        assert set(r.checks) == {"student", "welch", "wilcoxon"}
    np.testing.assert_array_equal([r.p_holm for r in rows], stats.holm([r.p for r in rows]))
    only_pairs = stats.compare_conditions(RUNS, None, paired=False, pairs=[("finetune_only", "auto_only")])
    assert len(only_pairs) == 1 and only_pairs[0].p_holm == only_pairs[0].p


def test_compare_conditions_degenerate_row_is_never_significant():
    runs = {"base": [0.9, 0.9, 0.9], "same": [0.9, 0.9, 0.9], "better": [0.95, 0.96, 0.97]}
    rows = stats.compare_conditions(runs, "base", paired=False)
    same = rows[0]
    assert math.isnan(same.p) and math.isnan(same.p_holm) and not same.significant
    assert "no spread" in same.primary.note and same.n_for_power is None
    # Holm counts only the comparison that could be tested
    assert rows[1].p_holm == pytest.approx(rows[1].p, rel=1e-14)


def test_compare_conditions_bad_names():
    with pytest.raises(ValueError, match="baseline"):
        stats.compare_conditions(RUNS, "nope", paired=False)
    with pytest.raises(ValueError, match="nope"):
        stats.compare_conditions(RUNS, None, paired=False, pairs=[("nope", "auto_only")])
    with pytest.raises(ValueError, match="nothing to compare"):
        stats.compare_conditions({"only": [0.9, 0.8]}, "only", paired=False)


# ----------------------------------------------------------------------------- A/A calibration


# 2000 A/A experiments of 5 vs 5 runs: the count of p < .05 is binomial(2000, .05) for a calibrated
# test, standard error sqrt(.05 * .95 / 2000) = 0.0049, so [0.035, 0.065] is about +-3 SE (a
# calibrated test lands outside for ~0.2 % of seeds; the seed is fixed). The band still catches the
# usual bugs: a normal instead of a t reference gives ~0.086 at df 8, a one-sided p reported as
# two-sided 0.10, a two-sided p halved twice 0.025.
@pytest.mark.parametrize("test", ["student", "paired"])
def test_aa_false_positive_rate_is_alpha(test):
    rate = stats.aa_false_positive_rate(n_experiments=2000, n_repeats=5, alpha=0.05, seed=20230403, test=test)
    assert 0.035 <= rate <= 0.065


def test_aa_rank_tests_are_conservative_with_few_runs():
    # exact Mann-Whitney at 5 vs 5 can only reach p = 2/252, 4/252, 8/252 below .05: rate ~0.032
    rate = stats.aa_false_positive_rate(600, 5, 0.05, seed=7, test="mannwhitney")
    assert rate <= 0.05
    # the smallest two-sided Wilcoxon p with 5 pairs is 2/32 = 0.0625: it can never reject at .05
    assert stats.aa_false_positive_rate(100, 5, 0.05, seed=7, test="wilcoxon") == 0.0


def test_aa_is_deterministic():
    assert stats.aa_false_positive_rate(50, 4, 0.2, seed=3) == stats.aa_false_positive_rate(50, 4, 0.2, seed=3)


# ----------------------------------------------------------------------------- degenerate input


@pytest.mark.parametrize("test", stats.TESTS)
def test_fewer_than_two_runs_names_the_condition(test):
    with pytest.raises(ValueError, match="'finetune'.*at least 2 runs"):
        stats.compare([0.9], [0.8], test=test, names=("finetune", "base"))


def test_nan_names_the_condition():
    runs = {"base": [0.9, 0.91, 0.92], "pretrain": [0.93, math.nan, 0.95]}
    with pytest.raises(ValueError, match="'pretrain'.*NaN") as info:
        stats.compare_conditions(runs, "base", paired=False)
    assert isinstance(info.value, UltrasoundRefineError)  # the CLI prints it on one line
    with pytest.raises(ValueError, match="infinity"):
        stats.compare([0.9, math.inf], [0.8, 0.7], test="student")
    with pytest.raises(ValueError, match="NaN"):
        stats.describe([0.9, math.nan])


def test_paired_needs_equal_lengths():
    with pytest.raises(ValueError, match="'x' and 'y'.*3 and 2"):
        stats.compare([1, 2, 3], [1, 2], test="paired", names=("x", "y"))


def test_bad_arguments():
    with pytest.raises(ValueError, match="test must be"):
        stats.compare([1, 2], [3, 4], test="ztest")
    with pytest.raises(ValueError, match="alternative"):
        stats.compare([1, 2], [3, 4], test="student", alternative="two_sided")
    with pytest.raises(ValueError, match="confidence"):
        stats.compare([1, 2], [3, 4], test="student", confidence=95)
    with pytest.raises(ValueError, match="flat list"):
        stats.compare([[1, 2], [3, 4]], [3, 4], test="student")


@pytest.mark.filterwarnings("error")  # no scipy RuntimeWarning leaks out either
@pytest.mark.parametrize(
    "test, a, b",
    [
        ("student", [0.9, 0.9, 0.9], [0.8, 0.8, 0.8]),
        ("welch", [0.9, 0.9, 0.9], [0.9, 0.9, 0.9]),
        ("paired", [0.9, 0.8, 0.7], [0.8, 0.7, 0.6]),
        ("mannwhitney", [0.9, 0.9, 0.9], [0.9, 0.9]),
        ("wilcoxon", [0.9, 0.8, 0.7], [0.9, 0.8, 0.7]),
    ],
)
def test_no_spread_gives_nan_with_a_note(test, a, b):
    r = stats.compare(a, b, test=test)
    assert math.isnan(r.pvalue) and math.isnan(r.statistic) and math.isnan(r.effect_size)
    assert r.note and r.test == test
    assert r.difference == pytest.approx(np.mean(a) - np.mean(b))


def test_one_constant_group_is_fine():
    r = stats.compare([0.9, 0.9, 0.9], [0.8, 0.85, 0.82], test="welch")
    assert r.pvalue < 0.05 and r.df == pytest.approx(2.0) and not r.note
