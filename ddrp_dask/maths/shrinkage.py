"""Shrinkage of the centred covariances: the intensities (OAS, Ledoit–Wolf), the blends
the cross-fit searches, and the one shrunk covariance every build uses
(``docs/method.md §4.1``, ``docs/method.md §5.5``). Pure numpy.

A shrinkage *spec* is ``(kind, intensity)``: ``("oas", 0)`` and ``("lw", 0)`` take their
intensity from the data, ``("iso", λ)`` blends towards (tr C/d)·I and ``("diag", λ)``
towards diag(C). ``ShrunkCovariance`` applies one spec to one source's ``Moments``, as an
eigendecomposition (the cross-fit, whose iso blends share one eigh) or as a matrix (the
Cholesky factor of the final build at large d): the same matrix in exact arithmetic.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.linalg as sla

from ..errors import OptionError
from .linalg import MIN_SHRINKAGE, congruence, lower_congruence, oas_intensity
from .stats import Moments

__all__ = ["COARSE_D", "COARSE_GRID", "INTENSITIES", "SEARCH", "SEARCHES", "TWO_SWEEPS_D",
           "EigCache", "Root", "Shrinkage", "ShrunkCovariance", "Spec", "describe",
           "ledoit_wolf", "neighbours", "oas", "parse_pair", "parse_shrinkage", "search_grid",
           "search_kind", "shrinkage_grid", "shrunk_eig", "spec_of"]

#: The shrinkage that asks the cross-fit to search the grid (one of ``options.SHRINKAGE_NAMES``).
SEARCH = "auto"
#: Floor of the diagonal target, relative to tr C/d (a constant column stays invertible).
DIAG_TARGET_FLOOR = 1e-3
#: A covariance with tr C/d below this fraction of tr Σ/d (uncentred) is a constant source.
CONSTANT_REL = 1e-10
#: Intensities of the blends towards (tr C/d)·I ("iso") and towards diag(C) ("diag").
INTENSITIES = (0.01, 0.1, 0.3, 0.6, 0.9)
#: Above this d the shrinkage search uses the coarse grid (build time, see ``shrinkage_grid``).
COARSE_D = 384
#: Up to this d the shrinkage search makes a second sweep (x, then w, then again) over the
#: full grid; above it, up to ``COARSE_D``, it starts from the coarse grid and walks the full
#: grid from the winner (``search_kind``).
TWO_SWEEPS_D = 128
#: The shrinkage searches (``search_kind``).
SEARCHES = ("full", "refined", "coarse")
#: The coarse grid: OAS, one iso blend and two diag blends.
COARSE_GRID: tuple[tuple[str, float], ...] = (("oas", 0.0), ("iso", 0.3), ("diag", 0.1),
                                              ("diag", 0.6))


def oas(scatter: np.ndarray, n: int) -> float:
    """OAS intensity (Chen et al. 2010) for S = scatter/n, in [0, 1], as ``linalg.shrink``
    computes it."""
    return oas_intensity(scatter / max(n, 1), n)


def ledoit_wolf(scatter: np.ndarray, n: int) -> float:
    """Ledoit–Wolf intensity towards (tr S/d)·I for S = scatter/n, in [0, 1].

    The classic LW estimate needs Σ_i ‖x_i x_iᵀ − S‖², a fourth moment that ``Moments`` does
    not hold. This is its Rao–Blackwellised form (RBLW, Chen, Wiesel, Eldar & Hero 2010),
    which replaces that sum by its expectation under Gaussian rows and so needs S only:

        ρ = ((n − 2)/n · tr S² + tr²S) / ((n + 2)(tr S² − tr²S/d)).

    It dominates LW for Gaussian rows and differs from OAS (a second point of the grid).
    Fold statistics could estimate the fourth moment from the spread of the fold covariances,
    but with 5 folds that estimate is too noisy to beat the Gaussian value.

    Parameters
    ----------
    scatter : ndarray of shape (d, d)
        Centred scatter Σ (x − μ)(x − μ)ᵀ.
    n : int
        Rows behind it.

    Returns
    -------
    float
    """
    s = scatter / max(n, 1)
    d = s.shape[0]
    tr, tr2 = float(np.trace(s)), float(np.sum(s * s))
    den = (n + 2) * (tr2 - tr**2 / d)
    if n < 3 or den <= 0:
        return 1.0
    return float(min(((n - 2) / n * tr2 + tr**2) / den, 1.0))


Spec = tuple[str, float]  # ("oas" | "lw" | "iso" | "diag", intensity; 0 for oas/lw)


def shrinkage_grid(d: int) -> list[Spec]:
    """The shrinkage candidates searched per source at dimension d.

    Full grid (d ≤ ``COARSE_D``): OAS, LW, and blends towards (tr C/d)·I ("iso") and towards
    diag(C) ("diag") at ``INTENSITIES``. Above it, where each candidate costs 5 SVDs of
    (d+1)², a coarse grid: OAS, iso 0.3, diag 0.1 and 0.6 (LW is dropped: with many rows it
    is within a few % of OAS).
    """
    if d > COARSE_D:
        return list(COARSE_GRID)
    return [("oas", 0.0), ("lw", 0.0)] + [(kind, lam) for kind in ("iso", "diag")
                                          for lam in INTENSITIES]


def search_grid(kind: str, d: int) -> list[Spec]:
    """The grid a search of ``kind`` walks at dimension d."""
    return list(COARSE_GRID) if kind == "coarse" else shrinkage_grid(min(d, COARSE_D))


def search_kind(d: int) -> str:
    """How ``auto`` searches the shrinkage at dimension d.

    "full" (d ≤ ``TWO_SWEEPS_D``): every point of ``shrinkage_grid(d)`` for each source, two
    sweeps. "refined" (up to ``COARSE_D``): for each source, the ``COARSE_GRID``, then a walk
    along the full grid (``neighbours``) from the best coarse point of each line, while the
    cross-fitted MSE falls: a third to a half of the pairs of the full search, each of which
    costs five SVDs of (d+1)². "coarse" (above): the coarse grid only.
    """
    if d <= TWO_SWEEPS_D:
        return "full"
    return "refined" if d <= COARSE_D else "coarse"


def neighbours(spec: Spec) -> list[Spec]:
    """The full grid's points next to ``spec``: the adjacent intensities of its blend, the
    data-driven intensities (OAS, LW) next to each other and to the weakest iso blend."""
    kind, lam = spec
    if kind in ("oas", "lw"):
        return [("lw" if kind == "oas" else "oas", 0.0), ("iso", INTENSITIES[0])]
    i = INTENSITIES.index(lam)
    out: list[Spec] = [(kind, INTENSITIES[i - 1])] if i else \
        ([("oas", 0.0)] if kind == "iso" else [])
    return out + ([(kind, INTENSITIES[i + 1])] if i + 1 < len(INTENSITIES) else [])


Shrinkage = str | float | tuple[dict[str, Any], dict[str, Any]]


def spec_of(desc: dict[str, Any]) -> Spec:
    """The spec of an ``info["shrinkage_x"]``-style description."""
    kind = str(desc.get("kind"))
    if kind in ("oas", "lw"):
        return (kind, 0.0)
    lam = float(desc.get("intensity", -1.0))
    if kind not in ("iso", "diag") or not 0.0 <= lam <= 1.0:
        raise OptionError(f"shrinkage description {desc!r} is not one of oas, lw, or iso/diag "
                          "with an intensity in [0, 1]")
    return (kind, lam)


def parse_pair(shrinkage: Shrinkage) -> tuple[list[Spec], list[Spec]] | None:
    """Fixed (x, w) spec lists for ``shrinkage``, or None for the search (``SEARCH``)."""
    if isinstance(shrinkage, tuple):
        return [spec_of(shrinkage[0])], [spec_of(shrinkage[1])]
    one = parse_shrinkage(shrinkage)
    return None if one is None else (one, one)


def parse_shrinkage(shrinkage: str | float) -> list[Spec] | None:
    """A fixed spec list for ``shrinkage`` as ``options.check_shrinkage`` returns it (the one
    rule: a name of ``options.SHRINKAGE_NAMES`` or an intensity in [0, 1]), or None for the
    search (``SEARCH``). A name other than ``SEARCH`` is OAS, a number an iso blend."""
    if shrinkage == SEARCH:
        return None
    if isinstance(shrinkage, str):
        return [("oas", 0.0)]
    return [("iso", float(shrinkage))]


def describe(spec: Spec, m: Moments) -> dict[str, Any]:
    """The JSON description of a spec as applied to ``m`` (oas/lw with their intensity)."""
    kind, lam = spec
    if kind == "oas":
        lam = oas(m.scatter, m.n)
    elif kind == "lw":
        lam = ledoit_wolf(m.scatter, m.n)
    return {"kind": kind, "intensity": float(lam)}


@dataclass
class EigCache:
    """eigh results per (training set, spec): the iso blends share the raw eigenvectors."""

    raw: dict[int, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    shrunk: dict[tuple[int, Spec], tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)


@dataclass(frozen=True)
class ShrunkCovariance:
    """The shrunk centred covariance of one source under one spec.

    ``(1 − λ)·C + λ·(tr C/d)·I`` for oas, lw and iso (λ at least ``MIN_SHRINKAGE``);
    ``(1 − λ)·C + λ·max(diag C, floor) + MIN_SHRINKAGE·(tr C/d)·I`` for diag; and
    ``fallback``·I for a constant source (tr C/d below ``CONSTANT_REL``·``fallback``, or not
    finite), where any positive multiple of I keeps the pair unbiased. Built by ``of``.
    """

    m: Moments
    kind: str  # "constant", "diag" or "iso" (oas, lw and the iso blends)
    lam: float
    mu: float
    fallback: float

    @classmethod
    def of(cls, m: Moments, spec: Spec, fallback: float) -> ShrunkCovariance:
        """The rule: which blend, at which intensity, for ``m`` under ``spec``."""
        mu = float(np.trace(m.covariance)) / m.d
        if not mu > CONSTANT_REL * fallback or not np.isfinite(mu):
            return cls(m, "constant", 1.0, mu, fallback)
        if spec[0] == "diag":
            return cls(m, "diag", spec[1], mu, fallback)
        return cls(m, "iso", max(float(describe(spec, m)["intensity"]), MIN_SHRINKAGE), mu,
                   fallback)

    def _target(self, diag: np.ndarray) -> np.ndarray:
        """The diag blend's target: the covariance's diagonal ``diag``, floored."""
        out: np.ndarray = np.maximum(diag, DIAG_TARGET_FLOOR * self.mu)
        return out

    def eig(self, cache: EigCache | None = None, key: int = 0
            ) -> tuple[np.ndarray, np.ndarray]:
        """Eigenvalues (all > 0) and eigenvectors; the iso blends reuse ``cache``'s eigh of
        the raw covariance of the training set ``key``."""
        d = self.m.d
        if self.kind == "constant":
            return np.full(d, self.fallback), np.eye(d)
        c = self.m.covariance
        if self.kind == "diag":
            blend = (1.0 - self.lam) * c
            blend[np.diag_indices(d)] += self.lam * self._target(np.diag(c))
            vals, vecs = np.linalg.eigh(blend)
            return np.clip(vals, 0.0, None) + MIN_SHRINKAGE * self.mu, vecs
        if cache is None:
            vals, vecs = np.linalg.eigh(c)
        else:
            if key not in cache.raw:
                cache.raw[key] = np.linalg.eigh(c)
            vals, vecs = cache.raw[key]
        return (1.0 - self.lam) * np.clip(vals, 0.0, None) + self.lam * self.mu, vecs

    def matrix(self) -> np.ndarray:
        """The shrunk covariance as a fresh matrix (``eig``'s, in exact arithmetic):
        (1 − lam)·C + diag(``shift``)."""
        shift = self.shift()
        if shift is None:
            return np.eye(self.m.d) * self.fallback
        c = self.m.covariance
        c *= 1.0 - self.lam
        c[np.diag_indices(self.m.d)] += shift
        return c

    def shift(self) -> np.ndarray | None:
        """The diagonal D with shrunk = (1 − lam)·C + diag(D), C the raw covariance; None for
        a constant source, whose shrunk matrix is no blend of C."""
        if self.kind == "constant":
            return None
        if self.kind == "diag":
            target = self._target(np.diag(self.m.scatter) / max(self.m.n, 1))
            out: np.ndarray = self.lam * target + MIN_SHRINKAGE * self.mu
            return out
        return np.full(self.m.d, self.lam * self.mu)

    def root(self) -> Root:
        """A factor L with L Lᵀ = the shrunk covariance: its Cholesky factor (d³/3), or
        E diag(√λ) from ``eig`` when it is not numerically positive definite."""
        try:
            return Root(np.linalg.cholesky(self.matrix()), None)  # lets go of the GIL
        except np.linalg.LinAlgError:
            vals, vecs = self.eig()
            root = np.sqrt(vals)
            return Root(vecs * root, root)


def shrunk_eig(m: Moments, spec: Spec, fallback: float, key: int, cache: EigCache
               ) -> tuple[np.ndarray, np.ndarray]:
    """``ShrunkCovariance.eig`` of ``m`` under ``spec``, kept in ``cache`` under ``key``."""
    if (key, spec) not in cache.shrunk:
        cache.shrunk[(key, spec)] = ShrunkCovariance.of(m, spec, fallback).eig(cache, key)
    return cache.shrunk[(key, spec)]


@dataclass(frozen=True)
class Root:
    """L with L Lᵀ = a shrunk covariance: its Cholesky factor (``root`` None), or
    E diag(√λ) (``root`` = √λ). Any such L gives the same P and Q (the SVD of
    ``docs/method.md §5.1`` absorbs the rotation)."""

    low: np.ndarray
    root: np.ndarray | None

    def solve_t(self, b: np.ndarray) -> np.ndarray:
        """L⁻ᵀ B."""
        if self.root is None:
            out: np.ndarray = sla.solve_triangular(self.low, b, trans="T", lower=True,
                                                   check_finite=False)
            return out
        return self.low @ (b / (self.root**2)[:, None])

    def times(self, b: np.ndarray) -> np.ndarray:
        """L B."""
        if self.root is None:
            out: np.ndarray = sla.blas.dtrmm(1.0, self.low, b, lower=True)
            return out
        return self.low @ b

    def congruence(self, a: np.ndarray) -> np.ndarray:
        """Lᵀ A L of a symmetric A (two triangular products for a Cholesky factor)."""
        if self.root is None:
            return lower_congruence(self.low, a)
        return congruence(self.low, a)
