"""Chunks that two blocks share, decoded once per pass in a task of their own.

The statistics and the sketches are defined on canonical row blocks (``jobs.base``), so that
their bytes do not depend on the layout on disk; but a Zarr chunk or Parquet row group that
straddles two blocks would then be decoded by both blocks' tasks (1.5× the decoding for
100,000-row chunks and 65,536-row blocks, and on a cluster wherever the blocks run). So a
pass decodes each chunk that two of its blocks share in one task, which hands each block
its part as a read-only view (``Source.read_rows``'s ``given``); the chunks inside one block
are decoded by its own task. These are ordinary Dask dependencies: a block runs where its
shared rows are (or they move to it, at most one block's rows), a lost worker's decodes are
rerun, and a decoded chunk is released once its last block has read it, so memory stays
bounded by a few chunks and blocks per thread whatever the rows. The blocks see the same
rows either way, so their statistics and sketches keep their bytes.
"""

from __future__ import annotations

import bisect
import operator
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..io.source import Source
from .compute import task

__all__ = ["shared_reads"]

Ranges = Sequence[tuple[int, int]]


def _decode_task(src: Source, start: int, stop: int, invalid: str,
                 cuts: Sequence[tuple[int, int]]) -> tuple[np.ndarray, ...]:
    """Decode rows ``start:stop`` (one chunk) and cut it into its blocks' parts: read-only
    views, since blocks in one process share them."""
    rows = src.read_rows(start, stop, invalid)
    rows.flags.writeable = False
    return tuple(rows[a - start:b - start] for a, b in cuts)


def shared_reads(src: Source, ranges: Ranges, invalid: str, order: str
                 ) -> list[list[tuple[int, Any]]]:
    """Per range of ``ranges`` (disjoint, any order): the ``given`` pieces of ``src``'s
    chunks it shares with another range, as delayed ``(first row, rows)``; empty lists for a
    format without chunks (``Source.chunk_spans``). ``invalid`` is the ranges' own read
    mode; ``order`` prefixes the decode tasks' keys (``compute.task``), followed by the
    chunk's first row, so that they sort with the blocks around them."""
    given: list[list[tuple[int, Any]]] = [[] for _ in ranges]
    live = sorted((a, b, j) for j, (a, b) in enumerate(ranges) if b > a)
    if len(live) < 2:
        return given
    starts = [a for a, _, _ in live]
    for r0, r1 in src.chunk_spans(max(b - a for a, b, _ in live)):
        i = max(bisect.bisect_right(starts, r0) - 1, 0)
        users = []
        while i < len(live) and live[i][0] < r1:
            if live[i][1] > r0:
                users.append(live[i])
            i += 1
        if len(users) < 2:
            continue
        cuts = tuple((max(r0, a), min(r1, b)) for a, b, _ in users)
        key = f"{order}-{r0:015d}"
        chunk = task(_decode_task, src, r0, r1, invalid, cuts, order=key)
        for k, ((a, _), (_, _, j)) in enumerate(zip(cuts, users, strict=True)):
            given[j].append((a, task(operator.getitem, chunk, k, order=key)))
    return given
