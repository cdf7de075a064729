"""Outputs other tools read: every Zarr output opens as one dataset with xarray (dimension
names, consolidated metadata), read back by xarray itself and checked against zarr."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xarray as xr
import zarr

import ddrp_dask as dd

from .conftest import make_pair, write_npy, write_parquet_list


@pytest.fixture(scope="module")
def outputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Every kind of Zarr output: run (ids on x, a skipped row on w), fit, project, and
    matmul's product and top-N."""
    t = tmp_path_factory.mktemp("outputs")
    x, w = make_pair(n=300, m=80, d=8, seed=2)
    w[5] = np.nan
    xp = write_parquet_list(t / "x.parquet", x, 100)
    wp = write_npy(t / "w.npy", w)
    run, fit, proj = str(t / "run.zarr"), str(t / "fit.zarr"), str(t / "proj.zarr")
    dd.execute(dd.plan_run(xp, wp, 4, run, x_id_column="id", on_invalid="skip",
                           block_rows=128), scheduler="sync")
    dd.execute(dd.plan_fit(xp, write_npy(t / "w2.npy", w[6:]), 4, fit), scheduler="sync")
    dd.execute(dd.plan_project(f"{run}/model", "x", xp, proj, id_column="id"),
               scheduler="sync")
    prod, top = str(t / "prod.zarr"), str(t / "top.zarr")
    dd.execute_matmul(dd.plan_matmul(f"{run}/x", f"{run}/w", prod, block_rows=100,
                                     block_cols=30), scheduler="sync")
    dd.execute_matmul(dd.plan_matmul(f"{run}/x", f"{run}/w", top, top=3, block_rows=100),
                      scheduler="sync")
    return {"run": run, "model": f"{run}/model", "fit": fit, "project": proj,
            "product": prod, "top": top}


DIMS = {
    "run": {"x": ("x_row", "component"), "w": ("w_row", "component"), "x_ids": ("x_row",),
            "w_skipped_rows": ("w_skipped",), "x_skipped_rows": ("x_skipped",)},
    "model": {"x_matrix": ("feature", "component"), "w_offset": ("component",),
              "x_shift": ("feature",), "w_stats_scatter": ("feature", "feature_2")},
    "fit": {"w_matrix": ("feature", "component")},
    "project": {"sketch": ("x_row", "component"), "ids": ("x_row",)},
    "product": {"product": ("x_row", "w_row")},
    "top": {"indices": ("x_row", "rank"), "scores": ("x_row", "rank")},
}


@pytest.mark.parametrize("kind", list(DIMS))
def test_xarray_opens_every_output_whole(outputs: dict[str, str], kind: str) -> None:
    """No error and no warning (the suite turns warnings into errors; said again here):
    before, conflicting sizes of one ``row`` dimension, a model without dimension names,
    and xarray's warning that the metadata was not consolidated."""
    path = outputs[kind]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds = xr.open_zarr(path)
    assert json.loads((Path(path) / "zarr.json").read_text())["consolidated_metadata"]
    group = zarr.open_group(path, mode="r")
    assert set(ds.data_vars) == set(group.array_keys())
    for name, dims in DIMS[kind].items():
        assert ds[name].dims == dims
    for name in ds.data_vars:  # the same values as zarr reads
        a, b = np.asarray(ds[name].values), np.asarray(group[name][...])
        assert np.array_equal(a, b, equal_nan=a.dtype.kind == "f")
    assert ds.attrs["complete"] is True


def test_consolidated_metadata_is_the_completed_state(outputs: dict[str, str]) -> None:
    """Consolidated last: the snapshot says complete, lists no progress flag, and zarr's
    consolidated open sees the same arrays and attributes as the plain one."""
    meta = json.loads((Path(outputs["run"]) / "zarr.json").read_text())
    names = set(meta["consolidated_metadata"]["metadata"])
    assert {"x", "w", "x_ids", "model", "model/x_matrix"} <= names
    assert not any("_progress_" in n for n in names)
    plain = zarr.open_group(outputs["run"], mode="r", use_consolidated=False)
    cons = zarr.open_consolidated(outputs["run"])
    assert dict(cons.attrs) == dict(plain.attrs) and cons.attrs["complete"] is True
    assert sorted(cons.array_keys()) == sorted(plain.array_keys())


def test_the_model_still_loads_and_sketches_match_numpy(outputs: dict[str, str]) -> None:
    """Only metadata changed: the model loads (checksums), and the stored sketches are
    the numpy sketch of the rows."""
    model = dd.load_model(outputs["model"])
    ds: Any = xr.open_zarr(outputs["project"])
    assert ds["sketch"].shape == (300, model.k)
    np.testing.assert_array_equal(ds["sketch"].values,
                                  zarr.open_array(f"{outputs['run']}/x", mode="r")[...])
