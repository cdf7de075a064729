"""ddrp: data-dependent (asymmetric) random projections on Dask.

Sketches ``s(x)``, ``t(w)`` in R^k whose plain dot product estimates ``x · w``, with the
projection pair built from the two sources' statistics (see DESIGN.md).
"""

from .build import METHODS, build
from .errors import DdrpError
from .io import Source, open_source
from .model import SketchModel, load_model, save_model
from .pipeline import compute_moments, execute, fit_model, sketch_numpy
from .plan import Plan, plan_fit, plan_project, plan_run, plan_stats
from .project import project_block
from .stats import Moments, block_moments, combine, combine_all

__version__ = "0.1.0"

__all__ = [
    "METHODS",
    "DdrpError",
    "Moments",
    "Plan",
    "SketchModel",
    "Source",
    "__version__",
    "block_moments",
    "build",
    "combine",
    "combine_all",
    "compute_moments",
    "execute",
    "fit_model",
    "load_model",
    "open_source",
    "plan_fit",
    "plan_project",
    "plan_run",
    "plan_stats",
    "project_block",
    "save_model",
    "sketch_numpy",
]
