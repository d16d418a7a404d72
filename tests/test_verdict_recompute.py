"""Planted effects through `kdprune report` on run folders, and an independent recomputation of
verdicts.csv (raw and adjusted p-values, both analyses) from the raw metrics.json files with
scipy and statsmodels, without kdprune's reporting code. Fixed numpy seeds."""

from __future__ import annotations

import json
from itertools import combinations
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import statsmodels.formula.api as smf
from helpers.fake_runs import fake_metrics
from scipy import stats
from statsmodels.stats.multitest import multipletests

from kdprune import commands
from kdprune.results import write_metrics
from kdprune.schedules.names import ORDER_NAMES

ORDERS = ORDER_NAMES  # the natural sequence: prune_then_distill, distill_then_prune, joint


def write_runs(folder: Path, accuracies: dict[tuple[str, str, int], float]) -> None:
    """One run folder per (order, kd, seed) with the given test accuracy."""
    for i, ((order, kd, seed), test) in enumerate(sorted(accuracies.items())):
        write_metrics(folder / str(i), fake_metrics(order, 0.5, seed, 0.9, test, kd=kd))


def report(folder: Path, *options: str) -> pd.DataFrame:
    assert commands.main(["report", str(folder), *options]) == 0
    return pd.read_csv(folder / "verdicts.csv")


def planted(rng: np.random.Generator, difference: float, seeds: int) -> dict:
    """prune_then_distill − joint = `difference` points, sd 0.2 points per seed, seed effects."""
    out = {}
    for seed in range(seeds):
        base = 0.80 + rng.normal(0, 0.01)  # the seed moves both sides (a block effect)
        out[("joint", "hinton", seed)] = base
        noise = rng.normal(0, 0.002)
        out[("prune_then_distill", "hinton", seed)] = base + difference / 100 + noise
    return out


def test_a_planted_half_point_lead_is_a_better(tmp_path: Path) -> None:
    write_runs(tmp_path, planted(np.random.default_rng(4), 0.5, seeds=5))
    (row,) = report(tmp_path).itertuples()
    assert row.verdict == "A better" and row.a == "prune_then_distill, kd=hinton"
    assert row.mean_diff == pytest.approx(0.005, abs=0.002)


def test_a_planted_zero_difference_is_equivalent_with_enough_seeds(tmp_path: Path) -> None:
    write_runs(tmp_path, planted(np.random.default_rng(5), 0.0, seeds=10))
    (row,) = report(tmp_path, "--margin", "0.25").itertuples()
    assert row.verdict == "equivalent within ±0.25 points"
    md = (tmp_path / "PRUNING_REPORT.md").read_text()
    assert "no difference" not in md.lower()


def sweep(rng: np.random.Generator) -> dict:
    """Three orders × KD on / off × 4 seeds, small random effects."""
    effects = {(o, kd): rng.normal(0, 0.004) for o in ORDERS for kd in ("none", "hinton")}
    seeds = {s: rng.normal(0, 0.01) for s in range(4)}
    return {
        (o, kd, s): 0.8 + effects[o, kd] + seeds[s] + rng.normal(0, 0.003)
        for (o, kd) in effects
        for s in seeds
    }


def recompute(folder: Path, method: str) -> pd.DataFrame:
    """From the metrics.json files alone: every contrast's paired and blocked p-values and the
    adjusted p-values of `method` (statsmodels multipletests) over the one level's family."""
    rows = [json.loads(p.read_text()) for p in sorted(folder.rglob("metrics.json"))]
    data = pd.DataFrame(
        {"arm": f"{m['order']}|{m['kd']}", "seed": str(m["seed"]), "y": m["test_acc"]} for m in rows
    )
    wide = data.pivot(index="seed", columns="arm", values="y")
    out = []
    for x, y in combinations(sorted(wide.columns), 2):
        (ox, kx), (oy, ky) = x.split("|"), y.split("|")
        if kx == ky:  # orders, A the earlier order
            a, b = sorted((x, y), key=lambda arm: ORDERS.index(arm.split("|")[0]))
        elif ox == oy:  # KD (A) vs none (B)
            a, b = (x, y) if ky == "none" else (y, x)
        else:
            continue
        d = wide[a] - wide[b]
        fit = smf.ols(f"y ~ C(arm, Treatment(reference='{b}')) + C(seed)", data=data).fit()
        term = f"C(arm, Treatment(reference='{b}'))[T.{a}]"
        out.append(
            {
                "key": (a.replace("|", ", kd="), b.replace("|", ", kd=")),
                "p_paired": stats.ttest_1samp(d, 0.0).pvalue,
                "p_blocked": fit.pvalues[term],
                "blocked_mean": fit.params[term],
            }
        )
    frame = pd.DataFrame(out)
    for analysis in ("paired", "blocked"):
        frame[f"adj_{analysis}"] = multipletests(frame[f"p_{analysis}"], method=method)[1]
    return frame.set_index("key")


@pytest.mark.parametrize(("correction", "method"), [("holm", "holm"), ("bh", "fdr_bh")])
def test_verdicts_csv_matches_an_independent_recomputation(
    tmp_path: Path, correction: str, method: str
) -> None:
    write_runs(tmp_path, sweep(np.random.default_rng(6)))
    expected = recompute(tmp_path, method)
    for analysis in ("blocked", "paired"):
        table = report(tmp_path, "--correction", correction, "--analysis", analysis)
        table = table.set_index(["a", "b"])
        assert len(table) == len(expected) == 9  # 3 order pairs × 2 KD + 3 KD vs none
        assert set(table["family"]) == {table["pairing_key"].iloc[0]}
        got = table.loc[list(expected.index)]
        assert got["p_raw"].to_numpy() == pytest.approx(expected[f"p_{analysis}"].to_numpy())
        assert got["p_adjusted"].to_numpy() == pytest.approx(expected[f"adj_{analysis}"].to_numpy())
        assert got["p_blocked"].to_numpy() == pytest.approx(expected["p_blocked"].to_numpy())
        assert got["blocked_mean"].to_numpy() == pytest.approx(expected["blocked_mean"].to_numpy())
        assert got["p_paired"].to_numpy() == pytest.approx(expected["p_paired"].to_numpy())
