"""The verdicts: within a compression level, each pair of orders, KD vs no KD and each pair of
teachers (or, with `compare`, each pair of values of one config group such as the pruning
method), compared seed by seed on test accuracy, corrected for multiplicity within a declared
family, with an equivalence margin.

A pairing group (one compression level) is the runs of one `pairing_key`: the same model,
data, method, target, budget, starting point ...; only the order, KD and the teacher differ.
Within it, a run of seed s on one side is paired with the run of seed s on the other (only
seeds both sides have with a finite test accuracy count; a seed's duplicate runs are averaged,
`statistics.per_seed`). A pair whose sides both use a teacher is refused when, at some seed,
their runs record different teacher files (metrics.json `teacher_sha256`, else
`teacher_weights`).

Each contrast gets two analyses: the plain paired t test (and paired TOST) on its own seeds,
and the blocked model of its level (`inference.blocked_model`: every arm of the level, seed as
block, one residual variance); `analysis` says which one the verdict uses. The family is one
level (`family="level"`) or the whole report (`family="report"`); the p-values of the used
analysis are adjusted within it (`correction`: Holm or Benjamini–Hochberg).

verdicts.csv holds COLUMNS: p_raw / p_adjusted (H0: A − B = 0, two-sided) and p_equiv_raw /
p_equiv_adjusted (TOST, H0: |A − B| ≥ margin) of the used analysis, both analyses' estimates,
intervals and raw p-values (paired_*, blocked_*), the family, correction, margin (a fraction of
accuracy), the verdict and what was refused (`note`); and, where the runs saved per-image test
predictions, an interval over seeds × test images and per-seed McNemar tests (`image_noise`:
boot_*, mcnemar_*, test_images), shown beside the verdict, which they do not change.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path
from typing import Any

import pandas as pd

from kdprune.reporting import image_noise
from kdprune.reporting.config_groups import NO_KD, ORDERS_AND_KD, labels, uses_teacher
from kdprune.reporting.correctness import ImageEvidence, image_evidence
from kdprune.reporting.inference import (
    A_BETTER,
    B_BETTER,
    CORRECTION_NAMES,
    DEFAULT_MARGIN,
    Estimate,
    blocked_model,
    blocked_test,
    family_verdicts,
    paired_test,
)
from kdprune.reporting.statistics import MATCHED_LATENCY, MATCHED_MACS, order_rank, per_seed
from kdprune.results import atomic_write
from kdprune.run_record import (
    CONFIG_FINGERPRINT,
    LATENCY_SPEEDUP,
    MACS_SPEEDUP,
    TEST_ACC,
    WEIGHT_SPARSITY,
)

__all__ = ["A_BETTER", "B_BETTER", "Options", "unmatched", "verdicts", "write_verdicts"]

VERDICTS_FILE = "verdicts.csv"
INTERVALS = {"paired": "paired t, 95%", "blocked": "blocked OLS (arm + seed), 95%"}
FAMILIES = ("level", "report")
KINDS = {"orders": 0, "kd": 1, "teacher": 2}
SIDE = (TEST_ACC, MACS_SPEEDUP, WEIGHT_SPARSITY, LATENCY_SPEEDUP)
COLUMNS = [
    "pairing_key", "model", "dataset", "method", "unit", "target_ratio", "family", "kind", "a",
    "b", "n", "seeds", "mean_diff", "std_diff", "ci_low", "ci_high", "interval", "analysis",
    "p_raw", "p_adjusted", "p_equiv_raw", "p_equiv_adjusted", "correction", "margin", "verdict",
    "verdict_text", "paired_low", "paired_high", "p_paired", "p_equiv_paired", "blocked_mean",
    "blocked_low", "blocked_high", "blocked_df", "p_blocked", "p_equiv_blocked", "note",
    "a_test_acc", "b_test_acc", "a_macs_speedup", "b_macs_speedup", "a_sparsity", "b_sparsity",
    "a_latency_speedup", "b_latency_speedup", "macs_gap", "weights_gap", "latency_gap", "matched",
    "a_fingerprint", "b_fingerprint", *image_noise.COLUMNS,
]  # fmt: skip


@dataclass(frozen=True)
class Options:
    """How verdicts are reached: the family, its correction, the margin, the analysis."""

    correction: str = "holm"  # holm | bh
    margin: float = DEFAULT_MARGIN / 100  # a fraction of accuracy
    analysis: str = "blocked"  # blocked | paired
    family: str = "level"  # level | report


def _pairs(
    group: pd.DataFrame, compare: str = ORDERS_AND_KD, names: dict[str, str] | None = None
) -> list[tuple[str, pd.Series, pd.Series]]:
    """(kind, A, B): orders that differ only in the order (A the earlier order); KD vs none
    where only KD (and the teacher it uses) differ; two teachers of the same KD and order.
    Comparing a config group instead: every two configurations (A first by label)."""
    names = names if names is not None else {}
    if compare != ORDERS_AND_KD:
        rows = sorted((r for _, r in group.iterrows()), key=lambda r: names[r.config_fingerprint])
        return [(compare, a, b) for a, b in combinations(rows, 2)]
    out = []
    for (_, x), (_, y) in combinations(group.iterrows(), 2):
        if x["order_key"] == y["order_key"] and x["order"] != y["order"]:
            a, b = sorted((x, y), key=lambda r: order_rank(r["order"]))
            out.append(("orders", a, b))
        elif x["kd_pair_key"] == y["kd_pair_key"] and (x["kd"] == NO_KD) != (y["kd"] == NO_KD):
            a, b = (y, x) if x["kd"] == NO_KD else (x, y)
            out.append(("kd", a, b))
        elif x["teacher_key"] == y["teacher_key"] and NO_KD not in (x["kd"], y["kd"]):
            a, b = sorted((x, y), key=lambda r: names[r.config_fingerprint])
            out.append(("teacher", a, b))
    return out


def _seed(seed: Any) -> str:
    return str(int(seed)) if isinstance(seed, int | float) and seed == seed else str(seed)


def _finite(values: pd.DataFrame, fingerprint: str) -> dict[Any, float]:
    """Test accuracy per seed of one configuration, without NaN seeds or NaN accuracies."""
    series = values.loc[fingerprint, TEST_ACC]
    return {s: float(v) for s, v in series.items() if s == s and v == v}


def _side_means(values: pd.DataFrame, fingerprint: str, seeds: tuple) -> dict[str, float]:
    """Mean test accuracy, MACs speed-up and sparsity of one side over the shared seeds."""
    rows = values.loc[fingerprint].loc[list(seeds)] if seeds else values.loc[fingerprint]
    return {k: float(rows[k].mean()) if k in rows else math.nan for k in SIDE}


def _gap(x: float, y: float) -> float:
    """Relative gap of two positive amounts: max / min − 1 (NaN when either is missing)."""
    return max(x, y) / min(x, y) - 1 if min(x, y) > 0 else math.nan


def _matching(side_a: dict[str, float], side_b: dict[str, float]) -> dict[str, Any]:
    """Achieved MACs and remaining weights of the two sides: masked pairs (both 1.00× MACs)
    are matched only when their weight counts are too. Cuts to a latency target (both sides
    measured) are matched on their measured speed-up instead, within MATCHED_LATENCY: where
    they cut decides their MACs, so MACs tell them apart by design."""
    macs = _gap(side_a[MACS_SPEEDUP], side_b[MACS_SPEEDUP])
    weights = _gap(1 - side_a[WEIGHT_SPARSITY], 1 - side_b[WEIGHT_SPARSITY])
    latency = _gap(side_a[LATENCY_SPEEDUP], side_b[LATENCY_SPEEDUP])
    gaps = [g for g in (macs, weights) if not math.isnan(g)]
    matched = all(g <= MATCHED_MACS for g in gaps) if gaps else None
    if not math.isnan(latency):
        matched = latency <= MATCHED_LATENCY
    return {"macs_gap": macs, "weights_gap": weights, "latency_gap": latency, "matched": matched}


def unmatched(row: Mapping[str, Any]) -> str:
    """' [MACs not matched]' (or measured latency, for cuts to a latency target) where the two
    sides of a verdict row did not reach the same compression; '' where they did."""
    matched = row["matched"]  # True / False / None (NaN in a read-back table), numpy or not
    if matched is None or matched != matched or bool(matched):
        return ""
    latency = row.get("latency_gap", math.nan)
    return " [measured latency not matched]" if latency == latency else " [MACs not matched]"


def teacher_conflicts(teachers: pd.Series, fa: str, fb: str, seeds: tuple) -> list[Any]:
    """Seeds at which the runs of two configurations record more than one teacher file."""
    out = []
    for seed in seeds:
        files = teachers.get((fa, seed), set()) | teachers.get((fb, seed), set())
        if len(files) > 1:
            out.append(seed)
    return out


def _refusal(kind: str, a: pd.Series, b: pd.Series, teachers: pd.Series, seeds: tuple) -> str:
    """Why a pair is not compared ('' when it is): different teacher files at some seed."""
    configs = [json.loads(side["config_json"]) for side in (a, b)]
    if kind == "teacher" or not all(uses_teacher(c) for c in configs):
        return ""
    bad = teacher_conflicts(teachers, a[CONFIG_FINGERPRINT], b[CONFIG_FINGERPRINT], seeds)
    if not bad:
        return ""
    return "refused: different teacher files at seed " + ", ".join(_seed(s) for s in bad)


def _tests(row: dict[str, Any], paired: Estimate, blocked: Estimate) -> dict[str, Any]:
    """Both analyses' numbers, under their own column names."""
    return {
        "mean_diff": paired.mean,
        "std_diff": paired.se * math.sqrt(paired.n) if paired.n > 1 else math.nan,
        "paired_low": paired.low,
        "paired_high": paired.high,
        "p_paired": paired.p_diff,
        "p_equiv_paired": paired.p_equiv,
        "blocked_mean": blocked.mean,
        "blocked_low": blocked.low,
        "blocked_high": blocked.high,
        "blocked_df": blocked.df,
        "p_blocked": blocked.p_diff,
        "p_equiv_blocked": blocked.p_equiv,
        **row,
    }


def _comparison(kind: str, a: pd.Series, b: pd.Series, level: Any) -> dict[str, Any]:
    """One row of the verdict table, before the family's correction."""
    values, names, teachers, fit, options, images = level
    fa, fb = a[CONFIG_FINGERPRINT], b[CONFIG_FINGERPRINT]
    side_a, side_b = _finite(values, fa), _finite(values, fb)
    seeds = tuple(sorted(set(side_a) & set(side_b)))
    refused = _refusal(kind, a, b, teachers, seeds)
    paired = paired_test([side_a[s] - side_b[s] for s in seeds], options.margin)
    blocked = blocked_test(fit, fa, fb, options.margin)
    if refused:
        paired, blocked = Estimate.empty(len(seeds)), Estimate.empty(len(seeds))
    means_a, means_b = _side_means(values, fa, seeds), _side_means(values, fb, seeds)
    row = {k: a[k] for k in ("pairing_key", "model", "dataset", "method", "unit", "target_ratio")}
    return _tests(
        {
            **row,
            "kind": kind,
            "a": names[fa],
            "b": names[fb],
            "n": len(seeds),
            "seeds": ", ".join(_seed(s) for s in seeds),
            "note": refused,
            **{f"a_{k}" if k != WEIGHT_SPARSITY else "a_sparsity": v for k, v in means_a.items()},
            **{f"b_{k}" if k != WEIGHT_SPARSITY else "b_sparsity": v for k, v in means_b.items()},
            **_matching(means_a, means_b),
            "a_fingerprint": fa,
            "b_fingerprint": fb,
            **image_noise.contrast_columns(images, fa, fb, seeds, refused),
        },
        paired,
        blocked,
    )


def side_labels(group: pd.DataFrame, compare: str = ORDERS_AND_KD) -> dict[str, str]:
    """Labels of a pairing group's configurations: order and KD (or the compared group's
    name), plus whatever else differs."""
    configs = {r[CONFIG_FINGERPRINT]: json.loads(r["config_json"]) for _, r in group.iterrows()}
    always = ("schedule.name", "kd.name") if compare == ORDERS_AND_KD else (f"{compare}.name",)
    return labels(configs, always=always)


def _level_fit(values: pd.DataFrame, fingerprints: list[str]):
    """The blocked model of one level: per-seed test accuracy of its configurations."""
    data = values.loc[values.index.get_level_values(0).isin(fingerprints), TEST_ACC]
    frame = data.reset_index().rename(columns={CONFIG_FINGERPRINT: "arm", TEST_ACC: "y"})
    return blocked_model(frame)


def _teacher_files(runs: pd.DataFrame) -> pd.Series:
    """The set of recorded teacher files per (configuration, seed): the file's sha256 where the
    run recorded it (`teacher_sha256`), else its name (`teacher_weights`); unrecorded left out."""
    names = runs.get("teacher_weights", pd.Series(None, index=runs.index, dtype=object))
    hashes = runs.get("teacher_sha256", pd.Series(None, index=runs.index, dtype=object))
    files = ("sha256 " + hashes.astype("string")).fillna(names.astype("string"))
    known = runs.assign(teacher_file=files).dropna(subset=["teacher_file"])
    if known.empty:
        return pd.Series(dtype=object)
    return known.groupby([CONFIG_FINGERPRINT, "seed"])["teacher_file"].agg(set)


def _used(row: pd.Series, analysis: str) -> Estimate:
    """The estimate the verdict uses: the blocked model's, or the plain paired test's."""
    if analysis == "blocked":
        return Estimate(
            row["n"], row["blocked_mean"], math.nan, row["blocked_df"], row["blocked_low"],
            row["blocked_high"], row["p_blocked"], row["p_equiv_blocked"],
        )  # fmt: skip
    return Estimate(
        row["n"], row["mean_diff"], math.nan, row["n"] - 1, row["paired_low"],
        row["paired_high"], row["p_paired"], row["p_equiv_paired"],
    )  # fmt: skip


def _judge(frame: pd.DataFrame, names: Mapping[str, str], options: Options) -> pd.DataFrame:
    """Adjust the used analysis's p-values within each family; the verdicts from them."""
    frame = frame.copy()
    frame["family"] = frame["pairing_key"] if options.family == "level" else "report"
    frame["analysis"], frame["interval"] = options.analysis, INTERVALS[options.analysis]
    frame["correction"], frame["margin"] = CORRECTION_NAMES[options.correction], options.margin
    for column in ("p_raw", "p_adjusted", "p_equiv_raw", "p_equiv_adjusted"):
        frame[column] = math.nan
    frame["verdict"] = ""
    for _, members in frame.groupby("family", sort=False):
        tests = [_used(row, options.analysis) for _, row in members.iterrows()]
        p_diff, p_equiv, said = family_verdicts(tests, options.margin, options.correction)
        frame.loc[members.index, "p_raw"] = [t.p_diff for t in tests]
        frame.loc[members.index, "p_equiv_raw"] = [t.p_equiv for t in tests]
        frame.loc[members.index, "ci_low"] = [t.low for t in tests]
        frame.loc[members.index, "ci_high"] = [t.high for t in tests]
        frame.loc[members.index, "p_adjusted"], frame.loc[members.index, "p_equiv_adjusted"] = (
            p_diff,
            p_equiv,
        )
        frame.loc[members.index, "verdict"] = said
    refused = frame["note"].str.startswith("refused")
    frame.loc[refused, "verdict"] = frame.loc[refused, "note"]
    frame["boot_note"] = image_noise.flags(frame)
    frame["verdict_text"] = [
        {A_BETTER: f"{r['a']} better", B_BETTER: f"{r['b']} better"}.get(r["verdict"], r["verdict"])
        for _, r in frame.iterrows()
    ]
    return frame


def verdicts(
    runs: pd.DataFrame,
    summary: pd.DataFrame,
    compare: str = ORDERS_AND_KD,
    options: Options | None = None,
    images: bool = True,
) -> pd.DataFrame:
    """Every comparison of every pairing group, one row each (COLUMNS), in report order:
    between orders, KD on / off and teachers, or between the values of the `compare` group.
    `images`: also the seeds × images interval and McNemar (`image_noise`) where the runs saved
    predictions (left out, NaN, when False)."""
    options = options or Options()
    evidence = image_evidence(runs) if images else ImageEvidence(default="not computed")
    values = per_seed(runs).set_index([CONFIG_FINGERPRINT, "seed"]).sort_index()
    teachers = _teacher_files(runs)
    rows, names = [], {}
    for _, group in summary.groupby("level_rank", sort=True):
        labels_ = side_labels(group, compare)
        names.update(labels_)
        fit = _level_fit(values, list(group[CONFIG_FINGERPRINT]))
        level = (values, labels_, teachers, fit, options, evidence)
        rows += [_comparison(kind, a, b, level) for kind, a, b in _pairs(group, compare, labels_)]
    frame = pd.DataFrame(rows, columns=[c for c in COLUMNS if c not in _JUDGED])
    if not frame.empty:
        frame = _judge(frame, names, options)
    frame = frame.reindex(columns=COLUMNS)
    frame["_rank"] = frame["kind"].map(KINDS)
    ranks = summary.drop_duplicates("pairing_key").set_index("pairing_key")["level_rank"]
    frame["_level"] = frame["pairing_key"].map(ranks)
    frame = frame.sort_values(["_level", "_rank"], kind="stable")
    return frame.drop(columns=["_rank", "_level"]).reset_index(drop=True)


# Columns `_judge` fills in once the family is known.
_JUDGED = {"family", "ci_low", "ci_high", "interval", "analysis", "p_raw", "p_adjusted"}
_JUDGED |= {"p_equiv_raw", "p_equiv_adjusted", "correction", "margin", "verdict", "verdict_text"}
_JUDGED |= {"boot_note"}


def write_verdicts(table: pd.DataFrame, path: Path) -> Path:
    """verdicts.csv: one row per comparison (COLUMNS)."""
    text = table.to_csv(index=False)
    return atomic_write(path, lambda fh: fh.write(text.encode()))
