"""Evaluation metrics (pure numpy): sampled pairs, error summaries, recall@N, and the
test of unbiasedness over rebuilt seeds."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["ALPHA", "QUANTILES", "error_summary", "pair_dots", "quantiles", "recall_at_n",
           "row_runs", "sample_pairs", "sample_queries", "seed_test"]

#: Quantiles (percent) of the relative errors reported.
QUANTILES = (50, 90, 99)
#: Two-sided level of the per-pair t-tests of ``seed_test``.
ALPHA = 0.01


def sample_pairs(n_x: int, n_w: int, pairs: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``pairs`` pairs (x row, w row) drawn uniformly with replacement, from ``seed``.

    >>> ix, iw = sample_pairs(10, 5, 3, seed=1)
    >>> ix.shape, bool((iw < 5).all())
    ((3,), True)
    """
    rng = np.random.default_rng([int(seed), 0])
    return rng.integers(0, n_x, pairs), rng.integers(0, n_w, pairs)


def sample_queries(n_x: int, queries: int, seed: int = 0) -> np.ndarray:
    """``queries`` distinct x rows, sorted, for recall@N (independent of ``sample_pairs``)."""
    rng = np.random.default_rng([int(seed), 1])
    return np.sort(rng.choice(n_x, size=min(queries, n_x), replace=False))


def quantiles(values: np.ndarray) -> dict[str, float]:
    """The ``QUANTILES`` (keys "50", "90", "99") of ``values``; NaN when empty."""
    if values.size == 0:
        return {str(q): float("nan") for q in QUANTILES}
    got = np.quantile(values, [q / 100 for q in QUANTILES], method="higher")
    return {str(q): float(v) for q, v in zip(QUANTILES, got, strict=True)}


def error_summary(exact: np.ndarray, estimate: np.ndarray,
                  scale: np.ndarray | None = None) -> dict[str, Any]:
    """Accuracy of ``estimate`` against ``exact`` over pairs.

    Parameters
    ----------
    exact, estimate : ndarray of shape (pairs,)
    scale : ndarray of shape (pairs,), optional
        ‖x‖·‖w‖ of every pair, for the norm-relative errors.

    Returns
    -------
    dict
        ``mse``; ``rel_mse`` = mse / mean(exact²); ``mean_error``, its standard error ``se``
        and ``bias_z`` = mean_error / se; quantiles (keys "50", "90", "99") of
        ``rel_error`` = |error| / |x·w| and of ``norm_error`` = |error| / (‖x‖‖w‖).
    """
    exact = np.asarray(exact, dtype=np.float64)
    err = np.asarray(estimate, dtype=np.float64) - exact
    p = err.size
    mse = float(np.mean(err**2)) if p else float("nan")
    energy = float(np.mean(exact**2)) if p else float("nan")
    mean = float(np.mean(err)) if p else float("nan")
    se = float(np.std(err, ddof=1) / np.sqrt(p)) if p > 1 else float("nan")
    if se > 0:
        z = mean / se
    else:
        z = 0.0 if mean == 0 else float(np.copysign(np.inf, mean))
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.where(err == 0, 0.0, np.abs(err) / np.abs(exact))
        out = {"mse": mse, "rel_mse": mse / energy if energy > 0 else float("nan"),
               "mean_error": mean, "se": se, "bias_z": z,
               "rel_error_quantiles": quantiles(rel)}
        if scale is not None:
            s = np.asarray(scale, dtype=np.float64)
            out["norm_error_quantiles"] = quantiles(np.where(err == 0, 0.0, np.abs(err) / s))
    return out


def recall_at_n(exact_idx: np.ndarray, est_idx: np.ndarray) -> float:
    """Mean over rows of |exact top-N ∩ estimated top-N| / N.

    >>> recall_at_n(np.array([[1, 2], [3, 4]]), np.array([[2, 9], [4, 3]]))
    0.75
    """
    if exact_idx.size == 0:
        return float("nan")
    hits = [np.isin(e, s).sum() for e, s in zip(exact_idx, est_idx, strict=True)]
    return float(np.sum(hits) / exact_idx.size)


def pair_dots(a: np.ndarray, ia: np.ndarray, b: np.ndarray, ib: np.ndarray,
               chunk: int = 8192) -> np.ndarray:
    """a[ia[i]] · b[ib[i]] for every i, in float64, a chunk of pairs at a time."""
    out = np.empty(len(ia))
    for s in range(0, len(ia), chunk):
        out[s:s + chunk] = np.einsum("ij,ij->i", a[ia[s:s + chunk]].astype(np.float64),
                                     b[ib[s:s + chunk]].astype(np.float64))
    return out


def row_runs(idx: np.ndarray, max_gap: int | None) -> list[tuple[int, int]]:
    """Row ranges covering the sorted ``idx``, bridging gaps of at most ``max_gap`` rows
    (all of them for None)."""
    if max_gap is None:
        return [(int(idx[0]), int(idx[-1]) + 1)]
    cuts = np.flatnonzero(np.diff(idx) > max_gap + 1) + 1
    return [(int(part[0]), int(part[-1]) + 1) for part in np.split(idx, cuts)]


def seed_test(errors: np.ndarray) -> dict[str, Any]:
    """Test ``errors`` (seeds × pairs: estimate − exact) for a zero mean over seeds.

    Returns the mean error over seeds and pairs with its standard error and z, and the share
    of pairs whose own t-test rejects a zero mean at level ``ALPHA`` (about ``ALPHA`` for an
    unbiased method).
    """
    from scipy import stats as sps

    seeds = errors.shape[0]
    per_seed = errors.mean(axis=1)
    se = float(per_seed.std(ddof=1) / np.sqrt(seeds))
    mean = float(per_seed.mean())
    pair_mean = errors.mean(axis=0)
    pair_se = errors.std(axis=0, ddof=1) / np.sqrt(seeds)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(pair_mean == 0, 0.0, np.abs(pair_mean) / pair_se)
    crit = float(sps.t.ppf(1 - ALPHA / 2, seeds - 1))
    return {"seeds": seeds, "mean_error": mean, "se": se,
            "z": mean / se if se > 0 else (0.0 if mean == 0 else float(np.inf)),
            "pair_reject_rate": float(np.mean(t > crit)), "expected_reject_rate": ALPHA,
            "note": f"per pair: t-test of mean error over seeds = 0 at level {ALPHA}; an "
                    f"unbiased method rejects about {ALPHA:.0%} of pairs"}
