"""W as a prior over model vectors, estimated from labels by bootstrap fits of a linear model.

When the sketches are meant for learning (a linear model trained on ``s(x)``), the vectors
whose inner products with x must be preserved are the model's weight vectors. Without
knowing the final model, a sample of plausible ones is the next best thing: fit ridge or
logistic regression on bootstrap resamples of a labelled (sub)sample and stack the weight
vectors (the paper's regression and classification use). The result is a W source like any
other: ``AsymmetricRandomProjection(...).fit(X, W=bootstrap_weights(X, y))``.

scikit-learn is imported inside the function: it is an optional dependency.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from typing import Any

import numpy as np

from ..errors import InputError, OptionError, extra_missing
from .blas import one_blas_thread
from .project import check_finite

__all__ = ["MODELS", "bootstrap_weights"]

MODELS = ("ridge", "logistic")


def bootstrap_weights(X: Any, y: Any, n_boot: int = 20, model: str = "ridge",
                      sample: int | float | None = None, seed: int = 0, *,
                      standardize: bool = True,
                      model_params: Mapping[str, Any] | None = None) -> np.ndarray:
    """Weight vectors of linear models fitted on bootstrap resamples of labelled rows.

    Parameters
    ----------
    X : array-like or dask array of shape (n_samples, n_features)
        The labelled rows (only the sampled ones are read; a dask array is indexed lazily
        and only the sample is computed).
    y : array-like of shape (n_samples,) or (n_samples, n_targets)
        Labels. For ``logistic``: class labels. For ``ridge``: a float 1-D or any 2-D ``y``
        is regression targets (one vector per column); integer, boolean or string 1-D labels
        are classes, coded ±1 one-vs-rest (one vector per class; one for two classes).
    n_boot : int, default=20
        Bootstrap fits.
    model : {"ridge", "logistic"}, default="ridge"
        ``sklearn.linear_model.Ridge`` or ``LogisticRegression`` (its ``coef_`` rows: one
        for two classes, one per class otherwise).
    sample : int, float or None, default=None
        Rows drawn (without replacement) before bootstrapping: a count, or a fraction in
        (0, 1]; None uses every row.
    seed : int, default=0
        Seed of the sample and of the resamples (``numpy.random.default_rng``).
    standardize : bool, default=True
        Fit on columns scaled to unit variance (constant columns left as they are) and
        map the vectors back to X's units, so ``x · w`` is the model's decision value minus
        its intercept whatever the columns' scales.
    model_params : mapping, optional
        Extra parameters of the scikit-learn model, e.g. ``{"alpha": 10.0}`` for ridge or
        ``{"C": 0.1}`` for logistic (whose ``max_iter`` defaults to 1000 here).

    Returns
    -------
    ndarray of shape (n_boot * vectors_per_fit, n_features), float64
        Fit ``b``'s vectors are rows ``b * vectors_per_fit`` onwards. Intercepts are dropped.

    Notes
    -----
    Resamples of class labels are stratified (each class keeps its count in the sample),
    so every fit sees every class and yields the same number of vectors.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> X = rng.standard_normal((200, 5))
    >>> W = bootstrap_weights(X, X @ np.arange(5.0), n_boot=3, seed=1)
    >>> W.shape
    (3, 5)
    """
    _check_options(n_boot, model, seed)
    missing = extra_missing("sklearn", "bootstrap_weights")
    if missing is not None:
        raise ImportError(missing, name="sklearn")
    from sklearn.linear_model import LogisticRegression, Ridge

    rng = np.random.default_rng(seed)
    xs, ys = _labelled_sample(X, y, sample, rng)
    targets, groups = _targets(ys, model)
    if standardize:
        mean, scale = xs.mean(axis=0), xs.std(axis=0)
        scale[scale == 0] = 1.0
        xs = (xs - mean) / scale
    else:
        scale = np.ones(xs.shape[1])
    params = dict(model_params or {})
    weights = []
    # One BLAS thread: the fits are small, and with two threads a digits logistic fit ran
    # ~14x slower on a 2-core machine; it also makes the weights independent of the cores.
    with one_blas_thread():
        for _ in range(int(n_boot)):
            idx = _resample(groups, len(xs), rng)
            if model == "logistic":
                est = LogisticRegression(**{"max_iter": 1000, **params})
            else:
                est = Ridge(**params)
            est.fit(xs[idx], targets[idx])
            weights.append(np.atleast_2d(est.coef_) / scale)
    return np.concatenate(weights).astype(np.float64)


def _check_options(n_boot: int, model: str, seed: int) -> None:
    if not isinstance(n_boot, numbers.Integral) or n_boot < 1:
        raise OptionError(f"n_boot must be a positive integer, got {n_boot!r}")
    if model not in MODELS:
        raise OptionError(f"unknown model {model!r}; choose one of {', '.join(MODELS)}")
    if not isinstance(seed, numbers.Integral) or seed < 0:
        raise OptionError(f"seed must be a non-negative integer, got {seed!r}")


def _sample_rows(n: int, sample: int | float | None, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices of the sampled rows."""
    if sample is None:
        return np.arange(n)
    if isinstance(sample, numbers.Integral) and not isinstance(sample, bool):
        count = int(sample)
        if not 2 <= count <= n:
            raise OptionError(f"sample={count} rows is outside 2..{n} (the labelled rows)")
    elif isinstance(sample, numbers.Real) and 0.0 < float(sample) <= 1.0:
        count = round(float(sample) * n)
        if count < 2:
            raise OptionError(f"sample={sample} of {n} rows is {count} row(s); at least 2 "
                              "are needed")
    else:
        raise OptionError(f"sample must be a row count, a fraction in (0, 1] or None, got "
                          f"{sample!r}")
    return np.sort(rng.choice(n, size=count, replace=False))


def _labelled_sample(X: Any, y: Any, sample: int | float | None,
                     rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The sampled rows of X (float64) and y, checked."""
    shape = getattr(X, "shape", None)
    if shape is None:
        X = np.asarray(X)
        shape = X.shape
    if len(shape) != 2 or shape[0] == 0 or shape[1] == 0:
        raise InputError(f"X must be a non-empty 2-D array (rows x d), got shape {shape}")
    n = int(shape[0])
    n_y = int(getattr(y, "shape", (len(y),))[0])
    if n_y != n:
        raise InputError(f"X has {n} rows but y has {n_y} labels; give one label per row")
    idx = _sample_rows(n, sample, rng)
    xs, ys = _take(X, idx), _take(y, idx)
    xs = np.asarray(xs, dtype=np.float64)
    check_finite(xs, "X (labelled sample)", 0)
    return xs, ys


def _take(a: Any, idx: np.ndarray) -> np.ndarray:
    """Rows ``idx`` of a numpy/array-like or (computing only them) dask array."""
    if hasattr(a, "compute") and hasattr(a, "chunks"):
        return np.asarray(a[idx].compute())
    rows: np.ndarray = np.asarray(a)[idx]
    return rows


def _targets(ys: np.ndarray, model: str) -> tuple[np.ndarray, np.ndarray | None]:
    """The fitted targets and, for class labels, each row's class index (for stratified
    resampling; None for regression targets)."""
    if model == "ridge" and (ys.ndim == 2 or ys.dtype.kind in "fc"):
        if ys.ndim > 2 or not np.isfinite(ys).all():
            raise InputError("ridge targets must be finite numbers, 1-D or 2-D")
        return ys.astype(np.float64), None
    if ys.ndim != 1:
        raise InputError(f"class labels must be 1-D, got y of shape {ys.shape}")
    classes, codes = np.unique(ys, return_inverse=True)
    if len(classes) < 2:
        raise InputError(f"the labelled sample holds one class ({classes[0]!r}); a fit needs "
                         "at least two (sample more rows)")
    if model == "logistic":
        return ys, codes
    onehot = np.where(codes[:, None] == np.arange(len(classes)), 1.0, -1.0)
    return (onehot[:, 1] if len(classes) == 2 else onehot), codes


def _resample(groups: np.ndarray | None, n: int, rng: np.random.Generator) -> np.ndarray:
    """Bootstrap row indices; stratified by class when ``groups`` is given."""
    if groups is None:
        return rng.integers(0, n, n)
    parts = []
    for g in range(int(groups.max()) + 1):
        members = np.flatnonzero(groups == g)
        parts.append(members[rng.integers(0, len(members), len(members))])
    return np.sort(np.concatenate(parts))
