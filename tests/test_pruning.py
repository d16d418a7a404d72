"""Every prune_method config reaches its target on lenet5, resnet20 and mobilenet_v2.

Bad input fails with ConfigError; the ledger measurements (kdprune.metrics) are checked too.
"""

import math
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from helpers.compose import group_node
from omegaconf import open_dict
from torch import nn
from torch.nn import functional as F

from kdprune.errors import ConfigError
from kdprune.instantiation import instantiate
from kdprune.metrics import (
    LEDGER_KEYS,
    channel_ratio,
    count_macs_params,
    cpu_latency_ms,
    file_size_bytes,
    latency,
    ledger,
    nonzero_fraction,
)
from kdprune.models import classifier_path, lenet5, mobilenet_v2, resnet20
from kdprune.paths import group_options
from kdprune.pruning import (
    BNScaleSparsity,
    EveryOtherPruningMethod,
    GradientCalibration,
    PruneResult,
    SquaredGradientCalibration,
    UnstructuredPruner,
    clone_model,
    has_masks,
    make_permanent,
    validate,
)

METHODS = group_options("prune_method")
STRUCTURED = ["l1", "l2", "bn_scale", "taylor", "hessian", "fpgm", "random"]
MASKING = ["l1_unstructured", "global_unstructured", "ln_structured", "every_other"]
SIZE, CLASSES = 8, 10
BUILDERS: dict[str, Callable[..., nn.Module]] = {
    "lenet5": lenet5,
    "resnet20": resnet20,
    "mobilenet_v2": mobilenet_v2,
}
TOLERANCE = 0.02


def compose(method: str, **overrides: Any) -> Any:
    """The `prune_method` node of conf/ composed with prune_method=<method>."""
    return group_node("prune_method", method, **overrides)


def build(name: str) -> nn.Module:
    torch.manual_seed(0)
    return BUILDERS[name](CLASSES, 3, SIZE)


def example() -> torch.Tensor:
    return torch.randn(1, 3, SIZE, SIZE)


def calibration() -> list[tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(1)
    return [
        (
            torch.randn(4, 3, SIZE, SIZE, generator=gen),
            torch.randint(0, CLASSES, (4,), generator=gen),
        )
        for _ in range(2)
    ]


def make_pruner(method: str, model: nn.Module, **overrides: Any) -> Any:
    cfg = compose(method, **overrides)
    validate(cfg)
    factory = instantiate(cfg.pruner)
    return factory(model=model, example_inputs=example(), calibration=calibration())


def prune(method: str, model_name: str, **overrides: Any) -> tuple[nn.Module, nn.Module, Any]:
    """Return (dense copy, pruned model, PruneResult)."""
    model = build(model_name)
    dense = clone_model(model)
    result = make_pruner(method, model, **overrides).apply()
    return dense, model, result


def assert_runs(model: nn.Module) -> None:
    model.eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, SIZE, SIZE))
    assert out.shape == (2, CLASSES)
    assert torch.isfinite(out).all()
    assert model.get_submodule(classifier_path(model)).out_features == CLASSES


@pytest.mark.parametrize("method", METHODS)
def test_every_config_validates(method: str) -> None:
    cfg = compose(method)
    validate(cfg)
    assert 0 <= cfg.ratio < 1 and cfg.unit in ("channels", "params", "macs")


@pytest.mark.parametrize("model_name", list(BUILDERS))
@pytest.mark.parametrize("method", STRUCTURED)
def test_structured_removes_half_the_channels(method: str, model_name: str) -> None:
    if method == "bn_scale" and model_name == "lenet5":
        with pytest.raises(ConfigError, match="BatchNorm"):
            make_pruner(method, build(model_name))
        return
    dense, model, result = prune(method, model_name)
    assert isinstance(result, PruneResult) and result.history and result.pruning_ratio == 0.5
    assert abs(channel_ratio(dense, model) - 0.5) <= 0.05
    macs_before, params_before = count_macs_params(dense, example())
    macs_after, params_after = count_macs_params(model, example())
    assert macs_after < 0.6 * macs_before and params_after < 0.6 * params_before
    assert_runs(model)


@pytest.mark.parametrize("unit", ["params", "macs"])
@pytest.mark.parametrize(
    ("method", "model_name", "allocation"),
    [
        ("l1", "lenet5", "uniform"),
        ("l1", "resnet20", "uniform"),
        ("l1", "mobilenet_v2", "uniform"),
        ("l2", "resnet20", "global"),
        ("taylor", "resnet20", "uniform"),
    ],
)
def test_params_and_macs_targets_are_reached(
    method: str, model_name: str, allocation: str, unit: str
) -> None:
    dense, model, result = prune(method, model_name, unit=unit, allocation=allocation, ratio=0.4)
    index = 0 if unit == "macs" else 1
    before = count_macs_params(dense, example())[index]
    after = count_macs_params(model, example())[index]
    assert abs((1 - after / before) - 0.4) <= TOLERANCE
    assert 0 < result.pruning_ratio < 0.4  # the channel ratio needed is smaller than the target
    assert_runs(model)


def test_iterative_steps_and_round_to_keep_channel_multiples() -> None:
    dense, model, result = prune("l1", "resnet20", ratio=0.3, iterative_steps=3, round_to=4)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert all(conv.out_channels % 4 == 0 for conv in convs)
    assert 0.2 <= channel_ratio(dense, model) <= 0.4
    assert_runs(model)


def test_ignored_layers_keep_their_channels() -> None:
    _, model, _ = prune("l1", "resnet20", ignored_layers=["layer1"])
    assert all(m.out_channels == 16 for m in model.layer1.modules() if isinstance(m, nn.Conv2d))
    assert model.layer3[0].conv1.out_channels == 32
    assert_runs(model)


def test_zero_ratio_changes_nothing() -> None:
    dense, model, result = prune("l1", "resnet20", ratio=0.0)
    assert result.history == [] and channel_ratio(dense, model) == 0.0


def test_structured_pruning_keeps_bn_statistics_and_train_mode() -> None:
    model = build("resnet20").train()
    model.bn1.running_mean.copy_(torch.arange(16.0))
    make_pruner("taylor", model, ratio=0.25).apply()  # traces and backpropagates on copies
    assert model.training and model.layer1[0].training
    kept = model.bn1.running_mean
    assert len(kept) == 12 and set(kept.tolist()) <= set(range(16))  # kept rows, none updated


@pytest.mark.parametrize("model_name", list(BUILDERS))
@pytest.mark.parametrize("method", ["l1_unstructured", "global_unstructured"])
def test_unstructured_zeroes_the_ratio_of_weights(method: str, model_name: str) -> None:
    dense, model, result = prune(method, model_name, ratio=0.6)
    classifier = classifier_path(model)
    assert result.history is None and has_masks(model)
    assert abs(nonzero_fraction(model, ignored=(classifier,)) - 0.4) <= 0.01
    assert not hasattr(model.get_submodule(classifier), "weight_mask")
    assert count_macs_params(model, example()) == count_macs_params(dense, example())
    assert_runs(model)


@pytest.mark.parametrize("model_name", list(BUILDERS))
def test_ln_structured_masks_whole_channels(model_name: str) -> None:
    dense, model, _ = prune("ln_structured", model_name)
    classifier = classifier_path(model)
    assert abs(nonzero_fraction(model, ignored=(classifier,)) - 0.5) <= 0.05
    conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d) and m.out_channels > 3)
    dead = (conv.weight.flatten(1).abs().sum(1) == 0).float().mean().item()
    assert dead == pytest.approx(round(0.5 * conv.out_channels) / conv.out_channels)
    assert channel_ratio(dense, model) == 0.0  # nothing removed
    assert_runs(model)


@pytest.mark.parametrize("model_name", list(BUILDERS))
def test_every_other_masks_half_of_each_weight(model_name: str) -> None:
    _, model, _ = prune("every_other", model_name)
    classifier = classifier_path(model)
    masked = 0
    for path, module in model.named_modules():
        if isinstance(module, nn.Conv2d | nn.Linear) and path != classifier:
            mask = module.weight_mask.flatten()
            assert (mask[::2] == 0).all() and (mask[1::2] == 1).all()
            masked += 1
    assert masked > 0 and not hasattr(model.get_submodule(classifier), "weight_mask")
    assert_runs(model)


def test_a_custom_method_plugs_in_as_a_class() -> None:
    model = build("lenet5")
    UnstructuredPruner(model, method=EveryOtherPruningMethod, ratio=0.5).apply()
    assert model.fc1.weight.flatten()[::2].abs().sum() == 0


def test_make_permanent_keeps_outputs_and_drops_masks() -> None:
    _, model, _ = prune("l1_unstructured", "lenet5")
    x = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        before = model(x)
    assert make_permanent(model) == 4  # layer1, layer2, fc1, fc2; fc3 is the classifier
    assert not has_masks(model) and not any(k.endswith("_mask") for k in model.state_dict())
    with torch.no_grad():
        assert torch.equal(model(x), before)
    assert abs(nonzero_fraction(model, ignored=("fc3",)) - 0.5) <= 0.01


def test_bn_scale_regularizer_adds_l1_subgradient() -> None:
    model = build("resnet20")
    pruner = make_pruner("bn_scale", model, sparsity_reg=1e-2)
    nn.functional.cross_entropy(model(torch.randn(4, 3, SIZE, SIZE)), torch.arange(4)).backward()
    grad = model.bn1.weight.grad.clone()
    pruner.regularize(model)
    assert torch.allclose(model.bn1.weight.grad - grad, 1e-2 * torch.sign(model.bn1.weight))
    BNScaleSparsity(reg=0.0).regularize(model)  # off: no change
    assert torch.allclose(model.bn1.weight.grad - grad, 1e-2 * torch.sign(model.bn1.weight))


def test_non_bn_methods_do_not_regularize() -> None:
    model = build("resnet20")
    pruner = make_pruner("l1", model)
    nn.functional.cross_entropy(model(torch.randn(4, 3, SIZE, SIZE)), torch.arange(4)).backward()
    grads = [p.grad.clone() for p in model.parameters()]
    pruner.regularize(model)
    assert all(torch.equal(p.grad, g) for p, g in zip(model.parameters(), grads, strict=True))


@pytest.mark.parametrize(
    ("method", "overrides", "match"),
    [
        ("l1", {"ratio": 1.0}, r"\[0, 1\)"),
        ("l1", {"ratio": -0.1}, r"\[0, 1\)"),
        ("l1", {"ratio": "half"}, "number"),
        ("l1", {"unit": "flops"}, "unit"),
        ("l1", {"allocation": "layerwise"}, "allocation"),
        ("l1", {"ratio": 0.95}, "max_layer_ratio"),
        ("l1", {"max_layer_ratio": 1.0}, "max_layer_ratio"),
        ("l1", {"iterative_steps": 0}, "iterative_steps"),
        ("l1_unstructured", {"unit": "macs"}, "unit must be params"),
        ("ln_structured", {"unit": "params"}, "unit must be channels"),
        ("ln_structured", {"allocation": "global"}, "unstructured method"),
        ("every_other", {"ratio": 0.3}, "always prunes"),
    ],
)
def test_bad_config_is_rejected_without_a_model(method: str, overrides: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        validate(compose(method, **overrides))


def test_method_amount_comes_from_ratio_only() -> None:
    cfg = compose("l1_unstructured")
    with open_dict(cfg):
        cfg.pruner.method.amount = 0.3
    with pytest.raises(ConfigError, match="set ratio instead"):
        validate(cfg)


def test_ratio_override_at_instantiation_reaches_the_method() -> None:
    model = build("lenet5")
    factory = instantiate(compose("l1_unstructured").pruner, ratio=0.3)
    factory(model=model, example_inputs=example()).apply()
    assert abs(nonzero_fraction(model, ignored=("fc3",)) - 0.7) <= 0.01


def test_repeated_masking_prunes_a_fraction_of_what_is_left() -> None:
    model = build("resnet20")
    for _ in range(2):
        make_pruner("global_unstructured", model, ratio=0.5).apply()
    assert abs(nonzero_fraction(model, ignored=("fc",)) - 0.25) <= 0.01


def test_validate_rejects_unknown_target() -> None:
    cfg = compose("l1")
    cfg.pruner.importance._target_ = "torch_pruning.importance.NoSuchImportance"
    with pytest.raises(ConfigError, match="cannot be built"):
        validate(cfg)


@pytest.mark.parametrize("method", ["l1", "l1_unstructured"])
def test_nothing_left_to_prune_is_rejected(method: str) -> None:
    with pytest.raises(ConfigError, match="nothing left to prune"):
        make_pruner(method, build("lenet5"), ignored_layers=["layer1", "layer2", "fc1", "fc2"])


def test_unknown_ignored_layer_is_rejected() -> None:
    with pytest.raises(ConfigError, match="not a module"):
        make_pruner("l1", build("resnet20"), ignored_layers=["layer9"])


def test_rounded_macs_target_is_found_where_the_cap_would_round_to_nothing() -> None:
    # With round_to=16 a 16-channel layer can only stay whole, and a 32-channel one cut at the cap
    # (keeping 3.2 channels) rounds to nothing and stays whole too: the reduction is not monotone
    # in the channel ratio, and a check at the cap alone would call 45% out of reach.
    dense, model, _ = prune("l1", "resnet20", unit="macs", ratio=0.45, round_to=16)
    widths = [m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert all(w % 16 == 0 for w in widths)
    before, after = (count_macs_params(m, example())[0] for m in (dense, model))
    assert abs((1 - after / before) - 0.45) <= TOLERANCE
    assert_runs(model)


def test_rounded_macs_target_out_of_reach_names_the_rounding() -> None:
    with pytest.raises(ConfigError, match=r"round_to=16 removes at most 4\d\.\d%"):
        make_pruner("l1", build("resnet20"), unit="macs", ratio=0.75, round_to=16)


def test_unreachable_params_target_is_rejected_before_pruning() -> None:
    model = build("resnet20")
    with pytest.raises(ConfigError, match="cannot be reached"):
        make_pruner("l1", model, unit="params", ratio=0.9, max_layer_ratio=0.3)
    assert model.conv1.out_channels == 16


def test_gradient_criteria_need_calibration() -> None:
    factory = instantiate(compose("taylor").pruner)
    with pytest.raises(ConfigError, match="calibration"):
        factory(model=build("resnet20"), example_inputs=example())


def test_structured_pruning_refuses_masked_models() -> None:
    _, model, _ = prune("l1_unstructured", "resnet20")
    with pytest.raises(ConfigError, match="make_permanent"):
        make_pruner("l1", model)


def test_metrics_respect_masks_and_count_channels() -> None:
    model = build("lenet5")
    dense = clone_model(model)
    assert nonzero_fraction(model) == 1.0
    make_pruner("every_other", model).apply()
    # every other weight of layer1, layer2, fc1, fc2; fc3 (the classifier) stays dense
    sizes = [m.weight.numel() for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    masked = sum(math.ceil(n / 2) for n in sizes[:-1])
    assert nonzero_fraction(model) == pytest.approx(1 - masked / sum(sizes))
    assert channel_ratio(dense, model) == 0.0
    _, pruned, _ = prune("l1", "lenet5")
    assert channel_ratio(dense, pruned) == pytest.approx(1 - (3 + 8) / (6 + 16))


def test_count_macs_params_matches_a_hand_count() -> None:
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.Flatten(), nn.Linear(256, 5)
    )
    macs, params = count_macs_params(model, example())
    assert params == 3 * 4 * 9 + 256 * 5 + 5
    assert macs == 3 * 4 * 9 * SIZE * SIZE + 256 * 5 + 5  # Torch-Pruning counts the bias adds


def test_cpu_latency_and_file_size(tmp_path: Path, monkeypatch) -> None:
    # The clock the measurement reads, not this machine's speed: the three timed forwards take
    # 4, 1 and 2 ms on it, so the median is 2 ms whatever the CPU and its load.
    ticks = iter([0.0, 0.004, 1.0, 1.001, 2.0, 2.002])
    monkeypatch.setattr(latency, "time", SimpleNamespace(perf_counter=lambda: next(ticks)))
    model = build("lenet5")
    ms = cpu_latency_ms(model, (3, SIZE, SIZE), batch_size=2, repeats=3, warmup=1, num_threads=1)
    assert ms == pytest.approx(2.0) and next(ticks, None) is None  # each forward timed once
    path = tmp_path / "blob.bin"
    path.write_bytes(b"x" * 123)
    assert file_size_bytes(path) == 123


def test_ledger_has_the_documented_keys() -> None:
    dense, model, _ = prune("l1", "resnet20")
    row = ledger(dense, model, example(), latency_batch_sizes=(1, 64), repeats=2, warmup=1)
    assert set(row) == set(LEDGER_KEYS)
    assert row["params_after"] < row["params_before"]
    assert row["params_removed_fraction"] == pytest.approx(
        1 - row["params_after"] / row["params_before"]
    )
    assert row["macs_speedup"] > 2 and row["channel_ratio"] == pytest.approx(0.5, abs=0.05)
    assert row["nonzero_fraction"] > 0.99
    assert all(row[k] > 0 for k in LEDGER_KEYS if k.startswith(("cpu_latency", "cpu_speedup")))


def test_pruning_works_inside_no_grad() -> None:
    model = build("resnet20")
    with torch.no_grad():
        make_pruner("taylor", model).apply()
    assert model.conv1.out_channels == 8


def test_squared_gradient_calibration_is_the_mean_per_sample_squared_gradient() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2)).train()
    batches = [
        (torch.randn(3, 3), torch.tensor([0, 1, 1])),
        (torch.randn(3, 3), torch.tensor([1, 0, 0])),
    ]
    SquaredGradientCalibration(num_batches=2, max_samples=5)(model, batches, F.cross_entropy)
    assert model.training  # mode restored
    samples = [(x[i : i + 1], y[i : i + 1]) for x, y in batches for i in range(len(x))][:5]
    expected = torch.zeros_like(model[0].weight)
    model.eval()
    for x, y in samples:
        grad = torch.autograd.grad(F.cross_entropy(model(x), y), model[0].weight)[0]
        expected += grad.pow(2) / len(samples)
    assert torch.allclose(model[0].weight.grad, expected, atol=1e-7)


def test_gradient_calibration_sums_batch_gradients() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 2))
    batches = [(torch.randn(4, 3), torch.randint(0, 2, (4,))) for _ in range(3)]
    GradientCalibration(num_batches=2)(model, batches, F.cross_entropy)
    loss = sum(F.cross_entropy(model(x), y) for x, y in batches[:2])
    expected = torch.autograd.grad(loss, model[0].weight)[0]
    assert torch.allclose(model[0].weight.grad, expected)
