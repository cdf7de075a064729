"""Decoded chunks shared by neighbouring blocks, so that each chunk is decoded once per pass.

The statistics and the sketches are defined on canonical row blocks (``jobs.base``), so
that their bytes do not depend on the layout on disk; but a Zarr chunk or Parquet row group
that straddles two blocks would then be decoded by both blocks' tasks (1.5× the decoding for
100,000-row chunks and 65,536-row blocks). A reader that needs only part of a chunk takes it
from here instead: the first task to ask decodes it (a task asking meanwhile waits for that
decode), later ones copy their rows from the decoded chunk, and the chunk is dropped as soon
as as many rows as it holds have been taken — in a full pass, right after its last block
read it. Chunks a pass does not read to the end (a stats fraction, a resumed pass, the
blocks of a chunk split between cluster workers) are dropped least recently used first,
beyond about one chunk per thread reading (``limit``).

The passes name their tasks so that Dask runs the blocks in row order
(``graph.compute.row_order``): neighbouring blocks run together and a chunk is rarely held
for long. The cache is per process: on a cluster, two workers sharing a
straddling chunk decode it once each. Entries are keyed by the source's ``token``, new each
time a source is opened, so a long-lived worker never serves a chunk of an earlier job.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np

T = TypeVar("T")

__all__ = ["clear", "counts", "held", "held_bytes", "last_first", "limit", "take",
           "within_cap"]

#: Chunks kept beyond those being read: at most about one per core (each running task holds
#: about one chunk anyway, as a decode buffer); a process whose tasks run on fewer threads
#: (a cluster worker) keeps fewer (``limit``).
MAX_HELD = (os.cpu_count() or 1) + 2


@dataclass
class _Entry:
    ready: threading.Event = field(default_factory=threading.Event)
    chunk: np.ndarray | None = None
    taken: int = 0


_lock = threading.Lock()
_entries: OrderedDict[Hashable, _Entry] = OrderedDict()
_counts = {"decoded": 0, "shared": 0}
#: The threads that have read through the cache (dropped when they end).
_readers: weakref.WeakSet[threading.Thread] = weakref.WeakSet()


def take(key: Hashable, rows: int, lo: int, hi: int,
         decode: Callable[[], np.ndarray]) -> np.ndarray:
    """Rows ``lo:hi`` of the chunk ``key`` of ``rows`` rows, decoded by ``decode()`` unless
    another task has decoded it or is doing so: a read-only view (the other blocks read the
    same chunk), which stays valid after the chunk is dropped."""
    with _lock:
        _readers.add(threading.current_thread())
        entry = _entries.get(key)
        owner = entry is None
        if entry is None:
            entry = _entries[key] = _Entry()
            _counts["decoded"] += 1
        else:
            _entries.move_to_end(key)
            _counts["shared"] += 1
    if owner:
        try:
            entry.chunk = _frozen(decode())
        finally:  # a failed decode is not kept: waiting tasks decode for themselves
            entry.ready.set()
            if entry.chunk is None:
                with _lock:
                    _entries.pop(key, None)
    else:
        entry.ready.wait()
    chunk = entry.chunk if entry.chunk is not None else _frozen(decode())
    with _lock:
        entry.taken += hi - lo
        if entry.taken >= rows and _entries.get(key) is entry:
            del _entries[key]
        _trim()
    return chunk[lo:hi]


def last_first(chunks: Sequence[T]) -> list[T]:
    """A block's chunks in the order to read them: its last first. Blocks run in row order,
    two at a time or more, so the block before this one is usually still decoding the first
    chunk they share; read in row order, this block would wait for that decode (the two
    threads then decoded one chunk at a time), while its last chunk is not yet wanted."""
    return list(reversed(chunks))


def _frozen(chunk: np.ndarray) -> np.ndarray:
    chunk.flags.writeable = False
    return chunk


def _limit() -> int:
    """``limit`` under the lock."""
    return min(MAX_HELD, sum(t.is_alive() for t in _readers) + 2)


def limit() -> int:
    """Chunks kept beyond those being read: two more than the live threads that read
    through the cache, at most ``MAX_HELD``. On a cluster worker of one thread a chunk its
    process read in part is often never finished there (the other blocks ran on other
    workers), so a limit by the machine's cores would keep up to cores + 2 dead chunks in
    every worker."""
    with _lock:
        return _limit()


def _trim() -> None:
    """Drop the least recently used decoded chunks while more than ``limit()`` are held
    (under the lock; chunks still being decoded stay)."""
    cap = _limit()
    excess = len(_entries) - cap
    if excess <= 0:
        return
    for key in [k for k, e in _entries.items() if e.ready.is_set()][:excess]:
        del _entries[key]


def counts() -> dict[str, int]:
    """Shared chunks this process ``decoded`` and times one was ``shared`` (taken without a
    decode) since it started: what a benchmark checks on each worker."""
    with _lock:
        return dict(_counts)


def held() -> int:
    """Chunks held now (for tests)."""
    with _lock:
        return len(_entries)


def held_bytes() -> int:
    """Bytes of the decoded chunks held now (for tests)."""
    with _lock:
        return sum(e.chunk.nbytes for e in _entries.values() if e.chunk is not None)


def within_cap() -> bool:
    """Whether what is held now is within the cap of ``MAX_HELD`` chunks (for tests: after a
    pass, nothing but partly read chunks is held)."""
    return held() <= MAX_HELD


def clear() -> None:
    """Drop every held chunk, and forget the threads that read."""
    with _lock:
        _entries.clear()
        _readers.clear()
