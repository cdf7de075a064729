"""The paired methods (``docs/method.md §3``): s = R A x, t = R B w with AᵀB = I and one
Gaussian R, so E s·t = x·w for every pair.

``asymmetric``  The paper's pair (Ryder, Karnin & Liberty 2019): the balanced pair of the
                shrunk uncentred second moments.
``diagonal``    A = diag(a), B = A⁻¹, a_j = (Σw_jj/Σx_jj)^{1/4}: per-column moments only.

Their predicted MSE is (tr(A Σx Aᵀ) tr(B Σw Bᵀ) + tr ΣxΣw)/k.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..draws import gaussian_matrix
from ..linalg import balanced_pair, shrink
from ..maps import linear_map, scale_of
from ..predict import pair_var, predict_asymmetric
from .base import Fit, Method, Predictor, Statistics, plain_shrinkage

__all__ = ["METHODS", "Asymmetric", "Diagonal"]


class _InverseK(Predictor):
    """c/k."""

    def __init__(self, numerator: float) -> None:
        self.numerator = numerator

    def mse(self, k: int) -> float:
        return float(self.numerator / k)


def _fallbacks(stats: Statistics) -> tuple[float, float]:
    """The identity scales that stand in for an all-zero second moment of X and W."""
    sx, sw = stats.mx.second_moment, stats.mw.second_moment
    return scale_of(sx, sw), scale_of(sw, sx)


class Asymmetric(Method):
    """The balanced pair of the shrunk second moments, then one Gaussian R."""

    name = "asymmetric"

    def fit(self, stats: Statistics, k: int, seed: int) -> Fit:
        mx, mw = stats.mx, stats.mw
        shrinkage = self.reference_shrinkage(stats.shrinkage)
        fx, fw = _fallbacks(stats)
        shx, rho_x = shrink(mx.second_moment, mx.n, shrinkage, fx)
        shw, rho_w = shrink(mw.second_moment, mw.n, shrinkage, fw)
        a, b, sigma = balanced_pair(shx, shw)
        r_mat = gaussian_matrix(np.random.default_rng(seed), k, mx.d)
        info = {"sigma": sigma, "shrinkage_x": rho_x, "shrinkage_w": rho_w}
        return Fit(linear_map((r_mat @ a).T, mx), linear_map((r_mat @ b).T, mw), info,
                   self.predictor(stats).mse(k))

    def predictor(self, stats: Statistics) -> Predictor:
        """Its traces only (``predict_asymmetric``): the pair itself is not formed."""
        return _InverseK(predict_asymmetric(stats.mx, stats.mw, 1,
                                            self.reference_shrinkage(stats.shrinkage),
                                            _fallbacks(stats)))


class Diagonal(Method):
    """A = diag(a), B = A⁻¹ from the shrunk diagonals, then one Gaussian R."""

    name = "diagonal"

    def _scale(self, stats: Statistics) -> tuple[np.ndarray, dict[str, Any]]:
        """a, and the shrinkage of each side."""
        mx, mw = stats.mx, stats.mw
        sx, sw = mx.second_moment, mw.second_moment
        fx, fw = _fallbacks(stats)
        shrinkage = plain_shrinkage(stats.shrinkage)
        dx, rho_x = shrink(np.diag(np.diag(sx)), mx.n, shrinkage, fx)
        dw, rho_w = shrink(np.diag(np.diag(sw)), mw.n, shrinkage, fw)
        return (np.diag(dw) / np.diag(dx)) ** 0.25, {"shrinkage_x": rho_x,
                                                      "shrinkage_w": rho_w}

    def fit(self, stats: Statistics, k: int, seed: int) -> Fit:
        scale, shrunk = self._scale(stats)
        r_mat = gaussian_matrix(np.random.default_rng(seed), k, stats.d)
        info = {"scale": scale, **shrunk}
        return Fit(linear_map((r_mat * scale).T, stats.mx),
                   linear_map((r_mat / scale).T, stats.mw), info,
                   self._prediction(stats, scale).mse(k))

    def predictor(self, stats: Statistics) -> Predictor:
        return self._prediction(stats, self._scale(stats)[0])

    def _prediction(self, stats: Statistics, scale: np.ndarray) -> Predictor:
        a, b = np.diag(scale), np.diag(1 / scale)
        sx, sw = stats.mx.second_moment, stats.mw.second_moment
        return _InverseK(pair_var(a @ sx @ a.T, b @ sw @ b.T, 1))


METHODS = (Asymmetric(), Diagonal())
