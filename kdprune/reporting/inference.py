"""The tests behind the verdicts: per contrast a paired t test and a paired TOST (equivalence
within a margin), per compression level a blocked linear model (arm + seed), and the
multiplicity correction within a declared family. scipy and statsmodels do the arithmetic;
this module says which test answers which question and turns adjusted p-values into words.

A contrast is *A better* / *B better* when its adjusted two-sided p-value (H0: A − B = 0) is
below ALPHA; *equivalent within ±m points* when its adjusted TOST p-value (H0: |A − B| ≥ m, the
larger of the two one-sided p-values) is below ALPHA; otherwise *undecided at n = k*.
"""

from __future__ import annotations

import gc
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

ALPHA = 0.05
NO_SPREAD = 1e-12  # a standard error below this is rounding, not spread
DEFAULT_MARGIN = 0.25  # points of test accuracy (0.0025 as a fraction)
# --correction choices -> statsmodels.stats.multitest.multipletests methods, and their names.
CORRECTIONS = {"holm": "holm", "bh": "fdr_bh"}
CORRECTION_NAMES = {"holm": "Holm", "bh": "Benjamini–Hochberg"}
# --analysis choices: which test's p-values the verdict uses.
ANALYSES = ("blocked", "paired")
A_BETTER, B_BETTER = "A better", "B better"
EQUIVALENT = "equivalent"  # the verdict starts with this word: "equivalent within ±0.25 points"
UNDECIDED = "undecided"


@dataclass(frozen=True)
class Estimate:
    """One contrast's estimate of A − B, its 95% interval and the p-values of its questions."""

    n: int
    mean: float
    se: float
    df: float
    low: float
    high: float
    p_diff: float  # two-sided, H0: A − B = 0
    p_equiv: float  # TOST, H0: |A − B| >= margin

    @classmethod
    def empty(cls, n: int = 0, mean: float = math.nan) -> Estimate:
        """A contrast without an interval (no seed, or one seed)."""
        return cls(n, mean, *(math.nan,) * 6)


def _tost_p(mean: float, se: float, df: float, margin: float) -> float:
    """TOST p-value from an estimate, its standard error and degrees of freedom: the larger
    of P(T >= (mean + m) / se) and P(T <= (mean - m) / se), T ~ t(df) (Schuirmann 1987)."""
    from scipy import stats

    if not se > 0:
        return math.nan
    lower = stats.t.sf((mean + margin) / se, df)
    upper = stats.t.cdf((mean - margin) / se, df)
    return float(max(lower, upper))


def paired_test(diffs: Sequence[float], margin: float) -> Estimate:
    """Paired t test and paired TOST on the per-seed differences A − B (NaN left out).

    `margin` is a fraction of accuracy (0.0025 for a quarter of a point).
    """
    from scipy import stats
    from statsmodels.stats.weightstats import ttost_paired

    x = np.asarray([d for d in diffs if d is not None and not math.isnan(d)], dtype=float)
    if len(x) < 2:
        return Estimate.empty(len(x), float(x.mean()) if len(x) else math.nan)
    mean, se = float(x.mean()), float(x.std(ddof=1) / math.sqrt(len(x)))
    # Every difference equal (to rounding: one test image of 10,000 is 1e-4): no spread, no test
    # (scipy would warn of catastrophic cancellation and return an arbitrary p).
    if not se > NO_SPREAD:
        return Estimate(len(x), mean, se, len(x) - 1, mean, mean, math.nan, math.nan)
    result = stats.ttest_1samp(x, 0.0)
    ci = result.confidence_interval(1 - ALPHA)
    p_equiv = ttost_paired(x, np.zeros_like(x), -margin, margin)[0]
    low, high, p_diff = float(ci.low), float(ci.high), float(result.pvalue)
    return Estimate(len(x), mean, se, len(x) - 1, low, high, p_diff, float(p_equiv))


def blocked_model(data: pd.DataFrame):  # -> statsmodels RegressionResults, or None
    """OLS of `y ~ 0 + C(arm) + C(seed)` over one compression level's per-seed values
    (columns arm, seed, y): every arm's mean with seed as block; None without residual df."""
    import statsmodels.formula.api as smf

    data = data.dropna(subset=["y", "seed"])
    if data["arm"].nunique() < 2 or data["seed"].nunique() < 2:
        return None
    data = data.assign(seed=data["seed"].astype(str))
    fit = smf.ols("y ~ 0 + C(arm) + C(seed)", data=data).fit()
    return fit if fit.df_resid >= 1 else None


def blocked_test(fit, a: str, b: str, margin: float) -> Estimate:
    """The contrast arm a − arm b in a blocked model: estimate, 95% interval and p-values on
    the model's residual degrees of freedom (shared by every contrast of the level)."""
    names = list(fit.model.exog_names) if fit is not None else []
    if f"C(arm)[{a}]" not in names or f"C(arm)[{b}]" not in names:
        return Estimate.empty()
    contrast = np.zeros(len(names))
    contrast[names.index(f"C(arm)[{a}]")], contrast[names.index(f"C(arm)[{b}]")] = 1.0, -1.0
    result = fit.t_test(contrast)
    mean, se, df = float(result.effect[0]), float(result.sd[0, 0]), float(result.df_denom)
    low, high = result.conf_int(alpha=ALPHA)[0]
    frame = fit.model.data.frame
    n = len(set(frame.loc[frame["arm"] == a, "seed"]) & set(frame.loc[frame["arm"] == b, "seed"]))
    p_diff = float(result.pvalue) if se > 0 else math.nan
    return Estimate(n, mean, se, df, float(low), float(high), p_diff, _tost_p(mean, se, df, margin))


def adjust(pvalues: Sequence[float], correction: str) -> np.ndarray:
    """The p-values adjusted within one family (`holm` or `bh`); NaN stays NaN, uncounted."""
    from statsmodels.stats.multitest import multipletests

    p = np.asarray(pvalues, dtype=float)
    out = np.full(len(p), math.nan)
    ok = ~np.isnan(p)
    if not ok.any():
        return out
    # statsmodels' Holm branch ends with gc.collect(), which walks every object of a process
    # that holds torch (~0.6 s a call): freeze the objects that exist already, so it does not.
    gc.freeze()
    try:
        out[ok] = multipletests(p[ok], alpha=ALPHA, method=CORRECTIONS[correction])[1]
    finally:
        gc.unfreeze()
    return out


def equivalent_words(margin: float) -> str:
    """The verdict of an equivalence: `equivalent within ±0.25 points` (margin a fraction)."""
    return f"{EQUIVALENT} within ±{100 * margin:g} points"


def classify(n: int, mean: float, p_diff: float, p_equiv: float, margin: float) -> str:
    """The verdict from a contrast's adjusted p-values: A better, B better, equivalent within
    ±m points, or undecided at n = k (never "no difference")."""
    if n == 0:
        return "no shared seed"
    if n == 1:
        return "n = 1: no interval"
    if math.isnan(p_diff) and math.isnan(p_equiv):
        return f"no test at n = {n}"
    if p_diff < ALPHA:
        return A_BETTER if mean > 0 else B_BETTER
    if p_equiv < ALPHA:
        return equivalent_words(margin)
    return f"{UNDECIDED} at n = {n}"


def family_verdicts(
    tests: Sequence[Estimate], margin: float, correction: str = "holm"
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Adjusted difference and equivalence p-values (each adjusted within the family) and the
    verdict of every contrast of one family."""
    p_diff = adjust([t.p_diff for t in tests], correction)
    p_equiv = adjust([t.p_equiv for t in tests], correction)
    said = [
        classify(t.n, t.mean, pd_, pe, margin)
        for t, pd_, pe in zip(tests, p_diff, p_equiv, strict=True)
    ]
    return p_diff, p_equiv, said
