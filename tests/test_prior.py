"""bootstrap_weights: shapes, determinism, and weights checked against independent fits."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer, load_digits, load_wine

from ddrp_dask import bootstrap_weights
from ddrp_dask.errors import InputError, OptionError


def test_ridge_on_noiseless_linear_data_recovers_the_true_vector() -> None:
    x, _ = load_wine(return_X_y=True)  # real features, scales from 0.1 to 1000
    rng = np.random.default_rng(0)
    beta = rng.standard_normal(x.shape[1]) / x.std(axis=0)
    y = x @ beta + 3.0
    w = bootstrap_weights(x, y, n_boot=5, model="ridge", model_params={"alpha": 1e-8})
    assert w.shape == (5, x.shape[1]) and w.dtype == np.float64
    assert np.allclose(w, beta, rtol=1e-5, atol=1e-8)
    # without standardising too
    raw = bootstrap_weights(x, y, n_boot=2, standardize=False, model_params={"alpha": 1e-10})
    assert np.allclose(raw, beta, rtol=1e-4, atol=1e-6)
    # two targets: one vector per target, per fit
    y2 = np.column_stack([y, x @ (2 * beta)])
    w2 = bootstrap_weights(x, y2, n_boot=3, model_params={"alpha": 1e-8})
    assert w2.shape == (6, x.shape[1])
    assert np.allclose(w2[0::2], beta, rtol=1e-5) and np.allclose(w2[1::2], 2 * beta, rtol=1e-5)


def test_each_fit_equals_an_independent_fit_on_its_resample() -> None:
    """Fit b's vectors are a plain ridge fit, on standardised columns, mapped back."""
    from sklearn.linear_model import Ridge

    x, y = load_breast_cancer(return_X_y=True)
    w = bootstrap_weights(x, y, n_boot=3, model="ridge", seed=5)
    assert w.shape == (3, 30)  # two classes: one ±1 target
    # independent: the same resamples (stratified by class), numpy standardisation
    rng = np.random.default_rng(5)
    mean, std = x.mean(0), x.std(0)
    z = (x - mean) / std
    target = np.where(y == 1, 1.0, -1.0)
    for b in range(3):
        idx = np.sort(np.concatenate([np.flatnonzero(y == c)[rng.integers(0, n, n)]
                                      for c, n in ((0, np.sum(y == 0)), (1, np.sum(y == 1)))]))
        coef = Ridge().fit(z[idx], target[idx]).coef_ / std
        assert np.allclose(w[b], coef, rtol=1e-10, atol=1e-14)
    # and the vector separates the classes: x.w is a useful decision value
    score = x @ w[0]
    assert np.mean((score > np.median(score)) == (y == 1)) > 0.8


def test_logistic_shapes_determinism_and_sample() -> None:
    x, y = load_digits(return_X_y=True)
    w = bootstrap_weights(x, y, n_boot=3, model="logistic", sample=400, seed=2,
                          model_params={"C": 0.1})
    assert w.shape == (30, 64)  # 10 classes x 3 fits
    again = bootstrap_weights(x, y, n_boot=3, model="logistic", sample=400, seed=2,
                              model_params={"C": 0.1})
    assert np.array_equal(w, again)
    other = bootstrap_weights(x, y, n_boot=3, model="logistic", sample=400, seed=3,
                              model_params={"C": 0.1})
    assert not np.array_equal(w, other)
    # constant pixels get exactly zero weight; weights vary across resamples
    constant = x.std(axis=0) == 0
    assert constant.any() and np.all(w[:, constant] == 0)
    assert np.std(w[0::10], axis=0).max() > 0
    # binary: one coef_ row per fit; ridge one-vs-rest: one vector per class
    assert bootstrap_weights(x, y % 2, n_boot=2, model="logistic").shape == (2, 64)
    assert bootstrap_weights(x, y, n_boot=2, model="ridge", sample=0.5).shape == (20, 64)


def test_logistic_bootstrap_fits_scatter_around_the_full_data_fit() -> None:
    from sklearn.linear_model import LogisticRegression

    x, y = load_wine(return_X_y=True)  # 3 classes, column scales from 0.1 to 1000
    w = bootstrap_weights(x, y, n_boot=4, model="logistic", seed=2)
    assert w.shape == (12, 13)
    # independent: one multinomial fit on all rows, on columns standardised with numpy
    std = x.std(axis=0)
    full = LogisticRegression(max_iter=1000).fit((x - x.mean(0)) / std, y).coef_
    for b in range(4):
        wb = w[3 * b:3 * (b + 1)] * std  # back to standardised units
        cos = np.sum(wb * full, axis=1) / np.linalg.norm(wb, axis=1) / np.linalg.norm(full,
                                                                                      axis=1)
        assert cos.min() > 0.9, cos
        assert np.abs(wb - full).max() > 1e-2  # but they are resampled fits, not the same
    # raw-unit vectors: x . w differs from the full model's decision value by a constant
    full_raw = full / std
    for c in range(3):
        diff = x @ w[c] - x @ full_raw[c]
        assert np.std(diff) < 0.5 * np.std(x @ full_raw[c])


def test_dask_input_reads_only_the_sample() -> None:
    x, y = load_digits(return_X_y=True)
    xd, yd = da.from_array(x, chunks=(256, 64)), da.from_array(y, chunks=256)
    w = bootstrap_weights(xd, yd, n_boot=2, model="ridge", sample=300, seed=4)
    assert np.array_equal(w, bootstrap_weights(x, y, n_boot=2, model="ridge", sample=300,
                                               seed=4))


def test_errors() -> None:
    x, y = load_wine(return_X_y=True)
    with pytest.raises(OptionError, match="unknown model 'lasso'"):
        bootstrap_weights(x, y, model="lasso")
    with pytest.raises(OptionError, match="n_boot must be a positive integer, got 0"):
        bootstrap_weights(x, y, n_boot=0)
    with pytest.raises(OptionError, match=r"sample=500 rows is outside 2\.\.178"):
        bootstrap_weights(x, y, sample=500)
    with pytest.raises(InputError, match="X has 178 rows but y has 10 labels"):
        bootstrap_weights(x, y[:10])
    with pytest.raises(InputError, match="holds one class"):
        bootstrap_weights(x, np.zeros(len(x), dtype=int), model="logistic")
