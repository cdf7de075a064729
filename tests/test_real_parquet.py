"""Parquet as other tools write it (issue 23): hive-partitioned datasets written by duckdb,
polars and pandas, their partition keys usable as the id column and carried into the
outputs, read back by duckdb, polars and pyarrow; and what the plan says of each source."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd
import polars as pl
import pyarrow.parquet as pq
import pytest
import zarr
from click.testing import CliRunner

import ddrp_dask as dd
from ddrp_cli.main import cli
from ddrp_dask.io.registry import open_source

from .conftest import make_pair, write_npy

BLOCK = 256
LANGS = ["de", "en", "fr"]


@pytest.fixture(scope="module")
def pair() -> tuple[np.ndarray, np.ndarray]:
    return make_pair(n=1500, m=300, d=8, seed=11)


def _frame(x: np.ndarray) -> pl.DataFrame:
    """Rows with ids and a language; sorted by language, so that the partitioned files, read
    in path order, hold the rows in this order."""
    return pl.DataFrame({"id": np.arange(len(x)) * 3,
                         "lang": [LANGS[i * len(LANGS) // len(x)] for i in range(len(x))],
                         "vec": x})


def _duckdb(path: Path, x: np.ndarray) -> str:
    frame = _frame(x).to_arrow()  # noqa: F841  (duckdb reads the local variable)
    duckdb.sql(f"COPY (SELECT * FROM frame ORDER BY id) TO '{path}' "
               "(FORMAT parquet, PARTITION_BY (lang))")
    return str(path)


def _polars(path: Path, x: np.ndarray) -> str:
    _frame(x).write_parquet(str(path), partition_by="lang")
    return str(path)


def _pandas(path: Path, x: np.ndarray) -> str:
    frame = _frame(x).to_pandas()
    frame = pd.concat([frame[["id", "lang"]],
                       pd.DataFrame(x, columns=[f"f{j}" for j in range(x.shape[1])])], axis=1)
    frame.to_parquet(str(path), partition_cols=["lang"], index=False)
    return str(path)


WRITERS = {"duckdb": _duckdb, "polars": _polars, "pandas": _pandas}


@pytest.mark.parametrize("writer", WRITERS, ids=list(WRITERS))
def test_hive_partition_key_as_the_id_column(tmp_path: Path, pair: Any, writer: str) -> None:
    """``lang`` (only in the paths for duckdb and pandas, also in the files for polars)
    is the id column: the sketches are those of the .npy of the same rows, ``x_ids`` holds
    each row's language, and a Parquet output mirrors the partitions, which duckdb, polars
    and pyarrow read back as the ``lang`` column."""
    x, w = pair
    xs = WRITERS[writer](tmp_path / "x", x)
    ws = write_npy(tmp_path / "w.npy", w)
    cols = "f*" if writer == "pandas" else None
    src = open_source(xs, cols, id_column="lang")
    assert "hive partition key(s) lang" in src.describe() and src.id_dtype == "str"
    langs = np.array(_frame(x)["lang"].to_list())
    assert list(src.read_ids(0, len(x))) == list(langs)
    ref = tmp_path / "ref"
    dd.execute(dd.plan_run(write_npy(tmp_path / "x.npy", x), ws, 4, str(ref), seed=1,
                           block_rows=BLOCK), scheduler="sync")
    out = tmp_path / "out"
    dd.execute(dd.plan_run(xs, ws, 4, str(out), seed=1, block_rows=BLOCK, x_id_column="lang",
                           x_columns=cols), scheduler="sync")
    g, r = zarr.open_group(str(out), mode="r"), zarr.open_group(str(ref), mode="r")
    assert g["x"][...].tobytes() == r["x"][...].tobytes()
    assert list(g["x_ids"][...]) == list(langs)
    pout = tmp_path / "pout"
    dd.execute(dd.plan_run(xs, ws, 4, str(pout), seed=1, block_rows=BLOCK, x_id_column="lang",
                           x_columns=cols, format="parquet"), scheduler="sync")
    glob = f"{pout}/x/**/*.parquet"
    got = duckdb.sql(f"SELECT lang, row, sketch FROM read_parquet('{glob}', "
                     "hive_partitioning = true) ORDER BY row").fetchall()
    assert [g[0] for g in got] == list(langs) and [g[1] for g in got] == list(range(len(x)))
    assert np.array_equal(np.array([g[2] for g in got], np.float32), r["x"][...])
    frame = pl.read_parquet(glob, hive_partitioning=True).sort("row")
    assert frame["lang"].to_list() == list(langs)
    table = pq.read_table(pout / "x").sort_by("row")
    assert [str(v) for v in table["lang"].to_pylist()] == list(langs)


def test_integer_partition_keys_are_integer_ids(tmp_path: Path, pair: Any) -> None:
    x, _ = pair
    frame = _frame(x).with_columns(year=pl.Series([2020 + i // 500 for i in range(len(x))]))
    frame.drop("lang").write_parquet(str(tmp_path / "d"), partition_by="year")
    src = open_source(str(tmp_path / "d"), id_column="year")
    assert src.id_dtype == "int64"
    ids = src.read_ids(0, len(x))
    assert ids.dtype == np.int64 and list(ids) == frame["year"].to_list()


def test_a_key_absent_from_paths_and_columns_is_named(tmp_path: Path, pair: Any) -> None:
    from ddrp_dask.errors import InputError

    xs = _duckdb(tmp_path / "x", pair[0])
    with pytest.raises(InputError, match=r"no id column 'country'"):
        open_source(xs, id_column="country")


def test_the_plan_says_how_each_source_is_read(tmp_path: Path, pair: Any) -> None:
    """``--dry-run`` names each source's format, reader and codecs: a Parquet dataset's
    column kind, a .npy's memory map, a Zarr array's format, grid, codecs and reader."""
    x, w = pair
    xs = _duckdb(tmp_path / "x", x)
    res = CliRunner().invoke(cli, ["run", "--x", xs, "--w", write_npy(tmp_path / "w.npy", w),
                                   "-k", "4", "--out", str(tmp_path / "o"), "--dry-run"])
    assert res.exit_code == 0, res.stderr
    assert "list column(s) vec (list<element: float>, snappy compression), read by pyarrow, " \
           "hive partition key(s) lang" in res.stdout
    assert "w.npy [npy] 300 x 8 float32, read through a memory map" in res.stdout
    zarr.create_array(str(tmp_path / "w.zarr"), shape=w.shape, dtype=w.dtype,
                      chunks=(100, 8))[...] = w
    zarr.create_array(str(tmp_path / "s.zarr"), shape=w.shape, dtype=w.dtype,
                      chunks=(50, 8), shards=(100, 8))[...] = w
    for path, says in [("w.zarr", "Zarr format 3, chunks of 100 x 8, codecs bytes+zstd, read "
                                  "by the direct chunk reader"),
                       ("s.zarr", "Zarr format 3, shards of 100 rows of chunks of 50 rows, "
                                  "codecs bytes+zstd, read by zarr-python")]:
        res = CliRunner().invoke(cli, ["fit", "--x", xs, "--w", str(tmp_path / path), "-k",
                                       "4", "--out", str(tmp_path / "m"), "--dry-run"])
        assert res.exit_code == 0, res.stderr
        assert says in res.stdout, res.stdout


# ---------------------------------------------------------------------------------------
# invalid values, named where they are


def _dirty_dataset(path: Path, kind: str) -> str:
    """Two files of 600 rows in row groups of 200; row 1 + 600 + 250 = 851 (row 251 of the
    second file, row 50 of its row group 1) holds the invalid value in column 2."""
    rng = np.random.default_rng(3)
    for lang in ["en", "fr"]:
        x = rng.standard_normal((600, 4)).astype(np.float32)
        ids = [f"{lang}-{j}" for j in range(600)]
        if kind == "nan" and lang == "fr":
            x[251, 2] = np.nan
        if kind == "inf" and lang == "fr":
            x[251, 2] = -np.inf
        frame = pl.DataFrame({"doc": ids, "vec": x})
        if kind == "null-vector" and lang == "fr":
            frame = frame.with_columns(pl.when(pl.int_range(600) == 251).then(None)
                                       .otherwise(pl.col("vec")).alias("vec"))
        if kind == "null-scalar":
            frame = pl.DataFrame({"doc": ids, **{f"f{j}": x[:, j] for j in range(4)}})
            if lang == "fr":
                frame = frame.with_columns(pl.when(pl.int_range(600) == 251).then(None)
                                           .otherwise(pl.col("f2")).alias("f2"))
        (path / f"lang={lang}").mkdir(parents=True, exist_ok=True)
        frame.write_parquet(str(path / f"lang={lang}" / "part-0.parquet"), row_group_size=200)
    return str(path)


@pytest.mark.parametrize("kind", ["nan", "inf", "null-vector", "null-scalar"])
def test_an_invalid_value_in_a_dataset_names_file_group_rows_and_id(tmp_path: Path,
                                                                   kind: str) -> None:
    """One ``ddrp: error:`` line naming the file, its row group, the row within the file,
    the global row, the column and the id (before: a NaN gave the global row only)."""
    xs = _dirty_dataset(tmp_path / "x", kind)
    ws = write_npy(tmp_path / "w.npy", make_pair(n=10, m=40, d=4, seed=1)[1])
    res = CliRunner().invoke(cli, ["run", "--x", xs, "--w", ws, "-k", "2", "--x-id-column", "doc",
                                   "--out", str(tmp_path / "o"), "--scheduler", "sync",
                                   "--quiet", "--block-rows", "512"])
    assert res.exit_code == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ddrp: error: "), res.stderr
    line = lines[0]
    for piece in ["lang=fr/part-0.parquet row group 1", "row 251 of the file", "row 851",
                  "id doc='fr-251'"]:
        assert piece in line, (piece, line)
    assert ("column 2" in line) if kind in ("nan", "inf") else \
        ("column 'f2'" in line if kind == "null-scalar" else "column 'vec'" in line)


@pytest.mark.parametrize("fmt", ["npy", "zarr3", "zarr2"])
def test_an_invalid_value_in_an_array_names_row_column_and_chunk(tmp_path: Path,
                                                                 fmt: str) -> None:
    x, w = make_pair(n=1000, m=40, d=4, seed=2)
    x[717, 1] = np.inf
    if fmt == "npy":
        xs = write_npy(tmp_path / "x.npy", x)
    else:
        arr = zarr.create_array(str(tmp_path / "x.zarr"), shape=x.shape, dtype=x.dtype,
                                chunks=(300, 4), zarr_format=3 if fmt == "zarr3" else 2)
        arr[...] = x
        xs = str(tmp_path / "x.zarr")
    res = CliRunner().invoke(cli, ["run", "--x", xs, "--w", write_npy(tmp_path / "w.npy", w),
                                   "-k", "2", "--out", str(tmp_path / "o"), "--scheduler",
                                   "sync", "--quiet", "--block-rows", "512"])
    assert res.exit_code == 2
    line, = res.stderr.strip().splitlines()
    assert f"{xs}: row 717 column 1 is inf" in line, line
    if fmt != "npy":
        assert f"at chunk {'c/2/0' if fmt == 'zarr3' else '2.0'} row 117" in line, line
