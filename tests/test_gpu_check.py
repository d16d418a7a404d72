"""`make gpu-check` without CUDA: it says it skipped, writes that to its file and exits 0."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import torch

from benchmarks import gpu_check

REPO = Path(__file__).resolve().parents[1]


def test_without_cuda_the_check_skips_cleanly(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu_check.main(["--out", str(tmp_path / "check")]) == 0
    found = json.loads((tmp_path / "check" / "gpu_check.json").read_text())
    assert found["cuda"] is False and "untested" in found["skipped"]
    assert found["commit"] and found["date"] and found["torch"] == torch.__version__
    assert capsys.readouterr().out.startswith("gpu-check skipped (no CUDA device")


def test_make_gpu_check_runs_it() -> None:
    done = subprocess.run(["make", "-n", "--no-print-directory", "gpu-check"], cwd=REPO,
                          capture_output=True, text=True, check=True)  # fmt: skip
    assert done.stdout.splitlines()[-1].split()[1:3] == ["-m", "benchmarks.gpu_check"]


@pytest.mark.gpu
def test_on_a_gpu_every_probe_holds(tmp_path: Path) -> None:
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    probes = gpu_check.probes(torch.device("cuda"))
    assert probes["data_on_gpu"] and probes["channels_last"]
    assert probes["autocast_dtype"] in ("torch.bfloat16", "torch.float16")
