"""Parquet datasets in place: partitioned directories, globbed scalar columns, ids."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zarr
from click.testing import CliRunner

import ddrp_dask as dd
from ddrp_cli.main import cli
from ddrp_dask.errors import InputError
from ddrp_dask.io import lifecycle

from .conftest import make_pair, write_npy


def _write_partitioned(root: Path, x: np.ndarray, ids: np.ndarray) -> None:
    """Hive-partitioned: part=a holds the first 700 rows (2 files), part=b the rest."""
    cuts = [(root / "part=a" / "f0.parquet", 0, 300), (root / "part=a" / "f1.parquet", 300, 700),
            (root / "part=b" / "f0.parquet", 700, len(x))]
    for path, a, b in cuts:
        path.parent.mkdir(parents=True, exist_ok=True)
        table = pa.table({
            "doc_id": ids[a:b],
            "emb": pa.FixedSizeListArray.from_arrays(pa.array(x[a:b].ravel()), x.shape[1]),
            "title": [f"t{i}" for i in range(a, b)],
        })
        pq.write_table(table, path, row_group_size=128, use_dictionary=False)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    t = tmp_path_factory.mktemp("pq")
    x, w = make_pair(n=1000, m=200, d=10, seed=6)
    ids = np.array([f"doc-{i:05d}" for i in range(len(x))])
    _write_partitioned(t / "docs", x, ids)
    wq = t / "queries.parquet"
    pq.write_table(pa.table({"qid": np.arange(len(w)) * 7, **{f"w{j}": w[:, j] for j in
                                                              range(w.shape[1])}}), wq,
                   row_group_size=64)
    return {"x": x, "w": w, "ids": ids, "docs": str(t / "docs"), "queries": str(wq),
            "x_npy": write_npy(t / "x.npy", x), "w_npy": write_npy(t / "w.npy", w)}


def test_partitioned_dataset_ids_and_globbed_columns(tmp_path: Path,
                                                     dataset: dict[str, object]) -> None:
    out = str(tmp_path / "o.zarr")
    plan = dd.plan_run(str(dataset["docs"]), str(dataset["queries"]), 6, out, block_rows=256,
                       w_columns="w*", x_id_column="doc_id", w_id_column="qid")
    assert plan.sources["w"].columns == tuple(f"w{j}" for j in range(10))
    assert len(plan.sources["x"].files) == 3
    dd.execute(plan, scheduler="threads")
    g = zarr.open_group(out, mode="r")
    assert g.attrs["complete"] is True
    assert g["x_ids"][...].tolist() == list(dataset["ids"])  # type: ignore[call-overload]
    assert g["w_ids"][...].tolist() == list(np.arange(200) * 7)
    # the same rows from .npy give the same sketches: row order is file order, row groups
    ref = str(tmp_path / "ref.zarr")
    dd.execute(dd.plan_run(str(dataset["x_npy"]), str(dataset["w_npy"]), 6, ref,
                           block_rows=256), scheduler="threads")
    r = zarr.open_group(ref, mode="r")
    assert g["x"][...].tobytes() == r["x"][...].tobytes()
    assert g["w"][...].tobytes() == r["w"][...].tobytes()


def test_project_with_id_column_cli(tmp_path: Path, dataset: dict[str, object]) -> None:
    model = str(tmp_path / "m")
    runner = CliRunner()
    res = runner.invoke(cli, ["fit", "--x", str(dataset["docs"]), "--w", str(dataset["w_npy"]),
                              "-k", "5", "--out", model, "--scheduler", "sync", "--quiet"])
    assert res.exit_code == 0, res.stderr
    out = str(tmp_path / "p.zarr")
    res = runner.invoke(cli, ["project", "--model", model, "--side", "x", "--input",
                              str(dataset["docs"]), "--id-column", "doc_id", "--out", out,
                              "--scheduler", "threads", "--quiet"])
    assert res.exit_code == 0, res.stderr
    g = zarr.open_group(out, mode="r")
    assert g["ids"][...].tolist() == list(dataset["ids"])  # type: ignore[call-overload]
    assert g["sketch"].shape == (1000, 5)


def test_id_column_errors(dataset: dict[str, object]) -> None:
    docs = str(dataset["docs"])
    with pytest.raises(InputError, match="no id column 'nope'"):
        dd.open_source(docs, id_column="nope")
    with pytest.raises(InputError, match=r"'emb' has type fixed_size_list.*ids must be"):
        dd.open_source(docs, id_column="emb")
    with pytest.raises(InputError, match="'qid' is the id column"):
        dd.open_source(str(dataset["queries"]), "qid,w0", id_column="qid")
    with pytest.raises(InputError, match="no column matches 'z\\*'"):
        dd.open_source(str(dataset["queries"]), "z*")
    with pytest.raises(InputError, match="columns and id columns are for Parquet"):
        dd.open_source(str(dataset["x_npy"]), id_column="doc_id")
    # by default the id column is not taken for a vector coordinate
    assert "qid" not in dd.open_source(str(dataset["queries"]), id_column="qid").columns


def test_parquet_output_mirrors_files_and_joins_back(tmp_path: Path,
                                                     dataset: dict[str, object]) -> None:
    out = tmp_path / "pq-out"
    plan = dd.plan_run(str(dataset["docs"]), str(dataset["w_npy"]), 6, str(out), block_rows=256,
                       x_id_column="doc_id", format="parquet")
    assert "Parquet mirroring" in str(plan)
    dd.execute(plan, scheduler="threads")
    files = sorted(str(p.relative_to(out / "x")) for p in (out / "x").rglob("*.parquet"))
    assert files == ["part=a/f0.parquet", "part=a/f1.parquet", "part=b/f0.parquet"]
    assert sorted(p.name for p in (out / "w").iterdir()) == ["part-00000.parquet"]
    marker = lifecycle.read_marker(str(out))
    assert marker is not None and marker["complete"] is True
    table = pq.read_table(out / "x")  # the mirrored dataset reads back, partitions included
    assert table.schema.field("sketch").type == pa.list_(pa.float32(), 6)
    got = dict(zip(table.column("doc_id").to_pylist(),
                   np.array(table.column("sketch").to_pylist(), np.float32), strict=True))
    ref = str(tmp_path / "ref.zarr")
    dd.execute(dd.plan_run(str(dataset["docs"]), str(dataset["w_npy"]), 6, ref, block_rows=256),
               scheduler="threads")
    sx = zarr.open_group(ref, mode="r")["x"][...]
    for i in (0, 299, 300, 999):
        assert np.allclose(got[str(dataset["ids"][i])], sx[i], rtol=1e-6, atol=1e-5)  # type: ignore[index]
    w_rows = pq.read_table(out / "w")
    assert w_rows.column("row").to_pylist() == list(range(200))
    # the inputs were not touched, and an existing output needs --overwrite
    assert sorted(p.name for p in Path(str(dataset["docs"])).rglob("*")) == \
        sorted(["part=a", "part=b", "f0.parquet", "f1.parquet", "f0.parquet"])
    with pytest.raises(dd.DdrpError, match="exists; pass --overwrite"):
        dd.plan_run(str(dataset["docs"]), str(dataset["w_npy"]), 6, str(out), format="parquet")


@pytest.fixture(scope="module")
def dirty(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """A list column with a null vector, a short list, a null value and a NaN."""
    t = tmp_path_factory.mktemp("dirty")
    x, _ = make_pair(n=600, m=10, d=4, seed=9)
    rows: list[object] = [list(map(float, r)) for r in x]
    rows[5] = None
    rows[130] = [1.0, 2.0]
    rows[131] = [1.0, None, 2.0, 3.0]
    rows[402] = [np.nan, 1.0, 2.0, 3.0]
    ids = [f"r{i}" for i in range(len(x))]
    pq.write_table(pa.table({"id": ids, "v": pa.array(rows, pa.list_(pa.float32()))}),
                   t / "dirty.parquet", row_group_size=128)
    return {"x": x, "path": str(t / "dirty.parquet"), "bad": [5, 130, 131, 402]}


def test_invalid_rows_fail_by_default_naming_file_group_row(tmp_path: Path,
                                                            dirty: dict[str, object]) -> None:
    w = write_npy(tmp_path / "w.npy", np.ones((3, 4), np.float32))
    plan = dd.plan_run(str(dirty["path"]), w, 4, str(tmp_path / "o.zarr"), block_rows=256)
    # whichever bad block a task meets first is named, with its file, row group and row
    with pytest.raises(dd.DdrpError, match=r"dirty.parquet( row group [0-3]: column 'v'|:) "
                                           r"row (5 has a null vector|130 has 2 values|131 "
                                           r"holds a null|402 column 0 is nan)"):
        dd.execute(plan, scheduler="sync")


def test_on_invalid_skip_lists_and_excludes_rows(tmp_path: Path,
                                                 dirty: dict[str, object]) -> None:
    x = np.asarray(dirty["x"])
    bad = list(dirty["bad"])  # type: ignore[call-overload]
    w = write_npy(tmp_path / "w.npy", make_pair(n=10, m=50, d=4, seed=1)[1])
    out = str(tmp_path / "o.zarr")
    res = CliRunner().invoke(cli, ["run", "--x", str(dirty["path"]), "--w", w, "-k", "4",
                                   "--out", out, "--x-id-column", "id", "--on-invalid", "skip",
                                   "--block-rows", "256", "--scheduler", "threads", "--quiet"])
    assert res.exit_code == 0, res.stderr
    assert "skipped 4 invalid row(s) of x" in res.stderr
    g = zarr.open_group(out, mode="r")
    assert g["x_skipped_rows"][...].tolist() == bad
    assert g["x_skipped_ids"][...].tolist() == [f"r{i}" for i in bad]
    assert g["w_skipped_rows"].shape == (0,)
    assert g.attrs["ddrp"]["skipped"] == {"x": 4, "w": 0}
    sx = g["x"][...]
    assert np.isnan(sx[bad]).all() and np.isfinite(np.delete(sx, bad, axis=0)).all()
    # the statistics left the bad rows out: the model equals one fitted on the clean rows
    clean = write_npy(tmp_path / "clean.npy", np.delete(x, bad, axis=0))
    ref = dd.fit_model(dd.plan_fit(clean, w, 4, str(tmp_path / "m"), block_rows=256),
                       scheduler="threads")
    assert ref.stats_x is not None and ref.stats_x.n == 596
    got = dd.load_model(out + "/model")
    assert got.stats_x is not None and got.stats_x.n == 596
    assert np.allclose(got.stats_x.mean, ref.stats_x.mean, rtol=1e-12)
    # Parquet output leaves the rows out and lists them in the marker
    pout = tmp_path / "p"
    dd.execute(dd.plan_run(str(dirty["path"]), w, 4, str(pout), block_rows=256,
                           format="parquet", on_invalid="skip"), scheduler="threads")
    marker = lifecycle.read_marker(str(pout))
    assert marker is not None and marker["ddrp"]["skipped_rows"]["x"] == bad
    assert pq.read_table(pout / "x").num_rows == 596
