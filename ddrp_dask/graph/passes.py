"""The two passes as Dask graphs: the numpy stages mapped over canonical row blocks.

Each pass reads the source in *units* (``io.units``): runs of whole chunks, one read task
each, so every Zarr chunk or Parquet row group is decoded once whatever its size against the
blocks. Every canonical block then has one task, which takes its rows from the units holding
them (a block that two units share joins its two parts).

Pass 1 maps ``block_moments`` over the blocks and merges them in a fixed tree of aligned
groups (the same tree as ``maths.stats.combine_all``), so the statistics — hence the model
and the sketches — are bit-identical on any scheduler and for any input chunking or format.
Pass 2 sketches each block in its own task, which writes exactly one chunk of the output
array (or one Parquet file), so tasks never share a chunk and a retried task rewrites the
same bytes. Every read task opens its input itself: the client ships only small
descriptions and the model.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from ..io import lifecycle, writer
from ..io.source import Source, valid_rows
from ..io.units import block_parts, plan_units
from ..maths.blas import one_blas_thread
from ..maths.model import SideMap
from ..maths.optimal import combine_folds, moments_by_fold
from ..maths.project import sketch_valid
from ..maths.stats import Moments, block_moments, combine_all
from .compute import compute, delayed, stats_fan_in, task, tree_reduce

__all__ = ["moments", "project_parquet", "project_zarr"]

Ranges = Sequence[tuple[int, int]]
#: What a read task returns: rows (and ids, when asked) of one unit.
Read = tuple[np.ndarray, "np.ndarray | None"]
#: Rows ``lo:hi`` of a read task's result (delayed): one part of a block.
Piece = tuple[Any, int, int]


# ---------------------------------------------------------------------------------------
# reading units and joining parts (run on workers)


def _read_unit(src: Source, start: int, stop: int, as_nan: bool, ids: bool, side: str) -> Read:
    """Rows ``start:stop`` of one unit (nulls as NaN rows with ``as_nan``), and their ids.
    ``side`` only names the task: one file given as both sides gets a read per side, since
    each side's blocks shift their rows in place."""
    rows = src.read_rows(start, stop, "nan" if as_nan else "error")
    return rows, src.read_ids(start, stop) if ids else None


def _cut(read: Read, lo: int, hi: int) -> Read:
    """Rows ``lo:hi`` of a read (views): on a cluster, what moves to the worker joining a
    block is this part, not the whole unit."""
    rows, ids = read
    return rows[lo:hi], None if ids is None else ids[lo:hi]


def _join(pieces: Sequence[tuple[Read, int, int]]) -> Read:
    """A block's rows from its parts: a view of the one unit holding them all (its rows
    belong to this block alone, so the block's task may shift them in place), else the
    parts joined into a fresh array."""
    if len(pieces) == 1:
        (rows, ids), lo, hi = pieces[0]
        return rows[lo:hi], None if ids is None else ids[lo:hi]
    rows = np.concatenate([r[lo:hi] for (r, _), lo, hi in pieces])
    id_parts = [i[lo:hi] for (_, i), lo, hi in pieces if i is not None]
    return rows, np.concatenate(id_parts) if id_parts else None


def _block_tasks(src: Source, side: str, wanted: Ranges, skip: bool, ids: bool,
                 make: Callable[..., Any]) -> list[Any]:
    """One task per ``wanted`` range, ``make(pieces, i, lenient)``, over the reading units
    of the source: a unit's read task feeds every block it holds; a block in several units
    gets its parts cut out first (on a cluster only the parts move, not the units)."""
    block_rows = max(e - s for s, e in wanted) if wanted else 1  # the canonical blocks'
    units = plan_units(wanted, src.chunk_bounds(block_rows))
    reads = [task(_read_unit, src, u.start, u.stop, skip or not u.covered, ids, side)
             for u in units]
    lenient = [False] * len(wanted)
    for u in units:
        if not (skip or u.covered):
            for p in u.parts:
                lenient[p.block] = True
    out = []
    for i, parts in enumerate(block_parts(units, len(wanted))):
        if len(parts) == 1:
            j, a, b = parts[0]
            pieces = [(reads[j], a - units[j].start, b - units[j].start)]
        else:
            pieces = [(task(_cut, reads[j], a - units[j].start, b - units[j].start), 0, b - a)
                      for j, a, b in parts]
        out.append(make(pieces, i, lenient[i]))
    return out


# ---------------------------------------------------------------------------------------
# block tasks (run on workers; each pins BLAS to one thread: Dask threads x BLAS threads <=
# cores)


def _stats_task(pieces: Sequence[tuple[Read, int, int]], src: Source, start: int,
                side: str, skip: bool, lenient: bool) -> Moments:
    with one_blas_thread():
        block, _ = _join(pieces)
        block, bad, colsum = valid_rows(src, block, start, f"--{side} {src.path}", skip,
                                        lenient=lenient)
        if bad.size:
            return block_moments(np.delete(block, bad, axis=0))
        # shift in place when the block is ours to change (zarr decodes a fresh array;
        # memory maps and Arrow buffers are read-only and get copied by the shift)
        return block_moments(block, colsum, overwrite_input=block.flags.writeable)


def _fold_stats_task(pieces: Sequence[tuple[Read, int, int]], src: Source, start: int,
                     side: str, skip: bool, lenient: bool, n_folds: int) -> list[Moments]:
    """One block's statistics per fold; a row's fold follows its global index."""
    with one_blas_thread():
        block, _ = _join(pieces)
        block, bad, _ = valid_rows(src, block, start, f"--{side} {src.path}", skip,
                                   lenient=lenient)
        rows = np.arange(start, start + len(block))
        if bad.size:
            block, rows = np.delete(block, bad, axis=0), np.delete(rows, bad)
        return moments_by_fold(block, rows, n_folds)


def _sketch_rows(pieces: Sequence[tuple[Read, int, int]], src: Source, start: int,
                 where: str, skip: bool, lenient: bool
                 ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """A block's rows, ids and invalid rows (with ``skip``; else NaN and inf are left to
    the projection, which names them)."""
    rows, ids = _join(pieces)
    rows, bad, _ = valid_rows(src, rows, start, where, skip, check=False, lenient=lenient)
    return rows, ids, bad


def _project_task(pieces: Sequence[tuple[Read, int, int]], src: Source, start: int,
                  side: str, side_map: SideMap, out: str, array: str, block: int,
                  ids_array: str | None, skip: bool, lenient: bool) -> int:
    """Sketch one block, write its chunk (and its ids), then its done flag (2 when it skipped
    rows); a retry rewrites the same bytes."""
    where = f"{side} input {src.path}"
    with one_blas_thread():
        rows, ids, bad = _sketch_rows(pieces, src, start, where, skip, lenient)
        sketch = sketch_valid(rows, bad, side_map, where, start,
                              overwrite_input=rows.flags.writeable)
    stop = start + len(rows)
    writer.write_rows(f"{out}/{array}", slice(start, stop), sketch)
    if ids_array is not None:
        assert ids is not None
        writer.write_rows(f"{out}/{ids_array}", slice(start, stop), ids)
    lifecycle.mark_done(out, array, block, 2 if bad.size else 1)
    return stop - start


def _part_file_task(pieces: Sequence[tuple[Read, int, int]], src: Source, start: int,
                    side: str, side_map: SideMap, target: str, k: int, skip: bool,
                    lenient: bool) -> list[int]:
    """Sketch one block into its own Parquet file (``io.writer.write_tables``); returns
    the skipped rows."""
    where = f"{side} input {src.path}"
    with one_blas_thread():
        rows, ids, bad = _sketch_rows(pieces, src, start, where, skip, lenient)
        skipped = (start + bad).tolist()
        table = writer.sketch_table(rows, ids, bad, side_map, where, start)
        writer.write_tables(target, [table], src.id_column or "row", k, skipped)
    return skipped


# ---------------------------------------------------------------------------------------
# passes


def moments(blocks: Mapping[str, tuple[Source, Ranges]], skip: bool, scheduler: Any,
            progress: bool, n_folds: int = 0) -> dict[str, Any]:
    """Pass 1: the statistics of every side's ``(source, block ranges)``, in one compute:
    one ``Moments`` per side, or with ``n_folds`` a list of one per fold."""
    graphs, leaves = [], []
    for side, (src, ranges) in blocks.items():
        fan_in = stats_fan_in(src.d, n_folds)
        def leaf(pieces: list[Piece], i: int, lenient: bool, src: Source = src,
                 ranges: Ranges = ranges, side: str = side) -> Any:
            if n_folds:
                return task(_fold_stats_task, pieces, src, ranges[i][0], side, skip, lenient,
                            n_folds)
            return task(_stats_task, pieces, src, ranges[i][0], side, skip, lenient)

        side_leaves = _block_tasks(src, side, ranges, skip, False, leaf)
        graphs.append(tree_reduce(side_leaves, combine_folds if n_folds else combine_all,
                                  fan_in=fan_in))
        leaves += side_leaves
    results = compute(graphs, scheduler, progress, "pass 1: statistics", leaves)
    return dict(zip(blocks, results, strict=True))


def project_zarr(jobs: Sequence[tuple[str, Source, SideMap, str, str | None,
                                      Sequence[tuple[int, int, int]]]],
                 out: str, skip: bool, scheduler: Any, progress: bool) -> None:
    """Pass 2 into a Zarr group: for every ``(side, source, map, array, ids array,
    [(block, start, stop), ...])``, one task per pending block writing its chunk."""
    leaves = []
    for side, src, side_map, array, ids_array, pending in jobs:
        lazy_map = delayed(side_map)

        def leaf(pieces: list[Piece], i: int, lenient: bool, src: Source = src,
                 side: str = side, lazy_map: Any = lazy_map, array: str = array,
                 ids_array: str | None = ids_array,
                 pending: Sequence[tuple[int, int, int]] = pending) -> Any:
            block, start, _ = pending[i]
            return task(_project_task, pieces, src, start, side, lazy_map, out, array, block,
                        ids_array, skip, lenient)

        leaves += _block_tasks(src, side, [(s, e) for _, s, e in pending], skip,
                               ids_array is not None, leaf)
    compute(leaves, scheduler, progress, "pass 2: projection")


def project_parquet(jobs: Sequence[tuple[str, Source, SideMap, int,
                                         Sequence[tuple[str, list[tuple[int, int]]]]]],
                    skip: bool, scheduler: Any, progress: bool) -> None:
    """Pass 2 into Parquet: for every ``(side, source, map, K, [(file, ranges), ...])``, one
    task per output file. Files of one range each (one per canonical block, or per input
    file of one row group) are sketched from reading units; files mirroring an input file
    of several row groups read them one at a time (``io.writer.write_file``)."""
    leaves = []
    for side, src, side_map, k, files in jobs:
        lazy_map = delayed(side_map)
        if any(len(ranges) != 1 for _, ranges in files):
            leaves += [task(writer.write_file, src, ranges, side, lazy_map, target, k, skip)
                       for target, ranges in files]
            continue

        def leaf(pieces: list[Piece], i: int, lenient: bool, src: Source = src,
                 side: str = side, lazy_map: Any = lazy_map, k: int = k,
                 files: Sequence[tuple[str, list[tuple[int, int]]]] = files) -> Any:
            target, ((start, _),) = files[i]
            return task(_part_file_task, pieces, src, start, side, lazy_map, target, k, skip,
                        lenient)

        leaves += _block_tasks(src, side, [ranges[0] for _, ranges in files], skip,
                               src.id_column is not None, leaf)
    compute(leaves, scheduler, progress, "pass 2: projection")
