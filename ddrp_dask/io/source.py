"""The ``Source`` base: a lazily read source of vectors that knows no format.

A ``Source`` is a small frozen description (path, shape, dtype, and what its reader needs)
that pickles cheaply into Dask tasks: every task opens the file itself, so workers read the
data directly and the client never holds it. Each format's reader subclasses it
(``npy_reader``, ``zarr_reader``, ``parquet_reader``); ``registry.open_source`` alone knows
them all, as xarray's ``backends/plugins.py`` does.

The *working dtype* of a source is float32 for float16/float32 and small integers, float64
for float64 and wide integers (which float32 cannot hold exactly).
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from ..errors import InputError
from ..maths.model import SideMap
from ..maths.project import check_finite, project_pieces, sketch_valid
from .common import working_dtype

__all__ = ["Source", "read_valid", "sketch_rows"]


@dataclass(frozen=True)
class Source:
    """A lazily read source of ``n_rows`` vectors of dimension ``d``.

    Parameters
    ----------
    path : str
        What the user named (file, directory or URL).
    n_rows, d : int
    dtype : str
        The stored dtype (for Parquet, of the vector values).
    sizes : tuple of int
        Bytes on disk of the source's files (provenance only).
    id_column : str or None
        A column of ids carried beside the sketches (Parquet only).
    token : str
        New at every opening: names this opening's decoded chunks (``io.chunk_cache``).
    """

    #: The format's name, as recorded in fingerprints and plans.
    kind: ClassVar[str] = ""

    path: str
    n_rows: int
    d: int
    dtype: str
    sizes: tuple[int, ...] = field(default=(), compare=False)
    id_column: str | None = None
    token: str = field(default_factory=lambda: uuid.uuid4().hex, compare=False, repr=False)

    @property
    def working_dtype(self) -> np.dtype[Any]:
        """The dtype blocks are returned in (see module docstring)."""
        return working_dtype(np.dtype(self.dtype))

    @property
    def nbytes(self) -> int:
        """Bytes of its values as the passes read them (the default scheduler's measure of a
        job: ``graph.compute.default_scheduler``)."""
        return self.n_rows * self.d * self.working_dtype.itemsize

    def read_rows(self, start: int, stop: int, invalid: str = "error") -> np.ndarray:
        """Rows ``start:stop`` as a C-contiguous ``(stop - start, d)`` array of the working
        dtype. Parquet nulls and lists of the wrong length raise ``InvalidValueError`` naming
        the row, or with ``invalid="nan"`` come back as rows of NaN (to be skipped)."""
        if not 0 <= start <= stop <= self.n_rows:
            raise IndexError(f"rows {start}:{stop} outside 0:{self.n_rows} of {self.path}")
        block = self._read(start, stop, invalid == "nan")
        return np.ascontiguousarray(block, dtype=self.working_dtype)

    def _read(self, start: int, stop: int, as_nan: bool) -> np.ndarray:
        """The format's read of rows ``start:stop`` (any dtype; cast by ``read_rows``)."""
        raise NotImplementedError

    def read_pieces(self, start: int, stop: int) -> list[np.ndarray]:
        """Rows ``start:stop`` as C-contiguous arrays of the working dtype, in row order,
        whose concatenation is ``read_rows(start, stop)``: a format that decodes chunks
        shared with other blocks hands out read-only views of them instead of copying them
        into one block (for a consumer that works row tile by row tile, like pass 2). Nulls
        raise as in ``read_rows``."""
        if not 0 <= start <= stop <= self.n_rows:
            raise IndexError(f"rows {start}:{stop} outside 0:{self.n_rows} of {self.path}")
        return self._read_pieces(start, stop)

    def _read_pieces(self, start: int, stop: int) -> list[np.ndarray]:
        """The format's pieces of rows ``start:stop`` (one block unless it has better)."""
        return [self.read_rows(start, stop)]

    def output_files(self, block_rows: int) -> list[tuple[str, list[tuple[int, int]]]]:
        """``(relative file, row ranges)`` of a Parquet output mirroring this source: one
        ``part-NNNNN.parquet`` per canonical block (Parquet sources mirror their files)."""
        n = self.n_rows
        return [(f"part-{i:05d}.parquet", [(s, min(s + block_rows, n))])
                for i, s in enumerate(range(0, n, block_rows))]

    def read_ids(self, start: int, stop: int) -> np.ndarray:
        """The id column's values for rows ``start:stop``: int64, or str for text ids."""
        if self.id_column is None:
            raise InputError(f"{self.path}: no id column was chosen")
        ids = self.read_column(self.id_column, start, stop, "id column")
        return ids.astype(str) if ids.dtype.kind in "OUS" else ids.astype(np.int64)

    def read_column(self, name: str, start: int, stop: int, what: str = "column") -> np.ndarray:
        """Another column's values for rows ``start:stop`` (ids, labels): Parquet only."""
        raise InputError(f"{self.path}: {what} {name!r} needs a Parquet source")

    @property
    def id_dtype(self) -> str | None:
        """``"int64"`` or ``"str"`` for the id column, None without one."""
        return None

    def fingerprint(self) -> dict[str, Any]:
        """What identifies this input without reading it: kind, shape, dtype (and the
        format's own facts), bytes, and a digest of all of them but the path."""
        info: dict[str, Any] = {
            "path": self.path,
            "kind": self.kind,
            "shape": [self.n_rows, self.d],
            "dtype": self.dtype,
            **self._fingerprint_extra(),
        }
        info["bytes"] = sum(self.sizes)
        blob = json.dumps({k: v for k, v in info.items() if k != "path"}, sort_keys=True)
        info["digest"] = hashlib.sha256(blob.encode()).hexdigest()[:16]
        return info

    def _fingerprint_extra(self) -> dict[str, Any]:
        return {}

    def describe(self) -> str:
        """One line: path, format, shape, dtype (and the format's layout)."""
        return (f"{self.path} [{self.kind}] {self.n_rows} x {self.d} {self.dtype}"
                f"{self._describe_extra()}")

    def _describe_extra(self) -> str:
        return ""



def read_valid(src: Source, start: int, stop: int, where: str, skip: bool,
               check: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Rows ``start:stop``, the in-block indices of invalid ones (NaN, inf, null, wrong
    length) — an error naming the row, or with ``skip`` an index list (the rows are NaN) —
    and the block's float64 column sums when every row is valid (else None).

    ``check=False`` (without ``skip``) leaves NaN and inf to the caller and returns no sums:
    ``maths.project.project_block`` finds them afterwards, through the non-finite sketches
    they make, and raises the same error; this saves a pass over the block.
    """
    block = src.read_rows(start, stop, "nan" if skip else "error")
    none = np.zeros(0, dtype=np.int64)
    if not skip:
        return block, none, check_finite(block, where, start) if check else None
    colsum = np.asarray(np.sum(block, axis=0, dtype=np.float64))
    if np.isfinite(colsum).all():
        return block, none, colsum
    return block, np.flatnonzero(~np.isfinite(block).all(axis=1)), None


def sketch_rows(src: Source, start: int, stop: int, side_map: SideMap, where: str,
                skip: bool) -> tuple[np.ndarray, np.ndarray]:
    """Pass 2's sketches of rows ``start:stop`` (float32, NaN rows for skipped ones) and the
    in-block indices of the skipped rows. Without ``skip`` the rows are read as pieces
    (``Source.read_pieces``) and NaN or inf is found through the sketches it makes."""
    if skip:
        rows, bad, _ = read_valid(src, start, stop, where, skip, check=False)
        return sketch_valid(rows, bad, side_map, where, start,
                            overwrite_input=rows.flags.writeable), bad
    return (project_pieces(src.read_pieces(start, stop), side_map, where, start),
            np.zeros(0, dtype=np.int64))
