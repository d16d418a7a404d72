"""Run saved model files in a new Python process: what a user who only has the files gets."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

import torch
from torch import Tensor

from helpers.hang_guard import HANG_GUARD

SCRIPT = (
    "import sys, torch\n"
    "from kdprune.pruning import load_model\n"
    "torch.set_num_threads(1)\n"
    "d, names = sys.argv[1], sys.argv[2:]\n"
    "x = torch.load(d + '/x.pt', weights_only=True)\n"
    "with torch.no_grad():\n"
    "    out = {n: load_model(f'{d}/{n}.pt')(x) for n in names}\n"
    "torch.save(out, d + '/out.pt')\n"
)


def outputs_in_a_fresh_process(folder: Path, x: Tensor, names: Iterable[str]) -> dict[str, Tensor]:
    """Load `<folder>/<name>.pt` for each name with `load_model` in a new process and return
    its outputs on `x`."""
    torch.save(x, folder / "x.pt")
    command = [sys.executable, "-c", SCRIPT, str(folder), *names]
    subprocess.run(command, check=True, timeout=HANG_GUARD)
    return torch.load(folder / "out.pt", weights_only=True)
