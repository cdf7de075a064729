"""Zarr sources (format 3, and format 2 as zarr-python 2 and xarray's older stores write it):
open and check an array, and read rows — through a direct chunk reader when the layout
allows it, else through zarr-python. What the metadata says (format, absent chunks, codecs,
CF packing) is read by ``zarr_meta``.

Absent chunks read as the array's fill value (the Zarr specification; zarr-python does not
write a chunk that is all fill value), and the plan says how many there are; with
``strict_chunks`` an array with absent chunks is refused. CF-packed arrays (xarray's
``scale_factor``/``add_offset``/``_FillValue``/``missing_value``) are decoded as xarray
decodes them, their missing values being invalid values (``--on-invalid``).

Why a direct reader: zarr-python reads a chunk file into a fresh ``bytes``, decodes it into
another fresh buffer and copies that into the result, so a 64 MB chunk costs three fresh
allocations. glibc serves each from ``mmap`` and the page faults of the three cost more
than the zstd decoding itself. The direct reader maps each chunk file and decodes it
straight into the rows of the result (a numpy array, which asks for huge pages), in about
half the time (``benchmarks/RESULTS.md``, ``benchmarks/vs_libraries.py`` section limits). A
chunk file must not be truncated while a job reads it (a map of a shrunk file faults, as for
any memory map).

It is used only where it is exactly equivalent (``direct_layout``): an array in a local
store, a regular grid of row chunks spanning every column, the block's own dtype
(little-endian), no packing, and either format 3 with codecs ``bytes`` and at most one
``zstd``, or format 2 in C order without filters, uncompressed or ``zstd``; every chunk file
present or found absent at opening (then the fill value), and each zstd frame declaring
exactly one chunk's bytes. Anything else (sharding, transposes, checksummed or
other codecs, remote stores, dtype casts, a frame that does not match) takes the zarr-python
path, which is also where damaged chunks get their error message.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import mmap
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import InputError, InvalidValueError
from . import chunk_cache, decodes
from .common import check_numeric, working_dtype
from .source import Source
from .zarr_meta import (
    Absent,
    Packing,
    absent_objects,
    codecs_of,
    object_key,
    object_rows,
    packing_of,
)

__all__ = ["DirectLayout", "ZarrSource", "direct_layout", "open_zarr_array", "open_zarr_source",
           "read_zarr_rows"]

_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def open_zarr_array(path: str) -> Any:
    """The Zarr array (format 2 or 3) at ``path``: an array, the only array of the group
    there, or the only 2-D array of a group whose other arrays are 1-D (xarray's coordinates
    beside one variable)."""
    import zarr

    try:
        node = zarr.open(path, mode="r")
    except Exception as e:  # zarr raises several unrelated types for a broken store
        raise InputError(f"{path}: not a readable Zarr array ({e})") from e
    if isinstance(node, zarr.Group):
        members = dict(node.arrays())
        arrays = sorted(members)
        wide = [a for a in arrays if members[a].ndim != 1]
        if len(arrays) != 1 and len(wide) != 1:
            raise InputError(
                f"{path}: is a Zarr group with arrays {arrays}; name one, e.g. {path}/"
                f"{(wide or arrays or ['NAME'])[0]}"
            )
        node = members[arrays[0] if len(arrays) == 1 else wide[0]]
    return node


@dataclass(frozen=True)
class ZarrSource(Source):
    """A 2-D Zarr array of format 2 or 3 (or the one variable of a group).

    Parameters
    ----------
    chunk_rows : int
        Rows per chunk of its (regular) chunk grid.
    zarr_format : int
        2 or 3.
    layout : str
        How it is stored and read, for the plan (``zarr_meta``).
    absent : Absent
        Its chunks (or shards) that no file holds, read as ``fill_value``.
    fill_value : float
        The array's fill value.
    packing : Packing or None
        CF packing, decoded on reading (``zarr_meta.Packing``).
    """

    kind = "zarr"

    chunk_rows: int = 0
    zarr_format: int = 3
    layout: str = field(default="", compare=False)
    absent: Absent = field(default_factory=Absent)
    fill_value: float = 0.0
    packing: Packing | None = None

    def chunk_spans(self, block_rows: int) -> list[tuple[int, int]]:
        """Every chunk: Zarr decodes a chunk whole to read any of its rows."""
        c, n = self.chunk_rows, self.n_rows
        return [(r, min(r + c, n)) for r in range(0, n, c)] if c > 0 else []

    def _read(self, start: int, stop: int, as_nan: bool) -> np.ndarray:
        raw = read_zarr_rows(self, start, stop)
        if self.packing is None:
            return raw
        values, missing = self.packing.decode(raw)
        if missing.any() and not as_nan:
            row, col = (int(i[0]) for i in np.nonzero(missing))
            raise InvalidValueError(
                f"{self.path}: row {start + row} column {col} holds the missing value "
                f"{raw[row, col]} (_FillValue/missing_value); remove or impute it, or skip "
                "such rows with --on-invalid skip", row=start + row)
        return values

    def _read_pieces(self, start: int, stop: int) -> list[np.ndarray]:
        pieces = None if self.packing is not None else read_zarr_pieces(self, start, stop)
        return pieces or [self.read_rows(start, stop)]

    def locate(self, row: int) -> str:
        """The chunk (or shard) holding global row ``row``, and the row within it."""
        arr = open_zarr_array(self.path)
        rows = object_rows(arr)
        what = "shard" if getattr(arr, "shards", None) is not None else "chunk"
        return f"{what} {object_key(arr, (row // rows, 0))} row {row % rows}"

    def notes(self) -> list[str]:
        """What the user should know before trusting the rows: absent chunks."""
        a = self.absent
        if not a.count:
            return []
        return [f"{self.path}: {a.count} {a.what}(s) absent, read as fill value "
                f"{self.fill_value:g}"]

    def _fingerprint_extra(self) -> dict[str, Any]:
        extra: dict[str, Any] = {}
        if self.zarr_format != 3:
            extra["zarr_format"] = self.zarr_format
        if self.absent.count:
            extra["absent_chunks"] = self.absent.count
        if self.packing is not None:
            extra["packing"] = self.packing.facts()
        return extra

    def _describe_extra(self) -> str:
        return f", {self.layout}" + "".join(f"; {n.split(': ', 1)[1]}" for n in self.notes())


def open_zarr_source(path: str, fs: Any, inner: str, strict_chunks: bool = False) -> ZarrSource:
    """Describe the 2-D Zarr array at ``path``; absent chunks read as its fill value, or
    with ``strict_chunks`` are refused."""
    arr = open_zarr_array(path)
    if arr.ndim != 2:
        raise InputError(f"{path}: expected a 2-D Zarr array (rows x d), got shape {arr.shape}")
    check_numeric(arr.dtype, path)
    root = f"{inner.rstrip('/')}/{arr.path}" if arr.path else inner
    absent = absent_objects(arr, fs, root)
    if absent.count and strict_chunks:
        raise InputError(_missing_chunk(path, absent, arr))
    packing = packing_of(arr)
    size = int(fs.du(inner)) if hasattr(fs, "du") else 0
    return ZarrSource(path, int(arr.shape[0]), int(arr.shape[1]), str(arr.dtype),
                      sizes=(size,), chunk_rows=int(arr.chunks[0]),
                      zarr_format=int(arr.metadata.zarr_format),
                      layout=_layout(arr, packing), absent=absent,
                      fill_value=_fill(arr),
                      packing=packing)


def _layout(arr: Any, packing: Packing | None) -> str:
    """How the array is stored and read, for the plan: format, grid, codecs, reader."""
    shards = getattr(arr, "shards", None)
    grid = (f"shards of {shards[0]} rows of chunks of {arr.chunks[0]} rows"
            if shards is not None else f"chunks of {arr.chunks[0]} x {arr.chunks[1]}")
    want = working_dtype(np.dtype(arr.dtype))
    reader = "the direct chunk reader" if packing is None and direct_layout(arr, want) else \
        "zarr-python"
    name = f"array {arr.path!r}, " if arr.path else ""
    text = (f"{name}Zarr format {arr.metadata.zarr_format}, {grid}, codecs "
            f"{codecs_of(arr)}, read by {reader}")
    return text + (f", {packing.describe()}" if packing is not None else "")


def _missing_chunk(path: str, absent: Absent, arr: Any) -> str:
    r0 = absent.first_row
    r1 = min(r0 + object_rows(arr), arr.shape[0]) - 1
    return (f"{path}: {absent.what} {absent.first_key} (rows {r0}..{r1}) is missing, and Zarr "
            f"would read it as the fill value {arr.fill_value}; restore the {absent.what} or "
            "rewrite the array (or read absent chunks as the fill value: drop --strict-chunks)")


# ---------------------------------------------------------------------------------------
# reading


@dataclass(frozen=True)
class DirectLayout:
    """Where the chunk files of a row-chunked local Zarr array lie and how they decode."""

    root: str
    chunk_rows: int
    n_rows: int
    d: int
    dtype: np.dtype[Any]
    zstd: bool
    encode_key: Any
    fill: float = 0.0
    #: Keys of the chunks found absent when the source was opened: read as ``fill``.
    absent: frozenset[str] = frozenset()

    def chunk_path(self, i: int) -> str:
        return os.path.join(self.root, self.encode_key((i, 0)))


def direct_layout(arr: Any, want: np.dtype[Any]) -> DirectLayout | None:
    """The direct-read layout of ``arr`` read as ``want``, or None when zarr-python must
    read it (see the module docstring for the conditions)."""
    from zarr.codecs import BytesCodec, ZstdCodec
    from zarr.core.chunk_grids import RegularChunkGrid
    from zarr.core.metadata import ArrayV3Metadata
    from zarr.storage import LocalStore

    meta = arr.metadata
    dtype = np.dtype(arr.dtype)
    if not (isinstance(arr.store, LocalStore) and arr.ndim == 2 and dtype == want
            and dtype.byteorder != ">" and arr.chunks[1] == arr.shape[1]):
        return None
    if meta.zarr_format == 2:
        return _direct_layout_v2(arr, dtype)
    if not (isinstance(meta, ArrayV3Metadata) and isinstance(meta.chunk_grid, RegularChunkGrid)
            and not meta.storage_transformers):
        return None
    codecs = meta.codecs
    if not (isinstance(codecs[0], BytesCodec) and
            (codecs[0].endian is None or codecs[0].endian.value == "little")):
        return None
    rest = codecs[1:]
    if rest and not (len(rest) == 1 and isinstance(rest[0], ZstdCodec)):
        return None
    return DirectLayout(os.path.join(str(arr.store.root), arr.path), int(arr.chunks[0]),
                        int(arr.shape[0]), int(arr.shape[1]), dtype, bool(rest),
                        meta.chunk_key_encoding.encode_chunk_key, _fill(arr))


def _direct_layout_v2(arr: Any, dtype: np.dtype[Any]) -> DirectLayout | None:
    """A format 2 array's direct layout: C order, no filters, no compressor or zstd (a
    chunk file is then the chunk's bytes, or one zstd frame of them)."""
    meta = arr.metadata
    compressor = meta.compressor
    if meta.order != "C" or meta.filters or not (
            compressor is None or getattr(compressor, "codec_id", None) == "zstd"):
        return None
    return DirectLayout(os.path.join(str(arr.store.root), arr.path), int(arr.chunks[0]),
                        int(arr.shape[0]), int(arr.shape[1]), dtype, compressor is not None,
                        functools.partial(_v2_key, meta.dimension_separator or "."),
                        _fill(arr))


def _v2_key(separator: str, coords: tuple[int, ...]) -> str:
    """A format 2 chunk key (``1.0``, or ``1/0``)."""
    return separator.join(map(str, coords))


def _fill(arr: Any) -> float:
    """The fill value an absent chunk reads as (zarr-python reads none as 0)."""
    return 0.0 if arr.fill_value is None else float(arr.fill_value)


def zstd_content_size(header: bytes) -> int | None:
    """The decoded size a zstd frame header (a frame's first 18 bytes, or all of a shorter
    one) declares, or None when it declares none or is not a plain zstd frame.
    RFC 8878 §3.1.1.1."""
    if len(header) < 6 or header[:4] != _ZSTD_MAGIC:
        return None
    descriptor = header[4]
    if descriptor & 0x08:  # reserved bit
        return None
    fcs_flag, single = descriptor >> 6, (descriptor >> 5) & 1
    pos = 5 + (0 if single else 1) + (0, 1, 2, 4)[descriptor & 3]
    width = (single, 2, 4, 8)[fcs_flag]
    if width == 0 or len(header) < pos + width:
        return None
    size = int.from_bytes(header[pos:pos + width], "little")
    return size + 256 if width == 2 else size


def _read_file(fname: str, buf: np.ndarray) -> bool:
    """Fill ``buf`` with the file's bytes (a read may return less than asked); False if the
    file is shorter. (Uncompressed chunks: the read is the one copy they need.)"""
    view = buf.data
    with open(fname, "rb", buffering=0) as fh:
        done = 0
        while done < len(view):
            got = fh.readinto(view[done:])
            if not got:
                return False
            done += got
    return True


def _decode_chunk(layout: DirectLayout, i: int, dest: np.ndarray, path: str) -> bool:
    """Decode chunk ``i`` into ``dest`` (a C-contiguous array of exactly one chunk's bytes);
    False when it must be left to zarr-python."""
    import numcodecs

    fname = layout.chunk_path(i)
    decodes.note(os.path.normpath(fname))
    try:
        size = os.path.getsize(fname)
    except FileNotFoundError:
        if layout.encode_key((i, 0)) in layout.absent:  # the Zarr spec: the fill value
            dest[...] = layout.fill
            return True
        raise InputError(f"{path}: chunk file {fname} (rows {i * layout.chunk_rows}.."
                         f"{min((i + 1) * layout.chunk_rows, layout.n_rows) - 1}) is missing; "
                         "restore the chunk or rewrite the array") from None
    flat = dest.reshape(-1).view(np.uint8)
    if not layout.zstd:
        return size == flat.nbytes and _read_file(fname, flat)
    if size < 6:
        return False
    # decode from a map of the file: the page cache is read in place, with no copy into a
    # buffer of our own (35 % of a chunk's read time measured here)
    with open(fname, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as raw:
        if zstd_content_size(raw[:18]) != flat.nbytes:
            return False
        try:
            numcodecs.Zstd().decode(raw, out=flat)
        except (RuntimeError, ValueError):
            return False
    return True


class _NotDirect(Exception):
    """A chunk the direct reader leaves to zarr-python."""


def _chunks(start: int, stop: int, c: int, n: int) -> list[tuple[int, int, int, bool]]:
    """``(chunk, first row, stop row, whole)`` of each chunk of ``c`` rows overlapping rows
    ``start:stop`` of ``n``: the rows of it in the range, and whether the range holds all of
    the chunk's rows (else the chunk is shared with another block)."""
    out = []
    for i in range(start // c, -(-stop // c)):
        r0, r1 = i * c, min((i + 1) * c, n)
        a, b = max(start, r0), min(stop, r1)
        out.append((i, a, b, a == r0 and b == r1))
    return out


def _shared(key: tuple[str, str], n: int, i: int, c: int, a: int, b: int,
            decode: Callable[[], np.ndarray]) -> np.ndarray:
    """Rows ``a:b`` of chunk ``i`` (of ``c`` rows, of ``n``) of the array ``key`` (opening
    token, path) that other blocks also read: decoded once for all (``io.chunk_cache``)."""
    r0 = i * c
    return chunk_cache.take((*key, i), min(r0 + c, n) - r0, a - r0, b - r0, decode)


def read_direct(layout: DirectLayout, start: int, stop: int, path: str,
                token: str = "") -> np.ndarray | None:
    """Rows ``start:stop`` decoded chunk by chunk into one fresh array, or None (any chunk
    zarr-python must read). Chunks inside the range decode in place; the grid's padded last
    chunk decodes into a scratch chunk, and a chunk shared with another block comes from
    ``io.chunk_cache`` (under ``token``, the source's opening)."""
    out = np.empty((stop - start, layout.d), dtype=layout.dtype)
    return None if _direct_pieces(layout, start, stop, path, token, out) is None else out


def _direct_pieces(layout: DirectLayout, start: int, stop: int, path: str, token: str,
                   out: np.ndarray | None) -> list[np.ndarray] | None:
    """The pieces of rows ``start:stop``, chunk by chunk; with ``out``, every piece is
    decoded or copied into its rows of ``out``."""
    c = layout.chunk_rows

    def decode(i: int) -> np.ndarray:
        scratch = np.empty((c, layout.d), dtype=layout.dtype)
        if not _decode_chunk(layout, i, scratch, path):
            raise _NotDirect
        return scratch

    pieces = []
    try:
        for i, a, b, whole in chunk_cache.last_first(_chunks(start, stop, c, layout.n_rows)):
            dest = None if out is None else out[a - start:b - start]
            if whole and b - a == c:
                dest = np.empty((c, layout.d), dtype=layout.dtype) if dest is None else dest
                if not _decode_chunk(layout, i, dest, path):
                    return None
                piece = dest
            elif whole:
                piece = decode(i)[:b - a]
            else:
                piece = _shared((token, path), layout.n_rows, i, c, a, b,
                                functools.partial(decode, i))
            if dest is not None and piece is not dest:
                dest[...] = piece
                piece = dest
            pieces.append(piece)
    except _NotDirect:
        return None
    return pieces[::-1]


def _read_python(arr: Any, src: Source, start: int, stop: int) -> np.ndarray:
    """Rows ``start:stop`` through zarr-python: the chunks inside the range in one read,
    the chunks shared with other blocks from ``io.chunk_cache``."""
    c = int(arr.chunks[0])
    pieces: list[np.ndarray] = []  # last first
    run: list[int] = []  # rows start:stop of the current run of whole chunks

    def flush() -> None:
        if run:
            pieces.append(_chunk_of(arr, src.path, run[0], run[1]))
            run.clear()

    for i, a, b, whole in chunk_cache.last_first(_chunks(start, stop, c, src.n_rows)):
        if whole:
            run[:] = [a, run[1] if run else b]
            continue
        flush()
        pieces.append(_shared((src.token, src.path), src.n_rows, i, c, a, b,
                              functools.partial(_chunk_of, arr, src.path, i * c,
                                                min((i + 1) * c, src.n_rows))))
    flush()
    return pieces[0] if len(pieces) == 1 else np.concatenate(pieces[::-1])


def _chunk_of(arr: Any, path: str, r0: int, r1: int) -> np.ndarray:
    _note_python(arr, path, r0, r1)
    return np.asarray(arr[r0:r1])


def _source_layout(arr: Any, src: Source) -> DirectLayout | None:
    """``direct_layout`` of a source's array, knowing the chunks absent at its opening."""
    layout = direct_layout(arr, src.working_dtype)
    if layout is None or not isinstance(src, ZarrSource) or not src.absent.keys:
        return layout
    return dataclasses.replace(layout, absent=src.absent.keys)


def read_zarr_rows(src: Source, start: int, stop: int) -> np.ndarray:
    """Rows ``start:stop`` of a Zarr source, directly when the layout allows it."""
    arr = open_zarr_array(src.path)
    if start >= stop:
        return np.asarray(arr[start:stop])
    with _read_errors(src, start, stop):
        layout = _source_layout(arr, src)
        block = None if layout is None else read_direct(layout, start, stop, src.path,
                                                        src.token)
        if block is None:
            block = _read_python(arr, src, start, stop)
    return np.asarray(block)


def _note_python(arr: Any, path: str, start: int, stop: int) -> None:
    """The chunks zarr-python decodes to read rows ``start:stop`` (``io.decodes``)."""
    c = int(arr.chunks[0])
    for i in range(start // c, -(-stop // c)):
        decodes.note(f"{path.rstrip('/')}/{object_key(arr, (i, 0))}")


def read_zarr_pieces(src: Source, start: int, stop: int) -> list[np.ndarray] | None:
    """Rows ``start:stop`` of a Zarr source as pieces in row order, without assembling them:
    a fresh array per chunk inside the range, read-only views of the chunks shared with
    other blocks (no copy out of ``io.chunk_cache``); None where the direct reader does not
    apply (``read_zarr_rows`` then reads one block)."""
    if start >= stop:
        return None
    arr = open_zarr_array(src.path)
    with _read_errors(src, start, stop):
        layout = _source_layout(arr, src)
        return None if layout is None else _direct_pieces(layout, start, stop, src.path,
                                                          src.token, None)


@contextlib.contextmanager
def _read_errors(src: Source, start: int, stop: int) -> Iterator[None]:
    """A damaged chunk's codec error (of many kinds) as an ``InputError`` naming the rows."""
    try:
        yield
    except InputError:
        raise
    except Exception as e:
        raise InputError(f"{src.path}: rows {start}..{stop - 1} cannot be read "
                         f"({type(e).__name__}: {e})") from e


