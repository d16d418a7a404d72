"""Feature maps by module path: checking paths before training and capturing outputs with hooks."""

from __future__ import annotations

import difflib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from kdprune.errors import ConfigError


def _suggestions(model: nn.Module, path: str, limit: int = 6) -> list[str]:
    """Return a few module paths of `model` close to `path`, else its top-level children."""
    names = [name for name, _ in model.named_modules() if name]
    close = difflib.get_close_matches(path, names, n=limit, cutoff=0.5)
    if close:
        return close
    return [name for name, _ in model.named_children()][:limit]


def check_layers(model: nn.Module, paths: Sequence[str], key: str = "kd layers") -> None:
    """Raise `ConfigError` if any of `paths` is not a submodule path of `model`."""
    if isinstance(paths, str):
        raise ConfigError(f"{key} must be a list of module paths, got the string {paths!r}.")
    for path in paths:
        try:
            model.get_submodule(str(path))
        except AttributeError:
            valid = ", ".join(_suggestions(model, str(path))) or "(the model has no submodules)"
            raise ConfigError(
                f"{key} names {str(path)!r}, which is not a module of "
                f"{type(model).__name__}; valid paths include: {valid}."
            ) from None


@contextmanager
def capture_features(model: nn.Module, paths: Sequence[str]) -> Iterator[dict[str, Tensor]]:
    """Hook the modules at `paths`; yield a dict that each forward fills with path -> output.

    A module called several times in one forward keeps the output of its last call. The hooks
    are removed when the block exits, also on an exception.
    """
    check_layers(model, paths)
    features: dict[str, Tensor] = {}
    handles = []

    def make_hook(path: str):
        def hook(module: nn.Module, inputs: object, output: object) -> None:
            if not isinstance(output, Tensor):
                raise TypeError(
                    f"module {path!r} ({type(module).__name__}) returned "
                    f"{type(output).__name__}, not a tensor; pick a module that outputs a tensor"
                )
            features[path] = output

        return hook

    try:
        for path in paths:
            module = model.get_submodule(str(path))
            handles.append(module.register_forward_hook(make_hook(str(path))))
        yield features
    finally:
        for handle in handles:
            handle.remove()


def collect(features: dict[str, Tensor], paths: Sequence[str], role: str) -> list[Tensor]:
    """Return the captured outputs in the order of `paths`, failing clearly on a missing one."""
    missing = [str(p) for p in paths if str(p) not in features]
    if missing:
        raise RuntimeError(
            f"the {role}'s forward never called the module(s) {missing}; "
            f"choose layers that the forward pass uses"
        )
    return [features[str(p)] for p in paths]


def probe_feature_shapes(
    model: nn.Module, paths: Sequence[str], example_input: Tensor
) -> list[torch.Size]:
    """Run one forward on `example_input` without grad and return the shapes at `paths`.

    The model is run in eval mode, so batch-norm running statistics are not touched, and each
    submodule's train/eval flag is restored afterwards.
    """
    modes = [(module, module.training) for module in model.modules()]
    param = next(model.parameters(), None)
    x = example_input if param is None else example_input.to(param.device)
    try:
        model.eval()
        with torch.no_grad(), capture_features(model, paths) as features:
            model(x)
        return [f.shape for f in collect(features, paths, type(model).__name__)]
    finally:
        for module, training in modes:
            module.training = training
