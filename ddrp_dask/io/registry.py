"""The one module that knows every format: ``open_source`` picks the reader of a path.

Readers import only ``source`` and ``common``; nothing but this registry imports a reader for
dispatch (xarray's ``backends/plugins.py`` pattern), so imports run one way.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

from ..errors import InputError
from ..maths.quantize import Layout, layout_of
from .codes import LAYOUT_KEY, CodesSource, parts
from .common import filesystem, qualify
from .npy_reader import open_npy_source
from .parquet_reader import is_parquet_file, open_parquet_source
from .source import Source
from .zarr_meta import zarr_format_at
from .zarr_reader import open_zarr_source

__all__ = ["open_source"]


def open_source(path: str | os.PathLike[str], columns: str | list[str] | None = None,
                id_column: str | None = None, strict_chunks: bool = False) -> Source:
    """Describe the source at ``path`` from its metadata; reads no vectors.

    Parameters
    ----------
    path : str or path-like
        A ``.npy`` file; a Zarr array of format 3 (``zarr.json``) or 2 (``.zarray``), or a
        group holding one array, or one 2-D array beside 1-D ones (an xarray variable and its
        coordinates; name another as ``GROUP/NAME``); or a Parquet file or directory of
        Parquet files (searched recursively, sorted by path).
    columns : str or list of str, optional
        Parquet only: one list/fixed-size-list column, or several numeric columns
        (comma-separated in a string; shell-style globs such as ``f*`` expand in schema
        order). Default: the only list column, else every numeric column but the id column.
    id_column : str, optional
        Parquet only: an integer or string column carried beside the sketches.
    strict_chunks : bool, default=False
        Zarr only: refuse an array with absent chunks, which by default read as its fill
        value (the Zarr specification; zarr-python does not write all-fill chunks).

    Returns
    -------
    Source
    """
    spath = str(path)
    fs, inner = filesystem(spath)
    try:
        exists = fs.exists(inner)
    except (OSError, ValueError) as e:
        raise InputError(f"{spath}: cannot be reached ({e})") from e
    if not exists:
        raise InputError(f"{spath}: no such file or directory")
    if isinstance(columns, str):
        columns = [c.strip() for c in columns.split(",") if c.strip()]
    try:
        if fs.isfile(inner) and inner.endswith(".npy"):
            src: Source = open_npy_source(spath, fs, inner)
        elif fs.isdir(inner) and zarr_format_at(fs, inner) is not None:
            layout = _zarr_layout(fs, inner)
            src = open_zarr_source(spath, fs, inner, strict_chunks) if layout is None else \
                _zarr_codes(spath, layout)
        elif fs.isdir(inner) or is_parquet_file(fs, inner):
            src = _open_parquet(spath, columns, id_column)
        else:
            raise InputError(
                f"{spath}: not a .npy file, a Zarr array (zarr.json, .zarray, .zgroup) or a "
                "Parquet file/directory"
            )
    except PermissionError as e:
        raise InputError(f"{spath}: cannot be read ({e.strerror})") from e
    if (columns or id_column) and src.kind not in ("parquet", "codes"):
        raise InputError(f"{spath}: columns were given but this is a {src.kind} source; "
                         "columns and id columns are for Parquet sources")
    if src.n_rows == 0:
        raise InputError(f"{spath}: the source is empty (0 rows)")
    if src.d == 0:
        raise InputError(f"{spath}: the vectors have dimension 0")
    return src


# ---------------------------------------------------------------------------------------
# quantized sketches (``io.codes``): decoded from their codes and scales


def _codes_source(path: str, layout: Layout, pieces: Sequence[tuple[Source, Source]],
                  id_column: str | None = None) -> CodesSource:
    for part, (_, scales) in zip(parts(layout), pieces, strict=True):
        if scales.dtype != part.scale_dtype:  # float32 scales: before the scale codes
            raise InputError(f"{path}: the scales of these {layout.name} codes are "
                             f"{scales.dtype}, not the {part.scale_dtype} scale codes this "
                             "ddrp stores (written by an earlier version?); sketch it again")
    first = pieces[0][0]
    return CodesSource(path, first.n_rows, layout.k, "float32", first.sizes, id_column,
                       layout_json=json.dumps({"name": layout.name, "k": layout.k,
                                               "head": layout.head}),
                       pieces=tuple(pieces))


def _zarr_layout(fs: Any, inner: str) -> Layout | None:
    """The ``ddrp_layout`` attribute of a Zarr array's metadata, if any."""
    try:
        meta = json.loads(fs.cat_file(f"{inner.rstrip('/')}/zarr.json"))
    except (OSError, ValueError):
        return None
    attrs = meta.get("attributes") if isinstance(meta, dict) else None
    return layout_of(attrs.get(LAYOUT_KEY)) if isinstance(attrs, dict) else None


def _zarr_codes(path: str, layout: Layout) -> CodesSource:
    base = path.rstrip("/")
    pieces = []
    for part in parts(layout):
        found = []
        for name in (base + part.suffix, f"{base}{part.suffix}_scale"):
            pfs, pinner = filesystem(name)
            found.append(open_zarr_source(name, pfs, pinner))
        pieces.append((found[0], found[1]))
    return _codes_source(path, layout, pieces)


def _parquet_layout(path: str) -> Layout | None:
    """The ``ddrp_layout`` key-value metadata of a Parquet dataset's first file (in the
    reader's order: sorted, hidden names skipped), if any."""
    from .parquet_reader import open_parquet_file

    fs, inner = filesystem(path)
    root = inner.rstrip("/")
    if fs.isfile(inner):
        first = path
    else:
        names = [f for f in sorted(fs.find(root)) if not any(
            part.startswith((".", "_")) for part in f[len(root):].lstrip("/").split("/"))]
        if not names:
            return None
        first = qualify(fs, names[0], path)
    raw = (open_parquet_file(first).schema_arrow.metadata or {}).get(LAYOUT_KEY.encode())
    return layout_of(json.loads(raw)) if raw else None


def _open_parquet(path: str, columns: list[str] | None, id_column: str | None) -> Source:
    """A Parquet source; a dataset of quantized ddrp sketches (no columns given) decodes."""
    if columns:
        return open_parquet_source(path, columns, id_column)
    layout = _parquet_layout(path)
    if layout is None or layout.name == "float32":
        return open_parquet_source(path, columns, id_column)
    pieces = [(open_parquet_source(path, [f"sketch{part.suffix}"], id_column),
               open_parquet_source(path, [f"scale{part.suffix}"], id_column))
              for part in parts(layout)]
    return _codes_source(path, layout, pieces, id_column)
