"""ddrp: data-dependent (asymmetric) random projections on Dask.

Sketches ``s(x)``, ``t(w)`` in R^k whose plain dot product estimates ``x · w``, with the
projection pair built from the two sources' statistics (see DESIGN.md).
"""

from typing import TYPE_CHECKING

from .build import METHODS, build
from .choose import MsePredictor, choose_k, min_k, pair_energy, predicted_mse_curve
from .errors import DdrpError
from .evaluate import EvaluatePlan, evaluate_model, plan_evaluate, sample_pairs
from .io import Source, open_source
from .matmul import MatmulPlan, execute_matmul, merge_top_n, plan_matmul, top_n
from .model import SketchModel, load_model, save_model
from .pipeline import compute_moments, execute, fit_model, sketch_numpy
from .plan import Plan, plan_fit, plan_project, plan_run, plan_stats
from .prior import bootstrap_weights, prior_from_labels
from .project import project_block
from .stats import Moments, block_moments, combine, combine_all

if TYPE_CHECKING:  # imported on first use below: it needs scikit-learn
    from .estimator import AsymmetricRandomProjection

__version__ = "0.1.0"

__all__ = [
    "METHODS",
    "AsymmetricRandomProjection",
    "DdrpError",
    "EvaluatePlan",
    "MatmulPlan",
    "Moments",
    "MsePredictor",
    "Plan",
    "SketchModel",
    "Source",
    "__version__",
    "block_moments",
    "bootstrap_weights",
    "build",
    "choose_k",
    "combine",
    "combine_all",
    "compute_moments",
    "evaluate_model",
    "execute",
    "execute_matmul",
    "fit_model",
    "load_model",
    "merge_top_n",
    "min_k",
    "open_source",
    "pair_energy",
    "plan_evaluate",
    "plan_fit",
    "plan_matmul",
    "plan_project",
    "plan_run",
    "plan_stats",
    "predicted_mse_curve",
    "prior_from_labels",
    "project_block",
    "sample_pairs",
    "save_model",
    "sketch_numpy",
    "top_n",
]


def __getattr__(name: str) -> object:
    """Import the scikit-learn estimator on first use: scikit-learn is optional."""
    if name == "AsymmetricRandomProjection":
        from .estimator import AsymmetricRandomProjection

        return AsymmetricRandomProjection
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
