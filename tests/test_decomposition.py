"""Low-rank decompositions: exact at full rank, error falls with rank, layers compute the conv."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from kdprune.decomposition import (
    CP,
    SVD,
    CPConv,
    LowRankLinear,
    Tucker2,
    Tucker2Conv,
    cp,
    cp_reconstruct,
    energy_rank,
    evbmf_rank,
    layer_spec,
    module_cost,
    relative_error,
    svd_factors,
    svdvals,
    tucker2,
)
from kdprune.metrics import count_macs_params


def _basis(n: int, i: int) -> torch.Tensor:
    return torch.eye(n, dtype=torch.float64)[i]


def two_term_tucker() -> torch.Tensor:
    """3 * e0 (x) e0 (x) K0 + 1 * e1 (x) e1 (x) K1 with orthonormal 3x3 kernels K0, K1: the best
    (1, 1) Tucker-2 keeps the first term, so its relative error is 1 / sqrt(10)."""
    k0, k1 = torch.zeros(3, 3, dtype=torch.float64), torch.zeros(3, 3, dtype=torch.float64)
    k0[0, 0], k1[1, 1] = 1.0, 1.0
    term = lambda o, i, k: torch.einsum("o,i,hw->oihw", _basis(4, o), _basis(3, i), k)  # noqa: E731
    return 3 * term(0, 0, k0) + term(1, 1, k1)


def test_tucker2_hand_checked_case() -> None:
    w = two_term_tucker()
    u_in, core, u_out = tucker2(w, (1, 1))
    approx = torch.einsum("pq...,op,iq->oi...", core, u_out, u_in)
    assert relative_error(w, approx) == pytest.approx(1 / math.sqrt(10), abs=1e-12)
    u_in, core, u_out = tucker2(w, (2, 2))
    assert relative_error(w, torch.einsum("pq...,op,iq->oi...", core, u_out, u_in)) < 1e-12


def test_tucker2_error_falls_with_rank_and_is_exact_at_full_rank() -> None:
    torch.manual_seed(0)
    w = torch.randn(8, 6, 3, 3)
    errors = []
    for rank in range(1, 7):
        u_in, core, u_out = tucker2(w, (rank, min(rank + 2, 8)))
        assert torch.allclose(u_in.T @ u_in, torch.eye(rank), atol=1e-5)  # orthonormal
        errors.append(relative_error(w, torch.einsum("pq...,op,iq->oi...", core, u_out, u_in)))
    assert all(b < a for a, b in zip(errors, errors[1:], strict=False)), errors
    assert errors[-1] < 1e-6  # ranks (6, 8): the input and output channels


def orthogonal_cp(weights: list[float]) -> list[torch.Tensor]:
    """CP factors of an orthogonally decomposable tensor sum_r w_r a_r o b_r o c_r o d_r."""
    factors = [torch.eye(n, dtype=torch.float64)[:, : len(weights)] for n in (4, 3, 3, 3)]
    factors[0] = factors[0] * torch.tensor(weights, dtype=torch.float64)
    return factors


def test_cp_hand_checked_case() -> None:
    w = cp_reconstruct(orthogonal_cp([3.0, 1.0]))
    assert relative_error(w, cp_reconstruct(cp(w, 1))) == pytest.approx(1 / math.sqrt(10), abs=1e-9)
    assert relative_error(w, cp_reconstruct(cp(w, 2))) < 1e-6  # exact but for the 1e-9 ridge


def test_cp_error_falls_with_rank_and_recovers_a_rank_3_tensor() -> None:
    gen = torch.Generator().manual_seed(0)
    factors = [torch.randn(n, 3, generator=gen, dtype=torch.float64) for n in (6, 5, 3, 3)]
    w = cp_reconstruct(factors).float()
    errors = [
        relative_error(w, cp_reconstruct(cp(w, r, iterations=500, tolerance=0))) for r in (1, 2, 3)
    ]
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 1e-4  # the true rank: ALS from the SVD start recovers it


def test_svd_is_eckart_young_optimal_and_exact_at_full_rank() -> None:
    torch.manual_seed(0)
    w = torch.randn(7, 5, dtype=torch.float64)
    s = svdvals(w)
    for rank in range(1, 6):
        first, last = svd_factors(w, rank)
        expected = float(s[rank:].pow(2).sum().sqrt() / s.pow(2).sum().sqrt())
        assert relative_error(w, last @ first) == pytest.approx(expected, abs=1e-12)


def test_energy_rank_counts_the_leading_share() -> None:
    s = torch.tensor([3.0, 1.0])  # energies 0.9 and 0.1
    assert [energy_rank(s, e) for e in (0.0, 0.5, 0.9, 0.95, 1.0)] == [1, 1, 1, 2, 2]


def test_vbmf_finds_the_rank_of_a_noisy_low_rank_matrix() -> None:
    gen = torch.Generator().manual_seed(0)
    signal = torch.randn(40, 5, generator=gen) @ torch.randn(5, 90, generator=gen)
    m = signal + 0.05 * torch.randn(40, 90, generator=gen)
    assert evbmf_rank(svdvals(m), tuple(m.shape)) == 5
    assert evbmf_rank(svdvals(m.T), tuple(m.T.shape)) == 5


CONVS = [
    nn.Conv2d(6, 8, 3, padding=1, bias=True),
    nn.Conv2d(6, 8, (3, 5), stride=2, padding=(1, 2), dilation=(1, 2), bias=False),
    nn.Conv2d(3, 8, 5, padding=2),  # few input channels: Tucker-1 (no input factor)
]


@pytest.mark.parametrize("conv", CONVS, ids=["3x3", "strided-dilated", "rgb-5x5"])
def test_full_rank_tucker2_layer_computes_the_conv(conv: nn.Conv2d) -> None:
    torch.manual_seed(0)
    x = torch.randn(2, conv.in_channels, 11, 12)
    spec = layer_spec(conv)
    layer = Tucker2().decompose(conv, (conv.in_channels, conv.out_channels - 1))
    assert isinstance(layer, Tucker2Conv) and not layer.has("first") and layer.has("last")
    low = Tucker2().decompose(conv, (2, 3))
    assert low.core.weight.shape == (3, 2, *spec.kernel_size) and low.has("first")
    with torch.no_grad():
        full = Tucker2().decompose(conv, (conv.in_channels, conv.out_channels))
        assert torch.allclose(full(x), conv(x), atol=1e-5)
        assert layer(x).shape == low(x).shape == conv(x).shape
    assert torch.allclose(full.effective_weight(), conv.weight, atol=1e-5)


@pytest.mark.parametrize("conv", CONVS[:2], ids=["3x3", "strided-dilated"])
def test_cp_layer_computes_a_conv_of_cp_rank_r(conv: nn.Conv2d) -> None:
    gen = torch.Generator().manual_seed(0)
    o, i, kh, kw = conv.weight.shape
    factors = [torch.randn(n, 2, generator=gen) for n in (o, i, kh, kw)]
    with torch.no_grad():
        conv.weight.copy_(cp_reconstruct(factors))
    layer = CP(iterations=300, tolerance=0).decompose(conv, (2,))
    assert isinstance(layer, CPConv) and layer.vertical.groups == 2
    x = torch.randn(2, i, 11, 12)
    with torch.no_grad():
        assert torch.allclose(layer(x), conv(x), atol=1e-3)


def test_full_rank_linear_layer_computes_the_linear() -> None:
    torch.manual_seed(0)
    linear, x = nn.Linear(12, 7), torch.randn(3, 12)
    layer = SVD().decompose(linear, (7,))
    assert isinstance(layer, LowRankLinear)
    with torch.no_grad():
        assert torch.allclose(layer(x), linear(x), atol=1e-5)


@pytest.mark.parametrize("kind", ["tucker2", "cp", "svd"])
def test_predicted_costs_match_the_ledger_counter(kind: str) -> None:
    conv = nn.Conv2d(6, 8, 3, stride=2, padding=1)
    module, x = (
        (nn.Linear(12, 7), torch.randn(1, 12)) if kind == "svd" else (conv, torch.randn(1, 6, 9, 9))
    )
    method = {"tucker2": Tucker2(), "cp": CP(iterations=2), "svd": SVD()}[kind]
    ranks = {"tucker2": (2, 3), "cp": (4,), "svd": (3,)}[kind]
    layer = method.decompose(module, ranks)
    extent = (1,) if kind == "svd" else (9, 9)
    macs, params = count_macs_params(layer, x)
    assert module_cost(layer, extent) == {"params": params, "macs": macs}
