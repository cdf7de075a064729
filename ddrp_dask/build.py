"""Build a projection pair from the two sources' statistics (DESIGN §2–4). Pure numpy.

Every method returns a ``SketchModel`` whose estimate of x·w is the plain dot product of the
two k-vectors. Methods:

``gaussian``    R x, R w with R iid N(0, 1/k).
``orthogonal``  R = sqrt(d/k)·Qᵀ, Q Haar-random with orthonormal columns (k ≤ d).
``sparse``      Li's very sparse signs: ±sqrt(s/k) with probability 1/(2s) each, s = √d.
``diagonal``    R A x, R B w with A = diag(a), B = A⁻¹, a_j = (Σw_jj/Σx_jj)^{1/4}.
``asymmetric``  The paper: R A x, R B w with the balanced pair of the shrunk second moments.
``auto``        Shrinkage, two exact mean columns, exact head of r balanced coordinates of the
                centred covariances, orthogonal tail of width k − r − 2; r minimises
                V(r) = ((Σ_{i>r}σ_i)² + Σ_{i>r}σ_i²)/k' · (D − k')/(D − 1) · D/(D + 2).
``truncated``   auto's head and mean columns with r = k − 2 and no tail: biased, opt-in.

All but ``truncated`` are unbiased for every pair, including vectors unlike the fitted rows,
because shrinkage keeps A and B full rank with AᵀB = I.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ._threads import one_blas_thread
from .errors import OptionError
from .model import SideMap, SketchModel
from .stats import Moments

__all__ = [
    "METHODS",
    "balanced_pair",
    "build",
    "check_k",
    "choose_head",
    "orthogonal_factor",
    "shrink",
]

METHODS = ("auto", "asymmetric", "diagonal", "gaussian", "orthogonal", "sparse", "truncated")
OBLIVIOUS = ("gaussian", "orthogonal", "sparse")
#: Smallest shrinkage applied, so A and B stay invertible for rank-deficient statistics.
MIN_SHRINKAGE = 1e-9


def check_k(k: int, d: int, method: str) -> None:
    """Raise ``OptionError`` unless ``k`` columns are possible for ``method`` at dimension d."""
    if method not in METHODS:
        raise OptionError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    if k < 1:
        raise OptionError(f"K must be at least 1, got K={k}")
    if method == "orthogonal" and k > d:
        raise OptionError(f"K={k} is too large for orthogonal rows at d={d}: K must be ≤ d")
    if method in ("auto", "truncated"):
        low = 3 if method == "auto" else 2
        if k < low:
            raise OptionError(
                f"K={k} is too small for method {method!r}: it stores 2 exact mean columns"
                f"{' and at least 1 tail column' if method == 'auto' else ''}, so K ≥ {low}; "
                "use --method asymmetric or gaussian for smaller K"
            )
        if k > d + 2:
            raise OptionError(f"K={k} is too large for method {method!r} at d={d}: K = d + 2 "
                              "is already exact, so K must be ≤ d + 2")


# ---------------------------------------------------------------------------------------
# linear algebra


def shrink(s: np.ndarray, n: int, shrinkage: float | str = "oas",
           fallback: float = 1.0) -> tuple[np.ndarray, float]:
    """``(1 − ρ)·S + ρ·(tr S/d)·I`` and ρ, with ρ from OAS (Chen et al. 2010) or given.

    OAS needs only S and n: μ = tr S/d, α = mean(S²), ρ = min((α + μ²)/((n+1)(α − μ²/d)), 1).
    ρ is at least ``MIN_SHRINKAGE``. An all-zero S (a constant source) becomes
    ``fallback``·I: any positive multiple keeps the pair unbiased, and the caller passes one
    of the data's own magnitude so that float32 sketches stay in range.
    """
    d = s.shape[0]
    mu = float(np.trace(s)) / d
    if not mu > 0:
        return np.eye(d) * fallback, 1.0
    if shrinkage == "oas":
        alpha = float(np.mean(s**2))
        den = (n + 1) * (alpha - mu**2 / d)
        rho = 1.0 if den <= 0 else min((alpha + mu**2) / den, 1.0)
    else:
        rho = float(shrinkage)
        if not 0.0 <= rho <= 1.0:
            raise OptionError(f"shrinkage must be 'oas' or a number in [0, 1], got {shrinkage}")
    rho = max(rho, MIN_SHRINKAGE)
    out = (1.0 - rho) * s
    out[np.diag_indices(d)] += rho * mu
    return out, rho


def _psd_sqrt(s: np.ndarray) -> np.ndarray:
    vals, vecs = np.linalg.eigh(s)
    return (vecs * np.sqrt(np.clip(vals, 0.0, None))) @ vecs.T


def balanced_pair(sx: np.ndarray, sw: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A, B, σ with AᵀB = I and A Sx Aᵀ = B Sw Bᵀ = diag(σ), σ descending (DESIGN §3).

    Mx = Sx^{1/2}, Mw = Sw^{1/2}, Mw Mx = U diag(σ) Vᵀ, A = σ^{-1/2} Uᵀ Mw, B = σ^{-1/2} Vᵀ Mx.
    Both matrices must be positive definite (shrink them first).
    """
    mx, mw = _psd_sqrt(sx), _psd_sqrt(sw)
    u, sigma, vt = np.linalg.svd(mw @ mx)
    scale = 1.0 / np.sqrt(sigma)
    a = scale[:, None] * (u.T @ mw)
    b = scale[:, None] * (vt @ mx)
    return a, b, sigma


def orthogonal_factor(dim: int, width: int) -> float:
    """Variance of an orthogonal projection of ``width`` over ``dim`` directions relative to a
    Gaussian one: (D − k')/(D − 1) · D/(D + 2); zero when it covers every direction."""
    if width >= dim:
        return 0.0
    return (dim - width) / (dim - 1) * dim / (dim + 2)


def choose_head(sigma: np.ndarray, k: int, min_tail: int = 1) -> tuple[int, np.ndarray]:
    """The r minimising V(r) over r with k' = k − 2 − r ≥ min_tail, and V for every such r.

    Ties go to the larger r: exact columns do not depend on the seed.
    """
    d = sigma.shape[0]
    r_max = min(k - 2 - min_tail, d - 1)
    tail_sums = np.cumsum(sigma[::-1])[::-1]  # Σ_{i≥r} σ_i
    tail_sq = np.cumsum((sigma**2)[::-1])[::-1]
    v = np.full(r_max + 1, np.inf)
    for r in range(r_max + 1):
        width, dim = k - 2 - r, d - r
        v[r] = (tail_sums[r] ** 2 + tail_sq[r]) / width * orthogonal_factor(dim, width)
    best = float(v.min())
    r = int(np.flatnonzero(v <= best * (1 + 1e-12) + 1e-300)[-1])
    return r, v


# ---------------------------------------------------------------------------------------
# random matrices (drawn on the client from an explicit seed)


def _gaussian(rng: np.random.Generator, k: int, d: int) -> np.ndarray:
    return rng.standard_normal((k, d)) / np.sqrt(k)


def _orthogonal(rng: np.random.Generator, k: int, d: int) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((d, k)))
    q = q * np.sign(np.where(np.diag(r) == 0, 1.0, np.diag(r)))
    return np.sqrt(d / k) * q.T


def _sparse_density(d: int) -> float:
    return max(1.0, float(np.sqrt(d)))


def _sparse(rng: np.random.Generator, k: int, d: int) -> np.ndarray:
    s = _sparse_density(d)
    u = rng.random((k, d))
    signs = np.where(u < 0.5 / s, 1.0, np.where(u > 1.0 - 0.5 / s, -1.0, 0.0))
    return signs * np.sqrt(s / k)


_DRAW = {"gaussian": _gaussian, "orthogonal": _orthogonal, "sparse": _sparse}


# ---------------------------------------------------------------------------------------
# predictions (pair-averaged MSE over pairs of the fitted rows)


def _pair_var(px: np.ndarray, pw: np.ndarray, k: int) -> float:
    """(tr Px · tr Pw + tr(Px Pw)) / k: Gaussian sketch variance averaged over pairs."""
    if k <= 0:
        return 0.0
    return float((np.trace(px) * np.trace(pw) + np.sum(px * pw)) / k)


def _predict_oblivious(method: str, sx: np.ndarray, sw: np.ndarray, k: int) -> float:
    base = _pair_var(sx, sw, k)
    d = sx.shape[0]
    if method == "orthogonal":
        return base * orthogonal_factor(d, k) if k <= d else float("nan")
    if method == "sparse":
        return base + (_sparse_density(d) - 3) / k * float(np.sum(np.diag(sx) * np.diag(sw)))
    return base


def _predict_paired(a: np.ndarray, b: np.ndarray, sx: np.ndarray, sw: np.ndarray,
                    k: int) -> float:
    return _pair_var(a @ sx @ a.T, b @ sw @ b.T, k)


def _predict_head_tail(a: np.ndarray, b: np.ndarray, cx: np.ndarray, cw: np.ndarray, r: int,
                       width: int) -> float:
    """auto/truncated: the tail's variance (orthogonal factor included), or with no tail the
    squared bias E(a_t·b_t)² = tr(Pa Pb)."""
    return _head_tail_mse(a @ cx @ a.T, b @ cw @ b.T, r, width)


def _head_tail_mse(pa: np.ndarray, pb: np.ndarray, r: int, width: int) -> float:
    """``_predict_head_tail`` from Pa = A Cx Aᵀ and Pb = B Cw Bᵀ, reusable across (r, width)."""
    pa, pb = pa[r:, r:], pb[r:, r:]
    if width == 0:
        return float(np.sum(pa * pb))
    return _pair_var(pa, pb, width) * orthogonal_factor(pa.shape[0], width)


# ---------------------------------------------------------------------------------------
# the build


@dataclass(frozen=True)
class _Fit:
    """What one method's construction produced before packaging."""

    x: SideMap
    w: SideMap
    info: dict[str, Any]


def build(mx: Moments, mw: Moments, k: int, method: str = "auto", seed: int = 0,
          shrinkage: float | str = "oas", provenance: dict[str, Any] | None = None
          ) -> SketchModel:
    """Fit the projection pair for ``method`` from the statistics of X and W.

    Parameters
    ----------
    mx, mw : Moments
        Statistics of the two sources (same d).
    k : int
        Stored columns per sketch, every one counted (auto's 2 mean columns included).
    method : str, default="auto"
        One of ``METHODS``.
    seed : int, default=0
        Seed of every random draw (numpy ``default_rng``).
    shrinkage : "oas" or float in [0, 1], default="oas"
        Shrinkage of the second moments towards (tr/d)·I.
    provenance : dict, optional
        Recorded in the model as given.

    Returns
    -------
    SketchModel
        With ``info["predicted"]``: pair-averaged MSE over the fitted rows predicted for this
        method, ``asymmetric`` and ``gaussian`` at the same k, and ``info["gain"]``.
    """
    if mx.d != mw.d:
        raise OptionError(f"got d={mx.d} for X but d={mw.d} for W; both sources must have the "
                          "same dimension")
    d = mx.d
    check_k(k, d, method)
    # LAPACK's last bits depend on the thread count: one thread gives the same model anywhere.
    with one_blas_thread():
        fit, predicted = _fit(mx, mw, k, method, seed, shrinkage)
    info = dict(fit.info, n_x=mx.n, n_w=mw.n, predicted=predicted)
    this = predicted[method]
    info["gain"] = predicted["gaussian"] / this if this > 0 else float("inf")
    return SketchModel(method, k, d, int(seed), fit.x, fit.w, info, dict(provenance or {}),
                       mx, mw)


def _fit(mx: Moments, mw: Moments, k: int, method: str, seed: int,
         shrinkage: float | str) -> tuple[_Fit, dict[str, float]]:
    rng = np.random.default_rng(seed)
    sx, sw = mx.second_moment, mw.second_moment
    predicted = {"gaussian": _predict_oblivious("gaussian", sx, sw, k)}
    # The paper's pair: always computed, for the report's comparison.
    shx, rho_x = shrink(sx, mx.n, shrinkage, _scale_of(sx, sw))
    shw, rho_w = shrink(sw, mw.n, shrinkage, _scale_of(sw, sx))
    a, b, sigma = balanced_pair(shx, shw)
    predicted["asymmetric"] = _predict_paired(a, b, sx, sw, k)
    if method in OBLIVIOUS:
        r_mat = _DRAW[method](rng, k, d=mx.d)
        predicted[method] = _predict_oblivious(method, sx, sw, k)
        return _Fit(_linear(r_mat.T, mx), _linear(r_mat.T, mw), {}), predicted
    if method == "asymmetric":
        r_mat = _gaussian(rng, k, mx.d)
        info = {"sigma": sigma, "shrinkage_x": rho_x, "shrinkage_w": rho_w}
        return _Fit(_linear((r_mat @ a).T, mx), _linear((r_mat @ b).T, mw), info), predicted
    if method == "diagonal":
        return _fit_diagonal(mx, mw, k, rng, shrinkage, predicted)
    return _fit_head_tail(mx, mw, k, method, rng, shrinkage, predicted)


def _scale_of(*candidates: np.ndarray) -> float:
    """tr/d of the first matrix with positive trace (1.0 if none): the identity's scale
    that stands in for an all-zero second moment."""
    for m in candidates:
        t = float(np.trace(m)) / m.shape[0]
        if t > 0 and np.isfinite(t):
            return t
    return 1.0


def _linear(matrix: np.ndarray, m: Moments) -> SideMap:
    """A purely linear map, shifted by the side's mean for accuracy."""
    return SideMap(np.ascontiguousarray(matrix), np.zeros(matrix.shape[1]), m.mean.copy())


def _fit_diagonal(mx: Moments, mw: Moments, k: int, rng: np.random.Generator,
                  shrinkage: float | str, predicted: dict[str, float]
                  ) -> tuple[_Fit, dict[str, float]]:
    sx, sw = mx.second_moment, mw.second_moment
    dx, rho_x = shrink(np.diag(np.diag(sx)), mx.n, shrinkage, _scale_of(sx, sw))
    dw, rho_w = shrink(np.diag(np.diag(sw)), mw.n, shrinkage, _scale_of(sw, sx))
    scale = (np.diag(dw) / np.diag(dx)) ** 0.25
    r_mat = _gaussian(rng, k, mx.d)
    predicted["diagonal"] = _predict_paired(np.diag(scale), np.diag(1 / scale), sx, sw, k)
    info = {"scale": scale, "shrinkage_x": rho_x, "shrinkage_w": rho_w}
    fit = _Fit(_linear((r_mat * scale).T, mx), _linear((r_mat / scale).T, mw), info)
    return fit, predicted


def _balance_scale(energy: float, mean: np.ndarray) -> float:
    """c with |v·mean|/c ≈ c for rows v of the given mean energy E|v|² (1 when degenerate)."""
    c = float(np.sqrt(np.sqrt(max(energy, 0.0)) * np.linalg.norm(mean)))
    return c if np.isfinite(c) and c > 0 else 1.0


def _fit_head_tail(mx: Moments, mw: Moments, k: int, method: str, rng: np.random.Generator,
                   shrinkage: float | str, predicted: dict[str, float]
                  ) -> tuple[_Fit, dict[str, float]]:
    """auto and truncated (DESIGN §4): centred balanced pair, exact head, mean columns, tail."""
    d = mx.d
    cx, cw = mx.covariance, mw.covariance
    shx, rho_x = shrink(cx, mx.n, shrinkage, _scale_of(mx.second_moment, cw))
    shw, rho_w = shrink(cw, mw.n, shrinkage, _scale_of(mw.second_moment, cx))
    a, b, sigma = balanced_pair(shx, shw)
    if method == "truncated":
        r, v = k - 2, None
    else:
        r, v = choose_head(sigma, k)
    width = k - 2 - r
    tail = _orthogonal(rng, width, d - r) if width else np.zeros((0, d - r))
    # columns: r exact head coordinates, width tail columns, then [x·μw, 1] / [1, w̃·μx]
    main_x = np.vstack([a[:r], tail @ a[r:]]).T  # (d, k-2), applied to x − μx
    main_w = np.vstack([b[:r], tail @ b[r:]]).T
    mu_x, mu_w = mx.mean, mw.mean
    # the mean columns hold x·μw ↔ 1 and 1 ↔ w̃·μx; scaling each pair by c and 1/c keeps
    # the products and puts both entries on the same magnitude, so float32 holds them for
    # data of magnitude 1e-30 or 1e30 alike
    c1 = _balance_scale(np.trace(mx.second_moment), mu_w)
    c2 = _balance_scale(np.trace(mw.second_moment), mu_x)
    x_map = SideMap(np.column_stack([main_x, mu_w / c1, np.zeros(d)]),
                    np.concatenate([-mu_x @ main_x, [0.0, c2]]), mu_x.copy())
    w_map = SideMap(np.column_stack([main_w, np.zeros(d), mu_x / c2]),
                    np.concatenate([-mu_w @ main_w, [c1, -float(mu_w @ mu_x) / c2]]),
                    mu_w.copy())
    predicted[method] = _predict_head_tail(a, b, cx, cw, r, width)
    info: dict[str, Any] = {"sigma": sigma, "r": r, "k_tail": width, "shrinkage_x": rho_x,
                            "shrinkage_w": rho_w}
    if v is not None:
        info["v_of_r"] = v
    return _Fit(x_map, w_map, info), predicted
