"""Statistics: exact against numpy on the whole array, for any chunking and any shift."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ddrp_dask.maths.stats import Moments, block_moments, combine, combine_all, merge_moments
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


def _copies(parts: list[Moments]) -> list[Moments]:
    return [Moments(p.n, p.mean.copy(), p.scatter.copy()) for p in parts]


def test_reduction_tasks_merge_in_place_to_the_same_bytes() -> None:
    """Pass 1's reduction tasks (``merge_moments``, and ``merge_folds`` per fold) sum into
    their inputs' arrays, so a merge allocates no d x d array; the bytes are combine_all's,
    through the Dask tree at every fan-in, and combine_all itself leaves its parts alone."""
    import dask

    from ddrp_dask.graph.compute import tree_reduce
    from ddrp_dask.maths.folds import combine_folds, merge_folds

    rng = np.random.default_rng(11)
    parts = [block_moments(rng.standard_normal((5 + i % 7, 6)) * (1 + i) + 50.0 * i)
             for i in range(37)]
    parts[4] = block_moments(np.zeros((0, 6)))  # an empty block (all rows skipped)
    kept = _copies(parts)
    whole = combine_all(parts)
    for a, b in zip(parts, kept, strict=True):  # combine_all copies
        assert np.array_equal(a.scatter, b.scatter) and np.array_equal(a.mean, b.mean)
    for fan_in in (2, 8):
        own = _copies(kept)
        (got,) = dask.compute(tree_reduce([dask.delayed(p) for p in own], merge_moments,
                                          fan_in=fan_in), scheduler="sync")
        assert got.n == whole.n
        assert np.array_equal(got.scatter, whole.scatter)
        assert np.array_equal(got.mean, whole.mean)
        # control: the merge did reuse its inputs (the first part now holds a partial sum)
        assert got.scatter is own[0].scatter
        assert not np.array_equal(own[0].scatter, kept[0].scatter)
    folds = [[block_moments(rng.standard_normal((4 + f, 3)) + i) for f in range(3)]
             for i in range(9)]
    want = combine_folds(folds)
    got_folds = merge_folds([[Moments(m.n, m.mean.copy(), m.scatter.copy()) for m in p]
                             for p in folds])
    for a, b in zip(got_folds, want, strict=True):
        assert np.array_equal(a.scatter, b.scatter) and np.array_equal(a.mean, b.mean)


def test_combine_all_is_the_aligned_tree() -> None:
    """The Dask reduction (graph.compute.tree_reduce, merging aligned groups of FAN_IN) gives
    combine_all's tree: bit-identical Moments over 70 leaves, and the same shape."""
    import dask

    from ddrp_dask.graph.compute import FAN_IN, tree_reduce

    assert FAN_IN == 2
    rng = np.random.default_rng(5)
    # means far apart and unequal counts: another merge order changes the last bits
    parts = [block_moments(rng.standard_normal((7 + i % 5, 3)) * (1 + i) + 1e3 * i)
             for i in range(70)]
    leaves = [dask.delayed(p) for p in parts]
    (got,) = dask.compute(tree_reduce(leaves, combine_all), scheduler="sync")
    whole = combine_all(parts)
    assert got.n == whole.n
    assert np.array_equal(got.scatter, whole.scatter) and np.array_equal(got.mean, whole.mean)
    # a sequential fold differs in the last bits, so the equality above tells trees apart
    fold = parts[0]
    for p in parts[1:]:
        fold = combine(fold, p)
    assert not np.array_equal(fold.scatter, whole.scatter)

    # any power-of-two fan-in gives the same tree, hence the same bytes
    for fan_in in (2, 4, 8, 16):
        (other,) = dask.compute(tree_reduce(leaves, combine_all, fan_in=fan_in),
                                scheduler="sync")
        assert other.n == whole.n
        assert np.array_equal(other.scatter, whole.scatter)
        assert np.array_equal(other.mean, whole.mean)

    # the shape itself, with a non-associative merge: bracketed concatenation
    def pairwise(group: list[str]) -> str:  # combine_all's binary tree over strings
        level = list(group)
        while len(level) > 1:
            level = [f"({level[i]}{level[i + 1]})" if i + 1 < len(level) else level[i]
                     for i in range(0, len(level), 2)]
        return level[0]

    names = [f"{i}." for i in range(70)]
    (shape,) = dask.compute(tree_reduce([dask.delayed(n) for n in names], pairwise),
                            scheduler="sync")
    assert shape == pairwise(names)
    assert shape.count("(") == 69 and shape.startswith("(((((((0.1.)")
    for fan_in in (2, 4, 16):
        (again,) = dask.compute(tree_reduce([dask.delayed(n) for n in names], pairwise,
                                            fan_in=fan_in), scheduler="sync")
        assert again == shape


def test_tiled_centring_and_symmetrizing_give_the_whole_matrix_bytes() -> None:
    """block_moments and combine work on row tiles instead of d x d temporaries (issue 15,
    wide vectors); the bytes are those of the whole-matrix expressions, across tile edges."""
    rng = np.random.default_rng(7)
    for d in (3, 512, 1300):
        b = (rng.standard_normal((600, d)) * 3 + 5).astype(np.float32)
        colsum = b.sum(axis=0, dtype=np.float64)
        n = len(b)
        shift = (colsum / n).astype(np.float32)
        resid = colsum - n * shift.astype(np.float64)
        c = b - shift
        s = (c.T @ c).astype(np.float64) - np.outer(resid, resid) / n
        s = (s + s.T) * 0.5
        m = block_moments(b.copy())
        assert m.scatter.tobytes() == s.tobytes(), d
        other = block_moments(b[:100] * 2)
        merged = combine(m, other)
        delta = other.mean - m.mean
        expect = m.scatter + other.scatter + np.outer(delta, delta) * (n * 100 / (n + 100))
        assert merged.scatter.tobytes() == expect.tobytes(), d
