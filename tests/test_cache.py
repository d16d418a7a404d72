"""The teacher cache: hit on a second run, atomic files, corrupt files retrained, process-safe."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import torch
from torch import nn

from kdprune.cache import TeacherCache, cache_key


def _trainer(calls: list):
    def train(model: nn.Module) -> dict:
        calls.append(1)
        with torch.no_grad():
            for p in model.parameters():
                p.fill_(0.5)
        return {"val_acc": 0.9, "test_acc": 0.8}

    return train


SPEC = {"model": {"_target_": "x"}, "epochs": 3, "seed": 0}


def test_key_is_stable_and_sensitive() -> None:
    assert cache_key(SPEC) == cache_key(dict(reversed(list(SPEC.items()))))
    assert cache_key(SPEC) != cache_key({**SPEC, "seed": 1})


def test_second_request_hits_the_cache(tmp_path: Path) -> None:
    calls: list = []
    cache = TeacherCache(tmp_path)
    m1, hit1 = cache.get_or_train("t", SPEC, nn.Linear(3, 2), _trainer(calls))
    model = nn.Linear(3, 2)
    m2, hit2 = cache.get_or_train("t", SPEC, model, _trainer(calls))
    assert (hit1, hit2, len(calls)) == (False, True, 1)
    assert m1 == m2 == {"val_acc": 0.9, "test_acc": 0.8}
    assert torch.all(model.weight == 0.5)
    assert not list(tmp_path.rglob("*.tmp"))


def test_corrupt_file_is_retrained_not_trusted(tmp_path: Path, caplog) -> None:
    calls: list = []
    cache = TeacherCache(tmp_path)
    cache.get_or_train("t", SPEC, nn.Linear(3, 2), _trainer(calls))
    path = cache.path("t", SPEC)
    path.write_bytes(path.read_bytes()[:50])  # a truncated file, as a killed copy would leave
    _, hit = cache.get_or_train("t", SPEC, nn.Linear(3, 2), _trainer(calls))
    assert not hit and len(calls) == 2
    assert "corrupt" in caplog.text
    _, hit = cache.get_or_train("t", SPEC, nn.Linear(3, 2), _trainer(calls))
    assert hit


def test_two_processes_train_the_teacher_once(tmp_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        import time, torch
        from torch import nn
        from kdprune.cache import TeacherCache
        def train(model):
            with open({str(tmp_path / "trainings.txt")!r}, "a") as fh:
                fh.write("x")
            time.sleep(1.5)  # long enough that the other process arrives while this one trains
            return {{"val_acc": 1.0, "test_acc": 1.0}}
        _, hit = TeacherCache({str(tmp_path / "cache")!r}).get_or_train(
            "t", {{"k": 1}}, nn.Linear(2, 2), train)
        print("hit" if hit else "trained")
        """
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outputs = sorted(p.communicate(timeout=120)[0].strip() for p in procs)
    assert all(p.returncode == 0 for p in procs)
    assert outputs == ["hit", "trained"]
    assert (tmp_path / "trainings.txt").read_text() == "x"
