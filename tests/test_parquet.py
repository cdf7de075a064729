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
