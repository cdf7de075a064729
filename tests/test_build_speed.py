"""The fast build at the widths embeddings have: the search skipped when rows are plentiful,
the held-out pairs from Cholesky factors, the basis of all rows factored above
``TWO_SWEEPS_D``; every estimate still unbiased; the steps told to a progress callback."""

from __future__ import annotations

import numpy as np
import pytest

from ddrp_dask.maths import basis, crossfit
from ddrp_dask.maths.build import build
from ddrp_dask.maths.maps import scale_of
from ddrp_dask.maths.shrinkage import TWO_SWEEPS_D
from ddrp_dask.maths.stats import Moments, combine_all

from .test_optimal import Z_MAX, folds_of, gaussian_source, probe_vectors, redraws, zscores

D = TWO_SWEEPS_D + 12


def _source(rows_per_d: float, seed: int, flip: bool = False) -> np.ndarray:
    spec = np.geomspace(4.0, 0.01, D)
    return gaussian_source(int(rows_per_d * D), D, spec[::-1].copy() if flip else spec,
                           1.0 if not flip else -0.5, seed)


@pytest.fixture(scope="module")
def plentiful() -> tuple[list[Moments], list[Moments]]:
    """Both sources with more than ``PLENTIFUL_ROWS_PER_D``·d rows in every fold."""
    rows = 6 * crossfit.PLENTIFUL_ROWS_PER_D
    return folds_of(_source(rows, 1)), folds_of(_source(rows, 2, flip=True))


def _cv(fx: list[Moments], fw: list[Moments]) -> crossfit.CrossFit:
    mx, mw = combine_all(fx), combine_all(fw)
    return crossfit.cross_fit(fx, fw, scale_of(mx.second_moment, mw.second_moment),
                              scale_of(mw.second_moment, mx.second_moment))


@pytest.mark.parametrize("spec", [("oas", 0.0), ("diag", 0.1), ("iso", 0.3)])
def test_factored_held_out_pairs_are_the_formed_ones(
        plentiful: tuple[list[Moments], list[Moments]], spec: tuple[str, float]) -> None:
    """Ha∘Hb (what every MSE reads) and the diagonals equal; Ha's off-diagonal signs follow
    the two SVDs' sign choices, which Q shares with P."""
    formed, factored = _cv(*plentiful), _cv(*plentiful)
    factored.factored = True
    a = crossfit.held_out_pairs(formed, spec, spec)
    b = crossfit.held_out_pairs(factored, spec, spec)
    for (ha, hb), (fa, fb) in zip(a, b, strict=True):
        np.testing.assert_allclose(np.diag(fa), np.diag(ha), rtol=1e-7)
        np.testing.assert_allclose(fa * fb, ha * hb, rtol=1e-6,
                                   atol=1e-9 * float(np.abs(ha * hb).max()))


def test_plentiful_rows_skip_the_search(plentiful: tuple[list[Moments], list[Moments]]
                                        ) -> None:
    told: list[str] = []
    fit = crossfit.fit_optimal(*plentiful, 8, 0, progress=told.append)
    assert fit.info["shrinkage_search"].startswith("none: at least")
    assert fit.info["shrinkage_x"]["kind"] == fit.info["shrinkage_w"]["kind"] == "oas"
    assert told[0].startswith("cross-fit over 5 folds, shrinkage pair 1 of 1 (x oas, w oas)")
    assert told[1:] == [f"basis of all rows (SVD of {D + 1}x{D + 1})",
                        "allocation and random draws"]
    # scarce rows (W's folds below the threshold): searched as before
    scarce = crossfit.fit_optimal(plentiful[0], folds_of(_source(3, 2, flip=True)), 8, 0)
    assert scarce.info["shrinkage_search"].startswith("refined")
    # and at d ≤ TWO_SWEEPS_D never skipped, however many rows
    small = [folds_of(a[:, :TWO_SWEEPS_D]) for a in (_source(200, 1), _source(200, 2, True))]
    assert crossfit.fit_optimal(*small, 8, 0).info["shrinkage_search"].startswith("full")


def test_the_fast_build_stays_unbiased(plentiful: tuple[list[Moments], list[Moments]]
                                       ) -> None:
    """Fitted rows, unseen directions ×10 and W's weakest direction: z-scores over seeds."""
    x, w = _source(1, 1), _source(1, 2, flip=True)
    xs, ws = probe_vectors(x, w)
    first, fit = redraws(*plentiful, 8)
    assert first.info["shrinkage_search"].startswith("none")
    z = zscores(fit, range(60), xs, ws)
    assert np.abs(z).max() < Z_MAX


def test_the_basis_of_all_rows_is_factored_above_two_sweeps() -> None:
    assert basis.FACTORED_D == TWO_SWEEPS_D


def test_build_tells_its_steps(plentiful: tuple[list[Moments], list[Moments]]) -> None:
    told: list[str] = []
    fx, fw = plentiful
    build(combine_all(fx), combine_all(fw), 8, "auto", 0, folds=(fx, fw), progress=told.append)
    assert told[-1] == "the report's reference predictions"
    assert any(t.startswith("cross-fit over 5 folds") for t in told)


@pytest.mark.parametrize("n", [1, 2, 3, 5, 6])
def test_leave_one_out_merges_every_other_fold(n: int) -> None:
    """The training sets of the cross-fit, through prefixes and suffixes, against the
    moments of the stacked rows (numpy); a single fold is its own training set."""
    from ddrp_dask.maths.stats import block_moments

    rng = np.random.default_rng(n)
    blocks = [rng.standard_normal((40 + 7 * i, 5)) + i for i in range(n)]
    trains = crossfit.leave_one_out([block_moments(b) for b in blocks])
    for f, got in enumerate(trains):
        rest = np.vstack([b for g, b in enumerate(blocks) if g != f] or [blocks[f]])
        assert got.n == len(rest)
        np.testing.assert_allclose(got.mean, rest.mean(axis=0), rtol=1e-12)
        centred = rest - rest.mean(axis=0)
        np.testing.assert_allclose(got.scatter, centred.T @ centred, rtol=1e-10)
