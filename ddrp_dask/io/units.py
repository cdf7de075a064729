"""Reading units: which rows one task of a pass reads so that every chunk of the source (a
Zarr chunk, a Parquet row group) is decoded once, whatever its size against the blocks.

The statistics and the sketches are defined on canonical row blocks (``jobs.base``), so that
their bytes do not depend on the layout on disk. A task that reads one block decodes every
chunk the block overlaps, so a chunk straddling two blocks was decoded twice (1.5× the work
for 100,000-row chunks and 65,536-row blocks). A pass now reads *units* instead: runs of
whole chunks, cut at the chunk boundary nearest each block boundary, one read task each. A
block's task takes its rows from the one or few units holding them (its *parts*); a block cut
by a unit boundary joins its parts first. With chunks smaller than a block, the part that
comes from a neighbouring unit is at most half a chunk; with larger chunks a unit is one
chunk.

Pure standard library: a plan of integers, as rechunker's ``algorithm.py``.

>>> units = plan_units([(0, 4), (4, 8)], [0, 3, 6, 9, 10])
>>> [(u.start, u.stop) for u in units], block_parts(units, 2)
([(0, 3), (3, 9)], [[(0, 0, 3), (1, 3, 4)], [(1, 4, 8)]])
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["Part", "Unit", "block_parts", "plan_units"]


@dataclass(frozen=True)
class Part:
    """Rows ``start:stop`` of the wanted range number ``block``."""

    block: int
    start: int
    stop: int


@dataclass(frozen=True)
class Unit:
    """Rows ``start:stop`` read by one task (whole chunks), and the wanted rows in them."""

    start: int
    stop: int
    parts: tuple[Part, ...]

    @property
    def covered(self) -> bool:
        """Every row the task reads is wanted (no rows of other blocks)."""
        return sum(p.stop - p.start for p in self.parts) == self.stop - self.start


def _chunk_runs(wanted: Sequence[tuple[int, int]], bounds: Sequence[int]) -> list[list[int]]:
    """Maximal runs ``[c0, c1)`` of consecutive chunk indices holding wanted rows that one
    chunk joins (a chunk two wanted ranges share puts them in one run)."""
    runs: list[list[int]] = []
    for start, stop in wanted:
        if start >= stop:
            continue
        c0 = bisect.bisect_right(bounds, start) - 1
        c1 = bisect.bisect_left(bounds, stop)
        if runs and c0 < runs[-1][1]:
            runs[-1][1] = max(runs[-1][1], c1)
        else:
            runs.append([c0, c1])
    return runs


def _nearest(bounds: Sequence[int], lo: int, hi: int, row: int) -> int:
    """The chunk boundary among ``bounds[lo:hi + 1]`` nearest ``row`` (the lower on a tie)."""
    i = min(max(bisect.bisect_left(bounds, row, lo, hi + 1), lo + 1), hi)
    below, above = bounds[i - 1], bounds[i]
    return below if row - below <= above - row else above


def plan_units(wanted: Sequence[tuple[int, int]], bounds: Sequence[int] | None) -> list[Unit]:
    """The reading units of the sorted, disjoint row ranges ``wanted`` (canonical blocks)
    in a source whose chunks start at ``bounds`` (ascending, from 0, ending with the row
    count): every chunk holding a wanted row lies in exactly one unit. Without ``bounds``
    (a source read in place), each wanted range is a unit."""
    if bounds is None:
        return [Unit(s, e, (Part(i, s, e),)) for i, (s, e) in enumerate(wanted) if s < e]
    edges = sorted({row for rng in wanted for row in rng})
    starts, stops = [s for s, _ in wanted], [e for _, e in wanted]
    units = []
    for c0, c1 in _chunk_runs(wanted, bounds):
        r0, r1 = bounds[c0], bounds[c1]
        inner = edges[bisect.bisect_right(edges, r0):bisect.bisect_left(edges, r1)]
        cuts = sorted({r0, r1, *(_nearest(bounds, c0, c1, row) for row in inner)})
        for a, b in itertools.pairwise(cuts):
            near = range(bisect.bisect_right(stops, a), bisect.bisect_left(starts, b))
            parts = tuple(Part(i, max(wanted[i][0], a), min(wanted[i][1], b))
                          for i in near if wanted[i][0] < wanted[i][1])
            if parts:
                units.append(Unit(a, b, parts))
    return units


def block_parts(units: Sequence[Unit], n_wanted: int) -> list[list[tuple[int, int, int]]]:
    """For each of the ``n_wanted`` ranges, its parts as ``(unit index, start, stop)`` in row
    order (an empty range has none)."""
    parts: list[list[tuple[int, int, int]]] = [[] for _ in range(n_wanted)]
    for i, unit in enumerate(units):
        for p in unit.parts:
            parts[p.block].append((i, p.start, p.stop))
    return parts
