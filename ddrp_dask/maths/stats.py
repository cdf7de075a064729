"""Sufficient statistics of a source: count, mean and centred scatter, in float64.

One block gives a ``Moments``; two are merged with Chan, Golub and LeVeque's pairwise update

    n = na + nb,   δ = mean_b − mean_a,
    mean = mean_a + δ·nb/n,   scatter = scatter_a + scatter_b + δδᵀ·na·nb/n,

which stays accurate when the mean is far larger than the spread (a raw Σxxᵀ would cancel
catastrophically). Within a block the rows are shifted by the block's own mean before the
Gram product, for the same reason.

Float32 blocks: the shift and the subtraction run in float32 (exact for values within a
factor two of the shift), and the Gram product of the shifted block runs in float32 with the
result accumulated in float64, within the 1e-6 relative budget (Frobenius) of a float64
computation and faster (``benchmarks/RESULTS.md``). When the block's magnitudes overflow or
underflow float32 squares, the product is redone in float64.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["Moments", "add_outer", "block_moments", "combine", "combine_all", "cross_trace",
           "merge_moments"]

# Below this largest diagonal entry of a float32 Gram product, squares may have underflowed.
_F32_TINY_DIAG = 1e-20


@dataclass(frozen=True)
class Moments:
    """Statistics of ``n`` rows: ``mean`` (d,) and centred ``scatter`` Σ(x−mean)(x−mean)ᵀ
    (d, d), both float64."""

    n: int
    mean: np.ndarray
    scatter: np.ndarray

    @property
    def d(self) -> int:
        return int(self.mean.shape[0])

    @property
    def covariance(self) -> np.ndarray:
        """Centred covariance ``scatter / n`` (maximum-likelihood normalisation)."""
        return self.scatter / max(self.n, 1)

    @property
    def second_moment(self) -> np.ndarray:
        """Uncentred second moment E[x xᵀ] = covariance + mean meanᵀ."""
        return self.covariance + np.outer(self.mean, self.mean)


def _gram(c: np.ndarray) -> np.ndarray:
    """cᵀc accumulated in float64. float32 blocks take the float32 product first, and redo it
    in float64 when it overflowed (a non-finite entry) or its diagonal is so small that the
    squares may have underflowed: checking after is cheaper than a pass for max|c| before."""
    if c.dtype == np.float32:
        with np.errstate(over="ignore", under="ignore", invalid="ignore"):
            g = (c.T @ c).astype(np.float64)
        diag = np.diagonal(g)
        if np.isfinite(diag).all() and float(diag.max(initial=0.0)) > _F32_TINY_DIAG and \
                np.isfinite(g).all():
            return g
        c = c.astype(np.float64)
    return c.T @ c


def block_moments(block: np.ndarray, colsum: np.ndarray | None = None,
                  overwrite_input: bool = False) -> Moments:
    """Moments of one ``(rows, d)`` block of float32 or float64 values (``colsum``: its
    float64 column sums, when already computed, e.g. by ``io.check_finite``;
    ``overwrite_input``: shift the block in place, saving a copy of a task's own block).

    >>> m = block_moments(np.array([[1.0, 2.0], [3.0, 6.0]]))
    >>> m.n, m.mean.tolist(), m.scatter.tolist()
    (2, [2.0, 4.0], [[2.0, 4.0], [4.0, 8.0]])
    """
    n, d = block.shape
    if n == 0:
        return Moments(0, np.zeros(d), np.zeros((d, d)))
    if colsum is None:
        colsum = np.asarray(np.sum(block, axis=0, dtype=np.float64))
    mean = colsum / n
    shift = mean.astype(block.dtype)
    # Σ c = colsum - n·shift up to the roundings of the shift, whose effect on the centring
    # term below is O(n·eps²·|mean|²): no second pass over the block for it
    resid = colsum - n * shift.astype(np.float64)
    # in place and by row tiles where the operands are fresh: the same bytes as
    # ``g - outer/n`` and ``(s + sᵀ)/2``, without d x d temporaries (128 MiB at d = 4096)
    scatter = _gram(np.subtract(block, shift, out=block) if overwrite_input else
                    np.subtract(block, shift))
    for lo in range(0, d, _TILE):
        centring = np.outer(resid[lo:lo + _TILE], resid)
        centring /= n
        scatter[lo:lo + _TILE] -= centring
    _symmetrize(scatter)
    return Moments(n, mean, scatter)


#: Rows of the tiles that stand in for d x d temporaries (2 MiB of float64 at d = 512).
_TILE = 512


def _symmetrize(a: np.ndarray) -> None:
    """``a = (a + aᵀ)/2`` in place, tile by tile: each pair of mirrored entries is summed
    once, in the same order as the whole-matrix expression, so the bytes are its bytes."""
    d = len(a)
    for i in range(0, d, _TILE):
        for j in range(i, d, _TILE):
            tile = a[i:i + _TILE, j:j + _TILE] + a[j:j + _TILE, i:i + _TILE].T
            tile *= 0.5
            a[i:i + _TILE, j:j + _TILE] = tile
            a[j:j + _TILE, i:i + _TILE] = tile.T


def combine(a: Moments, b: Moments, overwrite: bool = False) -> Moments:
    """Merge the moments of two disjoint sets of rows (Chan et al.); ``overwrite``: sum into
    ``a``'s scatter instead of a fresh d x d array (the same bytes)."""
    if a.n == 0:
        return b
    if b.n == 0:
        return a
    n = a.n + b.n
    delta = b.mean - a.mean
    mean = a.mean + delta * (b.n / n)
    scatter = np.add(a.scatter, b.scatter, out=a.scatter if overwrite else None)
    add_outer(scatter, delta, a.n * b.n / n)
    return Moments(n, mean, scatter)


def add_outer(a: np.ndarray, u: np.ndarray, weight: float = 1.0) -> None:
    """a += weight · u uᵀ in place, by row tiles: the bytes of ``a + outer(u, u) * weight``
    without a d x d temporary (128 MiB at d = 4096)."""
    for lo in range(0, len(u), _TILE):
        cross = np.outer(u[lo:lo + _TILE], u)
        cross *= weight
        a[lo:lo + _TILE] += cross


def combine_all(parts: Sequence[Moments], overwrite: bool = False) -> Moments:
    """Merge in a fixed balanced binary tree over the given order, as the Dask reduction does,
    so the result is bit-identical however it was scheduled. ``overwrite``: the parts are the
    caller's to reuse (a reduction task's own inputs): each merge sums into its left part,
    so merging holds no d x d array beyond the parts (128 MiB each at d = 4096)."""
    if not parts:
        raise ValueError("combine_all needs at least one Moments")
    level = list(parts)
    while len(level) > 1:
        level = [combine(level[i], level[i + 1], overwrite) if i + 1 < len(level) else
                 level[i] for i in range(0, len(level), 2)]
    return level[0]


def merge_moments(parts: Sequence[Moments]) -> Moments:
    """A reduction task of pass 1: ``combine_all`` of its inputs, reusing their arrays. Only
    for inputs no one else reads and no second run of the task reads again: in a Dask tree
    each partial has one consumer, and a local scheduler runs a task once (a cluster may
    run it again on the same inputs: ``graph.compute.statistics_merge``)."""
    return combine_all(parts, overwrite=True)


def cross_trace(mx: Moments, mw: Moments) -> float:
    """tr(Sx Sw) of the uncentred second moments S = C + μ μᵀ, from the scatters without a
    d×d temporary: Σ Cx∘Cw + μwᵀ Cx μw + μxᵀ Cw μx + (μx·μw)²."""
    nx, nw = max(mx.n, 1), max(mw.n, 1)
    cc = float(np.einsum("ij,ij->", mx.scatter, mw.scatter)) / (nx * nw)
    return (cc + float(mw.mean @ (mx.scatter @ mw.mean)) / nx +
            float(mx.mean @ (mw.scatter @ mx.mean)) / nw + float(mx.mean @ mw.mean) ** 2)
