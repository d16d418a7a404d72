"""The sequential verdict's files: the usual report on the runs the last look saw, verdicts.csv
with the sequential columns added, sequential.csv and a section of PRUNING_REPORT.md.

Columns added to verdicts.csv (and the whole of sequential.csv, with a, b, kind, pairing_key):
sequential_verdict (the verdict of the stopping rule: A better / B better / equivalent within
±m points / undecided at n = k (cap) / refused ...), decided_at_look (1-based; empty when
undecided at the cap), seeds_needed (seeds the contrast had at that look, or at the cap),
look_alpha (the alpha of the deciding look), spending (the spending function), looks (the
planned seeds per look).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

from kdprune.reporting.inference import A_BETTER, B_BETTER
from kdprune.reporting.sequential import Decision
from kdprune.results import atomic_write, write_text

SEQUENTIAL_FILE = "sequential.csv"
SEQUENTIAL_COLUMNS = ["sequential_verdict", "decided_at_look", "seeds_needed", "look_alpha"]
CITATION = (
    "Lan & DeMets (1983), Discrete sequential boundaries for clinical trials, "
    "Biometrika 70(3):659-663"
)


def with_decisions(
    table: pd.DataFrame, decisions: Mapping[tuple[str, str], Decision], spending: str,
    looks: Sequence[int],
) -> pd.DataFrame:  # fmt: skip
    """The verdicts table with each contrast's sequential decision as columns."""
    table = table.copy()
    rows = [
        decisions.get((a, b))
        for a, b in zip(table["a_fingerprint"], table["b_fingerprint"], strict=True)
    ]
    said = [d.verdict if d else "" for d in rows]
    table["sequential_verdict"] = [
        {A_BETTER: f"{r['a']} better", B_BETTER: f"{r['b']} better"}.get(s, s)
        for (_, r), s in zip(table.iterrows(), said, strict=True)
    ]
    table["decided_at_look"] = pd.array([d.look if d else None for d in rows], dtype="Int64")
    table["seeds_needed"] = pd.array([d.n if d else None for d in rows], dtype="Int64")
    table["look_alpha"] = [d.alpha if d else float("nan") for d in rows]
    table["spending"] = spending
    table["looks"] = " ".join(str(n) for n in looks)
    return table


def _lines(table: pd.DataFrame, titles: Mapping[str, str], alphas: Sequence[float]) -> list[str]:
    """The markdown table of the sequential verdicts."""
    lines = [
        "| level | A | B | sequential verdict | decided at look | seeds |",
        "|---|---|---|---|---|---|",
    ]
    for _, r in table.iterrows():
        look = "-" if pd.isna(r["decided_at_look"]) else str(int(r["decided_at_look"]))
        lines.append(
            f"| {titles.get(r['pairing_key'], r['pairing_key'])} | {r['a']} | {r['b']} "
            f"| {r['sequential_verdict']} | {look} | {r['seeds_needed']} |"
        )
    return lines


def section(
    table: pd.DataFrame, titles: Mapping[str, str], looks: Sequence[int],
    alphas: Sequence[float], spending: str,
) -> str:  # fmt: skip
    """The report's "Sequential verdict" section: the rule, then one line per contrast."""
    decided = table["decided_at_look"].notna().sum()
    shares = ", ".join(f"n={n}: {a:.4g}" for n, a in zip(looks, alphas, strict=True))
    text = [
        "## Sequential verdict",
        "",
        f"Seeds were added in looks of {', '.join(str(n) for n in looks)} seeds per arm (cap "
        f"{looks[-1]}); only the arms of contrasts still undecided got the next look's seeds. "
        f"Each look tested at its share of alpha from a Lan-DeMets {spending}-type spending "
        f"function ({CITATION}): {shares}; Holm (or the report's correction) within each family "
        "at each look, so the family-wise rate of a false verdict over all looks stays at or "
        "below 0.05. These verdicts, not the fixed-n ones of the section above (which ignore "
        "the looks), carry that guarantee. 'Undecided at the cap' is not 'no difference'.",
        "",
        f"{decided} of {len(table)} contrasts decided; {len(table) - decided} undecided at the cap "
        f"or refused.",
        "",
        *_lines(table, titles, alphas),
        "",
    ]
    return "\n".join(text)


def write_sequential(
    table: pd.DataFrame, out_dir: Path, markdown_file: Path, text: str
) -> list[Path]:
    """sequential.csv, verdicts.csv with the sequential columns, the report's new section."""
    from kdprune.reporting.verdicts import VERDICTS_FILE

    keep = ["pairing_key", "kind", "a", "b", *SEQUENTIAL_COLUMNS, "spending", "looks"]
    files = []
    for path, frame in ((out_dir / SEQUENTIAL_FILE, table[keep]), (out_dir / VERDICTS_FILE, table)):
        csv = frame.to_csv(index=False)
        files.append(write_text(path, csv))
    old = markdown_file.read_text() if markdown_file.is_file() else ""
    files.append(atomic_write(markdown_file, lambda fh: fh.write((old + "\n" + text).encode())))
    return files
