"""The side maps the constructions share (pure numpy): every method's result is two
``SideMap``s, shifted by their side's mean for accuracy."""

from __future__ import annotations

import numpy as np

from .model import SideMap
from .stats import Moments

__all__ = ["balance_scale", "folded_map", "head_tail_maps", "linear_map", "scale_of"]


def scale_of(*candidates: np.ndarray) -> float:
    """tr/d of the first matrix with positive finite trace (1.0 if none): the identity's
    scale that stands in for an all-zero second moment."""
    for m in candidates:
        t = float(np.trace(m)) / m.shape[0]
        if t > 0 and np.isfinite(t):
            return t
    return 1.0


def linear_map(matrix: np.ndarray, m: Moments) -> SideMap:
    """A purely linear map v ↦ v @ matrix, shifted by the side's mean."""
    return SideMap(np.ascontiguousarray(matrix), np.zeros(matrix.shape[1]), m.mean.copy())


def balance_scale(energy: float, mean: np.ndarray) -> float:
    """c with |v·mean|/c ≈ c for rows v of the given mean energy E|v|² (1 when degenerate)."""
    c = float(np.sqrt(np.sqrt(max(energy, 0.0)) * np.linalg.norm(mean)))
    return c if np.isfinite(c) and c > 0 else 1.0


def head_tail_maps(mx: Moments, mw: Moments, a: np.ndarray, b: np.ndarray, r: int,
                   tail: np.ndarray) -> tuple[SideMap, SideMap]:
    """head-tail's columns (``docs/method.md §4``) from the centred balanced pair (a, b): r
    exact head coordinates, the tail (``tail`` applied to coordinates r..), then the two
    exact mean columns [x·μw, 1] / [1, w̃·μx]."""
    d = mx.d
    main_x = np.vstack([a[:r], tail @ a[r:]]).T  # (d, k-2), applied to x − μx
    main_w = np.vstack([b[:r], tail @ b[r:]]).T
    mu_x, mu_w = mx.mean, mw.mean
    # scaling each mean column pair by c and 1/c keeps the products and puts both entries on
    # the same magnitude, so float32 holds them for data of magnitude 1e-30 or 1e30 alike
    c1 = balance_scale(np.trace(mx.second_moment), mu_w)
    c2 = balance_scale(np.trace(mw.second_moment), mu_x)
    x_map = SideMap(np.column_stack([main_x, mu_w / c1, np.zeros(d)]),
                    np.concatenate([-mu_x @ main_x, [0.0, c2]]), mu_x.copy())
    w_map = SideMap(np.column_stack([main_w, np.zeros(d), mu_x / c2]),
                    np.concatenate([-mu_w @ main_w, [c1, -float(mu_w @ mu_x) / c2]]),
                    mu_w.copy())
    return x_map, w_map


def folded_map(m: np.ndarray, p: np.ndarray, mean: np.ndarray) -> SideMap:
    """The affine map v ↦ M P (v − mean, 1) of ``docs/method.md §5.1`` (means folded into the
    basis), as a
    SideMap shifted by the mean."""
    d = p.shape[1] - 1
    f = m @ p
    matrix = np.ascontiguousarray(f[:, :d].T)
    return SideMap(matrix, f[:, d] - mean @ matrix, mean.copy())
