"""Expected maximum validation performance of a study (Dodge et al. 2019, "Show your work").

A study's best trial is the maximum of n noisy trials; how good a best trial to expect depends on
n. For the N feasible complete trials' values v_(1) <= ... <= v_(N), the expected best of n trials
drawn with replacement from them is

    E[max_n] = sum_i v_(i) * ((i / N)^n - ((i - 1) / N)^n),

with variance E[max_n^2] - E[max_n]^2 (Dodge et al., eq. 1). Written here (a few lines of numpy)
because no maintained library implements it; the authors published a script, not a package.
Pruned trials have no final value and are left out (the report says how many): with a pruner the
curve describes the trials that ran to the end. For a minimised objective the curve is of the
expected minimum.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from kdprune.reporting.markdown import md_table
from kdprune.results import atomic_write

EMV_FILE = "expected_max_validation.png"


def expected_max_curve(values: list[float] | np.ndarray, maximise: bool = True) -> pd.DataFrame:
    """`n`, `expected` best value of n trials and its `sd`, for n = 1 .. len(values)."""
    v = np.sort(np.asarray(values, dtype=float))
    if not maximise:
        v = -v[::-1]
    big_n = len(v)
    i = np.arange(1, big_n + 1)
    rows = []
    for n in range(1, big_n + 1):
        weights = (i / big_n) ** n - ((i - 1) / big_n) ** n
        mean = float(weights @ v)
        sd = float(np.sqrt(max(weights @ v**2 - mean**2, 0.0)))
        rows.append({"n": n, "expected": mean if maximise else -mean, "sd": sd})
    return pd.DataFrame(rows)


def emv_lines(curve: pd.DataFrame, objective: str, n_pruned: int) -> list[str]:
    """The report's section: the curve at n = 1, 2, 4, ... and all N."""
    big_n = int(curve["n"].max())
    shown = sorted({*[n for n in (1, 2, 4, 8, 16, 32, 64) if n <= big_n], big_n})
    rows = [[str(n), f"{r.expected:.4f}", f"{r.sd:.4f}"]
            for n, r in curve.set_index("n").loc[shown].iterrows()]  # fmt: skip
    return [
        "### Expected best validation score by number of trials",
        "",
        f"Expected {objective} of the best of n trials drawn from this study's {big_n} feasible "
        f"complete trials (Dodge et al. 2019; {n_pruned} pruned trials left out): how much of the "
        "best value is the search budget rather than the configuration. Re-run the best "
        "configurations on new seeds (`kdprune confirm`) before trusting the best trial's value.",
        "",
        *md_table(["n trials", f"expected best {objective}", "sd"], rows),
    ]


def plot_emv(curve: pd.DataFrame, objective: str, path: Path) -> Path:
    """The curve with a band of one standard deviation."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(5.5, 3.6))
    ax = fig.add_subplot()
    ax.plot(curve["n"], curve["expected"], marker="o", ms=3, color="tab:blue")
    low, high = curve["expected"] - curve["sd"], curve["expected"] + curve["sd"]
    ax.fill_between(curve["n"], low, high, alpha=0.2, color="tab:blue", label="± 1 sd")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("trials (n)")
    ax.set_ylabel(f"expected best {objective}")
    ax.set_title("Expected maximum validation performance")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    return atomic_write(path, lambda fh: fig.savefig(fh, format="png", dpi=150))
