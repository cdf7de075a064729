"""Shared fixtures: synthetic sources written to real files, and real Dask clusters."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zarr


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
