"""Chunks that two blocks share, decoded once per pass on a distributed cluster.

The statistics and the sketches are defined on canonical row blocks (``jobs.base``), so that
their bytes do not depend on the layout on disk; but a Zarr chunk or Parquet row group that
straddles two blocks would then be decoded by both blocks' tasks (1.5× the decoding for
100,000-row chunks and 65,536-row blocks).

In one process (Dask's local schedulers) the blocks share decoded chunks through
``io.chunk_cache``: the first block to need a chunk decodes it, the other takes its rows,
and the chunk is dropped after its last block. Across a cluster's processes that cache
decoded a shared chunk once per worker that read one of its blocks, so there a pass decodes
each chunk that two of its blocks share in a task of its own, which hands each block its
part as a read-only view (``Source.read_rows``'s ``given``). These are ordinary Dask
dependencies: a block runs where its shared rows are (or they move to it, at most one
block's rows), a lost worker's decodes are rerun, and the scheduler sends a worker new root
tasks only as its threads free up, so decodes do not run far ahead of their blocks. The
blocks see the same rows either way, so their statistics and sketches keep their bytes.

Why not decode tasks in one process too: Dask's local schedulers run tasks in the static
order of ``dask.order``, which for this graph decodes chunks long before their second block
runs, and every way tried of holding decodes back (waiting for earlier blocks) made it
postpone pass 1's merges instead, holding every block's statistics to the end
(``benchmarks/RESULTS.md``). That was tried before the passes ran in row order
(``compute.row_order``), not since.
"""

from __future__ import annotations

import bisect
import operator
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..io.source import Source
from .compute import row_order, task
from .scheduler import SchedulerLike, resolve

__all__ = ["shared_reads"]

Ranges = Sequence[tuple[int, int]]


def _decode_task(src: Source, start: int, stop: int, invalid: str,
                 cuts: Sequence[tuple[int, int]], label: str) -> tuple[np.ndarray, ...]:
    """Decode rows ``start:stop`` (one chunk) and cut it into its blocks' parts: read-only
    views, since blocks in one process share them. ``label`` names the compute (its pass),
    so that the two passes' decodes of one chunk have different keys: a pass cancels its
    futures when it ends, and must not touch the next pass's."""
    rows = src.read_rows(start, stop, invalid)
    rows.flags.writeable = False
    return tuple(rows[a - start:b - start] for a, b in cuts)


def _shared_chunks(src: Source, live: Sequence[tuple[int, int, int]]
                   ) -> list[tuple[int, int, list[int]]]:
    """``(start, stop, positions in live)`` of each chunk of ``src`` that two or more of the
    ranges ``live`` (sorted ``(start, stop, index)``) overlap, in row order."""
    starts = [a for a, _, _ in live]
    out = []
    for r0, r1 in src.chunk_spans(max(b - a for a, b, _ in live)):
        p = max(bisect.bisect_right(starts, r0) - 1, 0)
        users = []
        while p < len(live) and live[p][0] < r1:
            if live[p][1] > r0:
                users.append(p)
            p += 1
        if len(users) > 1:
            out.append((r0, r1, users))
    return out


def shared_reads(src: Source, ranges: Ranges, invalid: str, order: str, label: str,
                 scheduler: SchedulerLike) -> list[list[tuple[int, Any]]]:
    """Per range of ``ranges`` (disjoint, any order): the ``given`` pieces of it, as delayed
    ``(first row, rows)``, of the chunks of ``src`` it shares with another range, each
    chunk decoded once by a task of its own (``Source.chunk_spans``; nothing for a format
    without chunks) — on a distributed ``scheduler`` only: in one process
    ``io.chunk_cache`` shares them, and every list is empty. ``invalid`` is the ranges' own
    read mode; ``order`` prefixes the decode tasks' keys (``compute.task``), followed by the
    chunk's first row, so that they sort with the blocks around them; ``label`` (the pass)
    keeps them apart from another compute's."""
    given: list[list[tuple[int, Any]]] = [[] for _ in ranges]
    live = sorted((a, b, j) for j, (a, b) in enumerate(ranges) if b > a)
    if not resolve(scheduler).distributed or len(live) < 2:
        return given
    for r0, r1, users in _shared_chunks(src, live):
        cuts = tuple((max(r0, live[p][0]), min(r1, live[p][1])) for p in users)
        key = row_order(order, r0)
        chunk = task(_decode_task, src, r0, r1, invalid, cuts, label, order=key)
        for k, p in enumerate(users):
            given[live[p][2]].append((cuts[k][0], task(operator.getitem, chunk, k, order=key)))
    return given
