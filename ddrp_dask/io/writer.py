"""The one writer of outputs: Zarr chunks of sketches, products and scores, and the Parquet
files of ``--format parquet``.

Parquet (``--format parquet``) writes a dataset that mirrors the input's files.

Each input Parquet file ``REL`` (hive partition directories included) becomes ``OUT/REL``
with one row group per input row group and two columns: the id column (or ``row``, the
global row index, when no id column was chosen) and ``sketch`` as
``fixed_size_list<float32>[K]``, ready to join back. Inputs that are not Parquet give one
file per canonical block, ``part-00000.parquet``, .... One task writes one file, first under a
hidden temporary name (``.NAME.partial``, which pyarrow and ddrp ignore) then renamed, so a
file that exists is complete and ``--resume`` skips it. ``OUT/_ddrp.json`` carries
``complete`` and the provenance, like a Zarr output's attributes; pyarrow and ddrp ignore
files whose names start with ``_``. A local dataset is written in a hidden staging directory
and appears as ``OUT`` only when complete (``io.lifecycle.begin``/``commit``).
"""

from __future__ import annotations

import contextlib
import json
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..maths.quantize import Layout, layout_facts
from .codes import LAYOUT_KEY, parquet_columns
from .common import filesystem
from .source import Source

__all__ = ["ArraySpec", "TopLayout", "consolidate", "create_array", "file_jobs",
           "float_compressors", "ids_at", "ids_kind", "skipped_of", "write_file",
           "write_ids_at", "write_npy", "write_rows", "write_table"]


Jobs = list[tuple[str, list[tuple[int, int]]]]


def file_jobs(src: Source, out_dir: str, block_rows: int) -> Jobs:
    """(output file, row ranges written into it) for every file of the output."""
    return [(f"{out_dir.rstrip('/')}/{rel}", ranges)
            for rel, ranges in src.output_files(block_rows)]


#: Sketched rows handed to ``write_file``: ``(start, stop, sketch, bad)`` per row group.
Blocks = Iterable[tuple[int, int, np.ndarray, np.ndarray]]


def write_file(src: Source, side: str, blocks: Blocks, target: str, k: int,
               storage: tuple[Layout, int] | None = None) -> list[int]:
    """Write the sketches of ``src``'s rows (side ``side``) into the Parquet file ``target``
    (under a temporary name, then renamed): ``blocks`` yields ``(start, stop, sketch, bad)``
    for each row group in turn (``bad``: in-block indices of skipped rows, left out), so
    memory holds one row group. ``storage``: a quantized layout and the model's seed
    (``io.codes.parquet_columns``). Returns the skipped rows (also kept in the file's
    metadata, for a resumed job)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    key = src.output_key()
    skipped: list[int] = []
    writer = None
    layout, seed = storage or (Layout.of("float32", k), 0)
    with _whole_file(target) as fh:
        for start, stop, sketch, bad in blocks:
            keep = np.setdiff1d(np.arange(stop - start), bad)
            keys = src.read_ids(start, stop) if key == src.id_column else np.arange(start, stop)
            table = pa.table({key: keys[keep], **parquet_columns(
                sketch[keep], layout, seed, side, start + keep)})
            if writer is None:
                writer = pq.ParquetWriter(fh, table.schema, use_dictionary=False,
                                          write_page_checksum=True)
            writer.write_table(table)
            skipped += (start + bad).tolist()
        assert writer is not None
        meta = {"ddrp_skipped_rows": json.dumps(skipped)}
        if layout.name != "float32":
            meta[LAYOUT_KEY] = json.dumps(layout_facts(layout))
        writer.add_key_value_metadata(meta)
        writer.close()
    return skipped


def skipped_of(target: str) -> list[int]:
    """The rows a finished output file skipped (from its metadata)."""
    import pyarrow.parquet as pq

    fs, inner = filesystem(target)
    with fs.open(inner, "rb") as fh:
        meta = pq.ParquetFile(fh).metadata.metadata or {}
    return list(json.loads(meta.get(b"ddrp_skipped_rows", b"[]")))


def float_compressors() -> Any:
    """The codec of float32 outputs (sketches, products, scores): zstd level 1. Their values
    are noise-like, so every level saves about the same and level 1 encodes several times
    faster than zarr's default level 3 (``benchmarks/RESULTS.md``)."""
    from zarr.codecs import ZstdCodec

    return ZstdCodec(level=1)


@dataclass(frozen=True)
class ArraySpec:
    """One array of a Zarr output, as created empty before its chunks are written.

    Attributes
    ----------
    name : str
        Its name in the output group.
    shape, chunks : tuple of int
        Its shape and chunk shape (a chunk is what one task writes).
    dtype : str
        A numpy dtype name, or ``"str"`` for variable-length strings (ids).
    dims : tuple of str
        Its dimension names: arrays sharing a name share that axis, so ``xarray.open_zarr``
        opens the whole group as one dataset (``x_row``, ``w_row``, ``component``, ...).
    codec : {"float", "default", "none"}
        ``"float"``: ``float_compressors`` (noise-like floats); ``"default"``: zarr's;
        ``"none"``: uncompressed.
    fill_value : optional
        zarr's default when None.
    """

    name: str
    shape: tuple[int, ...]
    dtype: str
    chunks: tuple[int, ...]
    dims: tuple[str, ...]
    codec: str = "default"
    fill_value: Any = None


def create_array(group: Any, spec: ArraySpec, overwrite: bool = False) -> Any:
    """Create the empty array ``spec`` in the Zarr group ``group``; returns it."""
    kwargs: dict[str, Any] = {}
    if spec.codec == "float":
        kwargs["compressors"] = float_compressors()
    elif spec.codec == "none":
        kwargs["compressors"] = None
    if spec.fill_value is not None:
        kwargs["fill_value"] = spec.fill_value
    return group.create_array(spec.name, shape=spec.shape,
                              dtype=str if spec.dtype == "str" else spec.dtype,
                              chunks=tuple(max(c, 1) for c in spec.chunks),
                              dimension_names=spec.dims, overwrite=overwrite, **kwargs)


def consolidate(group: Any) -> None:
    """Write the consolidated metadata of the finished Zarr group ``group`` (its every
    node's metadata in its ``zarr.json``), which xarray reads in one request. Called last,
    once nothing else is written in the group: the consolidated copy is a snapshot.
    zarr-python warns that Zarr format 3 does not yet specify it; the group stays readable
    by any Zarr v3 reader, which ignores it."""
    import zarr

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning,
                                message=".*[Cc]onsolidated metadata.*")
        zarr.consolidate_metadata(group.store, path=group.path)


def write_rows(path: str, rows: slice | tuple[slice, ...], values: np.ndarray) -> None:
    """Write ``values`` to the region ``rows`` of the Zarr array at ``path`` (a task's chunk).
    Every chunk is stored, even one equal to the fill value: zarr would skip it by default,
    and ddrp refuses a Zarr source with missing chunks (e.g. sketches read by ``matmul``)."""
    import zarr

    arr = zarr.open_array(path, mode="r+").with_config({"write_empty_chunks": True})
    arr[rows] = values


def ids_kind(path: str) -> tuple[int, str]:
    """Rows and kind (``"int64"`` or ``"str"``) of an ids array written with sketches."""
    import zarr

    arr = zarr.open_array(path, mode="r")
    return int(arr.shape[0]), "int64" if np.dtype(arr.dtype).kind in "iu" else "str"


def ids_at(ids_path: str, idx: np.ndarray) -> np.ndarray:
    """The ids of the rows ``idx`` (any shape; −1: no row) of the ids array at ``ids_path``:
    −1 (integer ids) or "" (string ids) where ``idx`` is −1. Only the chunks of ``ids_path``
    holding wanted rows are read."""
    import zarr

    src = zarr.open_array(ids_path, mode="r")
    wanted, inverse = np.unique(idx[idx >= 0], return_inverse=True)
    found = np.asarray(src.get_orthogonal_selection(wanted)) if len(wanted) else \
        np.empty(0, dtype=src.dtype)
    integer = np.dtype(src.dtype).kind in "iu"
    out = np.full(idx.shape, -1, dtype=np.int64) if integer else np.full(idx.shape, "",
                                                                          dtype=object)
    out[idx >= 0] = found[inverse.ravel()] if len(wanted) else found
    return out if integer else out.astype(str)


def write_ids_at(path: str, rows: slice, ids_path: str, idx: np.ndarray) -> None:
    """Write ``ids_at(ids_path, idx)`` to the region ``rows`` of the Zarr array ``path``."""
    write_rows(path, rows, ids_at(ids_path, idx))


@dataclass(frozen=True)
class TopLayout:
    """How ``matmul --top`` writes its result: for every row of the side searched from
    (``per``, ``"x"`` or ``"w"``), the N best rows of the other side.

    Zarr (``fmt="zarr"``): arrays ``indices`` (rows of the other side, −1: none) and
    ``scores``, both (rows × N) along ``{per}_row`` and ``rank``; ``ids`` (the other side's
    ids of ``indices``) when ``to_ids`` is known; ``row_ids`` (the ids of the rows searched
    from, along ``{per}_row``) when ``from_ids`` is known. Parquet (``fmt="parquet"``): one
    file per block of rows searched from, ``part-00000.parquet``, ..., whose rows are
    (``{per}_row``, [``{per}_id``], ``rank`` from 1, ``{other}_row``, [``{other}_id``],
    ``score``), best first; entries without a valid estimate are left out.
    """

    out: str
    per: str
    fmt: str
    n_rows: int
    top: int
    block_rows: int
    from_ids: str | None = None
    to_ids: str | None = None

    @property
    def other(self) -> str:
        """The side whose rows are found."""
        return "w" if self.per == "x" else "x"

    def arrays(self) -> list[ArraySpec]:
        """The Zarr arrays (empty) of the result."""
        rows, n, dims = self.n_rows, self.top, (f"{self.per}_row", "rank")
        chunks = (min(self.block_rows, rows), n)
        specs = [ArraySpec("indices", (rows, n), "int64", chunks, dims),
                 ArraySpec("scores", (rows, n), "float32", chunks, dims, "float")]
        if self.to_ids is not None:
            specs.append(ArraySpec("ids", (rows, n), ids_kind(self.to_ids)[1], chunks, dims))
        if self.from_ids is not None:
            specs.append(ArraySpec("row_ids", (rows,), ids_kind(self.from_ids)[1],
                                   chunks[:1], dims[:1]))
        return specs

    def file(self, block: int) -> str:
        """The Parquet file of one block of rows."""
        return f"{self.out.rstrip('/')}/part-{block:05d}.parquet"

    def write(self, block: int, rows: tuple[int, int], idx: np.ndarray,
              val: np.ndarray) -> None:
        """Write one block of rows' result: ``idx``/``val`` (rows × N, best first)."""
        start, stop = rows
        if self.fmt == "zarr":
            write_rows(f"{self.out}/indices", slice(start, stop), idx)
            write_rows(f"{self.out}/scores", slice(start, stop), val.astype(np.float32))
            if self.to_ids is not None:
                write_ids_at(f"{self.out}/ids", slice(start, stop), self.to_ids, idx)
            if self.from_ids is not None:
                write_ids_at(f"{self.out}/row_ids", slice(start, stop), self.from_ids,
                             np.arange(start, stop))
            return
        keep = (idx >= 0).ravel()
        from_row = np.repeat(np.arange(start, stop, dtype=np.int64), idx.shape[1])[keep]
        to_row = idx.ravel()[keep]
        cols: dict[str, np.ndarray] = {f"{self.per}_row": from_row}
        if self.from_ids is not None:
            cols[f"{self.per}_id"] = ids_at(self.from_ids, from_row)
        cols["rank"] = np.tile(np.arange(1, idx.shape[1] + 1, dtype=np.int32),
                               stop - start)[keep]
        cols[f"{self.other}_row"] = to_row
        if self.to_ids is not None:
            cols[f"{self.other}_id"] = ids_at(self.to_ids, to_row)
        cols["score"] = val.astype(np.float32).ravel()[keep]
        write_table(self.file(block), cols)


@contextlib.contextmanager
def _whole_file(target: str) -> Iterator[Any]:
    """An open binary file that appears as ``target`` (a path or URL) only once written:
    it is written under the hidden name ``.NAME.partial`` beside it, then renamed, so a file
    that exists under its name is complete (readers and ``--resume`` rely on it)."""
    fs, inner = filesystem(target)
    parent, name = inner.rsplit("/", 1) if "/" in inner else (".", inner)
    fs.makedirs(parent, exist_ok=True)
    tmp = f"{parent}/.{name}.partial"
    with fs.open(tmp, "wb") as fh:
        yield fh
    fs.mv(tmp, inner)


def write_table(target: str, columns: dict[str, np.ndarray]) -> None:
    """Write ``columns`` as the Parquet file ``target`` (whole or not at all)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    with _whole_file(target) as fh:
        pq.write_table(pa.table(columns), fh, use_dictionary=False, write_page_checksum=True)


def write_npy(target: str, array: np.ndarray) -> None:
    """Write ``array`` as the .npy file ``target`` (whole or not at all; no pickles)."""
    with _whole_file(target) as fh:
        np.save(fh, array, allow_pickle=False)
