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

import contextlib
import hashlib
import json
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from ..errors import DdrpError, InputError, InvalidValueError
from .common import working_dtype

__all__ = ["Given", "Source", "locating", "split_given"]

#: Rows decoded elsewhere, handed to a read: ``(first row, rows)`` pieces in row order. On a
#: cluster a pass decodes a chunk shared by two blocks once and gives each block its part
#: (``graph.reads.shared_reads``); the read decodes only the rest.
Given = Sequence[tuple[int, np.ndarray]]


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
        New at every opening: names this opening's decoded chunks (``io.chunk_cache``),
        and keeps the task keys of two openings of one path apart.
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

    def read_rows(self, start: int, stop: int, invalid: str = "error",
                  given: Given = ()) -> np.ndarray:
        """Rows ``start:stop`` as a C-contiguous ``(stop - start, d)`` array of the working
        dtype. Parquet nulls and lists of the wrong length raise ``InvalidValueError`` naming
        the row, or with ``invalid="nan"`` come back as rows of NaN (to be skipped). Rows in
        ``given`` (read with the same ``invalid``) are taken from it, not decoded."""
        self._check_range(start, stop)
        with locating(self):
            parts = [np.asarray(self._read(a, b, invalid == "nan") if piece is None else piece,
                                dtype=self.working_dtype)
                     for a, b, piece in split_given(start, stop, given)]
        block = parts[0] if len(parts) == 1 else np.concatenate(parts)
        return np.ascontiguousarray(block, dtype=self.working_dtype)

    def _read(self, start: int, stop: int, as_nan: bool) -> np.ndarray:
        """The format's read of rows ``start:stop`` (any dtype; cast by ``read_rows``)."""
        raise NotImplementedError

    def read_pieces(self, start: int, stop: int, given: Given = ()) -> list[np.ndarray]:
        """Rows ``start:stop`` as C-contiguous arrays of the working dtype, in row order,
        whose concatenation is ``read_rows(start, stop, given=given)``, for a consumer that
        works row tile by row tile (pass 2): the ``given`` pieces as they are, and a format
        that decodes chunk by chunk hands out each chunk without copying it into one block.
        Nulls raise as in ``read_rows``."""
        self._check_range(start, stop)
        out: list[np.ndarray] = []
        with locating(self):
            for a, b, piece in split_given(start, stop, given):
                out += self._read_pieces(a, b) if piece is None else [piece]
        return out

    def _read_pieces(self, start: int, stop: int) -> list[np.ndarray]:
        """The format's pieces of rows ``start:stop`` (one block unless it has better)."""
        return [self.read_rows(start, stop)]

    def chunk_spans(self, block_rows: int) -> list[tuple[int, int]]:
        """The row spans ``(start, stop)`` of the chunks a read decodes whole (Zarr chunks,
        Parquet row groups), in row order: on a cluster a pass decodes each one that two of
        its blocks share once, in a task of its own. Empty for a format that reads any rows
        exactly (.npy), and without chunks too large to hold beside ``block_rows``-row
        blocks."""
        return []

    def _check_range(self, start: int, stop: int) -> None:
        if not 0 <= start <= stop <= self.n_rows:
            raise IndexError(f"rows {start}:{stop} outside 0:{self.n_rows} of {self.path}")

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

    def output_key(self) -> str:
        """The column a Parquet output mirroring this source keys its rows by: the id column,
        else ``row`` (the global row index)."""
        return self.id_column or "row"

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

    def locate(self, row: int) -> str:
        """Where global row ``row`` lies in the source's files, beyond its path and row
        (the file, row group and row of a Parquet dataset; a Zarr array's chunk): what an
        error about the row says. Nothing for a single file read by row (.npy)."""
        return ""

    def located(self, err: InvalidValueError) -> InvalidValueError:
        """``err`` (about one global row) saying where that row lies (``locate``, unless the
        message says it) and, with an id column, its id: one message naming file, row
        group, row and id, before the advice (after the first ``; ``) if there is one."""
        if err.row is None or err.located:
            return err
        place = [p for p in ("" if err.placed else self.locate(err.row),
                             self._id_of(err.row)) if p]
        msg = str(err)
        if place:
            head, sep, advice = msg.partition("; ")
            msg = f"{head}{', ' if err.placed else ' at '}{', '.join(place)}{sep}{advice}"
        new = InvalidValueError(msg, row=err.row, placed=True)
        new.located = True
        return new

    def _id_of(self, row: int) -> str:
        if self.id_column is None:
            return ""
        try:
            value = self.read_ids(row, row + 1)[0].item()
        except DdrpError:  # an id that cannot be read is not this error's subject
            return ""
        return f"id {self.id_column}={value!r}"

    def notes(self) -> list[str]:
        """Lines the user should read before trusting the rows (e.g. absent Zarr chunks read
        as the fill value), said by the plan and after the job; none by default."""
        return []

    def describe(self) -> str:
        """One line: path, format, shape, dtype (and the format's layout)."""
        return (f"{self.path} [{self.kind}] {self.n_rows} x {self.d} {self.dtype}"
                f"{self._describe_extra()}")

    def _describe_extra(self) -> str:
        return ""


def split_given(start: int, stop: int, given: Given
                ) -> list[tuple[int, int, np.ndarray | None]]:
    """Rows ``start:stop`` as ``(start, stop, piece)`` segments in row order: the ``given``
    pieces, and None for the rows between them (to be read).

    >>> [(a, b, p is None) for a, b, p in split_given(0, 10, [(4, np.zeros((3, 1)))])]
    [(0, 4, True), (4, 7, False), (7, 10, True)]
    """
    out: list[tuple[int, int, np.ndarray | None]] = []
    at = start
    for first, piece in sorted(given, key=lambda g: g[0]):
        end = first + len(piece)
        if not at <= first <= end <= stop:
            raise ValueError(f"a given piece of rows {first}:{end} is not within rows "
                             f"{at}:{stop} in order")
        if first > at:
            out.append((at, first, None))
        out.append((first, end, piece))
        at = end
    if at < stop or not out:
        out.append((at, stop, None))
    return out


@contextlib.contextmanager
def locating(src: Source) -> Iterator[None]:
    """An ``InvalidValueError`` about a row of ``src`` raised inside, saying where the row
    lies in the source's files and its id (``Source.located``)."""
    try:
        yield
    except InvalidValueError as e:
        new = src.located(e)
        if new is e:
            raise
        raise new from e
