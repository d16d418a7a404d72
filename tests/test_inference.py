"""The statistics behind the verdicts, checked directly: planted effects, equivalence, the
family-wise error rate of null families under Holm, and the blocked model against a hand-made
design. Fixed numpy seeds; no runs are read."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from kdprune.reporting.inference import (
    A_BETTER,
    B_BETTER,
    Estimate,
    adjust,
    blocked_model,
    blocked_test,
    classify,
    family_verdicts,
    paired_test,
)

MARGIN = 0.0025  # 0.25 points


def test_a_planted_half_point_difference_is_a_better() -> None:
    rng = np.random.default_rng(1)
    diffs = rng.normal(0.005, 0.002, size=5)  # 0.5 points, sd 0.2 points, 5 seeds
    test = paired_test(diffs, MARGIN)
    (_, _, (said,)) = family_verdicts([test], MARGIN)
    assert said == A_BETTER
    (_, _, (said,)) = family_verdicts([paired_test(-diffs, MARGIN)], MARGIN)
    assert said == B_BETTER


def test_no_difference_with_enough_seeds_is_equivalent_and_few_seeds_undecided() -> None:
    rng = np.random.default_rng(2)
    diffs = rng.normal(0.0, 0.002, size=10)
    (_, _, (said,)) = family_verdicts([paired_test(diffs, MARGIN)], MARGIN)
    assert said == "equivalent within ±0.25 points"
    (_, _, (said,)) = family_verdicts([paired_test(diffs[:2], MARGIN)], MARGIN)
    assert said == "undecided at n = 2"  # never "no difference"


def _null_family_tests(rng: np.random.Generator, contrasts: int, seeds: int) -> list[Estimate]:
    """One family where nothing differs: paired t and TOST p-values of every contrast, computed
    for the whole family at once with scipy (paired_test itself is checked against scipy above)."""
    diffs = rng.normal(0.0, 0.002, size=(contrasts, seeds))
    p_diff = stats.ttest_1samp(diffs, 0.0, axis=1).pvalue
    lower = stats.ttest_1samp(diffs, -MARGIN, axis=1, alternative="greater").pvalue
    upper = stats.ttest_1samp(diffs, MARGIN, axis=1, alternative="less").pvalue
    mean = diffs.mean(axis=1)
    return [
        Estimate(seeds, m, math.nan, seeds - 1, math.nan, math.nan, p, max(lo, up))
        for m, p, lo, up in zip(mean, p_diff, lower, upper, strict=True)
    ]


def test_holm_keeps_the_family_wise_false_verdict_rate_at_five_percent() -> None:
    rng = np.random.default_rng(0)
    families, contrasts, seeds = 200, 30, 5
    false_holm = false_raw = 0
    for _ in range(families):
        tests = _null_family_tests(rng, contrasts, seeds)
        _, _, said = family_verdicts(tests, MARGIN, "holm")
        false_holm += any(s in (A_BETTER, B_BETTER) for s in said)
        false_raw += any(t.p_diff < 0.05 for t in tests)
    # Holm's exact rate here is 1 - (1 - 0.05/30)^30 = 4.9%; 200 families estimate it with a
    # standard error of 1.5 points, so the check is that the count is consistent with <= 5%
    # (one-sided binomial test), not that this sample of 200 lies below 5%.
    assert stats.binomtest(false_holm, families, 0.05, alternative="greater").pvalue > 0.01
    assert false_holm / families < 0.1
    assert false_raw / families > 0.5  # uncorrected, most null families claim a difference


def test_adjusted_p_values_are_statsmodels_holm_and_bh() -> None:
    p = [0.01, 0.04, 0.03, 0.2, math.nan]
    holm = adjust(p, "holm")
    # Holm by hand: sorted 0.01, 0.03, 0.04, 0.2 times 4, 3, 2, 1, running maximum
    assert holm[:4] == pytest.approx([0.04, 0.09, 0.09, 0.2]) and math.isnan(holm[4])
    bh = adjust(p, "bh")
    # BH by hand: p * m / rank, running minimum from the top
    assert bh[:4] == pytest.approx([0.04, 0.0533333, 0.0533333, 0.2], rel=1e-5)


def test_tost_equals_the_larger_one_sided_p_value() -> None:
    diffs = np.array([0.001, -0.0005, 0.0002, 0.0008, -0.0001])
    test = paired_test(diffs, MARGIN)
    lower = stats.ttest_1samp(diffs, -MARGIN, alternative="greater").pvalue
    upper = stats.ttest_1samp(diffs, MARGIN, alternative="less").pvalue
    assert test.p_equiv == pytest.approx(max(lower, upper))
    assert test.p_diff == pytest.approx(stats.ttest_1samp(diffs, 0.0).pvalue)


def test_the_blocked_model_shares_its_residual_degrees_of_freedom() -> None:
    rng = np.random.default_rng(3)
    arms, seeds = ["a", "b", "c", "d", "e", "f"], range(3)
    rows = [
        {"arm": arm, "seed": s, "y": 0.8 + 0.003 * i + 0.01 * s + rng.normal(0, 0.001)}
        for i, arm in enumerate(arms)
        for s in seeds
    ]
    fit = blocked_model(pd.DataFrame(rows))
    test = blocked_test(fit, "b", "a", MARGIN)
    assert test.df == 10  # 18 values - 6 arms - 2 seed effects, not n - 1 = 2
    frame = pd.DataFrame(rows).pivot(index="seed", columns="arm", values="y")
    assert test.mean == pytest.approx((frame["b"] - frame["a"]).mean())  # balanced design
    assert test.n == 3 and test.low < test.mean < test.high


@pytest.mark.parametrize(
    ("n", "mean", "p_diff", "p_equiv", "said"),
    [
        (3, 0.01, 0.01, 0.9, A_BETTER),
        (3, -0.01, 0.01, 0.9, B_BETTER),
        (3, 0.0, 0.5, 0.01, "equivalent within ±0.25 points"),
        (3, 0.0, 0.5, 0.5, "undecided at n = 3"),
        (3, 0.0, 0.05, 0.05, "undecided at n = 3"),  # at alpha: not below it
        (1, 0.01, math.nan, math.nan, "n = 1: no interval"),
        (0, math.nan, math.nan, math.nan, "no shared seed"),
    ],
)
def test_verdict_words_at_the_edges(
    n: int, mean: float, p_diff: float, p_equiv: float, said: str
) -> None:
    assert classify(n, mean, p_diff, p_equiv, MARGIN) == said
