"""What the numbers were measured on: the machine, its libraries, and the commit."""

from __future__ import annotations

import os
import platform
import subprocess
from typing import Any

import torch

from benchmarks.paths import ROOT
from kdprune.cpu_features import cpu_info


def _git(*args: str) -> str:
    try:
        out = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return ""
    return out.stdout.strip()


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo on Linux)."""
    return cpu_info().model


def cpu_label(m: dict[str, Any]) -> str:
    """The CPU of a `machine()` record in words: its model, vector ISA and INT8 instructions
    (a record from before these were kept says so)."""
    if "cpu_isa" not in m:
        return f"{m['cpu']} (ISA not recorded)"
    isa = {"avx512f": "AVX-512", "avx2": "AVX2"}.get(m["cpu_isa"], m["cpu_isa"])
    vnni = "VNNI" if m["cpu_vnni"] else "no VNNI"
    amx = "AMX" if m["cpu_amx"] else "no AMX"
    # Records measured before the ISA was kept carry what was stated about their CPU since.
    stated = "; stated afterwards, not recorded" if m.get("cpu_isa_source") else ""
    return f"{m['cpu']} ({isa}, {vnni}, {amx}{stated})"


def ort_version() -> str:
    """ONNX Runtime's version, or that it is not installed."""
    try:
        import onnxruntime

        return onnxruntime.__version__
    except ImportError:
        return "(not installed)"


def machine(kept_freed_memory_mb: int | None = None) -> dict[str, Any]:
    """What the numbers were measured on."""
    cpu = cpu_info()
    return {
        "cpu": cpu.model,
        "cpu_isa": cpu.isa,
        "cpu_vnni": cpu.vnni,
        "cpu_amx": cpu.amx,
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
