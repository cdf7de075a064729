"""Linear algebra of the constructions (``docs/method.md §3–§4``): shrinkage, PSD roots,
balanced pairs, and the variance factor of an orthogonal projection. Pure numpy."""

from __future__ import annotations

import numpy as np
import scipy.linalg as sla

__all__ = ["MIN_SHRINKAGE", "balanced_pair", "balanced_traces", "congruence", "lower_congruence",
           "oas_intensity", "orthogonal_factor", "psd_sqrt", "shrink", "shrink_terms"]

#: Smallest shrinkage applied, so A and B stay invertible for rank-deficient statistics.
MIN_SHRINKAGE = 1e-9


def shrink(s: np.ndarray, n: int, shrinkage: float | str = "oas",
           fallback: float = 1.0) -> tuple[np.ndarray, float]:
    """``(1 − ρ)·S + ρ·(tr S/d)·I`` and ρ, with ρ from OAS (Chen et al. 2010) or given.

    OAS needs only S and n: μ = tr S/d, α = mean(S²), ρ = min((α + μ²)/((n+1)(α − μ²/d)), 1).
    ρ is at least ``MIN_SHRINKAGE``. An all-zero S (a constant source) becomes
    ``fallback``·I: any positive multiple keeps the pair unbiased, and the caller passes one
    of the data's own magnitude so that float32 sketches stay in range.
    """
    rho, mu = shrink_terms(s, n, shrinkage, fallback)
    d = s.shape[0]
    if not float(np.trace(s)) / d > 0:
        return np.eye(d) * fallback, 1.0
    out = (1.0 - rho) * s
    out[np.diag_indices(d)] += rho * mu
    return out, rho


def shrink_terms(s: np.ndarray, n: int, shrinkage: float | str = "oas",
                 fallback: float = 1.0) -> tuple[float, float]:
    """ρ and μ with ``shrink(s, …)[0] = (1 − ρ)·S + ρ·μ·I`` (ρ = 1, μ = ``fallback`` for an
    all-zero S). ``shrinkage`` as ``options.check_shrinkage`` returns it ("auto" is OAS)."""
    mu = float(np.trace(s)) / s.shape[0]
    if not mu > 0:
        return 1.0, float(fallback)
    if isinstance(shrinkage, str):  # "oas", or "auto" (a cross-fitted search for auto only)
        rho = oas_intensity(s, n)
    else:
        rho = float(shrinkage)
    return max(rho, MIN_SHRINKAGE), mu


def oas_intensity(s: np.ndarray, n: int) -> float:
    """OAS's intensity (Chen et al. 2010) for a covariance ``s`` of ``n`` rows, in [0, 1]:
    μ = tr S/d, α = mean(S²), ρ = min((α + μ²)/((n+1)(α − μ²/d)), 1)."""
    d = s.shape[0]
    mu = float(np.trace(s)) / d
    alpha = float(np.mean(s**2))
    den = (n + 1) * (alpha - mu**2 / d)
    return 1.0 if den <= 0 else min((alpha + mu**2) / den, 1.0)


def psd_sqrt(s: np.ndarray) -> np.ndarray:
    """The symmetric PSD square root of ``s`` (negative eigenvalues clipped to 0)."""
    vals, vecs = np.linalg.eigh(s)
    return (vecs * np.sqrt(np.clip(vals, 0.0, None))) @ vecs.T


def balanced_pair(sx: np.ndarray, sw: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A, B, σ with AᵀB = I and A Sx Aᵀ = B Sw Bᵀ = diag(σ), σ descending
    (``docs/method.md §3``).

    Mx = Sx^{1/2}, Mw = Sw^{1/2}, Mw Mx = U diag(σ) Vᵀ, A = σ^{-1/2} Uᵀ Mw, B = σ^{-1/2} Vᵀ Mx.
    Both matrices must be positive definite (shrink them first).
    """
    mx, mw = psd_sqrt(sx), psd_sqrt(sw)
    u, sigma, vt = np.linalg.svd(mw @ mx)
    scale = 1.0 / np.sqrt(sigma)
    a = scale[:, None] * (u.T @ mw)
    b = scale[:, None] * (vt @ mx)
    return a, b, sigma


def balanced_traces(mats: list[np.ndarray], terms_x: tuple[float, float],
                    terms_w: tuple[float, float]) -> tuple[float, float, float]:
    """tr(A Sx Aᵀ), tr(B Sw Bᵀ) and tr(A Sx Aᵀ · B Sw Bᵀ) for the balanced pair A, B of the
    shrunk (1 − ρ)·S + ρ·μ·I of Sx and Sw (``terms_*`` = (ρ, μ), as ``shrink_terms``), without
    forming the pair.

    With shrunk Sx = L Lᵀ and Lᵀ (shrunk Sw) L = Z diag(σ²) Zᵀ, A = σ^{1/2} Zᵀ L⁻¹ and
    B = σ^{-1/2} Zᵀ Lᵀ are the balanced pair (``balanced_pair``) up to the signs of its rows,
    so tr(A Sx Aᵀ) = Σ σ_i (Zᵀ L⁻¹ Sx L⁻ᵀ Z)_ii, tr(B Sw Bᵀ) = Σ (Zᵀ Lᵀ Sw L Z)_ii / σ_i and,
    as AᵀB = I, the third is tr(Sx Sw): one Cholesky and one eigh instead of two eigh and an
    SVD. ``mats`` = [Sx, Sw] is emptied: the two are overwritten, and released as soon as
    used (a list, so that the caller holds no reference). Both shrunk matrices must be
    positive definite.
    """
    sw, sx = mats.pop(), mats.pop()
    d = sx.shape[0]
    cross = float(np.sum(sx * sw))
    (rho_x, mu_x), (rho_w, mu_w) = terms_x, terms_w
    low = sx * (1.0 - rho_x)
    low[np.diag_indices(d)] += rho_x * mu_x
    try:
        low = sla.cholesky(low, lower=True, overwrite_a=True, check_finite=False)
    except np.linalg.LinAlgError:  # not numerically positive definite: L = E diag(√λ)
        return _balanced_traces_eig(sx, sw, terms_x, terms_w, cross)
    if max(rho_x, rho_w) > _BLEND_MAX:
        return _balanced_traces_general(low, sx, sw, terms_w, cross)
    del sx
    sw *= 1.0 - rho_w
    sw[np.diag_indices(d)] += rho_w * mu_w
    y = lower_congruence(low, sw)  # Lᵀ (shrunk Sw) L = ρw μw LᵀL + (1 − ρw) Lᵀ Sw L
    del sw
    sig2, z = sla.eigh(y, lower=True, overwrite_a=True, check_finite=False, driver="evd")
    del y
    sig = np.sqrt(np.clip(sig2, 0.0, None))
    # as L Lᵀ = (1 − ρx) Sx + ρx μx I: zᵀ L⁻¹ Sx L⁻ᵀ z = (1 − ρx μx |L⁻ᵀ z|²)/(1 − ρx), and
    # as y = ρw μw LᵀL + (1 − ρw) Lᵀ Sw L: zᵀ Lᵀ Sw L z = (σ² − ρw μw |L z|²)/(1 − ρw)
    inv_t = sla.solve_triangular(low, z, trans="T", lower=True, check_finite=False)
    qa = (1.0 - rho_x * mu_x * np.einsum("ji,ji->i", inv_t, inv_t)) / (1.0 - rho_x)
    del inv_t
    lz = sla.blas.dtrmm(1.0, low, z, lower=True)
    qb = (sig2 - rho_w * mu_w * np.einsum("ji,ji->i", lz, lz)) / (1.0 - rho_w)
    inv = np.divide(1.0, sig, out=np.zeros_like(sig), where=sig > 0)
    return float(np.sum(sig * qa)), float(np.sum(qb * inv)), cross


#: Above this shrinkage intensity ``balanced_traces`` takes the general route (dividing by
#: 1 − ρ would lose precision).
_BLEND_MAX = 0.5


def _balanced_traces_general(low: np.ndarray, sx: np.ndarray, sw: np.ndarray,
                             terms_w: tuple[float, float], cross: float
                             ) -> tuple[float, float, float]:
    """``balanced_traces`` from the Cholesky factor ``low`` of shrunk Sx, forming
    L⁻¹ Sx L⁻ᵀ and Lᵀ Sw L."""
    hx = sla.solve_triangular(low, sx, lower=True, overwrite_b=True, check_finite=False)
    hx = sla.solve_triangular(low, hx.T, lower=True, overwrite_b=True, check_finite=False)
    return _traces_of(low, hx, congruence(low, sw), terms_w, cross)


def _balanced_traces_eig(sx: np.ndarray, sw: np.ndarray, terms_x: tuple[float, float],
                         terms_w: tuple[float, float], cross: float
                         ) -> tuple[float, float, float]:
    """``balanced_traces`` with L = E diag(√λ) from an eigh of shrunk Sx (not numerically
    positive definite)."""
    d = sx.shape[0]
    rho_x, mu_x = terms_x
    low = sx * (1.0 - rho_x)
    low[np.diag_indices(d)] += rho_x * mu_x
    vals, low = np.linalg.eigh(low)
    floor = np.finfo(float).eps * max(float(vals[-1]), np.finfo(float).tiny)
    root = np.sqrt(np.clip(vals, floor, None))
    hx = congruence(low, sx)  # with E: Eᵀ Sx E, then scaled by the roots
    hx /= np.outer(root, root)
    low *= root
    return _traces_of(low, hx, congruence(low, sw), terms_w, cross)


def _traces_of(low: np.ndarray, hx: np.ndarray, hw: np.ndarray, terms_w: tuple[float, float],
               cross: float) -> tuple[float, float, float]:
    """The traces from L, L⁻¹ Sx L⁻ᵀ and Lᵀ Sw L (``balanced_traces``)."""
    rho_w, mu_w = terms_w
    y = low.T @ low
    y *= rho_w * mu_w
    y += (1.0 - rho_w) * hw
    y += y.T
    y *= 0.5
    sig2, z = sla.eigh(y, overwrite_a=True, check_finite=False, driver="evd")
    del y
    sig = np.sqrt(np.clip(sig2, 0.0, None))
    qa = np.einsum("ji,ji->i", z, hx @ z)
    qb = np.einsum("ji,ji->i", z, hw @ z)
    inv = np.divide(1.0, sig, out=np.zeros_like(sig), where=sig > 0)
    return float(np.sum(sig * qa)), float(np.sum(qb * inv)), cross


def lower_congruence(low: np.ndarray, s: np.ndarray) -> np.ndarray:
    """Lᵀ S L for lower-triangular L, by two triangular products (2 d³, not 4 d³)."""
    t = sla.blas.dtrmm(1.0, low, s, lower=True, trans_a=True)  # Lᵀ S
    out: np.ndarray = sla.blas.dtrmm(1.0, low, t, lower=True, side=1)  # (Lᵀ S) L
    return out


def congruence(low: np.ndarray, s: np.ndarray) -> np.ndarray:
    """Lᵀ S L for any L (two general products)."""
    t = low.T @ s
    out: np.ndarray = t @ low
    return out


def orthogonal_factor(dim: int, width: int) -> float:
    """Variance of an orthogonal projection of ``width`` over ``dim`` directions relative to a
    Gaussian one: (D − k')/(D − 1) · D/(D + 2); zero when it covers every direction."""
    if width >= dim:
        return 0.0
    return (dim - width) / (dim - 1) * dim / (dim + 2)
