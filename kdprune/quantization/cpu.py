"""Whether this CPU runs INT8 faster than FP32: the dot-product instructions ONNX Runtime's
quantized kernels are built on (x86: AVX2's vpmaddubsw, AVX-512 / AVX VNNI, AMX; Arm: SDOT)."""

from __future__ import annotations

import platform

from kdprune.cpu import cpu_flags
from kdprune.errors import ConfigError

# Any one of these CPU flags (/proc/cpuinfo) gives ONNX Runtime fast u8 x s8 kernels.
INT8_FLAGS = ("avx2", "avx512_vnni", "avx_vnni", "amx_int8", "asimddp", "i8mm")


def int8_support(flags: set[str] | None, machine: str | None = None) -> str | None:
    """The instruction set INT8 runs on (e.g. `avx512_vnni`), or None when the CPU has none of
    INT8_FLAGS. Without /proc/cpuinfo (flags None) an Arm64 CPU counts as supported (every Apple
    and recent Arm server core has SDOT) and another is not known: `unknown`."""
    if flags is None:
        machine = (machine or platform.machine()).lower()
        return "asimddp" if machine in ("arm64", "aarch64") else "unknown"
    # The best first: VNNI and AMX run 4 int8 products per lane in one instruction.
    for flag in ("amx_int8", "avx512_vnni", "avx_vnni", "i8mm", "asimddp", "avx2"):
        if flag in flags:
            return flag
    return None


def require_int8_cpu() -> str:
    """The instruction set INT8 runs on here, or ConfigError when this CPU has none."""
    support = int8_support(cpu_flags())
    if support is None:
        raise ConfigError(
            "this CPU has no INT8 dot-product instructions (AVX2 / VNNI on x86, SDOT on Arm): "
            "ONNX Runtime would run INT8 slower than FP32; use quantize=none"
        )
    return support
