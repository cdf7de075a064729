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
        ``mse``; ``rel_mse`` = mse / mean(exact²); ``mean_error`` (the estimates of one
        model share its draws, so no test of bias is made from them: ``seed_test`` does it
        over seeds); quantiles (keys "50", "90", "99") of
        ``rel_error`` = |error| / |x·w| and of ``norm_error`` = |error| / (‖x‖‖w‖).
    """
    exact = np.asarray(exact, dtype=np.float64)
    err = np.asarray(estimate, dtype=np.float64) - exact
    p = err.size
    mse = float(np.mean(err**2)) if p else float("nan")
    energy = float(np.mean(exact**2)) if p else float("nan")
    mean = float(np.mean(err)) if p else float("nan")
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.where(err == 0, 0.0, np.abs(err) / np.abs(exact))
        out = {"mse": mse, "rel_mse": mse / energy if energy > 0 else float("nan"),
               "mean_error": mean,
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


def _t(c: np.ndarray) -> float:
    """Student's t of ``c`` against mean 0 (±inf for a non-zero constant, 0 for zeros)."""
    mean, sd = float(c.mean()), float(c.std(ddof=1))
    if sd > 0:
        return mean / (sd / np.sqrt(c.size))
    return 0.0 if mean == 0 else float(np.copysign(np.inf, mean))


def seed_test(errors: np.ndarray, exact: np.ndarray, scale: np.ndarray) -> dict[str, Any]:
    """Test ``errors`` (seeds × pairs: estimate − exact, each seed a rebuilt sketch) for a
    zero mean over seeds.

    The estimates of one seed share its draws, so the test uses one number per seed —
    contrasts of that seed's errors, independent across seeds — and a t-test across seeds:
    the mean of error / (‖x‖‖w‖) over the pairs, and the same signed by x·w (a bias that
    shrinks or inflates inner products). ``p_value``: the smaller two-sided p of the two,
    doubled (Bonferroni). Also the share of pairs whose own t-test over seeds rejects a zero
    mean at level ``ALPHA`` (about ``ALPHA`` for an unbiased method; those tests are each
    valid, but pairs sharing rows are not independent of each other).
    """
    from scipy import stats as sps

    seeds = errors.shape[0]
    norm = np.where(scale > 0, scale, 1.0)
    contrasts = {"mean": (errors / norm).mean(axis=1),
                 "signed": (errors * np.sign(exact) / norm).mean(axis=1)}
    ts = {name: _t(c) for name, c in contrasts.items()}
    p = min(1.0, 2 * min(float(2 * sps.t.sf(abs(t), seeds - 1)) for t in ts.values()))
    pair_mean = errors.mean(axis=0)
    pair_se = errors.std(axis=0, ddof=1) / np.sqrt(seeds)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(pair_mean == 0, 0.0, np.abs(pair_mean) / pair_se)
    crit = float(sps.t.ppf(1 - ALPHA / 2, seeds - 1))
    return {"seeds": seeds, "mean_error": float(errors.mean()),
            "t_mean": ts["mean"], "t_signed": ts["signed"], "p_value": p,
            "pair_reject_rate": float(np.mean(t > crit)), "expected_reject_rate": ALPHA,
            "note": "one contrast of each seed's errors (mean of error/(|x||w|), and signed "
                    "by x.w), t-tested across seeds; per pair: t-test of its mean error over "
                    f"seeds at level {ALPHA}"}
