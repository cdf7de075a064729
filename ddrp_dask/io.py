"""Readers: open a source of vectors (``.npy``, Zarr v3 array, Parquet file or directory)
from its metadata alone, then read any range of rows as a 2-D numpy block.

A ``Source`` is a small frozen description (paths, shape, dtype, columns) that pickles
cheaply into Dask tasks: every task opens the file itself, so workers read the data directly
and the client never holds it. Rows are numbered in a documented, stable order: for Parquet,
files in sorted path order, then row groups, then rows.

The *working dtype* of a source is float32 for float16/float32 and small integers, float64
for float64 and wide integers (which float32 cannot hold exactly).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import InputError, InvalidValueError

__all__ = [
    "DEFAULT_BLOCK_BYTES",
    "Source",
    "check_finite",
    "default_block_rows",
    "filesystem",
    "is_url",
    "open_source",
    "read_valid",
    "working_dtype",
]

#: Target size of one canonical row block in float32: the unit of every task.
DEFAULT_BLOCK_BYTES = 64 * 2**20


def is_url(path: str) -> bool:
    """True for an fsspec URL (``s3://``, ``gs://``, ``memory://``, ...), False for a path."""
    return "://" in str(path) and not str(path).startswith("file://")


def filesystem(path: str) -> tuple[Any, str]:
    """The fsspec filesystem of ``path`` and the path inside it. Credentials and endpoints
    come from the environment (e.g. ``AWS_*``) and fsspec's configuration."""
    import fsspec

    return fsspec.core.url_to_fs(str(path))


def _qualify(fs: Any, inner: str, like: str) -> str:
    """A path returned by ``fs`` as the user would write it (a URL stays a URL)."""
    return str(fs.unstrip_protocol(inner)) if is_url(like) else inner


def default_block_rows(d: int) -> int:
    """Rows of one canonical block: a power of two near 64 MiB of float32, from ``d`` only.

    It depends on nothing but the dimension, so the same data gives the same blocks (and so
    the same bytes) whatever its format or chunking on disk.
    """
    rows = DEFAULT_BLOCK_BYTES // (4 * max(d, 1))
    return int(min(max(2 ** (max(rows, 1).bit_length() - 1), 256), 2**20))


def working_dtype(dtype: np.dtype[Any]) -> np.dtype[Any]:
    """float32 for float16/float32/bool/≤16-bit integers, float64 for everything wider."""
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        return np.dtype(np.float64) if dtype.itemsize >= 8 else np.dtype(np.float32)
    if dtype.kind in "iub":
        return np.dtype(np.float32) if dtype.itemsize <= 2 else np.dtype(np.float64)
    raise InputError(f"dtype {dtype} is not numeric")


def check_finite(block: np.ndarray, where: str, row0: int) -> np.ndarray:
    """Raise ``InvalidValueError`` naming the first row of ``block`` holding NaN or inf;
    return the block's float64 column sums (reused by the statistics).

    Cheap on clean data: a float64 column sum is finite exactly when every value is
    (float32 sums cannot overflow float64); only a failing block is searched row by row.
    """
    colsum = np.asarray(np.sum(block, axis=0, dtype=np.float64))
    if np.isfinite(colsum).all():
        return colsum
    bad_rows = np.flatnonzero(~np.isfinite(block).all(axis=1))
    if bad_rows.size == 0:
        raise InvalidValueError(
            f"{where}: values near row {row0} are so large that their sum overflows float64; "
            "rescale the data"
        )
    row = int(bad_rows[0])
    col = int(np.flatnonzero(~np.isfinite(block[row]))[0])
    raise InvalidValueError(
        f"{where}: row {row0 + row} column {col} is {float(block[row, col])} "
        f"({bad_rows.size} rows in rows {row0}..{row0 + len(block) - 1} are not finite); "
        "remove or impute them before sketching"
    )


@dataclass(frozen=True)
class Source:
    """A lazily read source of ``n_rows`` vectors of dimension ``d``.

    Parameters
    ----------
    path : str
        What the user named (file or directory).
    kind : {"npy", "zarr", "parquet"}
    n_rows, d : int
    dtype : str
        The stored dtype (for Parquet, of the vector values).
    files : tuple of str
        Parquet files in row order (empty for other kinds).
    row_groups : tuple of (file index, row group index, first row, n rows)
        Parquet row groups in row order.
    columns : tuple of str
        Parquet columns holding the vectors.
    layout : {"array", "list", "scalars"}
        ``list``: one list/fixed-size-list column; ``scalars``: one numeric column per
        dimension.
    """

    path: str
    kind: str
    n_rows: int
    d: int
    dtype: str
    files: tuple[str, ...] = ()
    row_groups: tuple[tuple[int, int, int, int], ...] = ()
    columns: tuple[str, ...] = ()
    layout: str = "array"
    sizes: tuple[int, ...] = field(default=(), compare=False)
    header_bytes: int = 0
    id_column: str | None = None

    @property
    def working_dtype(self) -> np.dtype[Any]:
        """The dtype blocks are returned in (see module docstring)."""
        return working_dtype(np.dtype(self.dtype))

    def read_rows(self, start: int, stop: int, invalid: str = "error") -> np.ndarray:
        """Rows ``start:stop`` as a C-contiguous ``(stop - start, d)`` array of the working
        dtype. Parquet nulls and lists of the wrong length raise ``InvalidValueError`` naming
        the row, or with ``invalid="nan"`` come back as rows of NaN (to be skipped)."""
        if not 0 <= start <= stop <= self.n_rows:
            raise IndexError(f"rows {start}:{stop} outside 0:{self.n_rows} of {self.path}")
        if self.kind == "npy":
            block = _read_npy_rows(self, start, stop)
        elif self.kind == "zarr":
            from .zarr_in import read_zarr_rows

            block = read_zarr_rows(self, start, stop)
        else:
            from .parquet_in import read_parquet_rows

            block = read_parquet_rows(self, start, stop, invalid == "nan")
        return np.ascontiguousarray(block, dtype=self.working_dtype)

    def read_ids(self, start: int, stop: int) -> np.ndarray:
        """The id column's values for rows ``start:stop``: int64, or str for text ids."""
        if self.id_column is None:
            raise InputError(f"{self.path}: no id column was chosen")
        ids = self.read_column(self.id_column, start, stop, "id column")
        return ids.astype(str) if ids.dtype.kind in "OUS" else ids.astype(np.int64)

    def read_column(self, name: str, start: int, stop: int, what: str = "column") -> np.ndarray:
        """Another Parquet column's values for rows ``start:stop`` (ids, labels); a null
        raises naming the file, row group and row."""
        if self.kind != "parquet":
            raise InputError(f"{self.path}: {what} {name!r} needs a Parquet source")
        from .parquet_in import first_null, open_parquet_file

        parts = []
        for fi, gi, rg_start, nr in self.row_groups:
            lo, hi = max(start, rg_start), min(stop, rg_start + nr)
            if lo < hi:
                pf = open_parquet_file(self.files[fi])
                if name not in pf.schema_arrow.names:
                    raise InputError(f"{self.files[fi]}: no {what} {name!r}; columns are "
                                     f"{pf.schema_arrow.names}")
                col = pf.read_row_group(gi, columns=[name]).column(0)
                col = col.slice(lo - rg_start, hi - lo).combine_chunks()
                if col.null_count:
                    raise InvalidValueError(
                        f"{self.files[fi]} row group {gi}: {what} {name!r} is null at row "
                        f"{lo + first_null(col)}")
                parts.append(np.asarray(col.to_numpy(zero_copy_only=False)))
        return np.concatenate(parts) if parts else np.zeros(0)

    @property
    def id_dtype(self) -> str | None:
        """``"int64"`` or ``"str"`` for the id column, None without one."""
        if self.id_column is None:
            return None
        import pyarrow as pa

        from .parquet_in import open_parquet_file

        t = open_parquet_file(self.files[0]).schema_arrow.field(self.id_column).type
        return "int64" if pa.types.is_integer(t) else "str"

    def fingerprint(self) -> dict[str, Any]:
        """What identifies this input without reading it: kind, shape, dtype, columns,
        file names and sizes, and a digest of all of them."""
        info: dict[str, Any] = {
            "path": self.path,
            "kind": self.kind,
            "shape": [self.n_rows, self.d],
            "dtype": self.dtype,
        }
        if self.kind == "parquet":
            info["columns"] = list(self.columns)
            info["files"] = [f[len(self.path):].lstrip("/") or f.rsplit("/", 1)[-1]
                             for f in self.files]
            info["row_groups"] = len(self.row_groups)
        info["bytes"] = sum(self.sizes)
        blob = json.dumps({k: v for k, v in info.items() if k != "path"}, sort_keys=True)
        info["digest"] = hashlib.sha256(blob.encode()).hexdigest()[:16]
        return info

    def describe(self) -> str:
        """One line: path, format, shape, dtype (and Parquet layout)."""
        extra = ""
        if self.kind == "parquet":
            extra = (f", {len(self.files)} file(s), {len(self.row_groups)} row group(s), "
                     f"{self.layout} column(s) {_short_list(self.columns)}")
        return f"{self.path} [{self.kind}] {self.n_rows} x {self.d} {self.dtype}{extra}"


def _short_list(names: tuple[str, ...]) -> str:
    if len(names) <= 4:
        return ", ".join(names)
    return f"{names[0]}, {names[1]}, ..., {names[-1]} ({len(names)} columns)"


# ---------------------------------------------------------------------------------------
# opening


def open_source(path: str | os.PathLike[str], columns: str | list[str] | None = None,
                id_column: str | None = None) -> Source:
    """Describe the source at ``path`` from its metadata; reads no vectors.

    Parameters
    ----------
    path : str or path-like
        A ``.npy`` file, a Zarr v3 array (or a group holding exactly one array), or a
        Parquet file or directory of Parquet files (searched recursively, sorted by path).
    columns : str or list of str, optional
        Parquet only: one list/fixed-size-list column, or several numeric columns
        (comma-separated in a string; shell-style globs such as ``f*`` expand in schema
        order). Default: the only list column, else every numeric column but the id column.
    id_column : str, optional
        Parquet only: an integer or string column carried beside the sketches.

    Returns
    -------
    Source
    """
    spath = str(path)
    fs, inner = filesystem(spath)
    try:
        if not fs.exists(inner):
            raise InputError(f"{spath}: no such file or directory")
    except (OSError, ValueError) as e:
        raise InputError(f"{spath}: cannot be reached ({e})") from e
    if isinstance(columns, str):
        columns = [c.strip() for c in columns.split(",") if c.strip()]
    try:
        if fs.isfile(inner) and inner.endswith(".npy"):
            src = _open_npy_source(spath, fs, inner)
        elif fs.isdir(inner) and fs.exists(f"{inner}/zarr.json"):
            from .zarr_in import open_zarr_source

            src = open_zarr_source(spath, fs, inner)
        elif fs.isdir(inner) or _is_parquet_file(fs, inner):
            from .parquet_in import open_parquet_source

            src = open_parquet_source(spath, columns, id_column)
        else:
            raise InputError(
                f"{spath}: not a .npy file, a Zarr v3 array or a Parquet file/directory"
            )
    except PermissionError as e:
        raise InputError(f"{spath}: cannot be read ({e.strerror})") from e
    if (columns or id_column) and src.kind != "parquet":
        raise InputError(f"{spath}: columns were given but this is a {src.kind} source; "
                         "columns and id columns are for Parquet sources")
    if src.n_rows == 0:
        raise InputError(f"{spath}: the source is empty (0 rows)")
    if src.d == 0:
        raise InputError(f"{spath}: the vectors have dimension 0")
    return src


def _is_parquet_file(fs: Any, inner: str) -> bool:
    if not fs.isfile(inner):
        return False
    with fs.open(inner, "rb") as fh:
        return bool(fh.read(4) == b"PAR1")


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


def _open_npy_source(path: str, fs: Any, inner: str) -> Source:
    with fs.open(inner, "rb") as fh:
        shape, fortran, dtype, header = _npy_header(fh, path)
    if len(shape) != 2:
        raise InputError(f"{path}: expected a 2-D array (rows x d), got shape {shape}")
    _check_numeric(dtype, path)
    size = int(fs.size(inner))
    need = header + int(np.prod(shape)) * dtype.itemsize
    if size < need:
        raise InputError(f"{path}: not a readable .npy array (truncated: {size} bytes, the "
                         f"header announces {need})")
    if fortran and is_url(path):
        raise InputError(f"{path}: a Fortran-ordered .npy cannot be read by rows from an "
                         "object store; save it in C order (np.ascontiguousarray)")
    return Source(path, "npy", int(shape[0]), int(shape[1]), str(dtype), sizes=(size,),
                  header_bytes=header)


def _read_npy_rows(src: Source, start: int, stop: int) -> np.ndarray:
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


def _check_numeric(dtype: np.dtype[Any], where: str) -> None:
    try:
        working_dtype(dtype)
    except InputError as e:
        raise InputError(f"{where}: {e}; ddrp needs numeric vectors") from e


def read_valid(src: Source, start: int, stop: int, where: str, skip: bool,
               check: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Rows ``start:stop``, the in-block indices of invalid ones (NaN, inf, null, wrong
    length) — an error naming the row, or with ``skip`` an index list (the rows are NaN) —
    and the block's float64 column sums when every row is valid (else None).

    ``check=False`` (without ``skip``) leaves NaN and inf to the caller and returns no sums:
    ``project.project_block`` finds them afterwards, through the non-finite sketches they
    make, and raises the same error; this saves a pass over the block.
    """
    block = src.read_rows(start, stop, "nan" if skip else "error")
    none = np.zeros(0, dtype=np.int64)
    if not skip:
        return block, none, check_finite(block, where, start) if check else None
    colsum = np.asarray(np.sum(block, axis=0, dtype=np.float64))
    if np.isfinite(colsum).all():
        return block, none, colsum
    return block, np.flatnonzero(~np.isfinite(block).all(axis=1)), None
