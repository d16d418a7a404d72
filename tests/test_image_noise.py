"""Test-set sampling in the verdicts: the seeds × images bootstrap and per-seed McNemar, through
`kdprune report` on digits runs whose per-image predictions are written by the test (no
training), and the bootstrap's shortcut against plain index resampling. Fixed numpy seeds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers.fake_runs import fake_metrics, with_predictions
from scipy import stats

from kdprune import commands
from kdprune.reporting import collect_runs, summarise, verdicts
from kdprune.reporting.correctness import LabelCache, dataset_labels
from kdprune.reporting.image_noise import FLAG, METHOD, REPS, crossed_bootstrap
from kdprune.results import write_metrics

A, B = "prune_then_distill", "joint"


@pytest.fixture(scope="module")
def labels() -> np.ndarray:
    from helpers.fake_runs import digits_test_labels

    return digits_test_labels()


def write_pair(folder: Path, correct: dict[tuple[str, int], np.ndarray], labels) -> None:
    """One run folder per (order, seed), right on exactly the images `correct` marks."""
    for i, ((order, seed), right) in enumerate(sorted(correct.items())):
        run = folder / str(i)
        run.mkdir(parents=True)
        write_metrics(
            run, with_predictions(fake_metrics(order, 0.5, seed, 0.9, 0.0), run, right, labels)
        )


def report(folder: Path) -> pd.Series:
    """The one contrast (A = prune_then_distill, B = joint) of a report on `folder`."""
    assert commands.main(["report", str(folder)]) == 0
    (row,) = [r for _, r in pd.read_csv(folder / "verdicts.csv").iterrows()]
    return row


def contrast(folder: Path) -> pd.Series:
    """The same contrast from the verdicts alone (no plots, no files written)."""
    runs = collect_runs(folder)
    (row,) = [r for _, r in verdicts(runs, summarise(runs)).iterrows()]
    return row


def flip(rng: np.random.Generator, right: np.ndarray, share: float) -> np.ndarray:
    """`right` with a random `share` of its images turned (right to wrong and back)."""
    return right ^ (rng.random(len(right)) < share)


def test_a_planted_difference_shows_in_the_seeds_images_interval(tmp_path, labels) -> None:
    rng = np.random.default_rng(0)
    n, correct = len(labels), {}
    for seed in range(4):
        base = rng.random(n) < 0.85
        correct[B, seed] = base
        correct[A, seed] = base | (rng.random(n) < 0.5)  # A also right on half of B's errors
    write_pair(tmp_path, correct, labels)
    row = report(tmp_path)
    assert row["test_images"] == n and row["boot_method"] == METHOD.format(reps=REPS)
    assert 0 < row["boot_low"] <= row["mean_diff"] <= row["boot_high"]
    assert row["mcnemar_b_only"] == 0 and row["mcnemar_a_only"] > 0
    assert row["mcnemar_sig_a"] == 4 and row["mcnemar_sig_b"] == 0
    md = (tmp_path / "PRUNING_REPORT.md").read_text()
    assert f"[{row['boot_low']:+.4f}, {row['boot_high']:+.4f}]" in md
    assert f"{row['mcnemar_a_only']} / 0; 4 of 4 (A)" in md
    assert "**What varied.**" in md and f"the same {n} test images" in md


def test_identical_predictions_give_a_zero_interval(tmp_path, labels) -> None:
    rng = np.random.default_rng(1)
    right = {seed: rng.random(len(labels)) < 0.8 + 0.02 * seed for seed in range(3)}
    write_pair(tmp_path, {(o, s): r for s, r in right.items() for o in (A, B)}, labels)
    row = contrast(tmp_path)
    assert row["boot_low"] == 0 and row["boot_high"] == 0
    assert row["mcnemar_a_only"] == 0 and row["mcnemar_b_only"] == 0
    assert row["mcnemar_p"] == "1; 1; 1"


def test_large_image_noise_widens_the_interval_and_is_flagged(tmp_path, labels) -> None:
    # Every seed: A right on 4 more images than B, always among the same 120 images where the
    # two disagree (the test set's own noise, the same at every seed): the seed interval is
    # narrow and excludes 0, the test images' sampling does not.
    rng = np.random.default_rng(2)
    n = len(labels)
    disagree = rng.choice(n, 120, replace=False)
    correct = {}
    for seed in range(4):
        base = rng.random(n) < 0.9
        base[disagree] = False
        a = base.copy()
        a[disagree[: 62 + seed % 2]] = True
        b = base.copy()
        b[disagree[62 + seed % 2 :]] = True
        correct[A, seed], correct[B, seed] = a, b
    write_pair(tmp_path, correct, labels)
    row = report(tmp_path)
    assert row["ci_low"] > 0 and row["paired_low"] > 0
    assert row["boot_low"] < 0 < row["boot_high"]
    assert row["boot_high"] - row["boot_low"] >= row["ci_high"] - row["ci_low"]
    assert row["boot_note"] == FLAG
    assert "‡" in (tmp_path / "PRUNING_REPORT.md").read_text()


def test_mcnemar_matches_a_binomial_test_on_the_discordant_images(tmp_path, labels) -> None:
    rng = np.random.default_rng(3)
    correct = {}
    for seed in range(3):
        base = rng.random(len(labels)) < 0.85
        correct[B, seed], correct[A, seed] = base, flip(rng, base, 0.04 + 0.04 * seed)
    write_pair(tmp_path, correct, labels)
    row = contrast(tmp_path)
    a_only = [int(np.sum(correct[A, s] & ~correct[B, s])) for s in range(3)]
    b_only = [int(np.sum(~correct[A, s] & correct[B, s])) for s in range(3)]
    p = [stats.binomtest(x, x + y, 0.5).pvalue for x, y in zip(a_only, b_only, strict=True)]
    got = [float(v) for v in row["mcnemar_p"].split("; ")]
    assert got == pytest.approx(p, rel=1e-5)  # the CSV keeps 6 significant digits
    assert (row["mcnemar_a_only"], row["mcnemar_b_only"]) == (sum(a_only), sum(b_only))
    sig = [(x > y, q < 0.05) for x, y, q in zip(a_only, b_only, p, strict=True)]
    assert row["mcnemar_sig_a"] == sum(1 for more, s in sig if more and s)
    assert row["mcnemar_sig_b"] == sum(1 for more, s in sig if not more and s)
    assert row["mcnemar_seeds"] == 3


def test_runs_without_predictions_say_not_available(tmp_path) -> None:
    for i, (order, seed) in enumerate((o, s) for o in (A, B) for s in range(3)):
        write_metrics(tmp_path / str(i), fake_metrics(order, 0.5, seed, 0.9, 0.8 + 0.01 * i))
    row = report(tmp_path)
    assert np.isnan(row["boot_low"]) and np.isnan(row["mcnemar_seeds"])
    assert row["boot_method"].startswith("not available: no per-image test predictions")
    md = (tmp_path / "PRUNING_REPORT.md").read_text()
    assert "**Not available** for any contrast here: no per-image test predictions" in md


def test_predictions_that_do_not_reproduce_test_acc_are_not_used(tmp_path, labels) -> None:
    rng = np.random.default_rng(4)
    correct = {(o, s): rng.random(len(labels)) < 0.9 for o in (A, B) for s in range(2)}
    write_pair(tmp_path, correct, labels)
    first = tmp_path / "0" / "metrics.json"  # labels of another data set: another accuracy
    first.write_text(first.read_text().replace('"test_acc": 0.', '"test_acc": 0.1'))
    row = contrast(tmp_path)
    assert np.isnan(row["boot_low"]) and "do not reproduce test_acc" in row["boot_method"]


def test_a_data_set_that_cannot_be_loaded_says_why(tmp_path) -> None:
    def config(splits: dict) -> dict:
        return {"dataset": {"splits": splits}}

    missing = config({"_target_": "kdprune.data.fashion_mnist", "root": str(tmp_path / "no")})
    assert dataset_labels(missing, LabelCache()) == f"data set not found at {tmp_path / 'no'}"
    untrusted = config({"_target_": "os.system", "command": "true"})
    assert dataset_labels(untrusted, LabelCache()).startswith("test labels of os.system not loaded")
    assert "names no data set" in dataset_labels({"dataset": {"name": "digits"}}, LabelCache())


def test_the_same_runs_give_the_same_numbers_twice(tmp_path, labels) -> None:
    rng = np.random.default_rng(5)
    correct = {(o, s): rng.random(len(labels)) < 0.85 for o in (A, B) for s in range(3)}
    write_pair(tmp_path, correct, labels)
    report(tmp_path)
    first = (tmp_path / "verdicts.csv").read_bytes()
    report(tmp_path)
    assert (tmp_path / "verdicts.csv").read_bytes() == first


def _brute_force(d: np.ndarray, reps: int, rng: np.random.Generator) -> np.ndarray:
    """The same bootstrap by plain index resampling: seeds, then one image draw for all."""
    k, n = d.shape
    out = np.empty(reps)
    for r in range(reps):
        seeds, images = rng.integers(0, k, k), rng.integers(0, n, n)
        out[r] = d[np.ix_(seeds, images)].mean()
    return out


def test_the_shortcut_draws_what_index_resampling_draws() -> None:
    rng = np.random.default_rng(6)
    d = rng.choice([-1.0, 0.0, 1.0], p=[0.1, 0.75, 0.15], size=(3, 200))
    d[:, :30] = 1.0  # images A gets right at every seed: shared by the seeds
    fast, slow = crossed_bootstrap(d, reps=20_000), _brute_force(d, 20_000, rng)
    assert fast.mean() == pytest.approx(slow.mean(), abs=0.002)
    assert fast.std() == pytest.approx(slow.std(), rel=0.03)
    quantiles = [2.5, 50, 97.5]
    assert np.percentile(fast, quantiles) == pytest.approx(
        np.percentile(slow, quantiles), abs=0.004
    )


def test_images_shared_by_the_seeds_are_not_averaged_away() -> None:
    # No seed noise at all: every seed's networks differ on the same images. The test set's
    # sampling error is that of one seed, sd(d) / sqrt(N), whatever the number of seeds.
    rng = np.random.default_rng(7)
    one = rng.choice([-1.0, 0.0, 1.0], p=[0.1, 0.8, 0.1], size=400)
    for k in (2, 8):
        spread = crossed_bootstrap(np.tile(one, (k, 1)), reps=8000).std()
        assert spread == pytest.approx(one.std() / np.sqrt(len(one)), rel=0.05)


def test_duplicate_runs_of_a_seed_average_and_skip_mcnemar(tmp_path, labels) -> None:
    rng = np.random.default_rng(8)
    correct = {(o, s): rng.random(len(labels)) < 0.85 for o in (A, B) for s in range(3)}
    write_pair(tmp_path, correct, labels)
    extra = tmp_path / "dup"
    extra.mkdir()
    right = rng.random(len(labels)) < 0.85
    write_metrics(extra, with_predictions(fake_metrics(A, 0.5, 0, 0.9, 0.0), extra, right, labels))
    row = contrast(tmp_path)
    assert row["mcnemar_seeds"] == 2 and row["mcnemar_p"].startswith("-; ")
    assert row["boot_low"] <= row["mean_diff"] <= row["boot_high"]
