"""What CPU this is: its model name, its feature flags and the instruction sets kdprune's choices
depend on (the channel block a pruned width is rounded to, the INT8 kernel path). A leaf module:
the ledger records these with every timing, and the defaults read them.

Nothing here is cached at module level: a test passes its own flags, and a process that moves
to another machine (a requeued SLURM job) reads the new one.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
from pathlib import Path

CPUINFO = Path("/proc/cpuinfo")
# The vector ISAs that decide kernel shapes, best first, as /proc/cpuinfo names their flags.
ISA_ORDER = ("avx512f", "avx2", "avx", "sse4_2", "asimd", "neon")
# Channels one vector register holds in float32: AVX-512 16, AVX2 8 (oneDNN's and MLAS's blocks).
CHANNEL_BLOCK = {"avx512f": 16, "avx2": 8}


def cpu_flags(cpuinfo: Path = CPUINFO) -> set[str] | None:
    """The CPU's feature flags from /proc/cpuinfo (`flags` on x86, `Features` on Arm), or None
    where that file does not exist (not Linux)."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return None
    flags: set[str] = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            flags |= set(value.split())
    return flags


def cpu_model(cpuinfo: Path = CPUINFO) -> str:
    """The CPU's model name (`model name` in /proc/cpuinfo), else what `platform` knows."""
    try:
        for line in cpuinfo.read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and value.strip():
                return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def vector_isa(flags: set[str] | None) -> str:
    """The widest vector ISA of these flags (`avx512f`, `avx2`, ..., `asimd`), or `unknown`."""
    for isa in ISA_ORDER:
        if flags and isa in flags:
            return isa
    return "unknown"


def channel_block(flags: set[str] | None) -> int | None:
    """The channel multiple convolution kernels run best at on these flags: 16 with AVX-512, 8
    with AVX2, None elsewhere (no rounding helps there)."""
    return CHANNEL_BLOCK.get(vector_isa(flags))


@dataclass(frozen=True)
class CpuInfo:
    """The facts a timing is only meaningful with: model name, widest vector ISA and the INT8
    dot-product flags (VNNI, AMX) that decide ONNX Runtime's INT8 kernels."""

    model: str
    isa: str
    vnni: bool
    amx: bool

    def record(self) -> dict[str, str | bool]:
        """The ledger's `cpu_*` keys."""
        return {
            "cpu_model": self.model,
            "cpu_isa": self.isa,
            "cpu_vnni": self.vnni,
            "cpu_amx": self.amx,
        }


def cpu_info(cpuinfo: Path = CPUINFO) -> CpuInfo:
    """This machine's CpuInfo."""
    flags = cpu_flags(cpuinfo) or set()
    return CpuInfo(
        model=cpu_model(cpuinfo),
        isa=vector_isa(flags),
        vnni=bool(flags & {"avx512_vnni", "avx_vnni"}),
        amx="amx_int8" in flags,
    )
