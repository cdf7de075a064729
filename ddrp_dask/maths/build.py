"""Build a projection pair from the two sources' statistics (DESIGN §2–4). Pure numpy.

Every method returns a ``SketchModel`` whose estimate of x·w is the plain dot product of the
two k-vectors. Methods:

``gaussian``    R x, R w with R iid N(0, 1/k).
``orthogonal``  R = sqrt(d/k)·Qᵀ, Q Haar-random with orthonormal columns (k ≤ d).
``sparse``      Li's very sparse signs: ±sqrt(s/k) with probability 1/(2s) each, s = √d.
``diagonal``    R A x, R B w with A = diag(a), B = A⁻¹, a_j = (Σw_jj/Σx_jj)^{1/4}.
``asymmetric``  The paper: R A x, R B w with the balanced pair of the shrunk second moments.
``auto``        DESIGN §7 (``maths.crossfit.fit_optimal``): means folded into the balanced
                basis, threshold-sampled columns with a floor on π, a Haar tail, shrinkage
                and allocation chosen by cross-fitting over the fold statistics.
``head-tail``   DESIGN §4: shrinkage, two exact mean columns, exact head of r balanced
                coordinates of the centred covariances, orthogonal tail of width k − r − 2;
                r minimises V(r) = ((Σ_{i>r}σ_i)² + Σ_{i>r}σ_i²)/k' · (D − k')/(D − 1) ·
                D/(D + 2).
``truncated``   head-tail's head and mean columns with r = k − 2 and no tail: biased, opt-in.

All but ``truncated`` are unbiased for every pair, including vectors unlike the fitted rows,
because shrinkage keeps A and B full rank with AᵀB = I.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..options import METHODS, OBLIVIOUS, check_k, check_same_d
from .blas import build_blas, build_threads
from .crossfit import fit_optimal
from .draws import DRAW, gaussian_matrix, orthogonal_matrix
from .linalg import balanced_pair, shrink
from .maps import head_tail_maps, linear_map, scale_of
from .model import SideMap, SketchModel
from .predict import (
    choose_head,
    predict_asymmetric,
    predict_head_tail,
    predict_oblivious,
    predict_paired,
)
from .stats import Moments

__all__ = ["METHODS", "build"]

# ---------------------------------------------------------------------------------------
# the build


@dataclass(frozen=True)
class _Fit:
    """What one method's construction produced before packaging."""

    x: SideMap
    w: SideMap
    info: dict[str, Any]


def build(mx: Moments, mw: Moments, k: int, method: str = "auto", seed: int = 0,
          shrinkage: Any = "auto", provenance: dict[str, Any] | None = None,
          folds: tuple[Sequence[Moments], Sequence[Moments]] | None = None) -> SketchModel:
    """Fit the projection pair for ``method`` from the statistics of X and W.

    Parameters
    ----------
    mx, mw : Moments
        Statistics of the two sources (same d).
    k : int
        Stored columns per sketch, every one counted.
    method : str, default="auto"
        One of ``METHODS``.
    seed : int, default=0
        Seed of every random draw (numpy ``default_rng``).
    shrinkage : "auto", "oas" or float in [0, 1], default="auto"
        Shrinkage of the second moments towards (tr/d)·I: for ``auto``, "auto" is chosen per
        source by cross-fitting (a pair of ``info["shrinkage_x"]``/``["shrinkage_w"]`` fixes
        it); for the other methods "auto" is OAS.
    provenance : dict, optional
        Recorded in the model as given.
    folds : (sequence of Moments, sequence of Moments), optional
        Per-fold statistics of X and W (``maths.folds.fold_moments``) whose merge is
        ``mx``, ``mw``: ``auto`` cross-fits over them; without them its build is in-sample.

    Returns
    -------
    SketchModel
        With ``info["predicted"]``: the pair-averaged MSE predicted for this method (for
        ``auto`` out of sample, on new pairs, when folds are given; for the others over pairs
        of the fitted rows), for ``asymmetric`` and for ``gaussian`` at the same k, and
        ``info["gain"]``.
    """
    d = check_same_d(mx.d, mw.d, "X", "W")
    check_k(k, d, method)
    # LAPACK's last bits depend on the thread count: a fixed count gives the same model
    # anywhere (recorded in the model as info["build_blas_threads"])
    with build_blas(d):
        if method == "auto":
            fit, predicted = _fit_auto(mx, mw, k, seed, shrinkage, folds)
        else:
            fit, predicted = _fit(mx, mw, k, method, seed, shrinkage)
    info = dict(fit.info, n_x=mx.n, n_w=mw.n, predicted=predicted,
                build_blas_threads=build_threads(d))
    this = predicted[method]
    info["gain"] = predicted["gaussian"] / this if this > 0 else float("inf")
    return SketchModel(method, k, d, int(seed), fit.x, fit.w, info, dict(provenance or {}),
                       mx, mw)


def _paper_shrinkage(shrinkage: Any) -> Any:
    return shrinkage if isinstance(shrinkage, str | float | int) else "oas"


def _reference(mx: Moments, mw: Moments, k: int, shrinkage: Any) -> dict[str, float]:
    """The predictions every report compares against: gaussian and the paper's asymmetric
    pair at the same k (its traces only: the pair itself is not formed)."""
    sx, sw = mx.second_moment, mw.second_moment
    predicted = {"gaussian": predict_oblivious("gaussian", sx, sw, k)}
    fallbacks = (scale_of(sx, sw), scale_of(sw, sx))
    del sx, sw  # the traces take fresh copies, which they overwrite
    predicted["asymmetric"] = predict_asymmetric(mx, mw, k, _paper_shrinkage(shrinkage),
                                                 fallbacks)
    return predicted


def _fit_auto(mx: Moments, mw: Moments, k: int, seed: int, shrinkage: Any,
              folds: tuple[Sequence[Moments], Sequence[Moments]] | None
              ) -> tuple[_Fit, dict[str, float]]:
    """``docs/method.md §5`` through ``maths.crossfit``; without folds, in-sample."""
    folds_x, folds_w = folds if folds is not None else ([mx], [mw])
    fit = fit_optimal(folds_x, folds_w, k, seed, shrinkage)
    predicted = _reference(mx, mw, k, "oas")
    predicted["auto"] = float(fit.info["predicted_mse"])
    return _Fit(fit.x, fit.w, dict(fit.info)), predicted


def _fit(mx: Moments, mw: Moments, k: int, method: str, seed: int,
         shrinkage: float | str) -> tuple[_Fit, dict[str, float]]:
    rng = np.random.default_rng(seed)
    sx, sw = mx.second_moment, mw.second_moment
    predicted = _reference(mx, mw, k, shrinkage)  # the report's comparison
    if method in OBLIVIOUS:
        r_mat = DRAW[method](rng, k, mx.d)
        predicted[method] = predict_oblivious(method, sx, sw, k)
        return _Fit(linear_map(r_mat.T, mx), linear_map(r_mat.T, mw), {}), predicted
    if method == "asymmetric":
        paper = _paper_shrinkage(shrinkage)
        shx, rho_x = shrink(sx, mx.n, paper, scale_of(sx, sw))
        shw, rho_w = shrink(sw, mw.n, paper, scale_of(sw, sx))
        a, b, sigma = balanced_pair(shx, shw)
        r_mat = gaussian_matrix(rng, k, mx.d)
        info = {"sigma": sigma, "shrinkage_x": rho_x, "shrinkage_w": rho_w}
        return _Fit(linear_map((r_mat @ a).T, mx), linear_map((r_mat @ b).T, mw), info), predicted
    if method == "diagonal":
        return _fit_diagonal(mx, mw, k, rng, shrinkage, predicted)
    return _fit_head_tail(mx, mw, k, method, rng, shrinkage, predicted)


def _fit_diagonal(mx: Moments, mw: Moments, k: int, rng: np.random.Generator,
                  shrinkage: float | str, predicted: dict[str, float]
                  ) -> tuple[_Fit, dict[str, float]]:
    sx, sw = mx.second_moment, mw.second_moment
    dx, rho_x = shrink(np.diag(np.diag(sx)), mx.n, shrinkage, scale_of(sx, sw))
    dw, rho_w = shrink(np.diag(np.diag(sw)), mw.n, shrinkage, scale_of(sw, sx))
    scale = (np.diag(dw) / np.diag(dx)) ** 0.25
    r_mat = gaussian_matrix(rng, k, mx.d)
    predicted["diagonal"] = predict_paired(np.diag(scale), np.diag(1 / scale), sx, sw, k)
    info = {"scale": scale, "shrinkage_x": rho_x, "shrinkage_w": rho_w}
    fit = _Fit(linear_map((r_mat * scale).T, mx), linear_map((r_mat / scale).T, mw), info)
    return fit, predicted


def _fit_head_tail(mx: Moments, mw: Moments, k: int, method: str, rng: np.random.Generator,
                   shrinkage: float | str, predicted: dict[str, float]
                  ) -> tuple[_Fit, dict[str, float]]:
    """head-tail and truncated (DESIGN §4): centred balanced pair, exact head, mean columns,
    tail."""
    d = mx.d
    cx, cw = mx.covariance, mw.covariance
    shx, rho_x = shrink(cx, mx.n, shrinkage, scale_of(mx.second_moment, cw))
    shw, rho_w = shrink(cw, mw.n, shrinkage, scale_of(mw.second_moment, cx))
    a, b, sigma = balanced_pair(shx, shw)
    if method == "truncated":
        r, v = k - 2, None
    else:
        r, v = choose_head(sigma, k)
    width = k - 2 - r
    tail = orthogonal_matrix(rng, width, d - r) if width else np.zeros((0, d - r))
    x_map, w_map = head_tail_maps(mx, mw, a, b, r, tail)
    predicted[method] = predict_head_tail(a, b, cx, cw, r, width)
    info: dict[str, Any] = {"sigma": sigma, "r": r, "k_tail": width, "shrinkage_x": rho_x,
                            "shrinkage_w": rho_w}
    if v is not None:
        info["v_of_r"] = v
    return _Fit(x_map, w_map, info), predicted
