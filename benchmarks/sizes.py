"""How big each measurement of `make bench` is: the full sizes and the smoke test's."""

from __future__ import annotations

from dataclasses import dataclass, field

from benchmarks.paths import ROOT
from kdprune.cpu_features import cpu_flags
from kdprune.pruning.rounding import auto_roundings


@dataclass(frozen=True)
class Sizes:
    """How big each measurement is; `full()` is `make bench`, `quick()` the smoke test's."""

    dataset: str = "fashion_mnist"
    data_dir: str = str(ROOT / "data")
    threads: int = 1
    reps: int = 5
    batch_size: int = 128
    keep_freed_memory_mb: int | None = 1024  # as conf/config.yaml's trainer.keep_freed_memory_mb
    train_model: str = "lenet5_wide"
    train_steps: int = 100
    kd_student: str = "lenet5_wide"
    kd_teacher: str = "lenet5_wide"
    kd_reps: int = 3
    kd_steps: int | None = None  # None: a full epoch
    sweep_ratios: str = "0.3,0.5,0.7,0.8,0.9"
    sweep_overrides: tuple[str, ...] = (
        "model=lenet5",
        "teacher.epochs=2",
        "budget.student_epochs=3",
        "budget.finetune_epochs=1",
    )
    latency_models: tuple[str, ...] = ("lenet5", "resnet20", "mobilenet_v2")
    latency_reductions: tuple[float, ...] = (0.5, 0.75)
    latency_batches: tuple[int, ...] = (1, 64)
    # Channel rounding: the coarsest of these that still reaches a MACs target is used. ONNX
    # Runtime's blocked (NCHWc) convolutions and oneDNN's take channels in blocks of 16 on an
    # AVX-512 CPU (8 on AVX2); other widths run on slower paths. By default this CPU's blocks,
    # as `prune_method.round_to: auto` tries them: (16, 8) on AVX-512, (8,) on AVX2, () elsewhere.
    latency_roundings: tuple[int, ...] = field(default_factory=lambda: auto_roundings(cpu_flags()))
    # How far the MACs cut may land from its target. Rounded or few channels move MACs in big
    # steps: ResNet-20's 2x cut with round_to 16 lands at 47%; LeNet-5's uniform cuts go from
    # 70% straight to 81%, so 75% is met only as 70%.
    latency_tolerance: dict[str, float] = field(default_factory=lambda: {"lenet5": 0.06})
    latency_default_tolerance: float = 0.04
    latency_calls: int = 20  # forwards per timed sample at batch 1 (fewer at larger batches)
    # Samples per side: a forward takes milliseconds, and the CPU's neighbours move single
    # samples by 20% or more, so many cheap samples are taken.
    latency_reps: int = 15
    # (f)'s 3x3 conv + ReLU alone, FP32 vs INT8: (channels, map size) of LeNet-5's cut and of a
    # CIFAR ResNet's three stages.
    quantization_kernels: tuple[tuple[int, int], ...] = ((8, 28), (16, 32), (32, 16), (64, 8))
    # (h): models, the speed-ups asked for, and the latency target's batch and timed runs.
    latency_target_models: tuple[str, ...] = ("resnet20", "mobilenet_v2")
    latency_target_speedups: tuple[float, ...] = (1.5, 2.0)
    latency_target_batch: int = 64
    latency_target_repeats: int = 10
    # (h)'s latency-allocated cut: the models whose latency table is built in the bench (one timed
    # cut per group and grid width: minutes for ResNet-20, much longer for MobileNetV2 here).
    latency_allocation_models: tuple[str, ...] = ("resnet20",)
    ddp_steps: int = 100  # steps of the global batch per timed epoch, (g)
    ddp_reps: int = 7  # one epoch of one process varied 3.8-6.1 s between samples here
    cuda_model: str = "resnet56"
    cuda_samples: int = 10240
    cuda_steps: int = 60
    cuda_workers: int = 4

    @staticmethod
    def full() -> Sizes:
        """The sizes of `make bench`: Fashion-MNIST, full epochs; 11-12 minutes on 2 busy cores."""
        return Sizes()

    @staticmethod
    def quick() -> Sizes:
        """Tiny sizes for a smoke test: digits, a few batches, one latency model, 3 sweep runs."""
        return Sizes(
            dataset="digits",
            reps=2,
            batch_size=32,
            train_model="lenet5",
            train_steps=5,
            kd_student="lenet5",
            kd_teacher="lenet5",
            kd_reps=2,
            kd_steps=5,
            sweep_ratios="0.5",
            sweep_overrides=(
                "dataset=digits",
                "model=lenet5",
                "teacher.epochs=1",
                "budget.student_epochs=2",
                "budget.finetune_epochs=1",
                "trainer.max_batches=3",
                "measure.repeats=2",
            ),
            latency_models=("lenet5",),
            latency_roundings=(16, 8),  # fixed: the smoke test's cuts do not depend on the CPU
            latency_batches=(1, 8),
            latency_calls=3,
            latency_target_models=("lenet5",),
            latency_target_speedups=(1.5,),
            latency_target_batch=8,
            latency_target_repeats=2,
            latency_allocation_models=("lenet5",),
            ddp_steps=5,
            ddp_reps=1,
            latency_reps=2,
            quantization_kernels=((8, 8),),
            cuda_model="lenet5",
            cuda_samples=256,
            cuda_steps=3,
            cuda_workers=0,
        )
