"""``head-tail`` (``docs/method.md §4``): the centred balanced pair of the shrunk
covariances, two exact mean columns, an exact head of r balanced coordinates and an
orthogonal tail of width k − r − 2 over the others; r minimises
V(r) = ((Σ_{i>r}σ_i)² + Σ_{i>r}σ_i²)/k' · (D − k')/(D − 1) · D/(D + 2). Unbiased.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..draws import orthogonal_matrix
from ..linalg import balanced_pair, shrink
from ..maps import head_tail_maps, scale_of
from ..predict import choose_head, head_tail_mse
from .base import Fit, Method, Predictor, Statistics, plain_shrinkage

__all__ = ["METHODS", "CentredPair", "HeadTail"]


@dataclass(frozen=True)
class CentredPair:
    """The balanced pair A, B (σ descending) of the shrunk centred covariances, with the
    balanced covariances Pa = A Cx Aᵀ, Pb = B Cw Bᵀ every K's prediction reads."""

    a: np.ndarray
    b: np.ndarray
    sigma: np.ndarray
    pa: np.ndarray
    pb: np.ndarray
    shrinkage_x: float
    shrinkage_w: float

    @classmethod
    def of(cls, stats: Statistics) -> CentredPair:
        """The pair of ``stats`` (computed once per ``stats``)."""
        pair = stats.shared.get("centred pair")
        if not isinstance(pair, CentredPair):
            pair = stats.shared["centred pair"] = cls._of(stats)
        return pair

    @classmethod
    def _of(cls, stats: Statistics) -> CentredPair:
        mx, mw = stats.mx, stats.mw
        cx, cw = mx.covariance, mw.covariance
        shrinkage = plain_shrinkage(stats.shrinkage)
        shx, rho_x = shrink(cx, mx.n, shrinkage, scale_of(mx.second_moment, cw))
        shw, rho_w = shrink(cw, mw.n, shrinkage, scale_of(mw.second_moment, cx))
        a, b, sigma = balanced_pair(shx, shw)
        return cls(a, b, sigma, a @ cx @ a.T, b @ cw @ b.T, rho_x, rho_w)


class _Prediction(Predictor):
    def __init__(self, pair: CentredPair, method: HeadTail) -> None:
        self.pair = pair
        self._method = method

    def mse(self, k: int) -> float:
        r = self._method.head(self.pair.sigma, k)[0]
        return head_tail_mse(self.pair.pa, self.pair.pb, r, k - 2 - r)


class HeadTail(Method):
    """Exact head, orthogonal tail, two exact mean columns."""

    name = "head-tail"
    k_search = "scan"
    min_k_reason = "it stores 2 exact mean columns and at least 1 tail column"

    def k_range(self, d: int) -> tuple[int, int | None]:
        return 3, d + 2

    def head(self, sigma: np.ndarray, k: int) -> tuple[int, np.ndarray | None]:
        """r, the exact head's width at K = ``k``, and V(r) for every r (None: not chosen)."""
        r, v = choose_head(sigma, k)
        return r, v

    def fit(self, stats: Statistics, k: int, seed: int) -> Fit:
        d = stats.d
        pair = CentredPair.of(stats)
        r, v = self.head(pair.sigma, k)
        width = k - 2 - r
        rng = np.random.default_rng(seed)
        tail = orthogonal_matrix(rng, width, d - r) if width else np.zeros((0, d - r))
        x_map, w_map = head_tail_maps(stats.mx, stats.mw, pair.a, pair.b, r, tail)
        info: dict[str, Any] = {"sigma": pair.sigma, "r": r, "k_tail": width,
                                "shrinkage_x": pair.shrinkage_x,
                                "shrinkage_w": pair.shrinkage_w}
        if v is not None:
            info["v_of_r"] = v
        return Fit(x_map, w_map, info, _Prediction(pair, self).mse(k))

    def predictor(self, stats: Statistics) -> Predictor:
        return _Prediction(CentredPair.of(stats), self)

    def allocation(self, info: dict[str, Any]) -> dict[str, int] | None:
        if info.get("r") is None:
            return None
        return {"head": info.get("r") or 0, "sampled": 0, "tail": info.get("k_tail") or 0,
                "mean_columns": 2}

    def columns_text(self, allocation: dict[str, int]) -> str:
        return (f"{allocation['head']} exact head + {allocation['tail']} orthogonal tail + 2 "
                "exact mean")


METHODS = (HeadTail(),)
