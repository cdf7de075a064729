"""Statistics: exact against numpy on the whole array, for any chunking and any shift."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ddrp_dask.maths.stats import Moments, block_moments, combine, combine_all
from ddrp_dask.testing import reference_covariance, reference_mean


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300))


def _chunked(x: np.ndarray, cuts: list[int]) -> Moments:
    edges = [0, *sorted(set(c for c in cuts if 0 < c < len(x))), len(x)]
    return combine_all([block_moments(x[a:b]) for a, b in itertools.pairwise(edges)])


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 300), d=st.integers(1, 9), shift=st.sampled_from([0.0, 1e4]),
       cuts=st.lists(st.integers(1, 299), max_size=12), seed=st.integers(0, 2**16))
def test_any_chunking_matches_whole_array_float64(n: int, d: int, shift: float,
                                                  cuts: list[int], seed: int) -> None:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d)) * rng.uniform(0.1, 3, d) + shift * rng.uniform(0.5, 1, d)
    m = _chunked(x, cuts)
    assert m.n == n
    assert _rel(m.mean, reference_mean(x)) < 1e-12
    ref = reference_covariance(x)
    if n > 1:
        assert _rel(m.scatter, ref) < 1e-10
    else:
        assert np.abs(m.scatter).max() == 0.0


def test_mean_1e4_times_spread_is_accurate() -> None:
    rng = np.random.default_rng(1)
    x = rng.standard_normal((20000, 8)) + 1e4
    m = _chunked(x, list(range(1000, 20000, 1000)))
    # the naive one-pass formula loses ~8 digits here; the merge must not
    naive = x.T @ x - len(x) * np.outer(x.mean(0), x.mean(0))
    ref = reference_covariance(x)
    assert _rel(naive, ref) > 1e-7  # the trap is real
    assert _rel(m.scatter, ref) < 1e-10


def test_float32_products_within_1e6_of_float64() -> None:
    rng = np.random.default_rng(2)
    x = (rng.standard_normal((200_000, 32)) * np.geomspace(10, 0.1, 32) + 50).astype(np.float32)
    m = combine_all([block_moments(x[i:i + 65536]) for i in range(0, len(x), 65536)])
    assert _rel(m.scatter, reference_covariance(x)) < 1e-6
    assert _rel(m.mean, reference_mean(x)) < 1e-9


@pytest.mark.parametrize("scale", [1e30, 1e-30])
def test_float32_extreme_magnitudes_do_not_overflow(scale: float) -> None:
    rng = np.random.default_rng(3)
    x = (rng.standard_normal((500, 4)) * scale).astype(np.float32)
    m = block_moments(x)
    assert np.isfinite(m.scatter).all()
    assert _rel(m.scatter, reference_covariance(x)) < 1e-6


def test_combine_is_associative_and_has_identity() -> None:
    rng = np.random.default_rng(4)
    a, b, c = (block_moments(rng.standard_normal((k, 3)) + 5) for k in (5, 17, 2))
    left, right = combine(combine(a, b), c), combine(a, combine(b, c))
    assert np.allclose(left.scatter, right.scatter, rtol=1e-13)
    empty = block_moments(np.zeros((0, 3)))
    assert combine(empty, a) is a and combine(a, empty) is a


def test_combine_all_is_the_aligned_tree() -> None:
    """The Dask reduction merges aligned groups of 8; that must equal combine_all's tree."""
    from ddrp_dask.graph.compute import FAN_IN

    rng = np.random.default_rng(5)
    parts = [block_moments(rng.standard_normal((7, 3)) + i) for i in range(37)]
    level = parts
    while len(level) > 1:
        level = [combine_all(level[i:i + FAN_IN]) for i in range(0, len(level), FAN_IN)]
    whole = combine_all(parts)
    assert np.array_equal(level[0].scatter, whole.scatter)
    assert np.array_equal(level[0].mean, whole.mean)
