"""Fold statistics: pass 1's ``Moments`` split by a hash of each row's global index, so the
build can hold folds out (``maths.crossfit``) without a second pass. Pure numpy.

A row's fold is a function of its *global* row index (``fold_of``), so the fold statistics
do not depend on how the source is cut into blocks. Pass 1 returns, per block,
``fold_moments(block, row0)``: one ``Moments`` per fold; the lists are merged elementwise
(``combine_folds``), and merging the folds gives the whole-data statistics
(``docs/method.md §5.4``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import OptionError
from .stats import Moments, block_moments, combine_all

__all__ = ["MAX_CROSS_FIT_D", "N_FOLDS", "combine_folds", "fold_moments", "fold_of",
           "folds_for", "merge_folds", "moments_by_fold", "pieces_fold_moments"]

#: Folds of pass 1's statistics.
N_FOLDS = 5
#: Above this d, pass 1 keeps one fold (``folds_for``).
MAX_CROSS_FIT_D = 1024


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

