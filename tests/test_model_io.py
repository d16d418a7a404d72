"""Pruned-model files: save -> load gives the same outputs, in this process and a fresh one."""

from pathlib import Path

import pytest
import torch
from helpers import compose
from helpers.fresh_process import outputs_in_a_fresh_process
from torch import nn

from kdprune.errors import ConfigError, KdpruneError
from kdprune.instantiation import instantiate
from kdprune.models import build
from kdprune.pruning import has_masks, load_model, plain_state_dict, read_model_file, save_model

SIZE, CLASSES = 8, 10


def model_cfg(name: str) -> dict:
    """conf/model/<name>.yaml resolved for a 3x8x8, 10-class data set, as the run saves it."""
    return compose.model_cfg(name, CLASSES, 3, SIZE)


def pruned(name: str, method: str) -> tuple[nn.Module, dict, list | None]:
    """Build model `name`, prune it with prune_method `method`; return model, cfg, history."""
    torch.manual_seed(0)
    cfg = model_cfg(name)
    model = build(cfg)
    root = compose.compose_cfg(f"prune_method={method}")
    calibration = [(torch.randn(4, 3, SIZE, SIZE), torch.randint(0, CLASSES, (4,)))]
    pruner = instantiate(root.prune_method.pruner)(
        model=model, example_inputs=torch.randn(1, 3, SIZE, SIZE), calibration=calibration
    )
    result = pruner.apply()
    return model.eval(), cfg, result.history


CASES = [("resnet20", "l1"), ("mobilenet_v2", "taylor"), ("lenet5", "l1_unstructured")]


@pytest.mark.parametrize(("name", "method"), CASES)
def test_round_trip_gives_identical_outputs(tmp_path: Path, name: str, method: str) -> None:
    model, cfg, history = pruned(name, method)
    path = save_model(tmp_path / "model.pt", model, cfg, history, extra={"method": method})
    loaded = load_model(path)
    x = torch.randn(4, 3, SIZE, SIZE)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    assert not loaded.training and not has_masks(loaded)
    expected = {key: value.shape for key, value in plain_state_dict(model).items()}
    assert {key: value.shape for key, value in loaded.state_dict().items()} == expected
    payload = read_model_file(path)
    assert payload["extra"] == {"method": method} and payload["model_cfg"] == cfg
    assert (payload["history"] == []) == (method == "l1_unstructured")
    assert not any(key.endswith(("_orig", "_mask")) for key in payload["state_dict"])
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]  # no temp file left behind


def test_concatenated_histories_of_repeated_pruning_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(0)
    cfg = model_cfg("resnet20")
    model = build(cfg)
    root = compose.compose_cfg("prune_method=l1")
    history = []
    for ratio in (0.3, 0.3):  # as gradual pruning does: a fraction of what is left each time
        factory = instantiate(root.prune_method.pruner, ratio=ratio)
        history += (
            factory(model=model, example_inputs=torch.randn(1, 3, SIZE, SIZE)).apply().history
        )
    assert model.conv1.out_channels < 16 * 0.7
    loaded = load_model(save_model(tmp_path / "m.pt", model.eval(), cfg, history))
    x = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def test_loading_inside_inference_mode_gives_a_trainable_model(tmp_path: Path) -> None:
    model, cfg, history = pruned("resnet20", "l1")
    path = save_model(tmp_path / "model.pt", model, cfg, history)
    x = torch.randn(2, 3, SIZE, SIZE)
    with torch.inference_mode():
        loaded = load_model(path)
        assert torch.equal(loaded(x), model(x))
    assert not any(p.is_inference() for p in loaded.parameters())
    loaded.train()(x).sum().backward()  # weights made in inference mode could not do this
    assert all(p.grad is not None for p in loaded.parameters())


def test_saving_does_not_touch_a_masked_model(tmp_path: Path) -> None:
    model, cfg, _ = pruned("lenet5", "l1_unstructured")
    save_model(tmp_path / "model.pt", model, cfg)
    assert has_masks(model)


@pytest.mark.slow
def test_fresh_process_loads_identical_models(tmp_path: Path) -> None:
    x = torch.randn(4, 3, SIZE, SIZE)
    expected = {}
    for name, method in CASES:
        model, cfg, history = pruned(name, method)
        save_model(tmp_path / f"{name}.pt", model, cfg, history)
        with torch.no_grad():
            expected[name] = model(x)
    names = [name for name, _ in CASES]
    outputs = outputs_in_a_fresh_process(tmp_path, x, names)
    for name in names:
        assert torch.equal(outputs[name], expected[name]), name


def test_overwrite_replaces_the_file(tmp_path: Path) -> None:
    model, cfg, history = pruned("resnet20", "l1")
    path = tmp_path / "model.pt"
    save_model(path, build(cfg), cfg)
    save_model(path, model, cfg, history)
    assert read_model_file(path)["history"] == history


def test_missing_file_raises(tmp_path: Path) -> None:
    with pytest.raises(KdpruneError, match="does not exist"):
        load_model(tmp_path / "nope.pt")


def test_corrupt_file_raises(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    path.write_bytes(b"not a torch file at all")
    with pytest.raises(KdpruneError, match="corrupt"):
        load_model(path)


def test_truncated_file_raises(tmp_path: Path) -> None:
    model, cfg, history = pruned("resnet20", "l1")
    path = save_model(tmp_path / "model.pt", model, cfg, history)
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(KdpruneError, match="corrupt"):
        load_model(path)


def test_foreign_torch_file_raises(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    torch.save({"weights": torch.ones(2)}, path)
    with pytest.raises(KdpruneError, match="not a kdprune model file"):
        load_model(path)


def test_pickled_module_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    torch.save({"format": "kdprune.model", "model": nn.Linear(2, 2)}, path)
    with pytest.raises(KdpruneError, match="corrupt"):
        load_model(path)


def test_history_that_does_not_fit_the_model_raises(tmp_path: Path) -> None:
    model, cfg, history = pruned("resnet20", "l1")
    path = save_model(
        tmp_path / "model.pt", model, {**cfg, "_target_": "kdprune.models.resnet56"}, history
    )
    with pytest.raises(KdpruneError, match="does not rebuild"):
        load_model(path)


def test_bad_arguments_are_refused(tmp_path: Path) -> None:
    model, cfg, history = pruned("resnet20", "l1")
    with pytest.raises(ConfigError, match="_target_"):
        save_model(tmp_path / "a.pt", model, {"num_classes": CLASSES}, history)
    no_shape = {k: v for k, v in cfg.items() if k != "image_size"}
    with pytest.raises(ConfigError, match="input_shape"):
        save_model(tmp_path / "b.pt", model, no_shape, history)
    with pytest.raises(TypeError):
        save_model(tmp_path / "c.pt", model, cfg, history, extra={"tensor": torch.ones(1)})
    assert not any(tmp_path.iterdir())


def test_explicit_input_shape_is_stored(tmp_path: Path) -> None:
    model, cfg, history = pruned("resnet20", "l1")
    path = save_model(tmp_path / "m.pt", model, cfg, history, input_shape=(1, 3, 16, 16))
    assert read_model_file(path)["input_shape"] == [1, 3, 16, 16]
    x = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        assert torch.equal(load_model(path)(x), model(x))
