"""Top-N selection, exact and deterministic (pure numpy).

Rows are ordered by score, highest first, ties by the lower column (W row) index: a strict
total order, so the union of per-tile winners always holds the global winners, whatever the
tiling, and merges in any fixed tree give the same result. NaN scores rank last.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["MAX_SCORES", "merge_top_n", "top_n", "top_n_products"]

#: Scores a top-N task holds at once (float32: 16 MiB, plus ~4 bytes/score of bookkeeping).
MAX_SCORES = 2**22


def top_n(scores: np.ndarray, n: int, offset: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The ``n`` largest scores of every row, best first, ties broken by the lower column.

    Parameters
    ----------
    scores : ndarray of shape (rows, cols)
    n : int
        Kept per row (all columns if ``n`` ≥ cols).
    offset : int, default=0
        Added to the column numbers (the first W row of the block).

    Returns
    -------
    indices : ndarray of int64, shape (rows, min(n, cols))
    values : ndarray of shape (rows, min(n, cols)), the dtype of ``scores`` (NaN as −inf)

    >>> top_n(np.array([[1.0, 3.0, 3.0, 2.0]]), 2, offset=10)
    (array([[11, 12]]), array([[3., 3.]]))
    """
    s = np.asarray(scores)
    if np.isnan(s).any():
        s = np.where(np.isnan(s), -np.inf, s)
    rows, cols = s.shape
    keep = min(int(n), cols)
    if keep == cols:
        cand = np.broadcast_to(np.arange(cols), (rows, cols))
    else:
        cand = np.argpartition(s, cols - keep, axis=1)[:, cols - keep:]  # ties: arbitrary
        kth = np.take_along_axis(s, cand, axis=1).min(axis=1, keepdims=True)
        straddle = np.flatnonzero((s >= kth).sum(axis=1) > keep)
        if straddle.size:  # ties at the n-th value: take the lowest columns among them
            sub, k_sub = s[straddle], kth[straddle]
            ties = sub == k_sub
            need = keep - (sub > k_sub).sum(axis=1, keepdims=True)
            chosen = (sub > k_sub) | (ties & (np.cumsum(ties, axis=1) <= need))
            cand = cand.copy()
            cand[straddle] = np.nonzero(chosen)[1].reshape(straddle.size, keep)
    values = np.take_along_axis(s, cand, axis=1)
    order = np.lexsort((cand, -values), axis=1)
    idx = np.take_along_axis(cand, order, axis=1).astype(np.int64) + offset
    return idx, np.take_along_axis(values, order, axis=1)


def merge_top_n(parts: Sequence[tuple[np.ndarray, np.ndarray]],
                n: int) -> tuple[np.ndarray, np.ndarray]:
    """Merge per-block ``(indices, values)`` of the same rows into the overall top ``n``
    (score descending, then index ascending): exact, whatever the blocks."""
    idx = np.concatenate([p[0] for p in parts], axis=1)
    val = np.concatenate([p[1] for p in parts], axis=1)
    order = np.lexsort((idx, -val), axis=1)[:, :n]
    return np.take_along_axis(idx, order, axis=1), np.take_along_axis(val, order, axis=1)


def top_n_products(a: np.ndarray, b: np.ndarray, n: int, offset: int = 0,
                   max_scores: int = MAX_SCORES) -> tuple[np.ndarray, np.ndarray]:
    """``top_n(a @ b.T, n, offset)`` computed over pieces of ``b`` so that at most about
    ``max_scores`` scores are held at once.

    Once every row holds n results, a later piece can only add scores strictly above a row's
    n-th best (a tie loses: its column is higher), so only those few scores are merged in:
    selection then costs about a comparison per score, less than the product itself.
    """
    step = max(1, max_scores // max(len(a), 1))
    best: tuple[np.ndarray, np.ndarray] | None = None
    for c0 in range(0, len(b), step):
        s = a @ b[c0:c0 + step].T
        if best is None or best[0].shape[1] < n:
            part = top_n(s, n, offset + c0)
            best = part if best is None else merge_top_n([best, part], n)
            continue
        best = _add_above(best, s, n, offset + c0)
    if best is None:
        return np.zeros((len(a), 0), np.int64), np.zeros((len(a), 0), np.result_type(a, b))
    return best


def _add_above(best: tuple[np.ndarray, np.ndarray], s: np.ndarray, n: int,
               offset: int) -> tuple[np.ndarray, np.ndarray]:
    """Merge into ``best`` (n per row, columns below ``offset``) the scores of ``s`` above each
    row's n-th best: one sort of the affected rows' entries and those scores."""
    rows, cols = np.nonzero(s > best[1][:, -1:])  # NaN never passes
    if rows.size == 0:
        return best
    hit = np.unique(rows)
    row_all = np.concatenate([np.repeat(hit, n), rows])
    idx_all = np.concatenate([best[0][hit].ravel(), cols.astype(np.int64) + offset])
    val_all = np.concatenate([best[1][hit].ravel(), s[rows, cols]])
    order = np.lexsort((idx_all, -val_all, row_all))
    starts = np.searchsorted(row_all[order], hit)
    take = order[(starts[:, None] + np.arange(n)).ravel()]
    idx, val = best[0].copy(), best[1].copy()
    idx[hit] = idx_all[take].reshape(hit.size, n)
    val[hit] = val_all[take].reshape(hit.size, n)
    return idx, val
