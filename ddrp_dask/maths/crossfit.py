"""Cross-fitting and the shrinkage search of ``auto``, and its fit
(``docs/method.md §5.4``, ``docs/method.md §5.5``). Pure numpy: functions of per-fold
``Moments`` only (no Dask, no I/O).

For each fold f the basis (``maths.basis``) is built from the other folds and the held-out
moments Ha_f = P Σx'_f Pᵀ are measured in training coordinates (the held-out rows' uncentred
second moment about the training mean). Their mean products give ρ̂ (the allocation,
``maths.allocation``) and the out-of-sample MSE that chooses j, k_F and the shrinkage of each
source (a coordinate search over ``maths.shrinkage``'s grid, refined from a coarse start at
mid d and coarse at large d: ``search_kind``). The reported ``predicted_mse`` re-scores the
chosen sketch with, for each fold, π from the ρ̂ of the other folds
(``predicted_mse_selection`` is the value the search minimised).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import OptionError
from .allocation import (
    PI_FLOOR,
    Alloc,
    Energies,
    alloc_mse,
    choose_alloc,
    energies,
    sketch_matrix,
    threshold,
)
from .basis import (
    balanced_basis,
    coord_moment,
    factored_held_out,
    final_basis,
    scatter_factor,
)
from .blas import build_blas, build_threads
from .maps import scale_of
from .model import SideMap
from .shrinkage import (
    COARSE_GRID,
    SEARCHES,
    TWO_SWEEPS_D,
    EigCache,
    Shrinkage,
    Spec,
    describe,
    neighbours,
    parse_pair,
    search_grid,
    search_kind,
    shrunk_eig,
)
from .stats import Moments, combine, combine_all, cross_trace

__all__ = ["PLENTIFUL_ROWS_PER_D", "AutoPredictor", "CrossFit", "OptimalFit", "Progress",
           "check_folds", "cross_fit", "fit_optimal", "held_out_pairs", "honest_mse"]

#: Above ``TWO_SWEEPS_D``, when every training set and held-out fold of both sources has at
#: least this many rows per dimension (about 40·d rows per source over five folds), the
#: shrinkage is not searched: OAS for both. With rows this plentiful OAS scored as well as
#: the search's best (benchmarks/RESULTS.md, "Session 9: widths"; 4-9 % worse from 30·d
#: rows down), and each candidate costs five SVDs of (d+1)².
PLENTIFUL_ROWS_PER_D = 8

#: A build's progress callback: told each step's text as the step starts.
Progress = Callable[[str], None]


def _silent(step: str) -> None:
    """The progress callback that draws nothing."""


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
    #: when both sources were shrunk by OAS: the predicted MSE at K of the paper's pair of
    #: the same shrunk moments (``_paired_reference``); NaN otherwise
    paired_mse: float = float("nan")



@dataclass
class CrossFit:
    """Held-out folds, their training statistics, and eigh caches shared by the search."""

    folds_x: Sequence[Moments]
    folds_w: Sequence[Moments]
    used: list[int]
    train_x: dict[int, Moments]
    train_w: dict[int, Moments]
    scale_x: float
    scale_w: float
    cache_x: EigCache = field(default_factory=EigCache)
    cache_w: EigCache = field(default_factory=EigCache)
    memo: dict[tuple[Spec, Spec], tuple[Alloc, float, Energies]] = field(default_factory=dict)
    #: held-out pairs of the best specs so far only (5 × 2 d² floats per entry)
    pairs: dict[tuple[Spec, Spec], list[tuple[np.ndarray, np.ndarray]]] = field(
        default_factory=dict)
    #: held-out pairs from Cholesky factors (``basis.factored_held_out``, above
    #: ``TWO_SWEEPS_D``: an eigendecomposition of K Kᵀ per candidate costs less than an SVD
    #: of K on eigendecompositions the candidates share), and the held-out scatters'
    #: factors they read, per fold
    factored: bool = False
    held_factors: dict[int, tuple[np.ndarray | None, np.ndarray | None]] = field(
        default_factory=dict)
    #: the build's progress callback, and the number of pairs the search scores (0: unknown)
    tell: Progress = _silent
    planned: int = 0


def cross_fit(folds_x: Sequence[Moments], folds_w: Sequence[Moments], scale_x: float,
              scale_w: float) -> CrossFit:
    """Folds usable as held-out sets: rows on both sides, in the fold and outside it."""
    trains_x, trains_w = _parallel([functools.partial(leave_one_out, folds_x),
                                    functools.partial(leave_one_out, folds_w)])
    train_x: dict[int, Moments] = {}
    train_w: dict[int, Moments] = {}
    used = []
    for f in range(len(folds_x)):
        tx, tw = trains_x[f], trains_w[f]
        if len(folds_x) > 1 and min(folds_x[f].n, folds_w[f].n, tx.n, tw.n) > 0:
            used.append(f)
            train_x[f], train_w[f] = tx, tw
    return CrossFit(folds_x, folds_w, used, train_x, train_w, scale_x, scale_w)


def leave_one_out(folds: Sequence[Moments]) -> list[Moments]:
    """Per fold f, the moments of every other fold (of fold f itself when it is the only
    one), merged through prefixes and suffixes: 3(n − 2) merges for n folds, not
    n(n − 2), in a fixed order (the same bytes however the build is scheduled)."""
    n = len(folds)
    if n < 3:
        return [folds[1 - f] for f in range(n)] if n == 2 else list(folds)
    prefix, suffix = [folds[0]], [folds[-1]]
    for f in range(1, n - 1):
        prefix.append(combine(prefix[-1], folds[f]))
        suffix.append(combine(folds[n - 1 - f], suffix[-1]))
    suffix.reverse()  # suffix[i]: folds i + 1 .. n − 1
    return [suffix[0], *(combine(prefix[f - 1], suffix[f]) for f in range(1, n - 1)),
            prefix[-1]]


def _fold_pair(cv: CrossFit, sx: Spec, sw: Spec, f: int) -> tuple[np.ndarray, np.ndarray]:
    """The held-out coordinate moments (Ha_f, Hb_f) of fold f in the basis of the others."""
    tx, tw = cv.train_x[f], cv.train_w[f]
    if cv.factored:
        held = (cv.folds_x[f], cv.folds_w[f])
        if f not in cv.held_factors:  # one thread per fold: no two write the same key
            cv.held_factors[f] = (scatter_factor(held[0]), scatter_factor(held[1]))
        return factored_held_out((tx, tw), held, (sx, sw), (cv.scale_x, cv.scale_w),
                                 cv.held_factors[f])
    b = balanced_basis(shrunk_eig(tx, sx, cv.scale_x, f, cv.cache_x),
                       shrunk_eig(tw, sw, cv.scale_w, f, cv.cache_w), tx.mean, tw.mean)
    return (coord_moment(b.p, cv.folds_x[f], tx.mean),
            coord_moment(b.q, cv.folds_w[f], tw.mean))


def _parallel(jobs: Sequence[Callable[[], Any]]) -> list[Any]:
    """Run independent jobs on one Python thread per core (each on the build's one BLAS
    thread at these d, ``maths.blas``): the same bytes whatever their number or order."""
    if len(jobs) < 2:
        return [job() for job in jobs]
    with ThreadPoolExecutor(min(len(jobs), os.cpu_count() or 1)) as pool:
        return list(pool.map(lambda job: job(), jobs))


def held_out_pairs(cv: CrossFit, sx: Spec, sw: Spec) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per used fold: the held-out coordinate moments (Ha_f, Hb_f) in the basis of the other
    folds."""
    return _parallel([functools.partial(_fold_pair, cv, sx, sw, f) for f in cv.used])


def _score(cv: CrossFit, sx: Spec, sw: Spec, k: int) -> tuple[Alloc, float, Energies]:
    """Best allocation and its out-of-sample MSE for one pair of shrinkage specs."""
    if (sx, sw) not in cv.memo:
        of = f" of {cv.planned}" if cv.planned else ""
        cv.tell(f"cross-fit over {len(cv.used)} folds, shrinkage pair {len(cv.memo) + 1}{of} "
                f"(x {_spec_text(sx)}, w {_spec_text(sw)})")
        pairs = held_out_pairs(cv, sx, sw)
        en = energies(pairs)
        alloc, mse = choose_alloc(en, k)
        cv.memo[(sx, sw)] = (alloc, mse, en)
        cv.pairs[(sx, sw)] = pairs
    return cv.memo[(sx, sw)]


def _spec_text(spec: Spec) -> str:
    return spec[0] if spec[0] in ("oas", "lw") else f"{spec[0]} {spec[1]:g}"


def _plentiful(cv: CrossFit, d: int) -> bool:
    """Whether every training set and held-out fold of both sources has
    ``PLENTIFUL_ROWS_PER_D`` rows per dimension (above ``TWO_SWEEPS_D``)."""
    sets = [cv.train_x, cv.train_w, {f: cv.folds_x[f] for f in cv.used},
            {f: cv.folds_w[f] for f in cv.used}]
    return d > TWO_SWEEPS_D and min(m.n for s in sets for m in s.values()) >= \
        PLENTIFUL_ROWS_PER_D * d


def _known_pair(cv: CrossFit, d: int, shrinkage: Shrinkage, search: str | None
                ) -> tuple[Spec, Spec] | None:
    """The shrinkage pair ``_choose`` will return when it is known before any scoring: a
    fixed one, or OAS when rows are plentiful (None: searched, or an in-sample fallback)."""
    fixed = parse_pair(shrinkage)
    if len(cv.used) < 2:
        return None
    if fixed:
        return fixed[0][0], fixed[1][0]
    return (("oas", 0.0), ("oas", 0.0)) if search is None and _plentiful(cv, d) else None


def honest_mse(pairs: list[tuple[np.ndarray, np.ndarray]], alloc: Alloc) -> float:
    """The chosen allocation's MSE with π for fold f taken from ρ̂ of the other folds only,
    so the fold that measures the error did not also set the probabilities (a ρ̂ of all
    folds would reuse it: optimistic when folds are small)."""
    if len(pairs) < 2 or alloc.j == alloc.m:
        return alloc_mse(energies(pairs), alloc)
    prods = [np.diag(ha) * np.diag(hb) for ha, hb in pairs]
    values = []
    for f, pair in enumerate(pairs):
        others = np.mean([p for g, p in enumerate(prods) if g != f], axis=0)
        pi = threshold(np.sqrt(np.clip(others[:alloc.j], 0.0, None)), alloc.m)
        a = alloc if pi is None else Alloc(alloc.j, alloc.m, alloc.width, pi)
        values.append(alloc_mse(energies([pair]), a))
    return float(np.mean(values))


def _search(cv: CrossFit, grid_x: list[Spec], grid_w: list[Spec], k: int,
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


def _refined_search(cv: CrossFit, k: int) -> tuple[Spec, Spec]:
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


def _walk(cv: CrossFit, k: int, start: tuple[Spec, Spec], side: int) -> tuple[Spec, Spec]:
    """From ``start``, steps to the best neighbour of ``side``'s spec on the full grid
    while that lowers the cross-fitted MSE."""
    best = start
    while True:
        step = _best(cv, [best, *(_with(best, side, s) for s in neighbours(best[side]))], k)
        if step == best:
            return best
        best = step


def _with(pair: tuple[Spec, Spec], side: int, spec: Spec) -> tuple[Spec, Spec]:
    """``pair`` with the spec of ``side`` (0: x, 1: w) replaced."""
    return (spec, pair[1]) if side == 0 else (pair[0], spec)


def _best(cv: CrossFit, options: list[tuple[Spec, Spec]], k: int) -> tuple[Spec, Spec]:
    """The first option of least cross-fitted MSE; held-out pairs kept for it only."""
    best, best_mse = options[0], _score(cv, *options[0], k)[1]
    for sp in options[1:]:
        mse = _score(cv, *sp, k)[1]
        if mse < best_mse:
            best, best_mse = sp, mse
        cv.pairs = {key: v for key, v in cv.pairs.items() if key == best}
    return best


def check_folds(folds_x: Sequence[Moments], folds_w: Sequence[Moments]) -> None:
    """Both sources' fold statistics: as many for X as for W, rows on both sides. (K, the
    dimensions and the shrinkage are the options' rules, checked before: ``build``.)"""
    if len(folds_x) != len(folds_w) or not folds_x:
        raise OptionError(f"got {len(folds_x)} folds for X and {len(folds_w)} for W; pass the "
                          "same number (≥ 1) of fold statistics for both sources")
    if sum(m.n for m in folds_x) == 0 or sum(m.n for m in folds_w) == 0:
        raise OptionError("a source has no rows; both X and W need at least one row")


@dataclass(frozen=True)
class _Choice:
    """The chosen shrinkage and allocation, and how the out-of-sample MSE was obtained."""

    spec_x: Spec
    spec_w: Spec
    alloc: Alloc | None  # None: choose in-sample (no usable folds)
    mse_oos: float
    mse_select: float
    grid: str


def _choose(cv: CrossFit, d: int, k: int, shrinkage: Shrinkage,
            search: str | None = None) -> _Choice:
    """Cross-fitted choice of shrinkage and allocation (in-sample fallback: OAS)."""
    if search is not None and search not in SEARCHES:
        raise OptionError(f"search must be one of {', '.join(SEARCHES)} or None, got "
                          f"{search!r}")
    fixed = parse_pair(shrinkage)
    if len(cv.used) < 2:
        sx, sw = (fixed[0][0], fixed[1][0]) if fixed else (("oas", 0.0), ("oas", 0.0))
        return _Choice(sx, sw, None, float("nan"), float("nan"), "none (in-sample fallback)")
    plentiful = not fixed and search is None and _plentiful(cv, d)
    if plentiful:
        fixed = ([("oas", 0.0)], [("oas", 0.0)])
    kind = "fixed" if fixed else (search or search_kind(d))
    grid_x, grid_w = fixed or (search_grid(kind, d), search_grid(kind, d))
    cv.factored = d > TWO_SWEEPS_D
    cv.planned = {"fixed": 1, "coarse": len(grid_x) + len(grid_w) - 1}.get(kind, 0)
    if plentiful:
        sx, sw = grid_x[0], grid_w[0]
        text = (f"none: at least {PLENTIFUL_ROWS_PER_D}·d rows in every fold and training "
                "set of both sources, OAS")
    elif kind == "refined":
        sx, sw = _refined_search(cv, k)
        text = (f"refined: {len(COARSE_GRID)} coarse points per source, then steps along "
                f"the grid of {len(grid_x)}")
    else:
        sx, sw = _search(cv, grid_x, grid_w, k, 2 if kind == "full" else 1)
        text = f"{kind}: {len(grid_x)} points per source"
    alloc, mse, _ = _score(cv, sx, sw, k)
    honest = honest_mse(cv.pairs.get((sx, sw)) or held_out_pairs(cv, sx, sw), alloc)
    return _Choice(sx, sw, alloc, honest, mse, f"{text}, {len(cv.memo)} pairs scored")


def fit_optimal(folds_x: Sequence[Moments], folds_w: Sequence[Moments], k: int, seed: int,
                shrinkage: Shrinkage = "auto", search: str | None = None,
                progress: Progress | None = None) -> OptimalFit:
    """The ``auto`` sketch pair (``docs/method.md §5``) from per-fold statistics of X and W.

    Parameters
    ----------
    folds_x, folds_w : sequence of Moments
        Statistics of each fold (``fold_moments`` merged over blocks), same length. A single
        fold (or fewer than two folds with rows on both sides) gives an in-sample build.
    k : int
        Stored columns per sketch, every one counted, at least 1 (``options.check_k``:
        ``build`` checks it). k ≥ d is exact.
    seed : int
        Seed of the random draws (systematic offset, Haar tail), via ``default_rng``.
    shrinkage : "auto", "oas", float in [0, 1] or (dict, dict), default="auto"
        As ``options.check_shrinkage`` returns it: "auto" searches the shrinkage per source
        by the cross-fitted MSE (``search``), "oas" is OAS, a float a fixed blend towards
        (tr C/d)·I; or a pair of ``info["shrinkage_x"]``,
        ``info["shrinkage_w"]`` descriptions fixes both (the same fit again, without the
        search: e.g. a redraw with another seed).
    search : {"full", "refined", "coarse"} or None, default=None
        How "auto" searches: None is ``search_kind(d)``; the others are for comparisons
        (``benchmarks/heldout.py --search``). "full" at d > ``COARSE_D`` walks the grid of
        ``COARSE_D``. With "auto" above ``TWO_SWEEPS_D``, when rows are plentiful
        (``PLENTIFUL_ROWS_PER_D``), nothing is searched: OAS for both sources.
    progress : callable, optional
        Told each step of the build as it starts (a pair of the search, the basis of all
        rows, the allocation): the CLI's progress line.

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
    check_folds(folds_x, folds_w)
    mx, mw = _parallel([functools.partial(combine_all, folds_x),
                        functools.partial(combine_all, folds_w)])
    d = mx.d
    scale_x = scale_of(mx.second_moment, mw.second_moment)
    scale_w = scale_of(mw.second_moment, mx.second_moment)
    tell = progress or _silent
    with build_blas(d), ThreadPoolExecutor(1) as pool:
        cv = cross_fit(folds_x, folds_w, scale_x, scale_w)
        cv.tell = tell
        # the allocations read e[:j, :j] with j ≤ m/PI_FLOOR, m ≤ k
        lead = int(k / PI_FLOOR) + 1
        known = _known_pair(cv, d, shrinkage, search) if build_threads(d) == 1 else None
        # a shrinkage known before the cross-fit: the basis of all rows is built beside it
        # (on one BLAS thread each; with two, after it: see maths.build)
        early = None if known is None else pool.submit(final_basis, mx, mw, known,
                                                       (scale_x, scale_w), lead)
        choice = _choose(cv, d, k, shrinkage, search)
        tell(f"basis of all rows (SVD of {d + 1}x{d + 1})")
        fb = early.result() if early is not None else \
            final_basis(mx, mw, (choice.spec_x, choice.spec_w), (scale_x, scale_w), lead)
        en_in = fb.energies
        tell("allocation and random draws")
        alloc = choice.alloc or choose_alloc(en_in, k)[0]
        m = sketch_matrix(alloc, d, k, np.random.default_rng(seed))
        x, w = fb.maps(m, mx, mw)
        mse_in = alloc_mse(en_in, alloc)
    info = _optimal_info(mx, mw, k, cv, choice, alloc, fb.rho, mse_in)
    oas = choice.spec_x[0] == choice.spec_w[0] == "oas"
    return OptimalFit(x, w, info, _paired_reference(en_in, mx, mw, k) if oas else float("nan"))


def _paired_reference(en: Energies, mx: Moments, mw: Moments, k: int) -> float:
    """The predicted MSE at K = ``k`` of one Gaussian projection of the paper's pair of the
    same shrunk moments (``docs/method.md §9``), (tr(A Sx Aᵀ) tr(B Sw Bᵀ) + tr(Sx Sw))/k: its
    coordinates A x are the basis's a = P x' exactly, so the traces are those of the fitted
    rows' moments in the basis, ``en.trtr[0]`` = tr Ha · tr Hb, at no cost."""
    return float((en.trtr[0] + cross_trace(mx, mw)) / k)


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
        check_folds(folds_x, folds_w)
        mx, mw = combine_all(folds_x), combine_all(folds_w)
        self.d = mx.d
        scale_x = scale_of(mx.second_moment, mw.second_moment)
        scale_w = scale_of(mw.second_moment, mx.second_moment)
        with build_blas(self.d):
            cv = cross_fit(folds_x, folds_w, scale_x, scale_w)
            choice = _choose(cv, self.d, k_ref or max(1, min(self.d, 16)), shrinkage)
            self.out_of_sample = choice.alloc is not None
            if self.out_of_sample:
                self._pairs = cv.pairs.get((choice.spec_x, choice.spec_w)) or \
                    held_out_pairs(cv, choice.spec_x, choice.spec_w)
                self._energies = energies(self._pairs)
            else:
                self._pairs = []
                self._energies = final_basis(mx, mw, (choice.spec_x, choice.spec_w),
                                              (scale_x, scale_w), None).energies
        if self._pairs:
            self.coordinate_energies = (
                np.mean([np.diagonal(ha) for ha, _ in self._pairs], axis=0),
                np.mean([np.diagonal(hb) for _, hb in self._pairs], axis=0))
        else:  # in sample: balanced, ρ on both sides
            self.coordinate_energies = (self._energies.rho_hat, self._energies.rho_hat)

    def allocation(self, k: int) -> Alloc:
        """The allocation ``mse(k)`` scores (how K columns are spent)."""
        with build_blas(self.d):
            return choose_alloc(self._energies, int(k))[0]

    def mse(self, k: int) -> float:
        """Predicted MSE of ``auto`` with K = ``k`` (0 from K = d: exact)."""
        if k >= self.d:
            return 0.0
        with build_blas(self.d):
            alloc = choose_alloc(self._energies, int(k))[0]
            if self.out_of_sample:
                return honest_mse(self._pairs, alloc)
            return alloc_mse(self._energies, alloc)


def _gaussian_mse(mx: Moments, mw: Moments, k: int) -> tuple[float, float]:
    """(tr Σx tr Σw + tr ΣxΣw)/k and E(x·w)² = tr ΣxΣw, uncentred second moments."""
    sx, sw = mx.second_moment, mw.second_moment
    sq = float(np.sum(sx * sw))
    return (float(np.trace(sx)) * float(np.trace(sw)) + sq) / k, sq


def _width_note(k: int, d: int, alloc: Alloc) -> str:
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


def _optimal_info(mx: Moments, mw: Moments, k: int, cv: CrossFit, choice: _Choice,
                  alloc: Alloc, rho: np.ndarray, mse_in: float) -> dict[str, Any]:
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
        "shrinkage_x": describe(choice.spec_x, mx), "shrinkage_w": describe(choice.spec_w, mw),
        "n_folds": len(cv.used), "folds_used": list(cv.used),
        "shrinkage_search": choice.grid,
        "rho": [float(v) for v in rho], "pi": [float(v) for v in alloc.pi],
        "note": _width_note(k, mx.d, alloc),
    }
