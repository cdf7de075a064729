"""ddrp: data-dependent (asymmetric) random projections on Dask.

Sketches ``s(x)``, ``t(w)`` in R^k whose plain dot product estimates ``x · w``, with the
projection pair built from the two sources' statistics (see ``docs/method.md``).

The house: ``maths`` (numpy only: statistics, builds, predictions), ``io`` (files only: one
reader per format, the model store, the writer and the outputs' life cycle), ``graph`` (the
only Dask module), ``jobs`` (one module per command: a plan, then ``.execute()``), and
``options`` (every option rule, once).
"""

from typing import TYPE_CHECKING, Any

from ._version import __version__
from .errors import DdrpError
from .graph.scheduler import SchedulerLike
from .io.model_store import load_model, save_model
from .io.registry import open_source
from .io.source import Source
from .jobs.base import OnModel, Plan
from .jobs.evaluate import EvaluatePlan, evaluate_model, plan_evaluate
from .jobs.fit import compute_moments, fit_model, plan_fit
from .jobs.matmul import MatmulPlan, execute_matmul, plan_matmul
from .jobs.plan import plan_choose, plan_stats
from .jobs.prior import prior_from_labels
from .jobs.project import plan_project
from .jobs.run import plan_run
from .jobs.sketch import sketch_numpy
from .maths.build import build
from .maths.choose import MsePredictor, choose_k, min_k, predicted_mse_curve
from .maths.metrics import sample_pairs
from .maths.model import SketchModel
from .maths.predict import pair_energy
from .maths.prior import bootstrap_weights
from .maths.project import project_block
from .maths.stats import Moments, block_moments, combine, combine_all
from .maths.topn import merge_top_n, top_n
from .options import METHODS

if TYPE_CHECKING:  # imported on first use below: it needs scikit-learn
    from .estimator import AsymmetricRandomProjection

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
    "plan_choose",
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


def execute(plan: Plan[Any], scheduler: SchedulerLike = None, progress: bool = False,
            on_model: OnModel | None = None) -> Any:
    """Run any plan: ``plan.execute(scheduler, progress, on_model)``; returns its result
    (the model a ``fit``, ``run`` or ``project`` plan fitted or used, the statistics of a
    ``plan_stats`` plan, an ``evaluate`` report, ...).

    Parameters
    ----------
    plan : Plan
        Any ``plan_*`` function's result.
    scheduler : str, distributed.Client or None, default=None
        A Dask scheduler name ("threads", "sync", "processes"), a Client, or None for the
        active client or Dask's default.
    progress : bool, default=False
        A progress line per pass on stderr.
    on_model : callable, optional
        Called with the model as soon as it is built (before pass 2), e.g. to print the report.
    """
    return plan.execute(scheduler, progress, on_model)


def __getattr__(name: str) -> object:
    """Import the scikit-learn estimator on first use: scikit-learn is optional."""
    if name == "AsymmetricRandomProjection":
        from .estimator import AsymmetricRandomProjection

        return AsymmetricRandomProjection
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
