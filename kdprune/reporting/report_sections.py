"""Sections of PRUNING_REPORT.md that judge: budgets, verdicts, and the honest selection."""

from __future__ import annotations

import math

import pandas as pd

from kdprune.reporting.budgets import BudgetCheck
from kdprune.reporting.configs import ORDERS_AND_KD
from kdprune.reporting.markdown import md_table
from kdprune.reporting.statistics import CONFIDENCE, MATCHED_MACS
from kdprune.reporting.verdicts import A_BETTER, B_BETTER, INTERVAL, VERDICTS_FILE

# A compression level, in words: what its configurations share and what differs between them.
LEVELS = {
    ORDERS_AND_KD: (
        "same model, data, pruning method, target, budget and starting point; only the order "
        "or KD differs"
    ),
}


def level_words(compare: str) -> str:
    """What the configurations of one compression level share, and what tells them apart."""
    return LEVELS.get(
        compare,
        f"everything the same but `{compare}`, the pruning target (ratio, unit) included",
    )


def how(compare: str = ORDERS_AND_KD) -> str:
    """The Verdicts section's first paragraph: how runs are paired and judged."""
    return HOW.format(level=level_words(compare))


HOW = (
    "**How.** Runs are paired by seed within a compression level ({level}): the same seed "
    "gives both sides the same teacher, data split and initialisation. For each comparison A vs "
    "B, d = test accuracy of A − test accuracy of B for every seed both sides have (a seed's "
    "duplicate runs averaged first); the table gives the mean of d and its "
    f"{CONFIDENCE:.0%} paired t interval, mean ± t(0.975, n − 1) · s / √n (Student's t, "
    "s the standard deviation of d). Verdict: *A better* when the interval lies above 0, "
    "*B better* below 0, else *no difference detected at n = k*; one seed gives no interval. "
    f"Each interval is {CONFIDENCE:.0%} on its own: among m comparisons where nothing differs, "
    f"about m/20 would show a difference by chance. *Not matched*: the two sides' achieved MACs "
    f"differ by more than {MATCHED_MACS:.0%}, so the difference mixes the order with the "
    "compression. Test accuracy only reports; it never selected anything."
)


def plus_minus(row: pd.Series, name: str, fmt: str = "{:.4f}", scale: float = 1.0) -> str:
    """`mean ± std` of a summary row's `name` (the mean alone for one seed), or n/a."""
    mean, std = row[f"{name}_mean"], row.get(f"{name}_std")
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "n/a"
    text = fmt.format(mean * scale)
    if row.get("n_seeds", 1) > 1 and std is not None and not math.isnan(std):
        text += " ± " + fmt.format(std * scale)
    return text


def interval(row: pd.Series, name: str, fmt: str = "{:.4f}") -> str:
    """`[low, high]`: the 95% t interval of a summary row's `name`, or n/a for one seed."""
    low, high = row.get(f"{name}_ci_low"), row.get(f"{name}_ci_high")
    if low is None or math.isnan(low):
        return "n/a"
    return f"[{fmt.format(low)}, {fmt.format(high)}]"


def _pct(v: float) -> str:
    return "n/a" if v != v else f"{100 * v:.1f}%"


def _achieved(speedup: float, sparsity: float) -> str:
    return ("n/a" if speedup != speedup else f"{speedup:.2f}×") + f" / {_pct(sparsity)}"


def _epochs_phrase(epochs: set[tuple]) -> str:
    parts = []
    for inherited, student in sorted(epochs, key=str):
        head = f"{inherited} inherited + " if inherited else "none inherited, "
        parts.append(f"{head}{student} on the student")
    return "; ".join(parts) or "n/a"


def budget_statement(check: BudgetCheck, titles: dict[str, str]) -> list[str]:
    """'The orders had equal budgets' only when every compared group started from the same
    weights and trained the same epochs; otherwise what differs, group by group."""
    if check.equal:
        return [
            "Within every compared group (one compression level; the same seed for the "
            "weights) the runs started from the same weights and trained the same epochs "
            f"({_epochs_phrase(check.epochs)}): the orders had equal budgets."
        ]
    out = []
    if check.unrecorded:
        out.append(
            f"**Equal budgets cannot be confirmed**: {check.unrecorded} run(s) do not record "
            "their starting point or epochs (`start`, `epochs` in metrics.json: runs from "
            "before they were recorded)."
        )
    differing = {k: v for k, v in check.differences.items() if v}
    if differing:
        out.append(
            "**The budgets are not equal**: a lead below may come from a head start rather "
            "than from the order."
        )
        out += [f"  - {titles[k]}: {'; '.join(v)}." for k, v in differing.items()]
    return out


def _verdict_cell(row: pd.Series) -> str:
    text = row["verdict_text"]
    return f"**{text}**" if row["verdict"] in (A_BETTER, B_BETTER) else text


def _verdict_row(row: pd.Series) -> list[str]:
    ci = "n/a" if math.isnan(row["ci_low"]) else f"[{row['ci_low']:+.4f}, {row['ci_high']:+.4f}]"
    matched = {True: "yes", False: f"**no** ({100 * row['macs_gap']:.1f}% apart)"}
    return [
        f"`{row['a']}`",
        f"`{row['b']}`",
        str(row["n"]),
        "n/a" if math.isnan(row["mean_diff"]) else f"{row['mean_diff']:+.4f}",
        ci,
        _verdict_cell(row),
        _achieved(row["a_macs_speedup"], row["a_sparsity"]),
        _achieved(row["b_macs_speedup"], row["b_sparsity"]),
        matched.get(row["matched"], "n/a"),
    ]


def verdict_lines(
    table: pd.DataFrame, check: BudgetCheck, titles: dict[str, str], compare: str = ORDERS_AND_KD
) -> list[str]:
    """The Verdicts section: how, then a subsection per compression level with its table."""
    out = ["## Verdicts", "", how(compare), ""]
    if table.empty:
        what = "two orders, or KD and no KD" if compare == ORDERS_AND_KD else f"two `{compare}`s"
        return [*out, f"No comparison: no level has {what} side by side."]
    header = ["A", "B", "n", "mean A − B", f"{CONFIDENCE:.0%} CI ({INTERVAL})", "verdict"]
    header += ["A achieved (MACs × / sparsity)", "B achieved", "MACs matched"]
    for key, rows in table.groupby("pairing_key", sort=False):
        differences = check.differences.get(key) or []
        budget = "differ: " + "; ".join(differences) if differences else "equal"
        if not differences and check.unrecorded:
            budget = "not recorded for every run"
        out += [f"### {titles[key]}", "", f"Budgets: {budget}.", ""]
        out += [*md_table(header, [_verdict_row(r) for _, r in rows.iterrows()]), ""]
    return [*out, f"Every comparison: [`{VERDICTS_FILE}`]({VERDICTS_FILE})."]


def select_epoch_note(runs: pd.DataFrame) -> str:
    """What the epoch selection inside each run means for the validation accuracy shown here."""
    kinds = set(runs["select_epoch"].dropna())
    if "best_val" in kinds:
        return (
            "**Validation was used twice**: each stage kept its best-validation epoch "
            "(`select_epoch: best_val`), and the configuration is picked on validation accuracy "
            "again, so the selected configuration's validation accuracy is optimistic; its test "
            "accuracy (never used to choose) is the honest estimate."
        )
    if kinds == {"last"}:
        return (
            "Each stage kept its last epoch (`select_epoch: last`): validation only chooses here."
        )
    return (
        "The runs do not record how their epochs were selected (`select_epoch`): if a stage kept "
        "its best-validation epoch, the selected configuration's validation accuracy is "
        "optimistic."
    )


def _level_name(row: pd.Series, titles: dict[str, str], split: set[str]) -> str:
    title = titles[row["pairing_key"]]
    if row["pairing_key"] in split:  # the group splits by achieved MACs
        title += f" at {row['macs_speedup_mean']:.2f}×"
    return title


def selection_lines(
    summary: pd.DataFrame, best: pd.DataFrame, front: pd.DataFrame, titles: dict[str, str],
    names: dict[str, str], note: str, compare: str = ORDERS_AND_KD,
) -> list[str]:  # fmt: skip
    """Best per compression level (val selects among equal achieved MACs) and the Pareto front."""
    split = {k for k, g in summary.groupby("pairing_key") if g["level"].nunique() > 1}
    out = [
        "## Best configuration per compression level",
        "",
        "**Selected by validation accuracy among configurations of equal achieved compression** "
        f"(one level: {level_words(compare)}; MACs within {MATCHED_MACS:.0%})"
        "; test accuracy reported, never used to choose. There is no best over all compressions: "
        "it would pick the least compressed model by construction (see the Pareto front).",
        "",
        note,
        "",
    ]
    header = ["level", "configuration", "candidates", "val acc (selects)", "test acc (reported)"]
    header += ["MACs speed-up", "weight sparsity"]
    rows = [
        [_level_name(r, titles, split), f"`{names[r['config_fingerprint']]}`",
         str(int(r["candidates"])), plus_minus(r, "val_acc"), plus_minus(r, "test_acc"),
         plus_minus(r, "macs_speedup", "{:.2f}") + "×", _pct(r["weight_sparsity_mean"])]
        for _, r in best.iterrows()
    ]  # fmt: skip
    out += md_table(header, rows) if rows else ["No level holds two configurations to choose from."]
    out += ["", "## Pareto front", "", "Configurations no other beats on both mean validation "
            "accuracy and mean MACs speed-up (test accuracy reported):", ""]  # fmt: skip
    header = ["configuration", "target", "seeds", "val acc", "test acc", "MACs speed-up"]
    rows = [
        [f"`{names[r['config_fingerprint']]}`", f"{r['target_ratio']:g}", str(int(r["n_seeds"])),
         plus_minus(r, "val_acc"), plus_minus(r, "test_acc"),
         plus_minus(r, "macs_speedup", "{:.2f}") + "×"]
        for _, r in front.iterrows()
    ]  # fmt: skip
    return out + md_table(header, rows)
