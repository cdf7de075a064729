"""The cross-fitted, importance-sampled construction of DESIGN §7, and the §4 baseline.

Pure numpy: functions of per-fold ``Moments`` only (no Dask, no I/O).

**Folds.** A row's fold is a hash of its *global* row index (``fold_of``), so the fold
statistics do not depend on how the source is cut into blocks. Pass 1 returns, per block,
``fold_moments(block, row0)``: one ``Moments`` per fold; the lists are merged elementwise
with ``combine_all``, and merging the folds gives the whole-data statistics.

**Basis (§7.1).** With x' = (x − μx, 1), w' = (w − μw, 1) and
``G = [[I, μw], [μxᵀ, μx·μw]]``, x·w = x'ᵀ G w' exactly. For the shrunk second moments
Σx' = diag(Cx, 1) = Lx Lxᵀ and likewise Σw', the SVD ``Lxᵀ G Lw = U diag(ρ) Vᵀ`` gives
P = ρ^{1/2} Uᵀ Lx⁻¹, Q = ρ^{1/2} Vᵀ Lw⁻¹ with PᵀQ = G, so a = P x', b = Q w' have
Σ a_i b_i = x·w; the ρ = 0 direction is dropped. Any factor Lx gives the same P (up to the
signs of its rows, which Q shares): the cross-fit uses Lx = Ex Λx^{1/2} from an eigh of Cx
(shared by the shrinkage blends), the final build of all rows the Cholesky factor, cheaper,
and P, Q only through their products with the k rows of the sketch.

**Sketch (§7.2).** The first j coordinates are candidates; m = k − k_F of them are drawn by
systematic sampling with π_i = min(1, ρ̂_i/τ), Σπ = m, π ≥ 0.1 (π = 1: the exact head), and
stored as a_i/√π_i, b_i/√π_i. Coordinates from j on go through a Haar-orthogonal projection
of width k_F scaled by √(D/k_F), D = d − j, so E RᵀR = I. Every estimate is unbiased.

**Predicted MSE.** Pair-averaged over x, w drawn independently from moments ``Ha = E a aᵀ``,
``Hb = E b bᵀ``: sampled part Σ_{i,l} (π_il/(π_i π_l) − 1) Ha_il Hb_il with systematic
sampling's exact joint inclusion probabilities π_il; tail part (exact Haar moments)
``γ1 tr Ha_T tr Hb_T + γ2 tr(Ha_T Hb_T)``, γ1 = D(D−k_F)/(k_F(D−1)(D+2)),
γ2 = (D−k_F)(D−2)/(k_F(D−1)(D+2)); DESIGN §4's factor uses γ1 for both terms.

**Cross-fit (§7.3–4).** For each fold f the basis is built from the other folds and the
held-out moments Ha_f = P Σx'_f Pᵀ are measured in training coordinates (the held-out rows'
uncentred second moment about the training mean). Their mean products give ρ̂ (allocation)
and the out-of-sample MSE that chooses j, k_F and the shrinkage of each source (coordinate
search over a grid, refined from a coarse start at mid d and coarse at large d: see
``shrinkage_grid`` and ``search_kind``). The reported
``predicted_mse`` re-scores the chosen sketch with, for each fold, π from the ρ̂ of the other
folds (``predicted_mse_selection`` is the value the search minimised). On Gaussian data the
held-out MSE over this prediction was 1.05 (d = 13, 65 and 24 rows); in-sample was 1.5–2×
optimistic.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.linalg as sla

from ..errors import OptionError
from ..options import check_same_d
from .blas import build_blas
from .draws import orthogonal_matrix
from .linalg import MIN_SHRINKAGE, oas_intensity
from .maps import folded_map, head_tail_maps, scale_of
from .model import SideMap
from .predict import choose_head
from .stats import Moments, block_moments, combine_all

__all__ = [
    "N_FOLDS",
    "PI_FLOOR",
    "AutoPredictor",
    "OptimalFit",
    "combine_folds",
    "fit_head_tail",
    "fit_optimal",
    "fold_moments",
    "fold_of",
    "folds_for",
    "ledoit_wolf",
    "merge_folds",
    "moments_by_fold",
    "oas",
    "pieces_fold_moments",
    "search_kind",
    "shrinkage_grid",
]

#: Folds of pass 1's statistics.
N_FOLDS = 5
#: Above this d, pass 1 keeps one fold (``folds_for``).
MAX_CROSS_FIT_D = 1024
#: Smallest inclusion probability of a sampled coordinate (DESIGN §7.2).
PI_FLOOR = 0.1
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
#: Above this d the final basis of all rows comes from Cholesky factors and P, Q are never
#: formed (``_factored_basis``: no eigh, d×d temporaries fewer); up to it, as before, from an
#: eigh of each covariance, so models fitted at these d keep their bytes. The same P and Q.
FACTORED_D = 1024
#: Rows per band of ``_in_sample_energies``.
_BAND = 256
#: Candidate allocations scored exactly (with joint inclusion probabilities) per search.
_N_EXACT = 6
#: Candidate values of j tried per sample size m, and sample sizes m tried.
_N_J = 12
_N_M = 24


# ---------------------------------------------------------------------------------------
# folds


def fold_of(rows: np.ndarray, n_folds: int = N_FOLDS) -> np.ndarray:
    """The fold of each global row index: splitmix64's finaliser of the index, mod ``n_folds``.

    A function of the index only, so folds do not depend on chunking or format, and not a
    periodic pattern (``row % 5`` would alias with periodic data).

    Parameters
    ----------
    rows : ndarray of int
        Global row indices (≥ 0).
    n_folds : int, default=N_FOLDS

    Returns
    -------
    ndarray of int64, same shape as ``rows``

    >>> fold_of(np.arange(8)).tolist()
    [0, 0, 0, 3, 3, 3, 2, 2]
    """
    r = np.asarray(rows)
    if r.size and int(r.min()) < 0:
        raise OptionError(f"row indices must be ≥ 0, got {int(r.min())}")
    z = np.atleast_1d(r).astype(np.uint64).ravel()
    z = z + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = z ^ (z >> np.uint64(31))
    return (z % np.uint64(n_folds)).astype(np.int64).reshape(r.shape)


def fold_moments(block: np.ndarray, row0: int, n_folds: int = N_FOLDS) -> list[Moments]:
    """The ``Moments`` of each fold's rows of one block whose first global row is ``row0``.

    Parameters
    ----------
    block : ndarray of shape (rows, d), float32 or float64
        float32 stays float32 for the Gram product (``block_moments``).
    row0 : int
        Global index of the block's first row.
    n_folds : int, default=N_FOLDS

    Returns
    -------
    list of Moments, length ``n_folds`` (a fold without rows has n = 0)
    """
    return moments_by_fold(block, np.arange(row0, row0 + block.shape[0]), n_folds)


def moments_by_fold(block: np.ndarray, rows: np.ndarray, n_folds: int = N_FOLDS
                    ) -> list[Moments]:
    """The ``Moments`` of each fold of ``block``, whose rows have the global indices
    ``rows`` (e.g. a block with its invalid rows left out)."""
    return _by_fold([block], fold_of(rows, n_folds), n_folds)


def pieces_fold_moments(pieces: Sequence[np.ndarray], row0: int, n_folds: int = N_FOLDS
                        ) -> list[Moments]:
    """``fold_moments`` of the block the ``pieces`` (consecutive rows, the first at global
    row ``row0``) make up, without assembling it: each fold's rows are gathered from the
    pieces directly, so the block is never copied whole (the same rows in the same order,
    hence the same bytes)."""
    n = sum(len(p) for p in pieces)
    return _by_fold(pieces, fold_of(np.arange(row0, row0 + n), n_folds), n_folds)


def _by_fold(pieces: Sequence[np.ndarray], folds: np.ndarray, n_folds: int) -> list[Moments]:
    """Each fold's ``block_moments`` of the rows of ``pieces`` (in order) whose entry of
    ``folds`` is that fold: one copy of the fold's rows, shifted in place."""
    cuts = np.cumsum([len(p) for p in pieces])[:-1]
    by_piece = np.split(folds, cuts)
    out = []
    for f in range(n_folds):
        parts = [p[g == f] for p, g in zip(pieces, by_piece, strict=True)]
        out.append(block_moments(parts[0] if len(parts) == 1 else np.concatenate(parts),
                                 overwrite_input=True))
    return out


def combine_folds(parts: Sequence[Sequence[Moments]], overwrite: bool = False
                  ) -> list[Moments]:
    """Merge per-block fold statistics fold by fold (``combine_all``'s tree for each;
    ``overwrite`` as there)."""
    return [combine_all([p[f] for p in parts], overwrite) for f in range(len(parts[0]))]


def merge_folds(parts: Sequence[Sequence[Moments]]) -> list[Moments]:
    """A reduction task of pass 1 per fold: ``combine_folds`` reusing its inputs' arrays
    (``maths.stats.merge_moments``)."""
    return combine_folds(parts, overwrite=True)


def folds_for(d: int) -> int:
    """Folds of pass 1 at dimension d: ``N_FOLDS``, or 1 (an in-sample build) above
    ``MAX_CROSS_FIT_D``, where five d×d scatters per block and five SVDs of (d+1)² per
    shrinkage candidate cost more than the cross-fit is worth."""
    return N_FOLDS if d <= MAX_CROSS_FIT_D else 1


# ---------------------------------------------------------------------------------------
# shrinkage


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
    (d+1)² (≈ 0.7 s each at d = 1024), a coarse grid: OAS, iso 0.3, diag 0.1 and 0.6 (LW is
    dropped: with many rows it is within a few % of OAS).
    """
    if d > COARSE_D:
        return list(COARSE_GRID)
    return [("oas", 0.0), ("lw", 0.0)] + [(kind, lam) for kind in ("iso", "diag")
                                          for lam in INTENSITIES]


def _grid(kind: str, d: int) -> list[Spec]:
    """The grid a search of ``kind`` walks at dimension d."""
    return list(COARSE_GRID) if kind == "coarse" else shrinkage_grid(min(d, COARSE_D))


def search_kind(d: int) -> str:
    """How ``auto`` searches the shrinkage at dimension d.

    "full" (d ≤ ``TWO_SWEEPS_D``): every point of ``shrinkage_grid(d)`` for each source, two
    sweeps. "refined" (up to ``COARSE_D``): for each source, the ``COARSE_GRID``, then a walk
    along the full grid (``_neighbours``) from the best coarse point of each line, while the
    cross-fitted MSE falls: a third to a half of the pairs of the full search, each of which
    costs five SVDs of (d+1)². "coarse" (above): the coarse grid only.
    """
    if d <= TWO_SWEEPS_D:
        return "full"
    return "refined" if d <= COARSE_D else "coarse"


def _neighbours(spec: Spec) -> list[Spec]:
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


def _spec_of(desc: dict[str, Any]) -> Spec:
    """The spec of an ``info["shrinkage_x"]``-style description."""
    kind = str(desc.get("kind"))
    if kind in ("oas", "lw"):
        return (kind, 0.0)
    lam = float(desc.get("intensity", -1.0))
    if kind not in ("iso", "diag") or not 0.0 <= lam <= 1.0:
        raise OptionError(f"shrinkage description {desc!r} is not one of oas, lw, or iso/diag "
                          "with an intensity in [0, 1]")
    return (kind, lam)


def _parse_pair(shrinkage: Shrinkage) -> tuple[list[Spec], list[Spec]] | None:
    """Fixed (x, w) spec lists for ``shrinkage``, or None for the search ("auto")."""
    if isinstance(shrinkage, tuple):
        return [_spec_of(shrinkage[0])], [_spec_of(shrinkage[1])]
    one = _parse_shrinkage(shrinkage)
    return None if one is None else (one, one)


def _parse_shrinkage(shrinkage: str | float) -> list[Spec] | None:
    """A fixed spec list for ``shrinkage``, or None for the search ("auto")."""
    if isinstance(shrinkage, str):
        if shrinkage == "auto":
            return None
        if shrinkage in ("oas", "lw"):
            return [(shrinkage, 0.0)]
        raise OptionError(f"shrinkage must be 'auto', 'oas', 'lw' or a number in [0, 1], got "
                          f"{shrinkage!r}")
    lam = float(shrinkage)
    if not 0.0 <= lam <= 1.0:
        raise OptionError(f"shrinkage must be 'auto', 'oas', 'lw' or a number in [0, 1], got "
                          f"{shrinkage}")
    return [("iso", lam)]


def _describe(spec: Spec, m: Moments) -> dict[str, Any]:
    """The JSON description of a spec as applied to ``m`` (oas/lw with their intensity)."""
    kind, lam = spec
    if kind == "oas":
        lam = oas(m.scatter, m.n)
    elif kind == "lw":
        lam = ledoit_wolf(m.scatter, m.n)
    return {"kind": kind, "intensity": float(lam)}


@dataclass
class _EigCache:
    """eigh results per (training set, spec): the iso blends share the raw eigenvectors."""

    raw: dict[int, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    shrunk: dict[tuple[int, Spec], tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)


def _shrunk_eig(m: Moments, spec: Spec, fallback: float, key: int,
                cache: _EigCache) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues (all > 0) and eigenvectors of the shrunk centred covariance of ``m``."""
    if (key, spec) in cache.shrunk:
        return cache.shrunk[(key, spec)]
    c = m.covariance
    d = c.shape[0]
    mu = float(np.trace(c)) / d
    if not mu > CONSTANT_REL * fallback or not np.isfinite(mu):
        # a constant source (or round-off only): any positive multiple of I is unbiased
        out = (np.full(d, fallback), np.eye(d))
    elif spec[0] == "diag":
        target = np.maximum(np.diag(c), DIAG_TARGET_FLOOR * mu)
        blend = (1.0 - spec[1]) * c
        blend[np.diag_indices(d)] += spec[1] * target
        vals, vecs = np.linalg.eigh(blend)
        out = (np.clip(vals, 0.0, None) + MIN_SHRINKAGE * mu, vecs)
    else:
        if key not in cache.raw:
            cache.raw[key] = np.linalg.eigh(c)
        vals, vecs = cache.raw[key]
        lam = float(_describe(spec, m)["intensity"])
        lam = max(lam, MIN_SHRINKAGE)
        out = ((1.0 - lam) * np.clip(vals, 0.0, None) + lam * mu, vecs)
    cache.shrunk[(key, spec)] = out
    return out


# ---------------------------------------------------------------------------------------
# the folded, balanced basis (§7.1)


@dataclass(frozen=True)
class _Basis:
    """P, Q (d, d+1) acting on x' = (x − mean_x, 1), w' = (w − mean_w, 1); ρ descending."""

    p: np.ndarray
    q: np.ndarray
    rho: np.ndarray
    mean_x: np.ndarray
    mean_w: np.ndarray


def _basis(eig_x: tuple[np.ndarray, np.ndarray], eig_w: tuple[np.ndarray, np.ndarray],
           mean_x: np.ndarray, mean_w: np.ndarray) -> _Basis:
    """SVD of Lxᵀ G Lw with Σx' = diag(Cx, 1) = Lx Lxᵀ; the last (ρ = 0) direction dropped."""
    (vx, ex), (vw, ew) = eig_x, eig_w
    lx, lw = ex * np.sqrt(vx), ew * np.sqrt(vw)
    d = lx.shape[0]
    k = np.empty((d + 1, d + 1))
    k[:d, :d] = lx.T @ lw
    k[:d, d] = lx.T @ mean_w
    k[d, :d] = mean_x @ lw
    k[d, d] = float(mean_x @ mean_w)
    u, rho, vt = np.linalg.svd(k)
    u, rho, vt = u[:, :d], rho[:d], vt[:d]
    root = np.sqrt(rho)[:, None]
    p = np.empty((d, d + 1))
    p[:, :d] = ((root * u[:d].T) / np.sqrt(vx)) @ ex.T
    p[:, d] = root[:, 0] * u[d]
    q = np.empty((d, d + 1))
    q[:, :d] = ((root * vt[:, :d]) / np.sqrt(vw)) @ ew.T
    q[:, d] = root[:, 0] * vt[:, d]
    return _Basis(p, q, rho, mean_x, mean_w)


def _coord_moment(p: np.ndarray, m: Moments, mean: np.ndarray) -> np.ndarray:
    """E[a aᵀ] over the rows of ``m`` for a = P (v − mean, 1): their uncentred second moment
    about ``mean`` in the basis."""
    d = p.shape[0]
    pd = p[:, :d]
    v = pd @ (m.mean - mean) + p[:, d]
    out = (pd @ m.covariance) @ pd.T
    out += np.outer(v, v)
    sym: np.ndarray = (out + out.T) * 0.5
    return sym


def _shrunk_cov(m: Moments, spec: Spec, fallback: float) -> np.ndarray:
    """The shrunk centred covariance of ``m`` as a fresh matrix: ``_shrunk_eig``'s, whose
    eigenvalues it has in exact arithmetic."""
    c = m.covariance
    d = c.shape[0]
    mu = float(np.trace(c)) / d
    if not mu > CONSTANT_REL * fallback or not np.isfinite(mu):
        return np.eye(d) * fallback
    if spec[0] == "diag":
        target = np.maximum(np.diag(c), DIAG_TARGET_FLOOR * mu)
        c *= 1.0 - spec[1]
        c[np.diag_indices(d)] += spec[1] * target + MIN_SHRINKAGE * mu
    else:
        lam = max(float(_describe(spec, m)["intensity"]), MIN_SHRINKAGE)
        c *= 1.0 - lam
        c[np.diag_indices(d)] += lam * mu
    return c


@dataclass(frozen=True)
class _Root:
    """L with L Lᵀ = the shrunk covariance: its Cholesky factor (``root`` None), or
    E diag(√λ) from ``_shrunk_eig`` (``root`` = √λ) when it is not numerically positive
    definite. Any such L gives the same P and Q (§7.1's SVD absorbs the rotation)."""

    low: np.ndarray
    root: np.ndarray | None

    def solve_t(self, b: np.ndarray) -> np.ndarray:
        """L⁻ᵀ B."""
        if self.root is None:
            out: np.ndarray = sla.solve_triangular(self.low, b, trans="T", lower=True,
                                                   check_finite=False)
            return out
        return self.low @ (b / (self.root**2)[:, None])


def _root(m: Moments, spec: Spec, fallback: float) -> _Root:
    """The factor of the shrunk centred covariance of ``m`` (one Cholesky, d³/3)."""
    try:
        return _Root(sla.cholesky(_shrunk_cov(m, spec, fallback), lower=True,
                                  overwrite_a=True, check_finite=False), None)
    except np.linalg.LinAlgError:
        vals, vecs = _shrunk_eig(m, spec, fallback, 0, _EigCache())
        root = np.sqrt(vals)
        return _Root(vecs * root, root)


@dataclass(frozen=True)
class _Final:
    """The basis of all rows, factored: P = [√ρ Nxᵀ, √ρ·ux], Q = [√ρ Nwᵀ, √ρ·uw] (Nx = Lx⁻ᵀ U
    without its last row ux), and the in-sample coordinate energies."""

    rho: np.ndarray
    nx: np.ndarray
    nw: np.ndarray
    ux: np.ndarray
    uw: np.ndarray
    energies: _Energies

    def maps(self, m: np.ndarray, mx: Moments, mw: Moments) -> tuple[SideMap, SideMap]:
        """``maps.folded_map`` of M P and M Q, at O(k d²): P and Q are never formed."""
        scaled = m * np.sqrt(self.rho)
        out = []
        for n, u, mom in ((self.nx, self.ux, mx), (self.nw, self.uw, mw)):
            matrix = np.ascontiguousarray((scaled @ n.T).T)
            out.append(SideMap(matrix, scaled @ u - mom.mean @ matrix, mom.mean.copy()))
        return out[0], out[1]


@dataclass(frozen=True)
class _FormedFinal:
    """The basis of all rows with P and Q formed (``_basis``), and its in-sample energies."""

    basis: _Basis
    energies: _Energies

    @property
    def rho(self) -> np.ndarray:
        return self.basis.rho

    def maps(self, m: np.ndarray, mx: Moments, mw: Moments) -> tuple[SideMap, SideMap]:
        return folded_map(m, self.basis.p, mx.mean), folded_map(m, self.basis.q, mw.mean)


def _final_basis(mx: Moments, mw: Moments, specs: tuple[Spec, Spec],
                 scales: tuple[float, float], lead: int | None) -> _Final | _FormedFinal:
    """The basis of the whole data and the in-sample energies of its coordinates: up to
    ``FACTORED_D`` as the cross-fit builds it (eigh, P and Q formed), above it factored."""
    if mx.d > FACTORED_D:
        return _factored_basis(mx, mw, specs, scales, lead)
    b = _basis(_shrunk_eig(mx, specs[0], scales[0], -1, _EigCache()),
               _shrunk_eig(mw, specs[1], scales[1], -1, _EigCache()), mx.mean, mw.mean)
    return _FormedFinal(b, _energies([(_coord_moment(b.p, mx, mx.mean),
                                       _coord_moment(b.q, mw, mw.mean))]))


def _factored_basis(mx: Moments, mw: Moments, specs: tuple[Spec, Spec],
                    scales: tuple[float, float], lead: int | None) -> _Final:
    """``_basis`` of the whole data from Cholesky factors (no eigh), with the in-sample
    ``_energies`` of its coordinates (``lead``: as ``_in_sample_energies``).

    The moments about the fitted means in the basis are Ha = √ρ (Nxᵀ Cx Nx + ux uxᵀ) √ρ, so
    P and Q are never formed. The factors are recomputed after the SVD rather than kept
    through it: its workspace (about 4 d² floats) is the build's peak.
    """
    d = mx.d
    rx, rw = _root(mx, specs[0], scales[0]), _root(mw, specs[1], scales[1])
    k = np.empty((d + 1, d + 1), order="F")
    np.matmul(rx.low.T, rw.low, out=k[:d, :d])
    k[:d, d] = rx.low.T @ mw.mean
    k[d, :d] = mx.mean @ rw.low
    k[d, d] = float(mx.mean @ mw.mean)
    del rx, rw
    u, rho, vt = sla.svd(k, overwrite_a=True, check_finite=False, lapack_driver="gesdd")
    del k
    rho = rho[:d]
    ux, uw = u[d, :d].copy(), vt[:d, d].copy()
    nx = _root(mx, specs[0], scales[0]).solve_t(u[:d, :d])
    del u
    nw = _root(mw, specs[1], scales[1]).solve_t(vt[:d, :d].T)
    del vt
    root = np.sqrt(rho)
    ha = _final_moment(nx, mx, root * ux, root)
    hb = _final_moment(nw, mw, root * uw, root)
    return _Final(rho, nx, nw, ux, uw, _in_sample_energies(ha, hb, lead))


def _final_moment(n: np.ndarray, m: Moments, v: np.ndarray, root: np.ndarray) -> np.ndarray:
    """``_coord_moment`` of the fitted rows in the factored basis: √ρ Nᵀ C N √ρ + v vᵀ."""
    t = m.scatter @ n
    h = n.T @ t
    del t
    h *= root[:, None]
    h *= (root / max(m.n, 1))[None, :]
    h += np.outer(v, v)
    h += h.T
    h *= 0.5
    return h


# ---------------------------------------------------------------------------------------
# energies and predicted MSE (§7.2)


@dataclass(frozen=True)
class _Energies:
    """Fold-averaged coordinate moments, in the form every MSE evaluation needs.

    ``e`` = mean_f Ha_f∘Hb_f (in a final build its leading block only); ``trtr[j]`` =
    mean_f tr Ha_f[j:, j:] · tr Hb_f[j:, j:];
    ``tail_e[j]`` = Σ e[j:, j:]; ``rho_hat`` = (mean_f diag Ha_f · diag Hb_f)^{1/2}.
    """

    e: np.ndarray
    trtr: np.ndarray
    tail_e: np.ndarray
    rho_hat: np.ndarray
    diag: np.ndarray


def _energies(pairs: Sequence[tuple[np.ndarray, np.ndarray]]) -> _Energies:
    """``_Energies`` of a list of (Ha, Hb), one pair per held-out fold (or the fitted rows)."""
    e = np.mean([ha * hb for ha, hb in pairs], axis=0)
    suffix = [(np.cumsum(np.diag(ha)[::-1])[::-1], np.cumsum(np.diag(hb)[::-1])[::-1])
              for ha, hb in pairs]
    trtr = np.append(np.mean([sa * sb for sa, sb in suffix], axis=0), 0.0)
    rev = e[::-1, ::-1].cumsum(0).cumsum(1)
    tail_e = np.append(np.diag(rev)[::-1], 0.0)
    diag = np.diag(e).copy()
    return _Energies(e, trtr, tail_e, np.sqrt(np.clip(diag, 0.0, None)), diag)


def _in_sample_energies(ha: np.ndarray, hb: np.ndarray, lead: int | None) -> _Energies:
    """``_energies([(ha, hb)])`` keeping only ``e[:lead, :lead]`` (all of it for None), the
    part the allocations read, and without d×d temporaries: ``tail_e`` from the row sums
    of the upper triangle of Ha∘Hb, a band of rows at a time."""
    d = ha.shape[0]
    j = d if lead is None else min(d, lead)
    e = ha[:j, :j] * hb[:j, :j]
    diag = np.diagonal(ha) * np.diagonal(hb)
    row = np.empty(d)  # Σ_{l ≥ t} e_tl
    for t0 in range(0, d, _BAND):
        t1 = min(d, t0 + _BAND)
        row[t0:t1] = np.triu(ha[t0:t1, t0:] * hb[t0:t1, t0:]).sum(axis=1)
    tail_e = np.append(np.cumsum((2.0 * row - diag)[::-1])[::-1], 0.0)
    sa = np.cumsum(np.diagonal(ha)[::-1])[::-1]
    sb = np.cumsum(np.diagonal(hb)[::-1])[::-1]
    return _Energies(e, np.append(sa * sb, 0.0), tail_e, np.sqrt(np.clip(diag, 0.0, None)),
                     diag)


def _tail_mse(en: _Energies, j: int, width: int) -> float:
    """Exact pair-averaged variance of a Haar tail of ``width`` over coordinates j.. ."""
    dim = en.diag.size - j
    if dim <= 0 or width >= dim:
        return 0.0
    if width == 0:
        return float("inf")  # dropping the tail would bias the estimate: never chosen
    g1 = dim * (dim - width) / (width * (dim - 1) * (dim + 2))
    g2 = (dim - width) * (dim - 2) / (width * (dim - 1) * (dim + 2))
    return float(g1 * en.trtr[j] + g2 * en.tail_e[j])


def _joint_inclusion(pi: np.ndarray) -> np.ndarray:
    """Systematic sampling's joint inclusion probabilities π_il (diagonal: π_i).

    Unit i is drawn when the offset U ∈ [0, 1) lands in the arc [c_{i−1}, c_i) mod 1 of the
    cumulative π; π_il is the length of the intersection of two arcs (three lifts)."""
    c = np.concatenate([[0.0], np.cumsum(pi)])
    start = np.mod(c[:-1], 1.0)
    end = start + pi
    out = np.zeros((pi.size, pi.size))
    for shift in (-1.0, 0.0, 1.0):
        lo = np.maximum(start[:, None], start[None, :] + shift)
        hi = np.minimum(end[:, None], end[None, :] + shift)
        out += np.clip(hi - lo, 0.0, None)
    return out


def _sampled_mse(en: _Energies, pi: np.ndarray, exact: bool) -> float:
    """Σ_{i,l} (π_il/(π_i π_l) − 1) e_il over the sampled (π < 1) coordinates; only the
    diagonal Σ e_ii (1/π_i − 1) unless ``exact``."""
    idx = np.flatnonzero(pi < 1.0)
    if idx.size == 0:
        return 0.0
    p = pi[idx]
    if not exact:
        return float(np.sum(en.diag[idx] * (1.0 / p - 1.0)))
    c = _joint_inclusion(p) / np.outer(p, p) - 1.0
    return float(np.sum(c * en.e[np.ix_(idx, idx)]))


# ---------------------------------------------------------------------------------------
# allocation: j candidates, m = k − k_F sampled, π by threshold with a floor


@dataclass(frozen=True)
class _Alloc:
    """j candidates, m drawn among them with probabilities ``pi`` (length j), tail ``width``."""

    j: int
    m: int
    width: int
    pi: np.ndarray

    @property
    def head(self) -> int:
        return int(np.sum(self.pi >= 1.0))


def _threshold(r: np.ndarray, m: int) -> np.ndarray | None:
    """π_i = min(1, r_i/τ) with Σπ = m exactly, or None when the floor π ≥ 0.1 fails."""
    j = r.size
    if m >= j:
        return np.ones(j) if m == j else None
    order = np.argsort(-r, kind="stable")
    s = r[order]
    rest = np.cumsum(s[::-1])[::-1][:m]  # Σ_{t ≥ h} s_t for h < m
    tau_h = rest / (m - np.arange(m))
    ok = np.flatnonzero((tau_h > 0) & (s[:m] <= tau_h * (1 + 1e-12)))
    if ok.size == 0:
        return None
    h = int(ok[0])
    tau = float(tau_h[h])
    pi = np.ones(j)
    low = order[h:]
    pi[low] = r[low] / tau
    if not float(pi[low].min()) >= PI_FLOOR:
        return None
    pi[low] *= (m - h) / float(np.sum(pi[low]))  # Σπ an exact integer for the design
    return np.minimum(pi, 1.0)


def _alloc_mse(en: _Energies, a: _Alloc, exact: bool = True) -> float:
    return _sampled_mse(en, a.pi, exact) + _tail_mse(en, a.j, a.width)


@functools.lru_cache(maxsize=64)
def _candidates(d: int, k: int) -> tuple[tuple[int, int], ...]:
    """(j, m) pairs to try: m = k − k_F ≤ min(k, d), j from m up to min(d, 10 m)."""
    ms = list(range(min(k, d) + 1))
    if len(ms) > _N_M:
        ms = sorted(set(np.linspace(0, min(k, d), _N_M).round().astype(int).tolist()))
    out = []
    for m in ms:
        top = min(d, int(m / PI_FLOOR))
        js = {m, top} | set(np.geomspace(max(m, 1), max(top, 1), _N_J).round().astype(int))
        out += [(int(j), m) for j in sorted(js) if m <= j <= top]
    return tuple(out)


def _choose_alloc(en: _Energies, k: int) -> tuple[_Alloc, float]:
    """The allocation minimising the predicted MSE under ``en``: every candidate scored
    with the diagonal formula, the best few exactly (joint inclusion probabilities)."""
    d = en.diag.size
    if k >= d:
        return _Alloc(d, d, 0, np.ones(d)), 0.0
    scored = []
    for j, m in _candidates(d, k):
        width = k - m
        if (width == 0) != (j == d) or width > d - j:
            continue
        pi = _threshold(en.rho_hat[:j], m)
        if pi is None:
            continue
        a = _Alloc(j, m, width, pi)
        scored.append((_alloc_mse(en, a, exact=False), a))
    scored.sort(key=lambda t: t[0])
    best = [(_alloc_mse(en, a), -a.head, a.j, a) for _, a in scored[:_N_EXACT]]
    mse, _, _, alloc = min(best, key=lambda t: t[:3])
    return alloc, mse


# ---------------------------------------------------------------------------------------
# random draws (from the seed only) and the side maps


def _systematic(pi: np.ndarray, u: float) -> tuple[np.ndarray, np.ndarray]:
    """Systematic sample of the units with π < 1 for offset u: their indices and the π used,
    renormalised so that Σπ is an exact integer (the sample size is then fixed)."""
    idx = np.flatnonzero(pi < 1.0)
    if idx.size == 0:
        return idx, np.zeros(0)
    c = np.cumsum(pi[idx])
    target = float(round(c[-1]))
    c *= target / c[-1]
    c[-1] = target
    prev = np.concatenate([[0.0], c[:-1]])
    chosen = (np.ceil(c - u) - np.ceil(prev - u)) >= 1
    return idx[chosen], (c - prev)[chosen]


def _sketch_matrix(alloc: _Alloc, d: int, k: int, rng: np.random.Generator) -> np.ndarray:
    """M (k, d) on the coordinates: exact head rows, e_i/√π_i for the sample, the Haar tail
    over coordinates j.., then zero rows up to k."""
    u = float(rng.random())
    head = np.flatnonzero(alloc.pi >= 1.0)
    chosen, p = _systematic(alloc.pi, u)
    out = np.zeros((k, d))
    h, s = head.size, chosen.size
    out[np.arange(h), head] = 1.0
    out[h + np.arange(s), chosen] = 1.0 / np.sqrt(p)
    if alloc.width:
        out[h + s:h + s + alloc.width, alloc.j:] = orthogonal_matrix(rng, alloc.width, d - alloc.j)
    return out


@dataclass(frozen=True)
class OptimalFit:
    """A fitted pair of side maps and the build facts.

    Attributes
    ----------
    x, w : SideMap
        sketch(v) = v @ matrix + offset; s(x)·t(w) estimates x·w without bias.
    info : dict
        JSON-serialisable (lists, floats, ints, str): see ``fit_optimal``.
    """

    x: SideMap
    w: SideMap
    info: dict[str, Any]


# ---------------------------------------------------------------------------------------
# cross-fitting (§7.3) and the shrinkage search (§7.4)


@dataclass
class _CrossFit:
    """Held-out folds, their training statistics, and eigh caches shared by the search."""

    folds_x: Sequence[Moments]
    folds_w: Sequence[Moments]
    used: list[int]
    train_x: dict[int, Moments]
    train_w: dict[int, Moments]
    scale_x: float
    scale_w: float
    cache_x: _EigCache = field(default_factory=_EigCache)
    cache_w: _EigCache = field(default_factory=_EigCache)
    memo: dict[tuple[Spec, Spec], tuple[_Alloc, float, _Energies]] = field(default_factory=dict)
    #: held-out pairs of the best specs so far only (5 × 2 d² floats per entry)
    pairs: dict[tuple[Spec, Spec], list[tuple[np.ndarray, np.ndarray]]] = field(
        default_factory=dict)


def _cross_fit(folds_x: Sequence[Moments], folds_w: Sequence[Moments], scale_x: float,
               scale_w: float) -> _CrossFit:
    """Folds usable as held-out sets: rows on both sides, in the fold and outside it."""
    train_x: dict[int, Moments] = {}
    train_w: dict[int, Moments] = {}
    used = []
    for f in range(len(folds_x)):
        tx = combine_all([m for g, m in enumerate(folds_x) if g != f] or [folds_x[f]])
        tw = combine_all([m for g, m in enumerate(folds_w) if g != f] or [folds_w[f]])
        if len(folds_x) > 1 and min(folds_x[f].n, folds_w[f].n, tx.n, tw.n) > 0:
            used.append(f)
            train_x[f], train_w[f] = tx, tw
    return _CrossFit(folds_x, folds_w, used, train_x, train_w, scale_x, scale_w)


def _fold_pair(cv: _CrossFit, sx: Spec, sw: Spec, f: int) -> tuple[np.ndarray, np.ndarray]:
    """The held-out coordinate moments (Ha_f, Hb_f) of fold f in the basis of the others."""
    tx, tw = cv.train_x[f], cv.train_w[f]
    b = _basis(_shrunk_eig(tx, sx, cv.scale_x, f, cv.cache_x),
               _shrunk_eig(tw, sw, cv.scale_w, f, cv.cache_w), tx.mean, tw.mean)
    return (_coord_moment(b.p, cv.folds_x[f], tx.mean),
            _coord_moment(b.q, cv.folds_w[f], tw.mean))


def _parallel(jobs: Sequence[Callable[[], Any]]) -> list[Any]:
    """Run independent jobs on one Python thread per core (each on the build's one BLAS
    thread at these d, ``maths.blas``): the same bytes whatever their number or order."""
    if len(jobs) < 2:
        return [job() for job in jobs]
    with ThreadPoolExecutor(min(len(jobs), os.cpu_count() or 1)) as pool:
        return list(pool.map(lambda job: job(), jobs))


def _pairs(cv: _CrossFit, sx: Spec, sw: Spec) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per used fold: the held-out coordinate moments (Ha_f, Hb_f) in the basis of the other
    folds."""
    return _parallel([functools.partial(_fold_pair, cv, sx, sw, f) for f in cv.used])


def _score(cv: _CrossFit, sx: Spec, sw: Spec, k: int) -> tuple[_Alloc, float, _Energies]:
    """Best allocation and its out-of-sample MSE for one pair of shrinkage specs."""
    if (sx, sw) not in cv.memo:
        pairs = _pairs(cv, sx, sw)
        en = _energies(pairs)
        alloc, mse = _choose_alloc(en, k)
        cv.memo[(sx, sw)] = (alloc, mse, en)
        cv.pairs[(sx, sw)] = pairs
    return cv.memo[(sx, sw)]


def _honest_mse(pairs: list[tuple[np.ndarray, np.ndarray]], alloc: _Alloc) -> float:
    """The chosen allocation's MSE with π for fold f taken from ρ̂ of the other folds only,
    so the fold that measures the error did not also set the probabilities (§7.3's single
    ρ̂ reuses it: optimistic when folds are small)."""
    if len(pairs) < 2 or alloc.j == alloc.m:
        return _alloc_mse(_energies(pairs), alloc)
    prods = [np.diag(ha) * np.diag(hb) for ha, hb in pairs]
    values = []
    for f, pair in enumerate(pairs):
        others = np.mean([p for g, p in enumerate(prods) if g != f], axis=0)
        pi = _threshold(np.sqrt(np.clip(others[:alloc.j], 0.0, None)), alloc.m)
        a = alloc if pi is None else _Alloc(alloc.j, alloc.m, alloc.width, pi)
        values.append(_alloc_mse(_energies([pair]), a))
    return float(np.mean(values))


def _search(cv: _CrossFit, grid_x: list[Spec], grid_w: list[Spec], k: int,
            rounds: int) -> tuple[Spec, Spec]:
    """Coordinate search over the two grids, from (first, first), ``rounds`` sweeps of x
    then w; ties keep the earlier grid point."""
    best = (grid_x[0], grid_w[0])
    for _ in range(rounds):
        before = best
        best = _best(cv, [(s, best[1]) for s in grid_x], k)
        best = _best(cv, [(best[0], s) for s in grid_w], k)
        if best == before:
            break
    return best


def _refined_search(cv: _CrossFit, k: int) -> tuple[Spec, Spec]:
    """``search_kind`` "refined": per source (x, then w), the best coarse point of each line
    (OAS and the iso blends; the diag blends), a walk from each (``_walk``), and the better
    end (ties keep the earlier)."""
    best = (COARSE_GRID[0], COARSE_GRID[0])
    lines = ([s for s in COARSE_GRID if s[0] != "diag"], [s for s in COARSE_GRID
                                                          if s[0] == "diag"])
    for side in (0, 1):
        ends = [_walk(cv, k, _best(cv, [_with(best, side, s) for s in line], k), side)
                for line in lines]
        best = _best(cv, ends, k)
    return best


def _walk(cv: _CrossFit, k: int, start: tuple[Spec, Spec], side: int) -> tuple[Spec, Spec]:
    """From ``start``, steps to the best neighbour of ``side``'s spec on the full grid
    while that lowers the cross-fitted MSE."""
    best = start
    while True:
        step = _best(cv, [best, *(_with(best, side, s) for s in _neighbours(best[side]))], k)
        if step == best:
            return best
        best = step


def _with(pair: tuple[Spec, Spec], side: int, spec: Spec) -> tuple[Spec, Spec]:
    """``pair`` with the spec of ``side`` (0: x, 1: w) replaced."""
    return (spec, pair[1]) if side == 0 else (pair[0], spec)


def _best(cv: _CrossFit, options: list[tuple[Spec, Spec]], k: int) -> tuple[Spec, Spec]:
    """The first option of least cross-fitted MSE; held-out pairs kept for it only."""
    best, best_mse = options[0], _score(cv, *options[0], k)[1]
    for sp in options[1:]:
        mse = _score(cv, *sp, k)[1]
        if mse < best_mse:
            best, best_mse = sp, mse
        cv.pairs = {key: v for key, v in cv.pairs.items() if key == best}
    return best


def _check_folds(folds_x: Sequence[Moments], folds_w: Sequence[Moments], k: int) -> None:
    if len(folds_x) != len(folds_w) or not folds_x:
        raise OptionError(f"got {len(folds_x)} folds for X and {len(folds_w)} for W; pass the "
                          "same number (≥ 1) of fold statistics for both sources")
    if folds_x[0].d != folds_w[0].d:
        raise OptionError(f"got d={folds_x[0].d} for X but d={folds_w[0].d} for W; both "
                          "sources must have the same dimension")
    if sum(m.n for m in folds_x) == 0 or sum(m.n for m in folds_w) == 0:
        raise OptionError("a source has no rows; both X and W need at least one row")
    if not isinstance(k, (int, np.integer)) or k < 1:
        raise OptionError(f"K must be an integer ≥ 1, got K={k!r}")


@dataclass(frozen=True)
class _Choice:
    """The chosen shrinkage and allocation, and how the out-of-sample MSE was obtained."""

    spec_x: Spec
    spec_w: Spec
    alloc: _Alloc | None  # None: choose in-sample (no usable folds)
    mse_oos: float
    mse_select: float
    grid: str


def _choose(cv: _CrossFit, d: int, k: int, shrinkage: Shrinkage,
            search: str | None = None) -> _Choice:
    """Cross-fitted choice of shrinkage and allocation (in-sample fallback: OAS)."""
    if search is not None and search not in SEARCHES:
        raise OptionError(f"search must be one of {', '.join(SEARCHES)} or None, got "
                          f"{search!r}")
    fixed = _parse_pair(shrinkage)
    if len(cv.used) < 2:
        sx, sw = (fixed[0][0], fixed[1][0]) if fixed else (("oas", 0.0), ("oas", 0.0))
        return _Choice(sx, sw, None, float("nan"), float("nan"), "none (in-sample fallback)")
    kind = "fixed" if fixed else (search or search_kind(d))
    grid_x, grid_w = fixed or (_grid(kind, d), _grid(kind, d))
    if kind == "refined":
        sx, sw = _refined_search(cv, k)
        text = (f"refined: {len(COARSE_GRID)} coarse points per source, then steps along "
                f"the grid of {len(grid_x)}")
    else:
        sx, sw = _search(cv, grid_x, grid_w, k, 2 if kind == "full" else 1)
        text = f"{kind}: {len(grid_x)} points per source"
    alloc, mse, _ = _score(cv, sx, sw, k)
    honest = _honest_mse(cv.pairs.get((sx, sw)) or _pairs(cv, sx, sw), alloc)
    return _Choice(sx, sw, alloc, honest, mse, f"{text}, {len(cv.memo)} pairs scored")


def fit_optimal(folds_x: Sequence[Moments], folds_w: Sequence[Moments], k: int, seed: int,
                shrinkage: Shrinkage = "auto", search: str | None = None) -> OptimalFit:
    """The DESIGN §7 sketch pair from per-fold statistics of X and W.

    Parameters
    ----------
    folds_x, folds_w : sequence of Moments
        Statistics of each fold (``fold_moments`` merged over blocks), same length. A single
        fold (or fewer than two folds with rows on both sides) gives an in-sample build.
    k : int
        Stored columns per sketch, every one counted. k ≥ d is exact.
    seed : int
        Seed of the random draws (systematic offset, Haar tail), via ``default_rng``.
    shrinkage : "auto", "oas", "lw", float in [0, 1] or (dict, dict), default="auto"
        "auto" searches the shrinkage per source by the cross-fitted MSE (``search``); a
        float is a fixed blend towards (tr C/d)·I; a pair of ``info["shrinkage_x"]``,
        ``info["shrinkage_w"]`` descriptions fixes both (the same fit again, without the
        search: e.g. a redraw with another seed).
    search : {"full", "refined", "coarse"} or None, default=None
        How "auto" searches: None is ``search_kind(d)``; the others are for comparisons
        (``benchmarks/heldout.py --search``). "full" at d > ``COARSE_D`` walks the grid of
        ``COARSE_D``.

    Returns
    -------
    OptimalFit
        ``info``: ``method`` ("auto"), ``k``, ``d``, ``n_x``, ``n_w``, ``predicted_mse``
        (out of sample), ``predicted_mse_in_sample``, ``predicted_mse_kind``,
        ``predicted_mse_selection``, ``predicted_rel_mse`` (÷ E(x·w)², ``expected_square``),
        ``predicted_mse_gaussian`` (+ ``_kind``), ``predicted_gain``, ``allocation``
        {``head``, ``sampled``, ``tail``, ``candidates``}, ``shrinkage_x``/``shrinkage_w``
        ({``kind``, ``intensity``}), ``n_folds``, ``folds_used``, ``shrinkage_search``,
        ``rho`` (descending), ``pi`` (per candidate coordinate), ``note``.
    """
    _check_folds(folds_x, folds_w, k)
    mx, mw = combine_all(folds_x), combine_all(folds_w)
    d = mx.d
    scale_x = scale_of(mx.second_moment, mw.second_moment)
    scale_w = scale_of(mw.second_moment, mx.second_moment)
    with build_blas(d):
        cv = _cross_fit(folds_x, folds_w, scale_x, scale_w)
        choice = _choose(cv, d, k, shrinkage, search)
        # the allocations read e[:j, :j] with j ≤ m/PI_FLOOR, m ≤ k
        fb = _final_basis(mx, mw, (choice.spec_x, choice.spec_w), (scale_x, scale_w),
                          int(k / PI_FLOOR) + 1)
        en_in = fb.energies
        alloc = choice.alloc or _choose_alloc(en_in, k)[0]
        m = _sketch_matrix(alloc, d, k, np.random.default_rng(seed))
        x, w = fb.maps(m, mx, mw)
        mse_in = _alloc_mse(en_in, alloc)
    info = _optimal_info(mx, mw, k, cv, choice, alloc, fb.rho, mse_in)
    return OptimalFit(x, w, info)


class AutoPredictor:
    """The predicted MSE of ``auto`` at any K, out of sample when the folds allow it.

    The shrinkage pair is chosen once, by cross-fitting at ``k_ref`` (default min(d, 16)),
    and the held-out coordinate moments computed once; each ``mse(k)`` then chooses the best
    allocation for that K. ``fit_optimal`` searches the shrinkage at its own K, so its
    report can differ a little from this curve at other K.

    Parameters
    ----------
    folds_x, folds_w : sequence of Moments
        Fold statistics (one fold: in-sample predictions).
    shrinkage : as for ``fit_optimal``, default="auto"
    k_ref : int, optional
    """

    def __init__(self, folds_x: Sequence[Moments], folds_w: Sequence[Moments],
                 shrinkage: Shrinkage = "auto", k_ref: int | None = None) -> None:
        _check_folds(folds_x, folds_w, 1)
        mx, mw = combine_all(folds_x), combine_all(folds_w)
        self.d = mx.d
        scale_x = scale_of(mx.second_moment, mw.second_moment)
        scale_w = scale_of(mw.second_moment, mx.second_moment)
        with build_blas(self.d):
            cv = _cross_fit(folds_x, folds_w, scale_x, scale_w)
            choice = _choose(cv, self.d, k_ref or max(1, min(self.d, 16)), shrinkage)
            self.out_of_sample = choice.alloc is not None
            if self.out_of_sample:
                self._pairs = cv.pairs.get((choice.spec_x, choice.spec_w)) or \
                    _pairs(cv, choice.spec_x, choice.spec_w)
                self._energies = _energies(self._pairs)
            else:
                self._pairs = []
                self._energies = _final_basis(mx, mw, (choice.spec_x, choice.spec_w),
                                              (scale_x, scale_w), None).energies

    def mse(self, k: int) -> float:
        """Predicted MSE of ``auto`` with K = ``k`` (0 from K = d: exact)."""
        if k >= self.d:
            return 0.0
        with build_blas(self.d):
            alloc = _choose_alloc(self._energies, int(k))[0]
            if self.out_of_sample:
                return _honest_mse(self._pairs, alloc)
            return _alloc_mse(self._energies, alloc)


def _gaussian_mse(mx: Moments, mw: Moments, k: int) -> tuple[float, float]:
    """(tr Σx tr Σw + tr ΣxΣw)/k and E(x·w)² = tr ΣxΣw, uncentred second moments."""
    sx, sw = mx.second_moment, mw.second_moment
    sq = float(np.sum(sx * sw))
    return (float(np.trace(sx)) * float(np.trace(sw)) + sq) / k, sq


def _width_note(k: int, d: int, alloc: _Alloc) -> str:
    """What the sketch does at this width, in words."""
    if k >= d:
        return (f"exact: k={k} ≥ d={d} keeps every balanced coordinate"
                + (f" ({k - d} zero columns)" if k > d else ""))
    text = (f"{alloc.head} exact coordinates, {alloc.m - alloc.head} sampled among "
            f"{alloc.j - alloc.head} (π ≥ {PI_FLOOR}), "
            + (f"Haar tail of width {alloc.width} over the last {d - alloc.j}" if alloc.width
               else "no tail"))
    if k <= 2:
        text = f"k={k}: the smallest sketches; " + text
    return text


def _optimal_info(mx: Moments, mw: Moments, k: int, cv: _CrossFit, choice: _Choice,
                  alloc: _Alloc, rho: np.ndarray, mse_in: float) -> dict[str, Any]:
    gauss, square = _gaussian_mse(mx, mw, k)
    oos = choice.alloc is not None
    mse = choice.mse_oos if oos else mse_in
    kind = (f"cross-fitted over {len(cv.used)} held-out folds" if oos else
            "in-sample: fewer than 2 folds have rows on both sides (and outside them), so no "
            "held-out estimate; shrinkage OAS unless given")
    return {
        "method": "auto", "k": int(k), "d": mx.d, "n_x": mx.n, "n_w": mw.n,
        "predicted_mse": float(mse), "predicted_mse_in_sample": float(mse_in),
        "predicted_mse_selection": float(choice.mse_select if oos else mse_in),
        "predicted_mse_kind": kind,
        "predicted_rel_mse": float(mse / square) if square > 0 else 0.0,
        "expected_square": square,
        "predicted_mse_gaussian": gauss,
        "predicted_mse_gaussian_kind": "formula (tr Σx·tr Σw + tr ΣxΣw)/k on the merged "
        "uncentred second moments; a Gaussian sketch ignores the data, so this is also its "
        "out-of-sample value",
        "predicted_gain": gauss / mse if mse > 0 else float("inf"),
        "allocation": {"head": alloc.head, "sampled": alloc.m - alloc.head,
                       "tail": alloc.width, "candidates": alloc.j},
        "shrinkage_x": _describe(choice.spec_x, mx), "shrinkage_w": _describe(choice.spec_w, mw),
        "n_folds": len(cv.used), "folds_used": list(cv.used),
        "shrinkage_search": choice.grid,
        "rho": [float(v) for v in rho], "pi": [float(v) for v in alloc.pi],
        "note": _width_note(k, mx.d, alloc),
    }


# ---------------------------------------------------------------------------------------
# the §4 baseline: centred balanced pair, 2 exact mean columns, exact head r, Haar tail


def _ht_spec(shrinkage: str | float) -> Spec:
    if shrinkage in ("lw", "oas"):
        return (str(shrinkage), 0.0)
    spec = _parse_shrinkage(shrinkage)
    if spec is None:
        raise OptionError("fit_head_tail takes shrinkage 'lw', 'oas' or a number in [0, 1], "
                          "got 'auto'")
    return spec[0]


def _ht_pair(mx: Moments, mw: Moments, spec: Spec, scales: tuple[float, float]
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A, B, σ (DESIGN §3) of the shrunk centred covariances: AᵀB = I, A Cx Aᵀ = diag(σ)."""
    roots = []
    for m, scale in ((mx, scales[0]), (mw, scales[1])):
        vals, vecs = _shrunk_eig(m, spec, scale, 0, _EigCache())
        roots.append((vecs * np.sqrt(vals)) @ vecs.T)
    rx, rw = roots
    u, sigma, vt = np.linalg.svd(rw @ rx)
    scale = 1.0 / np.sqrt(sigma)
    return scale[:, None] * (u.T @ rw), scale[:, None] * (vt @ rx), sigma


def _ht_mse(a: np.ndarray, b: np.ndarray, cx: np.ndarray, cw: np.ndarray, r: int,
            width: int) -> float:
    """Pair-averaged variance of the tail for centred second moments cx, cw (exact Haar)."""
    en = _energies([(a @ cx @ a.T, b @ cw @ b.T)])
    return _tail_mse(en, r, width)


def _held_out(m: Moments, mean: np.ndarray) -> np.ndarray:
    """Uncentred second moment of the rows of ``m`` about ``mean``."""
    delta = m.mean - mean
    return m.covariance + np.outer(delta, delta)


def _ht_oos(folds_x: Sequence[Moments], folds_w: Sequence[Moments], k: int, spec: Spec,
            scales: tuple[float, float]) -> tuple[float, int]:
    """§4's out-of-sample MSE: per usable fold, fit on the others and measure held out."""
    cv = _cross_fit(folds_x, folds_w, *scales)
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
    """The DESIGN §4 sketch (the previous ``auto``) with Ledoit–Wolf shrinkage, as a baseline.

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
        raise OptionError(f"K={k} is outside 3 ≤ K ≤ d + 2 = {d + 2} for the §4 sketch (2 mean "
                          "columns and at least 1 tail column)")
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
        "shrinkage_x": _describe(spec, mx), "shrinkage_w": _describe(spec, mw),
        "predicted_mse": oos if used else mse_in, "predicted_mse_in_sample": mse_in,
        "predicted_mse_kind": f"cross-fitted over {used} held-out folds" if used else
        "in-sample", "n_folds": used,
    }
    return OptimalFit(x, w, info)
