"""The folded, balanced basis of ``docs/method.md §5.1``. Pure numpy.

With x' = (x − μx, 1), w' = (w − μw, 1) and ``G = [[I, μw], [μxᵀ, μx·μw]]``, x·w = x'ᵀ G w'
exactly. For the shrunk second moments Σx' = diag(Cx, 1) = Lx Lxᵀ and likewise Σw', the SVD
``Lxᵀ G Lw = U diag(ρ) Vᵀ`` gives P = ρ^{1/2} Uᵀ Lx⁻¹, Q = ρ^{1/2} Vᵀ Lw⁻¹ with PᵀQ = G, so
a = P x', b = Q w' have Σ a_i b_i = x·w; the ρ = 0 direction is dropped. Any factor Lx gives
the same P (up to the signs of its rows, which Q shares): the cross-fit uses
Lx = Ex Λx^{1/2} from an eigh of Cx (shared by the shrinkage blends), the final build of all
rows above ``FACTORED_D`` the Cholesky factor, cheaper, and P, Q only through their products
with the k rows of the sketch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .allocation import Energies, energies, in_sample_energies
from .maps import folded_map
from .model import SideMap
from .shrinkage import Root, ShrunkCovariance, Spec
from .stats import Moments, add_outer

__all__ = ["FACTORED_D", "Basis", "FactoredBasis", "FormedBasis", "balanced_basis",
           "coord_moment", "factored_held_out", "final_basis", "scatter_factor"]

#: Above this d the final basis of all rows comes from Cholesky factors and P, Q are never
#: formed (``_factored_basis``: no eigh, d×d temporaries fewer); up to it, as before, from an
#: eigh of each covariance, so models fitted at these d keep their bytes. The same P and Q.
FACTORED_D = 128


@dataclass(frozen=True)
class Basis:
    """P, Q (d, d+1) acting on x' = (x − mean_x, 1), w' = (w − mean_w, 1); ρ descending."""

    p: np.ndarray
    q: np.ndarray
    rho: np.ndarray
    mean_x: np.ndarray
    mean_w: np.ndarray


def balanced_basis(eig_x: tuple[np.ndarray, np.ndarray], eig_w: tuple[np.ndarray, np.ndarray],
                   mean_x: np.ndarray, mean_w: np.ndarray) -> Basis:
    """SVD of Lxᵀ G Lw with Σx' = diag(Cx, 1) = Lx Lxᵀ; the last (ρ = 0) direction dropped."""
    (vx, ex), (vw, ew) = eig_x, eig_w
    lx, lw = ex * np.sqrt(vx), ew * np.sqrt(vw)
    d = lx.shape[0]
    k = np.empty((d + 1, d + 1))
    k[:d, :d] = lx.T @ lw
    k[:d, d] = lx.T @ mean_w
    k[d, :d] = mean_x @ lw
    k[d, d] = float(mean_x @ mean_w)
    u, rho, vt = np.linalg.svd(k)
    u, rho, vt = u[:, :d], rho[:d], vt[:d]
    root = np.sqrt(rho)[:, None]
    p = np.empty((d, d + 1))
    p[:, :d] = ((root * u[:d].T) / np.sqrt(vx)) @ ex.T
    p[:, d] = root[:, 0] * u[d]
    q = np.empty((d, d + 1))
    q[:, :d] = ((root * vt[:, :d]) / np.sqrt(vw)) @ ew.T
    q[:, d] = root[:, 0] * vt[:, d]
    return Basis(p, q, rho, mean_x, mean_w)


def coord_moment(p: np.ndarray, m: Moments, mean: np.ndarray) -> np.ndarray:
    """E[a aᵀ] over the rows of ``m`` for a = P (v − mean, 1): their uncentred second moment
    about ``mean`` in the basis."""
    d = p.shape[0]
    pd = p[:, :d]
    v = pd @ (m.mean - mean) + p[:, d]
    out = (pd @ m.covariance) @ pd.T
    out += np.outer(v, v)
    sym: np.ndarray = (out + out.T) * 0.5
    return sym


@dataclass(frozen=True)
class FactoredBasis:
    """The basis of all rows, factored: P = [√ρ Nxᵀ, √ρ·ux], Q = [√ρ Nwᵀ, √ρ·uw] (Nx = Lx⁻ᵀ U
    without its last row ux), and the in-sample coordinate energies."""

    rho: np.ndarray
    nx: np.ndarray
    nw: np.ndarray
    ux: np.ndarray
    uw: np.ndarray
    energies: Energies

    def maps(self, m: np.ndarray, mx: Moments, mw: Moments) -> tuple[SideMap, SideMap]:
        """``maps.folded_map`` of M P and M Q, at O(k d²): P and Q are never formed."""
        scaled = m * np.sqrt(self.rho)
        out = []
        for n, u, mom in ((self.nx, self.ux, mx), (self.nw, self.uw, mw)):
            matrix = np.ascontiguousarray((scaled @ n.T).T)
            out.append(SideMap(matrix, scaled @ u - mom.mean @ matrix, mom.mean.copy()))
        return out[0], out[1]


@dataclass(frozen=True)
class FormedBasis:
    """The basis of all rows with P and Q formed (``balanced_basis``), and its in-sample
    energies."""

    basis: Basis
    energies: Energies

    @property
    def rho(self) -> np.ndarray:
        return self.basis.rho

    def maps(self, m: np.ndarray, mx: Moments, mw: Moments) -> tuple[SideMap, SideMap]:
        return folded_map(m, self.basis.p, mx.mean), folded_map(m, self.basis.q, mw.mean)


def final_basis(mx: Moments, mw: Moments, specs: tuple[Spec, Spec],
                scales: tuple[float, float], lead: int | None) -> FactoredBasis | FormedBasis:
    """The basis of the whole data and the in-sample energies of its coordinates: up to
    ``FACTORED_D`` as the cross-fit builds it (eigh, P and Q formed), above it factored."""
    if mx.d > FACTORED_D:
        return _factored_basis(mx, mw, specs, scales, lead)
    b = balanced_basis(ShrunkCovariance.of(mx, specs[0], scales[0]).eig(),
                       ShrunkCovariance.of(mw, specs[1], scales[1]).eig(), mx.mean, mw.mean)
    return FormedBasis(b, energies([(coord_moment(b.p, mx, mx.mean),
                                     coord_moment(b.q, mw, mw.mean))]))


def factored_held_out(train: tuple[Moments, Moments], held: tuple[Moments, Moments],
                      specs: tuple[Spec, Spec], scales: tuple[float, float],
                      factors: tuple[np.ndarray | None, np.ndarray | None] | None = None
                      ) -> tuple[np.ndarray, np.ndarray]:
    """``coord_moment`` of the ``held`` rows of each side in the basis of the ``train``
    rows, that basis built as ``_factored_basis`` builds it (one Cholesky factor, no eigh of
    the covariances, P and Q never formed): the held-out pair (Ha, Hb) of one fold.
    ``factors``: ``scatter_factor`` of the two held-out sets, when the caller keeps them
    for several shrinkage candidates."""
    tx, tw = train
    fx, fw = factors or (scatter_factor(held[0]), scatter_factor(held[1]))
    svd = _svd_of_g(ShrunkCovariance.of(tx, specs[0], scales[0]).root(),
                    ShrunkCovariance.of(tw, specs[1], scales[1]).matrix(), tx.mean, tw.mean)
    root = np.sqrt(svd.rho)
    out = []
    for n, last, t, h, f in ((svd.nx, svd.ux, tx, held[0], fx),
                             (svd.nw, svd.uw, tw, held[1], fw)):
        out.append(_final_moment(n, h, f, root * (n.T @ (h.mean - t.mean) + last), root))
    return out[0], out[1]


@dataclass(frozen=True)
class _SvdOfG:
    """K = Lxᵀ G Lw = U diag(ρ) Vᵀ as the factored basis reads it: ρ (descending),
    Nx = Lx⁻ᵀ U and Nw = Lw⁻ᵀ V without their last rows, ux and uw those last rows."""

    rho: np.ndarray
    nx: np.ndarray
    nw: np.ndarray
    ux: np.ndarray
    uw: np.ndarray


def _svd_of_g(rx: Root, cw: np.ndarray, mean_x: np.ndarray, mean_w: np.ndarray) -> _SvdOfG:
    """The SVD of K = Lxᵀ G Lw (``docs/method.md §5.1``) from Lx and the shrunk Cw = Lw Lwᵀ
    alone (``cw`` is overwritten): Lw is never needed.

    G = Txᵀ Tw with T = [I, μ] (x·w = (Tx x')·(Tw w')), so K Kᵀ = [Lx, μx]ᵀ A [Lx, μx] with
    A = Cw + μw μwᵀ: one congruence. Its eigendecomposition gives U and ρ², exactly as
    accurate as an SVD's up to rounding of order ε ρ₁² (about twice as fast); a direction
    with ρ² under that rounding carries no energy any prediction can see (the moments in
    the basis scale with ρ) and gets ρ = 0 and zero vectors. And
    Lw⁻ᵀ V = Lw⁻ᵀ Kᵀ U ρ⁻¹ = Gᵀ [Lx U; ux] ρ⁻¹: Nw = (Lx U + μx uxᵀ) ρ⁻¹ and uw = μwᵀ Nw,
    one triangular product where V = Kᵀ U and a solve by Lw cost three.
    """
    d = mean_x.size
    add_outer(cw, mean_w)  # A = Cw + μw μwᵀ
    kkt = np.empty((d + 1, d + 1), order="F")
    kkt[:d, :d] = rx.congruence(cw)
    am = cw @ mean_x
    del cw
    kkt[:d, d] = rx.low.T @ am
    kkt[d, d] = float(mean_x @ am)
    # numpy's eigh (LAPACK's divide and conquer, as scipy's driver "evd") lets go of the GIL,
    # so the folds' eigendecompositions run side by side (``crossfit._parallel``)
    vals, u = np.linalg.eigh(kkt, UPLO="U")
    del kkt
    vals, u = vals[::-1][:d], np.ascontiguousarray(u[:, ::-1][:, :d])
    tol = vals[0] * (d + 1) * np.finfo(np.float64).eps if d else 0.0
    keep = vals > tol
    rho = np.where(keep, np.sqrt(np.clip(vals, 0.0, None)), 0.0)
    ux = u[d].copy()
    nw = rx.times(u[:d])
    nw += np.outer(mean_x, ux)
    nw *= np.where(keep, 1.0 / np.where(keep, rho, 1.0), 0.0)[None, :]
    nx = rx.solve_t(u[:d])
    return _SvdOfG(rho, nx, nw, ux, mean_w @ nw)


def _factored_basis(mx: Moments, mw: Moments, specs: tuple[Spec, Spec],
                    scales: tuple[float, float], lead: int | None) -> FactoredBasis:
    """``balanced_basis`` of the whole data from one Cholesky factor (no eigh of the
    covariances: ``_svd_of_g``), with the in-sample ``energies`` of its coordinates
    (``lead``: as ``in_sample_energies``).

    The moments about the fitted means in the basis are Ha = √ρ (Nxᵀ Cx Nx + ux uxᵀ) √ρ, so
    P and Q are never formed. A direction the eigendecomposition cannot resolve gets ρ = 0,
    so P and Q lose a direction worth nothing to x·w.
    """
    sx, sw = (ShrunkCovariance.of(mx, specs[0], scales[0]),
              ShrunkCovariance.of(mw, specs[1], scales[1]))
    svd = _svd_of_g(sx.root(), sw.matrix(), mx.mean, mw.mean)
    root = np.sqrt(svd.rho)
    ha = _fitted_moment(sx, svd.nx, svd.ux, root)
    hb = _fitted_moment(sw, svd.nw, svd.uw, root)
    return FactoredBasis(svd.rho, svd.nx, svd.nw, svd.ux, svd.uw,
                         in_sample_energies(ha, hb, lead))


#: Above this shrinkage intensity ``_fitted_moment`` divides by too little (1 − lam).
_FITTED_MAX_LAM = 0.5


def _fitted_moment(s: ShrunkCovariance, n: np.ndarray, last: np.ndarray, root: np.ndarray
                   ) -> np.ndarray:
    """``_final_moment`` of the rows the basis was fitted on, with N = L⁻ᵀ U (U the first d
    rows of the singular vectors, ``last`` their last row): as L Lᵀ = (1 − λ) C + diag(D)
    (``ShrunkCovariance.shift``) and Nᵀ L Lᵀ N = Uᵀ U = I − last lastᵀ,
    Nᵀ C N = (I − last lastᵀ − Nᵀ D N)/(1 − λ): one symmetric product (d³) in place of two
    general ones (4 d³)."""
    shift = s.shift()
    if shift is None or s.lam > _FITTED_MAX_LAM:
        return _final_moment(n, s.m, scatter_factor(s.m), root * last, root)
    t = n * np.sqrt(shift)[:, None]
    h = t.T @ t  # numpy's symmetric product (syrk), which lets go of the GIL
    del t
    h *= -1.0
    h -= np.outer(last, last)
    h[np.diag_indices_from(h)] += 1.0
    h *= root[:, None] / (1.0 - s.lam)
    h *= root[None, :]
    v = root * last
    h += np.outer(v, v)
    return h


def _final_moment(n: np.ndarray, m: Moments, factor: np.ndarray | None, v: np.ndarray,
                  root: np.ndarray) -> np.ndarray:
    """``coord_moment`` of the rows of ``m`` in the factored basis: √ρ Nᵀ C N √ρ + v vᵀ
    (``factor``: ``scatter_factor(m)``)."""
    h = _scatter_congruence(n, m.scatter, factor)
    h *= root[:, None]
    h *= (root / max(m.n, 1))[None, :]
    h += np.outer(v, v)
    h += h.T
    h *= 0.5
    return h


def scatter_factor(m: Moments) -> np.ndarray | None:
    """The Cholesky factor F (F Fᵀ = S) of the scatter of ``m``, or None when S is not
    numerically positive definite (fewer rows than d, a constant column)."""
    try:
        f: np.ndarray = np.linalg.cholesky(m.scatter)
    except np.linalg.LinAlgError:
        return None
    return f


def _scatter_congruence(n: np.ndarray, scatter: np.ndarray, factor: np.ndarray | None
                        ) -> np.ndarray:
    """Nᵀ S N of a scatter S: from its Cholesky factor F (``scatter_factor``), T = Fᵀ N and
    Tᵀ T (numpy's symmetric product: 3 d³ where two general products cost 4 d³); by those
    two products without one. numpy's products and factorisations let go of the GIL
    (scipy's wrappers of BLAS and LAPACK hold it), so the folds' held-out moments run side
    by side."""
    if factor is None:
        out: np.ndarray = n.T @ (scatter @ n)
        return out
    t = factor.T @ n
    h: np.ndarray = t.T @ t
    return h
