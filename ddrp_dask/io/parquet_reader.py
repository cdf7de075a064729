"""Parquet sources: files of a dataset in row order, the vector columns, and blocks of rows
as numpy arrays (with nulls and ragged lists named, or turned into NaN rows to be skipped)."""

from __future__ import annotations

import bisect
import functools
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import InputError, InvalidValueError
from . import chunk_cache, decodes
from .common import filesystem, is_url, qualify, short_list
from .source import Source

__all__ = ["ParquetSource", "first_null", "is_parquet_file", "open_parquet_file",
           "open_parquet_source", "read_parquet_rows"]

#: A row group of more rows than this many blocks is streamed in batches by each block that
#: reads it, not decoded whole.
STREAM_BLOCKS = 2


@dataclass(frozen=True)
class ParquetSource(Source):
    """A Parquet file or dataset.

    Parameters
    ----------
    files : tuple of str
        The files in row order (sorted paths; hidden ones skipped).
    row_groups : tuple of (file index, row group index, first row, n rows)
        The non-empty row groups in row order.
    columns : tuple of str
        The columns holding the vectors.
    layout : {"list", "scalars"}
        ``list``: one list/fixed-size-list column; ``scalars``: one numeric column per
        dimension.
    relative_files : tuple of str
        Each file's path below the dataset's root.
    storage : str
        The vector columns' Arrow type and compression, for the plan.
    partitions : tuple of tuple of (str, str)
        Each file's hive partition keys and values (``lang=en/…``), decoded from its path:
        columns of every row of the file, usable as the id column.
    """

    kind = "parquet"

    files: tuple[str, ...] = ()
    row_groups: tuple[tuple[int, int, int, int], ...] = ()
    columns: tuple[str, ...] = ()
    layout: str = "list"
    relative_files: tuple[str, ...] = ()
    partitions: tuple[tuple[tuple[str, str], ...], ...] = ()
    storage: str = field(default="", compare=False)

    def _read(self, start: int, stop: int, as_nan: bool) -> np.ndarray:
        return read_parquet_rows(self, start, stop, as_nan)

    def groups_in(self, start: int, stop: int) -> tuple[tuple[int, int, int, int], ...]:
        """The row groups holding rows ``start:stop``, in row order (found by bisection: a
        dataset's blocks would otherwise each scan all its row groups)."""
        lo = max(bisect.bisect_right(self._group_starts, start) - 1, 0)
        return self.row_groups[lo:bisect.bisect_left(self._group_starts, stop)]

    @functools.cached_property
    def _group_starts(self) -> list[int]:
        return [rg_start for _, _, rg_start, _ in self.row_groups]

    @functools.cached_property
    def _file_starts(self) -> dict[int, int]:
        """Each file's first global row (of its first non-empty row group)."""
        starts: dict[int, int] = {}
        for fi, _, rg_start, _ in self.row_groups:
            starts.setdefault(fi, rg_start)
        return starts

    def locate(self, row: int) -> str:
        """The file (unless it is the source's one file), the row group, and the row within
        the file of global row ``row``."""
        groups = self.groups_in(row, row + 1)
        if not groups:
            return ""
        fi, gi, _, _ = groups[-1]
        f = self.path if self.files == (self.path,) else \
            f"{self.path.rstrip('/')}/{self.relative_files[fi]}"
        return f"{f} row group {gi}, row {row - self._file_starts[fi]} of the file"

    def chunk_spans(self, block_rows: int) -> list[tuple[int, int]]:
        """The row groups of up to two blocks: a larger one is streamed, part by part, by
        each block that reads it (``read_parquet_rows``), so that memory stays bounded by
        the block."""
        return [(start, start + nr) for _, _, start, nr in self.row_groups
                if nr <= STREAM_BLOCKS * block_rows]

    def output_files(self, block_rows: int) -> list[tuple[str, list[tuple[int, int]]]]:
        """One output file per input file, at the same path relative to the dataset's
        root, holding that file's row groups."""
        ranges: dict[int, list[tuple[int, int]]] = {}
        for fi, _, start, nr in self.row_groups:
            ranges.setdefault(fi, []).append((start, start + nr))
        return [(self.relative_files[fi], r) for fi, r in ranges.items()]

    def read_column(self, name: str, start: int, stop: int, what: str = "column") -> np.ndarray:
        """Another column's values for rows ``start:stop`` (ids, labels), or a hive
        partition key's (the file's value, for each of its rows); a null raises naming the
        file, row group and row."""
        parts = []
        for fi, gi, rg_start, nr in self.groups_in(start, stop):
            lo, hi = max(start, rg_start), min(stop, rg_start + nr)
            if lo < hi:
                pf = open_parquet_file(self.files[fi])
                if name not in pf.schema_arrow.names and name in self.partition_keys:
                    parts.append(self._partition_values(name, fi, gi, lo, hi - lo, what))
                    continue
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

        schema = open_parquet_file(self.files[0]).schema_arrow
        if self.id_column not in schema.names:  # a partition key
            return "int64" if self._integer_key(self.id_column) else "str"
        return "int64" if pa.types.is_integer(schema.field(self.id_column).type) else "str"

    def output_key(self) -> str:
        """The id column, or ``row`` when there is none or the id column is a hive partition
        key: the output's mirrored paths (``lang=en/…``) carry that key already, and a file
        column of the same name would clash with it in readers that infer hive keys."""
        key = self.id_column
        return "row" if key is None or key in self.partition_keys else key

    @property
    def partition_keys(self) -> tuple[str, ...]:
        """The hive partition keys every file has, in path order."""
        if not self.partitions:
            return ()
        common = set.intersection(*(set(dict(p)) for p in self.partitions))
        return tuple(k for k, _ in self.partitions[0] if k in common)

    def _integer_key(self, name: str) -> bool:
        """Whether every value of partition key ``name`` is an integer (pyarrow's and
        duckdb's inference of a hive key's type)."""
        return all(_is_int(dict(p)[name]) for p in self.partitions)

    def _partition_values(self, name: str, fi: int, gi: int, lo: int, n: int,
                          what: str) -> np.ndarray:
        value = dict(self.partitions[fi])[name]
        if value == HIVE_NULL:
            raise InvalidValueError(f"{self.files[fi]} row group {gi}: {what} {name!r} (a "
                                    f"hive partition key) is null at row {lo}")
        if self._integer_key(name):
            return np.full(n, int(value), dtype=np.int64)
        return np.full(n, value, dtype=object)

    def _fingerprint_extra(self) -> dict[str, Any]:
        return {"columns": list(self.columns), "files": list(self.relative_files),
                "row_groups": len(self.row_groups)}

    def _describe_extra(self) -> str:
        keys = self.partition_keys
        return (f", {len(self.files)} file(s), {len(self.row_groups)} row group(s), "
                f"{self.layout} column(s) {short_list(self.columns)} ({self.storage}), read "
                "by pyarrow" + (f", hive partition key(s) {', '.join(keys)}" if keys else ""))


#: A null partition value, as pyarrow and Hive write it.
HIVE_NULL = "__HIVE_DEFAULT_PARTITION__"


def _is_int(text: str) -> bool:
    return text.lstrip("-").isdigit()


def hive_partitions(rel: str) -> tuple[tuple[str, str], ...]:
    """The ``key=value`` directories of a file's path below its dataset's root, values
    URL-decoded as pyarrow, duckdb and polars write them.

    >>> hive_partitions("lang=en/year=2024/part-0.parquet")
    (('lang', 'en'), ('year', '2024'))
    """
    from urllib.parse import unquote

    parts = [p.split("=", 1) for p in rel.split("/")[:-1] if "=" in p]
    return tuple((unquote(k), unquote(v)) for k, v in parts)


def _parquet_files(path: str) -> tuple[list[str], list[str]]:
    """The dataset's files in row order (sorted by path; hidden ``.``/``_`` names below the
    root skipped), and each one's path relative to the root, whatever form ``path`` takes
    (relative, absolute, ``./``, through a symlink, a URL)."""
    fs, inner = filesystem(path)
    if fs.isfile(inner):
        return [path], [inner.rstrip("/").rsplit("/", 1)[-1]]
    root = inner.rstrip("/")
    files, rels = [], []
    for f in sorted(fs.find(root)):
        rel = f[len(root):].lstrip("/") if f.startswith(root + "/") else f.rsplit("/", 1)[-1]
        if not any(part.startswith((".", "_")) for part in rel.split("/")):
            files.append(qualify(fs, f, path))
            rels.append(rel)
    if not files:
        raise InputError(f"{path}: directory holds no Parquet files")
    return files, rels


def open_parquet_file(path: str) -> Any:
    """A ``pyarrow.parquet.ParquetFile`` for a local path or URL (no pre-buffering: it would
    buffer the whole file); page checksums, where the writer stored them, are
    verified."""
    import pyarrow.parquet as pq

    try:
        source: Any = path
        if is_url(path):
            fs, inner = filesystem(path)
            source = fs.open(inner, "rb")
        return pq.ParquetFile(source, pre_buffer=False, page_checksum_verification=True)
    except Exception as e:  # pyarrow raises ArrowInvalid/OSError for damaged files
        raise InputError(f"{path}: not a readable Parquet file ({e})") from e


def open_parquet_source(path: str, columns: list[str] | None,
                        id_column: str | None = None) -> ParquetSource:
    """Describe the Parquet file or dataset at ``path`` from its footers."""
    files, rels = _parquet_files(path)
    first = open_parquet_file(files[0])
    schema = first.schema_arrow
    partitions = tuple(hive_partitions(r) for r in rels)
    if id_column is not None and not (id_column not in schema.names and all(
            id_column in dict(p) for p in partitions)):
        _check_id_column(schema, id_column, files[0])
    layout, cols = _choose_columns(schema, columns, files[0],
                                   exclude=(id_column,) if id_column else ())
    row_groups: list[tuple[int, int, int, int]] = []
    sizes = []
    start = 0
    for fi, f in enumerate(files):
        pf = first if fi == 0 else open_parquet_file(f)
        if fi > 0 and not _same_columns(pf.schema_arrow, schema, cols):
            raise InputError(
                f"{f}: columns {list(cols)} differ in type from {files[0]}; all files of a "
                "dataset must share the vector columns' types"
            )
        for gi in range(pf.metadata.num_row_groups):
            nr = pf.metadata.row_group(gi).num_rows
            if nr:
                row_groups.append((fi, gi, start, nr))
                start += nr
        sizes.append(_file_size(f))
    d, dtype = _vector_shape(schema, layout, cols, files, row_groups)
    return ParquetSource(path, start, d, dtype, tuple(sizes), id_column, files=tuple(files),
                         row_groups=tuple(row_groups), columns=tuple(cols), layout=layout,
                         relative_files=tuple(rels), partitions=partitions,
                         storage=_storage(first, cols))


def _storage(pf: Any, cols: tuple[str, ...]) -> str:
    """The vector columns' Arrow type(s) and compression in a file's first row group."""
    schema = pf.schema_arrow
    types = sorted({str(schema.field(c).type) for c in cols})
    kinds = ", ".join(types) if len(types) <= 2 else f"{len(types)} types"
    if not pf.metadata.num_row_groups:
        return kinds
    group = pf.metadata.row_group(0)
    names = {group.column(i).path_in_schema.split(".")[0]: group.column(i).compression
             for i in range(group.num_columns)}
    codecs = sorted({str(names[c]).lower() for c in cols if c in names})
    return f"{kinds}, {'/'.join(codecs) or 'no'} compression"


def _file_size(path: str) -> int:
    """Bytes of one file on disk (the whole file, not its footer)."""
    fs, inner = filesystem(path)
    return int(fs.size(inner))


def is_parquet_file(fs: Any, inner: str) -> bool:
    """Whether the file at ``inner`` starts with Parquet's magic bytes."""
    if not fs.isfile(inner):
        return False
    with fs.open(inner, "rb") as fh:
        return bool(fh.read(4) == b"PAR1")


def _check_id_column(schema: Any, id_column: str, where: str) -> None:
    import pyarrow as pa

    if id_column not in schema.names:
        raise InputError(f"{where}: no id column {id_column!r}; columns are {schema.names}")
    t = schema.field(id_column).type
    if not (pa.types.is_integer(t) or pa.types.is_string(t) or pa.types.is_large_string(t)):
        raise InputError(f"{where}: id column {id_column!r} has type {t}; ids must be integers "
                         "or strings")


def _expand(columns: list[str], names: list[str], where: str) -> list[str]:
    """Column names with shell-style globs expanded in schema order."""
    import fnmatch

    out: list[str] = []
    for c in columns:
        if any(ch in c for ch in "*?["):
            hits = [n for n in names if fnmatch.fnmatchcase(n, c)]
            if not hits:
                raise InputError(f"{where}: no column matches {c!r}; columns are {names}")
            out += [h for h in hits if h not in out]
        elif c not in out:
            out.append(c)
    return out


def _same_columns(a: Any, b: Any, cols: tuple[str, ...]) -> bool:
    return all(c in a.names and a.field(c).type == b.field(c).type for c in cols)


def _is_list(t: Any) -> bool:
    import pyarrow as pa

    return bool(pa.types.is_list(t) or pa.types.is_large_list(t)
                or pa.types.is_fixed_size_list(t))


def _is_number(t: Any) -> bool:
    import pyarrow as pa

    return bool(pa.types.is_integer(t) or pa.types.is_floating(t))


def _choose_columns(schema: Any, columns: list[str] | None, where: str,
                    exclude: tuple[str, ...] = ()) -> tuple[str, tuple[str, ...]]:
    """Pick the vector columns: explicit names (globs expanded), else the only list column,
    else every numeric column not in ``exclude``."""
    names = list(schema.names)
    if columns:
        columns = _expand(columns, names, where)
        clash = [c for c in columns if c in exclude]
        if clash:
            raise InputError(f"{where}: column {clash[0]!r} is the id column; it cannot also "
                             "hold vector values")
        missing = [c for c in columns if c not in names]
        if missing:
            raise InputError(f"{where}: no column {missing[0]!r}; columns are {names}")
        types = {c: schema.field(c).type for c in columns}
        if len(columns) == 1 and _is_list(types[columns[0]]):
            value_t = types[columns[0]].value_type
            if not _is_number(value_t):
                raise InputError(f"{where}: column {columns[0]!r} holds lists of {value_t}, "
                                 "not numbers")
            return "list", tuple(columns)
        for c in columns:
            if not _is_number(types[c]):
                raise InputError(
                    f"{where}: column {c!r} has type {types[c]}; give one list column or "
                    "numeric scalar columns"
                )
        return "scalars", tuple(columns)
    lists = [n for n in names if _is_list(schema.field(n).type)]
    if len(lists) == 1:
        return _choose_columns(schema, lists, where)
    if len(lists) > 1:
        raise InputError(f"{where}: several list columns {lists}; choose one with --columns "
                         "(--x-columns / --w-columns)")
    numeric = [n for n in names if _is_number(schema.field(n).type) and n not in exclude]
    if not numeric:
        raise InputError(f"{where}: no list or numeric column among {names}")
    return "scalars", tuple(numeric)


def _vector_shape(schema: Any, layout: str, cols: tuple[str, ...], files: list[str],
                  row_groups: list[tuple[int, int, int, int]]) -> tuple[int, str]:
    """d and stored value dtype; a variable-length list column is measured on its first row."""
    import pyarrow as pa

    if layout == "scalars":
        dtypes = [schema.field(c).type.to_pandas_dtype() for c in cols]
        return len(cols), str(np.result_type(*dtypes))
    t = schema.field(cols[0]).type
    dtype = str(np.dtype(t.value_type.to_pandas_dtype()))
    if pa.types.is_fixed_size_list(t):
        return int(t.list_size), dtype
    if not row_groups:
        return 0, dtype
    fi, gi, _, _ = row_groups[0]
    first = open_parquet_file(files[fi]).read_row_group(gi, columns=list(cols)).column(0)
    arr = first.combine_chunks()
    valid = arr.drop_null()
    if len(valid) == 0:
        return 0, dtype
    return len(valid[0]), dtype


def read_parquet_rows(src: ParquetSource, start: int, stop: int,
                      as_nan: bool = False) -> np.ndarray:
    """Read the row groups overlapping ``start:stop`` and return exactly those rows (no copy
    when one row group is exactly the block, the usual case)."""
    pieces = []  # last first
    for fi, gi, rg_start, nr in chunk_cache.last_first(src.groups_in(start, stop)):
        lo, hi = max(start, rg_start), min(stop, rg_start + nr)
        if lo >= hi:
            continue
        if nr > STREAM_BLOCKS * (stop - start):  # much larger than the block: stream it
            table, first = _read_group(src, fi, gi, _row_group_slice, gi, rg_start, lo, hi,
                                       list(src.columns))
            block = _table_to_matrix(table, src, (fi, gi), first, as_nan)
            pieces.append(block[lo - first:hi - first])
        elif lo == rg_start and hi == rg_start + nr:  # all ours
            pieces.append(_group_matrix(src, fi, gi, rg_start, as_nan))
        else:  # shared with the next or previous block: decoded once for both
            pieces.append(chunk_cache.take(
                (src.token, fi, gi, as_nan), nr, lo - rg_start, hi - rg_start,
                functools.partial(_group_matrix, src, fi, gi, rg_start, as_nan)))
    if len(pieces) == 1:
        return pieces[0]
    if not pieces:
        return np.empty((0, src.d), dtype=src.working_dtype)
    return np.concatenate(pieces[::-1])


def _read_group(src: ParquetSource, fi: int, gi: int, read: Any, *args: Any) -> Any:
    """``read(file, *args)`` of row group ``gi`` of file ``fi``, its failures named."""
    f = src.files[fi]
    try:
        return read(f, *args)
    except InputError:
        raise
    except Exception as e:
        raise InputError(f"{f}: row group {gi} cannot be read ({e})") from e


def _group_matrix(src: ParquetSource, fi: int, gi: int, rg_start: int,
                  as_nan: bool) -> np.ndarray:
    """Row group ``gi`` of file ``fi`` (first global row ``rg_start``) as a matrix."""
    table = _read_group(src, fi, gi, _whole_group, gi, list(src.columns))
    return _table_to_matrix(table, src, (fi, gi), rg_start, as_nan)


def _whole_group(f: str, gi: int, columns: list[str]) -> Any:
    decodes.note(f"{f}#{gi}")
    return open_parquet_file(f).read_row_group(gi, columns=columns)


def _row_group_slice(f: str, gi: int, rg_start: int, lo: int, hi: int,
                     columns: list[str]) -> tuple[Any, int]:
    """Rows ``lo:hi`` of a large row group, read in batches so that memory stays bounded
    by the block (the rows before ``lo`` are decoded and dropped). Returns the table of the
    batches overlapping ``lo:hi`` and the global row of its first row."""
    import pyarrow as pa

    decodes.note(f"{f}#{gi}")
    batch = max(1024, (hi - lo) // 4)
    kept, first, pos = [], None, rg_start
    for rb in open_parquet_file(f).iter_batches(batch_size=batch, row_groups=[gi],
                                                 columns=columns):
        end = pos + rb.num_rows
        if end > lo and pos < hi:
            kept.append(rb)
            first = pos if first is None else first
        pos = end
        if pos >= hi:
            break
    return pa.Table.from_batches(kept), int(first if first is not None else lo)


def _table_to_matrix(table: Any, src: ParquetSource, group: tuple[int, int], row0: int,
                     as_nan: bool = False) -> np.ndarray:
    """A pyarrow table of the vector columns (of row group ``group``: file and row group
    index) as an ``(n, d)`` array. Nulls and wrong lengths raise naming the row (``row0`` is
    the table's first global row), or become NaN rows."""
    if src.layout == "scalars":
        return _scalars_to_matrix(table, src, group, row0, as_nan)
    import pyarrow as pa

    n = table.num_rows
    col = table.column(0).combine_chunks()
    null = np.asarray(col.is_null())
    if pa.types.is_fixed_size_list(col.type):
        lengths = np.full(n, src.d)
        starts = np.arange(n) * src.d + col.offset * src.d
    else:
        offsets = np.asarray(col.offsets)
        lengths, starts = np.diff(offsets), offsets[:-1]
    values = col.values
    bad = null | (lengths != src.d)
    if values.null_count:
        value_null = np.asarray(values.is_null())
        has_null = np.add.reduceat(value_null, np.minimum(starts, len(value_null) - 1)) > 0
        bad |= has_null & (lengths > 0)
    if bad.any() and not as_nan:
        row = int(np.flatnonzero(bad)[0])
        what = ("has a null vector" if null[row] else
                f"has {lengths[row]} values, expected d={src.d} like the first row of the "
                "dataset" if lengths[row] != src.d else "holds a null value")
        raise _invalid(src, group, f"column {src.columns[0]!r} row {row0 + row} {what}",
                       row0 + row)
    flat = np.asarray(values.to_numpy(zero_copy_only=False))
    if not bad.any() and len(flat) == n * src.d and (n == 0 or starts[0] == 0):
        return flat.reshape(n, src.d)
    out = np.full((n, src.d), np.nan, dtype=src.working_dtype)
    good = np.flatnonzero(~bad)
    out[good] = flat[starts[good][:, None] + np.arange(src.d)]
    return out


def _scalars_to_matrix(table: Any, src: ParquetSource, group: tuple[int, int], row0: int,
                       as_nan: bool) -> np.ndarray:
    """One numeric column per dimension; a null raises naming column and row, or is NaN."""
    arrays = []
    for c in src.columns:
        col = table.column(c)
        if col.null_count:
            if not as_nan:
                row = first_null(col.combine_chunks())
                raise _invalid(src, group, f"column {c!r} is null at row {row0 + row}",
                               row0 + row)
            import pyarrow.compute as pc

            col = pc.fill_null(col.cast("float64"), float("nan"))
        arrays.append(col.to_numpy())
    if not arrays or len(arrays[0]) == 0:
        return np.empty((table.num_rows, src.d), dtype=src.working_dtype)
    return np.column_stack(arrays).astype(src.working_dtype, copy=False)


def _invalid(src: ParquetSource, group: tuple[int, int], what: str,
             row: int) -> InvalidValueError:
    """An invalid value the reader found: named by file, row group, global row, row of the
    file and of the group (the id is added by ``Source.located``)."""
    fi, gi = group
    first = src._file_starts[fi]
    group_first = next(s for f, g, s, _ in src.groups_in(row, row + 1) if (f, g) == group)
    return InvalidValueError(f"{src.files[fi]} row group {gi}: {what} (row {row - first} of "
                             f"the file, row {row - group_first} of the group)", row=row,
                             placed=True)


def first_null(arr: Any) -> int:
    return int(np.flatnonzero(np.asarray(arr.is_null()))[0])
