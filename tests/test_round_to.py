"""`prune_method.round_to: auto`: the CPU's channel block, the first that reaches the target.

Every test passes its CPU flags (an AVX-512, an AVX2 and a plain SSE CPU), so none depends on the
CPU it runs on.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
import torch_pruning as tp
from helpers.compose import run_args

from kdprune import cli
from kdprune.app import run
from kdprune.cpu_features import cpu_info
from kdprune.errors import ConfigError
from kdprune.metrics import CPU_KEYS, count_macs_params, ledger
from kdprune.models import lenet5, resnet20
from kdprune.pruning import StructuredPruner, clone_model
from kdprune.pruning.rounding import auto_roundings, candidate_roundings, first_reaching
from kdprune.pruning.structured import layer_widths

AVX512 = {"fpu", "sse4_2", "avx", "avx2", "avx512f", "avx512_vnni"}
AVX2 = {"fpu", "sse4_2", "avx", "avx2"}
SSE = {"fpu", "sse4_2"}


def narrow_lenet(widths: tuple[int, int]) -> torch.nn.Module:
    torch.manual_seed(0)
    return lenet5(10, 1, 8, widths=list(widths), hidden=[120, 84])


def cut(model: torch.nn.Module, flags: set[str] | None, **options):
    """Prune `model` in place with L1 importance and `options`; return the PruneResult."""
    options = {"ratio": 0.5, "round_to": "auto", **options}
    x = torch.randn(1, *next(model.parameters()).shape[1:2], 8, 8)
    importance = tp.importance.GroupMagnitudeImportance(p=1)
    return StructuredPruner(model, x, importance=importance, cpu_flags=flags, **options).apply()


def test_auto_tries_the_cpus_block_then_smaller_ones_then_none() -> None:
    assert auto_roundings(AVX512) == (16, 8)
    assert auto_roundings(AVX2) == (8,)
    assert auto_roundings(SSE) == () and auto_roundings(None) == ()
    assert candidate_roundings("auto", AVX512) == (16, 8, None)
    assert candidate_roundings("auto", SSE) == (None,)
    assert candidate_roundings(4, AVX512) == (4,) and candidate_roundings(None, AVX2) == (None,)


@pytest.mark.parametrize("bad", [0, -8, "foo", True, 8.5])
def test_bad_round_to_is_refused(bad) -> None:
    with pytest.raises(ConfigError, match="round_to must be auto, null or a positive int"):
        candidate_roundings(bad)


def test_first_reaching_keeps_the_first_that_does_not_raise() -> None:
    def needs_at_most_8(r):
        if r is not None and r > 8:
            raise ConfigError(f"{r} is too coarse")
        return f"cut at {r}"

    assert first_reaching((16, 8, None), needs_at_most_8) == ("cut at 8", 8)
    with pytest.raises(ConfigError, match="16 is too coarse"):
        first_reaching((16,), needs_at_most_8)


@pytest.mark.parametrize(
    ("widths", "flags", "expected"),
    [
        ((32, 64), AVX512, 16),  # 16 and 32 channels kept: whole blocks of 16
        ((32, 64), AVX2, 8),
        ((16, 32), AVX512, 8),  # 16 would keep the 16-channel layer whole: 8 instead
        ((16, 32), AVX2, 8),
        ((16, 32), SSE, None),
        ((6, 16), AVX512, None),  # 3 channels kept: no block reaches, not rounded
    ],
)
def test_auto_resolves_per_cpu_and_model(widths, flags, expected) -> None:
    model = narrow_lenet(widths)
    plain = clone_model(model)
    cut(plain, flags, round_to=None)
    result = cut(model, flags)
    assert result.round_to == expected
    pruned = {k: v for k, v in layer_widths(model).items() if k != "fc3"}
    if expected is None:
        assert layer_widths(model) == layer_widths(plain)
    else:
        assert all(w % expected == 0 for w in pruned.values()), pruned
        # every layer the unrounded cut prunes is pruned (none left whole by the rounding)
        assert all(
            pruned[k] < w for k, w in layer_widths(narrow_lenet(widths)).items() if k in pruned
        )


def test_an_explicit_round_to_ignores_the_cpu() -> None:
    for flags in (AVX512, SSE):
        model = narrow_lenet((16, 32))
        assert cut(model, flags, round_to=16).round_to == 16
        assert layer_widths(model)["layer1.0"] == 16  # kept 8 rounds to 0: left whole, as asked


def test_auto_falls_back_to_a_finer_block_for_a_macs_target() -> None:
    # ResNet-20's 75% MACs cut cannot be reached with round_to=16 (its 16-channel stage stays
    # whole); auto goes on to 8 and reaches it.
    torch.manual_seed(0)
    model = resnet20(10, 3, 8)
    dense = clone_model(model)
    x = torch.randn(1, 3, 8, 8)
    with pytest.raises(ConfigError, match="round_to=16"):
        cut(clone_model(model), AVX512, round_to=16, unit="macs", ratio=0.75)
    result = cut(model, AVX512, unit="macs", ratio=0.75)
    assert result.round_to == 8
    reduction = 1 - count_macs_params(model, x)[0] / count_macs_params(dense, x)[0]
    assert reduction == pytest.approx(0.75, abs=0.02)


def test_ledger_records_round_to_and_the_cpu_of_its_timings() -> None:
    dense = narrow_lenet((16, 32))
    model = clone_model(dense)
    result = cut(model, AVX2)
    x = torch.randn(1, 1, 8, 8)
    row = ledger(dense, model, x, latency_batch_sizes=(1,), repeats=1, warmup=0, round_to=8)
    assert row["round_to"] == result.round_to == 8
    assert {k: row[k] for k in CPU_KEYS} == cpu_info().record()
    untimed = ledger(dense, model, x, latency_batch_sizes=())
    assert untimed["round_to"] is None and not set(CPU_KEYS) & set(untimed)


def test_a_run_records_the_resolved_round_to(make_cfg, tmp_path: Path) -> None:
    cfg = make_cfg(
        "model=lenet5_wide",
        "prune_method.round_to=auto",
        "+prune_method.pruner.cpu_flags=[avx2,avx512f]",
        "teacher.epochs=1",
        "budget.student_epochs=2",
        "budget.finetune_epochs=1",
        "trainer.max_batches=2",
    )
    run(cfg, tmp_path / "run")
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["round_to"] == 8  # 16 would leave the 16-channel conv whole
    assert metrics["config"]["prune_method"]["round_to"] == "auto"
    assert {k: metrics[k] for k in CPU_KEYS} == cpu_info().record()


@pytest.mark.parametrize("value", ["0", "-8", "foo", "8.5"])
def test_bad_round_to_on_the_command_line_is_one_line_and_exit_2(
    monkeypatch, capsys, tmp_path, value
) -> None:
    monkeypatch.chdir(tmp_path)
    args = [*run_args(tmp_path, f"prune_method.round_to={value}"), f"hydra.run.dir={tmp_path}/r"]
    monkeypatch.setattr(sys, "argv", ["kdprune", *args])
    with pytest.raises(SystemExit) as exit_:
        cli.main()
    lines = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2, lines
    assert len(lines) == 1 and "round_to must be auto, null or a positive int" in lines[0], lines
    assert not list(tmp_path.rglob("metrics.json")) and not (tmp_path / "cache").exists()
