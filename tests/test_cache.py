"""The teacher cache: hit on a second run, atomic files, corrupt files retrained, process-safe."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch
from helpers.hang_guard import HANG_GUARD
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


# One process of the two-process test. Each tells the test what it does through the FIFO
# `events` (a line each): "training" from inside train() while it holds the cache's lock, which
# then waits for the FIFO `release`; "waiting" once it found that lock held by the other process.
TWO_PROCESS_SCRIPT = """
import sys
from pathlib import Path

import filelock
from torch import nn

import kdprune.cache.teacher_cache as teacher_cache
from kdprune.cache import TeacherCache

gate = Path(sys.argv[1])


def say(line):
    with open(gate / "events", "w") as fifo:
        fifo.write(line + "\\n")


class AnnouncingLock(filelock.FileLock):
    def acquire(self, timeout=None, *args, **kwargs):
        try:
            return super().acquire(0, *args, **kwargs)
        except filelock.Timeout:
            say("waiting")
            return super().acquire(timeout, *args, **kwargs)


def train(model):
    with open(gate / "trainings.txt", "a") as fh:
        fh.write("x")
    say("training")
    (gate / "release").read_text()
    return {"val_acc": 1.0, "test_acc": 1.0}


teacher_cache.FileLock = AnnouncingLock
_, hit = TeacherCache(gate / "cache").get_or_train("t", {"k": 1}, nn.Linear(2, 2), train)
print("hit" if hit else "trained")
"""


def test_two_processes_train_the_teacher_once(tmp_path: Path) -> None:
    # No timer: the second process starts once the first trains, and the first goes on once the
    # second waits on the lock (a missing lock would make the second say "training" instead).
    os.mkfifo(tmp_path / "events")
    os.mkfifo(tmp_path / "release")
    # Read and write: the FIFO never reads as closed between the two processes' lines.
    events = os.fdopen(os.open(tmp_path / "events", os.O_RDWR), "r")
    command = [sys.executable, "-c", TWO_PROCESS_SCRIPT, str(tmp_path)]
    procs = [subprocess.Popen(command, stdout=subprocess.PIPE, text=True)]
    try:
        assert events.readline() == "training\n"
        procs.append(subprocess.Popen(command, stdout=subprocess.PIPE, text=True))
        assert events.readline() == "waiting\n"
        (tmp_path / "release").write_text("go\n")
        outputs = [p.communicate(timeout=HANG_GUARD)[0].strip() for p in procs]
    finally:
        for proc in procs:
            proc.kill()
        events.close()
    assert [p.returncode for p in procs] == [0, 0]
    assert outputs == ["trained", "hit"]
    assert (tmp_path / "trainings.txt").read_text() == "x"


def test_channels_last_on_the_cpu_keys_its_own_teacher() -> None:
    """`trainer.channels_last=always` rounds differently on the CPU, so its teachers are other
    files; the default (CUDA only) keeps the key every cached teacher already has."""
    from helpers.compose import compose_cfg

    from kdprune.schedules.teacher_stage import teacher_spec

    default = teacher_spec(compose_cfg(), compose_cfg().model, "data")
    off = teacher_spec(compose_cfg("trainer.channels_last=false"), compose_cfg().model, "data")
    always = compose_cfg("trainer.channels_last=always")
    assert default == off and "channels_last" not in default
    assert teacher_spec(always, always.model, "data") == {**default, "channels_last": "always"}
