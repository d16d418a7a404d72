"""Shared fixtures: compose the real config, then shrink it to a tiny, fast, CPU-only run."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from helpers.compose import compose_cfg
from helpers.hang_guard import HANG_GUARD
from omegaconf import DictConfig, open_dict

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
# W&B gives up on its service process after x_service_wait seconds (30 by default) and the run
# goes on untracked: under load a test that expects tracking would race it. A hang guard only.
os.environ.setdefault("WANDB_X_SERVICE_WAIT", str(HANG_GUARD))


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """One thread: on a busy shared 2-core CPU, spinning worker threads slow tiny convs ~100x."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def make_cfg(tmp_path: Path) -> Callable[..., DictConfig]:
    """Compose conf/ with TINY plus the given overrides; cache and data under tmp_path."""

    def _make(*overrides: str) -> DictConfig:
        cfg = compose_cfg(*overrides)
        with open_dict(cfg):
            if "paths.cache_dir" not in " ".join(overrides):
                cfg.paths.cache_dir = str(tmp_path / "cache")
            cfg.paths.data_dir = str(tmp_path / "data")
        return cfg

    return _make


@pytest.fixture(scope="session")
def postgres() -> Iterator[Any]:
    """A private PostgreSQL server on a loopback port for the whole session (see postgres.py).

    Skipped only where PostgreSQL's `initdb` is not installed at all; anywhere it is, a server
    that does not start fails the tests that need it.
    """
    import shutil

    from helpers.postgres import PostgresServer

    if shutil.which("initdb") is None:
        pytest.skip("PostgreSQL's initdb is not on PATH: install PostgreSQL 15's server binaries")
    server = PostgresServer()
    try:
        server.start()
        yield server
    finally:
        server.stop()
