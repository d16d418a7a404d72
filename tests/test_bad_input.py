"""Every bad input a user types gets one line and exit code 2, before anything is trained.

The command line runs in this process through `kdprune.cli.main` (as the console script does),
from an empty folder; after it, no run wrote a metrics.json and no teacher was trained.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from helpers.compose import run_args

from kdprune import cli
from kdprune.models import lenet5, resnet20

CUDA = torch.cuda.is_available()

# Where the odd models live (tests/helpers/odd_models.py): a config may name them once trusted.
ODD_MODELS = "trusted_targets=[helpers.odd_models.*]"

VALUES = [
    ("typo_key=1",),
    ("seed=not-a-number",),
    ("seed=-1",),
    ("optimizer.lr=-1",),
    ("optimizer.lr=abc",),
    ("optimizer=sgd", "optimizer.momentum=-0.5"),
    ("teacher.epochs=-3",),
    ("budget.finetune_epochs=99",),
    ("budget.student_epochs=two",),
    ("prune_method.ratio=1.5",),
    ("prune_method.ratio=abc",),
    ("prune_method.unit=bytes",),
    ("prune_method.max_layer_ratio=0",),
    ("prune_method.unit=latency", "prune_method.latency.runtime=tensorrt"),
    ("prune_method.unit=latency", "prune_method.latency.runtime=onnxruntime_int8"),  # no quantize
    ("prune_method.unit=latency", "prune_method.latency.batch_size=0"),
    ("prune_method.latency.threads=-1",),  # checked with unit channels too: a typo fails now
    ("++prune_method.latency.batchsize=64",),
    ("prune_method=tucker2", "prune_method.unit=latency"),  # structured cuts only
    ("prune_method=l1_unstructured", "prune_method.unit=channels"),
    ("prune_method=tucker2", "prune_method.ratio=1.0"),
    ("prune_method=tucker2", "prune_method.allocation=spectral"),
    ("prune_method=tucker2", "prune_method.ignored_layers=[layer1,layer2]"),  # nothing to decompose
    ("prune_method=cp", "prune_method.min_rank=0"),
    ("prune_method=cp", "prune_method.iterations=0"),
    ("prune_method=cp", "prune_method.unit=params", "prune_method.ratio=0.6"),  # out of reach
    ("kd.temperature=0",),
    ("kd.temperature=abc",),
    ("kd=hinton", "kd.temperature=inf"),  # would pass "> 0", then train into NaN
    ("optimizer.lr=inf",),
    ("optimizer.lr=-inf",),
    ("kd.alpha=nan",),
    ("prune_method.ratio=inf",),
    ("kd.alpha=2",),
    ("kd=attention", "kd.student_layers=[layer9]"),
    ("kd.alpha=[1,",),
    ("trainer.batch_size=0",),
    ("trainer.threads=two",),
    ("trainer.progress=maybe",),
    ("trainer.label_smoothing=1.5",),
    ("device=tpu",),
    pytest.param(("device=cuda",), marks=pytest.mark.skipif(CUDA, reason="CUDA is here")),
    ("model=resnet999",),
    ("dataset=nope",),
    ("schedule=prune_then_distill",),  # would prune an untrained network (student_init=scratch)
    ("student_init=checkpoint",),
    ("student_init=nowhere",),
    ("trainer.select_epoch=first",),
    ("trainer.channels_last=sometimes",),
    ("schedule=joint", "schedule.pruning_steps=0"),
    ("schedule=joint", "schedule.pruning_end=0"),
    ("schedule.prune_target=everything",),
    ("teacher=resnet20", "student_init=teacher"),
    ("lr_scheduler.warmup=2",),
    ("measure.repeats=0",),
    ("sweep_metric=test_acc",),
    ("dataset=imagefolder",),
    ("dataset=imagefolder", "dataset.num_classes=3", "dataset.splits.root=/nonexistent"),
    ("logger=wandb", "logger.mode=bogus"),
    ("-m", "seed=x", "kd=none,hinton"),
    ("quantize=int4",),
    ("quantize=ptq", "quantize.calibration_images=0"),
    ("quantize=ptq", "quantize.calibration_method=Magic"),
    ("quantize=ptq", "quantize.epochs=1"),  # ptq trains nothing: the budget would shrink
    ("quantize=qat", "quantize.epochs=0"),
    ("quantize=qat", "quantize.epochs=4"),  # more than the last stage has (finetune_epochs=3)
    ("quantize=qat", "schedule=prune_then_distill", "student_init=teacher", "quantize.epochs=9"),
    # Feature KD hooks layers an exported graph does not have.
    ("quantize=qat", "kd=attention", "kd.student_layers=[layer2]"),
    ("quantize=qat", ODD_MODELS, "model._target_=helpers.odd_models.transposed"),
    ("quantize=ptq", ODD_MODELS, "model._target_=helpers.odd_models.branching"),
    ("prune_method=movement", "schedule=prune_then_distill", "student_init=teacher"),
    ("prune_method=channel_movement", "budget.finetune_epochs=8"),  # no distill stage to learn in
    ("prune_method=movement", "prune_method.unit=channels"),
    ("prune_method=channel_movement", "prune_method.allocation=global"),
    ("prune_method.layer_ratios=/nonexistent/layer_ratios.yaml",),
    ("prune_method.unit=macs", "prune_method.layer_ratios=/nonexistent/layer_ratios.yaml"),
]


def _save(path: Path, obj: object) -> None:
    torch.save(obj, path)


CHECKPOINTS: dict[str, Callable[[Path], None]] = {
    "missing": lambda path: None,
    "folder": lambda path: path.mkdir(),
    "empty": lambda path: path.write_bytes(b""),
    "not-torch": lambda path: path.write_bytes(b"hello, world\n" * 20),
    "pickled-module": lambda path: _save(path, lenet5(10, 1, 8)),
    "a-tensor": lambda path: _save(path, torch.zeros(3)),
    "other-architecture": lambda path: _save(path, resnet20(10, 1, 8).state_dict()),
    "wrong-classes": lambda path: _save(path, lenet5(3, 1, 8).state_dict()),
}


def _kdprune(monkeypatch, capsys, tmp_path: Path, *args: str) -> tuple[int, list[str]]:
    """Run the command line in this process from an empty folder: (exit code, stderr lines)."""
    monkeypatch.chdir(tmp_path)
    argv = [a for a in args if a.startswith("-")] + run_args(tmp_path, *args)
    argv = list(dict.fromkeys(argv))  # a flag once
    monkeypatch.setattr(sys, "argv", ["kdprune", *argv, f"hydra.run.dir={tmp_path}/run"])
    with pytest.raises(SystemExit) as exit_:
        cli.main()
    return exit_.value.code, capsys.readouterr().err.strip().splitlines()


def _nothing_done(tmp_path: Path) -> None:
    assert not list(tmp_path.rglob("metrics.json"))
    assert not (tmp_path / "cache").exists()  # no teacher trained


@pytest.mark.parametrize("args", VALUES, ids=lambda a: " ".join(a))
def test_bad_value_is_one_line_and_exit_2(monkeypatch, capsys, tmp_path, args) -> None:
    code, lines = _kdprune(monkeypatch, capsys, tmp_path, *[a for a in args if a != "-m"],
                           *(["-m"] if "-m" in args else []))  # fmt: skip
    assert code == 2, lines
    assert len(lines) == 1 and lines[0].startswith("kdprune: error: "), lines
    _nothing_done(tmp_path)


@pytest.mark.parametrize("kind", list(CHECKPOINTS))
@pytest.mark.parametrize("key", ["student_checkpoint", "teacher.checkpoint"])
def test_bad_checkpoint_is_one_line_and_exit_2(monkeypatch, capsys, tmp_path, key, kind) -> None:
    path = tmp_path / f"{kind}.pt"
    CHECKPOINTS[kind](path)
    start = ["student_init=checkpoint"] if key == "student_checkpoint" else []
    code, lines = _kdprune(monkeypatch, capsys, tmp_path, *start, f"{key}={path}")
    assert code == 2, lines
    assert len(lines) == 1 and lines[0].startswith("kdprune: error: "), lines
    assert str(path) in lines[0] and "checkpoint" in lines[0]
    _nothing_done(tmp_path)


def test_a_good_checkpoint_passes_the_checks(monkeypatch, tmp_path) -> None:
    path = tmp_path / "good.pt"
    torch.save(lenet5(10, 1, 8).state_dict(), path)
    monkeypatch.chdir(tmp_path)
    args = run_args(tmp_path, "student_init=checkpoint", f"student_checkpoint={path}")
    assert cli.check_command_line(args) is None


@pytest.mark.parametrize("stage", ["ptq", "qat"])
def test_int8_on_a_cpu_without_int8_instructions(monkeypatch, capsys, tmp_path, stage) -> None:
    from kdprune.quantization import int8_kernels

    monkeypatch.setattr(int8_kernels, "cpu_flags", lambda: {"fpu", "sse2", "avx"})
    code, lines = _kdprune(monkeypatch, capsys, tmp_path, f"quantize={stage}")
    assert code == 2, lines
    assert len(lines) == 1 and "INT8" in lines[0] and "quantize=none" in lines[0], lines
    _nothing_done(tmp_path)


RATIO_FILES = {
    "not-yaml": "layer_ratios: [unclosed\n",
    "no-mapping": "- layer1.0\n- 0.5\n",
    "unknown-layer": "layer_ratios:\n  layer9.0: 0.5\n",
    "the-classifier": "layer_ratios:\n  fc3: 0.5\n",
    "ratio-of-one": "layer_ratios:\n  layer1.0: 1.0\n",
    "above-the-cap": "layer_ratios:\n  layer1.0: 0.95\n",
    "not-a-number": "layer_ratios:\n  layer1.0: half\n",
}


@pytest.mark.parametrize("kind", list(RATIO_FILES))
def test_bad_layer_ratio_file_is_one_line_and_exit_2(monkeypatch, capsys, tmp_path, kind) -> None:
    path = tmp_path / f"{kind}.yaml"
    path.write_text(RATIO_FILES[kind])
    code, lines = _kdprune(monkeypatch, capsys, tmp_path, f"prune_method.layer_ratios={path}")
    assert code == 2, lines
    assert len(lines) == 1 and lines[0].startswith("kdprune: error: "), lines
    _nothing_done(tmp_path)


SENSITIVITY = [
    ("missing.pt",),
    ("--ratios", "0.2,1.5"),
    ("--ratios", "0"),
    ("--ratios", "abc"),
    ("--val-batches", "0"),
    ("--threads", "0"),
    ("prune_method=l1_unstructured",),
    ("prune_method=channel_movement",),  # learns while training: nothing to learn from here
    ("typo_key=1",),
]


@pytest.mark.parametrize("args", SENSITIVITY, ids=lambda a: " ".join(a))
def test_bad_sensitivity_input_is_one_line_and_exit_2(monkeypatch, capsys, tmp_path, args) -> None:
    monkeypatch.chdir(tmp_path)
    argv = ["sensitivity", *args, *run_args(tmp_path)]
    monkeypatch.setattr(sys, "argv", ["kdprune", *argv])
    with pytest.raises(SystemExit) as exit_:
        cli.main()
    lines = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2, lines
    assert len(lines) == 1 and lines[0].startswith("kdprune: error: "), lines
    _nothing_done(tmp_path)
    assert not (tmp_path / "outputs").exists()  # no analysis written
