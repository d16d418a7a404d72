"""Run ONNX Runtime on an emulated AVX2-only CPU: `qemu-x86_64 -cpu Haswell` (QEMU's user mode,
whose TCG emulates AVX2 but neither AVX-512 nor VNNI), so ONNX Runtime's MLAS dispatches its
non-VNNI INT8 kernels whatever CPU the tests run on. Only the arithmetic is meaningful under
emulation, never the time it takes. The script imports ONNX Runtime and NumPy only: torch would
take minutes to import under emulation."""

from __future__ import annotations

import platform
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from helpers.hang_guard import HANG_GUARD

SCRIPT = (
    "import sys, numpy as np, onnxruntime as ort\n"
    "folder, names = sys.argv[1], sys.argv[2:]\n"
    "options = ort.SessionOptions()\n"
    "options.intra_op_num_threads = 1\n"
    "x = np.load(folder + '/inputs.npy')\n"
    "out = {}\n"
    "for name in names:\n"
    "    s = ort.InferenceSession(f'{folder}/{name}.onnx', options,\n"
    "                             providers=['CPUExecutionProvider'])\n"
    "    out[name] = s.run(['logits'], {'input': x})[0]\n"
    "np.savez(folder + '/logits.npz', **out)\n"
)


def qemu_or_skip() -> str:
    """The path of qemu-x86_64, or skip: on a host that is not x86-64 (this Python is not a
    binary qemu-x86_64 runs), or where it is not installed (`make setup` installs Debian's
    qemu-user when it runs as root with apt-get)."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        pytest.skip(f"emulating an AVX2 CPU needs an x86-64 host, this is {platform.machine()}")
    qemu = shutil.which("qemu-x86_64")
    if qemu is None:
        pytest.skip("qemu-x86_64 is not installed: `make setup` as root installs qemu-user")
    return qemu


def haswell_logits(files: dict[str, Path], inputs: np.ndarray, folder: Path) -> dict[str, Any]:
    """ONNX Runtime's logits of each ONNX file (by name) on `inputs`, computed under
    `qemu-x86_64 -cpu Haswell`."""
    qemu = qemu_or_skip()
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "inputs.npy", inputs.astype(np.float32))
    for name, path in files.items():
        shutil.copyfile(path, folder / f"{name}.onnx")
    command = [qemu, "-cpu", "Haswell", sys.executable, "-c", SCRIPT, str(folder), *files]
    # QEMU warns on stderr about host CPU features its TCG lacks; only a failure matters.
    done = subprocess.run(command, capture_output=True, text=True, timeout=HANG_GUARD)
    assert done.returncode == 0, done.stderr[-2000:]
    with np.load(folder / "logits.npz") as logits:
        return {name: logits[name] for name in files}
