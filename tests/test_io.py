"""Readers: every format gives the same rows; bad inputs fail naming file, column and row."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ddrp_dask.errors import InputError, InvalidValueError
from ddrp_dask.io.registry import open_source
from ddrp_dask.maths.project import check_finite

from .conftest import write_npy, write_parquet_list, write_parquet_scalars, write_zarr


@pytest.fixture
def data() -> np.ndarray:
    return np.random.default_rng(0).standard_normal((1000, 6)).astype(np.float32)


def test_formats_read_the_same_rows(tmp_path: Path, data: np.ndarray) -> None:
    paths = [
        write_npy(tmp_path / "a.npy", data),
        write_zarr(tmp_path / "a.zarr", data, 300),
        write_parquet_list(tmp_path / "a.parquet", data, 128),
        write_parquet_scalars(tmp_path / "s.parquet", data, 200),
    ]
    for p in paths:
        src = open_source(p)
        assert (src.n_rows, src.d) == (1000, 6), p
        assert np.array_equal(src.read_rows(0, 1000), data), p
        assert np.array_equal(src.read_rows(250, 777), data[250:777]), p
        assert src.read_rows(5, 5).shape == (0, 6)


def test_parquet_directory_in_sorted_file_order(tmp_path: Path, data: np.ndarray) -> None:
    d = tmp_path / "ds"
    (d / "part=b").mkdir(parents=True)
    (d / "part=a").mkdir()
    write_parquet_list(d / "part=a" / "0.parquet", data[:400], 100)
    write_parquet_list(d / "part=b" / "0.parquet", data[400:], 100)
    (d / "_SUCCESS").write_text("")
    src = open_source(str(d))
    assert src.n_rows == 1000 and len(src.files) == 2
    assert np.array_equal(src.read_rows(350, 450), data[350:450])


def test_variable_length_list_and_integer_columns(tmp_path: Path) -> None:
    p = tmp_path / "l.parquet"
    pq.write_table(pa.table({"v": [[1, 2, 3], [4, 5, 6]], "name": ["a", "b"]}), p)
    src = open_source(str(p))
    assert src.d == 3 and src.working_dtype == np.float64
    assert src.read_rows(0, 2).tolist() == [[1, 2, 3], [4, 5, 6]]


def test_scalar_columns_by_name_and_dtypes(tmp_path: Path) -> None:
    p = tmp_path / "s.parquet"
    pq.write_table(pa.table({"a": np.arange(4, dtype=np.int16),
                             "b": np.arange(4, dtype=np.float16), "c": ["x"] * 4}), p)
    src = open_source(str(p))  # default: all numeric columns
    assert src.columns == ("a", "b") and src.working_dtype == np.float32
    assert open_source(str(p), "b").d == 1
    with pytest.raises(InputError, match="column 'c' has type string"):
        open_source(str(p), ["a", "c"])
    with pytest.raises(InputError, match="no column 'zz'"):
        open_source(str(p), "zz")


def test_null_vector_and_wrong_length_name_the_row(tmp_path: Path) -> None:
    p = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"v": [[1.0, 2.0], [3.0, 4.0], None, [5.0]]}), p,
                   row_group_size=2)
    src = open_source(str(p))
    assert np.array_equal(src.read_rows(0, 2), [[1, 2], [3, 4]])
    with pytest.raises(InvalidValueError,
                       match=r"bad.parquet row group 1: column 'v' row 2 has a null vector"):
        src.read_rows(0, 4)
    q = tmp_path / "ragged.parquet"
    pq.write_table(pa.table({"v": [[1.0, 2.0], [5.0]]}), q)
    with pytest.raises(InvalidValueError, match="row 1 has 1 values, expected d=2"):
        open_source(str(q)).read_rows(0, 2)


@pytest.mark.parametrize(("content", "match"), [
    ("missing", "no such file"),
    ("text", "not a .npy file"),
    ("truncated", "not a readable .npy"),
    ("pickle", "not a readable .npy"),
    ("1d", "expected a 2-D array"),
    ("empty", "empty"),
    ("strings", "not numeric"),
])
def test_bad_files(tmp_path: Path, content: str, match: str) -> None:
    p = tmp_path / "x.npy"
    if content == "text":
        p = tmp_path / "x.txt"
        p.write_text("hello")
    elif content == "truncated":
        np.save(p, np.ones((100, 4)))
        p.write_bytes(p.read_bytes()[:500])
    elif content == "pickle":
        np.save(p, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    elif content == "1d":
        np.save(p, np.ones(5))
    elif content == "empty":
        np.save(p, np.ones((0, 3)))
    elif content == "strings":
        np.save(p, np.array([["a", "b"]]))
    with pytest.raises(InputError, match=match):
        open_source(str(p))


def test_zarr_group_with_several_arrays_names_them(tmp_path: Path) -> None:
    import zarr

    g = zarr.open_group(str(tmp_path / "g.zarr"), mode="w")
    g.create_array("a", shape=(3, 2), dtype="f4")
    g.create_array("b", shape=(3, 2), dtype="f4")[...] = 1.0
    with pytest.raises(InputError, match=r"arrays \['a', 'b'\]"):
        open_source(str(tmp_path / "g.zarr"))
    assert open_source(str(tmp_path / "g.zarr" / "b")).n_rows == 3


def test_corrupted_inputs_are_named(tmp_path: Path, data: np.ndarray) -> None:
    import os

    z = write_zarr(tmp_path / "z.zarr", data, 300)
    os.remove(tmp_path / "z.zarr" / "c" / "2" / "0")
    with pytest.raises(InputError, match=r"z.zarr: chunk c/2/0 \(rows 600..899\) is missing"):
        open_source(z, strict_chunks=True)
    z2 = write_zarr(tmp_path / "z2.zarr", data, 300)
    (tmp_path / "z2.zarr" / "c" / "1" / "0").write_bytes(b"garbage")
    src = open_source(z2)
    with pytest.raises(InputError, match=r"z2.zarr: rows 250..399 cannot be read"):
        src.read_rows(250, 400)
    cols = {"vec": pa.FixedSizeListArray.from_arrays(pa.array(data.ravel()), data.shape[1])}
    p = tmp_path / "p.parquet"
    pq.write_table(pa.table(cols), p, row_group_size=200, write_page_checksum=True)
    raw = bytearray(Path(p).read_bytes())
    footer = raw[-200:]
    Path(tmp_path / "footer.parquet").write_bytes(bytes(raw[:-200]) + bytes(200 - 8) +
                                                  bytes(footer[-8:]))
    with pytest.raises(InputError, match=r"footer\.parquet: not a readable Parquet file"):
        open_source(str(tmp_path / "footer.parquet"))
    raw[1000:1400] = bytes(400)  # inside the first row group's page
    Path(tmp_path / "page.parquet").write_bytes(bytes(raw))
    page = open_source(str(tmp_path / "page.parquet"))
    with pytest.raises(InputError, match=r"page.parquet: row group 0 cannot be read"):
        page.read_rows(0, 200)


def test_check_finite_names_row_and_column() -> None:
    block = np.ones((10, 3), dtype=np.float32)
    check_finite(block, "x.npy", 100)
    block[7, 2] = np.nan
    with pytest.raises(InvalidValueError, match=r"x.npy: row 107 column 2 is nan"):
        check_finite(block, "x.npy", 100)
    block[7, 2] = np.inf
    with pytest.raises(InvalidValueError, match="row 107 column 2 is inf"):
        check_finite(block, "x.npy", 100)


def test_invalid_rows_as_nan_for_skipping(tmp_path: Path) -> None:
    p = tmp_path / "mixed.parquet"
    rows = [[1.0, 2.0], None, [3.0], [4.0, None], [5.0, 6.0]]
    pq.write_table(pa.table({"v": rows}), p)
    got = open_source(str(p)).read_rows(0, 5, invalid="nan")
    assert got[0].tolist() == [1, 2] and got[4].tolist() == [5, 6]
    assert np.isnan(got[1:4]).all()
    s = tmp_path / "s.parquet"
    pq.write_table(pa.table({"a": [1.0, None, 3.0], "b": [1.0, 2.0, 3.0]}), s)
    with pytest.raises(InvalidValueError, match="column 'a' is null at row 1"):
        open_source(str(s)).read_rows(0, 3)
    assert np.isnan(open_source(str(s)).read_rows(0, 3, invalid="nan")[1, 0])


def test_large_row_groups_are_sliced_exactly(tmp_path: Path, data: np.ndarray) -> None:
    """A row group far larger than the block is streamed in batches: same rows, exactly."""
    p = write_parquet_list(tmp_path / "big.parquet", data, 1000)  # one row group
    s = write_parquet_scalars(tmp_path / "bigs.parquet", data, 1000)
    for path in (p, s):
        src = open_source(path)
        for a, b in [(0, 100), (123, 250), (900, 1000), (999, 1000)]:
            assert np.array_equal(src.read_rows(a, b), data[a:b]), (path, a, b)
