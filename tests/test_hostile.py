"""Hostile inputs, fuzzed: every case gives the numpy reference answer or a clear DdrpError.

Shapes down to n = 1 and d = 1, K from 1 to beyond d, constant and all-zero columns,
magnitudes 1e-30 and 1e30, float16 and integer inputs, Fortran-ordered and strided arrays.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import zarr
from click.testing import CliRunner
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from ddrp_cli.main import cli
from ddrp_dask import METHODS, DdrpError, build, sketch_numpy
from ddrp_dask.io.common import working_dtype
from ddrp_dask.maths.stats import block_moments
from ddrp_dask.testing import reference_sketch

DTYPES = ["float16", "float32", "float64", "int8", "int32"]


@st.composite
def hostile_pair(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, float]:
    d = draw(st.integers(1, 6))
    n, m = draw(st.integers(1, 30)), draw(st.integers(1, 30))
    scale = draw(st.sampled_from([1e-30, 1.0, 1e30]))
    dtype = draw(st.sampled_from(DTYPES))
    seed = draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d)) * 3 + draw(st.sampled_from([0.0, 5.0]))
    w = rng.standard_normal((m, d))
    special = draw(st.sampled_from(["none", "constant", "zero"]))
    if special != "none":
        col = draw(st.integers(0, d - 1))
        x[:, col] = 0.0 if special == "zero" else 2.5
        w[:, col] = 0.0 if special == "zero" else -1.5
    if dtype == "float16":
        scale = 1.0  # float16 cannot hold 1e±30
    if dtype.startswith("int"):
        scale = 1.0
        x, w = np.round(x * 10), np.round(w * 10)
    x, w = (x * scale).astype(dtype), (w * scale).astype(dtype)
    assume(np.isfinite(x.astype(np.float64)).all() and np.isfinite(w.astype(np.float64)).all())
    layout = draw(st.sampled_from(["C", "F", "strided"]))
    if layout == "F":
        x, w = np.asfortranarray(x), np.asfortranarray(w)
    elif layout == "strided":
        x = np.repeat(x, 2, axis=0)[::2]
        w = np.repeat(w, 2, axis=1)[:, ::2]
    return x, w, scale


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pair=hostile_pair(), k=st.integers(1, 9), method=st.sampled_from(METHODS),
       seed=st.integers(0, 100))
def test_library_gives_reference_or_clear_error(pair: tuple[np.ndarray, np.ndarray, float],
                                                k: int, method: str, seed: int) -> None:
    x, w, _ = pair
    xs = np.ascontiguousarray(x, dtype=working_dtype(x.dtype))
    ws = np.ascontiguousarray(w, dtype=working_dtype(w.dtype))
    mx, mw = block_moments(xs), block_moments(ws)
    assert np.isfinite(mx.scatter).all() and np.isfinite(mw.scatter).all()
    try:
        model = build(mx, mw, k, method, seed)
        s, t = sketch_numpy(model, "x", x), sketch_numpy(model, "w", w)
    except DdrpError as e:
        assert str(e) and "\n" not in str(e)
        return
    assert s.shape == (len(x), k) and t.shape == (len(w), k) and s.dtype == np.float32
    assert np.isfinite(s).all() and np.isfinite(t).all()
    # the stored float32 sketches are the model's affine maps (float64 reference)
    ref_s = reference_sketch(model, "x", x.astype(np.float64))
    ref_t = reference_sketch(model, "w", w.astype(np.float64))
    tol = 1e-3 if xs.dtype == np.float32 else 1e-6
    for got, ref in ((s, ref_s), (t, ref_t)):
        big = np.abs(ref).max(initial=0.0)
        assert np.abs(got - ref).max(initial=0.0) <= tol * big + 1e-300, (got, ref)
    if method == "auto" and k == x.shape[1] + 2:  # K = d + 2 keeps everything: exact
        est = s.astype(np.float64) @ t.T.astype(np.float64)
        exact = x.astype(np.float64) @ w.T.astype(np.float64)
        assert np.allclose(est, exact, rtol=1e-2, atol=1e-2 * np.abs(exact).max(initial=0)
                           + 1e-300)


@settings(max_examples=12, deadline=None, suppress_health_check=[
    HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(pair=hostile_pair(), k=st.integers(1, 8), method=st.sampled_from(["auto", "gaussian"]))
def test_cli_gives_output_or_one_line_error(tmp_path: Path,
                                            pair: tuple[np.ndarray, np.ndarray, float], k: int,
                                            method: str) -> None:
    x, w, _ = pair
    case = tmp_path / f"c{np.random.default_rng().integers(1 << 30)}"
    case.mkdir()
    np.save(case / "x.npy", x)
    np.save(case / "w.npy", w)
    res = CliRunner().invoke(cli, ["run", "--x", str(case / "x.npy"), "--w",
                                   str(case / "w.npy"), "-k", str(k), "--method", method,
                                   "--out", str(case / "o.zarr"), "--scheduler", "sync",
                                   "--quiet"])
    if res.exit_code == 0:
        g = zarr.open_group(str(case / "o.zarr"), mode="r")
        assert g.attrs["complete"] is True and np.isfinite(g["x"][...]).all()
    else:
        assert res.exit_code == 2, res.output
        assert res.stderr.startswith("ddrp: error: ") and res.stderr.count("\n") == 1
        assert not (case / "o.zarr").exists()


@pytest.mark.parametrize("scale", [1e-30, 1e30])
def test_extreme_magnitudes_keep_the_estimate(scale: float) -> None:
    """auto at K = d + 2 is exact: its float32 sketches must carry products of 1e±60."""
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((200, 5)) + 3) * scale
    w = (rng.standard_normal((50, 5)) - 1) * scale
    model = build(block_moments(x), block_moments(w), 7, "auto", 0)
    s, t = sketch_numpy(model, "x", x), sketch_numpy(model, "w", w)
    est = s.astype(np.float64) @ t.T.astype(np.float64)
    exact = x @ w.T
    assert np.abs(est - exact).max() < 1e-5 * np.abs(exact).max()
