"""A scikit-learn estimator over the library's stages: ``AsymmetricRandomProjection``.

It runs exactly what the CLI runs — ``block_moments`` on canonical row blocks merged by
``combine_all``'s fixed tree, ``build``, then ``project_block`` block by block — on numpy
arrays in memory or lazily on Dask arrays. For the same data, K, method, seed and block rows
the estimator, the Dask path and ``ddrp run`` give the same bytes.

scikit-learn is an optional dependency of ddrp (the ``sklearn`` extra): this module needs it,
the rest of the package does not (``ddrp_dask.AsymmetricRandomProjection`` imports it on first
use); without it, importing it raises an ImportError naming the extra.
"""

from __future__ import annotations

import numbers
import warnings
from typing import Any

import numpy as np

from .errors import extra_missing

if extra_missing("sklearn", "AsymmetricRandomProjection") is not None:
    raise ImportError(extra_missing("sklearn", "AsymmetricRandomProjection"), name="sklearn")

from sklearn.base import BaseEstimator, ClassNamePrefixFeaturesOutMixin, TransformerMixin
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_array, check_is_fitted, validate_data

from .errors import DdrpError, InputError, InvalidValueError, OptionError
from .graph.arrays import as_dask_array, is_dask_array, moments_of_arrays, sketch_array
from .graph.progress import step_line
from .io.common import working_dtype
from .jobs.sketch import sketch_numpy
from .maths.blas import one_blas_thread
from .maths.budget import budgeted_model, choose_budget
from .maths.build import build
from .maths.folds import combine_folds, moments_by_fold
from .maths.methods import fold_count
from .maths.model import SketchModel
from .maths.quantize import model_layout, quantized_model
from .maths.stats import Moments, block_moments, combine_all
from .options import (
    FitOptions,
    check_block_rows,
    check_dtype,
    check_method,
    check_same_d,
    check_seed,
    check_shrinkage,
)
from .report import report_dict

__all__ = ["AsymmetricRandomProjection"]

#: Seeds drawn for ``random_state=None`` or a ``RandomState`` lie in [0, _SEED_MAX).
_SEED_MAX = np.iinfo(np.int32).max


class AsymmetricRandomProjection(
        ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator):  # type: ignore[misc]
    """Data-dependent random projection of two sources: ``transform(X) @ transform_w(W).T``
    estimates ``X @ W.T``.

    ``fit`` computes the statistics of X and W (one pass each, float64) and builds the
    projection pair (``ddrp_dask.build``); ``transform`` sketches rows of the x side and
    ``transform_w`` rows of the w side. Every one of the ``n_components`` columns is
    stored; the estimate is the plain dot product of two sketches (``docs/method.md §1``).

    Parameters
    ----------
    n_components : int, default=16
        K, the stored columns per sketch, in the method's range
        (``ddrp_dask.options.k_range``): ``auto`` 1 ≤ K ≤ d + 2 (exact from d),
        ``head-tail`` 3 ≤ K ≤ d + 2, ``truncated`` 2 ≤ K ≤ d + 2, ``orthogonal`` K ≤ d, the
        others any K ≥ 1.
    method : str, default="auto"
        One of ``ddrp_dask.METHODS``: ``auto``, ``asymmetric``, ``diagonal``, ``gaussian``,
        ``head-tail``, ``orthogonal``, ``sparse``, ``truncated`` (biased, opt-in).
    random_state : int, RandomState instance or None, default=None
        Seed of the random draws (a non-negative int). None or a ``RandomState`` draws an
        int seed from it at each ``fit`` (from numpy's global generator for None, as in
        scikit-learn's ``check_random_state``); the seed used is ``model_.seed``.
    shrinkage : "auto", "oas" or float in [0, 1], default="auto"
        Shrinkage of the second moments towards (trace/d)·I.
    block_rows : int or None, default=None
        Rows of one canonical block (one statistics leaf, one projection GEMM); None uses
        ``ddrp_dask.io.default_block_rows(d)``, the CLI's default, so the estimator and
        ``ddrp run`` agree byte for byte. Dask inputs are rechunked to these rows.
    dtype : {"float32", "float16", "int8", "mixed", "int8max", "mixedmax"} or None, default=None
        The storage layout of the sketches (``docs/quantized.md``): float16 or int8 codes
        with per-row scales, ``mixed`` (exact head float16, the rest int8), or ``int8max`` /
        ``mixedmax`` (the int8 scale the row's exact max, as float32), stochastically
        rounded so every estimate stays unbiased. ``transform`` and ``transform_w`` return
        the *decoded* float32 values the codes stand for (exactly what ``ddrp`` stores, as
        numbers), so ``transform(X) @ transform_w(W).T`` is the quantized estimate. None:
        float32, or with ``bytes_per_row`` the layout the budget chooses.
    bytes_per_row : int or None, default=None
        A storage budget per sketch row (``auto`` only): K and the layout with the smallest
        predicted MSE within it are chosen at ``fit`` and ``n_components`` is not used
        (``n_components_`` and ``model_.info["budget"]`` say what was chosen).
    verbose : int, default=0
        Above 0, ``fit`` draws progress lines on stderr, as the CLI does on a terminal:
        the statistics pass of Dask inputs (blocks done of all) and the build (its steps and
        the elapsed time, redrawn every second, so that a long build at a large d is never
        silent). The fitted model does not depend on it.

    Attributes
    ----------
    model_ : SketchModel
        The fitted model (save it with ``ddrp_dask.save_model``; ``ddrp project`` applies
        it to files).
    n_features_in_ : int
        d, the dimension of both sources.
    feature_names_in_ : ndarray of shape (n_features,)
        Names of X's columns, when X has string column names.
    n_components_ : int
        K.
    components_ : ndarray of shape (n_components, n_features)
        The x side's matrix: ``transform(X) ≈ X @ components_.T + offset_`` (float64;
        the sketch is rounded to float32).
    offset_ : ndarray of shape (n_components,)
        The x side's constant column terms (non-zero for ``auto``/``truncated``'s mean
        columns, zero for the purely linear methods).
    components_w_ : ndarray of shape (n_components, n_features)
        The w side's matrix: ``transform_w(W) ≈ W @ components_w_.T + offset_w_``.
    offset_w_ : ndarray of shape (n_components,)
    predicted_mse_ : float
        Predicted mean squared error of ``x · w`` averaged over pairs: for ``auto``, out of
        sample (cross-fitted over 5 folds of the rows: new pairs like the data), for the
        other methods over pairs of the fitted rows.
    predicted_rel_mse_ : float
        ``predicted_mse_ / E(x·w)²``.
    predicted_mse_gaussian_ : float
        The predicted MSE of a Gaussian sketch of equal K.
    predicted_gain_ : float
        ``predicted_mse_gaussian_ / predicted_mse_``.
    allocation_ : dict or None
        How the K columns are spent (``head``, ``sampled``, ``tail`` widths).
    report_ : dict
        The whole build report (``ddrp_dask.report.report_dict``: what ``--report`` writes).

    Notes
    -----
    ``fit(X)`` without W (as in a scikit-learn ``Pipeline``, which passes labels as ``y``)
    fits the symmetric case: X serves as both sources. To fit against another source pass
    it by keyword, ``fit(X, W=W)``; in a Pipeline, as the step's fit parameter
    (``pipe.fit(X, y, asymmetricrandomprojection__W=W)``). ``y`` is always ignored.

    numpy (or any array-like) in gives numpy out, float32 of shape (n_samples, K);
    a Dask array in gives a lazy Dask array out, one row block per canonical block and one
    block across the columns. float16/float32 and ≤16-bit integer inputs are processed in
    float32, wider ones in float64 (``ddrp_dask.io.working_dtype``), as the CLI does.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> X, W = rng.standard_normal((500, 20)), rng.standard_normal((50, 20))
    >>> arp = AsymmetricRandomProjection(n_components=8, random_state=0).fit(X, W=W)
    >>> S, T = arp.transform(X), arp.transform_w(W)
    >>> S.shape, T.shape, S.dtype
    ((500, 8), (50, 8), dtype('float32'))
    """

    def __init__(self, n_components: int = 16, method: str = "auto",
                 random_state: int | np.random.RandomState | None = None,
                 shrinkage: float | str = "auto", block_rows: int | None = None,
                 dtype: str | None = None, bytes_per_row: int | None = None,
                 verbose: int = 0) -> None:
        self.n_components = n_components
        self.method = method
        self.random_state = random_state
        self.shrinkage = shrinkage
        self.block_rows = block_rows
        self.dtype = dtype
        self.bytes_per_row = bytes_per_row
        self.verbose = verbose

    # -----------------------------------------------------------------------------------
    # scikit-learn API

    def fit(self, X: Any, y: Any = None, *, W: Any = None) -> AsymmetricRandomProjection:
        """Compute the statistics of X and W and build the projection pair.

        Parameters
        ----------
        X : array-like or dask array of shape (n_samples, n_features)
            The x source.
        y : None
            Ignored; present for the scikit-learn API (a Pipeline passes labels here).
        W : array-like or dask array of shape (n_w_samples, n_features), default=None
            The w source. None uses X (the symmetric case).

        Returns
        -------
        self : AsymmetricRandomProjection
        """
        self._check_params()
        x_dask = is_dask_array(X)
        if x_dask:
            xa = as_dask_array(X, "X")
            self.n_features_in_ = int(xa.shape[1])
            if hasattr(self, "feature_names_in_"):
                del self.feature_names_in_
        else:
            xa = self._validate_x(X, reset=True)
        d = self.n_features_in_
        if W is None:
            _warn_if_y_looks_like_w(y, d)
            wa = None
        else:
            wa = as_dask_array(W, "W") if is_dask_array(W) else _check_numpy(W, "W")
            check_same_d(d, wa.shape[1], "X", "W")
        # every parameter validated once, here, into the options the maths receive
        # (with a byte budget, n_components is not used)
        opts = FitOptions.check(
            d, self.block_rows, self._seed(), method=self.method,
            k=None if self.bytes_per_row is not None else int(self.n_components),
            shrinkage=self.shrinkage, dtype=self.dtype, bytes_per_row=self.bytes_per_row)
        n_folds = fold_count(opts.method, d)
        n_folds = n_folds if n_folds > 1 else 0
        show = self.verbose > 0
        fx, fw = _moments(xa, wa, opts.block_rows, n_folds, show)
        mx, mw = (combine_all(fx), combine_all(fw)) if n_folds else (fx[0], fw[0])
        provenance = {"command": "estimator", "block_rows": opts.block_rows,
                      "shrinkage": opts.shrinkage, "symmetric": W is None}
        budget = opts.bytes_per_row
        choice = None if budget is None else \
            choose_budget(fx, fw, budget, opts.shrinkage, opts.dtype)
        k = opts.k if choice is None else choice[0].layout.k
        assert k is not None
        with step_line(show, f"build ({opts.method}, d={d})") as line:
            if line is not None:
                line(f"K={k}")
            model = build(mx, mw, k, opts.method, opts.seed, opts.shrinkage,
                          provenance=provenance, folds=(fx, fw) if n_folds else None,
                          progress=line)
        self.model_ = quantized_model(model, opts.dtype or "float32") if choice is None \
            else budgeted_model(model, budget or 0, *choice)
        self._set_fitted_attributes(self.model_)
        return self

    def transform(self, X: Any) -> Any:
        """Sketch rows of the x side.

        Parameters
        ----------
        X : array-like or dask array of shape (n_samples, n_features)

        Returns
        -------
        ndarray of shape (n_samples, n_components), float32, or a lazy dask array
            ``transform(X) @ transform_w(W).T`` estimates ``X @ W.T``.
        """
        check_is_fitted(self)
        if is_dask_array(X):
            xa = as_dask_array(X, "X")
            if xa.shape[1] != self.n_features_in_:
                raise OptionError(f"X has {xa.shape[1]} features, but {type(self).__name__} "
                                  f"is expecting {self.n_features_in_} features as input")
            return self._sketch_dask(xa, "x")
        return self._sketch(self._validate_x(X, reset=False), "x")

    def transform_w(self, W: Any) -> Any:
        """Sketch rows of the w side.

        Parameters
        ----------
        W : array-like or dask array of shape (n_w_samples, n_features)

        Returns
        -------
        ndarray of shape (n_w_samples, n_components), float32, or a lazy dask array
        """
        check_is_fitted(self)
        wa = as_dask_array(W, "W") if is_dask_array(W) else _check_numpy(W, "W")
        if wa.shape[1] != self.n_features_in_:
            raise OptionError(f"got d={wa.shape[1]} for W but the model was fitted for "
                              f"d={self.n_features_in_}")
        return self._sketch_dask(wa, "w") if is_dask_array(wa) else self._sketch(wa, "w")

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        # Sketches are float32 whatever the input (the output contract); float32 in stays
        # float32 out, float64 in does not stay float64.
        tags.transformer_tags.preserves_dtype = ["float32"]
        return tags

    @property
    def _n_features_out(self) -> int:
        """K, for ``get_feature_names_out`` (AttributeError before ``fit``)."""
        return int(self.n_components_)

    # -----------------------------------------------------------------------------------
    # helpers

    def _check_params(self) -> None:
        """Raise ``OptionError`` for a bad parameter (K against d is checked later), with
        the rules of ``ddrp_dask.options`` that the CLI and the plans use."""
        k = self.n_components
        if not isinstance(k, numbers.Integral) or isinstance(k, bool) or k < 1:
            raise OptionError(f"n_components must be a positive integer, got {k!r}")
        check_method(self.method)
        check_shrinkage(self.shrinkage)
        if self.dtype is not None:
            check_dtype(self.dtype)
        b = self.block_rows
        if b is not None and (not isinstance(b, numbers.Integral) or isinstance(b, bool)
                              or b < 1):
            raise OptionError(f"block_rows must be None or a positive integer, got {b!r}")
        v = self.verbose
        if not isinstance(v, numbers.Integral | bool) or v < 0:
            raise OptionError(f"verbose must be an integer ≥ 0, got {v!r}")
        r = self.random_state
        if isinstance(r, numbers.Integral) and not isinstance(r, bool):
            try:
                check_seed(r)
            except OptionError:
                raise OptionError(f"random_state must be a non-negative integer below 2**63, "
                                  f"None or a RandomState, got {r!r}") from None

    def _seed(self) -> int:
        r = self.random_state
        if isinstance(r, numbers.Integral) and not isinstance(r, bool):
            return int(r)
        try:
            return int(check_random_state(r).randint(_SEED_MAX))
        except ValueError as e:
            raise OptionError(f"random_state must be a non-negative integer, None or a "
                              f"RandomState, got {r!r}") from e

    def _block_rows(self, d: int) -> int:
        return check_block_rows(self.block_rows, d)

    def _validate_x(self, X: Any, reset: bool) -> np.ndarray:
        """X through scikit-learn's validation (its messages, feature names, n_features),
        in ddrp's working dtype; its ValueErrors become ``DdrpError``s."""
        try:
            arr = validate_data(self, X, reset=reset, dtype=_target_dtype(X))
        except DdrpError:
            raise
        except ValueError as e:
            raise _as_ddrp(e) from e
        return np.ascontiguousarray(arr)

    def _set_fitted_attributes(self, model: SketchModel) -> None:
        self.n_components_ = model.k
        self.components_ = model.x.matrix.T.copy()
        self.offset_ = model.x.offset.copy()
        self.components_w_ = model.w.matrix.T.copy()
        self.offset_w_ = model.w.offset.copy()
        self.report_ = report_dict(model)
        self.predicted_mse_ = float(self.report_["predicted_mse"])
        self.predicted_rel_mse_ = self.report_["predicted_rel_mse"]
        self.predicted_mse_gaussian_ = self.report_["predicted_mse_gaussian"]
        self.predicted_gain_ = float(model.info["gain"])
        self.allocation_ = self.report_["allocation"]

    def _sketch(self, arr: np.ndarray, side: str) -> np.ndarray:
        """The pipeline's in-memory projection: ``project_block`` per canonical block, BLAS
        on one thread as in the pipeline's tasks (float32 products differ in the last bits
        between thread counts)."""
        with one_blas_thread():
            return sketch_numpy(self.model_, side, arr, self._block_rows(self.n_features_in_))

    def _sketch_dask(self, arr: Any, side: str) -> Any:
        """Lazy sketch of a dask array: ``project_block`` mapped over canonical blocks."""
        layout = model_layout(self.model_)
        storage = None if layout.name == "float32" else (layout, self.model_.seed, side)
        return sketch_array(arr, self.model_.side(side),
                            self._block_rows(self.n_features_in_), f"{side} input", storage)


# ---------------------------------------------------------------------------------------
# input validation


def _target_dtype(a: Any) -> Any:
    """ddrp's working dtype for numeric arrays; scikit-learn's float choice otherwise."""
    dtype = getattr(a, "dtype", None)
    if isinstance(dtype, np.dtype) and dtype.kind in "fiub":
        return working_dtype(dtype)
    return [np.float64, np.float32]


def _as_ddrp(e: ValueError) -> DdrpError:
    """A scikit-learn validation error as a ``DdrpError`` with the same message."""
    msg = str(e)
    return InvalidValueError(msg) if ("NaN" in msg or "infinity" in msg) else InputError(msg)


def _check_numpy(a: Any, name: str) -> np.ndarray:
    """A 2-D finite numeric array (not X: no feature-name bookkeeping) in the working
    dtype."""
    try:
        arr = check_array(a, dtype=_target_dtype(a), input_name=name)
    except ValueError as e:
        raise _as_ddrp(e) from e
    return np.ascontiguousarray(arr)


def _warn_if_y_looks_like_w(y: Any, d: int) -> None:
    """``fit(X, W)`` passes W as y, which is ignored: say so when y looks like a W."""
    shape = getattr(y, "shape", None)
    if shape is not None and len(shape) == 2 and shape[1] == d and d > 1:
        warnings.warn("fit(X, y): y is ignored and X is used as W (the symmetric case); "
                      "to fit against a W source pass it by keyword: fit(X, W=W)",
                      UserWarning, stacklevel=3)


# ---------------------------------------------------------------------------------------
# statistics (pass 1)


def _numpy_moments(arr: np.ndarray, rows: int, n_folds: int) -> list[Moments]:
    """The statistics of every canonical block — one ``Moments``, or with ``n_folds`` one per
    fold — merged by ``combine_all``'s tree (BLAS on one thread, as in the pipeline)."""
    starts = range(0, len(arr), rows)
    with one_blas_thread():
        if not n_folds:
            return [combine_all([block_moments(arr[i:i + rows]) for i in starts])]
        return combine_folds([moments_by_fold(arr[i:i + rows],
                                              np.arange(i, min(i + rows, len(arr))), n_folds)
                              for i in starts])


def _moments(xa: Any, wa: Any, rows: int, n_folds: int,
             progress: bool = False) -> tuple[list[Moments], list[Moments]]:
    """Statistics of X and W (W None: X's), with one compute for the dask sides (its
    progress line drawn with ``progress``): lists of one ``Moments`` (``n_folds`` 0) or of
    one per fold."""
    sides = {"x": xa} if wa is None else {"x": xa, "w": wa}
    result = {side: _numpy_moments(a, rows, n_folds) for side, a in sides.items()
              if not is_dask_array(a)}
    lazy = {side: a for side, a in sides.items() if is_dask_array(a)}
    if lazy:
        result.update(moments_of_arrays(lazy, rows, n_folds, progress))
    return result["x"], result.get("w", result["x"])
