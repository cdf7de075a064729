"""Dask arrays in and out of the estimator: pass 1 over a dask array's canonical blocks,
and the lazy sketch of one, with the same tasks and tree as the pipeline."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ..errors import InputError
from ..io.common import working_dtype
from ..maths.blas import one_blas_thread
from ..maths.folds import moments_by_fold
from ..maths.model import SideMap
from ..maths.project import check_finite, project_block
from ..maths.quantize import Layout, decode, encode
from ..maths.stats import Moments, block_moments
from .compute import compute, statistics_merge, task, tree_reduce

__all__ = ["as_dask_array", "is_dask_array", "moments_of_arrays", "sketch_array"]


def is_dask_array(a: Any) -> bool:
    """True for a dask array (without importing dask.array for other inputs)."""
    if not type(a).__module__.startswith("dask"):
        return False
    import dask.array as da

    return isinstance(a, da.Array)


def as_dask_array(a: Any, name: str) -> Any:
    """A 2-D numeric dask array with known chunks, cast to the working dtype (lazily)."""
    if a.ndim != 2:
        raise InputError(f"{name}: expected a 2-D dask array (rows x d), got shape {a.shape}")
    if any(np.isnan(c) for c in a.chunks[0]):
        raise InputError(f"{name}: the dask array's row chunk sizes are unknown; call "
                         f"{name}.compute_chunk_sizes() first")
    if a.shape[0] == 0 or a.shape[1] == 0:
        raise InputError(f"{name}: the dask array has shape {a.shape}; at least one row and "
                         "one column are needed")
    try:
        dtype = working_dtype(a.dtype)
    except InputError as e:
        raise InputError(f"{name}: {e}; ddrp needs numeric vectors") from e
    return a.astype(dtype)


def _canonical(a: Any, rows: int) -> Any:
    """The dask array in canonical row blocks and one block across the columns."""
    return a.rechunk({0: rows, 1: -1})


def _one_stats_task(block: np.ndarray, where: str, row0: int) -> list[Moments]:
    """One leaf of pass 1 on a dask block (BLAS pinned to one thread, as in the pipeline)."""
    with one_blas_thread():
        return [block_moments(block, check_finite(block, where, row0))]


def _fold_stats_task(block: np.ndarray, where: str, row0: int, n_folds: int) -> list[Moments]:
    """One leaf of pass 1 per fold on a dask block (a row's fold from its global index)."""
    with one_blas_thread():
        check_finite(block, where, row0)
        rows = np.arange(row0, row0 + len(block))
        return moments_by_fold(block, rows, n_folds)  # each fold is a fresh copy


def moments_of_arrays(arrays: Mapping[str, Any], rows: int, n_folds: int = 0,
                      progress: bool = False) -> dict[str, list[Moments]]:
    """The statistics of each named dask array, in one compute (with ``progress``, its line
    on stderr): one leaf per canonical block, merged in the pipeline's fixed tree; a list of
    one ``Moments`` (``n_folds`` 0) or of one per fold."""
    lazy, units = {}, []
    merge = statistics_merge(True, None)
    for name, a in arrays.items():
        blocks = _canonical(a, rows)
        starts = np.concatenate([[0], np.cumsum(blocks.chunks[0])[:-1]])
        where = f"{name.upper()} (dask array)"
        if n_folds:
            leaves = [task(_fold_stats_task, blk, where, int(s), n_folds)
                      for blk, s in zip(blocks.to_delayed().ravel(), starts, strict=True)]
        else:
            leaves = [task(_one_stats_task, blk, where, int(s))
                      for blk, s in zip(blocks.to_delayed().ravel(), starts, strict=True)]
        lazy[name] = tree_reduce(leaves, merge)
        units += leaves
    computed = compute(list(lazy.values()), None, progress, "pass 1: statistics", units)
    return dict(zip(lazy, computed, strict=True))


def _sketch_task(block: np.ndarray, side_map: SideMap, where: str,
                 block_info: dict[Any, Any] | None = None,
                 storage: tuple[Layout, int, str] | None = None) -> np.ndarray:
    """One projection task on a dask block: the pipeline's ``project_block``; with
    ``storage`` (layout, seed, side) the decoded values of a quantized sketch's codes."""
    row0 = int(block_info[0]["array-location"][0][0]) if block_info else 0
    with one_blas_thread():
        check_finite(block, where, row0)
        out = project_block(block, side_map, where, row0)
    if storage is None:
        return out
    layout, seed, side = storage
    return decode(encode(out, layout, seed, side, row0), layout)


def sketch_array(a: Any, side_map: SideMap, rows: int, where: str,
                 storage: tuple[Layout, int, str] | None = None) -> Any:
    """Lazy sketch of a dask array: ``project_block`` mapped over canonical blocks (and,
    with ``storage``, a quantized layout's decoded codes)."""
    blocks = _canonical(a, rows)
    k = side_map.matrix.shape[1]
    return blocks.map_blocks(_sketch_task, side_map=side_map, where=where, dtype=np.float32,
                             storage=storage,
                             chunks=(blocks.chunks[0], (k,)),
                             meta=np.empty((0, 0), dtype=np.float32))
