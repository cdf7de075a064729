"""Reading units (issue 15): every input chunk (Zarr chunk, Parquet row group) is decoded once
per pass, whatever its size against the blocks, and the bytes stay those of any other
chunking."""

from __future__ import annotations

import collections
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
import zarr

import ddrp_dask as dd
from ddrp_dask.errors import InvalidValueError
from ddrp_dask.io.registry import open_source
from ddrp_dask.io.units import Unit, block_parts, plan_units
from ddrp_dask.io.zarr_reader import DirectLayout, read_zarr_rows

from .conftest import make_pair, write_npy, write_parquet_list, write_zarr

BLOCK = 256


# ---------------------------------------------------------------------------------------
# the plan of integers


def _chunk_reads(units: list[Unit], bounds: list[int]) -> collections.Counter[int]:
    """How many units read each chunk."""
    reads: collections.Counter[int] = collections.Counter()
    for u in units:
        for c in range(len(bounds) - 1):
            if bounds[c] < u.stop and u.start < bounds[c + 1]:
                reads[c] += 1
    return reads


def _check_plan(units: list[Unit], wanted: list[tuple[int, int]], bounds: list[int]) -> None:
    needed = {c for s, e in wanted for c in range(len(bounds) - 1)
              if bounds[c] < e and s < bounds[c + 1]}
    assert _chunk_reads(units, bounds) == collections.Counter(needed)  # each once, no other
    assert all(u.start in bounds and u.stop in bounds for u in units)  # whole chunks
    for (s, e), parts in zip(wanted, block_parts(units, len(wanted)), strict=True):
        assert [(a, b) for _, a, b in parts] == \
            [(a, b) for a, b in zip([s, *[b for _, _, b in parts[:-1]]],
                                    [b for _, _, b in parts], strict=True)]
        assert parts[0][1] == s and parts[-1][2] == e
        for j, a, b in parts:
            assert units[j].start <= a < b <= units[j].stop


def _case(rng: np.random.Generator) -> tuple[list[tuple[int, int]], list[int], int]:
    n = int(rng.integers(1, 5000))
    if rng.random() < 0.5:
        step = int(rng.integers(1, 2000))
        bounds = [*range(0, n, step), n]
    else:  # irregular row groups
        cuts = np.unique(rng.integers(1, n, size=int(rng.integers(0, 30)))) if n > 1 else []
        bounds = [0, *map(int, cuts), n]
    blocks = [(s, min(s + BLOCK, n)) for s in range(0, n, BLOCK)]
    keep = rng.random(len(blocks)) < (1.0 if rng.random() < 0.5 else 0.3)
    wanted = [b for b, k in zip(blocks, keep, strict=True) if k] or blocks[:1]
    return wanted, bounds, n


def test_every_needed_chunk_is_in_exactly_one_unit_and_parts_tile_the_blocks() -> None:
    rng = np.random.default_rng(15)
    for _ in range(500):
        wanted, bounds, _ = _case(rng)
        _check_plan(plan_units(wanted, bounds), wanted, bounds)


def test_the_plan_check_fails_for_units_that_are_the_blocks() -> None:
    """Control: reading block by block (units = blocks) decodes straddling chunks twice, and
    the check above sees it."""
    wanted = [(s, min(s + BLOCK, 1000)) for s in range(0, 1000, BLOCK)]
    bounds = [*range(0, 1000, 300), 1000]
    with pytest.raises(AssertionError):
        _check_plan(plan_units(wanted, None), wanted, bounds)


def test_a_neighbours_part_is_at_most_half_a_chunk_when_chunks_are_smaller() -> None:
    for step in (1, 7, 100, 128, 200, 255, 256):
        n = 10 * BLOCK + 3
        wanted = [(s, min(s + BLOCK, n)) for s in range(0, n, BLOCK)]
        units = plan_units(wanted, [*range(0, n, step), n])
        for parts in block_parts(units, len(wanted)):
            sizes = sorted(b - a for _, a, b in parts)
            assert len(sizes) <= 3 and max(sizes[:-1], default=0) <= step / 2, (step, parts)


# ---------------------------------------------------------------------------------------
# decodes counted on real stores, through the real readers


@pytest.fixture
def decodes(monkeypatch: pytest.MonkeyPatch) -> Iterator[collections.Counter[tuple[str, int]]]:
    """Every Zarr chunk decode of the direct reader and every Parquet row-group read, by
    (store or file, chunk): the real functions, counted (in-process schedulers)."""
    seen: collections.Counter[tuple[str, int]] = collections.Counter()
    chunk_path = DirectLayout.chunk_path

    def counted_chunk(self: DirectLayout, i: int) -> str:
        seen[(self.root, i)] += 1
        return chunk_path(self, i)

    read_row_group = pq.ParquetFile.read_row_group

    def counted_group(self: Any, i: int, *args: Any, **kwargs: Any) -> Any:
        seen[(str(self.metadata.num_rows), i)] += 1
        return read_row_group(self, i, *args, **kwargs)

    def no_batches(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a row group was streamed in batches")

    monkeypatch.setattr(DirectLayout, "chunk_path", counted_chunk)
    monkeypatch.setattr(pq.ParquetFile, "read_row_group", counted_group)
    monkeypatch.setattr(pq.ParquetFile, "iter_batches", no_batches)
    yield seen


def _per_source(seen: collections.Counter[tuple[str, int]], key: str) -> list[int]:
    return [v for (k, _), v in sorted(seen.items()) if key in k]


@pytest.fixture(scope="module")
def pair() -> tuple[np.ndarray, np.ndarray]:
    return make_pair(n=2000, m=530, d=12, seed=4)


def test_the_counter_sees_a_chunk_decoded_twice(tmp_path: Path, decodes: Any,
                                                pair: Any) -> None:
    """Control: reading the blocks one by one decodes a straddling chunk twice."""
    src = open_source(write_zarr(tmp_path / "x.zarr", pair[0], 300))
    for s in range(0, 600, BLOCK):
        read_zarr_rows(src, s, min(s + BLOCK, 600))
    assert max(_per_source(decodes, "x.zarr")) == 2


@pytest.mark.parametrize("chunk", [37, 256, 300, 1000, 5000])
@pytest.mark.parametrize("fmt", ["zarr", "parquet"])
def test_each_zarr_chunk_is_decoded_once_per_pass_with_the_same_bytes(
        tmp_path: Path, decodes: Any, pair: Any, chunk: int, fmt: str) -> None:
    x, w = pair
    ref = tmp_path / "ref"
    dd.execute(dd.plan_run(write_npy(tmp_path / "x.npy", x), write_npy(tmp_path / "w.npy", w),
                           4, str(ref), seed=2, block_rows=BLOCK, format=fmt),
               scheduler="sync")
    xz = write_zarr(tmp_path / "x.zarr", x, chunk)
    wz = write_zarr(tmp_path / "w.zarr", w, chunk)
    out = tmp_path / "out"
    dd.execute(dd.plan_run(xz, wz, 4, str(out), seed=2, block_rows=BLOCK, format=fmt),
               scheduler="threads")
    n_chunks = -(-len(x) // chunk)
    assert _per_source(decodes, "x.zarr") == [2] * n_chunks  # pass 1 and pass 2
    assert _per_source(decodes, "w.zarr") == [2] * -(-len(w) // chunk)
    assert _sketch_bytes(out, fmt) == _sketch_bytes(ref, fmt)


def _sketch_bytes(out: Path, fmt: str) -> tuple[bytes, ...]:
    if fmt == "zarr":
        g = zarr.open_group(str(out), mode="r")
        return g["x"][...].tobytes(), g["w"][...].tobytes()
    return tuple(np.stack(pq.read_table(out / side).sort_by("row")["sketch"]
                          .to_numpy(zero_copy_only=False)).tobytes() for side in ("x", "w"))


def test_a_fraction_reads_each_chunk_it_needs_once(tmp_path: Path, decodes: Any,
                                                   pair: Any) -> None:
    x, w = pair
    xz = write_zarr(tmp_path / "x.zarr", x, 300)
    plan = dd.plan_fit(xz, write_npy(tmp_path / "w.npy", w), 4, str(tmp_path / "m"),
                       seed=2, block_rows=BLOCK, stats_fraction=0.4)
    ref = dd.plan_fit(write_npy(tmp_path / "x.npy", x), write_npy(tmp_path / "w.npy", w), 4,
                      str(tmp_path / "m_ref"), seed=2, block_rows=BLOCK, stats_fraction=0.4)
    dd.execute(plan, scheduler="threads")
    dd.execute(ref, scheduler="sync")
    blocks = plan.stats_blocks("x")
    assert 0 < len(blocks) < -(-len(x) // BLOCK)
    needed = {r // 300 for b in blocks for r in (b * BLOCK, min((b + 1) * BLOCK, len(x)) - 1)}
    assert sorted(k[1] for k in decodes if "x.zarr" in k[0]) == sorted(needed)
    assert set(_per_source(decodes, "x.zarr")) == {1}
    assert dd.load_model(str(tmp_path / "m")).digest == \
        dd.load_model(str(tmp_path / "m_ref")).digest


def test_each_row_group_is_read_once_per_pass(tmp_path: Path, decodes: Any,
                                              pair: Any) -> None:
    x, w = pair
    xp = write_parquet_list(tmp_path / "x.parquet", x, 300)
    out = tmp_path / "out"
    dd.execute(dd.plan_run(xp, write_npy(tmp_path / "w.npy", w), 4, str(out), seed=2,
                           block_rows=BLOCK), scheduler="threads")
    assert _per_source(decodes, str(len(x))) == [2] * -(-len(x) // 300)


def test_a_null_beside_the_rows_a_fraction_reads_is_not_its_business(
        tmp_path: Path, pair: Any) -> None:
    """A unit holding rows of blocks pass 1 skips reads them leniently: a null there does
    not fail the fit (as when blocks were read alone), and a null in a block it reads still
    names the row as a null."""
    import pyarrow as pa

    x, w = pair
    wp = write_npy(tmp_path / "w.npy", w)
    clean = write_parquet_list(tmp_path / "clean.parquet", x, 300)
    plan = dd.plan_fit(clean, wp, 4, str(tmp_path / "m_ref"), seed=2, block_rows=BLOCK,
                       stats_fraction=0.4)
    used = set(plan.stats_blocks("x"))
    # a skipped block sharing a row group with a used one
    skipped = next(b for b in range(-(-len(x) // BLOCK)) if b not in used and any(
        (r // 300) in {q // 300 for u in used for q in (u * BLOCK, (u + 1) * BLOCK - 1)}
        for r in (b * BLOCK, (b + 1) * BLOCK - 1)))
    row = next(r for r in (skipped * BLOCK, (skipped + 1) * BLOCK - 1)
               if (r // 300) in {q // 300 for u in used for q in (u * BLOCK, (u + 1) * BLOCK - 1)})

    def with_null(path: Path, at: int) -> str:
        vecs = pa.FixedSizeListArray.from_arrays(pa.array(x.ravel()), x.shape[1])
        mask = np.zeros(len(x), dtype=bool)
        mask[at] = True
        vecs = pa.array([None if m else v for v, m in zip(vecs.to_pylist(), mask,
                                                         strict=True)],
                        type=vecs.type)
        pq.write_table(pa.table({"vec": vecs}), path, row_group_size=300,
                       use_dictionary=False)
        return str(path)

    dd.execute(plan, scheduler="sync")
    lenient = dd.plan_fit(with_null(tmp_path / "n1.parquet", row), wp, 4, str(tmp_path / "m1"),
                          seed=2, block_rows=BLOCK, stats_fraction=0.4)
    dd.execute(lenient, scheduler="threads")
    assert dd.load_model(str(tmp_path / "m1")).digest == \
        dd.load_model(str(tmp_path / "m_ref")).digest
    bad_row = min(used) * BLOCK + 5
    strict = dd.plan_fit(with_null(tmp_path / "n2.parquet", bad_row), wp, 4,
                         str(tmp_path / "m2"), seed=2, block_rows=BLOCK, stats_fraction=0.4)
    with pytest.raises(InvalidValueError, match=f"null.*{bad_row}|{bad_row}.*null"):
        dd.execute(strict, scheduler="threads")


def test_one_file_as_both_sides_gives_the_bytes_of_two_copies(tmp_path: Path,
                                                              pair: Any) -> None:
    """X and W read from one file: each side's blocks shift their rows in place, so the two
    sides must not share a read (found when the reads were first shared)."""
    x = pair[0]
    same = write_zarr(tmp_path / "x.zarr", x, 300)
    refs = {}
    for name, (a, b) in {"same": (same, same),
                         "copies": (write_npy(tmp_path / "a.npy", x),
                                    write_npy(tmp_path / "b.npy", x))}.items():
        dd.execute(dd.plan_run(a, b, 4, str(tmp_path / name), seed=2, block_rows=BLOCK),
                   scheduler="threads")
        refs[name] = _sketch_bytes(tmp_path / name, "zarr")
    assert refs["same"] == refs["copies"]


def test_a_row_group_over_two_blocks_is_streamed_block_by_block(tmp_path: Path,
                                                                pair: Any) -> None:
    """Memory stays bounded by the block: a large row group is cut at the blocks inside it
    (read in batches), small ones are whole chunks."""
    x = pair[0]
    src = open_source(write_parquet_list(tmp_path / "x.parquet", x, 1500))
    assert src.chunk_bounds(BLOCK) == [0, 256, 512, 768, 1024, 1280, 1500, 2000]
    assert src.chunk_bounds(1000) == [0, 1500, 2000]
