"""What the numbers were measured on: the machine, its libraries, and the commit."""

from __future__ import annotations

import contextlib
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

import torch

from benchmarks.paths import ROOT


def _git(*args: str) -> str:
    try:
        out = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return ""
    return out.stdout.strip()


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo on Linux)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def ort_version() -> str:
    """ONNX Runtime's version, or that it is not installed."""
    try:
        import onnxruntime

        return onnxruntime.__version__
    except ImportError:
        return "(not installed)"


def machine(kept_freed_memory_mb: int | None = None) -> dict[str, Any]:
    """What the numbers were measured on."""
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "onnxruntime": ort_version(),
        "python": platform.python_version(),
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "keep_freed_memory_mb": kept_freed_memory_mb,
    }


def commit() -> dict[str, Any]:
    """The commit measured, and whether the working tree differed from it."""
    return {
        "commit": _git("rev-parse", "--short", "HEAD") or "unknown",
        # The bench's own outputs do not count: an earlier `--only` run leaves them modified.
        "dirty": bool(
            _git(
                "status",
                "--porcelain",
                "--untracked-files=no",
                "--",
                ".",
                ":!BENCHMARKS.md",
                ":!benchmarks/results.json",
                ":!SHARED_STUDY.md",
                ":!benchmarks/shared_study.json",
            )
        ),
    }
