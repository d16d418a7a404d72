"""ONNX export: a pruned model file exports, and ONNX Runtime reproduces PyTorch's logits."""

from pathlib import Path

import numpy as np
import pytest
import torch
import torch_pruning as tp

from kdprune import load_model
from kdprune.errors import KdpruneError
from kdprune.export import export_onnx, ort_session
from kdprune.pruning import StructuredPruner, save_model

CFG = {
    "_target_": "kdprune.models.lenet5",
    "num_classes": 10,
    "in_channels": 1,
    "image_size": 8,
    "widths": [8, 16],
    "hidden": [32, 16],
}


@pytest.fixture
def pruned_file(tmp_path: Path) -> Path:
    """A lenet5 with half its channels removed, saved as a kdprune model file."""
    from kdprune.instantiation import instantiate

    torch.manual_seed(0)
    model = instantiate(CFG)
    pruner = StructuredPruner(
        model,
        torch.randn(1, 1, 8, 8),
        importance=tp.importance.GroupMagnitudeImportance(p=1),
        ratio=0.5,
    )
    history = pruner.apply().history
    assert model.layer1[0].out_channels == 4  # really pruned
    return save_model(tmp_path / "model.pt", model.eval(), CFG, history)


def ort_logits(path: Path, x: torch.Tensor) -> np.ndarray:
    return ort_session(path).run(["logits"], {"input": x.numpy()})[0]


def test_dynamic_batch_export_matches_torch(pruned_file: Path, tmp_path: Path) -> None:
    out = export_onnx(pruned_file, tmp_path / "onnx" / "model.onnx")
    assert out == tmp_path / "onnx" / "model.onnx" and out.is_file()
    model = load_model(pruned_file)
    for batch in (1, 5):
        x = torch.randn(batch, 1, 8, 8)
        with torch.inference_mode():
            expected = model(x).numpy()
        got = ort_logits(out, x)
        assert got.shape == (batch, 10)
        assert np.abs(got - expected).max() < 1e-4
    assert [p.name for p in out.parent.iterdir()] == ["model.onnx"]  # no temporary file left


def test_fixed_batch_export_has_a_static_input(pruned_file: Path, tmp_path: Path) -> None:
    out = export_onnx(pruned_file, tmp_path / "fixed.onnx", batch_size=4)
    (input_meta,) = ort_session(out).get_inputs()
    assert input_meta.shape == [4, 1, 8, 8]
    x, model = torch.randn(4, 1, 8, 8), load_model(pruned_file)
    with torch.inference_mode():
        expected = model(x).numpy()
    assert np.abs(ort_logits(out, x) - expected).max() < 1e-4


def test_missing_model_file_writes_nothing(tmp_path: Path) -> None:
    with pytest.raises(KdpruneError, match="does not exist"):
        export_onnx(tmp_path / "nope.pt", tmp_path / "out.onnx")
    assert not any(tmp_path.iterdir())
