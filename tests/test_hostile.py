"""Hostile inputs, fuzzed: every case gives the numpy reference answer or a clear DdrpError.

Shapes down to n = 1 and d = 1, K from 1 to beyond d, constant and all-zero columns,
magnitudes 1e-30 and 1e30, float16 and integer inputs, Fortran-ordered and strided arrays.

A refusal is accepted only when the case deserves it: ``deserved_refusals`` lists, per case,
the errors (class and message) that its inputs call for, from the documented K ranges, and
``check_refusal`` rejects any other error, so a valid K refused fails the test.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr
from click.testing import CliRunner
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from ddrp_cli.main import cli
from ddrp_dask import METHODS, DdrpError, build, sketch_numpy
from ddrp_dask.errors import InvalidValueError, OptionError
from ddrp_dask.io.common import working_dtype
from ddrp_dask.maths.stats import block_moments
from ddrp_dask.testing import reference_sketch

DTYPES = ["float16", "float32", "float64", "int8", "int32"]


@dataclass(frozen=True)
class Refusal:
    """An error a case deserves: its class and a regex its one-line message must match."""

    name: str
    error: type[DdrpError]
    message: str
    #: the case must be refused (with this or another required refusal); else it may be
    required: bool = True


def deserved_refusals(d: int, k: int, method: str, scale: float) -> list[Refusal]:
    """The refusals a case deserves, written from the documented K ranges (README, DESIGN):
    head-tail stores 2 mean columns and at least one tail column (K >= 3), truncated the 2
    mean columns (K >= 2); auto, head-tail and truncated take K <= d + 2, orthogonal rows
    need K <= d; other methods take any K >= 1. Inputs of magnitude 1e30 may have
    sketches beyond float32. An empty list: the case is valid and must succeed."""
    out = []
    low = {"head-tail": 3, "truncated": 2}.get(method, 1)
    high = {"auto": d + 2, "head-tail": d + 2, "truncated": d + 2, "orthogonal": d}.get(method)
    if k < low:
        out.append(Refusal("K below the method's minimum", OptionError,
                           rf"^K={k} is too small for method '{method}': it stores 2 exact "
                           rf"mean columns.*, so K ≥ {low}; use --method auto, asymmetric "
                           r"or gaussian for smaller K$"))
    if high is not None and k > high:
        if method == "orthogonal":
            out.append(Refusal("K beyond d for orthogonal rows", OptionError,
                               rf"^K={k} is too large for orthogonal rows at d={d}: "
                               r"K must be ≤ d$"))
        else:
            out.append(Refusal("K beyond the exact d + 2", OptionError,
                               rf"^K={k} is too large for method '{method}' at d={d}: "
                               r"K = d( \+ 2)? is already exact, so K must be ≤ d \+ 2$"))
    if scale >= 1e30:
        out.append(Refusal("sketch beyond float32", InvalidValueError,
                           r"^.+: the sketch of row \d+ overflows float32 \(inputs of "
                           r"magnitude [^)]+\); rescale the data$", required=False))
    return out


def check_refusal(error: BaseException, deserved: list[Refusal]) -> Refusal:
    """The deserved refusal ``error`` is; AssertionError when it is none of them (a wrong
    class, a wrong message, more than one line, or a valid case refused)."""
    message = str(error)
    assert message and "\n" not in message, f"not a one-line message: {message!r}"
    for refusal in deserved:
        if isinstance(error, refusal.error) and re.search(refusal.message, message):
            return refusal
    raise AssertionError(f"undeserved refusal {type(error).__name__}: {message!r}; the case "
                         f"deserves only {[r.name for r in deserved] or 'success'}")


def check_success(deserved: list[Refusal]) -> None:
    """AssertionError when a case that must be refused was accepted."""
    required = [r.name for r in deserved if r.required]
    assert not required, f"accepted a case that deserves a refusal: {required}"


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
    x, w, scale = pair
    run_library_case(x, w, k, method, seed, scale)


def run_library_case(x: np.ndarray, w: np.ndarray, k: int, method: str, seed: int,
                     scale: float, build_model: Any = build) -> None:
    """One library case: the reference answer, or a refusal the case deserves."""
    deserved = deserved_refusals(x.shape[1], k, method, scale)
    xs = np.ascontiguousarray(x, dtype=working_dtype(x.dtype))
    ws = np.ascontiguousarray(w, dtype=working_dtype(w.dtype))
    mx, mw = block_moments(xs), block_moments(ws)
    assert np.isfinite(mx.scatter).all() and np.isfinite(mw.scatter).all()
    try:
        model = build_model(mx, mw, k, method, seed)
        s, t = sketch_numpy(model, "x", x), sketch_numpy(model, "w", w)
    except DdrpError as e:
        check_refusal(e, deserved)
        return
    check_success(deserved)
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
    x, w, scale = pair
    deserved = deserved_refusals(x.shape[1], k, method, scale)
    case = tmp_path / f"c{np.random.default_rng().integers(1 << 30)}"
    case.mkdir()
    np.save(case / "x.npy", x)
    np.save(case / "w.npy", w)
    res = CliRunner().invoke(cli, ["run", "--x", str(case / "x.npy"), "--w",
                                   str(case / "w.npy"), "-k", str(k), "--method", method,
                                   "--out", str(case / "o.zarr"), "--scheduler", "sync",
                                   "--quiet"])
    if res.exit_code == 0:
        check_success(deserved)
        g = zarr.open_group(str(case / "o.zarr"), mode="r")
        assert g.attrs["complete"] is True and np.isfinite(g["x"][...]).all()
    else:
        assert res.exit_code == 2, res.output
        assert res.stderr.startswith("ddrp: error: ") and res.stderr.endswith("\n")
        # the CLI prints the message, not the class: K messages are OptionErrors, the rest
        # can only be the overflow refusal (an InvalidValueError)
        kind = OptionError if res.stderr.startswith("ddrp: error: K=") else InvalidValueError
        check_refusal(kind(res.stderr[len("ddrp: error: "):-1]), deserved)
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


def test_checker_rejects_a_refused_valid_k() -> None:
    """Control: a library that refused a valid K (here auto at K = 4, d = 6) fails the case,
    and so does one accepting an invalid K or refusing with another message."""
    rng = np.random.default_rng(1)
    x, w = rng.standard_normal((20, 6)), rng.standard_normal((10, 6))
    run_library_case(x, w, 4, "auto", 0, 1.0)  # the real library: valid, succeeds

    def refuses(mx: Any, mw: Any, k: int, method: str, seed: int) -> Any:
        raise OptionError(f"K={k} is too large for method {method!r} at d=3: K = d + 2 is "
                          "already exact, so K must be ≤ d + 2")

    with pytest.raises(AssertionError, match="undeserved refusal OptionError"):
        run_library_case(x, w, 4, "auto", 0, 1.0, build_model=refuses)
    # the deserved message passes; the same class with another message, or another class, not
    deserved = deserved_refusals(6, 9, "auto", 1.0)
    check_refusal(OptionError("K=9 is too large for method 'auto' at d=6: K = d + 2 is "
                              "already exact, so K must be ≤ d + 2"), deserved)
    with pytest.raises(AssertionError, match="undeserved"):
        check_refusal(OptionError("K=9 is too large for method 'auto' at d=7: K = d + 2 is "
                                  "already exact, so K must be ≤ d + 2"), deserved)
    with pytest.raises(AssertionError, match="undeserved"):
        check_refusal(InvalidValueError("input: row 0 column 0 is nan"), deserved)
    with pytest.raises(AssertionError, match="one-line"):
        check_refusal(OptionError("K=9 is too large\nfor method 'auto'"), deserved)

    def accepts(mx: Any, mw: Any, k: int, method: str, seed: int) -> Any:
        return build(mx, mw, 3, method, seed)

    with pytest.raises(AssertionError, match="accepted a case that deserves a refusal"):
        run_library_case(x, w, 9, "auto", 0, 1.0, build_model=accepts)
