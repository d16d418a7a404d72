"""Hydra's, hydra-optuna-sweeper's, Optuna's and OmegaConf's private API is used in one module,
`kdprune/sweeping/internals.py`, so that upgrading those pinned libraries is one file's work.

The rule, read from each kdprune file with `ast` (every file but internals.py):

1. no import of a private module or name of these libraries (`optuna.storages._heartbeat`,
   `from hydra_plugins.hydra_optuna_sweeper import _impl`);
2. no attribute `x._name` (one leading underscore; not a dunder, nor a sunder like `_target_`),
   nor `getattr(x, "_name")` / `hasattr` / `setattr` / `delattr`, that reaches a library's
   private name:
   - on `self` / `cls`: a private name that the class's library base classes have (read from
     the classes themselves: their attributes, and what their methods assign) and the class
     does not define itself; kdprune's own `self._x` and torch's `self._modules` pass;
   - on anything else: a private name these libraries define anywhere (a function, class, name
     or attribute they assign, read from their installed source), as the checker cannot tell
     what object `x` is; torch's `module._forward_pre_hooks` passes, `study._storage` does not;
3. no string naming a private module of these libraries (a `_target_` such as
   `"hydra._internal.core_plugins.basic_sweeper.BasicSweeper"`);
4. no class derived from a library class defining a private name that class already has
   (overriding a private hook such as `_get_stale_trial_ids`, or setting its private state).
"""

from __future__ import annotations

import ast
import functools
import importlib
import importlib.util
import inspect
import re
import textwrap
from pathlib import Path

LIBRARIES = ("hydra", "hydra_plugins", "optuna", "omegaconf")
PACKAGE = Path(__file__).resolve().parents[1] / "kdprune"
INTERNALS = PACKAGE / "sweeping" / "internals.py"
ATTRIBUTE_CALLS = ("getattr", "hasattr", "setattr", "delattr")
DOTTED = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)+")


def is_private(name: str) -> bool:
    """One leading underscore: not a dunder, not `_` alone, and not a sunder such as Hydra's
    public `_target_` / `_partial_` config keys."""
    return (
        len(name) > 1
        and name.startswith("_")
        and not name.startswith("__")
        and not name.endswith("_")
    )


def _from_library(dotted: str) -> bool:
    return dotted.split(".")[0] in LIBRARIES


def _private_path(dotted: str) -> bool:
    return _from_library(dotted) and any(is_private(part) for part in dotted.split("."))


def defined_names(tree: ast.AST) -> set[str]:
    """The private names a module defines: functions, classes, assigned names and attributes."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            names.add(node.attr)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
    return {name for name in names if is_private(name)}


@functools.cache
def library_private_names() -> frozenset[str]:
    """Every private name the installed libraries define (about 400 files, read once)."""
    names: set[str] = set()
    for library in LIBRARIES:
        spec = importlib.util.find_spec(library)
        assert spec is not None and spec.submodule_search_locations is not None, library
        for root in spec.submodule_search_locations:
            for path in Path(root).rglob("*.py"):
                names |= defined_names(ast.parse(path.read_text(encoding="utf-8")))
    return frozenset(names)


def _table(tree: ast.Module, module: str | None) -> dict[str, str]:
    """Local name -> dotted path: what the module imports (absolute imports only) and, when
    its dotted name is known, the classes it defines."""
    table = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                local = alias.asname or alias.name.split(".")[0]
                table[local] = alias.name if alias.asname else local
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                table[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    if module:
        table |= {n.name: f"{module}.{n.name}" for n in tree.body if isinstance(n, ast.ClassDef)}
    return table


def _dotted(node: ast.expr, table: dict[str, str]) -> str | None:
    """`a.b.C` with its head resolved through the table, or None."""
    if isinstance(node, ast.Name):
        return table.get(node.id)
    if isinstance(node, ast.Attribute):
        head = _dotted(node.value, table)
        return f"{head}.{node.attr}" if head else None
    return None


def _resolve(dotted: str) -> object | None:
    """The library object a dotted path names (its longest importable prefix, then attributes)."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for part in parts[cut:]:
            obj = getattr(obj, part, None)
        return obj
    return None


def _own(node: ast.ClassDef) -> dict[str, int]:
    """The private names a class defines -> the line of the first definition: its methods, its
    class attributes and what its methods assign to `self.` / `cls.`."""
    own: dict[str, int] = {}
    for child in node.body:
        targets = list(child.targets) if isinstance(child, ast.Assign) else []
        targets += [child.target] if isinstance(child, ast.AnnAssign) else []
        for target in targets:
            if isinstance(target, ast.Name) and is_private(target.id):
                own.setdefault(target.id, target.lineno)
    for child in ast.walk(node):
        name = None
        if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
            name = child.name
        elif (
            isinstance(child, ast.Attribute)
            and isinstance(child.ctx, ast.Store)
            and isinstance(child.value, ast.Name)
            and child.value.id in ("self", "cls")
        ):
            name = child.attr
        if name and is_private(name):
            own.setdefault(name, child.lineno)
    return own


def _library_class_names(cls: type) -> set[str]:
    """The private names of the library classes in `cls`'s MRO: their class attributes, and what
    their methods assign to `self.`."""
    names = set()
    for base in cls.__mro__:
        if _from_library(base.__module__):
            names |= {name for name in vars(base) if is_private(name)}
            try:
                source = ast.parse(textwrap.dedent(inspect.getsource(base)))
            except (OSError, TypeError):  # a class without Python source
                continue
            names |= set(_own(next(n for n in source.body if isinstance(n, ast.ClassDef))))
    return names


def _module_file(module: str) -> Path | None:
    base = PACKAGE.parent.joinpath(*module.split("."))
    return next((p for p in (base.with_suffix(".py"), base / "__init__.py") if p.is_file()), None)


@functools.cache
def inherited_names(dotted: str) -> frozenset[str]:
    """The private names the class at `dotted` has from library classes: a library class is
    imported and read; a kdprune class is read from its source (importing kdprune would import
    torch), its bases followed; anything else (torch's classes) has none."""
    if _from_library(dotted):
        cls = _resolve(dotted)
        return frozenset(_library_class_names(cls) if isinstance(cls, type) else ())
    module, _, name = dotted.rpartition(".")
    path = _module_file(module) if dotted.startswith("kdprune.") else None
    if path is None:
        return frozenset()
    tree = ast.parse(path.read_text())
    table = _table(tree, module)
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == name:
            return frozenset(_inherited(node, table))
    again = table.get(name)  # imported there, under that name
    return inherited_names(again) if again and again != dotted else frozenset()


def _inherited(node: ast.ClassDef, table: dict[str, str]) -> set[str]:
    """The private names the class's bases have from library classes."""
    names: set[str] = set()
    for base in node.bases:
        if dotted := _dotted(base, table):
            names |= inherited_names(dotted)
    return names


def _imports_private(node: ast.stmt) -> str | None:
    """Rule 1: the private module or name an import statement reaches, or None."""
    if isinstance(node, ast.Import):
        for alias in node.names:
            if _private_path(alias.name):
                return alias.name
    if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
        for alias in node.names:
            if _private_path(f"{node.module}.{alias.name}"):
                return f"{node.module}.{alias.name}"
    return None


def _attribute(node: ast.AST) -> tuple[ast.expr, str, str] | None:
    """(receiver, name, how it reads) of `x.name` or `getattr(x, "name")` and its kin."""
    if isinstance(node, ast.Attribute):
        return node.value, node.attr, f"accesses .{node.attr}"
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id in ATTRIBUTE_CALLS
        and len(node.args) >= 2
        and isinstance(name := node.args[1], ast.Constant)
        and isinstance(name.value, str)
    ):
        return node.args[0], name.value, f"{node.func.id}(..., {name.value!r})"
    return None


class _Checker(ast.NodeVisitor):
    """Walks a module keeping, for `self` / `cls`, the private names its class inherits from
    library classes (and does not define itself)."""

    def __init__(self, table: dict[str, str]):
        self.table = table
        self.inherited: list[set[str]] = [set()]
        self.found: list[tuple[int, str]] = []

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        inherited, own = _inherited(node, self.table), _own(node)
        # rule 4: a private name of a library base, defined again here
        self.found += [
            (own[n], f"overrides the library's private {n}") for n in inherited & set(own)
        ]
        self.inherited.append(inherited - set(own))
        self.generic_visit(node)
        self.inherited.pop()

    def generic_visit(self, node: ast.AST) -> None:
        if what := self._reaches(node):
            self.found.append((node.lineno, what))
        super().generic_visit(node)

    def _reaches(self, node: ast.AST) -> str | None:
        """What a node reaches by rules 1 to 3, or None."""
        if isinstance(node, ast.Import | ast.ImportFrom) and (path := _imports_private(node)):
            return f"imports {path}"
        if (attribute := _attribute(node)) and is_private(attribute[1]):
            receiver, name, how = attribute
            if isinstance(receiver, ast.Name) and receiver.id in ("self", "cls"):
                return how if name in self.inherited[-1] else None
            return how if name in library_private_names() else None
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            if DOTTED.fullmatch(node.value) and _private_path(node.value):
                return f"names {node.value}"
        return None


def violations(source: str, where: str, module: str | None = None) -> list[str]:
    """`where:line: what` for each private library access in `source` (`module`: its dotted
    name, so that its classes' bases defined beside them resolve)."""
    tree = ast.parse(source)
    checker = _Checker(_table(tree, module))
    checker.visit(tree)
    return [f"{where}:{line}: {what}" for line, what in sorted(checker.found)]


PLANTED = """
import optuna
import torch
from hydra_plugins.hydra_optuna_sweeper import _impl  # flagged
from hydra_plugins.hydra_optuna_sweeper._impl import OptunaSweeperImpl  # flagged
from optuna.storages import RDBStorage
import optuna.storages._heartbeat as beats  # flagged
from kdprune.sweeping.internals import HeartbeatStorage

GRID = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"  # flagged
TPE = {"_target_": "optuna.samplers.TPESampler"}
NOT_A_PATH = "optuna._storage is a sentence, not a path"


class Storage(RDBStorage):
    def _get_stale_trial_ids(self, study_id):  # flagged
        return self._own_helper(study_id)

    def _own_helper(self, study_id):
        return study_id


class Beats(HeartbeatStorage):  # an Optuna class's private hook, through kdprune's class
    def _get_stale_trial_ids(self, study_id):  # flagged
        return []


class Grid(optuna.samplers.GridSampler):
    def __init__(self, grid):
        super().__init__(grid)
        self._all_grids = []  # flagged


class Sweeper(OptunaSweeperImpl):
    def directions(self):
        return self._get_directions()  # flagged


class Plain:  # kdprune's own class: its private names are its own, even those Optuna uses too
    def __init__(self):
        self._storage = None

    def storage(self):
        return self._storage


class Layer(torch.nn.Module):
    def has(self, name):
        return name in self._modules


def read(study, trial, ret, model):
    storage = study._storage  # flagged
    number = trial._trial_id  # flagged
    error = getattr(ret, "_return_value", None)  # flagged
    size = len(optuna.samplers.GridSampler({})._all_grids)  # flagged
    hooks = model._forward_pre_hooks
    return torch.nn.modules.conv._ConvNd, hooks, storage, number, error, size
"""


def test_the_checker_flags_exactly_the_planted_accesses() -> None:
    flagged = {int(v.split(":")[1]) for v in violations(PLANTED, "planted")}
    lines = PLANTED.splitlines()
    assert flagged == {i for i, line in enumerate(lines, 1) if line.endswith("# flagged")}


def test_the_checker_sees_what_internals_does() -> None:
    """The accesses internals.py makes are what the rule finds (it is not vacuous)."""
    found = "\n".join(violations(INTERNALS.read_text(), "internals"))
    for what in (
        "imports hydra_plugins.hydra_optuna_sweeper._impl.OptunaSweeperImpl",
        "imports optuna.storages._heartbeat.BaseHeartbeat",
        "accesses ._storage",
        "accesses ._trial_id",
        "accesses ._return_value",
        "accesses ._configure_trials",
        "getattr(..., '_backend')",
        "names hydra._internal.core_plugins.basic_sweeper.BasicSweeper",
        "overrides the library's private _get_stale_trial_ids",
    ):
        assert what in found


def test_no_private_library_access_outside_internals() -> None:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path != INTERNALS:
            parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
            module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found += violations(path.read_text(), str(path.relative_to(PACKAGE.parent)), module)
    assert found == [], "\n".join(found)
