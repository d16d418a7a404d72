"""One CPU per measured objective: a study whose objective or constraint is a measured latency
(`latency_speedup`, `cpu_speedup_bs64`, `ort_latency_ms_bs64_int8`, ...) is told values timed on
one CPU only.

Why: a latency, and a speed-up measured from two of them, belongs to the model *and* the CPU it ran
on (its vector width, caches, and the kernels oneDNN and ONNX Runtime pick for it: even the channel
block a cut is best rounded to is 16 on AVX-512 and 8 on AVX2, `kdprune.cpu_features`; INT8 kernels
differ with VNNI and AMX). Workers on several machines can share one study (PostgreSQL, a journal
file); if each told the latency it measured on its own CPU, the sampler would model, and
`best_trials` rank, a mixture of two functions as if it were one, and a constraint such as
`latency_speedup >= 2` met on one machine would be missed on the other. So every trial records the
CPU its run measured on (user attrs `cpu_model`, `cpu_isa`, from its metrics.json), and a trial
whose measured objective or constraint comes from another CPU than the study's is refused: failed
with user attrs `error` and `refused` (its budget goes back, `budget.py`), its value and constraint
values untold, and its worker stops in one line (exit 2), since every other trial it ran would be
refused too. Once the study has a CPU, a worker whose trials run on its own machine is refused
before its first trial (`check_machine`).

A speed-up measured on a latency target (`latency_speedup`, `latency_ms_*`: `prune_method.latency`)
also belongs to that target, its runtime, batch and threads: trials record them too (user attrs
`latency_runtime`, `latency_batch_size`, `latency_threads`) and a trial timed on another target
than the study's is refused alike (workers started with other `prune_method.latency` overrides,
or a search space that varies the target).

The study's CPU (and target) is that of its lowest-numbered complete trial that recorded one.
Two workers on different CPUs that tell their first trials at the same instant can both get
through (Optuna's storages have no compare-and-set for attributes); every later trial is then
held to the lowest-numbered one's CPU.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import TrialState

from kdprune.cpu_features import CpuInfo
from kdprune.errors import MixedCpuError
from kdprune.sweeping.constraints import Bound
from kdprune.sweeping.selectable import is_measured, objective_names

CPU_ATTRS = ("cpu_model", "cpu_isa")  # metrics.json keys, kept as the trial's user attrs
# A `unit=latency` run's target (metrics.json keys, kept as user attrs too).
TARGET_ATTRS = ("latency_runtime", "latency_batch_size", "latency_threads")
Cpu = dict[str, str]
Target = dict[str, Any]
Measured = dict[str, Any]  # a CPU's keys, and a latency target's where the run had one


def trial_cpu(attrs: Mapping[str, Any]) -> Cpu | None:
    """The CPU named by a run's metrics or a trial's user attrs; None where either key is missing
    (a run that timed nothing)."""
    cpu = {key: attrs[key] for key in CPU_ATTRS if isinstance(attrs.get(key), str)}
    return cpu if len(cpu) == len(CPU_ATTRS) else None


def trial_target(attrs: Mapping[str, Any]) -> Target | None:
    """The latency target named by a run's metrics or a trial's user attrs; None where the run
    had none (a unit other than latency)."""
    return {key: attrs.get(key) for key in TARGET_ATTRS} if TARGET_ATTRS[0] in attrs else None


def describe(cpu: Mapping[str, str]) -> str:
    """`Intel(R) Xeon(R) ... (avx512f)`."""
    return f"{cpu['cpu_model']} ({cpu['cpu_isa']})"


def describe_target(target: Mapping[str, Any]) -> str:
    """`onnxruntime, batch 64, 1 thread(s)`."""
    return (
        f"{target['latency_runtime']}, batch {target['latency_batch_size']}, "
        f"{target['latency_threads']} thread(s)"
    )


@dataclass(frozen=True)
class OneCpu:
    """The rule of this module for one study: `measured` names its objectives and constraints
    that are timed on a CPU; with none, trials from any CPU are told (nothing told depends on
    it), and each still records its CPU."""

    measured: tuple[str, ...] = ()

    @classmethod
    def of(cls, sweep_metric: Any, bounds: Sequence[Bound]) -> OneCpu:
        """The rule for a sweep optimising `sweep_metric` (a name or a list) under `bounds`."""
        names = objective_names(sweep_metric or [])
        names += [bound.metric for bound in bounds]
        return cls(tuple(dict.fromkeys(str(n) for n in names if is_measured(n))))

    @staticmethod
    def record(trial: optuna.Trial, metrics: Mapping[str, Any]) -> Measured | None:
        """Set the trial's `cpu_model` and `cpu_isa` user attrs (and its latency target's, where
        it had one) from its run's metrics; returns the metrics' CPU and target keys (None, and
        nothing set, for a run that timed nothing)."""
        cpu, target = trial_cpu(metrics), trial_target(metrics)
        if cpu is None:
            return None
        for key, value in {**cpu, **(target or {})}.items():
            trial.set_user_attr(key, value)
        return {**cpu, **(target or {})}

    @staticmethod
    def study_cpu(study: optuna.Study) -> tuple[int, Measured] | None:
        """(number, CPU and latency target keys) of the study's lowest-numbered complete trial
        that recorded a CPU."""
        complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        for trial in sorted(complete, key=lambda t: t.number):
            cpu = trial_cpu(trial.user_attrs)
            if cpu is not None:
                return trial.number, {**cpu, **(trial_target(trial.user_attrs) or {})}
        return None

    def refusal(self, study: optuna.Study, number: int, cpu: Measured | None) -> str | None:
        """Why trial `number`, measured on `cpu` (and the latency target its keys name), may not
        be told to `study` (None: it may)."""
        if not self.measured or cpu is None:
            return None
        first = self.study_cpu(study)
        if first is None:
            return None
        them = "them" if len(self.measured) > 1 else "it"
        said = f"trial {number} measured {', '.join(self.measured)} on"
        if trial_cpu(first[1]) != trial_cpu(cpu):
            return (
                f"{said} {describe(cpu)}, but study {study.study_name} measures {them} on "
                f"{describe(first[1])} (trial {first[0]}): {self._advice()}"
            )
        ours, theirs = trial_target(cpu), trial_target(first[1])
        if self._on_target() and None not in (ours, theirs) and ours != theirs:
            return (
                f"{said} {describe_target(ours or {})}, but study {study.study_name} measures "
                f"{them} on {describe_target(theirs or {})} (trial {first[0]}): speed-ups timed "
                "on different latency targets are not one objective; give each target a study "
                "of its own (hydra.sweeper.study_name=...)"
            )
        return None

    def _on_target(self) -> bool:
        """Whether a measured objective or constraint is timed on the latency target."""
        return any(name.startswith("latency_") for name in self.measured)

    def check_machine(self, study: optuna.Study, cpu: CpuInfo) -> None:
        """MixedCpuError, before any trial, when this machine (which runs the trials) has another
        CPU than the study's."""
        here = {"cpu_model": cpu.model, "cpu_isa": cpu.isa}
        first = self.study_cpu(study) if self.measured else None
        if first is not None and trial_cpu(first[1]) != here:
            raise MixedCpuError(
                f"this machine's CPU is {describe(here)}, and study {study.study_name} measures "
                f"{', '.join(self.measured)} on {describe(first[1])} (trial {first[0]}): "
                f"{self._advice()}"
            )

    @staticmethod
    def _advice() -> str:
        return (
            "latencies timed on different CPUs are not one objective; run this study's workers "
            "on one CPU model, or give this CPU a study of its own (hydra.sweeper.study_name=...)"
        )
