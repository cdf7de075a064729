"""The two passes as Dask graphs: the numpy stages mapped over canonical row blocks.

A chunk that two blocks share is decoded once per pass: in one process by whichever of
their tasks comes first (``io.chunk_cache``), on a cluster by a task of its own that hands
each block its rows (``graph.reads``); the tasks are named in row order so that these run
together.

Pass 1 maps ``block_moments`` over canonical row blocks and merges them in a fixed tree of
aligned groups (the same tree as ``maths.stats.combine_all``), so the statistics — hence the
model and the sketches — are bit-identical on any scheduler and for any input chunking or
format. Pass 2 maps ``project_block`` over the same blocks; each task writes exactly one chunk
of the output array, so tasks never share a chunk and a retried task rewrites the same bytes.
Every task opens its input itself: the client ships only small descriptions and the model.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..io import lifecycle, writer
from ..io.codes import block_arrays
from ..io.source import Given, Source, invalid_mode, locating, read_valid, sketch_rows
from ..maths.blas import one_blas_thread
from ..maths.folds import merge_folds, moments_by_fold, pieces_fold_moments
from ..maths.model import SideMap
from ..maths.project import check_finite
from ..maths.quantize import Layout
from ..maths.stats import Moments, block_moments, merge_moments
from .compute import compute, delayed, row_order, task, tree_reduce
from .reads import shared_reads

__all__ = ["moments", "project_parquet", "project_zarr"]

Ranges = Sequence[tuple[int, int]]
#: A quantized sketch's layout and the model's seed (the dither's key).
Storage = tuple[Layout, int]


# ---------------------------------------------------------------------------------------
# tasks (run on workers; each pins BLAS to one thread: Dask threads x BLAS threads <= cores)


def _stats_task(src: Source, start: int, stop: int, side: str, skip: bool,
                given: Given) -> Moments:
    with one_blas_thread():
        block, bad, colsum = read_valid(src, start, stop, f"--{side} {src.path}", skip,
                                        given=given)
        if bad.size:
            return block_moments(np.delete(block, bad, axis=0))
        # shift in place when the block is ours to change (zarr decodes a fresh array;
        # memory maps and Arrow buffers are read-only and get copied by the shift)
        return block_moments(block, colsum, overwrite_input=block.flags.writeable)


def _fold_stats_task(src: Source, start: int, stop: int, side: str, skip: bool,
                     given: Given, n_folds: int) -> list[Moments]:
    """One block's statistics per fold; a row's fold follows its global index. Without
    ``skip`` the block is read as pieces and each fold gathers its rows from them (no copy
    of the whole block); NaN or inf shows in a fold's sums, and only then is the block
    searched for the row to name."""
    where = f"--{side} {src.path}"
    with one_blas_thread():
        if not skip:
            pieces = src.read_pieces(start, stop, given)
            with np.errstate(invalid="ignore", over="ignore"):  # inf: named just below
                parts = pieces_fold_moments(pieces, start, n_folds)
            if not all(np.isfinite(m.mean).all() for m in parts):
                with locating(src):
                    check_finite(np.concatenate(pieces), where, start)
            return parts
        block, bad, _ = read_valid(src, start, stop, where, skip, given=given)
        rows = np.arange(start, stop)
        if bad.size:
            block, rows = np.delete(block, bad, axis=0), np.delete(rows, bad)
        return moments_by_fold(block, rows, n_folds)


def _project_task(src: Source, start: int, stop: int, side: str, side_map: SideMap,
                  out: str, array: str, block: int, ids_array: str | None, skip: bool,
                  given: Given, storage: Storage | None = None) -> int:
    """Sketch one block, write its chunk (and its ids), then its done flag (2 when it skipped
    rows); a retry rewrites the same bytes. ``storage``: the (layout, seed) of a quantized
    sketch (``io.codes``), whose codes and scales are written instead."""
    with one_blas_thread():
        sketch, bad = sketch_rows(src, start, stop, side_map, f"{side} input {src.path}", skip,
                                  given)
    layout, seed = storage or (Layout.of("float32", sketch.shape[1]), 0)
    for name, values in block_arrays(array, sketch, layout, seed, side, start).items():
        writer.write_rows(f"{out}/{name}", slice(start, stop), values)
    if ids_array is not None:
        writer.write_rows(f"{out}/{ids_array}", slice(start, stop), src.read_ids(start, stop))
    lifecycle.mark_done(out, array, block, 2 if bad.size else 1)
    return stop - start


# ---------------------------------------------------------------------------------------
# passes


def _row_order(side: str, start: int) -> str:
    """A block task's key prefix: blocks run in row order (``compute.row_order``), next to
    the decodes of the chunks they share (``graph.reads``)."""
    return row_order(_side_order(side), start)


def _side_order(side: str) -> str:
    return f"ddrp-{side}"


def _shared(src: Source, ranges: Ranges, side: str, skip: bool, scheduler: Any,
            label: str) -> list[list[Any]]:
    """Per range, its rows of the chunks it shares with another, on a cluster decoded once
    in the pass ``label`` (``graph.reads``)."""
    return shared_reads(src, ranges, invalid_mode(skip), _side_order(side), label, scheduler)


def moments(blocks: Mapping[str, tuple[Source, Ranges]], skip: bool, scheduler: Any,
            progress: bool, n_folds: int = 0) -> dict[str, Any]:
    """Pass 1: the statistics of every side's ``(source, block ranges)``, in one compute:
    one ``Moments`` per side, or with ``n_folds`` a list of one per fold."""
    graphs, leaves = [], []
    for side, (src, ranges) in blocks.items():
        func, extra, merge = ((_fold_stats_task, (n_folds,), merge_folds) if n_folds else
                              (_stats_task, (), merge_moments))
        shared = _shared(src, ranges, side, skip, scheduler, "pass 1")
        orders = [_row_order(side, start) for start, _ in ranges]
        side_leaves = [task(func, src, start, stop, side, skip, given, *extra, order=order)
                       for (start, stop), given, order in zip(ranges, shared, orders,
                                                              strict=True)]
        graphs.append(tree_reduce(side_leaves, merge, orders=orders))
        leaves += side_leaves
    results = compute(graphs, scheduler, progress, "pass 1: statistics", leaves)
    return dict(zip(blocks, results, strict=True))


def project_zarr(jobs: Sequence[tuple[str, Source, SideMap, str, str | None,
                                      Sequence[tuple[int, int, int]]]],
                 out: str, skip: bool, scheduler: Any, progress: bool,
                 storage: Storage | None = None) -> None:
    """Pass 2 into a Zarr group: for every ``(side, source, map, array, ids array,
    [(block, start, stop), ...])``, one task per pending block writing its chunk (and a
    quantized layout's codes, with ``storage``)."""
    leaves = []
    for side, src, side_map, array, ids_array, pending in jobs:
        lazy_map = delayed(side_map)
        shared = _shared(src, [(start, stop) for _, start, stop in pending], side, skip,
                         scheduler, "pass 2")
        leaves += [task(_project_task, src, start, stop, side, lazy_map, out, array, block,
                        ids_array, skip, given, storage, order=_row_order(side, start))
                   for (block, start, stop), given in zip(pending, shared, strict=True)]
    compute(leaves, scheduler, progress, "pass 2: projection")


def project_parquet(jobs: Sequence[tuple[str, Source, SideMap, int,
                                         Sequence[tuple[str, list[tuple[int, int]]]]]],
                    skip: bool, scheduler: Any, progress: bool,
                    storage: Storage | None = None) -> None:
    """Pass 2 into Parquet: for every ``(side, source, map, K, [(file, ranges), ...])``, one
    task per output file (``io.writer.write_file``; a quantized layout with ``storage``)."""
    leaves = []
    for side, src, side_map, k, files in jobs:
        lazy_map = delayed(side_map)
        # a file's row ranges are contiguous: its span stands for them
        shared = _shared(src, [(r[0][0], r[-1][1]) for _, r in files], side, skip, scheduler,
                         "pass 2")
        leaves += [task(writer.write_file, src, ranges, side, lazy_map, target, k, skip,
                        given, storage, order=_row_order(side, ranges[0][0]))
                   for (target, ranges), given in zip(files, shared, strict=True)]
    compute(leaves, scheduler, progress, "pass 2: projection", unit="files")
