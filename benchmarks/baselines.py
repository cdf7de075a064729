"""Baselines that are not methods of the library, for the benchmarks and their tests.

``fit_head_tail``: the head-tail sketch of ``docs/method.md §4`` with Ledoit–Wolf shrinkage
(the default before ``auto``), with a cross-fitted prediction when fold statistics are given.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ddrp_dask.errors import OptionError
from ddrp_dask.maths.allocation import energies, tail_mse
from ddrp_dask.maths.blas import build_blas
from ddrp_dask.maths.crossfit import OptimalFit, cross_fit
from ddrp_dask.maths.draws import orthogonal_matrix
from ddrp_dask.maths.linalg import balanced_pair
from ddrp_dask.maths.maps import head_tail_maps, scale_of
from ddrp_dask.maths.predict import choose_head
from ddrp_dask.maths.shrinkage import ShrunkCovariance, Spec, describe, parse_shrinkage
from ddrp_dask.maths.stats import Moments
from ddrp_dask.options import check_same_d

__all__ = ["fit_head_tail"]


def _ht_spec(shrinkage: str | float) -> Spec:
    spec = parse_shrinkage(shrinkage)
    if spec is None:
        raise OptionError("fit_head_tail takes shrinkage 'lw', 'oas' or a number in [0, 1], "
                          "got 'auto'")
    return spec[0]


def _ht_pair(mx: Moments, mw: Moments, spec: Spec, scales: tuple[float, float]
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A, B, σ (``docs/method.md §3``) of the shrunk centred covariances: AᵀB = I,
    A Cx Aᵀ = diag(σ)."""
    return balanced_pair(ShrunkCovariance.of(mx, spec, scales[0]).matrix(),
                         ShrunkCovariance.of(mw, spec, scales[1]).matrix())


def _ht_mse(a: np.ndarray, b: np.ndarray, cx: np.ndarray, cw: np.ndarray, r: int,
            width: int) -> float:
    """Pair-averaged variance of the tail for centred second moments cx, cw (exact Haar)."""
    return tail_mse(energies([(a @ cx @ a.T, b @ cw @ b.T)]), r, width)


def _held_out(m: Moments, mean: np.ndarray) -> np.ndarray:
    """Uncentred second moment of the rows of ``m`` about ``mean``."""
    delta = m.mean - mean
    return m.covariance + np.outer(delta, delta)


def _ht_oos(folds_x: Sequence[Moments], folds_w: Sequence[Moments], k: int, spec: Spec,
            scales: tuple[float, float]) -> tuple[float, int]:
    """The out-of-sample MSE: per usable fold, fit on the others and measure held out."""
    cv = cross_fit(folds_x, folds_w, *scales)
    values = []
    for f in cv.used:
        tx, tw = cv.train_x[f], cv.train_w[f]
        a, b, sigma = _ht_pair(tx, tw, spec, scales)
        r = choose_head(sigma, k)[0]
        values.append(_ht_mse(a, b, _held_out(folds_x[f], tx.mean),
                              _held_out(folds_w[f], tw.mean), r, k - 2 - r))
    return (float(np.mean(values)) if values else float("nan")), len(values)


def fit_head_tail(mx: Moments, mw: Moments, k: int, seed: int, shrinkage: str | float = "lw",
                  folds_x: Sequence[Moments] | None = None,
                  folds_w: Sequence[Moments] | None = None) -> OptimalFit:
    """The head-tail sketch (``docs/method.md §4``) with Ledoit–Wolf shrinkage, as a baseline.

    Centred balanced pair of the shrunk covariances, 2 exact mean columns, exact head of r
    coordinates with r minimising V(r), Haar tail of width k − r − 2.

    Parameters
    ----------
    mx, mw : Moments
        Statistics of X and W (all rows).
    k : int
        Stored columns, 3 ≤ k ≤ d + 2.
    seed : int
    shrinkage : "lw", "oas" or float in [0, 1], default="lw"
        Towards (tr C/d)·I; "lw" is ``ledoit_wolf``.
    folds_x, folds_w : sequence of Moments, optional
        Fold statistics; when given, ``info["predicted_mse"]`` is cross-fitted.

    Returns
    -------
    OptimalFit
        ``info``: ``method`` ("head_tail"), ``k``, ``r``, ``k_tail``, ``sigma``,
        ``shrinkage_x``/``shrinkage_w``, ``predicted_mse`` (out of sample when folds are given,
        else in-sample), ``predicted_mse_in_sample``, ``predicted_mse_kind``, ``n_folds``.
    """
    d = check_same_d(mx.d, mw.d, "X", "W")
    if not 3 <= k <= d + 2:
        raise OptionError(f"K={k} is outside 3 ≤ K ≤ d + 2 = {d + 2} for the head-tail sketch "
                          "(2 mean columns and at least 1 tail column)")
    spec = _ht_spec(shrinkage)
    scales = (scale_of(mx.second_moment, mw.covariance),
              scale_of(mw.second_moment, mx.covariance))
    with build_blas(d):
        a, b, sigma = _ht_pair(mx, mw, spec, scales)
        r = choose_head(sigma, k)[0]
        width = k - 2 - r
        tail = orthogonal_matrix(np.random.default_rng(seed), width, d - r)
        x, w = head_tail_maps(mx, mw, a, b, r, tail)
        mse_in = _ht_mse(a, b, mx.covariance, mw.covariance, r, width)
        oos, used = (_ht_oos(folds_x, folds_w, k, spec, scales) if folds_x and folds_w
                     else (float("nan"), 0))
    info: dict[str, Any] = {
        "method": "head_tail", "k": int(k), "d": d, "r": r, "k_tail": width,
        "sigma": [float(s) for s in sigma],
        "shrinkage_x": describe(spec, mx), "shrinkage_w": describe(spec, mw),
        "predicted_mse": oos if used else mse_in, "predicted_mse_in_sample": mse_in,
        "predicted_mse_kind": f"cross-fitted over {used} held-out folds" if used else
        "in-sample", "n_folds": used,
    }
    return OptimalFit(x, w, info)
