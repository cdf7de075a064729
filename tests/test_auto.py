"""The default method end to end: fold statistics from pass 1, the out-of-sample report."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from click.testing import CliRunner

import ddrp_dask as dd
from ddrp_cli.main import cli
from ddrp_dask.jobs.fit import compute_folds
from ddrp_dask.maths.folds import fold_of

from .conftest import make_pair, write_npy


def test_fold_statistics_do_not_depend_on_the_blocks(tmp_path: Path) -> None:
    x, w = make_pair(n=1000, m=80, d=7, seed=3, dtype="float64")
    xp, wp = write_npy(tmp_path / "x.npy", x), write_npy(tmp_path / "w.npy", w)
    runs = [compute_folds(dd.plan_stats(xp, wp, block_rows=rows), 5, "sync")
            for rows in (64, 333, 1000)]
    folds = fold_of(np.arange(len(x)))
    for f in range(5):  # an independent numpy computation of each fold's moments
        rows = x[folds == f]
        np.testing.assert_allclose(runs[0]["x"][f].mean, rows.mean(axis=0), rtol=1e-12)
        c = rows - rows.mean(axis=0)
        np.testing.assert_allclose(runs[0]["x"][f].scatter, c.T @ c, rtol=1e-9, atol=1e-9)
        for other in runs[1:]:
            np.testing.assert_allclose(other["x"][f].scatter, runs[0]["x"][f].scatter,
                                       rtol=1e-12, atol=1e-12)


def test_report_json_has_the_out_of_sample_figures(tmp_path: Path) -> None:
    x, w = make_pair(n=2000, m=120, d=10, seed=4)
    xp, wp = write_npy(tmp_path / "x.npy", x), write_npy(tmp_path / "w.npy", w)
    report = tmp_path / "r.json"
    res = CliRunner().invoke(cli, ["fit", "--x", xp, "--w", wp, "-k", "5", "--out",
                                   str(tmp_path / "m"), "--scheduler", "threads", "--quiet",
                                   "--report", str(report)])
    assert res.exit_code == 0, res.stderr
    rep = json.loads(report.read_text())
    for key in ("method", "k", "predicted_mse", "predicted_rel_mse", "predicted_mse_gaussian",
                "predicted_gain", "allocation", "shrinkage_x", "shrinkage_w"):
        assert key in rep, key
    assert rep["method"] == "auto" and rep["k"] == 5
    assert "cross-fitted" in rep["predicted_mse_kind"]
    a = rep["allocation"]
    assert a["head"] + a["sampled"] + a["tail"] == 5
    energy = np.mean((x.astype(np.float64) @ w.T.astype(np.float64)) ** 2)  # numpy's E(x·w)²
    assert rep["predicted_rel_mse"] == np.float64(rep["predicted_mse"]) / rep["expected_square"]
    assert abs(rep["expected_square"] / energy - 1) < 1e-6
    assert rep["predicted_gain"] == rep["predicted_mse_gaussian"] / rep["predicted_mse"]
    model = dd.load_model(tmp_path / "m")
    assert rep["model"] == model.digest
    assert rep["predicted_mse"] == model.info["predicted"]["auto"]
    assert "predicted relative MSE of x.w" in res.stdout and "cross-fitted" in res.stdout
