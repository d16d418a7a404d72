"""Shared-study sweeps measured on this machine (`make bench-sweeps`):

(f) trials per hour of two workers (one torch thread each) against one worker, same 12-trial study;
(g) the student epochs a 16-trial study spends with the median pruner against none, and the best
    (feasible) validation accuracy of each, same seeds.

Workers run as a user starts them (`kdprune -m +sweep=optuna`, storage in $KDPRUNE_STORAGE) on
Fashion-MNIST with `trainer.max_batches` batches per training epoch (validation is whole), after one
run that trains and caches the teacher. Writes benchmarks/shared_study.json and SHARED_STUDY.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import optuna

from benchmarks.machine import commit, cpu_model
from benchmarks.measure import loadavg
from benchmarks.paths import ROOT
from kdprune.results import atomic_write
from kdprune.sweeping.budget import counts
from kdprune.sweeping.constraints import best_trials

STUDY = "kdprune-optuna"


def common(args: argparse.Namespace, folder: Path) -> list[str]:
    """The overrides every run of the benchmark shares."""
    return [
        "dataset=fashion_mnist",
        "device=cpu",
        "trainer.threads=1",
        f"trainer.max_batches={args.max_batches}",
        "teacher.epochs=2",
        "logger=none",
        f"paths.cache_dir={folder / 'cache'}",
        f"paths.data_dir={ROOT / 'data'}",
    ]


def kdprune(argv: list[str], log: Path, storage: str | None = None) -> subprocess.Popen:
    """Start `python -m kdprune ARGV` with its output in `log`, in a session of its own, as a
    worker started from its own terminal, ssh login or batch job is: Linux's scheduler (with
    autogroup, as here) shares the CPU between sessions, so two workers of one session would
    share one worker's share of a busy machine."""
    env = {**os.environ, "WANDB_MODE": "disabled", "PYTHONUNBUFFERED": "1"}
    if storage:
        env["KDPRUNE_STORAGE"] = storage
    with open(log, "w") as out:
        command = [sys.executable, "-m", "kdprune", *argv]
        return subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)  # fmt: skip


def children_cpu_s() -> float:
    """CPU seconds (user + system) of every child process waited for so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def wait_all(procs: Sequence[subprocess.Popen], logs: Sequence[Path]) -> None:
    for proc, log in zip(procs, logs, strict=True):
        if proc.wait() != 0:
            raise RuntimeError(f"{' '.join(proc.args)} failed:\n{log.read_text()[-3000:]}")


def workers(args: argparse.Namespace, folder: Path, name: str, n: int, sweep: list[str]) -> dict:
    """Run one study with `n` workers started together; its wall time and load averages."""
    storage = f"sqlite:///{folder / name}.db"
    argv = ["-m", "+sweep=optuna", *common(args, folder), *sweep,
            f"hydra.sweep.dir={folder / name}"]  # fmt: skip
    logs = [folder / f"{name}-worker{i}.log" for i in range(n)]
    before, start, cpu = loadavg(), time.perf_counter(), children_cpu_s()
    procs = [kdprune(argv, log, storage) for log in logs]
    wait_all(procs, logs)
    return {"storage": storage, "workers": n, "wall_s": time.perf_counter() - start,
            "cpu_s": children_cpu_s() - cpu, "loadavg_before": before,
            "loadavg_after": loadavg(), "command": argv}  # fmt: skip


def study_figures(storage: str) -> dict[str, Any]:
    """Counts, student epochs (one report per student epoch) and the best feasible value."""
    study = optuna.load_study(study_name=STUDY, storage=storage)
    trials = [t for t in study.get_trials() if counts(t)]
    best = best_trials(study)
    return {
        "finished": len(trials),
        "complete": sum(t.state == optuna.trial.TrialState.COMPLETE for t in trials),
        "pruned": sum(t.state == optuna.trial.TrialState.PRUNED for t in trials),
        "student_epochs": sum(len(t.intermediate_values) for t in trials),
        "best_trial": best[0].number if best else None,
        "best_val_acc": best[0].value if best else None,
    }


def pruner_settings(sweep_dir: Path) -> str:
    """The pruner a study's jobs ran with, as its first job's Hydra config says."""
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(sweep_dir / "0" / ".hydra" / "hydra.yaml").hydra.sweeper.pruner
    name = str(cfg.pop("_target_")).rsplit(".", 1)[-1]
    return f"{name}({', '.join(f'{k}={v}' for k, v in cfg.items())})"


def throughput(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    """(f) One worker, then two, on the same 12-trial study definition (no pruner: equal work)."""
    sweep = [f"hydra.sweeper.n_trials={args.trials}", "hydra/sweeper/pruner=none"]
    runs = {f"{n}": workers(args, folder, f"workers{n}", n, sweep) for n in (1, 2)}
    for run in runs.values():
        run.update(study_figures(run["storage"]))
        run["trials_per_hour"] = run["finished"] / run["wall_s"] * 3600
        run["cpu_s_per_trial"] = run["cpu_s"] / run["finished"]
    return {"runs": runs, "ratio": runs["2"]["trials_per_hour"] / runs["1"]["trials_per_hour"]}


def pruning(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    """(g) The same 16-trial study with the median pruner and without, one worker each, side
    by side (only epochs and accuracies are compared, not times)."""
    sweep = [f"hydra.sweeper.n_trials={args.pruner_trials}",
             f"budget.student_epochs={args.epochs}"]  # fmt: skip
    storages, procs, logs, commands = {}, [], [], {}
    for pruner in ("median", "none"):
        storages[pruner] = f"sqlite:///{folder / pruner}.db"
        extra = args.median_args if pruner == "median" else []
        argv = ["-m", "+sweep=optuna", *common(args, folder), *sweep,
                f"hydra/sweeper/pruner={pruner}", *extra,
                f"hydra.sweep.dir={folder / pruner}"]  # fmt: skip
        logs.append(folder / f"pruner-{pruner}.log")
        commands[pruner] = argv
        procs.append(kdprune(argv, logs[-1], storages[pruner]))
    before, start = loadavg(), time.perf_counter()
    wait_all(procs, logs)
    runs = {p: {"storage": s, **study_figures(s)} for p, s in storages.items()}
    runs["median"]["pruner"] = pruner_settings(folder / "median")
    median, none = runs["median"], runs["none"]
    return {
        "runs": runs,
        "wall_s": time.perf_counter() - start,
        "loadavg_before": before,
        "loadavg_after": loadavg(),
        "epoch_share": median["student_epochs"] / none["student_epochs"],
        "best_gap_points": 100 * (none["best_val_acc"] - median["best_val_acc"]),
        "command": commands["median"],
    }


def teacher_argv(args: argparse.Namespace, folder: Path) -> list[str]:
    """The one run that trains and caches the teacher (and its logits): the shortest order."""
    return [*common(args, folder), "budget.student_epochs=1", "budget.finetune_epochs=0",
            "schedule=prune_then_distill", "student_init=teacher",
            f"hydra.run.dir={folder / 'teacher'}"]  # fmt: skip


def warm_teacher(args: argparse.Namespace, folder: Path) -> None:
    """Train and cache the teacher once, outside every measured study."""
    log = folder / "teacher.log"
    wait_all([kdprune(teacher_argv(args, folder), log)], [log])


def _load(values: list[float]) -> str:
    return " / ".join(f"{x:.2f}" for x in values)


ONE_SESSION = " (workers in one session)"


def _met(ok: bool) -> str:
    return "yes" if ok else "**no**"


def _f_rows(f: dict[str, Any]) -> list[list[str]]:
    one, two = f["runs"]["1"], f["runs"]["2"]
    measured = (
        f"{two['trials_per_hour']:.1f} vs {one['trials_per_hour']:.1f} = {f['ratio']:.2f}× "
        f"(on {two['cpu_s'] / two['wall_s']:.2f} vs {one['cpu_s'] / one['wall_s']:.2f} cores)"
    )
    label = "(f) trials/hour, 2 workers vs 1" + (
        ONE_SESSION if f["meta"].get("one_session") else ""
    )
    return [[label, measured, "≥ 1.6×", _met(f["ratio"] >= 1.6)]]


def _g_rows(g: dict[str, Any]) -> list[list[str]]:
    med, none = g["runs"]["median"], g["runs"]["none"]
    label = f"(g) {med['pruner']}"
    return [
        [f"{label}: student epochs vs none", f"{med['student_epochs']} vs "
         f"{none['student_epochs']} = {100 * g['epoch_share']:.0f}%", "≤ 60%",
         _met(g["epoch_share"] <= 0.6)],
        [f"{label}: best val_acc, none − median", f"{none['best_val_acc']:.4f} − "
         f"{med['best_val_acc']:.4f} = {g['best_gap_points']:.2f} points", "≤ 0.5",
         _met(g["best_gap_points"] <= 0.5)],
    ]  # fmt: skip


def _when(record: dict[str, Any]) -> str:
    m = record["meta"]
    dirty = " (dirty tree)" if m.get("dirty") else ""
    return (f"measured {m['measured']} at commit `{m['commit']}`{dirty} by `{m['command']}` "
            f"({m['seconds'] / 60:.0f} min)")  # fmt: skip


def _f_text(f: dict[str, Any], cores: int) -> str:
    one, two = f["runs"]["1"], f["runs"]["2"]
    return (
        f"**(f)** The same {one['finished']}-trial study (no pruner) run by one worker, then by "
        f"two workers started together on one SQLite study, each with one torch thread"
        f"{ONE_SESSION if f['meta'].get('one_session') else ''}, "
        f"{_when(f)}: {one['wall_s']:.0f} s against {two['wall_s']:.0f} s. Load averages "
        f"{_load(one['loadavg_before'])} → {_load(one['loadavg_after'])} (one worker) and "
        f"{_load(two['loadavg_before'])} → {_load(two['loadavg_after'])} (two). CPU seconds per "
        f"trial (user + system, all workers): {one['cpu_s_per_trial']:.1f} (one worker) and "
        f"{two['cpu_s_per_trial']:.1f} (two): what a trial costs, whatever else ran; the "
        f"workers got {one['cpu_s'] / one['wall_s']:.2f} (one) and "
        f"{two['cpu_s'] / two['wall_s']:.2f} (two) of the machine's {cores} cores. Each "
        f"worker: `kdprune {' '.join(one['command'])}` with `KDPRUNE_STORAGE` set to its study."
    )


def _g_text(g: dict[str, Any]) -> str:
    med, none = g["runs"]["median"], g["runs"]["none"]
    return (
        f"**(g)** The same {none['finished']}-trial study ({g['meta']['args']['epochs']} "
        f"student epochs per trial, same seeds) with `hydra/sweeper/pruner=median` and `=none`, "
        f"one worker each, side by side, {_when(g)}: {med['pruned']} of {med['finished']} "
        f"trials pruned; best feasible trial #{med['best_trial']} ({med['best_val_acc']:.4f}) "
        f"against #{none['best_trial']} ({none['best_val_acc']:.4f}). Load averages "
        f"{_load(g['loadavg_before'])} → {_load(g['loadavg_after'])}. Command: "
        f"`kdprune {' '.join(g['command'])}`, and the same with `hydra/sweeper/pruner=none` "
        "(without the median-only overrides)."
    )


def render(r: dict[str, Any]) -> str:
    """SHARED_STUDY.md: the figures measured so far, what was run, what else loaded the CPU."""
    pruning = [g for g in (r.get("pruning"), *r.get("pruning_variants", [])) if g]
    throughput = r.get("throughput_runs") or ([r["throughput"]] if "throughput" in r else [])
    rows = [row for f in throughput for row in _f_rows(f)]
    rows += [row for g in pruning for row in _g_rows(g)]
    texts = [_f_text(f, r["cores"]) for f in throughput] + [_g_text(g) for g in pruning]
    lines = [
        "# Shared-study sweeps: workers and pruning",
        "",
        f"On {r['cpu']} ({r['cores']} cores), shared with other sessions: load averages "
        "(1 / 5 / 15 min) are given for every measurement. Fashion-MNIST, `lenet5_wide`, "
        f"{r['max_batches']} training batches per epoch, a cached teacher. Trials per hour are "
        "the CPU the workers get divided by the CPU seconds a trial costs: on a busy machine the "
        "first is what the scheduler hands out, the second is the sweep's own cost.",
        "",
        "| figure | measured | target | met |",
        "|---|---|---|---|",
        *("| " + " | ".join(row) + " |" for row in rows),
        "",
        *(line for text in texts for line in (text, "")),
    ]
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.shared_study", description=__doc__)
    parser.add_argument("--trials", type=int, default=12, help="(f) the study's n_trials")
    parser.add_argument("--pruner-trials", type=int, default=16, help="(g) the study's n_trials")
    parser.add_argument("--epochs", type=int, default=6, help="(g) budget.student_epochs")
    parser.add_argument("--max-batches", type=int, default=100, help="training batches / epoch")
    parser.add_argument("--only", choices=["f", "g"], help="one figure (default: both)")
    parser.add_argument("--median-args", nargs="*", default=[], help="(g) overrides, median only")
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "bench-sweeps")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Measure the chosen figures, merge them into benchmarks/shared_study.json, render the page."""
    args = parse_args(argv)
    start = time.perf_counter()
    meta = {**commit(), "command": " ".join(["python -m benchmarks.shared_study", *(argv or [])]),
            "measured": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
            "args": vars(args) | {"out": str(args.out)}}  # fmt: skip
    folder = args.out / dt.datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    folder.mkdir(parents=True)
    warm_teacher(args, folder)
    measured: dict[str, Any] = {}
    if args.only in (None, "f"):
        measured["throughput"] = throughput(args, folder)
    if args.only in (None, "g"):
        measured["pruning"] = pruning(args, folder)
    for record in measured.values():
        record["meta"] = {**meta, "seconds": time.perf_counter() - start, "folder": str(folder)}
    path = ROOT / "benchmarks" / "shared_study.json"
    results = json.loads(path.read_text()) if path.exists() else {}
    if args.median_args and "pruning" in measured:  # a variant: kept beside the defaults' run
        results.setdefault("pruning_variants", []).append(measured.pop("pruning"))
    if "throughput" in measured:  # every run is kept: on a shared machine each says something
        results.setdefault("throughput_runs", []).append(measured["throughput"])
    results.update(measured, cpu=cpu_model(), cores=os.cpu_count(), max_batches=args.max_batches)
    text = json.dumps(results, indent=1) + "\n"
    atomic_write(path, lambda fh: fh.write(text.encode()))
    atomic_write(ROOT / "SHARED_STUDY.md", lambda fh: fh.write(render(results).encode()))
    print(render(results))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
