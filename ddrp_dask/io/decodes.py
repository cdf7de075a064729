"""A count of this process's chunk decodes, by chunk: off until a test or a benchmark turns it
on (``ddrp_dask.testing.count_decodes``, on a cluster through ``client.run``), to check that a
pass decodes every chunk once whatever the scheduler (``graph.reads``)."""

from __future__ import annotations

import collections
import threading

__all__ = ["counts", "note", "start"]

_lock = threading.Lock()
_counts: collections.Counter[str] = collections.Counter()
_on = threading.Event()


def start() -> None:
    """Count from now on, for the life of the process."""
    _on.set()


def note(key: str) -> None:
    """One decode of chunk ``key`` (a Zarr chunk's path, a Parquet file and row group)."""
    if _on.is_set():
        with _lock:
            _counts[key] += 1


def counts() -> dict[str, int]:
    """Decodes counted so far, by chunk."""
    with _lock:
        return dict(_counts)
