"""kdprune: compare and search ways of combining pruning and knowledge distillation."""

from typing import Any

__all__ = ["load_model"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    """`kdprune.load_model`, imported on first use (PEP 562): the command line's checks and
    `--help` must not pay for torch, which every `import kdprune.<module>` would otherwise load."""
    if name == "load_model":
        from kdprune.pruning.io import load_model

        return load_model
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
