"""The command line answers `--help`, `--cfg job` and a refused value without importing torch
(which takes seconds to load): each runs in a fresh process, which then reports its modules."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from helpers.hang_guard import HANG_GUARD

# Runs `kdprune.cli.main` as the console script does, then prints its exit code and whether
# the heavy modules were imported.
SCRIPT = (
    "import json, sys\n"
    "sys.argv = ['kdprune', *sys.argv[1:]]\n"
    "from kdprune import cli\n"
    "try:\n"
    "    cli.main()\n"
    "    code = 0\n"
    "except SystemExit as exit_:\n"
    "    code = exit_.code\n"
    "heavy = sorted(m for m in ('torch', 'optuna', 'torchvision') if m in sys.modules)\n"
    "print(json.dumps({'code': code, 'heavy': heavy}))\n"
)

COMMAND_LINES = [
    (("--cfg", "job"), 0),
    (("--help",), 0),
    (("kd.temperature=-1",), 2),
    (("kd=hinton", "kd.temperature=inf"), 2),
    (("model=resnet999",), 2),
    (("trainer.batch_size=0",), 2),
    (("--cfg", "job", "typo_key=1"), 2),  # Hydra's own error, in one line
]
IDS = [" ".join(args) for args, _ in COMMAND_LINES]


@pytest.mark.parametrize(("args", "code"), COMMAND_LINES, ids=IDS)
def test_answers_without_torch(tmp_path, args, code) -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, *args, f"hydra.run.dir={tmp_path}/run"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=HANG_GUARD,
    )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result == {"code": code, "heavy": []}, done.stderr
    if code == 2:
        assert done.stderr.strip().startswith("kdprune: error: ")
        assert len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()
