"""The shared-chunk cache after an interruption: a ``run`` stopped in pass 2 and resumed gives
the bytes of an uninterrupted run, its resumed pass 2 decodes each chunk it needs once (and
none of the finished blocks'), and the chunks a resume reads only in part do not pile up."""

from __future__ import annotations

import collections
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
import zarr

import ddrp_dask as dd
from ddrp_dask.io import chunk_cache, lifecycle
from ddrp_dask.io.lifecycle import staging_path

from .conftest import (
    interrupt_after,
    interrupted_in_a_task,
    make_pair,
    write_zarr,
)

BLOCK = 256
CHUNK = 300  # straddles blocks: chunk i is shared by the blocks of rows i*300 and i*300+299
STOP_AFTER = 3  # blocks (Zarr output) or files (Parquet output) finished before the "kill"


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """X (3,000 rows: 12 blocks, 10 chunks) and W (600 rows: 3 blocks, 2 chunks) as Zarr
    arrays whose 300-row chunks do not match the 256-row blocks."""
    t = tmp_path_factory.mktemp("resume-in")
    x, w = make_pair(n=3000, m=600, d=12, seed=5)
    return {"x": write_zarr(t / "xin.zarr", x, CHUNK), "w": write_zarr(t / "win.zarr", w, CHUNK)}


def _plan(inputs: dict[str, str], out: Path, fmt: str, resume: bool = False) -> Any:
    return dd.plan_run(inputs["x"], inputs["w"], 4, str(out), seed=3, block_rows=BLOCK,
                       format=fmt, resume=resume)


def _content(out: Path, fmt: str) -> bytes:
    """The sketches of a complete output (Parquet: rows and sketches, in row order)."""
    if fmt == "zarr":
        assert zarr.open_group(str(out), mode="r").attrs["complete"] is True
        return b"".join(np.asarray(zarr.open_array(str(out / side), mode="r")[...]).tobytes()
                        for side in ("x", "w"))
    marker = lifecycle.read_marker(str(out))
    assert marker is not None and marker["complete"] is True
    parts = []
    for side in ("x", "w"):
        t = pq.read_table(str(out / side)).sort_by("row")
        parts += [np.asarray(t["row"]).tobytes(),
                  np.asarray(t["sketch"].combine_chunks().flatten()).tobytes()]
    return b"".join(parts)


def _pending(out: Path, fmt: str, n_rows: dict[str, int]) -> dict[str, list[int]]:
    """The blocks of each side the staged (interrupted) output still lacks: unflagged blocks
    (Zarr), or missing ``part-NNNNN.parquet`` files, one per block (Parquet)."""
    stage = Path(str(staging_path(out)))
    blocks = {side: -(-n // BLOCK) for side, n in n_rows.items()}
    if fmt == "zarr":
        g = zarr.open_group(str(stage), mode="r")
        return {side: [int(b) for b in lifecycle.pending_blocks(g, side)] for side in blocks}
    return {side: [b for b in range(nb) if not (stage / side / f"part-{b:05d}.parquet").exists()]
            for side, nb in blocks.items()}


def _chunks_of(block: int, n: int) -> set[int]:
    return {r // CHUNK for r in range(block * BLOCK, min((block + 1) * BLOCK, n))}


def _decoded(seen: collections.Counter[tuple[str, Any]], path: str) -> dict[int, int]:
    """Decodes of each chunk of the Zarr array at ``path`` (direct reader: chunk index;
    zarr-python: chunk key ``c/i/0``)."""
    got: dict[int, int] = collections.defaultdict(int)
    for (root, chunk), n in seen.items():
        if Path(root.rstrip("/")) == Path(path):
            got[int(chunk.split("/")[1]) if isinstance(chunk, str) else int(chunk)] += n
    return dict(got)


@dataclass
class Resumed:
    """What an interrupted-then-resumed run did: the chunks its pending blocks need, the
    decodes of the resumed run, the cache's holdings, the bytes against a reference."""

    needed: dict[str, set[int]]
    boundary: dict[str, set[int]]  # needed chunks also holding rows of finished blocks
    decoded: dict[str, dict[int, int]]
    held_before: int
    held_after: int
    within_cap: bool
    same_bytes: bool


def _interrupt_and_resume(inputs: dict[str, str], tmp_path: Path, fmt: str, scheduler: str,
                          seen: collections.Counter[tuple[str, Any]],
                          monkeypatch: pytest.MonkeyPatch) -> Resumed:
    ref = tmp_path / "ref.out"
    dd.execute(_plan(inputs, ref, fmt), scheduler="sync")
    n_rows = {side: int(zarr.open_array(p, mode="r").shape[0]) for side, p in inputs.items()}

    out = tmp_path / "o.out"
    with monkeypatch.context() as m:
        interrupt_after(m, fmt, STOP_AFTER)  # sync: nothing runs on after the raise
        with interrupted_in_a_task():
            dd.execute(_plan(inputs, out, fmt), scheduler="sync")
    pending = _pending(out, fmt, n_rows)
    assert 0 < len(pending["x"]) < -(-n_rows["x"] // BLOCK), pending  # stopped mid-source
    needed = {s: set().union(*(_chunks_of(b, n_rows[s]) for b in pending[s])) for s in pending}
    finished = {s: set().union(*(_chunks_of(b, n_rows[s])
                                 for b in range(-(-n_rows[s] // BLOCK)) if b not in pending[s]))
                for s in pending}
    held_before = chunk_cache.held()
    assert chunk_cache.within_cap()

    seen.clear()  # count the resumed run alone: its pass 2 (the model is the saved one)
    dd.execute(_plan(inputs, out, fmt, resume=True), scheduler=scheduler)
    res = Resumed(needed, {s: needed[s] & finished[s] for s in needed},
                   {s: _decoded(seen, p) for s, p in inputs.items()}, held_before,
                   chunk_cache.held(), chunk_cache.within_cap(),
                   _content(out, fmt) == _content(ref, fmt))
    return res


def _check_once(r: Resumed) -> None:
    """The promise: the resumed run decodes each chunk its pending blocks need exactly once,
    and no other chunk."""
    for side, counts in r.decoded.items():
        twice = {i: n for i, n in counts.items() if n > 1}
        assert not twice, f"{side}: chunks decoded more than once in the resumed pass 2: {twice}"
        assert set(counts) == r.needed[side], (side, sorted(counts), sorted(r.needed[side]))


@pytest.mark.parametrize("scheduler", ["sync", "threads"])
@pytest.mark.parametrize("fmt", ["zarr", "parquet"])
def test_a_resumed_run_decodes_each_chunk_it_needs_once(
        inputs: dict[str, str], tmp_path: Path, fmt: str, scheduler: str,
        decodes: collections.Counter[tuple[str, Any]],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A run into Zarr or Parquet stopped after 3 blocks/files of pass 2 (sync), resumed on
    ``scheduler``. Asserts (a) the resumed output's sketches are byte-identical to an
    uninterrupted run's; (b) during the resumed run (pass 2 only: the staged model is
    reused) every chunk of X and W is decoded at most once, and the decoded chunks are
    exactly those overlapping the pending blocks (none of the finished blocks' alone, no
    pass 1); (c) the cache holds no more than its cap after each run, and the resume
    adds at most its boundary chunks (shared with a finished block, so read only in part)
    to what the interrupted run left."""
    r = _interrupt_and_resume(inputs, tmp_path, fmt, scheduler, decodes, monkeypatch)
    assert r.same_bytes
    _check_once(r)
    assert r.boundary["x"], "the interruption should leave a chunk shared with a done block"
    assert r.within_cap
    assert r.held_after <= r.held_before + sum(len(b) for b in r.boundary.values()), r


def test_control_without_the_cache_a_resumed_run_decodes_shared_chunks_twice(
        inputs: dict[str, str], tmp_path: Path,
        decodes: collections.Counter[tuple[str, Any]],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Control: with ``chunk_cache.take`` decoding on every call (no sharing), the same
    bytes come out but the decode-once check above fails, naming the twice-decoded chunks."""
    def uncached(key: Any, rows: int, lo: int, hi: int,
                 decode: Callable[[], np.ndarray]) -> np.ndarray:
        return decode()[lo:hi]

    monkeypatch.setattr(chunk_cache, "take", uncached)
    r = _interrupt_and_resume(inputs, tmp_path, "zarr", "sync", decodes, monkeypatch)
    assert r.same_bytes
    with pytest.raises(AssertionError, match="decoded more than once"):
        _check_once(r)
