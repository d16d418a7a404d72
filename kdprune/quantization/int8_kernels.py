"""Whether this CPU runs INT8 faster than FP32, and which INT8 kernel path ONNX Runtime takes on it:
the dot-product instructions its quantized kernels are built on (x86: AVX2's vpmaddubsw, AVX-512 /
AVX VNNI, AMX; Arm: SDOT).

The kernel path decides the weight range a quantizer may use. Without VNNI, ONNX Runtime's x86
u8 x s8 kernels (MLAS) multiply with vpmaddubsw, which adds two u8 x s8 products into a signed
16-bit lane and saturates: 255 * 127 * 2 = 64770 > 32767. With 7-bit weights (|w| <= 64) the pair
stays below it, 255 * 64 * 2 = 32640, so the integer result is exact again (ONNX Runtime's
`reduce_range` and torchao's x86 quantizer document this remedy for CPUs without VNNI). VNNI
(vpdpbusd), AMX and Arm's SDOT accumulate in 32 bits and keep full 8-bit weights.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass

from kdprune.cpu_features import cpu_flags
from kdprune.errors import ConfigError

# The flags whose INT8 dot products accumulate in 32 bits (no 16-bit saturation), best first:
# VNNI and AMX run 4 int8 products per lane in one instruction.
WIDE_DOT_FLAGS = ("amx_int8", "avx512_vnni", "avx_vnni", "i8mm", "asimddp")
# Any one of these CPU flags (/proc/cpuinfo) gives ONNX Runtime fast u8 x s8 kernels, best first.
INT8_FLAGS = (*WIDE_DOT_FLAGS, "avx2")


@dataclass(frozen=True)
class KernelPath:
    """An INT8 kernel path: its name (`quantize.int8_kernel_path`) and the signed weight range
    the quantizers use on it (activations stay uint8 [0, 255])."""

    name: str
    weight_min: int
    weight_max: int

    @property
    def reduce_range(self) -> bool:
        """Whether the weights use ONNX Runtime's reduced (7-bit) range."""
        return self.weight_max < 127


# `vnni`: full int8 weights, for VNNI / AMX / SDOT. `avx2_7bit`: ONNX Runtime's reduced int8
# range (its ONNX_INT_TYPE_REDUCED_RANGE, [-64, 64]), exact on every kernel, needed without VNNI.
KERNEL_PATHS = {
    "vnni": KernelPath("vnni", -128, 127),
    "avx2_7bit": KernelPath("avx2_7bit", -64, 64),
}
KERNEL_PATH_CHOICES = ("auto", *KERNEL_PATHS)


# Measured by issue 17's author on an AVX2-only AMD EPYC (no AVX-512, no VNNI), ONNX Runtime 1.32,
# `make bench ARGS='--only quantization'`, INT8 / FP32 speed at batch 64.
NO_VNNI_NOTE = (
    "this CPU has no VNNI or AMX: INT8 buys size, not speed here (on an AVX2-only AMD EPYC, "
    "ONNX Runtime ran INT8 at 0.88x the speed of FP32 for ResNet-20, 0.97x for MobileNetV2, "
    "0.48x for LeNet-5 at batch 64)"
)


def speed_note(instructions: str | None) -> str | None:
    """NO_VNNI_NOTE where INT8 runs on `instructions` (`int8_support`'s answer) without a
    32-bit-accumulating dot product, else None."""
    return None if instructions in WIDE_DOT_FLAGS else NO_VNNI_NOTE


def int8_support(flags: set[str] | None, machine: str | None = None) -> str | None:
    """The instruction set INT8 runs on (e.g. `avx512_vnni`), or None when the CPU has none of
    INT8_FLAGS. Without /proc/cpuinfo (flags None) an Arm64 CPU counts as supported (every Apple
    and recent Arm server core has SDOT) and another is not known: `unknown`."""
    if flags is None:
        machine = (machine or platform.machine()).lower()
        return "asimddp" if machine in ("arm64", "aarch64") else "unknown"
    for flag in INT8_FLAGS:
        if flag in flags:
            return flag
    return None


def kernel_path(choice: str, flags: set[str] | None, machine: str | None = None) -> KernelPath:
    """The INT8 kernel path `quantize.int8_kernel_path` names on a CPU with these flags: `auto`
    is `vnni` where the CPU has a 32-bit-accumulating INT8 dot product, else `avx2_7bit` (also
    where the flags are unknown: it is exact on every kernel). ConfigError for an unknown name,
    or for `vnni` on a CPU without such an instruction (its 8-bit weights would saturate)."""
    if choice not in KERNEL_PATH_CHOICES:
        raise ConfigError(
            f"quantize.int8_kernel_path must be one of {', '.join(KERNEL_PATH_CHOICES)}, "
            f"got {choice!r}"
        )
    wide = int8_support(flags, machine) in WIDE_DOT_FLAGS
    if choice == "auto":
        return KERNEL_PATHS["vnni" if wide else "avx2_7bit"]
    if choice == "vnni" and not wide:
        raise ConfigError(
            "quantize.int8_kernel_path=vnni needs AVX-512 VNNI, AVX-VNNI or AMX (x86) or SDOT "
            f"(Arm), which this CPU lacks (INT8 on {int8_support(flags, machine)}): its 16-bit "
            "sums would saturate with 8-bit weights; use auto or avx2_7bit"
        )
    return KERNEL_PATHS[choice]


def resolve_kernel_path(choice: str) -> KernelPath:
    """`kernel_path` of `choice` on this machine's CPU flags."""
    return kernel_path(choice, cpu_flags())


def require_int8_cpu() -> str:
    """The instruction set INT8 runs on here, or ConfigError when this CPU has none."""
    support = int8_support(cpu_flags())
    if support is None:
        raise ConfigError(
            "this CPU has no INT8 dot-product instructions (AVX2 / VNNI on x86, SDOT on Arm): "
            "ONNX Runtime would run INT8 slower than FP32; use quantize=none"
        )
    return support
