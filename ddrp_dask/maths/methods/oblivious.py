"""The oblivious methods (``docs/method.md §2``): one random matrix R for both sides,
s = R x, t = R w, drawn from the seed alone; unbiased for every pair.

``gaussian``    R iid N(0, 1/k).
``orthogonal``  R = sqrt(d/k)·Qᵀ, Q Haar-random with orthonormal columns (k ≤ d).
``sparse``      Li's very sparse signs: ±sqrt(s/k) with probability 1/(2s) each, s = √d.

Their predicted MSE needs the uncentred second moments only:
(tr Σx tr Σw + tr ΣxΣw)/k, times the orthogonal factor or plus the sparse excess.
"""

from __future__ import annotations

import numpy as np

from ..draws import gaussian_matrix, orthogonal_matrix, sparse_density, sparse_matrix
from ..linalg import orthogonal_factor
from ..maps import linear_map
from ..predict import pair_var
from .base import Fit, Method, Predictor, Statistics

__all__ = ["METHODS", "Gaussian", "Oblivious", "Orthogonal", "Sparse"]


class _Prediction(Predictor):
    """(tr Σx tr Σw + tr ΣxΣw)/k from the uncentred second moments, as ``method`` corrects
    it."""

    def __init__(self, stats: Statistics, method: Oblivious) -> None:
        sx, sw = stats.mx.second_moment, stats.mw.second_moment
        self.d = stats.d
        self.numerator = pair_var(sx, sw, 1)
        self.diag = float(np.sum(np.diag(sx) * np.diag(sw)))
        self._method = method

    def mse(self, k: int) -> float:
        return self._method.correct(float(self.numerator / k), k, self)


class Oblivious(Method):
    """A data-independent method: ``draw`` is its R."""

    def draw(self, rng: np.random.Generator, k: int, d: int) -> np.ndarray:
        """R (k, d)."""
        return gaussian_matrix(rng, k, d)

    def fit(self, stats: Statistics, k: int, seed: int) -> Fit:
        r_mat = self.draw(np.random.default_rng(seed), k, stats.d)
        return Fit(linear_map(r_mat.T, stats.mx), linear_map(r_mat.T, stats.mw), {},
                   self.predictor(stats).mse(k))

    def predictor(self, stats: Statistics) -> Predictor:
        return _Prediction(stats, self)

    def correct(self, base: float, k: int, p: _Prediction) -> float:
        """The MSE at K = ``k`` from the Gaussian one, ``base``."""
        return base


class Gaussian(Oblivious):
    name = "gaussian"


class Orthogonal(Oblivious):
    name = "orthogonal"
    k_search = "scan"

    def draw(self, rng: np.random.Generator, k: int, d: int) -> np.ndarray:
        return orthogonal_matrix(rng, k, d)

    def k_range(self, d: int) -> tuple[int, int | None]:
        return 1, d

    def k_refusal(self, k: int, d: int) -> str | None:
        if k > d:
            return f"K={k} is too large for orthogonal rows at d={d}: K must be ≤ d"
        return super().k_refusal(k, d)

    def correct(self, base: float, k: int, p: _Prediction) -> float:
        return base * orthogonal_factor(p.d, k) if k <= p.d else float("nan")


class Sparse(Oblivious):
    name = "sparse"

    def draw(self, rng: np.random.Generator, k: int, d: int) -> np.ndarray:
        return sparse_matrix(rng, k, d)

    def correct(self, base: float, k: int, p: _Prediction) -> float:
        return base + (sparse_density(p.d) - 3) / k * p.diag


METHODS = (Gaussian(), Orthogonal(), Sparse())
