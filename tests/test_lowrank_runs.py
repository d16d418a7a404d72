"""Tucker-2 and CP in every order, end to end on digits: ledger, model file, evaluate, report."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from kdprune import commands
from kdprune.app import run
from kdprune.data import digits
from kdprune.pruning import load_model, read_model_file
from kdprune.reporting import collect_runs

ORDERS = {
    "ptd": ["schedule=prune_then_distill", "student_init=teacher"],
    "dtp": ["schedule=distill_then_prune", "schedule.distill_epochs=1"],
    "joint": ["schedule=joint", "schedule.joint_epochs=1", "schedule.pruning_steps=3"],
}
FAST = ["schedule.finetune_epochs=1", "teacher.epochs=1", "trainer.max_batches=4"]


@pytest.mark.parametrize("method", ["tucker2", "cp"])
def test_each_order_runs_end_to_end(make_cfg, tmp_path: Path, capsys, method: str) -> None:
    results = {}
    for name, order in ORDERS.items():
        cfg = make_cfg(*order, f"prune_method={method}", "prune_method.iterations=10", *FAST)
        results[name] = metrics = run(cfg, tmp_path / name)
        assert metrics["kind"] == "low_rank" and metrics["method"] == method
        assert 1 - 1 / metrics["macs_speedup"] == pytest.approx(0.5, abs=0.02)
        assert metrics["cpu_speedup_bs64"] > 0 and metrics["file_size_bytes"] > 0
        payload = read_model_file(metrics["model_file"])
        steps = payload["decompositions"]
        assert steps and {s["kind"] for s in steps} == {method}
        model = load_model(metrics["model_file"])
        test = digits().test
        with torch.no_grad():
            acc = (model(test.images).argmax(1) == test.labels).float().mean().item()
        assert acc == pytest.approx(metrics["test_acc"], abs=1e-6)
        assert commands.main(["evaluate", metrics["model_file"], "--dataset", "digits"]) == 0
        assert f"accuracy {metrics['test_acc']:.4f}" in capsys.readouterr().out
    # The joint order shrinks ranks step by step: each layer is decomposed more than once.
    joint = read_model_file(results["joint"]["model_file"])["decompositions"]
    assert len(joint) > len({s["path"] for s in joint})
    runs = collect_runs(tmp_path)
    assert set(runs["method"]) == {method} and set(runs["kind"]) == {"low_rank"}
