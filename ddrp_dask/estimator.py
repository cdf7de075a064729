"""A scikit-learn estimator over the library's stages: ``AsymmetricRandomProjection``.

It runs exactly what the CLI runs — ``block_moments`` on canonical row blocks merged by
``combine_all``'s fixed tree, ``build``, then ``project_block`` block by block — on numpy
arrays in memory or lazily on Dask arrays. For the same data, K, method, seed and block rows
the estimator, the Dask path and ``ddrp run`` give the same bytes.

scikit-learn is an optional dependency of ddrp: this module needs it, the rest of the
package does not (``ddrp_dask.AsymmetricRandomProjection`` imports it on first use).
"""

from __future__ import annotations

import numbers
import warnings
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassNamePrefixFeaturesOutMixin, TransformerMixin
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_array, check_is_fitted, validate_data

from ._threads import one_blas_thread
from .build import METHODS, build, check_k
from .errors import DdrpError, InputError, InvalidValueError, OptionError
from .io import check_finite, default_block_rows, working_dtype
from .model import SideMap, SketchModel
from .pipeline import sketch_numpy, tree_reduce
from .project import project_block
from .stats import Moments, block_moments, combine_all

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
    stored; the estimate is the plain dot product of two sketches (see DESIGN.md).

    Parameters
    ----------
    n_components : int, default=16
        K, the stored columns per sketch. ``auto`` needs 3 ≤ K ≤ d + 2, ``truncated``
        2 ≤ K ≤ d + 2 and ``orthogonal`` K ≤ d.
    method : str, default="auto"
        One of ``ddrp_dask.METHODS``: ``auto``, ``asymmetric``, ``diagonal``, ``gaussian``,
        ``orthogonal``, ``sparse``, ``truncated`` (biased, opt-in).
    random_state : int, RandomState instance or None, default=None
        Seed of the random draws (a non-negative int). None or a ``RandomState`` draws an
        int seed from it at each ``fit`` (from numpy's global generator for None, as in
        scikit-learn's ``check_random_state``); the seed used is ``model_.seed``.
    shrinkage : "oas" or float in [0, 1], default="oas"
        Shrinkage of the second moments towards (trace/d)·I.
    block_rows : int or None, default=None
        Rows of one canonical block (one statistics leaf, one projection GEMM); None uses
        ``ddrp_dask.io.default_block_rows(d)``, the CLI's default, so the estimator and
        ``ddrp run`` agree byte for byte. Dask inputs are rechunked to these rows.

    Attributes
    ----------
    model_ : SketchModel
        The fitted model (save it with ``ddrp_dask.save_model``; ``ddrp project`` applies
        it to files).
    n_features_in_ : int
        d, the dimension of both sources.
    feature_names_in_ : ndarray of shape (n_features_in_,)
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
        Predicted mean squared error of ``x · w`` averaged over pairs of fitted rows.
    predicted_gain_ : float
        Predicted MSE of a Gaussian sketch of equal K divided by ``predicted_mse_``.

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
                 shrinkage: float | str = "oas", block_rows: int | None = None) -> None:
        self.n_components = n_components
        self.method = method
        self.random_state = random_state
        self.shrinkage = shrinkage
        self.block_rows = block_rows

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
        x_dask = _is_dask(X)
        if x_dask:
            xa = _check_dask(X, "X")
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
            wa = _check_dask(W, "W") if _is_dask(W) else _check_numpy(W, "W")
            if wa.shape[1] != d:
                raise OptionError(f"got d={wa.shape[1]} for W but d={d} for X; both sources "
                                  "must have the same dimension")
        check_k(int(self.n_components), d, self.method)
        rows = self._block_rows(d)
        mx, mw = _moments(xa, wa, rows)
        provenance = {"command": "estimator", "block_rows": rows,
                      "shrinkage": self.shrinkage, "symmetric": W is None}
        self.model_ = build(mx, mw, int(self.n_components), self.method, self._seed(),
                            self.shrinkage, provenance=provenance)
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
        if _is_dask(X):
            xa = _check_dask(X, "X")
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
        wa = _check_dask(W, "W") if _is_dask(W) else _check_numpy(W, "W")
        if wa.shape[1] != self.n_features_in_:
            raise OptionError(f"got d={wa.shape[1]} for W but the model was fitted for "
                              f"d={self.n_features_in_}")
        return self._sketch_dask(wa, "w") if _is_dask(wa) else self._sketch(wa, "w")

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
        """Raise ``OptionError`` for a bad parameter (K against d is checked later)."""
        k = self.n_components
        if not isinstance(k, numbers.Integral) or isinstance(k, bool) or k < 1:
            raise OptionError(f"n_components must be a positive integer, got {k!r}")
        if self.method not in METHODS:
            raise OptionError(f"unknown method {self.method!r}; choose one of "
                              f"{', '.join(METHODS)}")
        s = self.shrinkage
        if not (s == "oas" or (isinstance(s, numbers.Real) and not isinstance(s, bool)
                               and 0.0 <= float(s) <= 1.0)):
            raise OptionError(f"shrinkage must be 'oas' or a number in [0, 1], got {s!r}")
        b = self.block_rows
        if b is not None and (not isinstance(b, numbers.Integral) or isinstance(b, bool)
                              or b < 1):
            raise OptionError(f"block_rows must be None or a positive integer, got {b!r}")
        r = self.random_state
        if isinstance(r, numbers.Integral) and not isinstance(r, bool) \
                and not 0 <= int(r) < 2**63:
            raise OptionError(f"random_state must be a non-negative integer below 2**63, "
                              f"None or a RandomState, got {r!r}")

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
        return int(self.block_rows) if self.block_rows is not None else default_block_rows(d)

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
        self.predicted_mse_ = float(model.info["predicted"][model.method])
        self.predicted_gain_ = float(model.info["gain"])

    def _sketch(self, arr: np.ndarray, side: str) -> np.ndarray:
        """The pipeline's in-memory projection: ``project_block`` per canonical block, BLAS
        on one thread as in the pipeline's tasks (float32 products differ in the last bits
        between thread counts)."""
        with one_blas_thread():
            return sketch_numpy(self.model_, side, arr, self._block_rows(self.n_features_in_))

    def _sketch_dask(self, arr: Any, side: str) -> Any:
        """Lazy sketch of a dask array: ``project_block`` mapped over canonical blocks."""
        blocks = _canonical(arr, self._block_rows(self.n_features_in_))
        return blocks.map_blocks(_sketch_task, side_map=self.model_.side(side),
                                 where=f"{side} input", dtype=np.float32,
                                 chunks=(blocks.chunks[0], (self.model_.k,)),
                                 meta=np.empty((0, 0), dtype=np.float32))


# ---------------------------------------------------------------------------------------
# input validation


def _is_dask(a: Any) -> bool:
    """True for a dask array (without importing dask.array for other inputs)."""
    if not type(a).__module__.startswith("dask"):
        return False
    import dask.array as da

    return isinstance(a, da.Array)


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


def _check_dask(a: Any, name: str) -> Any:
    """A 2-D numeric dask array with known chunks, cast to the working dtype (lazily)."""
    if a.ndim != 2:
        raise InputError(f"{name}: expected a 2-D dask array (rows x d), got shape {a.shape}")
    if any(np.isnan(c) for c in a.chunks[0]):
        raise InputError(f"{name}: the dask array's row chunk sizes are unknown; call "
                         f"{name}.compute_chunk_sizes() first")
    if a.shape[0] == 0 or a.shape[1] == 0:
        raise InputError(f"{name}: the dask array has shape {a.shape}; at least one row and "
                         "one column are needed")
    try:
        dtype = working_dtype(a.dtype)
    except InputError as e:
        raise InputError(f"{name}: {e}; ddrp needs numeric vectors") from e
    return a.astype(dtype)


def _warn_if_y_looks_like_w(y: Any, d: int) -> None:
    """``fit(X, W)`` passes W as y, which is ignored: say so when y looks like a W."""
    shape = getattr(y, "shape", None)
    if shape is not None and len(shape) == 2 and shape[1] == d and d > 1:
        warnings.warn("fit(X, y): y is ignored and X is used as W (the symmetric case); "
                      "to fit against a W source pass it by keyword: fit(X, W=W)",
                      UserWarning, stacklevel=3)


# ---------------------------------------------------------------------------------------
# statistics (pass 1) and projection tasks


def _canonical(a: Any, rows: int) -> Any:
    """The dask array in canonical row blocks and one block across the columns."""
    return a.rechunk({0: rows, 1: -1})


def _numpy_moments(arr: np.ndarray, rows: int) -> Moments:
    """``block_moments`` of every canonical block, merged by ``combine_all``'s tree (BLAS on
    one thread, as in the pipeline's tasks)."""
    with one_blas_thread():
        return combine_all([block_moments(arr[i:i + rows]) for i in range(0, len(arr), rows)])


def _stats_task(block: np.ndarray, where: str, row0: int) -> Moments:
    """One leaf of pass 1 on a dask block (BLAS pinned to one thread, as in the pipeline)."""
    with one_blas_thread():
        return block_moments(block, check_finite(block, where, row0))


def _dask_moments(a: Any, rows: int, where: str) -> Any:
    """Delayed moments of a dask array: one leaf per canonical block, the pipeline's tree."""
    import dask

    blocks = _canonical(a, rows)
    starts = np.concatenate([[0], np.cumsum(blocks.chunks[0])[:-1]])
    leaves = [dask.delayed(_stats_task, pure=True)(blk, where, int(s))
              for blk, s in zip(blocks.to_delayed().ravel(), starts, strict=True)]
    return tree_reduce(leaves, combine_all)


def _moments(xa: Any, wa: Any, rows: int) -> tuple[Moments, Moments]:
    """Moments of X and W (W None: X's), with one ``dask.compute`` for the dask sides."""
    sides = {"x": xa} if wa is None else {"x": xa, "w": wa}
    result: dict[str, Any] = {}
    lazy: dict[str, Any] = {}
    for side, a in sides.items():
        if _is_dask(a):
            lazy[side] = _dask_moments(a, rows, f"{side.upper()} (dask array)")
        else:
            result[side] = _numpy_moments(a, rows)
    if lazy:
        import dask

        computed = dask.compute(*lazy.values())
        result.update(zip(lazy, computed, strict=True))
    return result["x"], result.get("w", result["x"])


def _sketch_task(block: np.ndarray, side_map: SideMap, where: str,
                 block_info: dict[Any, Any] | None = None) -> np.ndarray:
    """One projection task on a dask block: the pipeline's ``project_block``."""
    row0 = int(block_info[0]["array-location"][0][0]) if block_info else 0
    with one_blas_thread():
        check_finite(block, where, row0)
        return project_block(block, side_map, where, row0)
