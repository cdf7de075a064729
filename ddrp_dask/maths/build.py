"""Build a projection pair from the two sources' statistics. Pure numpy.

Every method (``maths.methods``: the registry knows them all) returns a ``SketchModel``
whose estimate of x·w is the plain dot product of the two k-vectors. All but the methods
that say otherwise (``truncated``) are unbiased for every pair, including vectors unlike the
fitted rows, because shrinkage keeps A and B full rank with AᵀB = I (``docs/method.md §7``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ..options import METHODS, check_k, check_same_d, check_shrinkage
from .blas import build_blas, build_threads
from .methods import BASELINE, REFERENCES, Method, Statistics, get
from .model import SketchModel
from .shrinkage import Shrinkage
from .stats import Moments

__all__ = ["METHODS", "build"]


def build(mx: Moments, mw: Moments, k: int, method: str = "auto", seed: int = 0,
          shrinkage: Any = "auto", provenance: dict[str, Any] | None = None,
          folds: tuple[Sequence[Moments], Sequence[Moments]] | None = None,
          progress: Callable[[str], None] | None = None) -> SketchModel:
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
        ``mx``, ``mw``: a method that cross-fits (``auto``) uses them; without them its
        build is in-sample.
    progress : callable, optional
        Told each step of the build as it starts (the CLI draws it on its progress line).

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
    if not isinstance(shrinkage, tuple):  # a pair of descriptions: a fitted model's choice
        shrinkage = check_shrinkage(shrinkage)
    chosen = get(method)
    stats = Statistics(mx, mw, shrinkage, folds if chosen.cross_fits else None,
                       progress=progress)
    # LAPACK's last bits depend on the thread count: a fixed count gives the same model
    # anywhere (recorded in the model as info["build_blas_threads"]). On one BLAS thread
    # the report's reference predictions run beside the fit (the same bytes in less wall
    # time); with two, before it (two threads of two would oversubscribe the cores).
    references = tuple(dict.fromkeys((BASELINE, *REFERENCES)))
    names = [name for name in references if name not in chosen.own_references]
    with build_blas(d), ThreadPoolExecutor(1) as pool:
        beside = pool.submit(_references, stats, chosen, k, names) \
            if build_threads(d) == 1 else None
        computed = {} if beside else _references(stats, chosen, k, names)
        fit = chosen.fit(stats, k, seed)
        if beside is not None:
            if progress is not None:
                progress("the report's reference predictions")
            computed = beside.result()
        missing = [name for name in references
                   if name not in computed and name not in fit.references]
        computed.update(_references(stats, chosen, k, missing) if missing else {})
    predicted = {name: computed[name] if name in computed else fit.references[name]
                 for name in references}
    predicted[method] = fit.predicted
    info = dict(fit.info, n_x=mx.n, n_w=mw.n, predicted=predicted,
                build_blas_threads=build_threads(d))
    this = predicted[method]
    info["gain"] = predicted[BASELINE] / this if this > 0 else float("inf")
    return SketchModel(method, k, d, int(seed), fit.x, fit.w, info, dict(provenance or {}),
                       mx, mw)


def _references(stats: Statistics, method: Method, k: int, names: Sequence[str]
                ) -> dict[str, float]:
    """The predictions ``names`` of those every report compares against
    (``methods.BASELINE``, the gain's denominator, and ``methods.REFERENCES``) at the same k,
    with the method's ``reference_shrinkage``."""
    shrinkage: Shrinkage = method.reference_shrinkage(stats.shrinkage)
    ref = Statistics(stats.mx, stats.mw, shrinkage)
    return {name: get(name).predictor(ref).mse(k) for name in names}
