"""Issue 15: every input chunk (Zarr chunk, Parquet row group) is decoded once per pass,
whatever its size against the blocks, the bytes stay those of any other chunking, and the
shared chunks are not held after their last block, so that the memory of a run does not grow
with its rows (README, out of core)."""

from __future__ import annotations

import collections
import gc
import threading
import tracemalloc
import weakref
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zarr
from dask.system import CPU_COUNT
from zarr.codecs import GzipCodec

import ddrp_dask as dd
from ddrp_dask import testing
from ddrp_dask.graph import reads
from ddrp_dask.graph.compute import FAN_IN, task
from ddrp_dask.graph.reads import map_ranges
from ddrp_dask.io.registry import open_source
from ddrp_dask.io.source import split_given
from ddrp_dask.io.zarr_reader import read_zarr_rows

from .conftest import make_pair, map_unshared, write_npy, write_parquet_list, write_zarr

BLOCK = 256

# ---------------------------------------------------------------------------------------
# the graph: which chunks get a decode task of their own, and what each block is given


def _given(src: Any, ranges: list[tuple[int, int]]) -> list[list[tuple[int, int]]]:
    """``map_ranges``'s given pieces computed (sync), as (first row, rows) per range."""
    import dask

    lazy = map_ranges(src, ranges, "error", "t", lambda j, given: given)
    (got,) = dask.compute(lazy, scheduler="sync")
    return [[(a, len(p)) for a, p in g] for g in got]


def test_only_chunks_two_ranges_share_get_a_decode_task(tmp_path: Path, pair: Any) -> None:
    """Chunks of 300 rows under blocks of 256: chunk 0 (rows 0..299) is shared by blocks 0
    and 1, chunk 1 (300..599) by blocks 1 and 2, chunk 2 (600..899) by blocks 2 and 3; chunk
    3 (900..1199) lies in block 3 and 4 — but block 4 is not asked for, so block 3 decodes
    it itself. A .npy source has no chunks: nothing is shared."""
    x = pair[0][:1200]
    src = open_source(write_zarr(tmp_path / "x.zarr", x, 300))
    ranges = [(768, 1024), (0, 256), (256, 512), (512, 768)]  # any order
    assert _given(src, ranges) == [[(768, 132)], [(0, 256)], [(256, 44), (300, 212)],
                                   [(512, 88), (600, 168)]]
    npy = open_source(write_npy(tmp_path / "x.npy", x))
    assert _given(npy, ranges) == [[], [], [], []]
    # a chunk inside one block is the block's own: nothing given
    inner = open_source(write_zarr(tmp_path / "i.zarr", x, 128))
    assert _given(inner, [(0, 256), (256, 512)]) == [[], []]


def test_given_rows_are_views_of_one_read_only_decode(tmp_path: Path, pair: Any) -> None:
    """Both blocks sharing a chunk get views of one decoded buffer, read-only so that a
    block shifting its rows in place cannot change its neighbour's."""
    import dask

    x = pair[0][:600]
    src = open_source(write_zarr(tmp_path / "x.zarr", x, 300))
    (got,) = dask.compute(map_ranges(src, [(0, 256), (256, 512)], "error", "t",
                                     lambda j, given: given), scheduler="sync")
    (a0, p0), (a1, p1) = got[0][0], got[1][0]
    assert (a0, a1) == (0, 256) and p0.ctypes.data + p0.nbytes == p1.ctypes.data
    assert not p0.flags.writeable and not p1.flags.writeable
    assert np.array_equal(np.concatenate([p0, p1]), x[:300])


def test_split_given_refuses_pieces_out_of_place() -> None:
    piece = np.zeros((4, 2), dtype=np.float32)
    assert [(a, b, p is None) for a, b, p in split_given(0, 8, [(4, piece)])] == \
        [(0, 4, True), (4, 8, False)]
    for bad in ([(6, piece)], [(0, piece), (2, piece)], [(-1, piece)]):
        with pytest.raises(ValueError, match="given piece"):
            split_given(0, 8, bad)


# ---------------------------------------------------------------------------------------
# decodes counted on real stores through the real readers (in-process schedulers;
# the ``decodes`` fixture of conftest.py)


def _counts(seen: collections.Counter[tuple[str, Any]], where: str) -> list[int]:
    return [v for (k, _), v in sorted(seen.items(), key=str) if where in k]


@pytest.fixture(scope="module")
def pair() -> tuple[np.ndarray, np.ndarray]:
    return make_pair(n=5000, m=530, d=12, seed=4)


def test_the_counter_sees_a_chunk_decoded_twice(tmp_path: Path, decodes: Any,
                                                pair: Any) -> None:
    """Control: blocks read on their own (nothing given) decode the chunk they share each,
    and the counter sees it."""
    src = open_source(write_zarr(tmp_path / "x.zarr", pair[0], 300))
    read_zarr_rows(src, 0, 256)
    read_zarr_rows(src, 256, 512)
    assert _counts(decodes, "x.zarr") == [2, 1]


def test_control_a_pass_without_shared_decodes_decodes_straddling_chunks_twice(
        tmp_path: Path, decodes: Any, pair: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Control for the decode counts below: with every block reading its own chunks, the
    chunks two blocks share are decoded twice per pass, and the same check fails."""
    monkeypatch.setattr("ddrp_dask.graph.passes.map_ranges", map_unshared)
    x, w = pair
    dd.execute(dd.plan_run(write_zarr(tmp_path / "x.zarr", x, 300),
                           write_npy(tmp_path / "w.npy", w), 4, str(tmp_path / "out"), seed=2,
                           block_rows=BLOCK), scheduler="threads")
    counts = _counts(decodes, "x.zarr")  # a chunk in 2 or 3 blocks: as often in each pass
    assert set(counts) == {4, 6}  # every chunk of 300 rows straddles blocks of 256


def _sketch_bytes(out: Path, fmt: str) -> tuple[bytes, ...]:
    if fmt == "zarr":
        g = zarr.open_group(str(out), mode="r")
        return g["x"][...].tobytes(), g["w"][...].tobytes()
    return tuple(np.stack(pq.read_table(out / side).sort_by("row")["sketch"]
                          .to_numpy(zero_copy_only=False)).tobytes() for side in ("x", "w"))


@pytest.mark.parametrize("chunk", [37, 256, 300, 1000, 5000])
@pytest.mark.parametrize("fmt", ["zarr", "parquet"])
def test_each_zarr_chunk_is_decoded_once_per_pass_with_the_same_bytes(
        tmp_path: Path, decodes: Any, pair: Any, chunk: int, fmt: str) -> None:
    x, w = pair
    ref = tmp_path / "ref"
    dd.execute(dd.plan_run(write_npy(tmp_path / "x.npy", x), write_npy(tmp_path / "w.npy", w),
                           4, str(ref), seed=2, block_rows=BLOCK, format=fmt),
               scheduler="sync")
    out = tmp_path / "out"
    dd.execute(dd.plan_run(write_zarr(tmp_path / "x.zarr", x, chunk),
                           write_zarr(tmp_path / "w.zarr", w, chunk), 4, str(out), seed=2,
                           block_rows=BLOCK, format=fmt), scheduler="threads")
    assert _counts(decodes, "x.zarr") == [2] * -(-len(x) // chunk)  # pass 1 and pass 2
    assert _counts(decodes, "w.zarr") == [2] * -(-len(w) // chunk)
    assert _sketch_bytes(out, fmt) == _sketch_bytes(ref, fmt)


def test_zarr_python_reads_each_chunk_once_too(tmp_path: Path, decodes: Any,
                                               pair: Any) -> None:
    """A codec the direct reader leaves to zarr-python (gzip)."""
    x, w = pair
    arr = zarr.create_array(str(tmp_path / "x.zarr"), shape=x.shape, dtype=x.dtype,
                            chunks=(300, x.shape[1]), compressors=[GzipCodec()])
    arr[...] = x
    wp = write_npy(tmp_path / "w.npy", w)
    dd.execute(dd.plan_run(str(tmp_path / "x.zarr"), wp, 4, str(tmp_path / "out"), seed=2,
                           block_rows=BLOCK), scheduler="threads")
    dd.execute(dd.plan_run(write_npy(tmp_path / "x.npy", x), wp, 4, str(tmp_path / "ref"),
                           seed=2, block_rows=BLOCK), scheduler="sync")
    counts = _counts(decodes, str(tmp_path / "x.zarr"))
    assert counts == [2] * -(-len(x) // 300), counts
    assert _sketch_bytes(tmp_path / "out", "zarr") == _sketch_bytes(tmp_path / "ref", "zarr")


def test_each_row_group_is_read_once_per_pass(tmp_path: Path, decodes: Any,
                                              pair: Any) -> None:
    x, w = pair
    xp = write_parquet_list(tmp_path / "x.parquet", x, 300)
    dd.execute(dd.plan_run(xp, write_npy(tmp_path / "w.npy", w), 4, str(tmp_path / "out"),
                           seed=2, block_rows=BLOCK), scheduler="threads")
    assert _counts(decodes, f"parquet {len(x)}") == [2] * -(-len(x) // 300)


def test_a_fraction_reads_each_chunk_it_needs_once(tmp_path: Path, decodes: Any,
                                                   pair: Any) -> None:
    x, w = pair
    wp = write_npy(tmp_path / "w.npy", w)
    plan = dd.plan_fit(write_zarr(tmp_path / "x.zarr", x, 300), wp, 4, str(tmp_path / "m"),
                       seed=2, block_rows=BLOCK, stats_fraction=0.4)
    dd.execute(plan, scheduler="threads")
    dd.execute(dd.plan_fit(write_npy(tmp_path / "x.npy", x), wp, 4, str(tmp_path / "ref"),
                           seed=2, block_rows=BLOCK, stats_fraction=0.4), scheduler="sync")
    blocks = plan.stats_blocks("x")
    assert 0 < len(blocks) < -(-len(x) // BLOCK)
    needed = {r // 300 for b in blocks for r in range(b * BLOCK, min((b + 1) * BLOCK, len(x)))}
    assert sorted(i for (k, i) in decodes if "x.zarr" in k) == sorted(needed)
    assert set(_counts(decodes, "x.zarr")) == {1}
    assert dd.load_model(str(tmp_path / "m")).digest == \
        dd.load_model(str(tmp_path / "ref")).digest


def test_one_file_as_both_sides_gives_the_bytes_of_two_copies(tmp_path: Path,
                                                              pair: Any) -> None:
    """X and W read from one file: the blocks of each side shift their rows in place, so no
    side may be handed the other's rows."""
    x = pair[0]
    same = write_zarr(tmp_path / "x.zarr", x, 300)
    got = {}
    for name, (a, b) in {"same": (same, same),
                         "copies": (write_npy(tmp_path / "a.npy", x),
                                    write_npy(tmp_path / "b.npy", x))}.items():
        dd.execute(dd.plan_run(a, b, 4, str(tmp_path / name), seed=2, block_rows=BLOCK),
                   scheduler="threads")
        got[name] = _sketch_bytes(tmp_path / name, "zarr")
    assert got["same"] == got["copies"]


def test_a_null_in_a_shared_row_group_still_names_its_row(tmp_path: Path,
                                                          pair: Any) -> None:
    x, w = pair
    vecs = pa.FixedSizeListArray.from_arrays(pa.array(x.ravel()), x.shape[1]).to_pylist()
    vecs[270] = None  # row group 0 (rows 0..299), shared by blocks 0 and 1
    pq.write_table(pa.table({"vec": pa.array(vecs, type=pa.list_(pa.float32(), x.shape[1]))}),
                   tmp_path / "x.parquet", row_group_size=300)
    plan = dd.plan_fit(str(tmp_path / "x.parquet"), write_npy(tmp_path / "w.npy", w), 4,
                       str(tmp_path / "m"), seed=2, block_rows=BLOCK)
    with pytest.raises(dd.DdrpError, match="270"):
        dd.execute(plan, scheduler="threads")


# ---------------------------------------------------------------------------------------
# local schedulers: a decode waits for the blocks of the shared chunk ``lag`` before it


class _Live:
    """Decoded shared chunks alive at once during a run (``reads._decode_task`` wrapped: a
    chunk lives until the last view of it is gone)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.now = self.peak = 0
        self.lock = threading.Lock()
        decode = reads._decode_task

        def counted(*args: Any) -> tuple[np.ndarray, ...]:
            parts = decode(*args)
            with self.lock:
                self.now += 1
                self.peak = max(self.peak, self.now)
            weakref.finalize(parts[0].base, self._gone)
            return parts

        monkeypatch.setattr(reads, "_decode_task", counted)

    def _gone(self) -> None:
        with self.lock:
            self.now -= 1


@pytest.mark.parametrize("gated", [True, False], ids=["gated", "control-ungated"])
def test_on_threads_decodes_do_not_run_ahead_of_their_blocks(
        tmp_path: Path, pair: Any, gated: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """40 blocks over chunks of 390 rows (1.52 blocks: no short period), on the threaded
    scheduler: at most threads + 2 shared chunks are held decoded at once over the whole
    run. Control: without the gate, Dask's static order decodes chunks long before their
    other block runs (15 held here, 28 at 80 blocks: growing with the rows), and the bound
    fails."""
    live = _Live(monkeypatch)
    if not gated:
        monkeypatch.setattr("ddrp_dask.graph.passes.local_threads", lambda scheduler: 0)
    x = np.tile(pair[0], (2, 1))[:40 * BLOCK]
    dd.execute(dd.plan_run(write_zarr(tmp_path / "x.zarr", x, 390),
                           write_npy(tmp_path / "w.npy", pair[1]), 4, str(tmp_path / "out"),
                           seed=2, block_rows=BLOCK), scheduler="threads")
    assert live.now == 0
    if gated:
        assert live.peak <= CPU_COUNT + 2, live.peak
    else:
        assert live.peak > CPU_COUNT + 2, live.peak


def test_a_gated_decode_waits_for_the_blocks_of_the_chunk_lag_before(tmp_path: Path,
                                                                      pair: Any) -> None:
    """The graph: with ``lag`` = 2, the decode of shared chunk s waits for the blocks of
    shared chunk s - 2 (those before its own first block), through tokens of their
    completion (a block's statistics are not held for it), and without a lag for none."""
    src = open_source(write_zarr(tmp_path / "x.zarr", pair[0][:2048], 384))
    ranges = [(s, s + BLOCK) for s in range(0, 2048, BLOCK)]
    for lag, want in ((0, {0: [], 384: [], 768: [], 1152: [], 1536: []}),
                      (2, {0: [], 384: [], 768: [0, 1], 1152: [1, 2], 1536: [3, 4]})):
        blocks = map_ranges(src, ranges, "error", "t",
                            lambda j, given: task(len, [p for _, p in given],
                                                  order=f"b-{j:03d}"), lag=lag)
        graph = {k: v for b in blocks for k, v in dict(b.__dask_graph__()).items()}
        # a decode waits on tokens of blocks done ("-done-"), not on their results
        waits = {int(str(key).split("-")[1]): sorted(int(str(b).split("-")[1])
                                                      for d in spec.dependencies
                                                      if "-done-" in str(d)
                                                      for b in graph[d].dependencies)
                 for key, spec in graph.items() if "decode_task" in str(key)}
        assert not any(str(d).startswith("b-") for key, spec in graph.items()
                       if "decode_task" in str(key) for d in spec.dependencies)
        assert waits == want, (lag, waits)


# ---------------------------------------------------------------------------------------
# on a cluster: once per pass over all the workers (each counts its own decodes)


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
@pytest.mark.parametrize("kind", ["zarr", "parquet"])
def test_on_a_cluster_each_chunk_is_decoded_once_per_pass(
        tmp_path: Path, cluster2: Any, pair: Any, kind: str, shared: bool,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Two worker processes: every chunk (row group) of 300 rows under blocks of 256 is
    decoded once in pass 1 and once in pass 2 over both workers together, both workers
    decode, and the sketches are those of a .npy input on one thread. Control: with every
    block reading its own chunks, chunks are decoded more often, and the check fails."""
    if not shared:
        monkeypatch.setattr("ddrp_dask.graph.passes.map_ranges", map_unshared)
    x, w = pair
    src = (write_zarr(tmp_path / "x.zarr", x, 300) if kind == "zarr" else
           write_parquet_list(tmp_path / "x.parquet", x, 300))
    wp = write_npy(tmp_path / "w.npy", w)
    dd.execute(dd.plan_run(write_npy(tmp_path / "x.npy", x), wp, 4, str(tmp_path / "ref"),
                           seed=2, block_rows=BLOCK), scheduler="sync")
    cluster2.run(testing.count_decodes)
    before = cluster2.run(testing.decode_counts)
    dd.execute(dd.plan_run(src, wp, 4, str(tmp_path / "out"), seed=2, block_rows=BLOCK),
               scheduler=cluster2)
    counts = _cluster_decodes(cluster2, before, str(tmp_path / f"x.{kind}"))
    workers = [a for a, c in cluster2.run(testing.decode_counts).items()
               if any(n > before.get(a, {}).get(k, 0) for k, n in c.items())]
    assert len(workers) == 2, "both workers should have decoded chunks"
    assert _sketch_bytes(tmp_path / "out", "zarr") == _sketch_bytes(tmp_path / "ref", "zarr")
    n_chunks = -(-len(x) // 300)
    if shared:
        assert counts == [2] * n_chunks
    else:
        assert len(counts) == n_chunks and max(counts) > 2


# ---------------------------------------------------------------------------------------
# memory: bounded by the block and chunk sizes, whatever the row count, with shared chunks

MEM_BLOCK = 2048
MEM_CHUNK = 3100  # ~1.5 blocks, no short period: every chunk (row group) straddles two blocks
MEM_D = 32
BLOCK_BYTES = MEM_BLOCK * MEM_D * 4
CHUNK_BYTES = MEM_CHUNK * MEM_D * 4
#: The run's fixed part at d = 32 (model, graph, output metadata): about 1.3 MB measured.
FIXED_BYTES = 2 * 2**20
#: head-tail: a data-dependent model from pass 1's statistics like auto's, but a build ~5x
#: faster under tracemalloc; the reading, the cache and pass 2 are the same.
MEM_METHOD = "head-tail"
#: Proxy Arrow pools measured so far, kept alive: a buffer must not outlive its pool.
_POOLS: list[pa.MemoryPool] = []


@pytest.fixture(scope="module")
def warm(tmp_path_factory: pytest.TempPathFactory) -> str:
    """W, after one untraced run of each kind: one-time allocations (codecs, thread pools,
    caches of imported modules: 15 MB here) would otherwise land in the first measured
    peak only, and hide growth behind it."""
    t = tmp_path_factory.mktemp("memory")
    rng = np.random.default_rng(1)
    wp: str = write_npy(t / "w.npy", rng.standard_normal((300, MEM_D)).astype(np.float32))
    x = rng.standard_normal((3 * MEM_BLOCK, MEM_D)).astype(np.float32)
    for name, path in (("z", write_zarr(t / "x.zarr", x, MEM_CHUNK)),
                       ("p", write_parquet_list(t / "x.parquet", x, MEM_CHUNK, ids=False))):
        for scheduler in ("sync", "threads"):
            dd.execute(dd.plan_run(path, wp, 8, str(t / f"{name}-{scheduler}"),
                                   block_rows=MEM_BLOCK, method=MEM_METHOD),
                       scheduler=scheduler)
    return wp


def _peak(tmp_path: Path, kind: str, n_blocks: int, wp: str, scheduler: str) -> int:
    """Peak bytes of a whole ``run`` (pass 1, build, pass 2 into Zarr) of an X of
    ``n_blocks`` blocks and a part block: Python and numpy allocations (tracemalloc) plus
    the peak of Arrow's allocations (decoded row groups are Arrow buffers, which tracemalloc
    does not see), counted in a fresh proxy of Arrow's pool. The sum of the two peaks
    bounds their joint peak."""
    rng = np.random.default_rng(n_blocks)
    x = rng.standard_normal((n_blocks * MEM_BLOCK + 300, MEM_D)).astype(np.float32)
    name = f"x{n_blocks}-{scheduler}"
    path = (write_zarr(tmp_path / f"{name}.zarr", x, MEM_CHUNK) if kind == "zarr" else
            write_parquet_list(tmp_path / f"{name}.parquet", x, MEM_CHUNK, ids=False))
    del x
    plan = dd.plan_run(path, wp, 8, str(tmp_path / f"o{name}"), block_rows=MEM_BLOCK,
                       method=MEM_METHOD)
    gc.collect()
    base = pa.default_memory_pool()
    pool = pa.proxy_memory_pool(base)
    _POOLS.append(pool)
    pa.set_memory_pool(pool)
    tracemalloc.start()
    try:
        dd.execute(plan, scheduler=scheduler)
        traced = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        pa.set_memory_pool(base)
        gc.collect()
    assert pool.bytes_allocated() == 0  # nothing of the run is left holding Arrow memory
    return int(traced + pool.max_memory())


def _check_bounded(small: int, large: int, threads: int) -> None:
    """The peaks of two runs 8x apart in rows, on ``threads`` threads. The larger may exceed
    the smaller by what a pass may hold decoded for blocks still to run: a merge group's
    worth (``FAN_IN`` blocks, which Dask does not run in row order, and which a short run
    need not fill) of shared chunks, one being decoded per thread, and two blocks. Both stay
    under a bound in chunks and blocks per running task (calibrated here: less than half of
    it is used), far below the larger source's size (32 blocks)."""
    assert large <= small + (FAN_IN + threads) * CHUNK_BYTES + 2 * BLOCK_BYTES, \
        f"peak grew with the rows: {small} -> {large} bytes"
    bound = FIXED_BYTES + (FAN_IN + 3 * threads) * CHUNK_BYTES + 8 * threads * BLOCK_BYTES
    assert max(small, large) <= bound, f"peaks {small}, {large} above {bound} bytes"


@pytest.mark.parametrize("scheduler", ["sync", "threads"])
@pytest.mark.parametrize("kind", ["zarr", "parquet"])
def test_memory_with_shared_chunks_does_not_grow_with_rows(
        tmp_path: Path, warm: str, kind: str, scheduler: str) -> None:
    """README, out of core: a chunk (Zarr) or row group (Parquet) of 1.5 blocks is held
    only until both of its blocks have read it, so the peak memory of ``run`` on 4 and on 32
    blocks is the same but for a fixed allowance, and under a bound in block and chunk sizes
    (``_check_bounded``)."""
    threads = 1 if scheduler == "sync" else CPU_COUNT
    small = _peak(tmp_path, kind, 4, warm, scheduler)
    large = _peak(tmp_path, kind, 32, warm, scheduler)
    _check_bounded(small, large, threads)


def test_control_decoded_chunks_kept_to_the_end_grow_with_rows(
        tmp_path: Path, warm: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Control: decode tasks that also keep what they decode (each chunk decoded once,
    never released) make the peak grow with the rows, and the check above fails."""
    kept: list[np.ndarray] = []
    decode = reads._decode_task

    def hoarding(*args: Any) -> tuple[np.ndarray, ...]:
        parts = decode(*args)
        kept.extend(parts)
        return parts

    monkeypatch.setattr(reads, "_decode_task", hoarding)
    small = _peak(tmp_path, "zarr", 4, warm, "sync")
    kept.clear()
    large = _peak(tmp_path, "zarr", 32, warm, "sync")
    assert large > small + 15 * CHUNK_BYTES  # 22 chunks of X, all but the last one kept
    with pytest.raises(AssertionError, match="peak grew with the rows"):
        _check_bounded(small, large, 1)
