"""The non-Hydra subcommands: `kdprune report`, `kdprune evaluate`, `kdprune export-onnx`."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any, NoReturn

from omegaconf import DictConfig, OmegaConf

from kdprune.errors import KdpruneError
from kdprune.paths import group_options, option_file, sqlite_file
from kdprune.results import METRICS_FILE


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error in one line (`kdprune: error: ...`), exit code 2."""

    def error(self, message: str) -> NoReturn:
        print(f"kdprune: error: {message} (see `{self.prog} --help`)", file=sys.stderr)
        raise SystemExit(2)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="kdprune", description="kdprune subcommands (runs: `kdprune [overrides]`)"
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    report = sub.add_parser(
        "report",
        help="CSV, plots and markdown summary of a multirun folder or an Optuna study",
        description="Report on every metrics.json below SOURCE, or on an Optuna study's trials.",
    )
    report.add_argument("source", nargs="?", help="a multirun folder (or any folder of runs)")
    report.add_argument("--storage", help="Optuna storage URL, e.g. sqlite:///sweeps/study.db")
    report.add_argument("--study", help="study name in --storage (optional if it holds one)")
    report.add_argument("--out", help="output folder (default: SOURCE, or the database's folder)")
    report.add_argument(
        "--x", choices=["sparsity", "macs_speedup"], default="sparsity", help="x axis of the plot"
    )
    report.add_argument(
        "--pareto", action="store_true", help="also draw pareto.png (val_acc vs MACs speed-up)"
    )

    evaluate = sub.add_parser(
        "evaluate",
        help="accuracy of a saved model file on a data set",
        description="Load a model file (weights only) and print its accuracy on a split.",
    )
    evaluate.add_argument("model_file")
    evaluate.add_argument(
        "--dataset", help="conf/dataset/NAME.yaml (default: the config of the model's run folder)"
    )
    evaluate.add_argument("--data-dir", help="where data sets live (default: the run's, or data)")
    evaluate.add_argument("--split", choices=["test", "val"], default="test")
    evaluate.add_argument("--batch-size", type=int, default=1024)
    evaluate.add_argument("--device", default="cpu", help="cpu, cuda[:N], mps or auto")

    onnx = sub.add_parser(
        "export-onnx",
        help="export a saved model to ONNX, checked against PyTorch with ONNX Runtime",
        description="Export a model file to ONNX: input `input` [batch, C, H, W], output `logits`.",
    )
    onnx.add_argument("model_file")
    onnx.add_argument("--out", help="the .onnx file (default: MODEL_FILE with suffix .onnx)")
    onnx.add_argument("--input-shape", help="C,H,W when the model file does not record it")
    onnx.add_argument("--opset", type=int, default=None, help="ONNX opset (default: 18)")
    onnx.add_argument("--batch-size", type=int, default=None, help="fixed batch (default: dynamic)")
    return parser


def _report(args: argparse.Namespace) -> int:
    from kdprune.reporting import collect_runs, collect_study, write_report

    if args.storage is None and args.study is not None:
        raise KdpruneError("--study needs --storage.")
    if args.storage is not None and args.source is not None:
        raise KdpruneError("give either a SOURCE folder or --storage, not both.")
    if args.storage is None and args.source is None:
        raise KdpruneError("report needs a SOURCE folder or --storage URL.")
    study = None
    if args.storage is not None:
        runs, study = collect_study(args.storage, args.study)
        db = sqlite_file(args.storage)
        default_out = db.parent if db is not None else Path.cwd()
        source = f"study {study.name} in {args.storage}"
    else:
        runs = collect_runs(args.source)
        default_out, source = Path(args.source), str(args.source)
    out = Path(args.out) if args.out else default_out
    report = write_report(runs, out, x=args.x, pareto=args.pareto, study=study, source=source)
    print(f"{len(runs)} runs from {source}")
    for path in report.files:
        print(f"wrote {path}")
    print(report.summary())
    return 0


def _dataset_cfg(args: argparse.Namespace) -> DictConfig:
    """The data set's config: --dataset, else the model's run config, else its metrics' name."""
    run_dir = Path(args.model_file).resolve().parent
    cfg = OmegaConf.create({"paths": {"data_dir": "data"}})
    run_cfg_path = run_dir / ".hydra" / "config.yaml"
    if args.dataset is None and run_cfg_path.is_file():
        run_cfg = OmegaConf.load(run_cfg_path)
        cfg.paths.data_dir = run_cfg.get("paths", {}).get("data_dir", "data")
        cfg.dataset = run_cfg.dataset
    else:
        name = args.dataset
        if name is None and (run_dir / METRICS_FILE).is_file():
            from kdprune.results import read_metrics

            name = read_metrics(run_dir).get("dataset")
        if name is None:
            raise KdpruneError(
                f"pass --dataset: {run_dir} has no .hydra/config.yaml or metrics.json to say which."
            )
        path = option_file("dataset", name)
        if path is None:
            choices = ", ".join(group_options("dataset"))
            raise KdpruneError(f"unknown dataset {name!r}; choose from: {choices}")
        cfg.dataset = OmegaConf.load(path)
    if args.data_dir is not None:
        cfg.paths.data_dir = args.data_dir
    return cfg


def _evaluate(args: argparse.Namespace) -> int:
    from kdprune import load_model
    from kdprune.config import instantiate
    from kdprune.data import Augment, make_loaders
    from kdprune.engine import evaluate, pick_device

    if args.batch_size < 1:
        raise KdpruneError(f"--batch-size must be at least 1, got {args.batch_size}.")
    device = pick_device(args.device)
    model = load_model(args.model_file, map_location=device)
    cfg = _dataset_cfg(args)
    splits = instantiate(cfg.dataset.splits)
    workers = 0 if splits.in_memory else min(4, os.cpu_count() or 1)
    loaders = make_loaders(
        splits, args.batch_size, args.batch_size, device, Augment(), 0, num_workers=workers
    )
    loader = getattr(loaders, args.split)
    try:
        result = evaluate(model, loader, device, amp=False)
    except RuntimeError as err:  # shape mismatch: the model was trained on another data set
        raise KdpruneError(
            f"the model does not take {cfg.dataset.name} images ({str(err).splitlines()[0]})."
        ) from err
    n = len(getattr(splits, args.split))
    correct = round(result["acc"] * n)
    print(
        f"{args.model_file}: {cfg.dataset.name} {args.split} accuracy {result['acc']:.4f} "
        f"({correct}/{n}), loss {result['loss']:.4f}, "
        f"{sum(p.numel() for p in model.parameters())} parameters"
    )
    return 0


def _export_onnx(args: argparse.Namespace) -> int:
    from kdprune.export import export_onnx

    shape = None
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


COMMANDS: dict[str, Any] = {"report": _report, "evaluate": _evaluate, "export-onnx": _export_onnx}


def main(argv: list[str]) -> int:
    """Run a subcommand (argv starts with its name); return the exit code."""
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exit_:  # --help (0) or a usage error already printed (2)
        return int(exit_.code or 0)
    try:
        return COMMANDS[args.command](args)
    except (KdpruneError, OSError) as err:  # OSError: an output folder that cannot be written
        print(f"kdprune: error: {err}", file=sys.stderr)
        return 2
