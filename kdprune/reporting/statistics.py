"""Numbers over the ledger: configurations (one `config_fingerprint` each), their mean, spread
and 95% interval over distinct seeds, compression levels, the best per level, Pareto fronts."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from kdprune.run_record import CONFIG_FINGERPRINT, MACS_SPEEDUP, TEST_ACC, VAL_ACC, WEIGHT_SPARSITY
from kdprune.schedules.names import ORDER_NAMES

# What tables show about a configuration (its identity is `config_fingerprint`, not these).
LABEL_KEYS = ["model", "dataset", "order", "kd", "method", "unit", "target_ratio"]
STAT_COLUMNS = [
    TEST_ACC,
    VAL_ACC,
    WEIGHT_SPARSITY,
    "params_removed_fraction",
    MACS_SPEEDUP,
    "cpu_speedup_bs64",
    "latency_speedup",
    "student_epochs",
]
# The latency target a `unit=latency` run measured its `latency_speedup` on (equal within a
# configuration: the target is part of it).
LATENCY_TARGET_KEYS = ["latency_runtime", "latency_batch_size", "latency_threads", "cpu_model"]
# Interval columns of `summarise` (95% t interval over seeds).
CI_COLUMNS = [TEST_ACC, VAL_ACC]
CONFIDENCE = 0.95
# Achieved MACs of two configurations within this relative gap: the same compression.
MATCHED_MACS = 0.02
# Measured latency speed-ups of two `unit=latency` configurations within this relative gap: the
# same latency (a target counts as met within 10%, and each speed-up is a median of timings).
MATCHED_LATENCY = 0.10


def order_rank(order: str) -> str:
    """Sort key: the orders in their natural sequence first, then any other by name."""
    rank = ORDER_NAMES.index(order) if order in ORDER_NAMES else len(ORDER_NAMES)
    return f"{rank}:{order}"


def sort_runs(df: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Sort by `by`, the orders in their natural sequence (prune_then_distill first)."""

    def key(col: pd.Series) -> pd.Series:
        return col.map(order_rank) if col.name == "order" else col

    return df.sort_values(by, key=key, kind="stable", na_position="last").reset_index(drop=True)


def t_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> tuple[float, ...]:
    """(mean, sample std, low, high): Student's t interval mean ± t(n-1) * std / sqrt(n).

    One value has no spread and no interval (std, low and high are NaN).
    """
    from scipy import stats  # here: a run imports kdprune.reporting for its end-of-run table

    x = np.asarray([v for v in values if v is not None and not math.isnan(v)], dtype=float)
    if len(x) == 0:
        return (math.nan,) * 4
    mean = float(x.mean())
    if len(x) < 2:
        return mean, math.nan, math.nan, math.nan
    std = float(x.std(ddof=1))
    half = float(stats.t.ppf(0.5 + confidence / 2, len(x) - 1)) * std / math.sqrt(len(x))
    return mean, std, mean - half, mean + half


def per_seed(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per (configuration, seed): duplicate runs of a seed averaged, counted in `n_runs`."""
    keys = [CONFIG_FINGERPRINT, "seed"]
    numeric = [c for c in STAT_COLUMNS if c in runs]
    grouped = runs.groupby(keys, dropna=False, sort=True)
    out = grouped[numeric].mean()
    out["n_runs"] = grouped.size()
    return out.reset_index()


def duplicates(runs: pd.DataFrame) -> pd.DataFrame:
    """The (configuration, seed) pairs with more than one run, and those runs' folders."""
    grouped = runs.groupby([CONFIG_FINGERPRINT, "seed"], dropna=False)
    dup = grouped.filter(lambda g: len(g) > 1)
    return dup.groupby([CONFIG_FINGERPRINT, "seed"], dropna=False)["run_dir"].agg(list)


def _first_columns(runs: pd.DataFrame) -> pd.DataFrame:
    """The descriptive columns of each configuration (equal within one by construction)."""
    keys = [*LABEL_KEYS, "pairing_key", "series_key", "schedule_key", "kd_key", "config_json"]
    keys += ["order_key", "kd_pair_key", "teacher_key"]
    keys += ["fingerprint_from", *LATENCY_TARGET_KEYS]
    return runs.groupby(CONFIG_FINGERPRINT, sort=False)[[k for k in keys if k in runs]].first()


def _seed_statistics(seeds: pd.DataFrame) -> pd.DataFrame:
    """Mean and std (and a t interval for CI_COLUMNS) over the distinct seeds of each config."""
    rows = {}
    for fingerprint, group in seeds.groupby(CONFIG_FINGERPRINT, sort=False):
        row: dict[str, object] = {}
        for col in STAT_COLUMNS:
            if col not in group:
                continue
            mean, std, low, high = t_interval(group[col].tolist())
            row[f"{col}_mean"], row[f"{col}_std"] = mean, std
            if col in CI_COLUMNS:
                row[f"{col}_ci_low"], row[f"{col}_ci_high"] = low, high
        row["n_seeds"] = len(group)
        row["seeds"] = ", ".join(str(int(s)) if s == s else "?" for s in sorted(group["seed"]))
        row["n_runs"] = int(group["n_runs"].sum())
        rows[fingerprint] = row
    return pd.DataFrame.from_dict(rows, orient="index")


def summarise(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per configuration (`config_fingerprint`): mean and std over its distinct seeds,
    a 95% t interval of test and val accuracy, n_seeds (distinct), n_runs, and its level."""
    seeds = per_seed(runs)
    out = _first_columns(runs).join(_seed_statistics(seeds))
    out.index.name = CONFIG_FINGERPRINT
    out = compression_levels(out.reset_index())
    return sort_runs(out, ["level_rank", "order", "kd", CONFIG_FINGERPRINT])


def _level_numbers(speedups: pd.Series, matched: float = MATCHED_MACS) -> pd.Series:
    """Within one pairing group: a new level wherever the speed-up exceeds the current level's
    least compressed configuration by more than `matched` (relative)."""
    numbers, level, start = {}, 0, math.nan
    for idx, speedup in speedups.sort_values(na_position="last").items():
        if not math.isnan(start) and speedup > start * (1 + matched):
            level, start = level + 1, speedup
        start = speedup if math.isnan(start) else start
        numbers[idx] = level
    return pd.Series(numbers, dtype=int)


def compression_levels(summary: pd.DataFrame) -> pd.DataFrame:
    """`level`: configurations of one pairing group (same everything but order and KD) whose
    mean achieved MACs lie within MATCHED_MACS of each other, or, for a latency target (unit
    latency), whose mean measured speed-ups lie within MATCHED_LATENCY (cuts that meet one
    latency target differ in MACs by design); `level_rank` sorts the groups."""
    out = summary.copy()
    numbers = pd.concat([_group_levels(g) for _, g in out.groupby("pairing_key")])
    out["level"] = out["pairing_key"] + ":" + numbers.loc[out.index].astype(str)
    ordered = sort_runs(out, ["model", "dataset", "method", "unit", "target_ratio", "pairing_key"])
    rank = {key: i for i, key in enumerate(ordered["pairing_key"].drop_duplicates())}
    out["level_rank"] = out["pairing_key"].map(rank)
    return out


def _group_levels(group: pd.DataFrame) -> pd.Series:
    """The level numbers of one pairing group's configurations (see `compression_levels`)."""
    measured = group.get("latency_speedup_mean", pd.Series(math.nan, group.index))
    if "unit" in group and (group["unit"] == "latency").all() and measured.notna().all():
        return _level_numbers(measured, MATCHED_LATENCY)
    return _level_numbers(group["macs_speedup_mean"])


def best_per_level(summary: pd.DataFrame) -> pd.DataFrame:
    """Per compression level with at least two configurations: the one with the highest mean
    val_acc (ties: more MACs speed-up), with `candidates`. Test accuracy plays no part."""
    ranked = summary.sort_values(
        ["val_acc_mean", "macs_speedup_mean"], ascending=False, kind="stable"
    )
    counts = summary.groupby("level").size()
    best = ranked.groupby("level", sort=False).head(1).copy()
    best["candidates"] = best["level"].map(counts)
    return sort_runs(best[best["candidates"] > 1], ["level_rank", "level"])


def pareto_mask(x: Sequence[float], y: Sequence[float], maximise: tuple[bool, bool]) -> np.ndarray:
    """True for the points no other point dominates (at least as good on both, better on one)."""
    pts = np.column_stack([np.asarray(x, float), np.asarray(y, float)])
    pts = pts * np.where(maximise, 1.0, -1.0)  # make both objectives "larger is better"
    keep = np.ones(len(pts), dtype=bool)
    for i, p in enumerate(pts):
        dominated = np.all(pts >= p, axis=1) & np.any(pts > p, axis=1)
        keep[i] = not dominated.any()
    return keep


def pareto_configurations(summary: pd.DataFrame) -> pd.DataFrame:
    """The configurations on the front of mean val_acc vs mean MACs speed-up (both maximised)."""
    data = summary.dropna(subset=["val_acc_mean", "macs_speedup_mean"])
    mask = pareto_mask(data["macs_speedup_mean"], data["val_acc_mean"], (True, True))
    return data[mask].sort_values("macs_speedup_mean")
