"""The projection methods and their registry: the one place that knows them all.

Each module of this package holds one family (``oblivious``: gaussian, orthogonal, sparse;
``asymmetric``: the paper's pair and diagonal; ``head_tail``; ``truncated``; ``auto``) and
lists its ``Method`` instances (``base.Method``) in ``METHODS``; the registry finds them
(``discover``, as xarray's ``backends/plugins.py`` finds its engines). Everything else asks
the registry for a method by name (``get``) and the method for its facts: the option rules
(``options``), the build, the predictor of ``ddrp plan``, the reports and the plot. Adding a
method is one new module here.

Nothing in this package (or below it) imports ``ddrp_dask.options``, which asks the
registry for the methods' K ranges.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterable

from ..folds import folds_for
from .base import Fit, Method, Predictor, Statistics

__all__ = ["BASELINE", "DEFAULT", "NAMES", "REFERENCES", "Fit", "Method", "Predictor",
           "Statistics", "discover", "fold_count", "get"]

#: The default method.
DEFAULT = "auto"
#: The methods every build predicts beside its own, and ``ddrp evaluate`` measures beside it.
REFERENCES = ("asymmetric", "gaussian")
#: The reference every gain is over (a sketch that ignores the data).
BASELINE = "gaussian"


def discover(package: str, paths: Iterable[str]) -> dict[str, Method]:
    """Every ``Method`` listed in the ``METHODS`` of a module of ``package`` (found in
    ``paths``), by name: a new module is a new method, with no list to edit."""
    found: dict[str, Method] = {}
    for info in sorted(pkgutil.iter_modules(list(paths)), key=lambda i: i.name):
        module = importlib.import_module(f"{package}.{info.name}")
        for method in getattr(module, "METHODS", ()):
            if not isinstance(method, Method) or method.name in found:
                raise TypeError(f"{package}.{info.name}.METHODS holds {method!r}: not a "
                                "Method, or a name already taken")
            found[method.name] = method
    return found


_BY_NAME = discover(__name__, __path__)
#: Every method's name: the default first, then in alphabetical order.
NAMES: tuple[str, ...] = tuple(sorted(_BY_NAME, key=lambda name: (name != DEFAULT, name)))


def get(name: str) -> Method:
    """The method called ``name`` (``KeyError`` if none: ``options.check_method`` refuses
    unknown names with the list)."""
    return _BY_NAME[name]


def fold_count(method: str, d: int) -> int:
    """Folds of pass 1's statistics that ``method`` needs at dimension ``d``: 1 unless it
    cross-fits (then ``maths.folds.folds_for(d)``)."""
    return folds_for(d) if get(method).cross_fits else 1
