"""Quantized sketches through the pipeline (``--dtype``, ``io.codes``): the stored codes are
the numpy encoding of the float32 sketches, the same bytes on every scheduler, format and
after a resume; ``matmul`` (full and top-N), ``project``, the estimator, xarray and Parquet
readers see the decoded values."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
import zarr

import ddrp_dask as dd
from ddrp_dask.errors import InputError, OptionError
from ddrp_dask.maths import quantize as q
from ddrp_dask.report import format_report

from .conftest import (
    interrupt_after,
    interrupted_in_a_task,
    make_pair,
    write_npy,
    write_parquet_list,
)

BLOCK = 300
K = 8


@pytest.fixture(scope="module")
def pair() -> tuple[np.ndarray, np.ndarray]:
    return make_pair(n=1300, m=400, d=16, seed=2)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory,
          pair: tuple[np.ndarray, np.ndarray]) -> dict[str, str]:
    x, w = pair
    t = tmp_path_factory.mktemp("qinputs")
    return {"x": write_npy(t / "x.npy", x), "w": write_npy(t / "w.npy", w),
            "x_parquet": write_parquet_list(t / "x.parquet", x, 250)}


@pytest.fixture(scope="module")
def float32_run(tmp_path_factory: pytest.TempPathFactory,
                files: dict[str, str]) -> tuple[dd.SketchModel, np.ndarray, np.ndarray]:
    """The float32 run of the same plan: the sketches every layout encodes."""
    out = tmp_path_factory.mktemp("q32") / "out.zarr"
    model = dd.execute(dd.plan_run(files["x"], files["w"], K, str(out), seed=3,
                                   block_rows=BLOCK), scheduler="sync")
    g = zarr.open_group(str(out), mode="r")
    return model, g["x"][...], g["w"][...]


def _run(out: Path, files: dict[str, str], dtype: str, scheduler: Any = "sync",
         fmt: str = "zarr", x: str = "x") -> dd.SketchModel:
    plan = dd.plan_run(files[x], files["w"], K, str(out), seed=3, block_rows=BLOCK,
                       dtype=dtype, format=fmt)
    return dd.execute(plan, scheduler=scheduler)


def _zarr_codes(out: Path, side: str) -> dict[str, bytes]:
    g = zarr.open_group(str(out), mode="r")
    return {name: g[name][...].tobytes() for name in sorted(g.array_keys())
            if name == side or (name.startswith(f"{side}_") and not name.endswith("ids"))}


def _expected(layout: q.Layout, s32: np.ndarray, side: str, array: str = "") -> dict[str,
                                                                                      bytes]:
    """The arrays numpy's encoding of the float32 sketch gives (names as io.codes writes)."""
    codes = q.encode(s32, layout, 3, side, 0)
    array = array or side
    out = {}
    if layout.wide:
        out[array] = codes.wide.tobytes()
        out[f"{array}_scale"] = codes.wide_scale[:, None].tobytes()
    if layout.narrow:
        tail = "_tail" if layout.wide else ""
        out[array + tail] = codes.narrow.tobytes()
        out[f"{array}{tail}_scale"] = codes.narrow_scale[:, None].tobytes()
    return out


@pytest.mark.parametrize("dtype", ["float16", "int8", "mixed", "int8max", "mixedmax"])
def test_run_stores_the_codes_of_the_float32_sketches(
        tmp_path: Path, files: dict[str, str], dtype: str,
        float32_run: tuple[dd.SketchModel, np.ndarray, np.ndarray]) -> None:
    m32, sx, sw = float32_run
    model = _run(tmp_path / "out.zarr", files, dtype)
    assert model.digest == m32.digest  # the same maps: only the storage differs
    layout = q.model_layout(model)
    assert layout.name == dtype and (layout.head > 0) == (dtype not in ("int8", "int8max"))
    assert _zarr_codes(tmp_path / "out.zarr", "x") == _expected(layout, sx, "x")
    assert _zarr_codes(tmp_path / "out.zarr", "w") == _expected(layout, sw, "w")
    saved = dd.load_model(str(tmp_path / "out.zarr" / "model"))
    assert q.model_layout(saved) == layout
    # the report says what is stored and what the rounding adds to the predicted MSE
    info = model.info["layout"]
    assert info["bytes_per_row"] == layout.bytes_per_row < 4 * K
    assert model.info["predicted"]["auto"] == pytest.approx(
        info["predicted_mse_float32"] + info["predicted_rounding_mse"])
    assert f"storage: {dtype}" in format_report(model)


def test_xarray_reads_the_group(tmp_path: Path, files: dict[str, str]) -> None:
    import xarray as xr

    _run(tmp_path / "out.zarr", files, "mixed")
    ds = xr.open_zarr(str(tmp_path / "out.zarr"))
    layout = q.Layout.of("mixed", K, int(ds["x"].shape[1]))
    assert ds["x"].dtype == np.float16 and ds["x_tail"].dtype == np.int8
    assert ds["x_scale"].dtype == np.int8 and ds["x_tail_scale"].dtype == np.int16
    assert ds["x_scale"].dims == ("x_row", "scale") and ds["w_tail"].dims[0] == "w_row"
    assert ds["x"].attrs["ddrp_layout"]["name"] == "mixed"
    assert ds["x_tail"].shape == (1300, layout.narrow) and ds["w"].shape == (400, layout.wide)


@pytest.mark.cluster
@pytest.mark.parametrize("dtype", ["mixed", "mixedmax"])
def test_same_bytes_on_every_scheduler_format_and_after_a_resume(
        tmp_path: Path, files: dict[str, str], cluster2: Any,
        monkeypatch: pytest.MonkeyPatch, dtype: str) -> None:
    _run(tmp_path / "ref.zarr", files, dtype)
    ref = _zarr_codes(tmp_path / "ref.zarr", "x"), _zarr_codes(tmp_path / "ref.zarr", "w")
    for i, (sched, x) in enumerate([("threads", "x"), (cluster2, "x"),
                                    (cluster2, "x_parquet")]):
        out = tmp_path / f"v{i}.zarr"
        _run(out, files, dtype, sched, x=x)
        assert (_zarr_codes(out, "x"), _zarr_codes(out, "w")) == ref, i
    # Parquet output: the same codes and scales, in the columns of io.codes
    _run(tmp_path / "pq", files, dtype, fmt="parquet")
    table = pq.read_table(tmp_path / "pq" / "x").sort_by("row")
    assert np.stack(table["sketch"].to_numpy(zero_copy_only=False)).tobytes() == ref[0]["x"]
    assert np.stack(table["sketch_tail"].to_numpy(zero_copy_only=False)).tobytes() == \
        ref[0]["x_tail"]
    assert table["scale_tail"].to_numpy().tobytes() == ref[0]["x_tail_scale"]
    # interrupted in pass 2, then resumed: the same bytes
    out = tmp_path / "resumed.zarr"
    with monkeypatch.context() as m:
        interrupt_after(m, "zarr", 2)
        with interrupted_in_a_task():
            _run(out, files, dtype)
    plan = dd.plan_run(files["x"], files["w"], K, str(out), seed=3, block_rows=BLOCK,
                       dtype=dtype, resume=True)
    dd.execute(plan, scheduler="sync")
    assert (_zarr_codes(out, "x"), _zarr_codes(out, "w")) == ref


@pytest.mark.parametrize("dtype", ["int8", "int8max"])
@pytest.mark.parametrize("fmt", ["zarr", "parquet"])
def test_matmul_and_top_n_use_the_decoded_sketches(tmp_path: Path, files: dict[str, str],
                                                   fmt: str, dtype: str) -> None:
    model = _run(tmp_path / "run", files, dtype, fmt=fmt)
    x_path, w_path = str(tmp_path / "run" / "x"), str(tmp_path / "run" / "w")
    sx = dd.open_source(x_path).read_rows(0, 1300)
    sw = dd.open_source(w_path).read_rows(0, 400)
    # the decoded rows are the codes times their scale 2^(e/64) / 127 (int8) or s8 / 127
    # (int8max: s8 stored as float32, each row's max |value|), checked against numpy
    exact = dtype == "int8max"
    g = None if fmt == "parquet" else zarr.open_group(str(tmp_path / "run"), mode="r")
    if g is not None:
        e = g["x_scale"][...]
        assert e.dtype == (np.float32 if exact else np.int16) and g["x"].dtype == np.int8
        if exact:
            s8 = e.astype(np.float64)
            np.testing.assert_array_equal(np.abs(sx).max(axis=1), s8[:, 0])  # max: exact
        else:
            np.testing.assert_allclose(q.log_scale(e), 2.0 ** (e / 64), rtol=1e-15)
            s8 = q.log_scale(e)
        want = g["x"][...].astype(np.float64) * (s8 / 127)
        np.testing.assert_array_equal(sx, want.astype(np.float32))
    else:
        assert pq.read_table(tmp_path / "run" / "x").schema.field("scale").type == \
            ("float" if exact else "int16")
    dd.execute_matmul(dd.plan_matmul(x_path, w_path, str(tmp_path / "prod.zarr")),
                      scheduler="sync")
    prod = zarr.open_array(str(tmp_path / "prod.zarr" / "product"), mode="r")[...]
    np.testing.assert_allclose(prod, sx @ sw.T, rtol=1e-5, atol=1e-4)
    dd.execute_matmul(dd.plan_matmul(x_path, w_path, str(tmp_path / "top.zarr"), top=5),
                      scheduler="sync")
    idx = zarr.open_array(str(tmp_path / "top.zarr" / "indices"), mode="r")[...]
    assert np.array_equal(idx[:50], np.argsort(-(sx[:50].astype(np.float64) @ sw.T.astype(
        np.float64)), axis=1, kind="stable")[:, :5])
    assert model.k == K


@pytest.mark.parametrize("dtype", ["mixed", "mixedmax"])
@pytest.mark.parametrize("fmt", ["zarr", "parquet"])
def test_skipped_rows_keep_their_sentinel_scales(tmp_path: Path, pair: tuple[np.ndarray,
                                                                        np.ndarray],
                                                 fmt: str, dtype: str) -> None:
    """A row left out by --on-invalid skip is stored with the sentinel scale codes (Zarr),
    found again as skipped, and decodes as NaN; its neighbours decode as usual."""
    x, w = pair
    x = x.copy()
    bad = [5, 700]
    x[bad, 3] = np.nan
    xf, wf = write_npy(tmp_path / "x.npy", x), write_npy(tmp_path / "w.npy", w)
    out = tmp_path / "run"
    dd.execute(dd.plan_run(xf, wf, K, str(out), seed=3, block_rows=BLOCK, dtype=dtype,
                           format=fmt, on_invalid="skip"), scheduler="sync")
    if fmt == "parquet":  # the rows are left out of the files
        table = pq.read_table(out / "x")
        assert len(table) == 1300 - len(bad) and table.schema.field("scale").type == "int8"
        return
    g = zarr.open_group(str(out), mode="r")
    assert g["x_skipped_rows"][...].tolist() == bad
    assert g["x_scale"][bad, 0].tolist() == [-128, -128]
    tail = g["x_tail_scale"][bad, 0]
    assert np.isnan(tail).all() if dtype == "mixedmax" else tail.tolist() == [-32768, -32768]
    sx = dd.open_source(str(out / "x")).read_rows(0, 1300)
    assert np.isnan(sx[bad]).all() and not np.isnan(np.delete(sx, bad, axis=0)).any()


def test_older_float32_scales_are_refused(tmp_path: Path, files: dict[str, str]) -> None:
    """Scales stored as float32 (before the scale codes) are not read as codes."""
    _run(tmp_path / "run.zarr", files, "int8")
    g = zarr.open_group(str(tmp_path / "run.zarr"), mode="r+")
    old = g["x_scale"][...].astype(np.float32)
    del g["x_scale"]
    g.create_array("x_scale", data=old, chunks=(BLOCK, 1))
    with pytest.raises(InputError, match="int16 scale codes"):
        dd.open_source(str(tmp_path / "run.zarr" / "x"))


def test_project_uses_the_model_layout(tmp_path: Path, files: dict[str, str]) -> None:
    _run(tmp_path / "run.zarr", files, "float16")
    plan = dd.plan_project(str(tmp_path / "run.zarr" / "model"), "w", files["w"],
                           str(tmp_path / "p.zarr"), block_rows=BLOCK)
    dd.execute(plan, scheduler="sync")
    g = zarr.open_group(str(tmp_path / "p.zarr"), mode="r")
    run = zarr.open_group(str(tmp_path / "run.zarr"), mode="r")
    assert g["sketch"].dtype == np.float16
    assert g["sketch"][...].tobytes() == run["w"][...].tobytes()
    assert g["sketch_scale"][...].tobytes() == run["w_scale"][...].tobytes()


def test_estimator_dtype_returns_the_decoded_sketch(pair: tuple[np.ndarray, np.ndarray]) -> None:
    x, w = pair
    plain = dd.AsymmetricRandomProjection(K, random_state=3).fit(x, W=w)
    arp = dd.AsymmetricRandomProjection(K, random_state=3, dtype="mixed").fit(x, W=w)
    layout = q.model_layout(arp.model_)
    assert layout.name == "mixed"
    s = arp.transform(x)
    want = q.decode(q.encode(plain.transform(x), layout, 3, "x", 0), layout)
    assert s.dtype == np.float32 and s.tobytes() == want.tobytes()
    import dask.array as da

    lazy = arp.transform_w(da.from_array(w, chunks=(150, 16))).compute()
    assert lazy.tobytes() == arp.transform_w(w).tobytes()
    with pytest.raises(OptionError, match="--dtype must be one of"):
        dd.AsymmetricRandomProjection(K, dtype="int4").fit(x, W=w)
