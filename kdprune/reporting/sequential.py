"""The sequential verdict's stopping rule: seeds come in batches (looks), and at each look the
undecided contrasts of a family are tested at that look's share of alpha, Holm-adjusted within
the family, until every contrast is decided or the cap of seeds is reached.

The share of alpha per look comes from a Lan-DeMets alpha-spending function (Lan & DeMets 1983,
"Discrete sequential boundaries for clinical trials", Biometrika 70(3):659-663) over the planned
looks n_1 < n_2 < ... < cap, information fraction t_k = n_k / cap:
  O'Brien-Fleming type (default): alpha(t) = 2 - 2 * Phi(z_{1 - alpha/2} / sqrt(t))
  Pocock type:                     alpha(t) = alpha * ln(1 + (e - 1) * t)
Look k tests at alpha_k = alpha(t_k) - alpha(t_{k-1}). Since the alpha_k sum to alpha, the union
bound keeps the family-wise rate of a false *A better* / *B better* (and of a false
*equivalent*) at or below alpha over all looks together, whatever the correlation between
looks: conservative against the exact group-sequential boundaries, but valid at any look and
with the contrasts of a family sharing arms. Holm within the family at each look keeps each
look's family-wise rate at alpha_k (statsmodels' `multipletests`, `inference.adjust`).

The spending functions are written here by hand: they are one line each, and the Python
packages for confidence sequences (`confseq` 0.0.11 is an sdist that needs a C++ build) do not
provide group-sequential spending; scipy gives Phi.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from kdprune.reporting.inference import (
    A_BETTER,
    ALPHA,
    B_BETTER,
    UNDECIDED,
    Estimate,
    adjust,
    equivalent_words,
    paired_test,
)
from kdprune.sweeping.design import BATCH, CAP, SPENDING_NAMES, START


def obrien_fleming(t: float, alpha: float = ALPHA) -> float:
    """Lan-DeMets O'Brien-Fleming-type spending: alpha spent by information fraction t."""
    from scipy.stats import norm

    if t <= 0:
        return 0.0
    return float(2 - 2 * norm.cdf(norm.ppf(1 - alpha / 2) / math.sqrt(min(t, 1.0))))


def pocock(t: float, alpha: float = ALPHA) -> float:
    """Lan-DeMets Pocock-type spending: alpha spent by information fraction t."""
    return alpha * math.log(1 + (math.e - 1) * min(max(t, 0.0), 1.0))


SPENDING: dict[str, Callable[[float, float], float]] = dict(
    zip(SPENDING_NAMES, (obrien_fleming, pocock), strict=True)
)


def planned_looks(start: int = START, batch: int = BATCH, cap: int = CAP) -> list[int]:
    """Seeds per contrast at each look: start, start + batch, ..., and the cap last."""
    if not 2 <= start <= cap or batch < 1:
        raise ValueError(f"need 2 <= start <= cap and batch >= 1, got {start}, {batch}, {cap}")
    looks = list(range(start, cap, batch))
    return [*looks, cap] if not looks or looks[-1] != cap else looks


def look_alphas(
    looks: Sequence[int], alpha: float = ALPHA, spending: str = "obrien-fleming"
) -> list[float]:
    """Each look's share of alpha: the increments of the spending function at n_k / cap."""
    spend = SPENDING[spending]
    spent = [spend(n / looks[-1], alpha) for n in looks]
    return [b - a for a, b in zip([0.0, *spent[:-1]], spent, strict=True)]


def _word(mean: float, p_diff: float, p_equiv: float, alpha: float, margin: float) -> str | None:
    """A decision at one look (None: still undecided)."""
    if p_diff < alpha:
        return A_BETTER if mean > 0 else B_BETTER
    if p_equiv < alpha:
        return equivalent_words(margin)
    return None


def look_decisions(
    tests: Sequence[Estimate], alpha: float, margin: float, correction: str = "holm"
) -> list[str | None]:
    """One look over a family: difference and TOST p-values Holm- (or BH-) adjusted within the
    family, each contrast decided when an adjusted p-value is below the look's alpha."""
    p_diff = adjust([t.p_diff for t in tests], correction)
    p_equiv = adjust([t.p_equiv for t in tests], correction)
    return [
        _word(t.mean, pd_, pe, alpha, margin)
        for t, pd_, pe in zip(tests, p_diff, p_equiv, strict=True)
    ]


@dataclass(frozen=True)
class Decision:
    """Where one contrast ended: its verdict, the look (1-based) and seeds that decided it."""

    verdict: str
    look: int | None  # None: undecided at the cap
    n: int
    alpha: float  # the alpha of the deciding look (NaN when undecided)

    @property
    def decided(self) -> bool:
        """Whether the contrast was decided before or at the cap."""
        return self.look is not None


def undecided(n: int) -> Decision:
    """A contrast still undecided after the last look, at n seeds."""
    return Decision(f"{UNDECIDED} at n = {n} (cap)", None, n, math.nan)


def simulate(
    diffs: np.ndarray,
    margin: float,
    looks: Sequence[int],
    alpha: float = ALPHA,
    spending: str = "obrien-fleming",
) -> list[Decision]:
    """The stopping rule on a family of per-seed differences (contrasts x cap seeds): at each
    look the undecided contrasts see their first n_k differences, decided ones keep theirs."""
    alphas = look_alphas(looks, alpha, spending)
    seen = [looks[0]] * len(diffs)
    done: list[Decision | None] = [None] * len(diffs)
    for k, (n, a) in enumerate(zip(looks, alphas, strict=True)):
        seen = [s if d is not None else n for s, d in zip(seen, done, strict=True)]
        tests = [paired_test(row[:s], margin) for row, s in zip(diffs, seen, strict=True)]
        for i, word in enumerate(look_decisions(tests, a, margin)):
            if done[i] is None and word is not None:
                done[i] = Decision(word, k + 1, n, a)
        if all(d is not None for d in done):
            break
    return [d if d is not None else undecided(s) for d, s in zip(done, seen, strict=True)]


def _row_estimate(row, analysis: str) -> Estimate:  # row: a verdicts.csv row (pandas Series)
    """The estimate a verdicts row's chosen analysis gives (its raw p-values)."""
    mean = row["blocked_mean"] if analysis == "blocked" else row["mean_diff"]
    return Estimate(int(row["n"]), mean, math.nan, math.nan, math.nan, math.nan,
                    row["p_raw"], row["p_equiv_raw"])  # fmt: skip


def table_decisions(table, alpha: float, margin: float, correction: str = "holm") -> list:
    """One look over a verdicts table (`verdicts.verdicts`): each row's decision at this look's
    alpha (None: undecided), the raw p-values of its analysis adjusted within its family."""
    out: list[str | None] = [None] * len(table)
    for _, members in table.groupby("family", sort=False):
        tests = [_row_estimate(row, row["analysis"]) for _, row in members.iterrows()]
        for i, word in zip(
            members.index, look_decisions(tests, alpha, margin, correction), strict=True
        ):
            out[table.index.get_loc(i)] = word
    return out
