"""Shared fixtures: synthetic sources written to real files, a run interrupted in pass 2,
chunk decodes counted, and real Dask clusters."""

from __future__ import annotations

import collections
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zarr
import zarr.storage

from ddrp_dask.io import chunk_cache, lifecycle, writer
from ddrp_dask.io.zarr_reader import DirectLayout


def make_pair(n: int = 3000, m: int = 400, d: int = 24, seed: int = 0,
              dtype: str = "float32") -> tuple[np.ndarray, np.ndarray]:
    """X and W whose energy sits in different directions, with sizeable means."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    x = rng.standard_normal((n, d)) * np.geomspace(4.0, 0.05, d) @ q.T + 3.0
    w = rng.standard_normal((m, d)) * np.geomspace(0.05, 4.0, d) @ q.T - 1.0
    return x.astype(dtype), w.astype(dtype)


def write_npy(path: Path, a: np.ndarray) -> str:
    np.save(path, a)
    return str(path)


def write_zarr(path: Path, a: np.ndarray, chunk_rows: int) -> str:
    arr = zarr.create_array(str(path), shape=a.shape, dtype=a.dtype,
                            chunks=(chunk_rows, a.shape[1]))
    arr[...] = a
    return str(path)


def sketch_bytes(out: Path, fmt: str) -> tuple[bytes, ...]:
    """The sketches x and w of a ``run`` output in row order: Zarr arrays, or a Parquet
    dataset's ``sketch`` column sorted by ``row`` (its files mirror the input's)."""
    if fmt == "zarr":
        g = zarr.open_group(str(out), mode="r")
        return g["x"][...].tobytes(), g["w"][...].tobytes()
    return tuple(np.stack(pq.read_table(out / side).sort_by("row")["sketch"]
                          .to_numpy(zero_copy_only=False)).tobytes() for side in ("x", "w"))


def write_parquet_list(path: Path, a: np.ndarray, row_group: int, ids: bool = True) -> str:
    cols = {"vec": pa.FixedSizeListArray.from_arrays(pa.array(a.ravel()), a.shape[1])}
    if ids:
        cols = {"id": pa.array(np.arange(len(a)) * 10), **cols}
    pq.write_table(pa.table(cols), path, row_group_size=row_group, use_dictionary=False)
    return str(path)


def write_parquet_scalars(path: Path, a: np.ndarray, row_group: int) -> str:
    table = pa.table({f"f{j}": a[:, j] for j in range(a.shape[1])})
    pq.write_table(table, path, row_group_size=row_group, use_dictionary=False)
    return str(path)


class Interrupted(Exception):
    """Stands for a kill: not a DdrpError, so nothing is cleaned up."""


def interrupted_in_a_task() -> Any:
    """``pytest.raises`` for an ``Interrupted`` raised inside a task: it reaches the caller
    as the one-line ``RunError`` a task's own exception becomes (``graph.rounds``), which
    keeps the finished work as a kill would."""
    from ddrp_dask.errors import RunError

    return pytest.raises(RunError, match=r": Interrupted; what was finished is kept")


def interrupt_after(monkeypatch: pytest.MonkeyPatch, fmt: str, n: int) -> None:
    """Make pass 2 stop (raise) once ``n`` blocks (Zarr) or files (Parquet) are finished."""
    done = {"n": 0}
    if fmt == "zarr":
        real_mark = lifecycle.mark_done

        def mark(*args: Any, **kwargs: Any) -> None:  # dies right after the n-th flag
            real_mark(*args, **kwargs)
            done["n"] += 1
            if done["n"] >= n:
                raise Interrupted

        monkeypatch.setattr(lifecycle, "mark_done", mark)
    else:
        real_write = writer.write_file

        def write(*args: Any, **kwargs: Any) -> list[int]:
            if done["n"] >= n:
                raise Interrupted
            done["n"] += 1
            return real_write(*args, **kwargs)

        monkeypatch.setattr(writer, "write_file", write)


@pytest.fixture
def decodes(monkeypatch: pytest.MonkeyPatch) -> Iterator[collections.Counter[tuple[str, Any]]]:
    """Every chunk decode: the direct Zarr reader's, zarr-python's reads of chunk keys from
    a local store, and Parquet row-group reads; the real functions, counted."""
    chunk_cache.clear()
    seen: collections.Counter[tuple[str, Any]] = collections.Counter()
    chunk_path = DirectLayout.chunk_path

    def counted_chunk(self: DirectLayout, i: int) -> str:
        seen[(self.root, i)] += 1
        return chunk_path(self, i)

    get = zarr.storage.LocalStore.get

    async def counted_get(self: Any, key: str, *args: Any, **kwargs: Any) -> Any:
        if key.startswith("c/"):
            seen[(str(self.root), key)] += 1
        return await get(self, key, *args, **kwargs)

    read_row_group = pq.ParquetFile.read_row_group

    def counted_group(self: Any, i: int, *args: Any, **kwargs: Any) -> Any:
        seen[(f"parquet {self.metadata.num_rows}", i)] += 1
        return read_row_group(self, i, *args, **kwargs)

    monkeypatch.setattr(DirectLayout, "chunk_path", counted_chunk)
    monkeypatch.setattr(zarr.storage.LocalStore, "get", counted_get)
    monkeypatch.setattr(pq.ParquetFile, "read_row_group", counted_group)
    yield seen
    chunk_cache.clear()


@pytest.fixture(scope="session")
def cluster2() -> Iterator[object]:
    """A LocalCluster of two single-threaded worker processes."""
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        yield client


@pytest.fixture(scope="session")
def cluster1() -> Iterator[object]:
    """A LocalCluster of one worker process with two threads."""
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=2, processes=True,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        yield client


def no_shared_reads(src: Any, ranges: Any, *args: Any) -> list[list[Any]]:
    """``graph.reads.shared_reads`` giving nothing: on a cluster every block then reads its
    own chunks (a control's stand-in, as the passes were before)."""
    return [[] for _ in ranges]
