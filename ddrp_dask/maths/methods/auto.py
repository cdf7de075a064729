"""``auto``, the default (``docs/method.md §5``): means folded into the balanced basis,
threshold-sampled columns with a floor on π, a Haar tail, and shrinkage and allocation
chosen by cross-fitting over pass 1's statistics per fold (``maths.crossfit``). Unbiased;
exact from K = d.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..crossfit import AutoPredictor, fit_optimal
from ..shrinkage import Shrinkage
from .base import Fit, Method, Predictor, Statistics

__all__ = ["METHODS", "Auto"]


class _Prediction(Predictor):
    def __init__(self, predictor: AutoPredictor) -> None:
        self._predictor = predictor
        self.out_of_sample = predictor.out_of_sample

    def mse(self, k: int) -> float:
        return self._predictor.mse(k)


class Auto(Method):
    """The cross-fitted, importance-sampled construction."""

    name = "auto"
    cross_fits = True
    k_search = "bisect"
    costly_mse = True
    spectrum = "rho"
    own_references = ("asymmetric",)

    def k_range(self, d: int) -> tuple[int, int | None]:
        return 1, d + 2

    def exact_text(self) -> str:
        return "d"

    def fit(self, stats: Statistics, k: int, seed: int) -> Fit:
        """Without folds, in-sample."""
        folds_x, folds_w = stats.folds or ([stats.mx], [stats.mw])
        fit = fit_optimal(folds_x, folds_w, k, seed, stats.shrinkage, progress=stats.progress)
        paired = {} if np.isnan(fit.paired_mse) else {"asymmetric": fit.paired_mse}
        return Fit(fit.x, fit.w, dict(fit.info), float(fit.info["predicted_mse"]), paired)

    def predictor(self, stats: Statistics) -> Predictor:
        """Out of sample when the folds allow it; the shrinkage pair chosen once, at a
        reference K (``AutoPredictor``)."""
        folds_x, folds_w = stats.folds or ([stats.mx], [stats.mw])
        return _Prediction(AutoPredictor(folds_x, folds_w, stats.shrinkage))

    def reference_shrinkage(self, shrinkage: Shrinkage) -> str | float:
        """OAS: the cross-fitted choice is auto's own. (Where auto chose OAS for both
        sources, its fit returns the ``asymmetric`` reference itself: ``fit_optimal``.)"""
        return "oas"

    def rebuild_shrinkage(self, info: dict[str, Any], given: Shrinkage) -> Shrinkage:
        """The pair the cross-fit chose (the same fit again, with another seed)."""
        if isinstance(info.get("shrinkage_x"), dict):
            return (info["shrinkage_x"], info["shrinkage_w"])
        return given

    def allocation(self, info: dict[str, Any]) -> dict[str, int] | None:
        out: dict[str, int] | None = info.get("allocation")
        return out

    def exact_head(self, info: dict[str, Any]) -> int:
        """The coordinates kept with probability 1."""
        alloc = info.get("allocation")
        return int(alloc["head"]) if isinstance(alloc, dict) else 0

    def columns_text(self, allocation: dict[str, int]) -> str:
        return (f"{allocation['head']} exact head + {allocation['sampled']} sampled (of the "
                f"next {allocation['candidates'] - allocation['head']}) + "
                f"{allocation['tail']} orthogonal tail")


METHODS = (Auto(),)
