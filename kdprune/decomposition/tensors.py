"""Tensor decompositions of conv and linear weights, in PyTorch: Tucker-2 (HOOI), CP (ALS), SVD.

All work in float64 on a detached CPU copy (the same numbers whatever device trains the model) and
return factors on the weight's device, in its dtype. Signs of singular vectors are whatever LAPACK
returns: deterministic for the same input on the same machine.

Written here rather than taken from TensorLy: what kdprune needs is a few dozen lines over
`torch.linalg.svd` (HOOI for two modes, CP-ALS), while TensorLy's `partial_tucker` / `parafac` have
changed their return values between releases (a known pitfall of Tucker/CP pruning code) and run on
NumPy by default, which would add a backend switch and a copy to every decomposition.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def unfold(tensor: Tensor, mode: int) -> Tensor:
    """The mode-`mode` unfolding: a (shape[mode], everything else) matrix."""
    return tensor.movedim(mode, 0).reshape(tensor.shape[mode], -1)


def leading_vectors(matrix: Tensor, rank: int) -> Tensor:
    """The `rank` leading left singular vectors of `matrix` (its columns), rank <= rows."""
    return torch.linalg.svd(matrix, full_matrices=False)[0][:, :rank]


def _work_copy(tensor: Tensor) -> Tensor:
    return tensor.detach().cpu().double()


def _like(tensor: Tensor, weight: Tensor) -> Tensor:
    return tensor.to(device=weight.device, dtype=weight.dtype)


def relative_error(tensor: Tensor, approximation: Tensor) -> float:
    """||tensor - approximation|| / ||tensor|| (0 for a zero tensor matched exactly)."""
    norm = float(tensor.double().norm())
    error = float((tensor.double() - approximation.double()).norm())
    return error / norm if norm > 0 else error


def tucker2(
    weight: Tensor, ranks: tuple[int, int], iterations: int = 20, tolerance: float = 1e-9
) -> tuple[Tensor, Tensor, Tensor]:
    """Tucker-2 of a conv weight (O, I, kh, kw) by HOOI from the truncated HOSVD (Kim et al. 2016).

    `ranks` is (r_in, r_out). Returns (u_in (I, r_in), core (r_out, r_in, kh, kw), u_out (O, r_out))
    with orthonormal u's and W ~= sum_pq u_out[:, p] core[p, q] u_in[:, q]; exact at full ranks.
    HOOI never lowers ||core||, the captured energy; it stops once that gains under `tolerance`.
    """
    w = _work_copy(weight)
    r_in, r_out = ranks
    u_out = leading_vectors(unfold(w, 0), r_out)
    u_in = leading_vectors(unfold(w, 1), r_in)
    captured = 0.0
    for _ in range(iterations):
        u_out = leading_vectors(unfold(torch.einsum("oi...,iq->oq...", w, u_in), 0), r_out)
        u_in = leading_vectors(unfold(torch.einsum("oi...,op->pi...", w, u_out), 1), r_in)
        core = torch.einsum("oi...,op,iq->pq...", w, u_out, u_in)
        gain, captured = float(core.norm()) - captured, float(core.norm())
        if gain <= tolerance * max(captured, 1e-30):
            break
    core = torch.einsum("oi...,op,iq->pq...", w, u_out, u_in)
    return _like(u_in, weight), _like(core, weight), _like(u_out, weight)


def khatri_rao(factors: list[Tensor]) -> Tensor:
    """Column-wise Kronecker product (prod of rows, R), first factor varying slowest, matching
    `unfold`'s column order for the modes after the unfolded one."""
    product = factors[0]
    for factor in factors[1:]:
        product = (product[:, None, :] * factor[None, :, :]).reshape(-1, product.shape[1])
    return product


def cp_reconstruct(factors: list[Tensor]) -> Tensor:
    """sum_r f0[:, r] o f1[:, r] o ... (outer products), the tensor a CP decomposition describes."""
    shape = [f.shape[0] for f in factors]
    return (factors[0] @ khatri_rao(factors[1:]).T).reshape(shape)


def _cp_init(tensor: Tensor, rank: int, generator: torch.Generator) -> list[Tensor]:
    """Leading singular vectors of each unfolding, padded with seeded noise where rank > size."""
    factors = []
    for mode, size in enumerate(tensor.shape):
        leading = leading_vectors(unfold(tensor, mode), min(rank, size))
        extra = torch.randn(size, rank - leading.shape[1], generator=generator, dtype=tensor.dtype)
        factors.append(torch.cat([leading, extra / math.sqrt(size)], dim=1))
    return factors


def _balanced(factors: list[Tensor]) -> list[Tensor]:
    """Give every factor of each component the same column norm (the product is unchanged), so
    no layer of the factorised chain carries all the scale into fine-tuning."""
    norms = torch.stack([f.norm(dim=0) for f in factors])  # (modes, rank)
    total = norms.prod(dim=0)
    share = total.clamp_min(1e-30) ** (1.0 / len(factors))
    return [f / n.clamp_min(1e-30) * share for f, n in zip(factors, norms, strict=True)]


def _solve(gram: Tensor, rhs: Tensor) -> Tensor:
    """rhs @ gram^-1 for a symmetric PSD gram, with a ridge of 1e-9 of its mean diagonal so that
    a (near-)singular gram, from collinear components, gives a bounded step."""
    ridge = 1e-9 * float(gram.diagonal().mean()) + 1e-300
    eye = torch.eye(len(gram), dtype=gram.dtype)
    return torch.linalg.solve(gram + ridge * eye, rhs.T).T


def cp(
    weight: Tensor,
    rank: int,
    iterations: int = 100,
    tolerance: float = 1e-4,
    seed: int = 0,
) -> list[Tensor]:
    """CP decomposition (one factor per mode, columns = components) by ALS.

    Starts from the leading singular vectors of each unfolding (Lebedev et al. 2015 warn that CP
    diverges from a poor start), solves each update with a tiny ridge, keeps the best iterate
    seen, and stops when the relative error improves by less than `tolerance`. Returns balanced
    factors, in the weight's dtype, whose outer products sum to the approximation.
    """
    w = _work_copy(weight)
    unfoldings = [unfold(w, mode) for mode in range(w.dim())]
    factors = _cp_init(w, rank, torch.Generator().manual_seed(seed))
    best, best_error, previous, norm2 = list(factors), math.inf, math.inf, float(w.norm() ** 2)
    for _ in range(iterations):
        for mode in range(w.dim()):
            others = factors[:mode] + factors[mode + 1 :]
            gram = torch.ones(rank, rank, dtype=w.dtype)
            for factor in others:
                gram = gram * (factor.T @ factor)
            mttkrp = unfoldings[mode] @ khatri_rao(others)
            factors[mode] = _solve(gram, mttkrp)
        # ||W - W^||^2 = ||W||^2 - 2 <W, W^> + ||W^||^2, from the last mode's products alone.
        inner = float((mttkrp * factors[-1]).sum())
        fitted = float((gram * (factors[-1].T @ factors[-1])).sum())
        error = math.sqrt(max(norm2 - 2 * inner + fitted, 0.0) / max(norm2, 1e-300))
        if not math.isfinite(error):
            break
        if error < best_error:
            best, best_error = list(factors), error
        if previous - error < tolerance:
            break
        previous = error
    return [_like(f, weight) for f in _balanced(best)]


def svd_factors(weight: Tensor, rank: int) -> tuple[Tensor, Tensor]:
    """Truncated SVD of a matrix (out, in): (first (rank, in), last (out, rank)), last @ first ~=
    weight (Eckart-Young optimal), with the singular values split evenly between the two."""
    u, s, vh = torch.linalg.svd(_work_copy(weight), full_matrices=False)
    root = s[:rank].sqrt()
    first, last = root[:, None] * vh[:rank], u[:, :rank] * root
    return _like(first, weight), _like(last, weight)


def svdvals(matrix: Tensor) -> Tensor:
    """The singular values of `matrix`, largest first, in float64."""
    return torch.linalg.svdvals(_work_copy(matrix))


def energy_rank(singular_values: Tensor, energy: float) -> int:
    """The fewest leading singular values whose squares hold the share `energy` of the total."""
    squares = singular_values.double() ** 2
    total = float(squares.sum())
    if total == 0:
        return 1
    held = torch.cumsum(squares, 0) / total
    index = torch.searchsorted(held, torch.tensor(energy - 1e-12, dtype=held.dtype))
    return min(int(index) + 1, len(held))
