"""Coordinate energies, the predicted MSE of a sketch, and the allocation of its K columns
(``docs/method.md §5.2``, ``docs/method.md §5.3``). Pure numpy.

**Sketch.** The first j coordinates are candidates; m = k − k_F of them are drawn by
systematic sampling with π_i = min(1, ρ̂_i/τ), Σπ = m, π ≥ ``PI_FLOOR`` (π = 1: the exact
head), and stored as a_i/√π_i, b_i/√π_i. Coordinates from j on go through a Haar-orthogonal
projection of width k_F scaled by √(D/k_F), D = d − j, so E RᵀR = I. Every estimate is
unbiased.

**Predicted MSE.** Pair-averaged over x, w drawn independently from moments ``Ha = E a aᵀ``,
``Hb = E b bᵀ``: sampled part Σ_{i,l} (π_il/(π_i π_l) − 1) Ha_il Hb_il with systematic
sampling's exact joint inclusion probabilities π_il; tail part (exact Haar moments)
``γ1 tr Ha_T tr Hb_T + γ2 tr(Ha_T Hb_T)``, γ1 = D(D−k_F)/(k_F(D−1)(D+2)),
γ2 = (D−k_F)(D−2)/(k_F(D−1)(D+2)).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .draws import orthogonal_matrix

__all__ = ["PI_FLOOR", "Alloc", "Energies", "alloc_mse", "choose_alloc", "energies",
           "in_sample_energies", "joint_inclusion", "sampled_mse", "sketch_matrix",
           "systematic", "tail_mse", "threshold"]

#: Smallest inclusion probability of a sampled coordinate (``docs/method.md §5.2``).
PI_FLOOR = 0.1
#: Rows per band of ``in_sample_energies``.
_BAND = 256
#: Candidate allocations scored exactly (with joint inclusion probabilities) per search.
_N_EXACT = 6
#: Candidate values of j tried per sample size m, and sample sizes m tried.
_N_J = 12
_N_M = 24


@dataclass(frozen=True)
class Energies:
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


def energies(pairs: Sequence[tuple[np.ndarray, np.ndarray]]) -> Energies:
    """``Energies`` of a list of (Ha, Hb), one pair per held-out fold (or the fitted rows)."""
    e = np.mean([ha * hb for ha, hb in pairs], axis=0)
    suffix = [(np.cumsum(np.diag(ha)[::-1])[::-1], np.cumsum(np.diag(hb)[::-1])[::-1])
              for ha, hb in pairs]
    trtr = np.append(np.mean([sa * sb for sa, sb in suffix], axis=0), 0.0)
    rev = e[::-1, ::-1].cumsum(0).cumsum(1)
    tail_e = np.append(np.diag(rev)[::-1], 0.0)
    diag = np.diag(e).copy()
    return Energies(e, trtr, tail_e, np.sqrt(np.clip(diag, 0.0, None)), diag)


def in_sample_energies(ha: np.ndarray, hb: np.ndarray, lead: int | None) -> Energies:
    """``energies([(ha, hb)])`` keeping only ``e[:lead, :lead]`` (all of it for None), the
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
    return Energies(e, np.append(sa * sb, 0.0), tail_e, np.sqrt(np.clip(diag, 0.0, None)),
                     diag)


def tail_mse(en: Energies, j: int, width: int) -> float:
    """Exact pair-averaged variance of a Haar tail of ``width`` over coordinates j.. ."""
    dim = en.diag.size - j
    if dim <= 0 or width >= dim:
        return 0.0
    if width == 0:
        return float("inf")  # dropping the tail would bias the estimate: never chosen
    g1 = dim * (dim - width) / (width * (dim - 1) * (dim + 2))
    g2 = (dim - width) * (dim - 2) / (width * (dim - 1) * (dim + 2))
    return float(g1 * en.trtr[j] + g2 * en.tail_e[j])


def joint_inclusion(pi: np.ndarray) -> np.ndarray:
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


def sampled_mse(en: Energies, pi: np.ndarray, exact: bool) -> float:
    """Σ_{i,l} (π_il/(π_i π_l) − 1) e_il over the sampled (π < 1) coordinates; only the
    diagonal Σ e_ii (1/π_i − 1) unless ``exact``."""
    idx = np.flatnonzero(pi < 1.0)
    if idx.size == 0:
        return 0.0
    p = pi[idx]
    if not exact:
        return float(np.sum(en.diag[idx] * (1.0 / p - 1.0)))
    c = joint_inclusion(p) / np.outer(p, p) - 1.0
    return float(np.sum(c * en.e[np.ix_(idx, idx)]))


@dataclass(frozen=True)
class Alloc:
    """j candidates, m drawn among them with probabilities ``pi`` (length j), tail ``width``."""

    j: int
    m: int
    width: int
    pi: np.ndarray

    @property
    def head(self) -> int:
        return int(np.sum(self.pi >= 1.0))


def threshold(r: np.ndarray, m: int) -> np.ndarray | None:
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


def alloc_mse(en: Energies, a: Alloc, exact: bool = True) -> float:
    return sampled_mse(en, a.pi, exact) + tail_mse(en, a.j, a.width)


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


def choose_alloc(en: Energies, k: int) -> tuple[Alloc, float]:
    """The allocation minimising the predicted MSE under ``en``: every candidate scored
    with the diagonal formula, the best few exactly (joint inclusion probabilities)."""
    d = en.diag.size
    if k >= d:
        return Alloc(d, d, 0, np.ones(d)), 0.0
    scored = []
    for j, m in _candidates(d, k):
        width = k - m
        if (width == 0) != (j == d) or width > d - j:
            continue
        pi = threshold(en.rho_hat[:j], m)
        if pi is None:
            continue
        a = Alloc(j, m, width, pi)
        scored.append((alloc_mse(en, a, exact=False), a))
    scored.sort(key=lambda t: t[0])
    best = [(alloc_mse(en, a), -a.head, a.j, a) for _, a in scored[:_N_EXACT]]
    mse, _, _, alloc = min(best, key=lambda t: t[:3])
    return alloc, mse


def systematic(pi: np.ndarray, u: float) -> tuple[np.ndarray, np.ndarray]:
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


def sketch_matrix(alloc: Alloc, d: int, k: int, rng: np.random.Generator) -> np.ndarray:
    """M (k, d) on the coordinates: exact head rows, e_i/√π_i for the sample, the Haar tail
    over coordinates j.., then zero rows up to k."""
    u = float(rng.random())
    head = np.flatnonzero(alloc.pi >= 1.0)
    chosen, p = systematic(alloc.pi, u)
    out = np.zeros((k, d))
    h, s = head.size, chosen.size
    out[np.arange(h), head] = 1.0
    out[h + np.arange(s), chosen] = 1.0 / np.sqrt(p)
    if alloc.width:
        out[h + s:h + s + alloc.width, alloc.j:] = orthogonal_matrix(rng, alloc.width, d - alloc.j)
    return out
