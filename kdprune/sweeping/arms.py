"""The sequential verdict's arms and where their runs live: `DIR/<arm>/seed_<s>`, `<arm>` the
arm's overrides joined (`kd=hinton,schedule=joint` -> `kd-hinton__schedule-joint`). Shared by
the looks (`sequential`) and the workers' locks (`claims`)."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

SEED_FOLDER = "seed_{seed}"
# Set by the verdict's launcher on its `kdprune -m` children: the verdict checked every arm's
# config before its first look, so `kdprune` skips its command-line check (a few seconds of
# composing, building and searching the cut per launch); each job still checks its own config.
CHECKED_ENV = "KDPRUNE_CHECKED_BY"


@dataclass(frozen=True)
class Arm:
    """One configuration of the sweep's grid, seed aside: its overrides."""

    overrides: tuple[str, ...]

    @property
    def name(self) -> str:
        """The arm's folder name: its overrides, sorted, as `key-value` joined by `__`."""
        parts = [o.replace("=", "-", 1) for o in sorted(self.overrides)]
        return re.sub(r"[^A-Za-z0-9._-]", "-", "__".join(parts)) or "default"


# A launcher runs one arm (its overrides) at some seeds into DIR/<arm>/seed_<s>.
Launcher = Callable[[Arm, Sequence[int], Path], None]


def run_dir(folder: Path, arm: Arm, seed: int) -> Path:
    """Where the (arm, seed) run lives: DIR/<arm>/seed_<s>."""
    return folder / arm.name / SEED_FOLDER.format(seed=seed)
