"""Choosing K: predictions equal the build's for every K, the smallest K meets the target and
K − 1 does not, E(x·w)² against numpy, the table, the plot and the ``plan`` command."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

import ddrp_dask as dd
from ddrp_cli.main import cli
from ddrp_dask.errors import InputError, OptionError
from ddrp_dask.maths.choose import MsePredictor, choose_k, min_k
from ddrp_dask.maths.methods import asymmetric, get, head_tail
from ddrp_dask.maths.predict import pair_energy
from ddrp_dask.options import k_range
from ddrp_dask.plot import plot_mse_curve
from ddrp_dask.report import format_k_table

from .conftest import make_pair, write_npy

D = 12


@pytest.fixture(scope="module")
def pair() -> tuple[np.ndarray, np.ndarray]:
    return make_pair(n=900, m=60, d=D, seed=5, dtype="float64")


@pytest.fixture(scope="module")
def moments(pair: tuple[np.ndarray, np.ndarray]) -> tuple[dd.Moments, dd.Moments]:
    x, w = pair
    return dd.block_moments(x), dd.block_moments(w)


def _k_values(method: str) -> list[int]:
    low, top = k_range(method, D)
    high = top if top is not None else D + 2
    return [*range(low, high + 1), 3 * D, 40 * D] if get(method).k_search == "inverse" else \
        list(range(low, high + 1))


@pytest.mark.parametrize("shrinkage", ["oas", 0.2])
@pytest.mark.parametrize("method", dd.METHODS)
def test_curve_equals_the_builds_prediction(moments: tuple[dd.Moments, dd.Moments],
                                            method: str, shrinkage: float | str) -> None:
    mx, mw = moments
    ks = _k_values(method)
    curve = dd.predicted_mse_curve(mx, mw, ks, [method], shrinkage)[method]
    built = [dd.build(mx, mw, k, method, seed=1, shrinkage=shrinkage).info["predicted"][method]
             for k in ks]
    np.testing.assert_allclose(curve, built, rtol=1e-12, atol=0)


def test_invalid_k_is_nan(moments: tuple[dd.Moments, dd.Moments]) -> None:
    curve = dd.predicted_mse_curve(*moments, [1, 2, D, D + 1, D + 3],
                                   ["head-tail", "auto", "orthogonal"])
    assert np.isnan(curve["head-tail"][[0, 1, 4]]).all()
    assert np.isfinite(curve["head-tail"][2:4]).all()
    assert np.isfinite(curve["auto"][:4]).all() and np.isnan(curve["auto"][4])  # auto: K ≥ 1
    assert np.isnan(curve["orthogonal"][[3, 4]]).all()


def test_pair_energy_is_the_mean_squared_inner_product(
        pair: tuple[np.ndarray, np.ndarray], moments: tuple[dd.Moments, dd.Moments]) -> None:
    x, w = pair
    assert pair_energy(*moments) == pytest.approx(np.mean((x @ w.T) ** 2), rel=1e-10)


@pytest.mark.parametrize("target", [0.3, 0.02, 1e-4])
@pytest.mark.parametrize("method", dd.METHODS)
def test_min_k_meets_the_target_and_k_minus_1_does_not(
        pair: tuple[np.ndarray, np.ndarray], moments: tuple[dd.Moments, dd.Moments],
        method: str, target: float) -> None:
    x, w = pair
    mx, mw = moments
    energy = np.mean((x @ w.T) ** 2)
    k = min_k(mx, mw, target, method)

    def rel(kk: int) -> float:
        return float(dd.build(mx, mw, kk, method).info["predicted"][method] / energy)

    assert rel(k) <= target * (1 + 1e-9)
    low = k_range(method, D)[0]
    if k > low:
        assert rel(k - 1) > target * (1 - 1e-9)


def test_auto_needs_far_fewer_columns_than_gaussian(
        moments: tuple[dd.Moments, dd.Moments]) -> None:
    report = choose_k(*moments, target=0.01)
    best = report["min_k"]
    assert best["auto"] <= D + 2 < best["gaussian"]
    assert best["auto"] < best["asymmetric"] <= best["gaussian"]
    assert set(best.values()) <= set(report["table"]["k"])
    text = format_k_table(report)
    assert "smallest K with predicted relative MSE <= 0.01" in text
    assert f"auto        K = {best['auto']}" in text and "biased" in text


def test_balanced_pairs_are_computed_once_for_all_k(
        moments: tuple[dd.Moments, dd.Moments], monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = head_tail.balanced_pair

    def counting(*args: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        calls.append(1)
        return real(*args)

    traces = []
    real_traces = asymmetric.predict_asymmetric

    def counting_traces(*args: Any) -> float:
        traces.append(1)
        return real_traces(*args)

    monkeypatch.setattr(head_tail, "balanced_pair", counting)
    monkeypatch.setattr(asymmetric, "predict_asymmetric", counting_traces)
    p = MsePredictor(*moments)
    p.curve(range(1, D + 3))
    for method in dd.METHODS:
        p.min_k(method, 0.001)
    assert len(calls) == 1 and len(traces) == 1  # the centred pair; the paper's traces


def test_plot_is_a_png_and_matplotlib_is_not_imported_by_the_library(
        tmp_path: Path, moments: tuple[dd.Moments, dd.Moments]) -> None:
    path = tmp_path / "k.png"
    plot_mse_curve(choose_k(*moments, target=0.05), str(path))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    code = "import sys, ddrp_dask; sys.exit('matplotlib' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


@pytest.mark.parametrize(("kwargs", "error", "match"), [
    ({"target": 0}, OptionError, "must be a positive number, got 0"),
    ({"target": float("nan")}, OptionError, "positive number"),
    ({"methods": ["auto", "pca"]}, OptionError, r"unknown method\(s\) \['pca'\]"),
    ({"shrinkage": 1.5}, OptionError, "shrinkage must be"),
])
def test_bad_options(moments: tuple[dd.Moments, dd.Moments], kwargs: dict[str, object],
                     error: type[Exception], match: str) -> None:
    args = {"target": 0.01, "methods": dd.METHODS, "shrinkage": "oas", **kwargs}
    with pytest.raises(error, match=match):
        choose_k(*moments, **args)  # type: ignore[arg-type]


def test_zero_inner_products_are_refused() -> None:
    mx = dd.block_moments(np.array([[1.0, 0.0], [2.0, 0.0]]))
    mw = dd.block_moments(np.array([[0.0, 1.0], [0.0, 3.0]]))
    with pytest.raises(InputError, match="every inner product is zero"):
        min_k(mx, mw, 0.1, "gaussian")


def _invoke(*args: str) -> tuple[int, str, str]:
    res = CliRunner().invoke(cli, list(args))
    return res.exit_code, res.stdout, res.stderr


def test_plan_command(tmp_path: Path) -> None:
    x, w = make_pair(n=700, m=90, d=10, seed=2)
    xp, wp = write_npy(tmp_path / "x.npy", x), write_npy(tmp_path / "w.npy", w)
    plot, js = tmp_path / "k.png", tmp_path / "k.json"
    args = ["plan", "--x", xp, "--w", wp, "--target-rel-mse", "0.02", "--scheduler", "threads",
            "--block-rows", "128", "--plot", str(plot), "--json", str(js), "--quiet"]
    code, stdout, stderr = _invoke(*args)
    assert code == 0, stderr
    assert "smallest K with predicted relative MSE <= 0.02" in stdout
    assert plot.read_bytes()[:4] == b"\x89PNG"
    report = json.loads(js.read_text())
    mx, mw = dd.block_moments(x), dd.block_moments(w)
    assert report["min_k"] == {m: min_k(mx, mw, 0.02, m) for m in dd.METHODS}
    assert report["energy"] == pytest.approx(np.mean((x.astype(np.float64) @ w.T) ** 2),
                                             rel=1e-6)
    code, _, stderr = _invoke(*args)
    assert code == 2 and "exists; pass --overwrite" in stderr
    assert _invoke(*args, "--overwrite")[0] == 0
    code, stdout, _ = _invoke("plan", "--x", xp, "--w", wp, "--dry-run")
    assert code == 0 and "pass 1" in stdout


@pytest.mark.parametrize(("extra", "match"), [
    (["--target-rel-mse", "0"], "must be a positive number"),
    (["--methods", "auto,nope"], "unknown method(s) ['nope']"),
    (["--w", "{w13}"], "got d=13 for --w"),
])
def test_plan_command_errors(tmp_path: Path, extra: list[str], match: str) -> None:
    x, w = make_pair(n=50, m=20, d=6, seed=2)
    paths = {"x": write_npy(tmp_path / "x.npy", x), "w": write_npy(tmp_path / "w.npy", w),
             "w13": write_npy(tmp_path / "w13.npy", np.ones((4, 13), np.float32))}
    extra = [e.format(**paths) for e in extra]
    args = ["plan", "--x", paths["x"], *extra, "--scheduler", "sync"]
    if "--w" not in extra:
        args += ["--w", paths["w"]]
    code, _, stderr = _invoke(*args)
    assert code == 2 and stderr.startswith("ddrp: error:") and match in stderr, stderr


def test_table_says_when_raw_vectors_are_as_small(
        moments: tuple[dd.Moments, dd.Moments]) -> None:
    report = choose_k(*moments, target=0.01)
    best, d = report["min_k"], report["d"]
    lines = {line.split()[0]: line for line in format_k_table(report).splitlines()
             if line.startswith("  ") and " K = " in line}
    note = f"K ≥ d={d}: storing the raw vectors is as small"
    assert best["gaussian"] >= d and note in lines["gaussian"]
    assert best["auto"] < d and note not in lines["auto"]
    for m, k in best.items():
        assert (note in lines[m]) == (k >= d), m
