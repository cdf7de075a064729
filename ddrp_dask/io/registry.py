"""The one module that knows every format: ``open_source`` picks the reader of a path.

Readers import only ``source`` and ``common``; nothing but this registry imports a reader for
dispatch (xarray's ``backends/plugins.py`` pattern), so imports run one way.
"""

from __future__ import annotations

import os

from ..errors import InputError
from .common import filesystem
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
        if not fs.exists(inner):
            raise InputError(f"{spath}: no such file or directory")
    except (OSError, ValueError) as e:
        raise InputError(f"{spath}: cannot be reached ({e})") from e
    if isinstance(columns, str):
        columns = [c.strip() for c in columns.split(",") if c.strip()]
    try:
        if fs.isfile(inner) and inner.endswith(".npy"):
            src: Source = open_npy_source(spath, fs, inner)
        elif fs.isdir(inner) and zarr_format_at(fs, inner) is not None:
            src = open_zarr_source(spath, fs, inner, strict_chunks)
        elif fs.isdir(inner) or is_parquet_file(fs, inner):
            src = open_parquet_source(spath, columns, id_column)
        else:
            raise InputError(
                f"{spath}: not a .npy file, a Zarr array (zarr.json, .zarray, .zgroup) or a "
                "Parquet file/directory"
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
