"""Chunks that two blocks share, decoded once per pass in a task of their own.

The statistics and the sketches are defined on canonical row blocks (``jobs.base``), so that
their bytes do not depend on the layout on disk; but a Zarr chunk or Parquet row group that
straddles two blocks would then be decoded by both blocks' tasks (1.5× the decoding for
100,000-row chunks and 65,536-row blocks, and on a cluster wherever the blocks run). So a
pass decodes each chunk that two of its blocks share in one task, which hands each block
its part as a read-only view (``Source.read_rows``'s ``given``); the chunks inside one block
are decoded by its own task. These are ordinary Dask dependencies: a block runs where its
shared rows are (or they move to it, at most one block's rows), and a lost worker's decodes
are rerun. The blocks see the same rows either way, so their statistics and sketches keep
their bytes.

Memory: a decoded chunk is released once its last block has read it. A distributed
scheduler sends a worker new root tasks only as its threads free up, so decodes do not run
far ahead of their blocks; Dask's local schedulers run tasks in the static order of
``dask.order``, which puts many decodes before their blocks (up to eight 100 MB chunks held
in pass 2 at 1 M x 256, measured). For them each decode also waits for the blocks of the shared
chunk ``lag`` (the scheduler's threads) before it, so that about ``lag`` + 1 shared chunks
are held at a time, whatever the rows; it waits on a token of each block's completion, not
on the block's result, which would be held until the decode ran (128 MiB of statistics a
block at d = 4096).
"""

from __future__ import annotations

import bisect
import operator
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..io.source import Source
from .compute import task

__all__ = ["map_ranges"]

Ranges = Sequence[tuple[int, int]]


def _decode_task(src: Source, start: int, stop: int, invalid: str,
                 cuts: Sequence[tuple[int, int]], *after: Any) -> tuple[np.ndarray, ...]:
    """Decode rows ``start:stop`` (one chunk) and cut it into its blocks' parts: read-only
    views, since blocks in one process share them. ``after``: tasks to wait for (unused)."""
    rows = src.read_rows(start, stop, invalid)
    rows.flags.writeable = False
    return tuple(rows[a - start:b - start] for a, b in cuts)


def _done(_: Any) -> None:
    """Nothing: a block's completion, without its result."""


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


def map_ranges(src: Source, ranges: Ranges, invalid: str, order: str,
               make: Callable[[int, list[tuple[int, Any]]], Any], lag: int = 0) -> list[Any]:
    """``make(j, given)`` for every range ``j`` of ``ranges`` (disjoint, any order), returned
    in the ranges' order: ``given`` holds, as delayed ``(first row, rows)``, the range's rows
    of the chunks of ``src`` it shares with another range, each chunk decoded once
    (``Source.chunk_spans``; nothing for a format without chunks). ``invalid`` is the
    ranges' own read mode; ``order`` prefixes the decode tasks' keys (``compute.task``),
    followed by the chunk's first row, so that they sort with the blocks around them.
    ``lag`` > 0: a local scheduler of that many threads (see the module docstring)."""
    out: list[Any] = [None] * len(ranges)
    live = sorted((a, b, j) for j, (a, b) in enumerate(ranges) if b > a)
    shared = _shared_chunks(src, live) if len(live) > 1 else []
    needs: dict[int, list[int]] = {}
    for s, (_, _, users) in enumerate(shared):
        for p in users:
            needs.setdefault(p, []).append(s)
    decoded: dict[int, Any] = {}
    blocks: dict[int, Any] = {}  # by position in live
    done: dict[int, Any] = {}

    def decode(s: int) -> Any:
        r0, r1, users = shared[s]
        cuts = tuple((max(r0, live[p][0]), min(r1, live[p][1])) for p in users)
        gate = shared[s - lag][2] if lag and s >= lag else []
        after = [finished(p) for p in gate if p < users[0]]
        return task(_decode_task, src, r0, r1, invalid, cuts, *after,
                    order=f"{order}-{r0:015d}")

    def finished(p: int) -> Any:
        """A token of block ``p`` done, for decodes to wait on without holding its result."""
        if p not in done:
            done[p] = task(_done, blocks[p], order=f"{order}-{live[p][0]:015d}")
        return done[p]

    for p, (a, _, j) in enumerate(live):
        given = []
        for s in needs.get(p, []):
            if s not in decoded:
                decoded[s] = decode(s)
            r0, k = shared[s][0], shared[s][2].index(p)
            given.append((max(a, r0), task(operator.getitem, decoded[s], k,
                                           order=f"{order}-{r0:015d}")))
        blocks[p] = out[j] = make(j, given)
    for j, (a, b) in enumerate(ranges):
        if b <= a:
            out[j] = make(j, [])
    return out
