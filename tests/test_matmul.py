"""matmul: the product and the top-N against numpy on real Zarr sketches, exact tie-breaking
under any tiling, a LocalCluster, output safety, refused inputs, and the command."""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

import ddrp_dask as dd
from ddrp_cli.main import cli
from ddrp_dask.errors import InputError, OptionError, OutputError
from ddrp_dask.maths.topn import merge_top_n, top_n, top_n_products

from .conftest import make_pair, write_npy, write_zarr


def _reference_top(p: np.ndarray, n: int) -> np.ndarray:
    """Score descending, then index ascending (numpy's lexsort over the whole row)."""
    cols = np.broadcast_to(np.arange(p.shape[1]), p.shape)
    return np.lexsort((cols, -p), axis=1)[:, :n]


@settings(max_examples=60, deadline=None)
@given(rows=st.integers(1, 12), cols=st.integers(1, 40), n=st.integers(1, 45),
       levels=st.integers(1, 5), cuts=st.lists(st.integers(1, 39), max_size=4),
       seed=st.integers(0, 2**16))
def test_top_n_is_exact_with_ties_for_any_blocking(rows: int, cols: int, n: int, levels: int,
                                                   cuts: list[int], seed: int) -> None:
    rng = np.random.default_rng(seed)
    scores = rng.integers(0, levels, (rows, cols)).astype(np.float32)  # many exact ties
    ref = _reference_top(scores, n)
    idx, val = top_n(scores, n)
    assert np.array_equal(idx, ref)
    assert np.array_equal(val, np.take_along_axis(scores, ref, axis=1))
    bounds = [0, *sorted({c for c in cuts if c < cols}), cols]
    parts = [top_n(scores[:, a:b], n, offset=a) for a, b in pairwise(bounds)]
    merged, _ = merge_top_n(parts[::-1], n)  # the order of the parts does not matter
    assert np.array_equal(merged, ref)


@settings(max_examples=60, deadline=None)
@given(rows=st.integers(1, 9), cols=st.integers(1, 60), n=st.integers(1, 12),
       max_scores=st.integers(1, 200), seed=st.integers(0, 2**16))
def test_top_n_products_in_pieces(rows: int, cols: int, n: int, max_scores: int,
                                  seed: int) -> None:
    rng = np.random.default_rng(seed)
    a = rng.integers(-2, 3, (rows, 3)).astype(np.float32)  # exact products, many ties
    b = rng.integers(-2, 3, (cols, 3)).astype(np.float32)
    idx, val = top_n_products(a, b, n, offset=100, max_scores=max_scores)
    ref = _reference_top(a @ b.T, n)
    assert np.array_equal(idx, ref + 100)
    assert np.array_equal(val, np.take_along_axis(a @ b.T, ref, axis=1))


def test_nan_ranks_last() -> None:
    idx, val = top_n(np.array([[np.nan, 1.0, -np.inf, 0.0]]), 4)
    assert idx.tolist() == [[1, 3, 0, 2]] and np.isneginf(val[0, 2:]).all()
    a = np.array([[1.0], [np.nan]], dtype=np.float32)
    b = np.arange(6, dtype=np.float32)[:, None]
    idx, _ = top_n_products(a, b, 2, max_scores=2)
    assert idx.tolist() == [[5, 4], [0, 1]]


@pytest.fixture(scope="module")
def sketches(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Float sketches in Zarr (chunks unlike the task blocks) and small-integer ones (exact
    float32 products, so exact ties)."""
    t = tmp_path_factory.mktemp("sketches")
    rng = np.random.default_rng(1)
    a = rng.standard_normal((230, 6)).astype(np.float32)
    b = rng.standard_normal((170, 6)).astype(np.float32)
    ai = rng.integers(-2, 3, (230, 4)).astype(np.float32)
    bi = rng.integers(-2, 3, (170, 4)).astype(np.float32)
    return {"a": a, "b": b, "ai": ai, "bi": bi, "dir": t,
            "A": write_zarr(t / "a.zarr", a, 64), "B": write_zarr(t / "b.zarr", b, 100),
            "Ai": write_zarr(t / "ai.zarr", ai, 50), "Bi": write_zarr(t / "bi.zarr", bi, 33)}


def test_product_matches_numpy(tmp_path: Path, sketches: dict[str, Any]) -> None:
    out = str(tmp_path / "p.zarr")
    plan = dd.plan_matmul(sketches["A"], sketches["B"], out, block_rows=70, block_cols=45)
    assert len(plan.row_ranges()) == 4 and len(plan.col_ranges()) == 4
    dd.execute_matmul(plan, scheduler="threads")
    g = zarr.open_group(out, mode="r")
    assert g.attrs["complete"] is True
    facts = g.attrs["ddrp"]
    assert facts["command"] == "matmul" and facts["k"] == 6 and facts["top"] is None
    assert set(facts["inputs"]) == {"x_sketch", "w_sketch"} and "ddrp_dask" in facts["versions"]
    prod = g["product"]
    assert prod.dtype == np.float32 and prod.shape == (230, 170) and prod.chunks == (70, 45)
    np.testing.assert_allclose(prod[...], sketches["a"] @ sketches["b"].T, rtol=1e-5,
                               atol=1e-5)


@pytest.mark.parametrize(("rows", "cols"), [(230, 170), (64, 20), (40, 11)])
def test_top_matches_the_sorted_numpy_product_exactly(tmp_path: Path, sketches: dict[str, Any],
                                                      rows: int, cols: int) -> None:
    out = str(tmp_path / "t.zarr")
    dd.execute_matmul(dd.plan_matmul(sketches["Ai"], sketches["Bi"], out, top=12,
                                     block_rows=rows, block_cols=cols), scheduler="threads")
    g = zarr.open_group(out, mode="r")
    p = sketches["ai"] @ sketches["bi"].T  # small integers: exact, with many ties
    ref = _reference_top(p, 12)
    assert g["indices"].dtype == np.int64 and g["scores"].dtype == np.float32
    assert np.array_equal(g["indices"][...], ref)
    assert np.array_equal(g["scores"][...], np.take_along_axis(p, ref, axis=1))
    assert g.attrs["complete"] is True and g.attrs["ddrp"]["top"] == 12


def test_top_on_float_sketches(tmp_path: Path, sketches: dict[str, Any]) -> None:
    out = str(tmp_path / "t.zarr")
    dd.execute_matmul(dd.plan_matmul(sketches["A"], sketches["B"], out, top=5, block_rows=50,
                                     block_cols=30), scheduler="sync")
    g = zarr.open_group(out, mode="r")
    p = sketches["a"].astype(np.float64) @ sketches["b"].T.astype(np.float64)
    best = -np.sort(-p, axis=1)[:, :5]
    np.testing.assert_allclose(g["scores"][...], best, rtol=1e-5, atol=1e-5)
    got = np.take_along_axis(p, g["indices"][...], axis=1)
    np.testing.assert_allclose(got, best, rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Two ddrp runs of the same data with different seeds."""
    t = tmp_path_factory.mktemp("runs")
    x, w = make_pair(n=400, m=150, d=10, seed=3)
    xp, wp = write_npy(t / "x.npy", x), write_npy(t / "w.npy", w)
    for seed in (0, 1):
        dd.execute(dd.plan_run(xp, wp, 6, str(t / f"run{seed}.zarr"), seed=seed,
                               block_rows=128), scheduler="threads")
    return {"x": x, "w": w, "dir": t, "run0": str(t / "run0.zarr"), "run1": str(t / "run1.zarr")}


@pytest.mark.cluster
def test_run_sketches_on_a_local_cluster(tmp_path: Path, runs: dict[str, Any],
                                         cluster2: Any) -> None:
    run = runs["run0"]
    out = str(tmp_path / "top.zarr")
    plan = dd.plan_matmul(f"{run}/x", f"{run}/w", out, top=7, block_rows=100, block_cols=40)
    assert plan.origins["x"]["side"] == "x" and plan.origins["w"]["method"] == "auto"
    dd.execute_matmul(plan, scheduler=cluster2)
    g = zarr.open_group(run, mode="r")
    s, t = g["x"][...], g["w"][...]
    p = s.astype(np.float64) @ t.T.astype(np.float64)
    top = zarr.open_group(out, mode="r")
    np.testing.assert_allclose(top["scores"][...], -np.sort(-p, axis=1)[:, :7], rtol=1e-5,
                               atol=1e-4)
    # and the estimate is close to the exact product, as the model predicted
    exact = runs["x"].astype(np.float64) @ runs["w"].T
    mse = np.mean((p - exact) ** 2)
    assert mse < 5 * dd.load_model(f"{run}/model").info["predicted"]["auto"]


def test_output_safety(tmp_path: Path, runs: dict[str, Any]) -> None:
    run = runs["run0"]
    out = str(tmp_path / "p.zarr")
    dd.execute_matmul(dd.plan_matmul(f"{run}/x", f"{run}/w", out), scheduler="sync")
    with pytest.raises(OutputError, match="exists; pass --overwrite"):
        dd.plan_matmul(f"{run}/x", f"{run}/w", out)
    plan = dd.plan_matmul(f"{run}/x", f"{run}/w", out, top=3, overwrite=True)
    dd.execute_matmul(plan, scheduler="sync")
    assert set(zarr.open_group(out, mode="r").array_keys()) == {"indices", "scores"}
    with pytest.raises(OutputError, match="overlaps input"):
        dd.plan_matmul(f"{run}/x", f"{run}/w", f"{run}/product")
    (tmp_path / "mine").mkdir()
    with pytest.raises(OutputError, match="not a ddrp output"):
        dd.plan_matmul(f"{run}/x", f"{run}/w", str(tmp_path / "mine"), overwrite=True)


def test_incomplete_sketches_are_refused(tmp_path: Path, runs: dict[str, Any]) -> None:
    import shutil

    broken = tmp_path / "broken.zarr"
    shutil.copytree(runs["run0"], broken)
    g = zarr.open_group(str(broken), mode="r+")
    g.attrs["complete"] = False
    with pytest.raises(InputError, match="is incomplete"):
        dd.plan_matmul(f"{broken}/x", f"{broken}/w", str(tmp_path / "o.zarr"))


@pytest.mark.parametrize(("xs", "ws", "kwargs", "error", "match"), [
    ("{A}", "{Bi}", {}, OptionError, "got K=4 for --w-sketch .* but K=6 for --x-sketch"),
    ("{run0}/w", "{run0}/w", {}, OptionError, "--x-sketch .*run0.zarr/w holds w-side"),
    ("{run0}/x", "{run0}/x", {}, OptionError, "--w-sketch .*run0.zarr/x holds x-side"),
    ("{run0}/x", "{run1}/w", {}, OptionError,
     "different models: --x-sketch from model [0-9a-f]{16} .*run0.zarr.*--w-sketch from "
     "model [0-9a-f]{16} .*run1.zarr"),
    ("{A}", "{dir}/nope.zarr", {}, InputError, "--w-sketch: .*nope.zarr: no such file"),
    ("{one_d}", "{B}", {}, InputError, "--x-sketch: .*expected a 2-D Zarr array"),
    ("{run0}", "{B}", {}, InputError, "is a Zarr group with arrays"),
    ("{A}", "{B}", {"top": 171}, OptionError, "--top must be between 1 and the 170 rows"),
    ("{A}", "{B}", {"top": 0}, OptionError, "--top must be between 1"),
    ("{A}", "{B}", {"block_cols": 0}, OptionError, "block cols must be at least 1, got 0"),
])
def test_refused_inputs(tmp_path: Path, sketches: dict[str, Any], runs: dict[str, Any],
                        xs: str, ws: str, kwargs: dict[str, Any], error: type[Exception],
                        match: str) -> None:
    zarr.create_array(str(tmp_path / "v.zarr"), shape=(10,), dtype="float32")
    paths = {**sketches, **runs, "one_d": str(tmp_path / "v.zarr")}
    paths["dir"] = str(tmp_path)
    with pytest.raises(error, match=match):
        dd.plan_matmul(xs.format(**paths), ws.format(**paths), str(tmp_path / "o.zarr"),
                       **kwargs)
    assert not (tmp_path / "o.zarr").exists()


def _invoke(*args: str) -> tuple[int, str, str]:
    res = CliRunner().invoke(cli, list(args))
    return res.exit_code, res.stdout, res.stderr


def test_matmul_command(tmp_path: Path, runs: dict[str, Any]) -> None:
    run = runs["run0"]
    out = tmp_path / "t.zarr"
    base = ["matmul", "--x-sketch", f"{run}/x", "--w-sketch", f"{run}/w", "--out", str(out),
            "--scheduler", "threads"]
    code, stdout, _ = _invoke(*base, "--top", "4", "--dry-run")
    assert code == 0 and "ddrp matmul plan" in stdout and "top 4 W rows" in stdout
    assert not out.exists()
    code, _, stderr = _invoke(*base, "--top", "4", "--block-cols", "64")
    assert code == 0, stderr
    assert "wrote" in stderr
    g = zarr.open_group(str(out), mode="r")
    assert g["indices"].shape == (400, 4) and g.attrs["complete"] is True
    s, t = (zarr.open_group(run, mode="r")[k][...] for k in ("x", "w"))
    np.testing.assert_allclose(g["scores"][...], -np.sort(-(s @ t.T), axis=1)[:, :4],
                               rtol=1e-5, atol=1e-4)
    for extra, match in ((["--top", "4"], "exists; pass --overwrite"),
                         (["--w-sketch", f"{runs['run1']}/w", "--overwrite"],
                          "different models")):
        code, _, stderr = _invoke(*base, *extra)
        assert code == 2 and stderr.startswith("ddrp: error:") and match in stderr, stderr
        assert "Traceback" not in stderr


def test_nan_sketch_rows_give_nan_and_no_top_entries(tmp_path: Path,
                                                     sketches: dict[str, Any]) -> None:
    """Rows left out by --on-invalid skip are NaN in the sketches."""
    a, b = sketches["ai"].copy(), sketches["bi"].copy()
    a[151] = np.nan
    b[[3, 40]] = np.nan
    xs, ws = write_zarr(tmp_path / "a.zarr", a, 64), write_zarr(tmp_path / "b.zarr", b, 64)
    dd.execute_matmul(dd.plan_matmul(xs, ws, str(tmp_path / "p.zarr"), block_rows=50,
                                     block_cols=30), scheduler="threads")
    prod = zarr.open_array(str(tmp_path / "p.zarr" / "product"))[...]
    assert np.isnan(prod[151]).all() and np.isnan(prod[:, [3, 40]]).all()
    assert np.array_equal(np.isnan(prod).sum(), 170 + 2 * 229)
    dd.execute_matmul(dd.plan_matmul(xs, ws, str(tmp_path / "t.zarr"), top=168, block_rows=50,
                                     block_cols=30), scheduler="threads")
    g = zarr.open_group(str(tmp_path / "t.zarr"), mode="r")
    idx, val = g["indices"][...], g["scores"][...]
    assert (idx[151] == -1).all() and np.isnan(val[151]).all()
    others = np.delete(np.arange(230), 151)
    assert not np.isin(idx[others], [3, 40, -1]).any()  # 168 valid W rows for every x row
    ok = np.isfinite(prod[others][:, np.delete(np.arange(170), [3, 40])])
    assert ok.all()
    ref = _reference_top(np.where(np.isnan(prod), -np.inf, prod), 168)
    assert np.array_equal(idx[others], ref[others])


def test_top_writes_the_w_ids_when_the_sketches_have_them(tmp_path: Path) -> None:
    """run --w-id-column (int ids) and project --id-column (string ids): OUT/ids holds the
    ids of the W rows in OUT/indices; -1 / "" where the index is -1 (an x row skipped)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from .conftest import write_parquet_list

    x, w = make_pair(n=300, m=90, d=8, seed=5)
    x[7] = np.nan
    xp = write_npy(tmp_path / "x.npy", x)
    wp = write_parquet_list(tmp_path / "w.parquet", w, 40)  # ids 0, 10, 20, ...
    run = str(tmp_path / "run.zarr")
    dd.execute(dd.plan_run(xp, wp, 5, run, w_id_column="id", on_invalid="skip",
                           block_rows=128), scheduler="threads")
    plan = dd.plan_matmul(f"{run}/x", f"{run}/w", str(tmp_path / "t.zarr"), top=4,
                          block_rows=64, block_cols=32)
    assert any(o.startswith(f"{tmp_path / 't.zarr'}/ids (300 x 4 int64") for o in plan.outputs)
    dd.execute_matmul(plan, scheduler="threads")
    g = zarr.open_group(str(tmp_path / "t.zarr"), mode="r")
    idx, ids = g["indices"][...], g["ids"][...]
    assert ids.dtype == np.int64 and (idx[7] == -1).all() and (ids[7] == -1).all()
    assert np.array_equal(ids, np.where(idx >= 0, idx * 10, -1))

    names = np.array([f"q{i}" for i in range(len(w))])
    pq.write_table(pa.table({"qid": names, "vec": pa.FixedSizeListArray.from_arrays(
        pa.array(w.ravel()), w.shape[1])}), tmp_path / "ws.parquet")
    proj = str(tmp_path / "pw.zarr")
    dd.execute(dd.plan_project(f"{run}/model", "w", str(tmp_path / "ws.parquet"), proj,
                               id_column="qid"), scheduler="threads")
    code = CliRunner().invoke(cli, ["matmul", "--x-sketch", f"{run}/x", "--w-sketch",
                                    f"{proj}/sketch", "--top", "4", "--out",
                                    str(tmp_path / "s.zarr"), "--scheduler", "threads",
                                    "--quiet"]).exit_code
    assert code == 0
    g = zarr.open_group(str(tmp_path / "s.zarr"), mode="r")
    assert np.array_equal(g["indices"][...], idx)
    got = np.array(g["ids"][...].tolist())
    assert np.array_equal(got, np.where(idx >= 0, names[np.maximum(idx, 0)], ""))


def test_top_without_ids_writes_no_ids(tmp_path: Path, runs: dict[str, Any]) -> None:
    out = str(tmp_path / "t.zarr")
    dd.execute_matmul(dd.plan_matmul(f"{runs['run0']}/x", f"{runs['run0']}/w", out, top=3),
                      scheduler="threads")
    assert "ids" not in zarr.open_group(out, mode="r")
