"""The predicted-MSE formulas the methods share (``docs/method.md §2–§4``): the
pair-averaged MSE of x·w from second-moment matrices. Pure numpy."""

from __future__ import annotations

import numpy as np

from .linalg import balanced_traces, orthogonal_factor, shrink_terms
from .stats import Moments

__all__ = ["choose_head", "head_tail_mse", "pair_energy", "pair_var", "predict_asymmetric"]


def pair_energy(mx: Moments, mw: Moments) -> float:
    """E(x·w)² over independent pairs of rows: tr(Σx Σw), Σ the uncentred second moments.

    >>> from ddrp_dask.maths.stats import block_moments
    >>> pair_energy(block_moments(np.array([[1.0, 0.0]])), block_moments(np.array([[2.0, 0.0]])))
    4.0
    """
    return float(np.sum(mx.second_moment * mw.second_moment))


def pair_var(px: np.ndarray, pw: np.ndarray, k: int) -> float:
    """(tr Px · tr Pw + tr(Px Pw)) / k: Gaussian sketch variance averaged over pairs."""
    if k <= 0:
        return 0.0
    return float((np.trace(px) * np.trace(pw) + np.sum(px * pw)) / k)


def predict_asymmetric(mx: Moments, mw: Moments, k: int, shrinkage: float | str = "oas",
                       fallbacks: tuple[float, float] = (1.0, 1.0)) -> float:
    """The pair-averaged MSE of a Gaussian projection of the paper's pair (A x, B w),
    (tr(A Σx Aᵀ) tr(B Σw Bᵀ) + tr ΣxΣw)/k, the balanced pair of the second moments shrunk
    as ``linalg.shrink(…, shrinkage, fallback)`` does, without forming it
    (``balanced_traces``)."""
    if k <= 0:
        return 0.0
    mats = [mx.second_moment, mw.second_moment]
    terms_x = shrink_terms(mats[0], mx.n, shrinkage, fallbacks[0])
    terms_w = shrink_terms(mats[1], mw.n, shrinkage, fallbacks[1])
    tr_a, tr_b, cross = balanced_traces(mats, terms_x, terms_w)
    return float((tr_a * tr_b + cross) / k)


def head_tail_mse(pa: np.ndarray, pb: np.ndarray, r: int, width: int) -> float:
    """head-tail and truncated from Pa = A Cx Aᵀ and Pb = B Cw Bᵀ (reusable across
    (r, width)): the tail's variance (orthogonal factor included), or with no tail the
    squared bias E(a_t·b_t)² = tr(Pa Pb)."""
    pa, pb = pa[r:, r:], pb[r:, r:]
    if width == 0:
        return float(np.sum(pa * pb))
    return pair_var(pa, pb, width) * orthogonal_factor(pa.shape[0], width)


def choose_head(sigma: np.ndarray, k: int, min_tail: int = 1) -> tuple[int, np.ndarray]:
    """The r minimising V(r) over r with k' = k − 2 − r ≥ min_tail, and V for every such r.

    Ties go to the larger r: exact columns do not depend on the seed.
    """
    d = sigma.shape[0]
    r_max = min(k - 2 - min_tail, d - 1)
    tail_sums = np.cumsum(sigma[::-1])[::-1]  # Σ_{i≥r} σ_i
    tail_sq = np.cumsum((sigma**2)[::-1])[::-1]
    v = np.full(r_max + 1, np.inf)
    for r in range(r_max + 1):
        width, dim = k - 2 - r, d - r
        v[r] = (tail_sums[r] ** 2 + tail_sq[r]) / width * orthogonal_factor(dim, width)
    best = float(v.min())
    r = int(np.flatnonzero(v <= best * (1 + 1e-12) + 1e-300)[-1])
    return r, v
