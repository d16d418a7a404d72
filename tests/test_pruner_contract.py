"""Every pruner keeps one contract (`kdprune.pruning.Pruner`); callers never probe for more."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from helpers.compose import group_node

from kdprune import paths
from kdprune.errors import ConfigError
from kdprune.pruning import Pruner, pruner_class, validate

PACKAGE = Path(__file__).resolve().parents[1] / "kdprune"
METHODS = sorted(p.stem for p in (paths.CONF_DIR / "prune_method").glob("*.yaml"))


@pytest.mark.parametrize("method", METHODS)
def test_every_prune_method_builds_a_pruner(method: str) -> None:
    cls = pruner_class(group_node("prune_method", method))
    assert issubclass(cls, Pruner) and cls.kind in ("structured", "masked", "low_rank")
    assert not cls.__abstractmethods__, f"{cls.__name__} leaves {cls.__abstractmethods__} open"


def test_a_class_that_is_not_a_pruner_is_refused_in_one_line() -> None:
    node = group_node("prune_method", "l1", **{"pruner._target_": "kdprune.models.LeNet5"})
    with pytest.raises(ConfigError, match="must name a kdprune.pruning.Pruner subclass"):
        validate(node)


def _probes_outside_pruning() -> list[str]:
    """`getattr(` / `hasattr(` calls outside kdprune/pruning/ whose object is named like a
    pruner (`pruner`, `cls` of `pruner_class`, ...)."""
    found = []
    for path in PACKAGE.rglob("*.py"):
        if "pruning" in path.relative_to(PACKAGE).parts[:1]:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)):
                continue
            if node.func.id in ("getattr", "hasattr") and node.args:
                text = ast.unparse(node.args[0])
                if "prun" in text.lower():
                    found.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {ast.unparse(node)}")
    return found


def test_no_caller_probes_a_pruner() -> None:
    assert _probes_outside_pruning() == []
