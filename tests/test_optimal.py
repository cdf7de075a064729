"""``auto`` (``docs/method.md §5``: ``maths.folds``, ``shrinkage``, ``basis``, ``allocation``,
``crossfit``): folds, unbiasedness, sampling design, predictions; and the head-tail baseline
of the benchmarks."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from ddrp_dask.errors import OptionError
from ddrp_dask.maths import allocation, basis, crossfit, folds, shrinkage
from ddrp_dask.maths.build import build
from ddrp_dask.maths.model import SideMap
from ddrp_dask.maths.stats import Moments, block_moments, combine_all

Z_MAX = 4.5


def _baselines() -> ModuleType:
    """``benchmarks/baselines.py`` (the benchmarks are scripts, not a package)."""
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "baselines.py"
    spec = importlib.util.spec_from_file_location("ddrp_benchmark_baselines", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


BASELINES = _baselines()


def sketch(side: SideMap, v: np.ndarray) -> np.ndarray:
    return np.asarray(v @ side.matrix + side.offset)


def folds_of(a: np.ndarray, block: int | None = None) -> list[Moments]:
    """Fold statistics of ``a`` computed block by block and merged (as pass 1 does)."""
    block = block or len(a)
    parts = [folds.fold_moments(a[i:i + block].copy(), i) for i in range(0, len(a), block)]
    return [combine_all([p[f] for p in parts]) for f in range(folds.N_FOLDS)]


def zscores(fit: Callable[[int], crossfit.OptimalFit], seeds: range, xs: np.ndarray,
            ws: np.ndarray) -> np.ndarray:
    """(mean over seeds − x·w) / standard error, the error floored at float round-off."""
    ests = []
    for s in seeds:
        f = fit(s)
        ests.append(sketch(f.x, xs) @ sketch(f.w, ws).T)
    e = np.array(ests)
    se = e.std(0, ddof=1) / np.sqrt(len(e))
    floor = 1e-9 * np.outer(np.linalg.norm(xs, axis=1), np.linalg.norm(ws, axis=1))
    return np.asarray((e.mean(0) - xs @ ws.T) / np.maximum(se, floor))


def redraws(folds_x: list[Moments], folds_w: list[Moments], k: int
            ) -> tuple[crossfit.OptimalFit, Callable[[int], crossfit.OptimalFit]]:
    """The auto fit for seed 0, and a function giving the same fit for any seed without the
    shrinkage search (the chosen shrinkage passed back in): much faster over many seeds."""
    first = crossfit.fit_optimal(folds_x, folds_w, k, 0)
    chosen = (first.info["shrinkage_x"], first.info["shrinkage_w"])
    return first, lambda s: crossfit.fit_optimal(folds_x, folds_w, k, s, chosen)


def gaussian_source(n: int, d: int, spectrum: np.ndarray, mean: float, seed: int
                    ) -> np.ndarray:
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(np.random.default_rng(99).standard_normal((d, d)))
    return np.asarray(rng.standard_normal((n, d)) * np.sqrt(spectrum) @ q.T + mean)


@pytest.fixture(scope="module")
def pair() -> tuple[np.ndarray, np.ndarray]:
    """X and W with means and opposite decaying spectra."""
    d = 12
    x = gaussian_source(600, d, np.geomspace(4.0, 0.05, d), 2.0, 2)
    w = gaussian_source(300, d, np.geomspace(0.05, 4.0, d), -0.5, 3)
    return x, w


@pytest.fixture(scope="module")
def low_rank() -> tuple[np.ndarray, np.ndarray]:
    """X as ``pair``; W of rank 4 through the origin, so W has a null space."""
    rng = np.random.default_rng(1)
    d = 12
    x = gaussian_source(600, d, np.geomspace(4.0, 0.05, d), 2.0, 2)
    basis = np.linalg.qr(rng.standard_normal((d, 4)))[0]
    w = rng.standard_normal((80, 4)) * [3.0, 2.0, 1.0, 0.5] @ basis.T
    return x, w


def probe_vectors(x: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Fitted rows, random directions scaled 10x, and (x side) W's weakest right singular
    vector x 10: in W's null space when W is rank-deficient (products exactly 0)."""
    rng = np.random.default_rng(5)
    d = x.shape[1]
    null = np.linalg.svd(w)[2][-1]
    xs = np.vstack([x[:2], 10 * rng.standard_normal((2, d)), 10 * null])
    ws = np.vstack([w[:2], 10 * rng.standard_normal((2, d))])
    return xs, ws


# ---------------------------------------------------------------------------------------
# folds


def test_fold_of_is_a_hash_of_the_index() -> None:
    rows = np.arange(100_000)
    f = folds.fold_of(rows)
    assert f.dtype == np.int64 and f.min() == 0 and f.max() == folds.N_FOLDS - 1
    counts = np.bincount(f)
    assert np.all(np.abs(counts - 20_000) < 5 * np.sqrt(20_000 * 0.8 * 0.2))
    assert not np.array_equal(f, rows % 5)
    # a period-5 pattern in the data does not align with the folds
    assert len(set(f[::5][:1000].tolist())) == folds.N_FOLDS
    assert folds.fold_of(np.array(12345)).shape == ()
    assert int(folds.fold_of(np.array(12345))) == int(f[12345])
    with pytest.raises(OptionError, match="≥ 0"):
        folds.fold_of(np.array([-1]))


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_fold_moments_merge_to_whole_and_ignore_blocking(dtype: str) -> None:
    a = gaussian_source(503, 6, np.geomspace(3.0, 0.1, 6), 50.0, 3).astype(dtype)
    tol = 1e-12 if dtype == "float64" else 1e-6
    whole = block_moments(a.astype(np.float64))
    by_block = {b: folds_of(a, b) for b in (7, 64, None)}
    for stats in by_block.values():
        merged = combine_all(stats)
        assert merged.n == whole.n
        np.testing.assert_allclose(merged.mean, whole.mean, rtol=tol)
        scale = np.abs(whole.scatter).max()
        assert np.abs(merged.scatter - whole.scatter).max() <= tol * scale
        for f, ref in zip(stats, by_block[None], strict=True):
            assert f.n == ref.n
            assert np.abs(f.scatter - ref.scatter).max() <= tol * scale


@pytest.mark.parametrize("cuts", [[], [1], [100, 101, 300], [37, 38]])
def test_fold_moments_of_pieces_are_the_bytes_of_the_assembled_block(cuts: list[int]) -> None:
    """Pass 1 reads a block as pieces (chunks, rows of shared chunks) and gathers each fold's
    rows from them: the same rows in the same order as ``fold_moments`` of the block, so
    the same bytes, and the (read-only) pieces are left alone."""
    a = gaussian_source(503, 6, np.geomspace(3.0, 0.1, 6), 50.0, 3).astype(np.float32)
    pieces = np.split(a.copy(), cuts)
    for p in pieces:
        p.flags.writeable = False
    got = folds.pieces_fold_moments(pieces, 1000)
    want = folds.fold_moments(a.copy(), 1000)
    for g, w in zip(got, want, strict=True):
        assert g.n == w.n and g.mean.tobytes() == w.mean.tobytes()
        assert g.scatter.tobytes() == w.scatter.tobytes()
    assert np.array_equal(np.concatenate(pieces), a)
    # control: the folds follow the global rows, so another first row gives other bytes
    other = folds.pieces_fold_moments(pieces, 1001)
    assert any(o.scatter.tobytes() != w.scatter.tobytes() for o, w in zip(other, want,
                                                                         strict=True))


# ---------------------------------------------------------------------------------------
# unbiasedness


def test_unbiased_for_fitted_and_unseen_vectors(pair: tuple[np.ndarray, np.ndarray]) -> None:
    x, w = pair
    fx, fw = folds_of(x, 64), folds_of(w, 64)
    xs, ws = probe_vectors(x, w)
    first, fit = redraws(fx, fw, 6)
    alloc = first.info["allocation"]
    assert alloc["tail"] > 0 and alloc["sampled"] > 0  # every part of the design is tested
    assert fit(0).x.matrix.tobytes() == first.x.matrix.tobytes()
    z = zscores(fit, range(100), xs, ws)
    assert np.abs(z).max() < Z_MAX, z


def test_unbiased_in_the_null_space_of_a_low_rank_w(
        low_rank: tuple[np.ndarray, np.ndarray]) -> None:
    x, w = low_rank
    fx, fw = folds_of(x), folds_of(w)
    xs, ws = probe_vectors(x, w)
    assert np.abs(xs[-1] @ w.T).max() < 1e-12 * np.abs(xs[0] @ w.T).max()
    z = zscores(redraws(fx, fw, 5)[1], range(100), xs, ws)
    assert np.abs(z).max() < Z_MAX, z


def _biased(fit: crossfit.OptimalFit, what: str) -> crossfit.OptimalFit:
    """A deliberately wrong sketch: the tail dropped, or the sampled columns without their
    full 1/√π rescale."""
    a = fit.info["allocation"]
    m = fit.x.matrix.copy()
    lo, hi = a["head"], a["head"] + a["sampled"]
    if what == "tail":
        m[:, hi:hi + a["tail"]] = 0.0
        offset = fit.x.offset.copy()
        offset[hi:hi + a["tail"]] = 0.0
    else:
        m[:, lo:hi] *= 0.7
        offset = fit.x.offset.copy()
        offset[lo:hi] *= 0.7
    return crossfit.OptimalFit(SideMap(m, offset, fit.x.shift), fit.w, fit.info)


@pytest.mark.parametrize("what", ["tail", "rescale"])
def test_control_biased_sketch_is_flagged(pair: tuple[np.ndarray, np.ndarray],
                                         what: str) -> None:
    x, w = pair
    fx, fw = folds_of(x), folds_of(w)
    xs, ws = probe_vectors(x, w)
    first, fit = redraws(fx, fw, 6)
    assert first.info["allocation"]["tail"] > 0
    z = zscores(lambda s: _biased(fit(s), what), range(60), xs, ws)
    assert np.abs(z).max() > Z_MAX


# ---------------------------------------------------------------------------------------
# the sampling design


def test_inclusion_probabilities_and_fixed_sample_size() -> None:
    rng = np.random.default_rng(0)
    r = np.concatenate([[5.0, 3.0], np.sort(rng.uniform(0.5, 1.5, 28))[::-1]])
    m, width, d = 8, 3, 40
    pi = allocation.threshold(r, m)
    assert pi is not None
    assert abs(pi.sum() - m) < 1e-12 and pi.min() >= allocation.PI_FLOOR
    alloc = allocation.Alloc(30, m, width, pi)
    assert 0 < alloc.head < m
    n_draws = 4000
    hits = np.zeros(30)
    for seed in range(n_draws):
        mat = allocation.sketch_matrix(alloc, d, m + width, np.random.default_rng(seed))
        chosen = np.flatnonzero(np.abs(mat[:m, :30]).sum(0))
        assert chosen.size == m  # exactly k − k_F coordinates, heads included
        assert np.all(mat[m:, :30] == 0) and np.all(mat[:m, 30:] == 0)
        hits[chosen] += 1
    freq = hits / n_draws
    tol = Z_MAX * np.sqrt(pi * (1 - pi) / n_draws) + 1e-12
    assert np.all(np.abs(freq - pi) <= tol), (freq - pi) / tol


def test_joint_inclusion_matches_simulation() -> None:
    pi = np.array([0.3, 0.5, 0.45, 0.25, 0.5])  # sum 2
    joint = allocation.joint_inclusion(pi)
    np.testing.assert_allclose(np.diag(joint), pi)
    np.testing.assert_allclose(joint.sum(1), 2 * pi)  # Σ_l π_il = n π_i (fixed size)
    us = (np.arange(20_000) + 0.5) / 20_000
    sim = np.zeros((5, 5))
    for u in us:
        sel = np.zeros(5)
        sel[allocation.systematic(pi, float(u))[0]] = 1
        sim += np.outer(sel, sel)
    np.testing.assert_allclose(sim / us.size, joint, atol=1e-3)


# ---------------------------------------------------------------------------------------
# predictions


def test_predicted_mse_matches_empirical_on_gaussian_data() -> None:
    d, k = 16, 6
    spec_x, spec_w = np.geomspace(5.0, 0.02, d), np.geomspace(0.02, 5.0, d) ** 0.5
    x = gaussian_source(3000, d, spec_x, 1.0, 10)
    w = gaussian_source(1500, d, spec_w[::-1] * spec_w, -0.5, 11)
    fx, fw = folds_of(x), folds_of(w)
    x_new = gaussian_source(400, d, spec_x, 1.0, 12)
    w_new = gaussian_source(400, d, spec_w[::-1] * spec_w, -0.5, 13)
    err_fit, err_new = [], []
    for seed in range(50):
        f = crossfit.fit_optimal(fx, fw, k, seed, "oas")
        est = sketch(f.x, x[:400]) @ sketch(f.w, w[:400]).T
        err_fit.append(np.mean((est - x[:400] @ w[:400].T) ** 2))
        est = sketch(f.x, x_new) @ sketch(f.w, w_new).T
        err_new.append(np.mean((est - x_new @ w_new.T) ** 2))
    info = f.info
    assert info["n_folds"] == 5
    assert 0.85 < np.mean(err_fit) / info["predicted_mse_in_sample"] < 1.15
    assert 0.85 < np.mean(err_new) / info["predicted_mse"] < 1.15
    assert info["predicted_gain"] > 1.0


# ---------------------------------------------------------------------------------------
# degenerate inputs, exact widths, determinism, the §4 baseline


def _degenerate_cases() -> dict[str, tuple[np.ndarray, np.ndarray, int]]:
    rng = np.random.default_rng(7)
    d = 10
    x = gaussian_source(300, d, np.geomspace(2.0, 0.1, d), 1.0, 20)
    w = gaussian_source(200, d, np.geomspace(0.1, 2.0, d), 0.5, 21)
    const = x.copy()
    const[:, [2, 5]] = 3.0
    return {
        "n<d": (x[:6], w, 4),
        "w of 4 rows": (x, w[:4], 4),
        "constant columns": (const, w, 4),
        "constant source": (np.tile(rng.standard_normal(d), (50, 1)), w, 4),
        "k=1": (x, w, 1),
        "k=2": (x, w, 2),
        "3 rows in all": (x[:3], w[:3], 3),
    }


@pytest.mark.parametrize("case", list(_degenerate_cases()))
def test_degenerate_inputs_stay_unbiased(case: str) -> None:
    x, w, k = _degenerate_cases()[case]
    fx, fw = folds_of(x), folds_of(w)
    f = crossfit.fit_optimal(fx, fw, k, 0)
    assert f.x.matrix.shape == (10, k) and np.isfinite(f.x.matrix).all()
    assert np.isfinite(f.info["predicted_mse"])
    if case == "3 rows in all":
        assert f.info["n_folds"] == 0 and "in-sample" in f.info["predicted_mse_kind"]
    if k <= 2:
        assert f"k={k}" in f.info["note"]
    xs, ws = probe_vectors(x if len(x) > 3 else np.vstack([x, x]), w)
    z = zscores(redraws(fx, fw, k)[1], range(60), xs, ws)
    assert np.abs(z).max() < Z_MAX, z


@pytest.mark.parametrize("k", [10, 11, 14])
def test_k_at_least_d_is_exact(pair: tuple[np.ndarray, np.ndarray], k: int) -> None:
    x, w = pair
    x, w = x[:, :10], w[:, :10]
    f = crossfit.fit_optimal(folds_of(x), folds_of(w), k, 3)
    xs, ws = probe_vectors(x, w)
    est = sketch(f.x, xs) @ sketch(f.w, ws).T
    scale = np.outer(np.linalg.norm(xs, axis=1), np.linalg.norm(ws, axis=1))
    assert np.abs(est - xs @ ws.T).max() <= 1e-6 * scale.max()
    assert f.info["predicted_mse"] == 0.0 and "exact" in f.info["note"]


def test_deterministic(pair: tuple[np.ndarray, np.ndarray]) -> None:
    x, w = pair
    a = crossfit.fit_optimal(folds_of(x, 7), folds_of(w, 7), 6, 11)
    b = crossfit.fit_optimal(folds_of(x, 7), folds_of(w, 7), 6, 11)
    for sa, sb in ((a.x, b.x), (a.w, b.w)):
        assert sa.matrix.tobytes() == sb.matrix.tobytes()
        assert sa.offset.tobytes() == sb.offset.tobytes()
    assert a.info == b.info


def test_info_layout(pair: tuple[np.ndarray, np.ndarray]) -> None:
    import json

    x, w = pair
    info = crossfit.fit_optimal(folds_of(x), folds_of(w), 6, 0).info
    json.dumps(info, allow_nan=False)
    assert set(info["allocation"]) == {"head", "sampled", "tail", "candidates"}
    a = info["allocation"]
    assert a["head"] + a["sampled"] + a["tail"] <= 6
    assert info["rho"] == sorted(info["rho"], reverse=True)
    assert info["predicted_gain"] == pytest.approx(
        info["predicted_mse_gaussian"] / info["predicted_mse"])
    for side in ("shrinkage_x", "shrinkage_w"):
        assert set(info[side]) == {"kind", "intensity"}


def test_head_tail_baseline(pair: tuple[np.ndarray, np.ndarray]) -> None:
    x, w = pair
    fx, fw = folds_of(x), folds_of(w)
    mx, mw = combine_all(fx), combine_all(fw)
    xs, ws = probe_vectors(x, w)
    z = zscores(lambda s: BASELINES.fit_head_tail(mx, mw, 6, s), range(60), xs, ws)
    assert np.abs(z).max() < Z_MAX, z
    f = BASELINES.fit_head_tail(mx, mw, 6, 0, folds_x=fx, folds_w=fw)
    assert "cross-fitted" in f.info["predicted_mse_kind"]
    errs = [np.mean((sketch(g.x, x[:300]) @ sketch(g.w, w).T - x[:300] @ w.T) ** 2)
            for g in (BASELINES.fit_head_tail(mx, mw, 6, s) for s in range(60))]
    assert 0.8 < np.mean(errs) / f.info["predicted_mse_in_sample"] < 1.2


def test_shrinkage_intensities() -> None:
    a = gaussian_source(40, 20, np.geomspace(3.0, 0.1, 20), 0.0, 4)
    m = block_moments(a)
    for fn in (shrinkage.ledoit_wolf, shrinkage.oas):
        lam = fn(m.scatter, m.n)
        assert 0.0 < lam <= 1.0
        big = block_moments(gaussian_source(4000, 20, np.geomspace(3.0, 0.1, 20), 0.0, 4))
        assert fn(big.scatter, big.n) < lam
    with pytest.raises(OptionError, match="shrinkage"):  # the option's rule, before the maths
        build(m, m, 4, "auto", 0, shrinkage=1.5)
    with pytest.raises(OptionError, match="shrinkage"):  # "lw" is a point of the search only
        build(m, m, 4, "auto", 0, shrinkage="lw")


# ---------------------------------------------------------------------------------------
# the factored final basis (Cholesky, P and Q never formed: d > FACTORED_D)


@pytest.mark.parametrize("spec", [{"kind": "oas"}, {"kind": "diag", "intensity": 0.1},
                                  {"kind": "iso", "intensity": 0.3}])
@pytest.mark.parametrize("cross_fit", [False, True])
def test_factored_basis_is_the_formed_one(pair: tuple[np.ndarray, np.ndarray],
                                          monkeypatch: pytest.MonkeyPatch,
                                          spec: dict[str, object], cross_fit: bool) -> None:
    """Same ρ, in-sample energies, allocation and π; the head coordinates' columns equal up
    to their signs (which the two factors' SVDs choose differently)."""
    x, w = pair
    fx, fw = (folds_of(x), folds_of(w)) if cross_fit else ([block_moments(x)], [block_moments(w)])
    formed = crossfit.fit_optimal(fx, fw, 6, 0, (spec, spec))
    monkeypatch.setattr(basis, "FACTORED_D", 0)
    factored = crossfit.fit_optimal(fx, fw, 6, 0, (spec, spec))
    a, b = formed.info, factored.info
    np.testing.assert_allclose(b["rho"], a["rho"], rtol=1e-9)
    np.testing.assert_allclose(b["pi"], a["pi"], rtol=1e-9)
    assert b["allocation"] == a["allocation"] and a["allocation"]["head"] > 0
    for key in ("predicted_mse", "predicted_mse_in_sample"):
        assert b[key] == pytest.approx(a[key], rel=1e-9)
    head = a["allocation"]["head"]
    for side in ("x", "w"):
        fa, fb = getattr(formed, side), getattr(factored, side)
        sign = np.sign(fa.matrix[0, :head] * fb.matrix[0, :head])
        np.testing.assert_allclose(fb.matrix[:, :head] * sign, fa.matrix[:, :head],
                                   rtol=1e-7, atol=1e-9 * np.abs(fa.matrix).max())


def test_factored_basis_stays_unbiased(pair: tuple[np.ndarray, np.ndarray],
                                       low_rank: tuple[np.ndarray, np.ndarray],
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Fitted and unseen vectors, W's null space, every degenerate case, and exact at k ≥ d."""
    monkeypatch.setattr(basis, "FACTORED_D", 0)
    cases = {"pair": (*pair, 6), "low rank": (*low_rank, 5)} | _degenerate_cases()
    for case, (x, w, k) in cases.items():
        fx, fw = folds_of(x), folds_of(w)
        xs, ws = probe_vectors(x if len(x) > 3 else np.vstack([x, x]), w)
        first, fit = redraws(fx, fw, k)
        assert np.isfinite(first.x.matrix).all() and np.isfinite(first.info["predicted_mse"])
        z = zscores(fit, range(60), xs, ws)
        assert np.abs(z).max() < Z_MAX, (case, z)
    x, w = pair
    f = crossfit.fit_optimal(folds_of(x), folds_of(w), x.shape[1], 3)
    xs, ws = probe_vectors(x, w)
    scale = np.outer(np.linalg.norm(xs, axis=1), np.linalg.norm(ws, axis=1))
    est = sketch(f.x, xs) @ sketch(f.w, ws).T
    assert np.abs(est - xs @ ws.T).max() <= 1e-6 * scale.max()


def test_in_sample_energies_are_the_full_ones() -> None:
    """The lean energies (leading block of e, banded tail sums) against ``_energies``."""
    rng = np.random.default_rng(4)
    d = 600  # more than one band
    g, h = rng.standard_normal((d, d)), rng.standard_normal((d, d))
    ha, hb = g @ g.T / d, h @ h.T / d
    full = allocation.energies([(ha, hb)])
    for lead in (None, 50):
        lean = allocation.in_sample_energies(ha, hb, lead)
        j = d if lead is None else lead
        np.testing.assert_allclose(lean.e, full.e[:j, :j], rtol=1e-14)
        for name in ("trtr", "tail_e", "rho_hat", "diag"):
            np.testing.assert_allclose(getattr(lean, name), getattr(full, name), rtol=1e-9,
                                       atol=1e-12 * float(full.tail_e[0]), err_msg=name)


# ---------------------------------------------------------------------------------------
# the shrinkage search by d


def test_search_kind_follows_d() -> None:
    sweeps, coarse = shrinkage.TWO_SWEEPS_D, shrinkage.COARSE_D
    assert [shrinkage.search_kind(d) for d in (2, sweeps, sweeps + 1, coarse, coarse + 1)] == \
        ["full", "full", "refined", "refined", "coarse"]
    with pytest.raises(OptionError, match="search must be one of"):
        crossfit.fit_optimal([block_moments(np.eye(3))] * 5, [block_moments(np.eye(3))] * 5, 2, 0,
                        search="fine")


def _grid_neighbours(desc: dict[str, object]) -> list[tuple[str, float]]:
    """The full grid's neighbours of a chosen shrinkage, written out independently of
    ``optimal``: adjacent intensities of a blend; OAS, LW and the weakest iso blend."""
    lams = list(shrinkage.INTENSITIES)
    kind, lam = str(desc["kind"]), float(desc["intensity"])  # type: ignore[arg-type]
    if kind in ("oas", "lw"):
        return [("lw" if kind == "oas" else "oas", 0.0), ("iso", lams[0])]
    i = lams.index(lam)
    out = [(kind, lams[i - 1])] if i else ([("oas", 0.0)] if kind == "iso" else [])
    return out + ([(kind, lams[i + 1])] if i + 1 < len(lams) else [])


def _selection(fx: list[Moments], fw: list[Moments], k: int, x: object, w: object) -> float:
    """The cross-fitted MSE the search minimises, for one fixed pair of descriptions."""
    desc = [v if isinstance(v, dict) else {"kind": v[0], "intensity": v[1]}  # type: ignore
            for v in (x, w)]
    return float(crossfit.fit_optimal(fx, fw, k, 0, (desc[0], desc[1]))
                 .info["predicted_mse_selection"])


@pytest.fixture(scope="module")
def mid_d() -> tuple[list[Moments], list[Moments]]:
    """d = 140 (the refined search's range), rows scarce enough for shrinkage to matter."""
    d = 140
    spec = np.geomspace(4.0, 0.01, d)
    x = gaussian_source(2 * d, d, spec, 1.0, 1)
    w = gaussian_source(d, d, spec[::-1].copy(), -0.5, 2)
    return folds_of(x), folds_of(w)


def test_refined_search_ends_where_no_step_of_w_lowers_the_cross_fitted_mse(
        mid_d: tuple[list[Moments], list[Moments]]) -> None:
    """The last side walked (W) stops at a local minimum along the full grid, and no point of
    the coarse grid beats it; with fewer pairs scored than the full search."""
    fx, fw = mid_d
    fit = crossfit.fit_optimal(fx, fw, 16, 0)
    assert fit.info["shrinkage_search"].startswith("refined")
    best = fit.info["predicted_mse_selection"]
    sx, sw = fit.info["shrinkage_x"], fit.info["shrinkage_w"]
    rivals = _grid_neighbours(sw) + list(shrinkage.COARSE_GRID)
    assert all(_selection(fx, fw, 16, sx, s) >= best for s in rivals)
    full = crossfit.fit_optimal(fx, fw, 16, 0, search="full")
    pairs = [int(f.info["shrinkage_search"].rsplit(", ", 1)[1].split()[0]) for f in (fit, full)]
    assert pairs[0] < pairs[1]
    # control: a point the walk would leave has a better neighbour, so the check can fail
    start = ("diag", shrinkage.INTENSITIES[-1])
    there = _selection(fx, fw, 16, sx, start)
    assert min(_selection(fx, fw, 16, sx, s) for s in _grid_neighbours(
        {"kind": start[0], "intensity": start[1]})) < there
