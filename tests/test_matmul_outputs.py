"""matmul's outputs as users read them: the search per w row (documents per query), the rows
each result is for, Parquet rows that duckdb, pandas, polars and pyarrow join back to the
ids, and the life cycle every ddrp output has (staged, resumable, URLs)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.dataset as pds
import pyarrow.parquet as pq
import pytest
import xarray as xr
import zarr
from click.testing import CliRunner

import ddrp_dask as dd
from ddrp_cli.main import cli
from ddrp_dask.errors import OptionError, OutputError
from ddrp_dask.io import writer

from .conftest import Interrupted, interrupt_after, make_pair


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Documents X with string ids and a text column, queries W with integer ids; one run."""
    t = tmp_path_factory.mktemp("mm")
    x, w = make_pair(n=500, m=70, d=8, seed=4)
    doc_ids = np.array([f"doc{i:04d}" for i in range(len(x))])
    pq.write_table(pa.table({"doc": doc_ids, "text": [f"text of {d}" for d in doc_ids],
                             "vec": pa.FixedSizeListArray.from_arrays(pa.array(x.ravel()), 8)}),
                   t / "docs.parquet", row_group_size=128)
    q_ids = np.arange(len(w), dtype=np.int64) * 3 + 1000
    pq.write_table(pa.table({"qid": q_ids, "vec": pa.FixedSizeListArray.from_arrays(
        pa.array(w.ravel()), 8)}), t / "queries.parquet")
    out = str(t / "run.zarr")
    dd.execute(dd.plan_run(str(t / "docs.parquet"), str(t / "queries.parquet"), 5, out,
                           x_id_column="doc", w_id_column="qid", block_rows=128),
               scheduler="threads")
    g = zarr.open_group(out, mode="r")
    return {"dir": t, "run": out, "s": g["x"][...].astype(np.float64),
            "t": g["w"][...].astype(np.float64), "doc_ids": doc_ids, "q_ids": q_ids}


def _check_top(scores: np.ndarray, idx: np.ndarray, p: np.ndarray, n: int) -> None:
    """Against an independent numpy top-N of the float64 product ``p`` (rows searched from
    by rows found): the scores are its N largest per row, and the indices point at them."""
    best = -np.sort(-p, axis=1)[:, :n]
    np.testing.assert_allclose(scores, best, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.take_along_axis(p, idx, axis=1), best, rtol=1e-5, atol=1e-5)
    assert all(len(set(row)) == n for row in idx.tolist())


def test_per_w_gives_the_best_x_rows_of_every_w_row(run: dict[str, Any],
                                                     tmp_path: Path) -> None:
    out = str(tmp_path / "per-w.zarr")
    plan = dd.plan_matmul(f"{run['run']}/x", f"{run['run']}/w", out, top=6, per="w",
                          block_rows=16, block_cols=100)
    assert "top 6 X rows per w row" in str(plan)
    assert f"{out}/indices (70 x 6 int64, rows of X for every w row" in str(plan)
    plan.execute("threads")
    g = zarr.open_group(out, mode="r")
    idx, scores = g["indices"][...], g["scores"][...]
    assert idx.shape == (70, 6) and idx.max() < 500
    _check_top(scores, idx, run["t"] @ run["s"].T, 6)
    assert np.array_equal(np.array(g["ids"][...].tolist()), run["doc_ids"][idx])  # x ids
    assert np.array_equal(g["row_ids"][...], run["q_ids"])  # the w rows it is for
    ds = xr.open_zarr(out)
    assert ds["indices"].dims == ("w_row", "rank") and ds["row_ids"].dims == ("w_row",)
    assert ds.attrs["ddrp"]["per"] == "w"


def test_per_x_says_which_rows_it_is_for(run: dict[str, Any], tmp_path: Path) -> None:
    out = str(tmp_path / "per-x.zarr")
    dd.plan_matmul(f"{run['run']}/x", f"{run['run']}/w", out, top=4, block_rows=64,
                   block_cols=30).execute("threads")
    g = zarr.open_group(out, mode="r")
    _check_top(g["scores"][...], g["indices"][...], run["s"] @ run["t"].T, 4)
    assert np.array_equal(g["ids"][...], run["q_ids"][g["indices"][...]])
    assert np.array_equal(np.array(g["row_ids"][...].tolist()), run["doc_ids"])
    assert zarr.open_group(out, mode="r").attrs["ddrp"]["per"] == "x"


def test_parquet_rows_join_back_to_the_ids(run: dict[str, Any], tmp_path: Path) -> None:
    """--per w --format parquet through the CLI, read by duckdb (joined to the documents'
    text by id), pandas, polars and pyarrow, and equal to the Zarr result."""
    out = tmp_path / "per-w.parquet"
    args = ["matmul", "--x-sketch", f"{run['run']}/x", "--w-sketch", f"{run['run']}/w",
            "--top", "5", "--per", "w", "--format", "parquet", "--block-rows", "32",
            "--out", str(out), "--scheduler", "sync"]
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.stderr
    assert sorted(p.name for p in out.iterdir()) == [
        "_ddrp.json", "part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]
    docs = str(run["dir"] / "docs.parquet")
    con = duckdb.connect()
    joined = con.execute(
        f"SELECT t.w_id, t.rank, t.x_id, d.text, t.score FROM read_parquet('{out}/*.parquet') t "
        f"JOIN read_parquet('{docs}') d ON d.doc = t.x_id ORDER BY t.w_row, t.rank").df()
    assert len(joined) == 70 * 5
    assert (joined["text"] == "text of " + joined["x_id"]).all()
    assert joined["rank"].tolist() == [1, 2, 3, 4, 5] * 70
    zref = str(tmp_path / "ref.zarr")
    dd.plan_matmul(f"{run['run']}/x", f"{run['run']}/w", zref, top=5, per="w").execute("sync")
    g = zarr.open_group(zref, mode="r")
    assert np.array_equal(joined["x_id"].to_numpy().reshape(70, 5).astype(str),
                          np.array(g["ids"][...].tolist()))
    np.testing.assert_array_equal(joined["score"].to_numpy().reshape(70, 5), g["scores"][...])
    assert np.array_equal(joined["w_id"].to_numpy()[::5], run["q_ids"])
    # the other readers see the same rows
    frames = [pds.dataset(str(out), format="parquet").to_table().to_pandas(),
              pd.read_parquet(out), pl.read_parquet(f"{out}/*.parquet").to_pandas()]
    for df in frames:
        df = df.sort_values(["w_row", "rank"]).reset_index(drop=True)
        assert list(df.columns) == ["w_row", "w_id", "rank", "x_row", "x_id", "score"]
        assert np.array_equal(df["x_row"].to_numpy().reshape(70, 5), g["indices"][...])
    _check_top(g["scores"][...], g["indices"][...], run["t"] @ run["s"].T, 5)


def test_without_ids_parquet_names_rows(tmp_path: Path) -> None:
    x, w = make_pair(n=90, m=40, d=6, seed=8)
    xs = str(tmp_path / "x.zarr")
    for name, a in (("x.zarr", x), ("w.zarr", w)):
        z = zarr.create_array(str(tmp_path / name), shape=a.shape, dtype="float32",
                              chunks=(32, 6))
        z[...] = a
    out = tmp_path / "t"
    dd.plan_matmul(xs, str(tmp_path / "w.zarr"), str(out), top=3,
                   format="parquet").execute("sync")
    df = pd.read_parquet(out).sort_values(["x_row", "rank"])
    assert list(df.columns) == ["x_row", "rank", "w_row", "score"]
    p = x.astype(np.float64) @ w.T.astype(np.float64)
    _check_top(df["score"].to_numpy().reshape(90, 3), df["w_row"].to_numpy().reshape(90, 3),
               p, 3)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"per": "w"}, "--per w needs --top N"),
    ({"format": "parquet"}, "--format parquet writes top-N rows and needs --top N"),
    ({"per": "y", "top": 2}, "--per must be 'x' or 'w', got 'y'"),
    ({"per": "w", "top": 501}, "--top must be between 1 and the 500 rows of the x sketch"),
])
def test_refused_layouts(run: dict[str, Any], tmp_path: Path, kwargs: dict[str, Any],
                         match: str) -> None:
    with pytest.raises(OptionError, match=match):
        dd.plan_matmul(f"{run['run']}/x", f"{run['run']}/w", str(tmp_path / "o"), **kwargs)
    assert not (tmp_path / "o").exists()


def _tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


@pytest.mark.parametrize(("top", "fmt"), [(None, "zarr"), (4, "zarr"), (4, "parquet")])
def test_an_interrupted_matmul_leaves_nothing_to_read_and_resumes(
        run: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        top: int | None, fmt: str) -> None:
    """Killed after 2 of its tasks: OUT does not exist (the work is hidden beside it, marked
    incomplete); without --resume or --overwrite it is refused; --resume writes the other
    tasks only and gives the bytes of an uninterrupted run."""
    xs, ws = f"{run['run']}/x", f"{run['run']}/w"
    kw: dict[str, Any] = {"top": top, "format": fmt, "block_rows": 100, "block_cols": 30}
    ref = tmp_path / "ref"
    dd.plan_matmul(xs, ws, str(ref), **kw).execute("sync")
    out = tmp_path / "out"
    if fmt == "zarr":
        interrupt_after(monkeypatch, "zarr", 2)
    else:
        real, done = writer.write_table, {"n": 0}

        def write(*args: Any, **kwargs: Any) -> None:
            if done["n"] >= 2:
                raise Interrupted
            done["n"] += 1
            real(*args, **kwargs)

        monkeypatch.setattr(writer, "write_table", write)
    with pytest.raises(Interrupted):
        dd.plan_matmul(xs, ws, str(out), **kw).execute("sync")
    monkeypatch.undo()
    assert not out.exists()
    stage = tmp_path / ".out.ddrp-partial"
    assert dd.io.lifecycle.output_state(str(stage), staged=False) == "incomplete"
    with pytest.raises(OutputError, match="incomplete ddrp output"):
        dd.plan_matmul(xs, ws, str(out), **kw)
    with pytest.raises(OutputError, match=r"cannot resume .*top=7"):
        dd.plan_matmul(xs, ws, str(out), **{**kw, "top": 7}, resume=True)
    kept = _tree_bytes(stage)
    written: list[str] = []
    real_rows, real_table = writer.write_rows, writer.write_table
    monkeypatch.setattr(writer, "write_rows",
                        lambda path, *a: (written.append(path), real_rows(path, *a))[1])
    monkeypatch.setattr(writer, "write_table",
                        lambda path, *a: (written.append(path), real_table(path, *a))[1])
    dd.plan_matmul(xs, ws, str(out), **kw, resume=True).execute("sync")
    monkeypatch.undo()
    tasks = 5 * 3 if top is None else 5  # product: 5 x 3 tiles; top: 5 row blocks
    data = [p for p in written if "_progress_" not in p and "ids" not in p]
    per_task = 1 if fmt == "parquet" or top is None else 2  # indices and scores
    assert len(data) == (tasks - 2) * per_task  # the two finished tasks were kept
    assert not stage.exists() and _tree_bytes(out) == _tree_bytes(ref)
    assert kept  # (the staged output held the finished tasks)
    res = CliRunner().invoke(cli, ["matmul", "--x-sketch", xs, "--w-sketch", ws, "--out",
                                   str(out), "--resume", "--scheduler", "sync", "--block-rows",
                                   "100", "--block-cols", "30", "--format", fmt,
                                   *(["--top", str(top)] if top else [])])
    assert res.exit_code == 0 and "already complete (--resume): nothing written" in res.stderr


def test_a_url_output_is_written_in_place_and_marked(run: dict[str, Any]) -> None:
    import fsspec

    out = "memory://ddrp-matmul/top"
    dd.plan_matmul(f"{run['run']}/x", f"{run['run']}/w", out, top=3).execute("sync")
    g = zarr.open_group(out, mode="r")
    assert g.attrs["complete"] is True and g["indices"].shape == (500, 3)
    pout = "memory://ddrp-matmul/top-pq"
    dd.plan_matmul(f"{run['run']}/x", f"{run['run']}/w", pout, top=3,
                   format="parquet").execute("sync")
    fs, root = fsspec.core.url_to_fs(pout)
    assert fs.cat_file(f"{root}/_ddrp.json").startswith(b'{\n "complete": true')
    with fs.open(f"{root}/part-00000.parquet", "rb") as fh:
        assert pq.read_table(fh).num_rows == 500 * 3
    fs.rm("/ddrp-matmul", recursive=True)
