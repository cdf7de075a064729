"""The .npy reader: local files through a memory map, URLs by ranged reads. Object arrays
are refused (they would need pickle)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import InputError
from .common import check_numeric, filesystem, is_url
from .source import Source

__all__ = ["NpySource", "open_npy_source"]


@dataclass(frozen=True)
class NpySource(Source):
    """A 2-D ``.npy`` array; ``header_bytes``: where its data starts."""

    kind = "npy"

    header_bytes: int = 0

    def _read(self, start: int, stop: int, as_nan: bool) -> np.ndarray:
        return _read_npy_rows(self, start, stop)

    def _describe_extra(self) -> str:
        how = "ranged reads" if is_url(self.path) else "a memory map"
        return f", read through {how}"


def _npy_header(fh: Any, path: str) -> tuple[tuple[int, ...], bool, np.dtype[Any], int]:
    """(shape, fortran_order, dtype, header bytes) of an open .npy file; refuses object
    arrays (they would need pickle)."""
    from numpy.lib import format as npy_format

    try:
        version = npy_format.read_magic(fh)
        read = npy_format.read_array_header_1_0 if version == (1, 0) else \
            npy_format.read_array_header_2_0
        shape, fortran, dtype = read(fh, max_header_size=2**20)
    except (ValueError, OSError, EOFError) as e:
        raise InputError(f"{path}: not a readable .npy array ({e})") from e
    if dtype.hasobject:
        raise InputError(f"{path}: not a readable .npy array (it holds Python objects, which "
                         "would need pickle; ddrp never loads pickles)")
    return shape, fortran, dtype, fh.tell()


def open_npy_source(path: str, fs: Any, inner: str) -> NpySource:
    """Describe the 2-D .npy array at ``path`` from its header."""
    with fs.open(inner, "rb") as fh:
        shape, fortran, dtype, header = _npy_header(fh, path)
    if len(shape) != 2:
        raise InputError(f"{path}: expected a 2-D array (rows x d), got shape {shape}")
    check_numeric(dtype, path)
    size = int(fs.size(inner))
    need = header + int(np.prod(shape)) * dtype.itemsize
    if size < need:
        raise InputError(f"{path}: not a readable .npy array (truncated: {size} bytes, the "
                         f"header announces {need})")
    if fortran and is_url(path):
        raise InputError(f"{path}: a Fortran-ordered .npy cannot be read by rows from an "
                         "object store; save it in C order (np.ascontiguousarray)")
    return NpySource(path, int(shape[0]), int(shape[1]), str(dtype), sizes=(size,),
                     header_bytes=header)


def _read_npy_rows(src: NpySource, start: int, stop: int) -> np.ndarray:
    """Local files through a memory map (any order); URLs by one ranged read (C order)."""
    if not is_url(src.path):
        try:
            arr = np.load(src.path, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError, EOFError) as e:
            raise InputError(f"{src.path}: not a readable .npy array ({e})") from e
        return np.asarray(arr[start:stop])
    fs, inner = filesystem(src.path)
    dtype = np.dtype(src.dtype)
    row_bytes = src.d * dtype.itemsize
    with fs.open(inner, "rb") as fh:
        fh.seek(src.header_bytes + start * row_bytes)
        raw = fh.read((stop - start) * row_bytes)
    if len(raw) != (stop - start) * row_bytes:
        raise InputError(f"{src.path}: truncated at row {start + len(raw) // row_bytes}")
    return np.frombuffer(raw, dtype=dtype).reshape(stop - start, src.d)
