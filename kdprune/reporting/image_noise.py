"""Test-set sampling in the verdicts: per contrast, an interval over seeds × test images and a
per-seed exact McNemar test, beside the seed-only analyses of `inference`.

Every run is tested on the same fixed test set, so the seed intervals hold for these test images
only: a paired difference on N images has a sampling error of its own, about
sqrt(discordant share / N) (0.14 to 0.24 points when 2% to 6% of 10,000 images are discordant),
that no seed varies. Two numbers bring it in:

- **Seeds × images interval**: a bootstrap of A − B's accuracy (mean over seeds of the
  difference on the test images) that resamples the seeds (pairs) with replacement and the test
  images with replacement, with *one* image resample shared by every seed and both sides of a
  replicate. The images are crossed with the seeds, not nested in them (every seed sees the
  same test set), so resampling them afresh within each seed would average the test set's own
  error away by the number of seeds; resampling seeds and images independently is the pigeonhole
  bootstrap for crossed designs (Owen 2007, "The pigeonhole bootstrap", Ann. Appl. Stat. 1(2)).
  No bootstrap of a crossed design is exact (McCullagh 2000, Bernoulli 6); this one errs wide:
  the seed and the image parts of the variance are counted once, the part specific to one seed
  and one image up to about three times (measured on synthetic data where only that part
  varies: 1.8× the variance at 2 seeds, 2.9× at 8). 95% percentile interval,
  REPS replicates, `np.random.default_rng(RNG_SEED)` per contrast (the same numbers in every
  report). Written here by hand: scipy.stats.bootstrap resamples one level, and no well-kept
  library resamples two crossed ones.
- **McNemar**: per seed, statsmodels' exact McNemar test (`mcnemar(exact=True)`: a binomial test
  on the images only one side gets right) of the two runs' correctness on the same images. It
  holds the two trained models fixed, so it asks "do these two networks differ on this test
  set?", not whether the configurations differ; the report gives the discordant images summed
  over seeds and how many seeds' tests reject, in which direction, and no pooled p-value (a
  pooled test would count a difference that changes sign across seeds as evidence).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from kdprune.reporting.correctness import ImageEvidence, SeedImages
from kdprune.reporting.inference import ALPHA

REPS = 4000
RNG_SEED = 0
MAX_GRID = 64  # duplicate runs per seed and side, as a common denominator
CHUNK = 500  # replicates at once: bounds the (replicates × distinct images) arrays
NOT_AVAILABLE = "not available"
METHOD = "seeds × test images bootstrap (crossed, Owen 2007), B = {reps}, 95% percentile"
FLAG = "seed interval excludes 0, seeds × images interval does not"
COLUMNS = [
    "test_images", "boot_low", "boot_high", "boot_method", "boot_note", "mcnemar_seeds",
    "mcnemar_a_only", "mcnemar_b_only", "mcnemar_sig_a", "mcnemar_sig_b", "mcnemar_p",
]  # fmt: skip


def _grid(d: np.ndarray) -> int:
    """The smallest L with every L·d an integer: 1 for single runs; a seed's duplicate runs
    average their correctness, so their differences are fractions with small denominators."""
    for scale in range(1, MAX_GRID + 1):
        if np.allclose(d * scale, np.round(d * scale), rtol=0, atol=1e-9):
            return scale
    raise ValueError(f"per-image differences are not multiples of 1/{MAX_GRID} or coarser")


def _replicates(
    rng: np.random.Generator, patterns: np.ndarray, counts: np.ndarray, seeds: np.ndarray
) -> np.ndarray:
    """Summed L·(A − B) over the resampled seeds and images of each replicate whose seed draw
    (draws per seed) is a row of `seeds`: `patterns` (P, k) are the distinct per-seed integer
    differences L·d of an image, `counts` how many of the N images have each."""
    n, top = int(counts.sum()), int(np.abs(patterns).max()) * patterns.shape[1]
    sums = seeds @ patterns.T  # (reps, P): an image's difference summed over the drawn seeds
    rows = np.arange(len(seeds))[:, None] * (2 * top + 1) + sums + top
    weights = np.broadcast_to(counts, sums.shape).ravel()
    share = np.bincount(rows.ravel(), weights, minlength=len(seeds) * (2 * top + 1)) / n
    drawn = rng.multinomial(n, share.reshape(len(seeds), 2 * top + 1))  # the image resample
    return drawn @ np.arange(-top, top + 1)


def crossed_bootstrap(d: np.ndarray, reps: int = REPS, seed: int = RNG_SEED) -> np.ndarray:
    """Bootstrap replicates of the mean over seeds of the mean over images of `d` (seeds ×
    images: the per-image difference of correctness A − B): the seeds drawn with replacement,
    and one draw of the N images with replacement shared by every seed of a replicate.

    Exact and cheap: given a replicate's seeds, an image enters only through its difference
    summed over them (an integer in −k..k for single runs), so its N image draws are one
    Multinomial(N, share of images at each sum) draw over those few sums, not N draws."""
    k, n = d.shape
    scale = _grid(d)
    patterns, counts = np.unique(np.round(d.T * scale).astype(np.int64), axis=0, return_counts=True)
    rng = np.random.default_rng(seed)
    seeds = rng.multinomial(k, np.full(k, 1 / k), size=reps)  # (reps, k): each seed's draws
    sums = [_replicates(rng, patterns, counts, seeds[i : i + CHUNK]) for i in range(0, reps, CHUNK)]
    return np.concatenate(sums) / (scale * k * n)


def _bootstrap_columns(d: np.ndarray, reps: int = REPS) -> dict[str, Any]:
    """The seeds × images interval of one contrast (none for one seed, like the t interval)."""
    if d.shape[0] < 2:
        return {"boot_method": f"{NOT_AVAILABLE}: n = {d.shape[0]}: no interval"}
    low, high = np.percentile(crossed_bootstrap(d, reps), [100 * ALPHA / 2, 100 - 100 * ALPHA / 2])
    return {
        "boot_low": float(low),
        "boot_high": float(high),
        "boot_method": METHOD.format(reps=reps),
    }


def mcnemar_p(a_only: int, b_only: int, both: int = 0, neither: int = 0) -> float:
    """statsmodels' exact McNemar p-value of one seed's 2 × 2 table of correctness."""
    from statsmodels.stats.contingency_tables import mcnemar

    return float(mcnemar([[both, a_only], [b_only, neither]], exact=True).pvalue)


def _mcnemar_columns(sides: Sequence[tuple[SeedImages, SeedImages]], images: np.ndarray):
    """Per seed with one run a side: the exact McNemar test on the shared images; the
    discordant counts summed, the seeds that reject (p < ALPHA) in A's and B's favour and each
    seed's p (in the order of the `seeds` column, '-' for a seed with duplicate runs)."""
    out = {"mcnemar_seeds": 0, "mcnemar_a_only": 0, "mcnemar_b_only": 0}
    out |= {"mcnemar_sig_a": 0, "mcnemar_sig_b": 0}
    said = []
    for a, b in sides:
        if a.runs != 1 or b.runs != 1:
            said.append("-")
            continue
        ca, cb = a.correct[images] == 1, b.correct[images] == 1
        a_only, b_only = int(np.sum(ca & ~cb)), int(np.sum(~ca & cb))
        p = mcnemar_p(a_only, b_only, int(np.sum(ca & cb)), int(np.sum(~ca & ~cb)))
        out["mcnemar_seeds"] += 1
        out["mcnemar_a_only"] += a_only
        out["mcnemar_b_only"] += b_only
        if p < ALPHA:
            out["mcnemar_sig_a" if a_only > b_only else "mcnemar_sig_b"] += 1
        said.append(f"{p:.6g}")
    return {**out, "mcnemar_p": "; ".join(said)}


def not_available(reason: str) -> dict[str, Any]:
    """The image columns of a contrast without them: NaN, and why in `boot_method`."""
    return {**dict.fromkeys(COLUMNS, math.nan), "boot_method": f"{NOT_AVAILABLE}: {reason}"}


def contrast_columns(
    evidence: ImageEvidence, a: str, b: str, seeds: Sequence[Any], refused: str = ""
) -> dict[str, Any]:
    """One contrast's image columns (COLUMNS but `boot_note`) over its paired seeds."""
    if refused or not seeds:
        return not_available(refused or "no shared seed")
    sides = [(evidence.side(a, s), evidence.side(b, s)) for s in seeds]
    reason = next((x for pair in sides for x in pair if isinstance(x, str)), "")
    if reason:
        return not_available(reason)
    pairs = [(x, y) for x, y in sides if not isinstance(x, str) and not isinstance(y, str)]
    if len({x.correct.shape for pair in pairs for x in pair}) > 1:
        return not_available("the two sides' runs were tested on different test sets")
    images = np.all([~np.isnan(x.correct) for pair in pairs for x in pair], axis=0)
    if not images.any():
        return not_available("no test image evaluated by both sides at every seed")
    d = np.stack([x.correct[images] - y.correct[images] for x, y in pairs])
    out = {**dict.fromkeys(COLUMNS, math.nan), "test_images": int(images.sum())}
    return out | _bootstrap_columns(d) | _mcnemar_columns(pairs, images)


def flags(table: pd.DataFrame) -> pd.Series:
    """FLAG where the interval the verdict uses (ci_low, ci_high) excludes 0 and the seeds ×
    images interval does not: test-image sampling alone could make that difference."""
    seed_only = (table["ci_low"] > 0) | (table["ci_high"] < 0)
    with_images = (table["boot_low"] <= 0) & (table["boot_high"] >= 0)
    return pd.Series(np.where(seed_only & with_images, FLAG, ""), index=table.index)
