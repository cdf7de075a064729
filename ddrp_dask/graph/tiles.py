"""Graphs of the commands that use sketches and models: ``matmul``'s tiles (full product or
top-N) and ``evaluate``'s sampled-row reads and top-N scoring."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..io import lifecycle, writer
from ..io.source import Given, Source, locating
from ..maths.blas import one_blas_thread
from ..maths.metrics import row_runs
from ..maths.model import SideMap
from ..maths.project import check_finite, project_block
from ..maths.topn import merge_top_n, top_n_products
from .compute import compute, delayed, row_order, task, tree_reduce
from .reads import shared_reads
from .scheduler import Scheduler

__all__ = ["gather_rows", "matmul_product", "matmul_top", "top_n_by_method"]

#: Largest gap (rows) bridged by one read when gathering rows of a .npy source.
NPY_GAP = 64
Range = tuple[int, int]


# ---------------------------------------------------------------------------------------
# matmul


def _read(src: Source, start: int, stop: int) -> np.ndarray:
    """Rows of a sketch; NaN rows (rows left out by ``--on-invalid skip``) are kept: they give
    NaN products and no top-N entries."""
    return src.read_rows(start, stop)


def _product_task(x: Source, w: Source, rows: tuple[int, int], cols: tuple[int, int],
                  out: str, tile: int) -> int:
    """Write one chunk of the product, S[rows] @ T[cols].T, then its flag."""
    with one_blas_thread():
        a = _read(x, *rows)
        b = _read(w, *cols)
        product = (a @ b.T).astype(np.float32, copy=False)
    writer.write_rows(f"{out}/product", (slice(*rows), slice(*cols)), product)
    lifecycle.mark_done(out, "product", tile)
    return int(product.size)


def _top_task(a_src: Source, b_src: Source, rows: tuple[int, int], cols: tuple[int, int],
              n: int) -> tuple[np.ndarray, np.ndarray]:
    """The top n of A[rows] @ B[cols].T, with global B indices."""
    with one_blas_thread():
        a = _read(a_src, *rows)
        b = _read(b_src, *cols)
        return top_n_products(a, b, n, offset=cols[0])


def _write_top_task(part: tuple[np.ndarray, np.ndarray], layout: writer.TopLayout,
                    block: int, rows: tuple[int, int]) -> int:
    idx, val = part
    invalid = np.isnan(val) | np.isneginf(val)  # from NaN sketch rows: no valid estimate
    if invalid.any():
        idx, val = np.where(invalid, -1, idx), np.where(invalid, np.nan, val)
    layout.write(block, rows, idx, val)
    if layout.fmt == "zarr":
        lifecycle.mark_done(layout.out, "indices", block)
    return int(idx.shape[0])


def matmul_product(x: Source, w: Source, tiles: Sequence[tuple[int, Range, Range]],
                   out: str, scheduler: Scheduler, progress: bool) -> None:
    """Write the tiles ``(flag, rows, cols)``, ``S[rows] @ T[cols].T``, into ``out/product``:
    one task per tile, which then sets its flag (``lifecycle.mark_done``)."""
    tasks = [task(_product_task, x, w, r, c, out, flag) for flag, r, c in tiles]
    compute(tasks, scheduler, progress, "matmul")


def matmul_top(a: Source, b: Source, rows: Sequence[tuple[int, Range]], cols: Sequence[Range],
               layout: writer.TopLayout, scheduler: Scheduler, progress: bool) -> None:
    """Write the exact top N rows of ``b`` for every row of ``a`` (the side searched from),
    for the row blocks ``rows`` (``(block, range)``): tiles' top-N merged per row block in
    the fixed tree, then one write task per row block (``layout.write``)."""
    writes, leaves = [], []
    for block, r in rows:
        tiles = [task(_top_task, a, b, r, c, layout.top) for c in cols]
        leaves += tiles
        writes.append(task(_write_top_task, tree_reduce(tiles, merge_top_n, layout.top),
                           layout, block, r))
    compute(writes, scheduler, progress, "matmul", leaves)


# ---------------------------------------------------------------------------------------
# evaluate


def _gather_task(src: Source, idx: np.ndarray, flag: str) -> np.ndarray:
    """Rows ``idx`` (sorted, distinct, within one block) of ``src``. A .npy file is read run
    by run; other formats decode whole chunks or row groups anyway, so the range is read once."""
    with one_blas_thread():
        parts = []
        for start, stop in row_runs(idx, NPY_GAP if src.kind == "npy" else None):
            block = src.read_rows(start, stop)
            with locating(src):
                check_finite(block, f"{flag} {src.path}", start)
            mine = idx[(idx >= start) & (idx < stop)]
            parts.append(block[mine - start])
        return np.concatenate(parts)


def _gather(src: Source, rows: np.ndarray, block_rows: int, flag: str) -> list[Any]:
    """One task per block holding a wanted row; their results, in order, are ``src[rows]``."""
    blocks = rows // block_rows
    cuts = np.flatnonzero(np.diff(blocks)) + 1
    return [task(_gather_task, src, part, flag) for part in np.split(rows, cuts)]


def _scores_task(src: Source, start: int, stop: int, given: Given, queries: Any,
                 sketches: dict[str, Any], maps: dict[str, SideMap], n: int
                 ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Top-n W rows of this block for the query rows: exactly, and by each method's sketch
    (``given``: its rows of the chunks it shares, ``graph.reads``)."""
    with one_blas_thread():
        block = src.read_rows(start, stop, given=given)
        with locating(src):
            check_finite(block, f"--w {src.path}", start)
            out = {"exact": top_n_products(queries, block, n, offset=start)}
            for name, side_map in maps.items():
                t = project_block(block, side_map, f"--w {src.path}", start)
                out[name] = top_n_products(sketches[name], t, n, offset=start)
        return out


def _merge_named(parts: Sequence[dict[str, tuple[np.ndarray, np.ndarray]]],
                 n: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    return {key: merge_top_n([p[key] for p in parts], n) for key in parts[0]}


def gather_rows(wanted: Mapping[str, tuple[Source, np.ndarray]], block_rows: int,
                scheduler: Scheduler, progress: bool) -> dict[str, np.ndarray]:
    """The wanted rows (sorted, distinct) of each side's source, in one compute."""
    graphs = [_gather(src, rows, block_rows, f"--{side}")
              for side, (src, rows) in wanted.items()]
    results = compute([g for gs in graphs for g in gs], scheduler, progress,
                      "evaluate: reading sampled rows")
    out, i = {}, 0
    for side, gs in zip(wanted, graphs, strict=True):
        out[side] = np.concatenate(results[i:i + len(gs)])
        i += len(gs)
    return out


def top_n_by_method(w: Source, block_rows: int, queries: np.ndarray,
                    sketches: dict[str, np.ndarray], maps: dict[str, SideMap], n: int,
                    scheduler: Scheduler, progress: bool
                    ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Top-``n`` W rows of the query rows, exactly (``"exact"``) and by each method's
    sketches, over every block of ``w``."""
    q, lazy_sketches, lazy_maps = delayed(queries), delayed(sketches), delayed(maps)
    ranges = [(s, min(s + block_rows, w.n_rows)) for s in range(0, w.n_rows, block_rows)]
    order = "ddrp-evaluate-w"
    orders = [row_order(order, s) for s, _ in ranges]
    leaves = [task(_scores_task, w, s, e, given, q, lazy_sketches, lazy_maps, n, order=key)
              for (s, e), given, key in zip(ranges, shared_reads(w, ranges, "error", order,
                                                                 "evaluate", scheduler),
                                            orders, strict=True)]
    (best,) = compute([tree_reduce(leaves, _merge_named, n, orders=orders)], scheduler, progress,
                      "evaluate: top-N over W", leaves)
    return dict(best)
