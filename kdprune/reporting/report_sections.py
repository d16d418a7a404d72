"""Sections of PRUNING_REPORT.md that judge: budgets, verdicts, and the honest selection."""

from __future__ import annotations

import math

import pandas as pd

from kdprune.reporting.budgets import NOT_RECORDED, BudgetCheck
from kdprune.reporting.config_groups import ORDERS_AND_KD
from kdprune.reporting.image_noise_report import HOW_IMAGES, boot_cell, mcnemar_cell, what_varied
from kdprune.reporting.inference import CORRECTION_NAMES, equivalent_words
from kdprune.reporting.markdown import md_table
from kdprune.reporting.statistics import MATCHED_LATENCY, MATCHED_MACS
from kdprune.reporting.verdicts import A_BETTER, B_BETTER, VERDICTS_FILE, Options
from kdprune.run_record import CONFIG_FINGERPRINT, MACS_SPEEDUP, TEST_ACC, VAL_ACC

# A compression level, in words: what its configurations share and what differs between them.
LEVELS = {
    ORDERS_AND_KD: (
        "same model, data, pruning method, target, budget and starting point; only the order, "
        "KD or the teacher differs"
    ),
}


def level_words(compare: str) -> str:
    """What the configurations of one compression level share, and what tells them apart."""
    return LEVELS.get(
        compare,
        f"everything the same but `{compare}`, the pruning target (ratio, unit) included",
    )


def how(compare: str = ORDERS_AND_KD, options: Options | None = None) -> str:
    """The Verdicts section's first paragraph: how runs are paired, tested and judged."""
    options = options or Options()
    family = (
        "each compression level's contrasts are one family"
        if options.family == "level"
        else "all the report's contrasts are one family"
    )
    return HOW.format(
        level=level_words(compare),
        analysis=options.analysis,
        family=family,
        correction=CORRECTION_NAMES[options.correction],
        margin=equivalent_words(options.margin),
        m=f"{100 * options.margin:g}",
    )


HOW = (
    "**How.** Runs are paired by seed within a compression level ({level}). For each contrast "
    "A vs B, d = test accuracy of A − test accuracy of B at every seed both sides have with a "
    "finite accuracy (a seed's duplicate runs averaged first). Two analyses per contrast: "
    "*paired*: the mean of d, its 95% paired t interval, the paired t test "
    "(scipy `ttest_1samp`) and the paired TOST (statsmodels `ttost_paired`); *blocked*: one "
    "linear model per level over every configuration's per-seed accuracies with the seed as "
    "block (statsmodels OLS, `test_acc ~ configuration + seed`), so the level's contrasts "
    "share its residual degrees of freedom (the column gives them). "
    "**The verdicts use the {analysis} analysis.** Multiplicity: {family}; within it the "
    "two-sided p-values (H0: A − B = 0) and the equivalence p-values (TOST, H0: |A − B| ≥ "
    "{m} points) are each adjusted with {correction} (statsmodels `multipletests`). Verdict: "
    "*A better* / *B better* when the adjusted p < 0.05; *{margin}* when the adjusted TOST "
    "p < 0.05 (both one-sided tests reject a difference of the margin or more); else "
    "*undecided at n = k*: these seeds do not decide, which is not evidence that nothing "
    "differs. The intervals are 95% each, not adjusted. A pair whose sides both use a teacher "
    "is refused when their runs of one seed record different teacher files "
    "(metrics.json `teacher_sha256`, the file's hash; else `teacher_weights`); a run "
    "without KD does not use its teacher, which is then no part of its identity. *Not "
    "matched*: the two sides' achieved MACs or remaining "
    f"weights differ by more than {MATCHED_MACS:.0%}, so the difference mixes the order with "
    "the compression; for cuts to a latency target (unit latency), whose MACs differ by design, "
    f"their speed-ups timed on the target differ by more than {MATCHED_LATENCY:.0%}. Test "
    "accuracy only reports; it never selected anything."
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


def _achieved(speedup: float, sparsity: float, measured: float | None = None) -> str:
    cell = ("n/a" if speedup != speedup else f"{speedup:.2f}×") + f" / {_pct(sparsity)}"
    has = measured is not None and measured == measured
    return cell + (f" / measured {measured:.2f}×" if has else "")


def _epochs_phrase(epochs: set[tuple]) -> str:
    parts = []
    for inherited, student in sorted(epochs, key=str):
        head = f"{inherited} inherited + " if inherited else "none inherited, "
        parts.append(f"{head}{student} on the student")
    return "; ".join(parts) or "n/a"


def budget_statement(check: BudgetCheck, titles: dict[str, str]) -> list[str]:
    """'The orders had equal budgets in everything recorded' only when every compared group
    started from the same weights, trained the same epochs in the same number of learning-rate
    cycles and selected its epochs the same way; otherwise what differs, group by group. What
    no run records is said to be not recorded."""
    n = check.unrecorded_schedule
    unknown = f" Not judged: {NOT_RECORDED.format(n=n)}." if n else ""
    if check.equal:
        cycles = ", ".join(sorted(check.cycles))
        selection = ", ".join(sorted(check.selection))
        resets, selecting = ", ".join(sorted(check.resets)), ", ".join(sorted(check.selecting))
        return [
            "Within every compared group (one compression level; the same seed for the "
            "weights) the runs started from the same weights and trained the same epochs "
            f"({_epochs_phrase(check.epochs)}) in the same number of learning-rate cycles "
            f"({cycles} per run; each stage starts a fresh optimizer and schedule) with the "
            f"same optimizer resets inside stages ({resets}), selecting epochs the same way "
            f"(`select_epoch`: {selection}; stages able to keep their best validation epoch: "
            f"{selecting}): the orders had equal budgets in everything recorded.{unknown}"
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
            "**The budgets are not equal**: a lead below may come from a head start or a "
            "different schedule rather than from the order."
        )
        out += [f"  - {titles[k]}: {'; '.join(v)}." for k, v in differing.items()]
    return [*out, unknown.strip()] if unknown else out


def _verdict_cell(row: pd.Series) -> str:
    text = row["verdict_text"]
    return f"**{text}**" if row["verdict"] in (A_BETTER, B_BETTER) else text


def _ci(low: float, high: float) -> str:
    return "n/a" if low != low else f"[{low:+.4f}, {high:+.4f}]"


def _p(raw: float, adjusted: float) -> str:
    return "n/a" if raw != raw else f"{raw:.2g} → {adjusted:.2g}"


def _matched_cell(row: pd.Series) -> str:
    if row["matched"] is None or row["matched"] != row["matched"]:
        return "n/a"
    latency = row.get("latency_gap", math.nan)
    if latency == latency:  # both sides cut to a latency target: matched on measured speed-up
        return (
            "yes (measured)" if row["matched"] else f"**no** (measured {100 * latency:.1f}% apart)"
        )
    if row["matched"]:
        return "yes"
    gaps = [(row["macs_gap"], "MACs"), (row["weights_gap"], "weights")]
    said = ", ".join(f"{what} {100 * g:.1f}% apart" for g, what in gaps if g > MATCHED_MACS)
    return f"**no** ({said})"


def _verdict_row(row: pd.Series) -> list[str]:
    df = row["blocked_df"]
    blocked = _ci(row["blocked_low"], row["blocked_high"])
    return [
        f"`{row['a']}`",
        f"`{row['b']}`",
        str(row["n"]),
        "n/a" if math.isnan(row["mean_diff"]) else f"{row['mean_diff']:+.4f}",
        _ci(row["paired_low"], row["paired_high"]),
        blocked + ("" if df != df else f" ({df:g} df)"),
        boot_cell(row),
        mcnemar_cell(row),
        _p(row["p_raw"], row["p_adjusted"]),
        _p(row["p_equiv_raw"], row["p_equiv_adjusted"]),
        _verdict_cell(row),
        _achieved(row["a_macs_speedup"], row["a_sparsity"], row.get("a_latency_speedup")),
        _achieved(row["b_macs_speedup"], row["b_sparsity"], row.get("b_latency_speedup")),
        _matched_cell(row),
    ]


def _header(options: Options) -> list[str]:
    header = ["A", "B", "n", "mean A − B (paired)", "paired 95% CI", "blocked 95% CI"]
    header += ["seeds × images 95% CI", "McNemar: only A / only B right; seeds p < 0.05"]
    header += [f"p ({options.analysis}, raw → adjusted)", "TOST p (raw → adjusted)", "verdict"]
    return header + ["A achieved (MACs × / sparsity [/ measured ×])", "B achieved", "matched"]


def verdict_lines(
    table: pd.DataFrame, check: BudgetCheck, titles: dict[str, str],
    compare: str = ORDERS_AND_KD, options: Options | None = None,
    runs: pd.DataFrame | None = None,
) -> list[str]:  # fmt: skip
    """The Verdicts section: how, what varied (given the runs), then a subsection per
    compression level with its table."""
    options = options or Options()
    out = ["## Verdicts", "", how(compare, options), "", HOW_IMAGES, ""]
    if runs is not None and not table.empty:
        out += [what_varied(runs, table), ""]
    if table.empty:
        what = "two orders, or KD and no KD" if compare == ORDERS_AND_KD else f"two `{compare}`s"
        return [*out, f"No comparison: no level has {what} side by side."]
    for key, rows in table.groupby("pairing_key", sort=False):
        differences = check.differences.get(key) or []
        budget = "differ: " + "; ".join(differences) if differences else "equal"
        if not differences and check.unrecorded:
            budget = "not recorded for every run"
        out += [f"### {titles[key]}", "", f"Budgets: {budget}.", ""]
        out += [*md_table(_header(options), [_verdict_row(r) for _, r in rows.iterrows()]), ""]
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
        [_level_name(r, titles, split), f"`{names[r[CONFIG_FINGERPRINT]]}`",
         str(int(r["candidates"])), plus_minus(r, VAL_ACC), plus_minus(r, TEST_ACC),
         plus_minus(r, MACS_SPEEDUP, "{:.2f}") + "×", _pct(r["weight_sparsity_mean"])]
        for _, r in best.iterrows()
    ]  # fmt: skip
    out += md_table(header, rows) if rows else ["No level holds two configurations to choose from."]
    out += ["", "## Pareto front", "", "Configurations no other beats on both mean validation "
            "accuracy and mean MACs speed-up (test accuracy reported):", ""]  # fmt: skip
    header = ["configuration", "target", "seeds", "val acc", "test acc", "MACs speed-up"]
    rows = [
        [f"`{names[r[CONFIG_FINGERPRINT]]}`", f"{r['target_ratio']:g}", str(int(r["n_seeds"])),
         plus_minus(r, VAL_ACC), plus_minus(r, TEST_ACC),
         plus_minus(r, MACS_SPEEDUP, "{:.2f}") + "×"]
        for _, r in front.iterrows()
    ]  # fmt: skip
    return out + md_table(header, rows)
