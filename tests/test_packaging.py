"""A built wheel carries every config, and the installed command composes a run from any folder."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from helpers.hang_guard import HANG_GUARD

REPO = Path(__file__).resolve().parents[1]


def _source_copy(dest: Path) -> Path:
    """What a source distribution holds, copied (links kept), so the build litters no checkout."""
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy2(REPO / name, dest / name)
    for name in ("kdprune", "conf", "sweeps"):
        shutil.copytree(REPO / name, dest / name, symlinks=True, ignore=ignore)
    return dest


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    source = _source_copy(tmp_path_factory.mktemp("source"))
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "--disable-pip-version-check", "-w", str(out), str(source)],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    (built,) = out.glob("kdprune-*.whl")
    return built


@pytest.fixture(scope="module")
def site(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("site")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--disable-pip-version-check",
         "--target", str(target), str(wheel)],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    return target


def test_wheel_holds_every_config_file(wheel: Path) -> None:
    # conf/sweep is a link to the top-level sweeps/: os.walk follows it as the wheel build does.
    expected = {
        "kdprune/conf/" + str(Path(root, name).relative_to(REPO / "conf"))
        for root, _, names in os.walk(REPO / "conf", followlinks=True)
        for name in names
        if name.endswith(".yaml")
    }
    assert {f"kdprune/conf/sweep/{p.name}" for p in (REPO / "sweeps").glob("*.yaml")} <= expected
    with zipfile.ZipFile(wheel) as zf:
        packed = {name for name in zf.namelist() if name.endswith(".yaml")}
    assert expected == packed


def test_installed_command_composes_a_run_from_an_empty_folder(site: Path, tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(site)}
    where = subprocess.run(
        [sys.executable, "-c", "import kdprune.paths as p; print(p.CONF_DIR)"],
        cwd=tmp_path, env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert Path(where.stdout.strip()) == site / "kdprune" / "conf"
    done = subprocess.run(
        [str(site / "bin" / "kdprune"), "--cfg", "job", "model=resnet20", "+sweep=orders"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=HANG_GUARD,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert "_target_: kdprune.models.resnet20" in done.stdout
    assert "sweep_name: orders" in done.stdout
    assert list(tmp_path.iterdir()) == []  # --cfg composes only: nothing written
