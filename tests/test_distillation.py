"""Tests for kdprune.distillation: loss values, frozen teacher, caching, hooks and kd configs."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from helpers.compose import compose_cfg
from omegaconf import OmegaConf
from torch import nn

from kdprune.distillation import (
    AttentionObjective,
    AttentionTransferLoss,
    CrossEntropyObjective,
    FitNetLoss,
    FitNetObjective,
    HintonObjective,
    KDLoss,
    Objective,
    capture_features,
    check_layers,
    compute_teacher_logits,
    validate_kd,
)
from kdprune.errors import ConfigError
from kdprune.instantiation import instantiate

STUDENT_LOGITS = torch.tensor([[1.0, 2.0, 0.5], [0.1, -1.0, 0.3]])
TEACHER_LOGITS = torch.tensor([[0.5, 1.5, 2.0], [1.0, 0.0, -0.5]])
TARGETS = torch.tensor([1, 2])


def hand_softmax(z: torch.Tensor) -> torch.Tensor:
    e = z.double().exp()
    return e / e.sum(dim=1, keepdim=True)


def hand_kl(s: torch.Tensor, t: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(p_t || p_s) at temperature T, summed over classes, averaged over the batch."""
    p_s, p_t = hand_softmax(s / temperature), hand_softmax(t / temperature)
    return (p_t * (p_t.log() - p_s.log())).sum() / s.shape[0]


def hand_ce(s: torch.Tensor, y: torch.Tensor, smoothing: float = 0.0) -> torch.Tensor:
    log_p = hand_softmax(s).log()
    nll = -log_p[torch.arange(len(y)), y]
    uniform = -log_p.mean(dim=1)
    return ((1 - smoothing) * nll + smoothing * uniform).mean()


class TinyNet(nn.Module):
    """A CIFAR-ResNet-shaped conv net (stem, layer1..3, fc) small enough for unit tests."""

    def __init__(self, width: int = 4, num_classes: int = 3) -> None:
        super().__init__()
        w = width
        self.stem = nn.Conv2d(3, w, 3, padding=1)
        self.layer1 = nn.Sequential(nn.Conv2d(w, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU())
        self.layer2 = nn.Sequential(
            nn.Conv2d(w, 2 * w, 3, stride=2, padding=1), nn.BatchNorm2d(2 * w), nn.ReLU()
        )
        self.layer3 = nn.Sequential(
            nn.Conv2d(2 * w, 4 * w, 3, stride=2, padding=1), nn.BatchNorm2d(4 * w), nn.ReLU()
        )
        self.fc = nn.Linear(4 * w, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer3(self.layer2(self.layer1(self.stem(x))))
        return self.fc(x.mean(dim=(2, 3)))


@pytest.fixture
def nets() -> tuple[TinyNet, TinyNet]:
    torch.manual_seed(0)
    return TinyNet(width=2), TinyNet(width=4)


@pytest.fixture
def batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(10, 3, 8, 8, generator=gen)
    y = torch.randint(0, 3, (10,), generator=gen)
    return x, y, torch.arange(10)


def count_calls(module: nn.Module) -> list[int]:
    calls = [0]

    def hook(*_: object) -> None:
        calls[0] += 1

    module.register_forward_hook(hook)
    return calls


# --- KDLoss -------------------------------------------------------------------------------------


def test_kd_loss_matches_hand_computation() -> None:
    t, a = 2.0, 0.7
    loss = KDLoss(temperature=t, alpha=a)(STUDENT_LOGITS, TEACHER_LOGITS, TARGETS)
    expected = a * t * t * hand_kl(STUDENT_LOGITS, TEACHER_LOGITS, t) + (1 - a) * hand_ce(
        STUDENT_LOGITS, TARGETS
    )
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_kd_loss_label_smoothing_matches_hand_computation() -> None:
    t, a, eps = 3.0, 0.5, 0.1
    loss = KDLoss(t, a, label_smoothing=eps)(STUDENT_LOGITS, TEACHER_LOGITS, TARGETS)
    expected = a * t * t * hand_kl(STUDENT_LOGITS, TEACHER_LOGITS, t) + (1 - a) * hand_ce(
        STUDENT_LOGITS, TARGETS, eps
    )
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


@pytest.mark.parametrize("smoothing", [0.0, 0.2])
def test_kd_loss_alpha_zero_is_cross_entropy_exactly(smoothing: float) -> None:
    loss = KDLoss(4.0, 0.0, smoothing)(STUDENT_LOGITS, TEACHER_LOGITS, TARGETS)
    assert torch.equal(loss, F.cross_entropy(STUDENT_LOGITS, TARGETS, label_smoothing=smoothing))


def test_kd_loss_alpha_one_is_t_squared_kl() -> None:
    t = 4.0
    kd = KDLoss(t, 1.0)
    loss = kd(STUDENT_LOGITS, TEACHER_LOGITS, TARGETS)
    expected = t * t * hand_kl(STUDENT_LOGITS, TEACHER_LOGITS, t)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    # the labels play no part at alpha = 1
    assert torch.equal(loss, kd(STUDENT_LOGITS, TEACHER_LOGITS, torch.tensor([0, 0])))


def test_kd_loss_scale_does_not_jump_at_the_edges() -> None:
    def loss(alpha: float) -> float:
        return KDLoss(4.0, alpha)(STUDENT_LOGITS, TEACHER_LOGITS, TARGETS).item()

    assert loss(1e-6) == pytest.approx(loss(0.0), abs=1e-5)
    assert loss(1 - 1e-6) == pytest.approx(loss(1.0), abs=1e-5)
    # and T^2 is really there at alpha = 1: the KD term is much larger than the bare KL
    assert loss(1.0) > 10 * hand_kl(STUDENT_LOGITS, TEACHER_LOGITS, 4.0).item()


def test_kd_loss_zero_when_student_equals_teacher_at_alpha_one() -> None:
    loss = KDLoss(4.0, 1.0)(TEACHER_LOGITS, TEACHER_LOGITS.clone(), TARGETS)
    assert loss.item() == pytest.approx(0.0, abs=1e-7)


@pytest.mark.parametrize(
    ("temperature", "alpha", "smoothing", "message"),
    [
        (-1.0, 0.5, 0.0, "kd.temperature must be > 0, got -1.0"),
        (0.0, 0.5, 0.0, "kd.temperature must be > 0"),
        (4.0, 1.5, 0.0, r"kd.alpha must be in \[0, 1\], got 1.5"),
        (4.0, -0.1, 0.0, r"kd.alpha must be in \[0, 1\]"),
        (4.0, 0.5, 1.0, r"label_smoothing must be in \[0, 1\)"),
    ],
)
def test_kd_loss_rejects_bad_hyperparameters(
    temperature: float, alpha: float, smoothing: float, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        KDLoss(temperature, alpha, smoothing)


# --- Objectives with a running or cached teacher --------------------------------------------------


def test_cross_entropy_objective_ignores_the_teacher(nets, batch) -> None:
    student, teacher = nets
    x, y, idx = batch
    objective = CrossEntropyObjective(0.1, student=student, teacher=teacher)
    calls = count_calls(teacher)
    loss, logits = objective(student, x, y, idx)
    assert torch.equal(loss, F.cross_entropy(logits, y, label_smoothing=0.1))
    assert calls[0] == 0 and objective.extra_parameters() == []
    assert isinstance(objective, Objective)


def test_hinton_gradient_reaches_student_not_teacher(nets, batch) -> None:
    student, teacher = nets
    x, y, idx = batch
    objective = HintonObjective(temperature=4.0, alpha=0.9, student=student, teacher=teacher)
    teacher.train()  # e.g. an engine that calls .train() on everything it sees
    student.train()
    loss, logits = objective(student, x, y, idx)
    loss.backward()
    assert logits.shape == (10, 3)
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in student.parameters())
    assert all(p.grad is None and not p.requires_grad for p in teacher.parameters())
    assert not teacher.training
    assert not any(m.training for m in teacher.modules())


def test_cached_teacher_logits_give_the_same_loss(nets, batch) -> None:
    student, teacher = nets
    x, y, _ = batch
    cache = compute_teacher_logits(teacher, x, batch_size=3)
    dataset_cache = compute_teacher_logits(
        teacher, torch.utils.data.TensorDataset(x, y), batch_size=4
    )
    assert cache.shape == (10, 3)
    assert torch.allclose(cache, dataset_cache)

    idx = torch.tensor([7, 2, 5])
    running = HintonObjective(temperature=2.0, alpha=0.5, student=student, teacher=teacher)
    cached = HintonObjective(
        temperature=2.0, alpha=0.5, student=student, teacher=teacher, teacher_logits=cache
    )
    student.eval()
    calls = count_calls(teacher)
    loss_cached, _ = cached(student, x[idx], y[idx], idx)
    assert calls[0] == 0  # the cache replaces the teacher's forward
    loss_running, _ = running(student, x[idx], y[idx], idx)
    assert calls[0] == 1
    assert loss_cached.item() == pytest.approx(loss_running.item(), rel=1e-5)


def test_hinton_alpha_zero_skips_the_teacher_and_is_ce(nets, batch) -> None:
    student, teacher = nets
    x, y, idx = batch
    objective = HintonObjective(temperature=4.0, alpha=0.0, student=student, teacher=teacher)
    calls = count_calls(teacher)
    loss, logits = objective(student, x, y, idx)
    assert calls[0] == 0
    assert torch.equal(loss, F.cross_entropy(logits, y))


def test_hinton_needs_a_teacher_when_alpha_is_positive(nets) -> None:
    student, _ = nets
    with pytest.raises(ConfigError, match="no teacher"):
        HintonObjective(temperature=4.0, alpha=0.5, student=student)


def test_teacher_must_not_be_the_student(nets) -> None:
    student, _ = nets
    with pytest.raises(ValueError, match="same module"):
        HintonObjective(temperature=4.0, alpha=0.5, student=student, teacher=student)


# --- Feature hooks -----------------------------------------------------------------------------


def test_capture_features_records_outputs_and_removes_hooks(nets, batch) -> None:
    student, _ = nets
    x, _, _ = batch
    with capture_features(student, ["layer1", "layer3.0"]) as features:
        student(x)
    assert features["layer1"].shape == (10, 2, 8, 8)
    assert features["layer3.0"].shape == (10, 8, 2, 2)
    assert all(not m._forward_hooks for m in student.modules())

    with pytest.raises(RuntimeError, match="boom"), capture_features(student, ["layer2"]):
        raise RuntimeError("boom")
    assert all(not m._forward_hooks for m in student.modules())


def test_check_layers_names_the_bad_path_and_valid_ones(nets) -> None:
    student, _ = nets
    check_layers(student, ["layer1", "layer2.0", "fc"])
    with pytest.raises(ConfigError, match=r"'layer4'.*valid paths include: .*layer1") as info:
        check_layers(student, ["layer2", "layer4"], "kd.student_layers")
    assert str(info.value).startswith("kd.student_layers names 'layer4'")


def test_bad_layer_path_fails_in_the_constructor(nets) -> None:
    student, teacher = nets
    with pytest.raises(ConfigError, match="kd.teacher_layers names 'layer9'"):
        AttentionObjective(
            temperature=4.0,
            alpha=0.0,
            beta=1000.0,
            p=2.0,
            student_layers=["layer1"],
            teacher_layers=["layer9"],
            student=student,
            teacher=teacher,
        )
    with pytest.raises(ConfigError, match="pair up one to one"):
        AttentionObjective(
            temperature=4.0,
            alpha=0.0,
            beta=1000.0,
            p=2.0,
            student_layers=["layer1", "layer2"],
            teacher_layers=["layer1"],
            student=student,
            teacher=teacher,
        )


# --- Attention transfer ---------------------------------------------------------------------------


def test_attention_loss_matches_hand_computation() -> None:
    f_s = torch.tensor([[[[1.0, 2.0]], [[3.0, 0.0]]]])  # (1, 2, 1, 2)
    f_t = torch.tensor([[[[0.0, 1.0]], [[1.0, 1.0]], [[2.0, 0.0]]]])  # (1, 3, 1, 2)
    q_s = torch.tensor([(1 + 9) / 2, (4 + 0) / 2])
    q_t = torch.tensor([(0 + 1 + 4) / 3, (1 + 1 + 0) / 3])
    a_s, a_t = q_s / q_s.pow(2).sum().sqrt(), q_t / q_t.pow(2).sum().sqrt()
    expected = 1000.0 / 2 * ((a_s - a_t) ** 2).mean()
    loss = AttentionTransferLoss(beta=1000.0, p=2.0)([f_s], [f_t])
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_attention_loss_zero_for_equal_features_positive_otherwise() -> None:
    gen = torch.Generator().manual_seed(2)
    f1, f2 = torch.randn(4, 6, 5, 5, generator=gen), torch.randn(4, 6, 5, 5, generator=gen)
    at = AttentionTransferLoss()
    assert at([f1, f2], [f1.clone(), f2.clone()]).item() == pytest.approx(0.0, abs=1e-9)
    assert at([f1], [f2]).item() > 0
    # different channel counts and spatial sizes: student map resized to the teacher's 4x4
    assert at([torch.randn(4, 3, 8, 8, generator=gen)], [f1[:, :, :4, :4]]).item() > 0
    # a spatially uniform map stays uniform when resized, so it matches at any size
    assert at([torch.ones(2, 3, 4, 4)], [2 * torch.ones(2, 5, 8, 8)]).item() == pytest.approx(
        0.0, abs=1e-9
    )


def test_attention_objective_is_ce_for_an_identical_student(nets, batch) -> None:
    _, teacher = nets
    student = copy.deepcopy(teacher)
    x, y, idx = batch
    objective = AttentionObjective(
        temperature=4.0,
        alpha=0.0,
        beta=1000.0,
        p=2.0,
        student_layers=["layer1", "layer2", "layer3"],
        teacher_layers=["layer1", "layer2", "layer3"],
        student=student,
        teacher=teacher,
    )
    student.eval()  # same mode as the teacher, so features match exactly
    loss, logits = objective(student, x, y, idx)
    assert loss.item() == pytest.approx(F.cross_entropy(logits, y).item(), abs=1e-6)

    other, _ = nets
    loss_other, logits_other = objective(other, x, y, idx)
    loss_other.backward()
    assert loss_other.item() > F.cross_entropy(logits_other, y).item() + 1e-4
    assert all(p.grad is not None for p in other.parameters())
    assert all(p.grad is None for p in teacher.parameters())
    assert objective.extra_parameters() == []


# --- FitNet ---------------------------------------------------------------------------------------


def test_fitnet_loss_zero_with_identity_adapter_positive_otherwise() -> None:
    gen = torch.Generator().manual_seed(3)
    f = torch.randn(4, 5, 6, 6, generator=gen)
    fitnet = FitNetLoss([5], [5], beta=100.0)
    with torch.no_grad():
        fitnet.adapters[0].weight.copy_(torch.eye(5).view(5, 5, 1, 1))
        fitnet.adapters[0].bias.zero_()
    assert fitnet([f], [f.clone()]).item() == pytest.approx(0.0, abs=1e-9)
    assert fitnet([f], [torch.randn(4, 5, 6, 6, generator=gen)]).item() > 0


def test_fitnet_adapter_learns_the_hint() -> None:
    gen = torch.Generator().manual_seed(4)
    f_s = torch.randn(4, 3, 3, 3, generator=gen)
    mix = torch.randn(6, 3, generator=gen)
    f_t = torch.einsum("oc,nchw->nohw", mix, f_s)  # teacher features: a 1x1 map of the student's
    torch.manual_seed(0)
    fitnet = FitNetLoss([3], [6], beta=1.0)
    first = fitnet([f_s], [f_t]).item()
    for _ in range(40):  # plain gradient descent: building torch.optim.Adam costs ~2 s of imports
        fitnet.zero_grad()
        fitnet([f_s], [f_t]).backward()
        with torch.no_grad():
            for param in fitnet.parameters():
                param -= 0.1 * param.grad
    assert fitnet([f_s], [f_t]).item() < 0.1 * first


def test_fitnet_objective_adapters_are_extra_parameters_with_grads(nets, batch) -> None:
    student, teacher = nets
    x, y, idx = batch
    objective = FitNetObjective(
        temperature=4.0,
        alpha=0.5,
        beta=100.0,
        student_layers=["layer2", "layer3"],
        teacher_layers=["layer2", "layer3"],
        student=student,
        teacher=teacher,
        example_input=x[:2],
    )
    assert [(a.in_channels, a.out_channels) for a in objective.adapters] == [(4, 8), (8, 16)]
    extra = objective.extra_parameters()
    assert {id(p) for p in extra} == {id(p) for p in objective.adapters.parameters()}
    assert len(extra) == 4
    student.train()
    loss, _ = objective(student, x, y, idx)
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in extra)
    assert all(p.grad is None for p in teacher.parameters())


def test_fitnet_probe_leaves_batch_norm_statistics_alone(nets, batch) -> None:
    student, teacher = nets
    x, _, _ = batch
    student.train()
    before = student.layer1[1].running_mean.clone()
    FitNetObjective(
        temperature=4.0,
        alpha=0.0,
        beta=100.0,
        student_layers=["layer2"],
        teacher_layers=["layer2"],
        student=student,
        teacher=teacher,
        example_input=x,
    )
    assert torch.equal(student.layer1[1].running_mean, before)
    assert student.training


def test_fitnet_objective_rejects_a_student_with_other_channels(nets, batch) -> None:
    student, teacher = nets
    x, y, idx = batch
    objective = FitNetObjective(
        temperature=4.0,
        alpha=0.0,
        beta=100.0,
        student_layers=["layer2"],
        teacher_layers=["layer2"],
        student=student,
        teacher=teacher,
        example_input=x[:2],
    )
    with pytest.raises(RuntimeError, match="rebuild the objective"):
        objective(TinyNet(width=3), x, y, idx)
    with pytest.raises(ValueError, match="example_input"):
        FitNetObjective(
            temperature=4.0,
            alpha=0.0,
            beta=100.0,
            student_layers=["layer2"],
            teacher_layers=["layer2"],
            student=student,
            teacher=teacher,
        )


# --- conf/kd --------------------------------------------------------------------------------------


def load_kd(name: str, **overrides: object):
    """conf/ composed with kd=<name>, then `overrides` set on its kd node."""
    cfg = compose_cfg(f"kd={name}")
    for key, value in overrides.items():
        OmegaConf.update(cfg, f"kd.{key}", value)
    return cfg


@pytest.mark.parametrize("name", ["none", "hinton", "attention", "fitnet"])
def test_kd_configs_build_working_objectives(name: str, nets, batch) -> None:
    student, teacher = nets
    x, y, idx = batch
    cfg = load_kd(name)
    assert cfg.kd.name == name
    validate_kd(cfg.kd, student=student, teacher=teacher)
    factory = instantiate(cfg.kd.objective)
    assert factory.func.needs_teacher == (name != "none")
    objective = factory(
        student=student, teacher=teacher, teacher_logits=None, label_smoothing=0.1, example_input=x
    )
    loss, logits = objective(student, x, y, idx)
    assert loss.dim() == 0 and torch.isfinite(loss) and logits.shape == (10, 3)
    assert isinstance(objective.extra_parameters(), list)


def test_kd_config_overrides_reach_the_objective(nets) -> None:
    student, teacher = nets
    hinton = instantiate(load_kd("hinton", temperature=2.0, alpha=0.25).kd.objective)(
        student=student, teacher=teacher, teacher_logits=None, label_smoothing=0.0
    )
    assert (hinton.kd_loss.temperature, hinton.kd_loss.alpha) == (2.0, 0.25)

    attention = instantiate(load_kd("attention", student_layers=["layer3"]).kd.objective)(
        student=student, teacher=teacher, teacher_logits=None, label_smoothing=0.0
    )
    assert attention.student_layers == attention.teacher_layers == ["layer3"]


def test_kd_config_bad_values_raise_config_error(nets) -> None:
    student, teacher = nets
    bad = load_kd("hinton", temperature=-1.0)
    with pytest.raises(ConfigError, match="kd.temperature must be > 0, got -1.0"):
        validate_kd(bad.kd)
    with pytest.raises(ConfigError, match="kd.temperature must be > 0"):
        instantiate(bad.kd.objective)(student=student, teacher=teacher)
    with pytest.raises(ConfigError, match="kd.student_layers names 'block9'"):
        validate_kd(load_kd("fitnet", student_layers=["block9"]).kd, student=student)
