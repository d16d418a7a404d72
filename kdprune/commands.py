"""The non-Hydra subcommands: `kdprune report`, `kdprune evaluate`, `kdprune export-onnx`,
`kdprune sensitivity`, `kdprune dashboard`, `kdprune confirm`, `kdprune verdict --until-decided`."""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, NoReturn

from omegaconf import DictConfig, OmegaConf

from kdprune.errors import KdpruneError
from kdprune.paths import journal_file, sqlite_file
from kdprune.results import METRICS_FILE
from kdprune.run_record import DATASET, MACS_SPEEDUP
from kdprune.sweeping import confirm_cli


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error in one line (`kdprune: error: ...`), exit code 2."""

    def error(self, message: str) -> NoReturn:
        print(f"kdprune: error: {message} (see `{self.prog} --help`)", file=sys.stderr)
        raise SystemExit(2)


def _add_dashboard(sub: Any) -> None:
    """`kdprune dashboard --storage URL`."""
    dashboard = sub.add_parser(
        "dashboard",
        help="watch an Optuna study in optuna-dashboard (pip install -e '.[dashboard]')",
        description="Serve optuna-dashboard for a storage URL on a loopback port.",
    )
    dashboard.add_argument(
        "--storage", required=True, help="sqlite:///, postgresql://, journal:///"
    )
    dashboard.add_argument("--host", default="127.0.0.1", help="address to listen on (loopback)")
    dashboard.add_argument("--port", type=int, default=8080, help="port (0: any free one)")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="kdprune", description="kdprune subcommands (runs: `kdprune [overrides]`)"
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for add in (
        _report_parser,
        _evaluate_parser,
        _add_dashboard,
        _onnx_parser,
        _sensitivity_parser,
        confirm_cli.add_parser,
    ):
        add(sub)
    from kdprune.sweeping.sequential_cli import add_parser

    add_parser(sub, _verdict_options)
    return parser


def _report_parser(sub: Any) -> None:
    report = sub.add_parser(
        "report",
        help="CSV, plots and markdown summary of a multirun folder or an Optuna study",
        description="Report on every metrics.json below SOURCE, or on an Optuna study's trials.",
    )
    report.add_argument("source", nargs="?", help="a multirun folder (or any folder of runs)")
    report.add_argument("--storage", help="Optuna storage URL, e.g. sqlite:///sweeps/study.db")
    report.add_argument("--study", help="study name in --storage (optional if it holds one)")
    report.add_argument("--out", help="output folder (default: SOURCE, or the database's folder)")
    x_axes = ["sparsity", MACS_SPEEDUP, "params_removed", "latency_speedup"]
    x_help = "x axis (as achieved; latency_speedup: measured on the runs' latency target)"
    report.add_argument("--x", choices=x_axes, default="sparsity", help=x_help)
    report.add_argument(
        "--pareto", action="store_true", help="also draw pareto.png (val_acc vs MACs speed-up)"
    )
    compare = "what verdicts compare: orders (orders and KD) or a config group, e.g. prune_method"
    report.add_argument("--compare", default="orders", help=compare)
    _verdict_options(report)


def _margin(text: str) -> float:
    """--margin: a positive number of accuracy points."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not value > 0 or math.isinf(value):
        raise argparse.ArgumentTypeError(f"expected a positive number of points, got {text!r}")
    return value


def _verdict_options(report: Any) -> None:
    """--correction, --margin, --analysis, --family: how the report reaches its verdicts."""
    report.add_argument(
        "--correction", choices=["holm", "bh"], default="holm",
        help="multiplicity correction within each family: Holm (default) or Benjamini-Hochberg",
    )  # fmt: skip
    report.add_argument(
        "--margin", type=_margin, default=0.25,
        help="equivalence margin in points of test accuracy (default 0.25)",
    )  # fmt: skip
    report.add_argument(
        "--analysis", choices=["blocked", "paired"], default="blocked",
        help="what the verdict uses: the blocked model per level (default) or the paired test",
    )  # fmt: skip
    report.add_argument(
        "--family", choices=["level", "report"], default="level",
        help="the family adjusted together: each compression level (default) or the report",
    )  # fmt: skip


def _evaluate_parser(sub: Any) -> None:
    evaluate = sub.add_parser(
        "evaluate",
        help="accuracy of a saved model file (or a run's .onnx file) on a data set",
        description="Load a model file (weights only; an .onnx file runs in ONNX Runtime) and "
        "print its accuracy on a split.",
    )
    evaluate.add_argument("model_file")
    evaluate.add_argument(
        "overrides",
        nargs="*",
        help="Hydra overrides on the run's config, e.g. dataset=imagefolder dataset.splits.root=D",
    )
    evaluate.add_argument("--dataset", help="shorthand for the override dataset=NAME")
    evaluate.add_argument("--data-dir", help="shorthand for the override paths.data_dir=DIR")
    evaluate.add_argument("--split", choices=["test", "val"], default="test")
    evaluate.add_argument("--batch-size", type=int, default=1024)
    evaluate.add_argument("--device", default="cpu", help="cpu, cuda[:N], mps or auto")


def _onnx_parser(sub: Any) -> None:
    onnx = sub.add_parser(
        "export-onnx",
        help="export a saved model to ONNX, checked against PyTorch with ONNX Runtime",
        description="Export a model file to ONNX: input `input` [batch, C, H, W], output `logits`.",
    )
    onnx.add_argument("model_file")
    onnx.add_argument(
        "overrides",
        nargs="*",
        help="Hydra overrides on the run's config (its data set gives the input size)",
    )
    onnx.add_argument("--out", help="the .onnx file (default: MODEL_FILE with suffix .onnx)")
    onnx.add_argument(
        "--input-shape", help="C,H,W (default: the overrides' data set, else the file's)"
    )
    onnx.add_argument("--opset", type=int, default=None, help="ONNX opset (default: 18)")
    onnx.add_argument("--batch-size", type=int, default=None, help="fixed batch (default: dynamic)")


def _sensitivity_parser(sub: Any) -> None:
    sens = sub.add_parser(
        "sensitivity",
        help="per-group pruning sensitivity of a trained model, and a per-layer ratio file",
        description="Prune each dependency group of a copy at each ratio, score it on validation "
        "data; write sensitivity.csv, sensitivity.png and layer_ratios.yaml, whose ratios keep "
        "the MACs (params for unit=params) of the composed prune_method's uniform cut.",
    )
    sens.add_argument("model_file", nargs="?", help="a model file (default: the run's teacher)")
    sens.add_argument(
        "overrides", nargs="*", help="Hydra overrides, e.g. prune_method.ratio=0.6 dataset=digits"
    )
    sens.add_argument("--ratios", help="the grid, comma-separated (default: 0.1,0.2,...,0.9)")
    sens.add_argument("--val-batches", type=int, help="validation batches per score (default: all)")
    sens.add_argument("--out", help="output folder (default: outputs/sensitivity/<date>_<time>)")
    sens.add_argument("--device", default="cpu", help="cpu, cuda[:N], mps or auto")
    sens.add_argument("--threads", type=int, default=1, help="torch CPU threads (default: 1)")


def _report(args: argparse.Namespace) -> int:
    from kdprune.reporting import collect_runs, collect_study, write_report
    from kdprune.reporting.verdicts import Options

    if args.storage is None and args.study is not None:
        raise KdpruneError("--study needs --storage.")
    if args.storage is not None and args.source is not None:
        raise KdpruneError("give either a SOURCE folder or --storage, not both.")
    if args.storage is None and args.source is None:
        raise KdpruneError("report needs a SOURCE folder or --storage URL.")
    study = None
    if args.storage is not None:
        runs, study = collect_study(args.storage, args.study)
        db = sqlite_file(args.storage) or journal_file(args.storage)
        default_out = db.parent if db is not None else Path.cwd()
        source = f"study {study.name} in {args.storage}"
    else:
        runs = collect_runs(args.source)
        default_out, source = Path(args.source), str(args.source)
    out = Path(args.out) if args.out else default_out
    options = Options(args.correction, args.margin / 100, args.analysis, args.family)
    report = write_report(
        runs, out, x=args.x, pareto=args.pareto, study=study, source=source, compare=args.compare,
        options=options,
    )  # fmt: skip
    print(f"{len(runs)} runs from {source}")
    if args.source is not None:
        from kdprune.reporting.diverged import add_diverged_runs
        from kdprune.reporting.report import MARKDOWN_FILE

        if n_diverged := add_diverged_runs(out / MARKDOWN_FILE, args.source):
            print(f"{n_diverged} diverged run(s) listed apart (Diverged runs)")
    for path in report.files:
        print(f"wrote {path}")
    print(report.summary())
    return 0


def _run_overrides(model_file: str) -> list[str]:
    """The overrides a saved model's run was composed with: its `.hydra/overrides.yaml`, else
    `dataset=<name>` from its metrics.json, else none."""
    run_dir = Path(model_file).resolve().parent
    saved = run_dir / ".hydra" / "overrides.yaml"
    if saved.is_file():
        return [str(o) for o in OmegaConf.load(saved)]
    if (run_dir / METRICS_FILE).is_file():
        from kdprune.results import read_metrics

        name = read_metrics(run_dir).get(DATASET)
        return [f"dataset={name}"] if name else []
    return []


def run_config(model_file: str | None, overrides: list[str]) -> DictConfig:
    """The config a saved model came from, with the user's overrides on top: conf/ composed with
    the run's own overrides (those the user sets again are dropped), then the user's (no model
    file: conf/ with the user's overrides)."""
    from kdprune.errors import one_line
    from kdprune.instantiation import compose_run, override_keys

    try:
        mine = set(override_keys(overrides))
        inherited = _run_overrides(model_file) if model_file else []
        kept = [
            o for o, k in zip(inherited, override_keys(inherited), strict=True) if k not in mine
        ]
        return compose_run([*kept, *overrides])
    except Exception as err:  # Hydra's parse and composition errors: a user's typo
        raise KdpruneError(one_line(err)) from None


def _shorthands(args: argparse.Namespace) -> list[str]:
    """The overrides the --dataset / --data-dir shorthands stand for, then the user's own."""
    extra = [] if getattr(args, "dataset", None) is None else [f"dataset={args.dataset}"]
    extra += [] if getattr(args, "data_dir", None) is None else [f"paths.data_dir={args.data_dir}"]
    return [*extra, *args.overrides]


def _evaluate(args: argparse.Namespace) -> int:
    from kdprune import load_model
    from kdprune.data import Augment, make_loaders
    from kdprune.engine import evaluate, pick_device
    from kdprune.instantiation import instantiate

    if args.batch_size < 1:
        raise KdpruneError(f"--batch-size must be at least 1, got {args.batch_size}.")
    onnx = Path(args.model_file).suffix == ".onnx"  # model.int8.onnx: run in ONNX Runtime
    device = pick_device("cpu" if onnx else args.device)
    cfg = run_config(args.model_file, _shorthands(args))
    model = None if onnx else load_model(args.model_file, map_location=device)
    splits = instantiate(cfg.dataset.splits)
    workers = 0 if splits.in_memory else min(4, os.cpu_count() or 1)
    loaders = make_loaders(
        splits, args.batch_size, args.batch_size, device, Augment(), 0, num_workers=workers
    )
    loader = getattr(loaders, args.split)
    try:
        if onnx:
            from kdprune.quantization.onnx_measure import evaluate_onnx_file

            result, what = evaluate_onnx_file(args.model_file, loader)
        else:
            assert model is not None  # loaded above: not an ONNX file
            result = evaluate(model, loader, device, amp=False)
            what = f"{sum(p.numel() for p in model.parameters())} parameters"
    except (RuntimeError, ValueError) as err:  # the model was trained on another data set
        raise KdpruneError(
            f"the model does not take {cfg.dataset.name} images ({str(err).splitlines()[0]})."
        ) from err
    n = len(getattr(splits, args.split))
    correct = round(result["acc"] * n)
    print(
        f"{args.model_file}: {cfg.dataset.name} {args.split} accuracy {result['acc']:.4f} "
        f"({correct}/{n}), loss {result['loss']:.4f}, {what}"
    )
    return 0


def _export_onnx(args: argparse.Namespace) -> int:
    from kdprune.export import export_onnx

    shape = None  # the file's own input size
    if args.overrides:  # the data set the user names decides the input size
        d = run_config(args.model_file, args.overrides).dataset
        shape = [int(d.in_channels), int(d.image_size), int(d.image_size)]
    if args.input_shape:
        try:
            shape = [int(n) for n in args.input_shape.split(",")]
        except ValueError:
            shape = []
        if len(shape) != 3 or min(shape) < 1:
            raise KdpruneError(
                f"--input-shape must be C,H,W (e.g. 3,32,32), got {args.input_shape}"
            )
    out = Path(args.out) if args.out else Path(args.model_file).with_suffix(".onnx")
    kwargs = {} if args.opset is None else {"opset": args.opset}
    path = export_onnx(
        args.model_file, out, batch_size=args.batch_size, input_shape=shape, **kwargs
    )
    batch = "dynamic batch" if args.batch_size is None else f"batch {args.batch_size}"
    print(f"wrote {path} ({batch}; outputs checked against PyTorch with ONNX Runtime)")
    return 0


def _verdict(args: argparse.Namespace) -> int:
    from kdprune.sweeping.sequential_cli import run

    return run(args)


def _dashboard(args: argparse.Namespace) -> int:
    from kdprune.sweeping.dashboard import serve

    serve(args.storage, args.host, args.port)
    return 0


def _sensitivity(args: argparse.Namespace) -> int:
    from kdprune.sensitivity import DEFAULT_RATIOS, run_sensitivity

    model_file, overrides = args.model_file, list(args.overrides)
    if model_file is not None and "=" in model_file and not Path(model_file).exists():
        model_file, overrides = None, [model_file, *overrides]  # an override, not a file
    try:
        ratios = [float(r) for r in args.ratios.split(",")] if args.ratios else DEFAULT_RATIOS
    except ValueError:
        raise KdpruneError(f"--ratios takes numbers joined by commas, not {args.ratios}") from None
    out = Path(args.out or Path("outputs/sensitivity") / time.strftime("%Y-%m-%d_%H-%M-%S"))
    cfg = run_config(model_file, overrides)
    result = run_sensitivity(
        cfg, model_file, out, ratios, args.device, args.val_batches, args.threads
    )
    print(result.summary())
    return 0


COMMANDS: dict[str, Any] = {
    "report": _report,
    "evaluate": _evaluate,
    "export-onnx": _export_onnx,
    "sensitivity": _sensitivity,
    "dashboard": _dashboard,
    "confirm": confirm_cli.run,
    "verdict": _verdict,
}


def main(argv: list[str]) -> int:
    """Run a subcommand (argv starts with its name); return the exit code."""
    try:
        args, extra = _parser().parse_known_args(argv)
    except SystemExit as exit_:  # --help (0) or a usage error already printed (2)
        return int(exit_.code or 0)
    unknown = [a for a in extra if a.startswith("-") or not hasattr(args, "overrides")]
    if unknown:
        print(f"kdprune: error: unrecognized arguments: {' '.join(unknown)}", file=sys.stderr)
        return 2
    if extra:  # overrides after an option: `evaluate model.pt --split val dataset=digits`
        args.overrides = [*args.overrides, *extra]
    try:
        return COMMANDS[args.command](args)
    except (KdpruneError, OSError) as err:  # OSError: an output folder that cannot be written
        print(f"kdprune: error: {err}", file=sys.stderr)
        return 2
