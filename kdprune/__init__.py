"""kdprune: compare and search ways of combining pruning and knowledge distillation."""

from kdprune.pruning.io import load_model

__all__ = ["load_model"]
__version__ = "0.1.0"
