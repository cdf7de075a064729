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

from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..io import lifecycle, writer
from ..io.codes import block_arrays
from ..io.partials import PartialSums
from ..io.source import Given, Source, locating
from ..maths.blas import one_blas_thread
from ..maths.folds import moments_by_fold, pieces_fold_moments
from ..maths.model import SideMap
from ..maths.project import check_finite
from ..maths.quantize import Layout
from ..maths.stats import Moments, block_moments
from .compute import delayed, row_order, statistics_merge, task
from .reads import shared_reads
from .rounds import compute_rounds
from .rows import invalid_mode, read_valid, sketch_rows
from .scheduler import Scheduler

__all__ = ["SketchTarget", "moments", "project_parquet", "project_zarr"]

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


def _parquet_task(src: Source, ranges: list[tuple[int, int]], side: str, side_map: SideMap,
                  target: str, k: int, skip: bool, given: Given,
                  storage: Storage | None = None) -> list[int]:
    """Sketch ``ranges`` of ``src`` (one row group each) into the Parquet file ``target``
    (``io.writer.write_file``); returns the skipped rows."""
    where = f"{side} input {src.path}"

    def blocks() -> Iterator[tuple[int, int, np.ndarray, np.ndarray]]:
        for start, stop in ranges:  # one row group at a time: memory bounded by one
            mine = [g for g in given if start <= g[0] < stop]
            sketch, bad = sketch_rows(src, start, stop, side_map, where, skip, mine)
            yield start, stop, sketch, bad

    with one_blas_thread():
        return writer.write_file(src, side, blocks(), target, k, storage)


Node = tuple[str, int, int, int]
"""A node of pass 1's tree: ``(side, level, index, level of the root)``."""


def _saved(keep: PartialSums | None, node: Node, folds: bool, result: Any) -> Any:
    """``result`` (a node's statistics), saved in ``keep`` when its level is kept."""
    side, level, index, top = node
    if keep is not None and keep.keeps(level, top):
        keep.save(side, level, index, result if folds else [result])
    return result


def _leaf_task(func: Callable[..., Any], keep: PartialSums | None, node: Node, folds: bool,
               *args: Any) -> Any:
    """A block's statistics (``func(*args)``), saved as its leaf."""
    return _saved(keep, node, folds, func(*args))


def _merge_task(merge: Callable[..., Any], keep: PartialSums | None, node: Node, folds: bool,
                parts: Sequence[Any]) -> Any:
    """A merge of pass 1's tree, saved when its level is kept (deleting those below)."""
    return _saved(keep, node, folds, merge(parts))


def _load_task(path: str, folds: bool) -> Any:
    """A node saved earlier (pinned at ``path``), as a merge would have returned it."""
    parts = PartialSums.load(path)
    return parts if folds else parts[0]


# ---------------------------------------------------------------------------------------
# passes


def _row_order(side: str, start: int) -> str:
    """A block task's key prefix: blocks run in row order (``compute.row_order``), next to
    the decodes of the chunks they share (``graph.reads``)."""
    return row_order(_side_order(side), start)


def _side_order(side: str) -> str:
    return f"ddrp-{side}"


def _shared(src: Source, ranges: Ranges, side: str, skip: bool, scheduler: Scheduler,
            label: str) -> list[list[Any]]:
    """Per range, its rows of the chunks it shares with another, on a cluster decoded once
    in the pass ``label`` (``graph.reads``)."""
    return shared_reads(src, ranges, invalid_mode(skip), _side_order(side), label, scheduler)


def moments(blocks: Mapping[str, tuple[Source, Ranges]], skip: bool, scheduler: Scheduler,
            progress: bool, n_folds: int = 0, keep: PartialSums | None = None
            ) -> dict[str, Any]:
    """Pass 1: the statistics of every side's ``(source, block ranges)``, in one compute:
    one ``Moments`` per side, or with ``n_folds`` a list of one per fold. With ``keep``,
    its tasks save the tree's partial sums there (``io.partials``), and the blocks under a
    saved node are not read again: neither after a resumed interruption nor in a round
    resubmitted after workers died (``graph.rounds``); each round reads them through links
    of its own (``PartialSums.pin``), deleted when the pass ends."""
    pins: list[str] = []

    def build() -> tuple[list[Any], list[Any]]:
        graphs, leaves = [], []
        if keep is not None:
            pins.append(keep.pin_directory())
        for side, (src, ranges) in blocks.items():
            saved = keep.pin(side, pins[-1]) if keep is not None else {}
            root, side_leaves = _side_tree(side, src, ranges, skip, scheduler, n_folds, keep,
                                           saved)
            graphs.append(root)
            leaves += side_leaves
        return graphs, leaves

    try:
        results = compute_rounds(build, scheduler, progress, "pass 1: statistics")
    finally:
        for into in pins:
            PartialSums.unpin(into)
    return dict(zip(blocks, results, strict=True))


def _side_tree(side: str, src: Source, ranges: Ranges, skip: bool, scheduler: Scheduler,
               n_folds: int, keep: PartialSums | None, saved: Mapping[tuple[int, int], str]
               ) -> tuple[Any, list[Any]]:
    """One side's reduction tree of pass 1 (``compute.tree_reduce``'s, built from the top so
    that a saved node, read from its pinned path in ``saved``, stands for its subtree) and
    the block tasks it still runs."""
    func, extra = (_fold_stats_task, (n_folds,)) if n_folds else (_stats_task, ())
    merge = statistics_merge(bool(n_folds), scheduler)
    top = (len(ranges) - 1).bit_length()  # the root's level
    orders = [_row_order(side, start) for start, _ in ranges]
    needed = _unsaved_leaves(saved, top, len(ranges))
    shared = dict(zip(needed, _shared(src, [ranges[i] for i in needed], side, skip,
                                      scheduler, "pass 1"), strict=True))
    where = f"--{side} {src.path}"
    leaves = {i: task(_leaf_task, func, keep, (side, 0, i, top), bool(n_folds), src,
                      *ranges[i], side, skip, shared[i], *extra, order=orders[i],
                      what=f"rows {ranges[i][0]}..{ranges[i][1]} of {where}",
                      name=func.__name__)
              for i in needed}

    def node(level: int, i: int) -> Any:
        order = f"{orders[i << level]}-{level}" if level else orders[i]
        if (level, i) in saved:
            return task(_load_task, saved[level, i], bool(n_folds), order=order,
                        what=f"reading the kept statistics of {where}")
        if level == 0:
            return leaves[i]
        below = -(-len(ranges) // (1 << (level - 1)))  # nodes one level down
        kids = [node(level - 1, j) for j in (2 * i, 2 * i + 1) if j < below]
        return task(_merge_task, merge, keep, (side, level, i, top), bool(n_folds), kids,
                    order=order, what=f"merging the statistics of {where}",
                    name=merge.__name__)

    return node(top, 0), list(leaves.values())


def _unsaved_leaves(saved: Collection[tuple[int, int]], top: int, n: int) -> list[int]:
    """The leaves of a tree of ``n`` leaves (root at level ``top``) under no saved node."""
    if not saved:
        return list(range(n))
    return [i for i in range(n)
            if not any((lv, i >> lv) in saved for lv in range(top + 1))]


@dataclass(frozen=True)
class SketchTarget:
    """One source to sketch as one side in pass 2: its array names in a Zarr group
    (``array``, ``ids`` or None, ``prefix`` of its skipped-row lists) or its Parquet
    directory (``parquet_dir``, relative to the output; "" for the output itself)."""

    side: str
    source: Source
    array: str
    ids: str | None
    prefix: str
    parquet_dir: str


#: Per target, its pending ``(block, start, stop)`` (Zarr) or ``(file, row ranges)``.
ZarrJobs = Sequence[tuple[SketchTarget, Sequence[tuple[int, int, int]]]]
ParquetJobs = Sequence[tuple[SketchTarget, Sequence[tuple[str, list[tuple[int, int]]]]]]


def project_zarr(jobs: Callable[[], ZarrJobs], maps: Mapping[str, SideMap], out: str,
                 skip: bool, scheduler: Scheduler, progress: bool,
                 storage: Storage | None = None) -> None:
    """Pass 2 into a Zarr group: ``jobs()`` gives every target with its pending ``(block,
    start, stop)``, one task each sketching with its side's map in ``maps`` and writing its
    chunk (and a quantized layout's codes, with ``storage``); asked again when a round is
    resubmitted (``graph.rounds``)."""
    def build() -> tuple[list[Any], list[Any]]:
        leaves = []
        for t, pending in jobs():
            side, src, array, ids_array = t.side, t.source, t.array, t.ids
            lazy_map = delayed(maps[side])
            shared = _shared(src, [(start, stop) for _, start, stop in pending], side, skip,
                             scheduler, "pass 2")
            leaves += [task(_project_task, src, start, stop, side, lazy_map, out, array, block,
                            ids_array, skip, given, storage, order=_row_order(side, start),
                            what=f"block {block} (rows {start}..{stop}) of {side} input "
                                 f"{src.path}")
                       for (block, start, stop), given in zip(pending, shared, strict=True)]
        return leaves, []

    compute_rounds(build, scheduler, progress, "pass 2: projection")


def project_parquet(jobs: Callable[[], ParquetJobs], maps: Mapping[str, SideMap], k: int,
                    skip: bool, scheduler: Scheduler, progress: bool,
                    storage: Storage | None = None) -> None:
    """Pass 2 into Parquet: ``jobs()`` gives every target with its ``(file, row ranges)``
    not written yet, one task each (``_parquet_task``, K columns; a quantized layout with
    ``storage``); asked again when a round is resubmitted."""
    def build() -> tuple[list[Any], list[Any]]:
        leaves = []
        for t, files in jobs():
            side, src = t.side, t.source
            lazy_map = delayed(maps[side])
            # a file's row ranges are contiguous: its span stands for them
            shared = _shared(src, [(r[0][0], r[-1][1]) for _, r in files], side, skip,
                             scheduler, "pass 2")
            leaves += [task(_parquet_task, src, ranges, side, lazy_map, target, k, skip,
                            given, storage, order=_row_order(side, ranges[0][0]),
                            what=f"output file {target} ({side} rows {ranges[0][0]}.."
                                 f"{ranges[-1][1]} of {src.path})")
                       for (target, ranges), given in zip(files, shared, strict=True)]
        return leaves, []

    compute_rounds(build, scheduler, progress, "pass 2: projection", unit="files")
