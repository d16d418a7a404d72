"""Empirical variational Bayesian matrix factorisation (Nakajima et al. 2013): the rank of a matrix.

Kim et al. (2016) choose each Tucker-2 rank as the EVBMF rank of the weight's unfolding: the noise
variance is estimated from the singular values themselves, and only components above the
analytic threshold it implies are kept. No tuning knob.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.optimize import minimize_scalar
from torch import Tensor


def _tau(x: np.ndarray, alpha: float) -> np.ndarray:
    return 0.5 * (x - (1 + alpha) + np.sqrt((x - (1 + alpha)) ** 2 - 4 * alpha))


def _free_energy(sigma2: float, rows: int, cols: int, s: np.ndarray, xubar: float) -> float:
    """The EVBMF objective for noise variance `sigma2` (Nakajima et al. 2013, eq. 16)."""
    alpha = rows / cols
    x = s**2 / (cols * sigma2)
    above, below = x[x > xubar], x[x <= xubar]
    tau = _tau(above, alpha)
    return float(
        np.sum(below - np.log(below))
        + np.sum(above - tau)
        + np.sum(np.log((tau + 1) / above))
        + alpha * np.sum(np.log(tau / alpha + 1))
    )


def evbmf_rank(singular_values: Tensor, shape: tuple[int, int]) -> int:
    """The number of components EVBMF keeps in a matrix of `shape` with these singular values."""
    rows, cols = sorted(shape)
    s = singular_values.detach().double().cpu().numpy()[:rows]
    if rows < 2 or not np.any(s > 0):
        return 1
    alpha = rows / cols
    tauubar = 2.5129 * math.sqrt(alpha)
    xubar = (1 + tauubar) * (1 + alpha / tauubar)
    # Bounds of the noise variance: all energy is noise (upper); the tail beyond the largest
    # rank VB can resolve is noise (lower).
    last = max(min(math.ceil(rows / (1 + alpha)) - 1, rows) - 1, 0)
    upper = float(np.sum(s**2)) / (rows * cols)
    tail = s[last + 1 :] if last + 1 < rows else s[-1:]
    lower = max(float(tail[0] ** 2) / (cols * xubar), float(np.mean(tail**2)) / cols)
    lower = min(lower, upper * (1 - 1e-9))
    sigma2 = minimize_scalar(
        _free_energy, args=(rows, cols, s, xubar), bounds=(lower, upper), method="bounded"
    ).x
    threshold = math.sqrt(cols * sigma2 * (1 + tauubar) * (1 + alpha / tauubar))
    return max(int(np.sum(s > threshold)), 1)
