"""Choose K from the statistics alone: predicted MSE against K for every method, and the
smallest K meeting a target — the data-dependent counterpart of scikit-learn's
``johnson_lindenstrauss_min_dim``. Pure numpy; no random matrix is drawn.

The predictions are exactly ``build(mx, mw, k, method).info["predicted"][method]``
(pair-averaged MSE of x·w over pairs of the fitted rows, ``docs/method.md §2–§4``), but
the expensive parts (shrinkage, the balanced pairs, the balanced covariances) are computed
once for all K, by each method (``maths.methods``). The *relative* MSE divides by the mean
squared inner product over pairs, E(x·w)² = tr(Σx Σw) with Σ the uncentred second moments.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from ..errors import InputError, OptionError
from ..options import (
    METHODS,
    check_k,
    check_methods,
    check_same_d,
    check_shrinkage,
    check_target,
    k_range,
)
from .blas import build_blas
from .methods import Predictor, Statistics, get
from .predict import pair_energy
from .stats import Moments

__all__ = ["MsePredictor", "check_options", "choose_k", "k_grid", "min_k",
           "predicted_mse_curve"]

#: K values at which ``choose_k`` evaluates a costly curve (``auto``'s: log-spaced).
COSTLY_CURVE_POINTS = 32


class MsePredictor:
    """Predicted pair-averaged MSE of every method at any K, from two sources' statistics.

    Each method's parts that do not depend on K (shrinkage, balanced pairs, the cross-fit)
    are computed once, when it is first asked for, by the method itself (the same code as
    its build, with one BLAS thread like ``build``, so the numbers match it to the last bit);
    each ``mse(method, k)`` is then cheap.

    Parameters
    ----------
    mx, mw : Moments
        Statistics of X and W (same d).
    shrinkage : "auto", "oas" or float in [0, 1], default="auto"
        As for ``ddrp_dask.build``.
    folds : (sequence of Moments, sequence of Moments), optional
        Per-fold statistics whose merge is ``mx``, ``mw``: the predictions of a method that
        cross-fits (``auto``) are then out of sample, else in-sample.

    Attributes
    ----------
    d : int
    energy : float
        E(x·w)² over pairs (``pair_energy``): relative MSE = MSE / energy.
    """

    def __init__(self, mx: Moments, mw: Moments, shrinkage: Any = "auto",
                 folds: tuple[Sequence[Moments], Sequence[Moments]] | None = None) -> None:
        self.d = check_same_d(mx.d, mw.d, "X", "W")
        self.energy = pair_energy(mx, mw)
        self._stats = Statistics(mx, mw, check_shrinkage(shrinkage), folds)
        self._plain = self._stats.without_folds()
        self._predictors: dict[str, Predictor] = {}
        self._cache: dict[tuple[str, int], float] = {}

    @property
    def auto_out_of_sample(self) -> bool:
        """Whether the predictions of the cross-fitting method (``auto``) are out of sample
        (False until it is asked for)."""
        return any(p.out_of_sample for p in self._predictors.values())

    def k_range(self, method: str) -> tuple[int, int | None]:
        """Smallest and largest valid K of ``method`` at this d (None: no upper bound)."""
        return k_range(method, self.d)

    def mse(self, method: str, k: int) -> float:
        """Predicted MSE of ``method`` with K = ``k`` (NaN where K is invalid for it)."""
        key = (method, int(k))
        if key not in self._cache:
            self._cache[key] = self._mse(method, int(k))
        return self._cache[key]

    def _mse(self, method: str, k: int) -> float:
        try:
            check_k(int(k), self.d, method)
        except OptionError:
            if method not in METHODS:
                raise
            return float("nan")
        with build_blas(self.d):
            if method not in self._predictors:  # each method's K-free parts, once
                chosen = get(method)
                stats = self._stats if chosen.cross_fits else self._plain
                self._predictors[method] = chosen.predictor(stats)
            return self._predictors[method].mse(k)

    def curve(self, ks: Iterable[int], methods: Sequence[str] = METHODS,
              auto_points: int | None = None,
              auto_extra: Iterable[int] = ()) -> dict[str, np.ndarray]:
        """``{method: predicted MSE for each K in ks}`` (NaN where K is invalid). With
        ``auto_points``, a method whose every K is a search (``auto``: an allocation search
        per K) is evaluated at about that many log-spaced K (and at ``auto_extra``) only,
        NaN between them."""
        ks = [int(k) for k in ks]
        keep = set(ks)
        if auto_points and ks:
            grid = np.geomspace(1, max(min(max(ks), self.d), 1), auto_points)
            keep = {int(k) for k in grid.round()} | {min(max(ks), self.d)} | set(auto_extra)
        return {m: np.array([self.mse(m, k) if not get(m).costly_mse or k in keep else
                             float("nan") for k in ks], dtype=np.float64) for m in methods}

    def min_k(self, method: str, target: float) -> int:
        """Smallest K whose predicted relative MSE (MSE / ``energy``) is ≤ ``target``."""
        target = check_target(target)
        if not self.energy > 0:
            raise InputError("E(x.w)^2 is 0 over the sources' pairs (every inner product is "
                             "zero): a relative MSE is undefined")
        low, high = self.k_range(method)

        def ok(k: int) -> bool:
            return self.mse(method, k) / self.energy <= target

        search = get(method).k_search
        if search == "inverse":  # MSE = c / K: start from the closed form, fix rounding
            c = self.mse(method, 1)
            k = max(low, int(np.ceil(c / (target * self.energy))) if c > 0 else low)
            while not ok(k):
                k += 1
            while k > low and ok(k - 1):
                k -= 1
            return k
        assert high is not None
        if search == "bisect":  # its MSE falls with K, each K a search: bisect
            lo, hi = low, min(high, self.d)  # exact from K = d
            while lo < hi:
                mid = (lo + hi) // 2
                lo, hi = (lo, mid) if ok(mid) else (mid + 1, hi)
            return lo
        for k in range(low, high + 1):  # head/tail and orthogonal: exact at the top of range
            if ok(k):
                return k
        return high  # pragma: no cover - the largest K is exact, MSE 0


def check_options(target: float, methods: Sequence[str], shrinkage: float | str) -> float:
    """Validate ``choose_k``'s options before any pass over the data; returns the target."""
    check_methods(methods)
    check_shrinkage(shrinkage)
    return check_target(target)


def predicted_mse_curve(mx: Moments, mw: Moments, ks: Iterable[int],
                        methods: Sequence[str] = METHODS,
                        shrinkage: Any = "auto") -> dict[str, np.ndarray]:
    """Predicted pair-averaged MSE of x·w against K for each method, from statistics alone.

    Parameters
    ----------
    mx, mw : Moments
        Statistics of X and W.
    ks : iterable of int
        The K values.
    methods : sequence of str, default=METHODS
    shrinkage : "auto", "oas" or float in [0, 1], default="auto"

    Returns
    -------
    dict of str to ndarray of shape (len(ks),)
        ``build(mx, mw, k, method).info["predicted"][method]`` for every K; NaN where K is
        invalid for the method (e.g. orthogonal with K > d). Divide by ``pair_energy(mx, mw)``
        for the relative MSE.
    """
    return MsePredictor(mx, mw, shrinkage).curve(ks, methods)


def min_k(mx: Moments, mw: Moments, target: float, method: str = "auto",
          shrinkage: Any = "auto",
          folds: tuple[Sequence[Moments], Sequence[Moments]] | None = None) -> int:
    """Smallest K whose predicted relative MSE, MSE / E(x·w)², is at most ``target``.

    Parameters
    ----------
    mx, mw : Moments
    target : float
        Target relative MSE (> 0), e.g. 0.01 for an RMS error of 10% of the RMS inner product.
    method : str, default="auto"
    shrinkage : "auto", "oas" or float in [0, 1], default="auto"

    Returns
    -------
    int
        May exceed d for methods whose MSE is c/K (gaussian, sparse, asymmetric, diagonal).
    """
    return MsePredictor(mx, mw, shrinkage, folds).min_k(method, target)


def k_grid(d: int, extra: Iterable[int] = ()) -> list[int]:
    """K values for a table: powers of two up to d + 2, d and d + 2, plus ``extra``.

    >>> k_grid(6, [5])
    [1, 2, 4, 5, 6, 8]
    """
    ks = {2**i for i in range(int(np.log2(d + 2)) + 1)} | {d, d + 2} | set(extra)
    return sorted(k for k in ks if k >= 1)


def choose_k(mx: Moments, mw: Moments, target: float = 0.01, methods: Sequence[str] = METHODS,
             shrinkage: Any = "auto",
             folds: tuple[Sequence[Moments], Sequence[Moments]] | None = None) -> dict[str, Any]:
    """Everything ``ddrp plan`` shows: the smallest K per method for ``target``, a table of
    predicted relative MSEs, and the curve against every K for the plot.

    Parameters
    ----------
    mx, mw : Moments
    target : float, default=0.01
        Target relative MSE, MSE / E(x·w)².
    methods : sequence of str, default=METHODS
    shrinkage : "auto", "oas" or float in [0, 1], default="auto"

    Returns
    -------
    dict
        ``d``, ``n_x``, ``n_w``, ``energy`` (E(x·w)²), ``target_rel_mse``, ``min_k``
        (method → K), ``table`` (``k``: list, ``rel_mse``: method → list) and ``curve``
        (``k``: 1..K_max, ``mse``: method → ndarray; NaN where K is invalid).
    """
    target = check_options(target, methods, shrinkage)
    p = MsePredictor(mx, mw, shrinkage, folds)
    best = {m: p.min_k(m, target) for m in methods}
    table_ks = k_grid(p.d, best.values())
    k_max = max(p.d + 2, min(max(best.values()), 16 * (p.d + 2)))
    curve_ks = list(range(1, k_max + 1))
    table = p.curve(table_ks, methods)
    return {"d": p.d, "n_x": mx.n, "n_w": mw.n, "energy": p.energy, "target_rel_mse": target,
            "shrinkage": shrinkage, "min_k": best,
            "auto_predictions": "out of sample (cross-fitted)" if p.auto_out_of_sample else
            "in-sample",
            "table": {"k": table_ks,
                      "rel_mse": {m: (v / p.energy).tolist() for m, v in table.items()}},
            "curve": {"k": curve_ks, "mse": p.curve(curve_ks, methods, COSTLY_CURVE_POINTS,
                                                      best.values())}}
