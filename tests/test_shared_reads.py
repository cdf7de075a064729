"""Issue 15 on a cluster: a chunk (Zarr chunk, Parquet row group) that two blocks share is
decoded once per pass by a task of its own over all the workers together (one process shares
its decoded chunks through ``io.chunk_cache`` instead: ``test_chunk_cache.py``), and the bytes
stay those of any other layout."""

from __future__ import annotations

import collections
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import ddrp_dask as dd
from ddrp_dask import testing
from ddrp_dask.graph.reads import shared_reads
from ddrp_dask.io.registry import open_source
from ddrp_dask.io.source import split_given

from .conftest import (
    interrupt_after,
    interrupted_in_a_task,
    make_pair,
    no_shared_reads,
    sketch_bytes,
    write_npy,
    write_parquet_list,
    write_zarr,
)

BLOCK = 256


@pytest.fixture(scope="module")
def pair() -> tuple[np.ndarray, np.ndarray]:
    return make_pair(n=5000, m=530, d=12, seed=4)


# ---------------------------------------------------------------------------------------
# the graph: which chunks get a decode task of their own, and what each block is given (the
# graph for a cluster, computed here on one thread)


def _given(src: Any, ranges: list[tuple[int, int]], client: Any) -> list[list[tuple[int, int]]]:
    """``shared_reads``'s given pieces for ``client``'s cluster, computed (sync), as (first
    row, rows) per range."""
    import dask

    lazy = shared_reads(src, ranges, "error", "t", "pass", client)
    (got,) = dask.compute(lazy, scheduler="sync")
    return [[(a, len(p)) for a, p in g] for g in got]


@pytest.mark.cluster
def test_only_chunks_two_ranges_share_get_a_decode_task(tmp_path: Path, pair: Any,
                                                        cluster2: Any) -> None:
    """Chunks of 300 rows under blocks of 256: chunk 0 (rows 0..299) is shared by blocks 0
    and 1, chunk 1 (300..599) by blocks 1 and 2, chunk 2 (600..899) by blocks 2 and 3; chunk
    3 (900..1199) lies in block 3 and 4 — but block 4 is not asked for, so block 3 decodes
    it itself. A .npy source has no chunks: nothing is shared; nor on a local scheduler,
    where ``io.chunk_cache`` shares chunks."""
    x = pair[0][:1200]
    src = open_source(write_zarr(tmp_path / "x.zarr", x, 300))
    ranges = [(768, 1024), (0, 256), (256, 512), (512, 768)]  # any order
    assert _given(src, ranges, cluster2) == [[(768, 132)], [(0, 256)], [(256, 44), (300, 212)],
                                             [(512, 88), (600, 168)]]
    npy = open_source(write_npy(tmp_path / "x.npy", x))
    assert _given(npy, ranges, cluster2) == [[], [], [], []]
    for local in ("threads", "sync"):
        assert shared_reads(src, ranges, "error", "t", "pass", local) == [[], [], [], []]
    # a chunk inside one block is the block's own: nothing given
    inner = open_source(write_zarr(tmp_path / "i.zarr", x, 128))
    assert _given(inner, [(0, 256), (256, 512)], cluster2) == [[], []]


@pytest.mark.cluster
def test_given_rows_are_views_of_one_read_only_decode(tmp_path: Path, pair: Any,
                                                      cluster2: Any) -> None:
    """Both blocks sharing a chunk get views of one decoded buffer, read-only so that a
    block shifting its rows in place cannot change its neighbour's."""
    import dask

    x = pair[0][:600]
    src = open_source(write_zarr(tmp_path / "x.zarr", x, 300))
    (got,) = dask.compute(shared_reads(src, [(0, 256), (256, 512)], "error", "t", "pass",
                                       cluster2), scheduler="sync")
    (a0, p0), (a1, p1) = got[0][0], got[1][0]
    assert (a0, a1) == (0, 256) and p0.ctypes.data + p0.nbytes == p1.ctypes.data
    assert not p0.flags.writeable and not p1.flags.writeable
    assert np.array_equal(np.concatenate([p0, p1]), x[:300])


@pytest.mark.cluster
def test_the_two_passes_decode_a_chunk_under_different_keys(tmp_path: Path, pair: Any,
                                                            cluster2: Any) -> None:
    """Pass 1 and pass 2 decode the same chunks, under different keys: a pass cancels its
    futures when it ends, and must not touch the next pass's. Control: one label gives one
    set of keys."""
    src = open_source(write_zarr(tmp_path / "x.zarr", pair[0][:1200], 300))
    ranges = [(0, 256), (256, 512), (512, 768)]

    def keys(label: str) -> set[str]:
        given = shared_reads(src, ranges, "error", "t", label, cluster2)
        return {str(p.key) for g in given for _, p in g}

    assert keys("pass 1") and not keys("pass 1") & keys("pass 2")
    assert keys("pass 1") == keys("pass 1")


def test_split_given_refuses_pieces_out_of_place() -> None:
    piece = np.zeros((4, 2), dtype=np.float32)
    assert [(a, b, p is None) for a, b, p in split_given(0, 8, [(4, piece)])] == \
        [(0, 4, True), (4, 8, False)]
    for bad in ([(6, piece)], [(0, piece), (2, piece)], [(-1, piece)]):
        with pytest.raises(ValueError, match="given piece"):
            split_given(0, 8, bad)


def _cluster_decodes(client: Any, before: dict[str, dict[str, int]], where: str) -> list[int]:
    """Decodes since ``before`` of each chunk under ``where``, summed over the workers."""
    total: collections.Counter[str] = collections.Counter()
    for addr, counts in client.run(testing.decode_counts).items():
        for key, n in counts.items():
            if where in key:
                total[key] += n - before.get(addr, {}).get(key, 0)
    return [n for _, n in sorted(total.items()) if n]


@pytest.mark.cluster
@pytest.mark.parametrize("shared", [True, False], ids=["shared", "control-unshared"])
@pytest.mark.parametrize("fmt", ["zarr", "parquet"])
@pytest.mark.parametrize("kind", ["zarr", "parquet"])
def test_on_a_cluster_each_chunk_is_decoded_once_per_pass(
        tmp_path: Path, cluster2: Any, pair: Any, kind: str, fmt: str, shared: bool,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Two worker processes: every chunk (row group) of 300 rows under blocks of 256 is
    decoded once in pass 1 and once in pass 2 over both workers together, into Zarr or
    Parquet, both workers decode, and the sketches are those of a .npy input on one thread.
    Control: with every block reading its own chunks, chunks are decoded more often, and
    the check fails."""
    if not shared:
        monkeypatch.setattr("ddrp_dask.graph.passes.shared_reads", no_shared_reads)
    x, w = pair
    src = (write_zarr(tmp_path / "x.zarr", x, 300) if kind == "zarr" else
           write_parquet_list(tmp_path / "x.parquet", x, 300))
    wp = write_npy(tmp_path / "w.npy", w)
    dd.execute(dd.plan_run(write_npy(tmp_path / "x.npy", x), wp, 4, str(tmp_path / "ref"),
                           seed=2, block_rows=BLOCK, format=fmt), scheduler="sync")
    cluster2.run(testing.count_decodes)
    before = cluster2.run(testing.decode_counts)
    dd.execute(dd.plan_run(src, wp, 4, str(tmp_path / "out"), seed=2, block_rows=BLOCK,
                           format=fmt),
               scheduler=cluster2, progress=True)  # progress: futures of every block
    counts = _cluster_decodes(cluster2, before, str(tmp_path / f"x.{kind}"))
    workers = [a for a, c in cluster2.run(testing.decode_counts).items()
               if any(n > before.get(a, {}).get(k, 0) for k, n in c.items())]
    assert len(workers) == 2, "both workers should have decoded chunks"
    assert sketch_bytes(tmp_path / "out", fmt) == sketch_bytes(tmp_path / "ref", fmt)
    n_chunks = -(-len(x) // 300)
    if shared:
        assert counts == [2] * n_chunks
    else:
        assert len(counts) == n_chunks and max(counts) > 2


@pytest.mark.cluster
def test_progress_on_a_cluster_neither_cancels_pass_2_nor_trips_the_scheduler(
        tmp_path: Path, cluster2: Any, pair: Any, caplog: pytest.LogCaptureFixture) -> None:
    """With progress, pass 2's blocks are both what the line counts and what is gathered:
    releasing each as it finished made the gather fail ("cancelled for reason: unknown", a
    traceback from the CLI under a terminal), and cancelling futures already released made
    the scheduler log an AssertionError (``stimulus_cancel``). Three runs, since the
    failure was a race (it failed each of four runs here before the fix)."""
    x, w = pair
    src = write_zarr(tmp_path / "x.zarr", x, 300)
    wp = write_npy(tmp_path / "w.npy", w)
    with caplog.at_level("ERROR", logger="distributed"):
        for i in range(3):
            dd.execute(dd.plan_run(src, wp, 4, str(tmp_path / f"out{i}"), seed=2,
                                   block_rows=BLOCK), scheduler=cluster2, progress=True)
    assert not [r for r in caplog.records if r.levelname == "ERROR"], caplog.text
    assert sketch_bytes(tmp_path / "out0", "zarr") == sketch_bytes(tmp_path / "out2", "zarr")


@pytest.mark.cluster
def test_progress_on_a_cluster_with_a_source_of_one_block(tmp_path: Path, cluster2: Any,
                                                          pair: Any) -> None:
    """A source of one block (the demo's W, 200 rows): pass 1's leaf is its tree's root, so
    what the line counts is also what is gathered; releasing it failed the run ("cancelled
    for reason: unknown", found running the README's demo on a LocalCluster under a
    terminal). Both sides of one block, and W alone, give the bytes of the sync run."""
    x, w = pair
    for name, xs in (("both", x[:BLOCK]), ("w", x)):
        xp, wp = write_npy(tmp_path / f"x{name}.npy", xs), write_npy(tmp_path / "w.npy", w[:BLOCK])
        for sched, out in ((cluster2, "c"), ("sync", "s")):
            dd.execute(dd.plan_run(xp, wp, 4, str(tmp_path / f"{out}{name}"), seed=2,
                                   block_rows=BLOCK),
                       scheduler=sched, progress=sched is cluster2)
        assert sketch_bytes(tmp_path / f"c{name}", "zarr") == \
            sketch_bytes(tmp_path / f"s{name}", "zarr")


@pytest.mark.cluster
@pytest.mark.parametrize("shared", [True, False], ids=["shared", "control-unshared"])
@pytest.mark.parametrize("fmt", ["zarr", "parquet"])
def test_a_run_resumed_on_a_cluster_decodes_each_chunk_once_with_the_same_bytes(
        tmp_path: Path, cluster2: Any, pair: Any, fmt: str, shared: bool,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A run into Zarr or Parquet stopped after 3 blocks (files) of pass 2 (sync), resumed on
    the 2-worker cluster: its pass 2 (the staged model is reused) decodes no chunk of X
    twice over both workers, and the output has the sketches of an uninterrupted run.
    Control: with every block reading its own chunks, the resume decodes chunks twice."""
    if not shared:
        monkeypatch.setattr("ddrp_dask.graph.passes.shared_reads", no_shared_reads)
    x, w = pair
    xp, wp = write_zarr(tmp_path / "x.zarr", x, 300), write_npy(tmp_path / "w.npy", w)

    def plan(out: str, resume: bool = False) -> Any:
        return dd.plan_run(xp, wp, 4, str(tmp_path / out), seed=2, block_rows=BLOCK,
                           format=fmt, resume=resume)

    dd.execute(plan("ref"), scheduler="sync")
    with monkeypatch.context() as m:
        interrupt_after(m, fmt, 3)
        with interrupted_in_a_task():
            dd.execute(plan("out"), scheduler="sync")
    cluster2.run(testing.count_decodes)
    before = cluster2.run(testing.decode_counts)
    dd.execute(plan("out", resume=True), scheduler=cluster2, progress=True)
    counts = _cluster_decodes(cluster2, before, str(tmp_path / "x.zarr"))
    assert len(counts) < -(-len(x) // 300)  # the finished blocks' own chunks: not read
    if shared:
        assert counts and set(counts) == {1}, counts
    else:
        assert max(counts) > 1, counts
    assert sketch_bytes(tmp_path / "out", fmt) == sketch_bytes(tmp_path / "ref", fmt)
