"""Pass 2 into Parquet (``--format parquet``): a dataset that mirrors the input's files.

Each input Parquet file ``REL`` (hive partition directories included) becomes ``OUT/REL``
with one row group per input row group and two columns: the id column (or ``row``, the
global row index, when no id column was chosen) and ``sketch`` as
``fixed_size_list<float32>[K]``, ready to join back. Inputs that are not Parquet give one
file per canonical block, ``part-00000.parquet``, .... One task writes one file, first under a
temporary name then renamed, so a file that exists is complete and ``--resume`` skips it.
``OUT/_ddrp.json`` carries ``complete`` and the provenance, like a Zarr output's attributes;
pyarrow and ddrp ignore files whose names start with ``_``.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from ._threads import one_blas_thread
from .io import Source, filesystem, read_valid
from .model import SideMap
from .project import sketch_valid

__all__ = ["MARKER", "file_jobs", "read_marker", "write_file", "write_marker"]

MARKER = "_ddrp.json"


Jobs = list[tuple[str, list[tuple[int, int]]]]


def file_jobs(src: Source, out_dir: str, block_rows: int) -> Jobs:
    """(output file, row ranges written into it) for every file of the output."""
    if src.kind != "parquet":
        n = src.n_rows
        return [(f"{out_dir}/part-{i:05d}.parquet", [(s, min(s + block_rows, n))])
                for i, s in enumerate(range(0, n, block_rows))]
    jobs: dict[int, list[tuple[int, int]]] = {}
    for fi, _, start, nr in src.row_groups:
        jobs.setdefault(fi, []).append((start, start + nr))
    root = src.path.rstrip("/")
    out = []
    for fi, ranges in jobs.items():
        f = src.files[fi]
        rel = f[len(root):].lstrip("/") if f != src.path else f.rsplit("/", 1)[-1]
        out.append((f"{out_dir}/{rel}", ranges))
    return out


def write_file(src: Source, ranges: list[tuple[int, int]], side: str, side_map: SideMap,
               target: str, k: int, skip: bool = False) -> list[int]:
    """Sketch ``ranges`` of ``src`` into the Parquet file ``target`` (written under a
    temporary name, then renamed); with ``skip``, invalid rows are left out. Returns the
    skipped rows (also kept in the file's metadata, for a resumed job)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    fs, inner = filesystem(target)
    parent = inner.rsplit("/", 1)[0]
    fs.makedirs(parent, exist_ok=True)
    tmp = f"{inner}.partial"
    key = src.id_column or "row"
    skipped: list[int] = []
    where = f"{side} input {src.path}"
    writer = None
    with one_blas_thread(), fs.open(tmp, "wb") as fh:
        for start, stop in ranges:  # one row group at a time: memory bounded by one
            block, bad, _ = read_valid(src, start, stop, where, skip, check=False)
            keep = np.setdiff1d(np.arange(stop - start), bad)
            sketch = sketch_valid(block, bad, side_map, where, start)[keep]
            keys = src.read_ids(start, stop) if src.id_column else np.arange(start, stop)
            table = pa.table({key: keys[keep], "sketch": pa.FixedSizeListArray.from_arrays(
                pa.array(sketch.ravel()), k)})
            if writer is None:
                writer = pq.ParquetWriter(fh, table.schema, use_dictionary=False,
                                          write_page_checksum=True)
            writer.write_table(table)
            skipped += (start + bad).tolist()
        assert writer is not None
        writer.add_key_value_metadata({"ddrp_skipped_rows": json.dumps(skipped)})
        writer.close()
    fs.mv(tmp, inner)
    return skipped


def skipped_of(target: str) -> list[int]:
    """The rows a finished output file skipped (from its metadata)."""
    import pyarrow.parquet as pq

    fs, inner = filesystem(target)
    with fs.open(inner, "rb") as fh:
        meta = pq.ParquetFile(fh).metadata.metadata or {}
    return list(json.loads(meta.get(b"ddrp_skipped_rows", b"[]")))


def write_marker(out: str, complete: bool, facts: dict[str, Any]) -> None:
    """Write ``OUT/_ddrp.json``: the completion flag and the provenance."""
    fs, inner = filesystem(out)
    fs.makedirs(inner, exist_ok=True)
    fs.pipe_file(f"{inner}/{MARKER}", json.dumps({"complete": complete, "ddrp": facts},
                                                 indent=1).encode())


def read_marker(out: str) -> dict[str, Any] | None:
    """The marker's content, or None when there is none."""
    fs, inner = filesystem(out)
    try:
        doc = json.loads(fs.cat_file(f"{inner.rstrip('/')}/{MARKER}"))
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def exists(target: str) -> bool:
    """Whether an output file is already complete (it exists under its final name)."""
    fs, inner = filesystem(target)
    return bool(fs.exists(inner))
