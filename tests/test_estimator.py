"""The scikit-learn estimator: the library's stages on numpy and Dask, byte-identical to the
CLI pipeline, numbers against numpy, and scikit-learn's own estimator checks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import pytest
import zarr
from sklearn.datasets import load_digits
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks
from threadpoolctl import threadpool_limits

import ddrp_dask as dd
from ddrp_dask import AsymmetricRandomProjection
from ddrp_dask.errors import DdrpError, InputError, InvalidValueError, OptionError
from ddrp_dask.maths.folds import combine_folds, moments_by_fold
from ddrp_dask.testing import reference_covariance, reference_mean, reference_sketch

from .conftest import make_pair, write_npy

BLOCK = 500
K = 16


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Real data: digits images (float32), labels, and bootstrap logistic weight vectors."""
    x, y = load_digits(return_X_y=True)
    x = x.astype(np.float32)
    w = dd.bootstrap_weights(x, y, n_boot=4, model="logistic", sample=600, seed=1,
                             model_params={"C": 0.1}).astype(np.float32)
    return x, y, w


def _fit(x: Any, w: Any, method: str = "auto", k: int = K) -> AsymmetricRandomProjection:
    return AsymmetricRandomProjection(k, method=method, random_state=7,
                                      block_rows=BLOCK).fit(x, W=w)


# ---------------------------------------------------------------------------------------
# scikit-learn's checks

# sklearn's checks that force n_components=1 on every estimator that has the parameter
_FORCE_K1 = ("check_dont_overwrite_parameters", "check_fit2d_predict1d",
             "check_methods_subset_invariance", "check_methods_sample_order_invariance",
             "check_fit2d_1sample", "check_fit2d_1feature")


def _expected_failures(est: AsymmetricRandomProjection) -> dict[str, str]:
    if est.method != "head-tail":
        return {}
    reason = ("sets n_components=1, but head-tail stores 2 exact mean columns and at least 1 "
              "tail column (K >= 3); the other instances run these checks")
    return dict.fromkeys(_FORCE_K1, reason)


@parametrize_with_checks([AsymmetricRandomProjection(n_components=3, random_state=0),
                          AsymmetricRandomProjection(n_components=3, method="head-tail",
                                                     random_state=0),
                          AsymmetricRandomProjection(n_components=2, method="asymmetric"),
                          AsymmetricRandomProjection(n_components=2, method="gaussian")],
                         expected_failed_checks=_expected_failures)
def test_sklearn_estimator_checks(estimator: Any, check: Any) -> None:
    check(estimator)


# ---------------------------------------------------------------------------------------
# the same implementation as the pipeline


def test_fit_transform_match_the_library_and_numpy(digits: Any) -> None:
    x, _, w = digits
    est = _fit(x, w)
    # statistics: the library's blocks and tree (BLAS on one thread, as in the pipeline's
    # tasks: float32 products differ in the last bits between thread counts), and numpy's
    # whole-array moments
    # (auto: per fold, a row's fold from its global index, merged fold by fold)
    with threadpool_limits(limits=1):
        fx = combine_folds([moments_by_fold(x[i:i + BLOCK], np.arange(i, min(i + BLOCK, len(x))))
                            for i in range(0, len(x), BLOCK)])
        fw = combine_folds([moments_by_fold(w, np.arange(len(w)))])
        mx, mw = dd.combine_all(fx), dd.combine_all(fw)
    assert np.array_equal(est.model_.stats_x.scatter, mx.scatter)
    assert np.array_equal(est.model_.stats_x.mean, mx.mean)
    ref = reference_covariance(x)
    assert np.linalg.norm(mx.scatter - ref) / np.linalg.norm(ref) < 1e-6
    assert np.allclose(est.model_.stats_w.mean, reference_mean(w), rtol=0,
                       atol=1e-6 * np.abs(w).max())
    model = dd.build(mx, mw, K, "auto", 7, folds=(fx, fw))
    assert np.array_equal(est.components_, model.x.matrix.T)
    assert np.array_equal(est.components_w_, model.w.matrix.T)
    assert np.array_equal(est.offset_, model.x.offset)
    # sketches: the pipeline's sketch_numpy (BLAS on one thread, as in its tasks)
    s, t = est.transform(x), est.transform_w(w)
    with threadpool_limits(limits=1):
        assert s.tobytes() == dd.sketch_numpy(model, "x", x, BLOCK).tobytes()
        assert t.tobytes() == dd.sketch_numpy(model, "w", w, BLOCK).tobytes()
    assert s.dtype == np.float32 and s.shape == (len(x), K) and t.shape == (len(w), K)
    # and the affine map computed independently in float64
    assert np.allclose(s, x.astype(np.float64) @ est.components_.T + est.offset_,
                       rtol=1e-4, atol=1e-3)
    assert np.allclose(t, reference_sketch(model, "w", w), rtol=1e-4, atol=1e-4)
    # fitted attributes
    assert est.n_features_in_ == 64 and est.n_components_ == K
    assert est.components_.shape == (K, 64) and est.offset_w_.shape == (K,)
    assert est.predicted_mse_ == model.info["predicted"]["auto"]
    assert est.predicted_gain_ == pytest.approx(model.info["gain"])
    assert est.model_.seed == 7 and est.model_.provenance["block_rows"] == BLOCK
    # the estimate of X @ W.T has about the predicted pair-averaged error, far below gaussian
    exact = x.astype(np.float64) @ w.T.astype(np.float64)
    mse = np.mean((s.astype(np.float64) @ t.T - exact) ** 2)
    assert 0.2 * est.predicted_mse_ < mse < 5 * est.predicted_mse_
    g = _fit(x, w, "gaussian")
    g_mse = np.mean((g.transform(x).astype(np.float64) @ g.transform_w(w).T - exact) ** 2)
    assert g_mse > 10 * mse


def test_estimator_and_cli_pipeline_give_the_same_bytes(tmp_path: Path, digits: Any) -> None:
    x, _, w = digits
    xp, wp = write_npy(tmp_path / "x.npy", x), write_npy(tmp_path / "w.npy", w)
    plan = dd.plan_run(xp, wp, K, str(tmp_path / "run.zarr"), "auto", seed=7, block_rows=BLOCK)
    model = dd.execute(plan, scheduler="threads")
    est = _fit(x, w)
    out = zarr.open_group(str(tmp_path / "run.zarr"), mode="r")
    assert np.array_equal(model.x.matrix, est.model_.x.matrix)
    assert np.array_equal(model.w.offset, est.model_.w.offset)
    assert out["x"][...].tobytes() == est.transform(x).tobytes()
    assert out["w"][...].tobytes() == est.transform_w(w).tobytes()


def test_dask_path_equals_numpy_path_byte_for_byte(digits: Any) -> None:
    x, _, w = digits
    ref = _fit(x, w, "asymmetric")
    xd = da.from_array(x, chunks=(333, 20))
    wd = da.from_array(w, chunks=(7, 64))
    est = _fit(xd, wd, "asymmetric")
    for side in ("x", "w"):
        for name in ("matrix", "offset", "shift"):
            assert np.array_equal(getattr(est.model_.side(side), name),
                                  getattr(ref.model_.side(side), name)), (side, name)
    s = est.transform(xd)
    assert isinstance(s, da.Array)  # lazy
    assert s.chunks == ((500, 500, 500, 297), (K,)) and s.dtype == np.float32
    assert s.compute().tobytes() == ref.transform(x).tobytes()
    t = est.transform_w(wd)
    assert isinstance(t, da.Array)
    assert t.compute().tobytes() == ref.transform_w(w).tobytes()
    # mixed: dask X with numpy W gives the same model
    mixed = _fit(xd, w, "asymmetric")
    assert np.array_equal(mixed.components_w_, ref.components_w_)


def test_dtypes_float32_stays_float32_and_float64_works_in_float64() -> None:
    x, w = make_pair(n=1200, m=300, d=12, seed=3, dtype="float64")
    est64 = _fit(x, w, "auto", 8)
    s64 = est64.transform(x)
    assert s64.dtype == np.float32
    # float64 input is projected in float64: only the final rounding to float32 remains
    exact = x @ est64.components_.T + est64.offset_
    assert np.max(np.abs(s64 - exact) / (np.abs(exact) + 1e-3)) < 1e-6
    x32 = x.astype(np.float32)
    est32 = _fit(x32, w.astype(np.float32), "auto", 8)
    assert est32.transform(x32).dtype == np.float32
    # int16 data is processed in float32 like the CLI's readers; ints fit like the floats
    xi = np.round(x * 100).astype(np.int16)
    s_int = _fit(xi, w, "auto", 8).transform(xi)
    s_flt = _fit(xi.astype(np.float32), w, "auto", 8).transform(xi.astype(np.float32))
    assert s_int.tobytes() == s_flt.tobytes()


def test_symmetric_case_when_w_is_none(digits: Any) -> None:
    x, _, _ = digits
    sym = AsymmetricRandomProjection(8, random_state=1).fit(x)
    both = AsymmetricRandomProjection(8, random_state=1).fit(x, W=x)
    assert np.array_equal(sym.components_, both.components_)
    assert np.array_equal(sym.components_w_, both.components_w_)
    assert sym.model_.provenance["symmetric"] is True
    # W passed positionally lands in y, which is ignored: warned, and the fit is symmetric
    with pytest.warns(UserWarning, match=r"pass it by keyword: fit\(X, W=W\)"):
        positional = AsymmetricRandomProjection(8, random_state=1).fit(x, x[:50])
    assert np.array_equal(positional.components_, sym.components_)


def test_pipeline_with_logistic_regression(digits: Any) -> None:
    x, y, w = digits
    rng = np.random.default_rng(0)
    order = rng.permutation(len(x))
    train, test = order[:1200], order[1200:]
    pipe = make_pipeline(AsymmetricRandomProjection(24, random_state=0), StandardScaler(),
                         LogisticRegression(max_iter=2000))
    pipe.fit(x[train], y[train])  # y goes to the classifier; the projection is symmetric
    assert pipe[0].model_.stats_w.n == len(train)
    acc = float(np.mean(pipe.predict(x[test]) == y[test]))
    assert acc > 0.85, acc
    # W as the projection step's fit parameter
    pipe.fit(x[train], y[train], asymmetricrandomprojection__W=w)
    assert pipe[0].model_.stats_w.n == len(w)
    assert float(np.mean(pipe.predict(x[test]) == y[test])) > 0.85
    names = pipe[0].get_feature_names_out()
    assert names.shape == (24,) and names[0] == "asymmetricrandomprojection0"


def test_random_state_none_draws_an_int_seed_like_sklearn(digits: Any) -> None:
    x, _, w = digits
    np.random.seed(3)  # noqa: NPY002 - random_state=None uses the global generator
    expected = np.random.RandomState(3).randint(np.iinfo(np.int32).max)
    est = AsymmetricRandomProjection(8, method="gaussian").fit(x, W=w)
    assert est.model_.seed == expected
    again = AsymmetricRandomProjection(8, method="gaussian").fit(x, W=w)
    assert again.model_.seed != est.model_.seed
    assert not np.array_equal(again.components_, est.components_)
    fixed = AsymmetricRandomProjection(8, method="gaussian", random_state=est.model_.seed)
    assert np.array_equal(fixed.fit(x, W=w).components_, est.components_)


def test_errors_name_the_bad_value(digits: Any) -> None:
    x, _, w = digits
    with pytest.raises(OptionError, match="got d=10 for W but d=64 for X"):
        AsymmetricRandomProjection(8).fit(x, W=w[:, :10])
    with pytest.raises(OptionError, match=r"K=67 is too large for method 'auto' at d=64"):
        AsymmetricRandomProjection(67).fit(x, W=w)
    with pytest.raises(OptionError, match="unknown method 'pca'"):
        AsymmetricRandomProjection(8, method="pca").fit(x)
    with pytest.raises(OptionError, match="n_components must be a positive integer, got 0"):
        AsymmetricRandomProjection(0).fit(x)
    with pytest.raises(OptionError, match="shrinkage must be 'oas' or a number"):
        AsymmetricRandomProjection(8, shrinkage=2.0).fit(x)
    with pytest.raises(OptionError, match="random_state must be a non-negative integer"):
        AsymmetricRandomProjection(8, random_state=-1).fit(x)
    with pytest.raises(NotFittedError):
        AsymmetricRandomProjection(8).transform(x)
    bad = x.copy()
    bad[1234, 5] = np.nan
    with pytest.raises(InvalidValueError, match="NaN"):
        AsymmetricRandomProjection(8).fit(bad)
    est = _fit(x, w, "auto", 8)
    with pytest.raises(InvalidValueError, match="NaN"):
        est.transform(bad)
    with pytest.raises(DdrpError, match="X has 10 features, but AsymmetricRandomProjection is "
                                        "expecting 64 features"):
        est.transform(x[:, :10])
    with pytest.raises(OptionError, match="got d=10 for W but the model was fitted for d=64"):
        est.transform_w(w[:, :10])
    # dask: checked in the tasks, naming the row and column
    bad_d = da.from_array(bad, chunks=(300, 64))
    with pytest.raises(InvalidValueError, match=r"row 1234 column 5 is nan"):
        AsymmetricRandomProjection(8, block_rows=BLOCK).fit(bad_d)
    with pytest.raises(InvalidValueError, match=r"row 1234 column 5 is nan"):
        est.transform(bad_d).compute()
    with pytest.raises(InputError, match="expected a 2-D dask array"):
        est.transform(da.ones(5))
    assert issubclass(DdrpError, ValueError)


def test_the_documented_k_ranges_are_the_rules(digits: Any) -> None:
    """The docstring's K ranges are ``options.k_range``'s (``auto`` takes K = 1, exact from
    d), and the estimator refuses what the rule refuses, with the method's reason."""
    from ddrp_dask.options import k_range

    doc = " ".join((AsymmetricRandomProjection.__doc__ or "").split())
    stated = {"auto": ("``auto`` 1 ≤ K ≤ d + 2", (1, 66)),
              "head-tail": ("``head-tail`` 3 ≤ K ≤ d + 2", (3, 66)),
              "truncated": ("``truncated`` 2 ≤ K ≤ d + 2", (2, 66)),
              "orthogonal": ("``orthogonal`` K ≤ d", (1, 64)),
              "gaussian": ("the others any K ≥ 1", (1, None))}
    for method, (text, bounds) in stated.items():
        assert text in doc and k_range(method, 64) == bounds, method
    x, _, w = digits
    assert AsymmetricRandomProjection(1, random_state=0).fit(x, W=w).transform(x).shape == \
        (len(x), 1)
    with pytest.raises(OptionError, match="at least 1 tail column, so K ≥ 3"):
        AsymmetricRandomProjection(2, method="head-tail").fit(x, W=w)
