"""The report's words and cells for test-set sampling: what varied between the paired runs, how
the seeds × images interval and McNemar's test were made, their cells in the verdict tables."""

from __future__ import annotations

import pandas as pd

from kdprune.reporting.image_noise import FLAG, NOT_AVAILABLE, REPS, RNG_SEED
from kdprune.reporting.inference import ALPHA

MARK = "‡"  # a seeds × images interval that holds 0 where the verdict's interval does not

HOW_IMAGES = (
    "**Test images.** Where the runs saved their per-image test predictions "
    "(`test_predictions.npy`), each contrast gets two more numbers, shown beside the verdict, "
    "which they do not change. *Seeds × images 95% CI*: a bootstrap of the mean over seeds of "
    "A − B's test accuracy that resamples the seeds (pairs) with replacement and the test images "
    "with replacement, one image resample shared by every seed and both sides, since every seed "
    "is tested on the same images (images crossed with seeds: the pigeonhole bootstrap, Owen "
    "2007; it errs wide, counting the noise specific to one seed and one image up to about "
    f"three times), {REPS} replicates, numpy `default_rng({RNG_SEED})`, percentile "
    "interval; written here by hand (scipy's `bootstrap` resamples one level). The labels come "
    "from the data set each run's config names and must reproduce its recorded test accuracy. "
    "*McNemar*: per seed, statsmodels' exact McNemar test (`mcnemar(exact=True)`) of the two "
    "networks' correctness on the same images; the cell gives the images only A / only B got "
    f"right, summed over seeds, and how many seeds' tests reject at {ALPHA:g} (in whose favour). "
    "It holds each seed's two trained networks fixed, so it says whether they differ on this "
    "test set, not whether the configurations do, and no pooled p-value is given. The verdict "
    "stays on the t-based analysis: its intervals allow for having few seeds (a percentile "
    "bootstrap has no t quantile, and 3 seeds give it only 10 distinct seed resamples) and its "
    f"p-values are what the family's correction adjusts. {MARK}: {FLAG} (test-image sampling "
    "alone could make this difference)."
)


def _seed_words(runs: pd.DataFrame, column: str) -> str:
    """How one recorded seed behaved across the runs: followed `seed`, pinned, or varied."""
    if column not in runs or runs[column].isna().all():
        return "not recorded by these runs"
    recorded = runs.dropna(subset=[column])
    unrecorded = len(runs) - len(recorded)
    tail = f" ({unrecorded} run(s) do not record it)" if unrecorded else ""
    if (recorded[column] == recorded["seed"]).all():
        return f"followed `seed` in every run{tail}"
    values = sorted(recorded[column].unique())
    if len(values) == 1:
        return f"pinned to {values[0]:g}{tail}"
    return f"took the values {', '.join(f'{v:g}' for v in values)}{tail}"


def _image_count(table: pd.DataFrame) -> str:
    """`the same 10,000 test images` (as many as the contrasts paired), or without a count."""
    counts = sorted({int(n) for n in table["test_images"].dropna()})
    if not counts:
        return "the same test images"
    if len(counts) == 1:
        return f"the same {counts[0]:,} test images"
    return f"the same test images ({counts[0]:,} to {counts[-1]:,} per contrast)"


def _availability(table: pd.DataFrame) -> str:
    """Which contrasts have no seeds × images interval, and why."""
    method = table["boot_method"].fillna(f"{NOT_AVAILABLE}: not computed").astype(str)
    missing = method.str.startswith(NOT_AVAILABLE)
    if not missing.any():
        return ""
    reasons = sorted({m.split(": ", 1)[-1] for m in method[missing]})
    head = (
        "**Not available** for any contrast here"
        if missing.all()
        else f"**Not available** for {int(missing.sum())} of {len(table)} contrasts"
    )
    return f" {head}: {'; '.join(reasons)}. There, test-set sampling is in no interval."


def what_varied(runs: pd.DataFrame, table: pd.DataFrame) -> str:
    """The paragraph that states what varied between paired runs and what did not."""
    seeds = ", ".join(f"{s:g}" for s in sorted(runs["seed"].dropna().unique())) or "none"
    return (
        "**What varied.** Between the seeds of a contrast: the student's initialisation and "
        f"every draw not named below (`seed`: {seeds}), the order of the training batches "
        f"and their augmentation (`data_seed`: {_seed_words(runs, 'data_seed')}) and which "
        f"training images validate (`split_seed`: {_seed_words(runs, 'split_seed')}), as "
        "metrics.json records them. The "
        f"test set did not vary: every run of a data set was tested on {_image_count(table)}. "
        "The paired and blocked intervals, their p-values and the verdicts vary the seeds only, "
        "so they hold for this test set; the seeds × images interval also resamples the test "
        "images." + _availability(table)
    )


def boot_cell(row: pd.Series) -> str:
    """The seeds × images interval, marked when only it holds 0; n/a without one."""
    low, high = row["boot_low"], row["boot_high"]
    if low != low:
        return "n/a"
    mark = f" {MARK}" if row.get("boot_note") == FLAG else ""
    return f"[{low:+.4f}, {high:+.4f}]{mark}"


def mcnemar_cell(row: pd.Series) -> str:
    """`A-only / B-only images; seeds rejecting of seeds tested (in whose favour)`."""
    tested = row["mcnemar_seeds"]
    if tested != tested or tested == 0:
        return "n/a"
    sig_a, sig_b = int(row["mcnemar_sig_a"]), int(row["mcnemar_sig_b"])
    favour = {
        (True, True): f" (A {sig_a}, B {sig_b})",
        (True, False): " (A)",
        (False, True): " (B)",
    }
    text = f"{int(row['mcnemar_a_only'])} / {int(row['mcnemar_b_only'])}; "
    text += f"{sig_a + sig_b} of {int(tested)}"
    return text + favour.get((sig_a > 0, sig_b > 0), "")
