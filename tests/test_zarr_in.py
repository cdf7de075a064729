"""The direct Zarr chunk reader: the same values as zarr-python wherever it is used, and
zarr-python (or a clear error) wherever it must not be."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numcodecs
import numpy as np
import pytest
import zarr
from zarr.codecs import BytesCodec, Crc32cCodec, ShardingCodec, ZstdCodec

from ddrp_dask.errors import InputError
from ddrp_dask.io.registry import open_source
from ddrp_dask.io.zarr_reader import direct_layout, open_zarr_array, read_direct, zstd_content_size

ROWS, D, CHUNK = 3500, 24, 1000
RANGES = [(0, ROWS), (0, 1000), (1000, 2000), (999, 1001), (250, 2750), (3000, ROWS),
          (3499, ROWS), (1500, 1500)]


def _write(path: Path, data: np.ndarray, **kw: Any) -> Path:
    kw.setdefault("chunks", (CHUNK, data.shape[1]))
    arr = zarr.create_array(str(path), shape=data.shape, dtype=data.dtype, **kw)
    arr[:] = data
    return path


@pytest.fixture
def data() -> np.ndarray:
    rng = np.random.default_rng(7)
    return (rng.standard_normal((ROWS, D)) * 3 + 1).astype(np.float32)


@pytest.mark.parametrize("kw", [
    {},
    {"compressors": None},
    {"compressors": ZstdCodec(level=5, checksum=True)},
    {"chunk_key_encoding": {"name": "v2"}},
    {"zarr_format": 2},
    {"zarr_format": 2, "compressors": None},
    {"zarr_format": 2, "chunk_key_encoding": {"name": "v2", "separator": "/"}},
], ids=["zstd", "uncompressed", "zstd-checksum", "v2-keys", "format2", "format2-uncompressed",
        "format2-nested"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_direct_reads_equal_zarr(tmp_path: Path, data: np.ndarray, kw: dict[str, Any],
                                 dtype: str) -> None:
    path = _write(tmp_path / "a.zarr", data.astype(dtype), **kw)
    src = open_source(str(path))
    arr = open_zarr_array(str(path))
    layout = direct_layout(arr, src.working_dtype)
    assert layout is not None
    for start, stop in RANGES:
        got = read_direct(layout, start, stop, src.path)
        assert got is not None and got.dtype == np.dtype(dtype) and got.flags.c_contiguous
        assert np.array_equal(got, arr[start:stop]), (start, stop)
        assert np.array_equal(src.read_rows(start, stop), arr[start:stop])


def test_pieces_concatenate_to_the_rows_and_share_chunks_without_copies(
        tmp_path: Path, data: np.ndarray) -> None:
    """``read_pieces`` (pass 2's read): pieces in row order whose concatenation is
    ``read_rows``; a chunk two ranges share is decoded once and handed to both as read-only
    views of one buffer (no copy); a layout the direct reader leaves to zarr-python (float16,
    cast on reading) and a .npy source come back as one block."""
    from ddrp_dask.io import chunk_cache

    chunk_cache.clear()
    src = open_source(str(_write(tmp_path / "a.zarr", data)))
    for start, stop in RANGES:
        pieces = src.read_pieces(start, stop)
        assert all(p.flags.c_contiguous and p.dtype == np.float32 for p in pieces)
        assert np.array_equal(np.concatenate(pieces), src.read_rows(start, stop))
    chunk_cache.clear()
    first, second = src.read_pieces(0, 1500), src.read_pieces(1500, 3500)
    assert [len(p) for p in first] == [1000, 500] and [len(p) for p in second] == [500, 1000,
                                                                                     500]
    # rows 1000..1499 and 1500..1999 are adjacent in one decoded buffer, never copied
    assert first[1].ctypes.data + first[1].nbytes == second[0].ctypes.data
    assert not first[1].flags.writeable and not second[0].flags.writeable
    assert chunk_cache.held() == 0  # chunk 1 dropped once both took their rows


def test_given_rows_are_handed_on_and_the_rest_read_around_them(
        tmp_path: Path, data: np.ndarray) -> None:
    """Rows ``given`` (a chunk two blocks share, decoded once by a cluster pass's own task)
    are handed on by ``read_pieces`` as they are, never copied, and the rest is read around
    them; ``read_rows`` assembles the same rows; a layout the direct reader leaves to
    zarr-python (float16, cast on reading) and a .npy source come back as one block."""
    src = open_source(str(_write(tmp_path / "a.zarr", data)))
    for start, stop in RANGES:
        pieces = src.read_pieces(start, stop)
        assert all(p.flags.c_contiguous and p.dtype == np.float32 for p in pieces)
        assert np.array_equal(np.concatenate(pieces), src.read_rows(start, stop))
    chunk = src.read_rows(1000, 2000)  # chunk 1, as the pass's decode task reads it
    first = src.read_pieces(0, 1500, given=[(1000, chunk[:500])])
    second = src.read_pieces(1500, 3500, given=[(1500, chunk[500:])])
    assert [len(p) for p in first] == [1000, 500] and [len(p) for p in second] == [500, 1000,
                                                                                     500]
    # rows 1000..1499 and 1500..1999 are adjacent in one decoded buffer, never copied
    assert first[1].ctypes.data == chunk.ctypes.data
    assert first[1].ctypes.data + first[1].nbytes == second[0].ctypes.data
    assert np.array_equal(np.concatenate(first + second), data[:3500])
    assert np.array_equal(src.read_rows(1500, 3500, given=[(1500, chunk[500:])]),
                          data[1500:3500])
    half = open_source(str(_write(tmp_path / "h.zarr", data.astype(np.float16))))
    assert [len(p) for p in half.read_pieces(250, 2750)] == [2500]
    np.save(tmp_path / "a.npy", data)
    assert len(open_source(str(tmp_path / "a.npy")).read_pieces(250, 2750)) == 1


@pytest.mark.parametrize("kw, dtype", [
    ({"chunks": (CHUNK, D // 2)}, "float32"),
    ({"shards": (2 * CHUNK, D)}, "float32"),
    ({"compressors": (ZstdCodec(), Crc32cCodec())}, "float32"),
    ({"serializer": BytesCodec(endian="big")}, "float32"),
    ({}, "int16"),
    ({}, "float16"),
    ({"zarr_format": 2, "compressors": numcodecs.Blosc()}, "float32"),
    ({"zarr_format": 2, "filters": [numcodecs.Shuffle(elementsize=4)]}, "float32"),
], ids=["column-chunks", "sharded", "crc32c", "big-endian", "int16", "float16",
        "format2-blosc", "format2-filter"])
def test_other_layouts_are_left_to_zarr(tmp_path: Path, data: np.ndarray,
                                        kw: dict[str, Any], dtype: str) -> None:
    values = (data * 100).astype(dtype)
    path = _write(tmp_path / "a.zarr", values, **kw)
    src = open_source(str(path))
    arr = open_zarr_array(str(path))
    assert direct_layout(arr, src.working_dtype) is None
    if "shards" in kw:
        assert any(isinstance(c, ShardingCodec) for c in arr.metadata.codecs)
    want = values[250:2750].astype(src.working_dtype)
    assert np.array_equal(src.read_rows(250, 2750), want)


def test_remote_store_is_left_to_zarr(data: np.ndarray) -> None:
    store = zarr.storage.FsspecStore.from_url("memory://ddrp-zarr-in/a.zarr")
    arr = zarr.create_array(store, shape=data.shape, dtype=data.dtype, chunks=(CHUNK, D))
    arr[:] = data
    assert direct_layout(arr, np.dtype(np.float32)) is None
    src = open_source("memory://ddrp-zarr-in/a.zarr")
    assert np.array_equal(src.read_rows(999, 1001), data[999:1001])


def test_a_frame_of_the_wrong_size_is_not_read_as_stale_rows(tmp_path: Path,
                                                             data: np.ndarray) -> None:
    """A valid zstd frame holding fewer bytes than a chunk must not leave the rest of the
    block as whatever the buffer held: the direct reader declines it and zarr-python's
    error names the rows."""
    path = _write(tmp_path / "a.zarr", data)
    src = open_source(str(path))
    layout = direct_layout(open_zarr_array(str(path)), src.working_dtype)
    assert layout is not None
    short = numcodecs.Zstd().encode(data[1000:1500].tobytes())
    (path / "c" / "1" / "0").write_bytes(short)
    assert read_direct(layout, 0, 2000, src.path) is None
    with pytest.raises(InputError, match=r"a.zarr: rows 0..1999 cannot be read"):
        src.read_rows(0, 2000)
    (path / "c" / "1" / "0").write_bytes(short[: len(short) // 2])
    with pytest.raises(InputError, match=r"a.zarr: rows 1000..1999 cannot be read"):
        src.read_rows(1000, 2000)


def test_uncompressed_chunk_of_the_wrong_size(tmp_path: Path, data: np.ndarray) -> None:
    path = _write(tmp_path / "a.zarr", data, compressors=None)
    src = open_source(str(path))
    with open(path / "c" / "2" / "0", "r+b") as fh:
        fh.truncate(CHUNK * D * 4 - 4)
    with pytest.raises(InputError, match=r"a.zarr: rows 1500..2499 cannot be read"):
        src.read_rows(1500, 2500)
    assert np.array_equal(src.read_rows(0, 2000), data[:2000])


def test_chunk_removed_after_opening_is_named(tmp_path: Path, data: np.ndarray) -> None:
    path = _write(tmp_path / "a.zarr", data)
    src = open_source(str(path))
    os.remove(path / "c" / "3" / "0")
    with pytest.raises(InputError, match=r"chunk file .*c/3/0 \(rows 3000..3499\) is missing"):
        src.read_rows(2500, ROWS)


@pytest.mark.parametrize("size", [0, 1, 255, 256, 300, 65535, 65536 + 256, 70_000, 2**22])
@pytest.mark.parametrize("level", [0, 1, 19])
def test_zstd_content_size_reads_the_frame_header(size: int, level: int) -> None:
    frame = bytes(numcodecs.Zstd(level=level).encode(np.arange(size, dtype=np.uint8)))
    assert zstd_content_size(frame[:18]) == size


def test_zstd_content_size_of_other_bytes() -> None:
    assert zstd_content_size(b"garbage bytes") is None
    assert zstd_content_size(b"\x28\xb5") is None
    frame = bytearray(numcodecs.Zstd().encode(b"x" * 1000))
    frame[4] |= 0x08  # the reserved bit
    assert zstd_content_size(bytes(frame)) is None


def test_written_zero_chunks_are_stored_and_readable(tmp_path: Path) -> None:
    """Zarr skips chunks equal to the fill value; ddrp's outputs store them, so that a
    sketch block of zeros still reads back as a ddrp source with every chunk present (even
    under ``strict_chunks``, which refuses absent ones)."""
    from ddrp_dask.io.writer import float_compressors, write_rows

    arr = zarr.create_array(str(tmp_path / "s.zarr"), shape=(300, 4), dtype="float32",
                            chunks=(100, 4), compressors=float_compressors())
    write_rows(str(tmp_path / "s.zarr"), slice(0, 300), np.zeros((300, 4), np.float32))
    assert arr.nchunks_initialized == 3
    assert np.array_equal(open_source(str(tmp_path / "s.zarr"), strict_chunks=True)
                          .read_rows(0, 300),
                          np.zeros((300, 4), np.float32))
    plain = zarr.create_array(str(tmp_path / "p.zarr"), shape=(300, 4), dtype="float32",
                              chunks=(100, 4))
    plain[:] = 0.0
    with pytest.raises(InputError, match="is missing"):
        open_source(str(tmp_path / "p.zarr"), strict_chunks=True)


def test_array_inside_a_group_is_read_directly(tmp_path: Path, data: np.ndarray) -> None:
    group = zarr.open_group(str(tmp_path / "g.zarr"), mode="w")
    group.create_array("vec", shape=data.shape, dtype=data.dtype, chunks=(CHUNK, D))[:] = data
    src = open_source(str(tmp_path / "g.zarr"))
    layout = direct_layout(open_zarr_array(src.path), src.working_dtype)
    assert layout is not None and layout.root.rstrip("/").endswith("g.zarr/vec")
    got = read_direct(layout, 250, 2750, src.path)
    assert got is not None and np.array_equal(got, data[250:2750])
