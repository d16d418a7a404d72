"""Faults on purpose, for tests: a rank that dies, hangs or is preempted at a known step.

`KDPRUNE_FAULT=<rank>:<stage>:<epoch>:<step>:<action>` makes the process of rank `<rank>` act
right after optimizer step `<step>` of epoch `<epoch>` (both counted from 1) of the training
stage `<stage>` (teacher, distill, finetune, joint): `exit` ends it at once with exit code 3, as a
killed rank would; `sigterm` sends it SIGTERM, as a batch scheduler does before a time limit;
`hang` stops it answering, so the other ranks' collectives time out. Unset (always, outside
tests), nothing happens. Tests need a fault at a known point, not a timer that races the run.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable

from kdprune.errors import ConfigError

ENV = "KDPRUNE_FAULT"
ACTIONS = ("exit", "sigterm", "hang")


def fault_hook(stage: str, rank: int) -> Callable[[int, int], None] | None:
    """The engine's `on_step` hook that acts as KDPRUNE_FAULT says, for this stage and rank;
    None when it names another (or is unset)."""
    spec = os.environ.get(ENV)
    if not spec:
        return None
    parts = spec.split(":")
    numbers = (parts[0], parts[2], parts[3]) if len(parts) == 5 else ()
    if len(parts) != 5 or parts[4] not in ACTIONS or not all(p.isdigit() for p in numbers):
        raise ConfigError(
            f"{ENV} must read <rank>:<stage>:<epoch>:<step>:<{'|'.join(ACTIONS)}>, got {spec!r}"
        )
    target_rank, target_stage, epoch, step, action = parts
    if int(target_rank) != rank or target_stage != stage:
        return None
    at = (int(epoch) - 1, int(step) - 1)

    def hook(epoch_index: int, step_index: int) -> None:
        if (epoch_index, step_index) == at:
            act(action)

    return hook


def act(action: str) -> None:
    """Do what a fault does: die, be told to stop, or stop answering."""
    if action == "exit":
        os._exit(3)
    if action == "sigterm":
        os.kill(os.getpid(), signal.SIGTERM)
        return
    while True:  # hang: only a signal (the launcher's, after the others failed) ends it
        time.sleep(3600)
