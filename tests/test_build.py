"""Build: the balanced pair's identities, unbiasedness of every method as a z-test over seeds
(vectors far outside the fitted span included), and predicted against empirical variance."""

from __future__ import annotations

import numpy as np
import pytest

from ddrp_dask import build, sketch_numpy
from ddrp_dask.errors import OptionError
from ddrp_dask.maths.linalg import (
    balanced_pair,
    balanced_traces,
    orthogonal_factor,
    shrink,
    shrink_terms,
)
from ddrp_dask.maths.predict import choose_head, pair_var, predict_asymmetric
from ddrp_dask.maths.stats import block_moments
from ddrp_dask.options import check_k
from ddrp_dask.testing import reference_sketch

from .conftest import make_pair

UNBIASED = ["auto", "asymmetric", "diagonal", "gaussian", "orthogonal", "sparse"]


def test_balanced_pair_identities() -> None:
    x, w = make_pair(n=500, m=300, d=12, dtype="float64")
    sx, _ = shrink(block_moments(x).second_moment, 500)
    sw, _ = shrink(block_moments(w).second_moment, 300)
    a, b, sigma = balanced_pair(sx, sw)
    assert np.allclose(a.T @ b, np.eye(12), atol=1e-9)
    assert np.allclose(a @ sx @ a.T, np.diag(sigma), atol=1e-9 * sigma[0])
    assert np.allclose(b @ sw @ b.T, np.diag(sigma), atol=1e-9 * sigma[0])
    assert np.all(np.diff(sigma) <= 0)


@pytest.mark.parametrize("rows_w", [300, 4])
def test_balanced_traces_equal_the_formed_pairs(rows_w: int) -> None:
    """The traces without the pair (Cholesky + one eigh) are those of the pair itself."""
    x, w = make_pair(n=500, m=rows_w, d=12, dtype="float64")
    mx, mw = block_moments(x), block_moments(w)
    sx, sw = mx.second_moment, mw.second_moment
    shx, shw = shrink(sx, 500)[0], shrink(sw, rows_w)[0]
    a, b, _ = balanced_pair(shx, shw)
    pa, pb = a @ sx @ a.T, b @ sw @ b.T
    want = (np.trace(pa), np.trace(pb), np.sum(pa * pb))
    terms = (shrink_terms(sx, 500), shrink_terms(sw, rows_w))
    np.testing.assert_allclose(balanced_traces([sx.copy(), sw.copy()], *terms), want, rtol=1e-9)
    assert predict_asymmetric(mx, mw, 7) == pytest.approx(pair_var(pa, pb, 7), rel=1e-9)


def test_shrink_terms_describe_shrink() -> None:
    rng = np.random.default_rng(2)
    g = rng.standard_normal((6, 6))
    for s, n, how in ((g @ g.T, 10, "oas"), (g @ g.T, 10, 0.3), (np.zeros((6, 6)), 4, "oas")):
        rho, mu = shrink_terms(s, n, how, 2.5)
        np.testing.assert_allclose(shrink(s, n, how, 2.5)[0], (1 - rho) * s + rho * mu * np.eye(6),
                                   rtol=1e-15, atol=0)


def test_balanced_traces_of_a_singular_shrunk_matrix_use_a_symmetric_root() -> None:
    """A shrunk matrix that is not numerically positive definite (no Cholesky factor) takes
    the eigh root instead: finite traces, and the exact cross term."""
    rng = np.random.default_rng(3)
    g = rng.standard_normal((10, 10))
    sx, sw = g @ g.T, np.diag(np.linspace(1.0, 2.0, 10))
    sx[:, 0] = sx[0, :] = 0.0  # positive semi-definite, singular: Cholesky fails (ρ = 0)
    with pytest.raises(np.linalg.LinAlgError):
        np.linalg.cholesky(sx)
    traces = balanced_traces([sx.copy(), sw.copy()], (0.0, 1.0), (0.1, 1.5))
    assert all(np.isfinite(traces)) and traces[2] == pytest.approx(float(np.sum(sx * sw)))


def test_shrinkage_makes_rank_deficient_moments_invertible() -> None:
    rng = np.random.default_rng(0)
    w = rng.standard_normal((3, 10))  # 3 rows in d = 10: rank 3
    s, rho = shrink(block_moments(w).second_moment, 3)
    assert 0 < rho <= 1
    assert np.linalg.eigvalsh(s).min() > 0
    zero, rho0 = shrink(np.zeros((4, 4)), 10)
    assert np.array_equal(zero, np.eye(4)) and rho0 == 1.0


def test_orthogonal_factor_and_head_choice() -> None:
    assert orthogonal_factor(10, 10) == 0.0
    assert orthogonal_factor(10, 1) == pytest.approx(9 / 9 * 10 / 12)
    sigma = np.array([100.0, 50.0, 1.0, 1.0, 1.0, 1.0])
    r, v = choose_head(sigma, k=6)
    assert r == 2  # the two big directions exactly, the flat rest in the tail
    assert v[r] == v.min()


@pytest.mark.parametrize(("k", "method", "match"), [
    (0, "gaussian", "at least 1"),
    (2, "head-tail", "too small"),
    (27, "auto", "too large"),
    (25, "orthogonal", "too large"),
    (5, "nope", "unknown method"),
])
def test_bad_k_for_method(k: int, method: str, match: str) -> None:
    with pytest.raises(OptionError, match=match):
        check_k(k, 24, method)


def test_mismatched_dimensions() -> None:
    with pytest.raises(OptionError, match="same dimension"):
        build(block_moments(np.ones((3, 4))), block_moments(np.ones((3, 5))), 3)


@pytest.fixture(scope="module")
def unbias_setup() -> dict[str, np.ndarray]:
    """Fitted on X (many rows) and W (6 rows in d = 10): W's span misses 4 directions."""
    x, w = make_pair(n=400, m=6, d=10, seed=3, dtype="float64")
    rng = np.random.default_rng(7)
    _, _, vt = np.linalg.svd(w - w.mean(0))
    null_w = vt[-1] * 50.0  # far outside the span of W's centred rows
    _, _, vtx = np.linalg.svd(x - x.mean(0))
    weak_x = vtx[-1] * 80.0 + rng.standard_normal(10)  # along X's weakest direction
    xs = np.vstack([x[:2], weak_x, -3 * x[5]])
    ws = np.vstack([w[:2], null_w, null_w + 2 * w[3]])
    return {"x": x, "w": w, "xs": xs, "ws": ws}


def _estimates(setup: dict[str, np.ndarray], method: str, k: int, seeds: int) -> np.ndarray:
    mx, mw = block_moments(setup["x"]), block_moments(setup["w"])
    est = []
    for seed in range(seeds):
        model = build(mx, mw, k, method, seed)
        s = reference_sketch(model, "x", setup["xs"])
        t = reference_sketch(model, "w", setup["ws"])
        est.append(s @ t.T)
    return np.array(est)  # (seeds, pairs_x, pairs_w)


def _z(est: np.ndarray, exact: np.ndarray) -> np.ndarray:
    se = est.std(axis=0, ddof=1) / np.sqrt(len(est))
    scale = np.abs(exact) + 1e-9
    return np.where(se > 1e-12 * scale, (est.mean(axis=0) - exact) / np.maximum(se, 1e-300),
                    np.where(np.abs(est.mean(axis=0) - exact) <= 1e-8 * scale, 0.0, np.inf))


@pytest.mark.parametrize("method", UNBIASED)
@pytest.mark.parametrize("k", [3, 7])
def test_unbiased_z_test_over_seeds(unbias_setup: dict[str, np.ndarray], method: str,
                                    k: int) -> None:
    est = _estimates(unbias_setup, method, k, seeds=120)
    exact = unbias_setup["xs"] @ unbias_setup["ws"].T
    z = _z(est, exact)
    # 16 pairs per case; |z| > 4.5 has probability ~7e-6 per pair for an unbiased estimate
    assert np.abs(z).max() < 4.5, (method, k, z.round(2))


def test_truncated_is_biased_outside_the_span(unbias_setup: dict[str, np.ndarray]) -> None:
    """The same z-test catches a biased method: it can fail."""
    est = _estimates(unbias_setup, "truncated", 7, seeds=120)
    exact = unbias_setup["xs"] @ unbias_setup["ws"].T
    assert np.abs(_z(est, exact)).max() > 20


def test_exact_when_k_covers_everything(unbias_setup: dict[str, np.ndarray]) -> None:
    mx, mw = block_moments(unbias_setup["x"]), block_moments(unbias_setup["w"])
    model = build(mx, mw, 12, "auto", 0)  # K = d + 2
    s = reference_sketch(model, "x", unbias_setup["xs"])
    t = reference_sketch(model, "w", unbias_setup["ws"])
    exact = unbias_setup["xs"] @ unbias_setup["ws"].T
    assert np.allclose(s @ t.T, exact, rtol=1e-8, atol=1e-6)


@pytest.mark.parametrize("method", ["auto", "asymmetric", "diagonal", "gaussian", "orthogonal",
                                    "sparse", "truncated"])
def test_predicted_variance_matches_empirical(method: str) -> None:
    """Pair-averaged MSE over the fitted rows, averaged over seeds, against the prediction."""
    x, w = make_pair(n=600, m=300, d=24, seed=11, dtype="float64")
    mx, mw = block_moments(x), block_moments(w)
    exact = x @ w.T
    mses = []
    for seed in range(60):
        model = build(mx, mw, 10, method, seed)
        est = sketch_numpy(model, "x", x) @ sketch_numpy(model, "w", w).T.astype(np.float64)
        mses.append(np.mean((est - exact) ** 2))
    mses_a = np.array(mses)
    predicted = model.info["predicted"][method]
    se = mses_a.std(ddof=1) / np.sqrt(len(mses_a))
    # auto's orthogonal factor is an approximation (DESIGN §4): allow 10% beside the noise
    slack = 0.10 * predicted if method == "auto" else 0.02 * predicted
    assert abs(mses_a.mean() - predicted) < 4 * se + slack, (mses_a.mean(), predicted, se)


def test_auto_beats_asymmetric_and_gaussian_on_separated_spectra() -> None:
    x, w = make_pair(n=2000, m=500, d=24, seed=5, dtype="float64")
    model = build(block_moments(x), block_moments(w), 10, "auto", 0)
    p = model.info["predicted"]
    assert p["auto"] < p["asymmetric"] < p["gaussian"]
    assert model.info["gain"] == pytest.approx(p["gaussian"] / p["auto"])
    assert model.k == 10 and model.x.matrix.shape == (24, 10)


def test_same_seed_same_model_different_seed_different_model() -> None:
    x, w = make_pair(n=300, m=100, d=8)
    mx, mw = block_moments(x), block_moments(w)
    a, b, c = (build(mx, mw, 5, "auto", s) for s in (1, 1, 2))
    assert np.array_equal(a.x.matrix, b.x.matrix)
    assert not np.array_equal(a.x.matrix, c.x.matrix)


@pytest.mark.parametrize("d", [40, 150])  # the formed basis, and the factored one above 128
def test_auto_asymmetric_reference_is_the_pair_of_its_own_shrinkage(d: int) -> None:
    """Where ``auto`` shrank both sources by OAS, its ``asymmetric`` reference (method.md §9)
    is the paper's pair of those moments (covariances shrunk, means kept), computed here with
    numpy from the pair: (tr(A Sx Aᵀ) tr(B Sw Bᵀ) + tr(Sx Sw))/k with the raw second
    moments. With another shrinkage it is ``--method asymmetric``'s own prediction."""
    rng = np.random.default_rng(d)
    x = rng.standard_normal((6 * d, d)) @ rng.standard_normal((d, d)) * 0.2 + 1.5
    w = rng.standard_normal((3 * d, d)) * np.linspace(0.2, 2.0, d) - 0.5
    folds = tuple([block_moments(v[f::5]) for f in range(5)] for v in (x, w))
    mx, mw = block_moments(x), block_moments(w)
    model = build(mx, mw, 7, "auto", 0, shrinkage="oas", folds=folds)
    lam = (model.info["shrinkage_x"]["intensity"], model.info["shrinkage_w"]["intensity"])

    def shrunk(v: np.ndarray, lam: float) -> np.ndarray:
        c = np.cov(v, rowvar=False, bias=True)
        mean = v.mean(axis=0)
        return (1 - lam) * c + lam * np.trace(c) / d * np.eye(d) + np.outer(mean, mean)

    a, b, _ = balanced_pair(shrunk(x, lam[0]), shrunk(w, lam[1]))
    sx, sw = x.T @ x / len(x), w.T @ w / len(w)
    want = (np.trace(a @ sx @ a.T) * np.trace(b @ sw @ b.T) + np.sum(sx * sw)) / 7
    assert model.info["predicted"]["asymmetric"] == pytest.approx(want, rel=1e-9)
    # any other shrinkage: the asymmetric method's own figure (OAS of the uncentred moments)
    fixed = build(mx, mw, 7, "auto", 0, shrinkage=0.3, folds=folds)
    assert fixed.info["predicted"]["asymmetric"] == pytest.approx(
        build(mx, mw, 7, "asymmetric", 0, "oas").info["predicted"]["asymmetric"], rel=1e-12)
