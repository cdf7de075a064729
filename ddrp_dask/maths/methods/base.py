"""What every projection method provides: the one protocol of ``maths.methods``.

A method is a ``Method`` instance in a module of this package, listed in that module's
``METHODS``; the registry (``maths.methods``) collects them. The build, the predictor of
``ddrp plan``, the option rules, the reports and the plot ask the method, never its name.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ..model import SideMap
from ..shrinkage import Shrinkage
from ..stats import Moments

__all__ = ["Fit", "Method", "Predictor", "Statistics", "plain_shrinkage"]


def plain_shrinkage(shrinkage: Shrinkage) -> str | float:
    """``shrinkage`` as the methods that shrink towards (tr/d)·I read it: a name or an
    intensity ("auto" is OAS there); a fixed pair of descriptions, which only the
    cross-fit reads, is OAS."""
    return "oas" if isinstance(shrinkage, tuple) else shrinkage


@dataclass(frozen=True)
class Statistics:
    """What a fit starts from: the merged statistics of X and W, pass 1's statistics per
    fold when the method cross-fits (else None), and the shrinkage, already validated
    (``options.check_shrinkage``; or a pair of ``info["shrinkage_x"]``-style descriptions
    that fixes a fitted model's choice). ``shared`` keeps what several methods compute
    alike from them (e.g. head-tail's and truncated's centred pair), once."""

    mx: Moments
    mw: Moments
    shrinkage: Shrinkage = "auto"
    folds: tuple[Sequence[Moments], Sequence[Moments]] | None = None
    shared: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)
    #: told each step of a long fit as it starts (the CLI's progress line), or None
    progress: Callable[[str], None] | None = field(default=None, compare=False, repr=False)

    def without_folds(self) -> Statistics:
        """The same statistics for a method that does not cross-fit (``shared`` kept)."""
        if self.folds is None:
            return self
        return Statistics(self.mx, self.mw, self.shrinkage, None, self.shared, self.progress)

    @property
    def d(self) -> int:
        return self.mx.d


@dataclass(frozen=True)
class Fit:
    """A fitted pair of side maps, the method's build facts (``info``, JSON-ready), its
    predicted pair-averaged MSE at the fitted K, and the reference predictions its fit gave
    at no cost (``Method.own_references``)."""

    x: SideMap
    w: SideMap
    info: dict[str, Any]
    predicted: float
    references: dict[str, float] = field(default_factory=dict)


class Predictor(ABC):
    """The predicted pair-averaged MSE of one method at any K, from the statistics: the
    parts that do not depend on K are computed once, on construction."""

    #: Whether the predictions are out of sample (cross-fitted over folds).
    out_of_sample: bool = False

    @abstractmethod
    def mse(self, k: int) -> float:
        """The predicted MSE with K = ``k`` (a valid K of the method)."""


class Method(ABC):
    """One projection method: its K range, its fit, its predicted MSE, its report.

    Class attributes say what the callers need to know without a fit: ``name`` (the CLI's
    ``--method``), ``unbiased``, ``cross_fits`` (it wants pass 1's statistics per fold),
    ``k_search`` (how the smallest K meeting a target is found: ``"inverse"`` when the
    MSE is c/K, ``"bisect"`` when it falls with K and each K is costly, ``"scan"``),
    ``costly_mse`` (each K of its curve is a search: plot a few K only) and ``spectrum``
    (the ``info`` key of the spectrum its report shows).
    """

    name: ClassVar[str]
    unbiased: ClassVar[bool] = True
    cross_fits: ClassVar[bool] = False
    k_search: ClassVar[str] = "inverse"
    costly_mse: ClassVar[bool] = False
    spectrum: ClassVar[str] = "sigma"
    #: Why K has a lower bound above 1 (the refusal's reason), e.g. "it stores 2 exact mean
    #: columns".
    min_k_reason: ClassVar[str] = ""
    #: The reference predictions (``methods.REFERENCES``) its ``fit`` may return itself
    #: (``Fit.references``): the build computes them only where the fit did not.
    own_references: ClassVar[tuple[str, ...]] = ()

    def k_range(self, d: int) -> tuple[int, int | None]:
        """Smallest and largest valid K at dimension ``d`` (None: no upper bound)."""
        return 1, None

    def k_refusal(self, k: int, d: int) -> str | None:
        """Why ``k`` columns are impossible at dimension ``d``, or None when they are fine."""
        low, high = self.k_range(d)
        if k < low:
            return (f"K={k} is too small for method {self.name!r}: {self.min_k_reason}, so "
                    f"K ≥ {low}; use --method auto, asymmetric or gaussian for smaller K")
        if high is not None and k > high:
            return (f"K={k} is too large for method {self.name!r} at d={d}: K = "
                    f"{self.exact_text()} is already exact, so K must be ≤ d + 2")
        return None

    def exact_text(self) -> str:
        """From which K the sketch is exact, in words (for ``k_refusal``)."""
        return "d + 2"

    @abstractmethod
    def fit(self, stats: Statistics, k: int, seed: int) -> Fit:
        """The projection pair with ``k`` columns (a valid K), its random draws from
        ``numpy.random.default_rng(seed)``."""

    @abstractmethod
    def predictor(self, stats: Statistics) -> Predictor:
        """The predicted MSE at any K (``fit``'s ``predicted`` at its K)."""

    def reference_shrinkage(self, shrinkage: Shrinkage) -> str | float:
        """The shrinkage of the reference predictions (``asymmetric``, ``gaussian``) the
        build records beside this method's, those not in ``own_references``: its own
        (``plain_shrinkage``)."""
        return plain_shrinkage(shrinkage)

    def rebuild_shrinkage(self, info: dict[str, Any], given: Shrinkage) -> Shrinkage:
        """The shrinkage that rebuilds a model of this method with another seed (``given``:
        the one it was fitted with)."""
        return given

    def allocation(self, info: dict[str, Any]) -> dict[str, int] | None:
        """How the K columns are spent (``report_dict``'s ``allocation``), or None."""
        return None

    def columns_text(self, allocation: dict[str, int]) -> str:
        """The report's line on how the K columns are spent."""
        return ", ".join(f"{v} {name}" for name, v in allocation.items())

    def exact_head(self, info: dict[str, Any]) -> int:
        """The leading columns of its sketches that hold exact coordinates, which a
        ``mixed`` layout stores in float16 (0: none are set apart)."""
        return 0

    def report_note(self) -> str | None:
        """A warning the build report ends with, or None."""
        return None
