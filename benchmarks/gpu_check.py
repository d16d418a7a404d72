"""`make gpu-check`: what a GPU says about kdprune's CUDA path, written to one JSON file.

Without CUDA it writes `{"cuda": false, "skipped": "..."}` and exits 0. With a device, in under
five minutes on one GPU:

1. probes: bf16 autocast gives bf16 logits, `build_model` gives a channels_last model, the
   in-memory loader's images sit on the GPU;
2. the default experiment on CUDA (`python -m kdprune device=cuda`; on digits when Fashion-MNIST
   is not installed, said in the file), with its wall time and metrics;
3. `python -m benchmarks --only cuda` (figure (e)) into the output folder, not BENCHMARKS.md;
4. a 2-rank NCCL run (`python -m kdprune.launch --nproc 2 device=cuda`) when two GPUs are
   visible.

Each step's exit code, seconds and last error line go to `<out>/gpu_check.json`; the card, the
commit and the date too, for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks.paths import ROOT
from kdprune.results import atomic_write

TINY = ["trainer.progress=false", "logger=none", "measure.repeats=3", "measure.warmup=1"]
DIGITS = ["dataset=digits", "model=lenet5", "teacher.epochs=3", "trainer.batch_size=64"]


def probes(device: torch.device) -> dict[str, Any]:
    """bf16 autocast, channels_last and GPU-resident data, checked on the objects a run uses."""
    from kdprune.data import Augment, digits, make_loaders
    from kdprune.engine.train import autocast
    from kdprune.schedules.context import build_model

    loaders = make_loaders(digits(), 64, 256, device, Augment(), 0, 0)
    x, _, _ = next(iter(loaders.train))
    model = build_model({"_target_": "kdprune.models.lenet5", "num_classes": 10,
                         "in_channels": 1, "image_size": 8}, device)  # fmt: skip
    with autocast(device, True):
        logits = model(x)
    conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    return {
        "data_on_gpu": loaders.train.images.is_cuda,
        "autocast_dtype": str(logits.dtype),
        "channels_last": conv.weight.is_contiguous(memory_format=torch.channels_last),
    }


def step(name: str, command: list[str], out: Path, timeout: int) -> dict[str, Any]:
    """Run one command; its exit code, seconds, last error line and metrics.json fields."""
    start = time.perf_counter()
    try:
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
        code, err = done.returncode, done.stderr
    except subprocess.TimeoutExpired as expired:
        code, err = None, f"timed out after {timeout} s {expired.stderr or ''}"
    record: dict[str, Any] = {"command": " ".join(command), "exit_code": code,
                              "seconds": round(time.perf_counter() - start, 1)}  # fmt: skip
    lines = [ln for ln in str(err).splitlines() if ln.strip()]
    if code != 0 and lines:
        record["last_error_line"] = lines[-1]
    metrics = out / name / "metrics.json"
    if metrics.exists():
        m = json.loads(metrics.read_text())
        keys = ("device", "world_size", "backend", "dataset", "test_acc", "macs_speedup", "timings")
        record["metrics"] = {k: m.get(k) for k in keys}
    return record


def runs(out: Path, have_fashion: bool) -> dict[str, Any]:
    """The default experiment on CUDA, figure (e), and a 2-rank NCCL run with two GPUs."""
    py, cache = sys.executable, f"paths.cache_dir={out}/cache"
    data = [] if have_fashion else DIGITS
    dataset = "fashion_mnist" if have_fashion else "digits (Fashion-MNIST is not installed)"
    found: dict[str, Any] = {"default_run_dataset": dataset}
    found["default_run"] = step(
        "default",
        [py, "-m", "kdprune", "device=cuda", *data, *TINY, cache, f"hydra.run.dir={out}/default"],
        out,
        150,
    )
    found["bench_cuda"] = step(
        "bench",
        [
            py,
            "-m",
            "benchmarks",
            "--only",
            "cuda",
            "--json",
            f"{out}/bench.json",
            "--markdown",
            f"{out}/bench.md",
        ],  # fmt: skip
        out,
        100,
    )
    if torch.cuda.device_count() >= 2:
        found["nccl_2_ranks"] = step(
            "nccl",
            [
                py,
                "-m",
                "kdprune.launch",
                "--nproc",
                "2",
                "device=cuda",
                *DIGITS,
                *TINY,
                cache,
                f"hydra.run.dir={out}/nccl",
            ],  # fmt: skip
            out,
            100,
        )
    else:
        found["nccl_2_ranks"] = {"skipped": f"{torch.cuda.device_count()} GPU visible, needs 2"}
    return found


def check(out: Path) -> dict[str, Any]:
    """Everything the check finds, as the JSON it writes."""
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                            capture_output=True, text=True).stdout.strip()  # fmt: skip
    found: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "commit": commit or None,
        "torch": torch.__version__,
        "cuda": torch.cuda.is_available(),
    }
    if not found["cuda"]:
        return {**found, "skipped": "no CUDA device: the GPU path is untested here"}
    device = torch.device("cuda")
    found["card"] = torch.cuda.get_device_name(device)
    found["gpus"] = torch.cuda.device_count()
    found["bf16_supported"] = torch.cuda.is_bf16_supported()
    found["probes"] = probes(device)
    have_fashion = (
        any((ROOT / "data").glob("**/train-images-idx3-ubyte*"))
        or Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz").exists()
    )
    return {**found, **runs(out, have_fashion)}


def main(argv: list[str] | None = None) -> int:
    """Write `<out>/gpu_check.json`; print where, and whether the check was skipped."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu_check")
    stamp = datetime.datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "gpu_check" / stamp)
    args = parser.parse_args(argv)
    found = check(args.out)
    text = json.dumps(found, indent=1) + "\n"
    path = atomic_write(args.out / "gpu_check.json", lambda fh: fh.write(text.encode()))
    status = f"skipped ({found['skipped']})" if "skipped" in found else "done"
    print(f"gpu-check {status}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
