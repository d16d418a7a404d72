"""The command line of `make bench` (`python -m benchmarks`): measure, merge, write."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from benchmarks.figures import FIGURES, merge, run_figures
from benchmarks.paths import ROOT
from benchmarks.report import render
from benchmarks.sizes import Sizes
from kdprune.results import atomic_write


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line of `python -m benchmarks` (`make bench ARGS=...`)."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description="kdprune's performance figures -> BENCHMARKS.md"
    )
    parser.add_argument("--only", default=",".join(FIGURES), help=f"comma list of {FIGURES}")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (a smoke run)")
    parser.add_argument("--threads", type=int, default=1, help="torch / ORT CPU threads")
    parser.add_argument("--reps", type=int, help="interleaved samples per side")
    parser.add_argument("--json", type=Path, help="default benchmarks/results.json")
    parser.add_argument("--markdown", type=Path, help="default BENCHMARKS.md")
    args = parser.parse_args(argv)
    args.only = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = sorted(set(args.only) - set(FIGURES))
    if unknown or not args.only:
        parser.error(f"--only takes names from {', '.join(FIGURES)}; got {unknown or 'none'}")
    if args.threads < 1 or (args.reps is not None and args.reps < 1):
        parser.error("--threads and --reps must be >= 1")
    return args


def sizes_for(args: argparse.Namespace) -> Sizes:
    """The quick or full sizes, with the command line's threads and reps."""
    sizes = Sizes.quick() if args.quick else Sizes.full()
    return replace(
        sizes,
        threads=args.threads,
        reps=args.reps or sizes.reps,
        latency_reps=args.reps or sizes.latency_reps,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Measure, merge with the figures not rerun, write results.json and BENCHMARKS.md."""
    args = parse_args(argv)
    quick = ROOT / "outputs" / "bench-quick"
    json_path = args.json or (quick if args.quick else ROOT / "benchmarks") / "results.json"
    md_path = args.markdown or (quick if args.quick else ROOT) / "BENCHMARKS.md"
    previous = json.loads(json_path.read_text()) if json_path.exists() else None
    results = merge(previous, run_figures(sizes_for(args), args.only))
    text, page = json.dumps(results, indent=1) + "\n", render(results)
    atomic_write(json_path, lambda fh: fh.write(text.encode()))
    atomic_write(md_path, lambda fh: fh.write(page.encode()))
    print(f"wrote {md_path} and {json_path}")
    return 0
