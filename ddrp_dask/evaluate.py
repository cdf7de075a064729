"""Measure a fitted model on the data: sampled pairs, exact against estimated inner products.

``evaluate_model`` samples pairs of rows (seeded), reads only the blocks holding sampled rows (one
task per block; each task opens its source itself), and compares the exact x·w with the
estimates of the model, of a ``gaussian`` and of an ``asymmetric`` sketch of the same K built
from the statistics stored in the model, beside the MSEs the build predicted. With ``top`` it
also measures recall@N of top-N search for a sample of x rows, in a second pass that scores
them against every W row block by block.

About the bias test: a model is one draw of its random matrix, so its errors on the sampled
pairs are correlated through that draw; ``bias_z`` (mean error over pairs / its standard
error) says whether *this* model's errors average out over pairs like the sampled ones. The
unbiasedness of a *method* (the mean over seeds is x·w for every pair) is tested with
``seeds``: the method is rebuilt from the stored statistics with seeds 0..S−1 and the mean
error over seeds is tested, overall and pair by pair.

The numpy parts (``sample_pairs``, ``error_summary``, ``recall_at_n``) need no cluster.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import dask
import numpy as np
from threadpoolctl import threadpool_limits

from .build import build
from .errors import ModelError, OptionError
from .io import Source, check_finite, open_source
from .matmul import merge_top_n, top_n_products
from .model import SideMap, SketchModel, load_model
from .pipeline import compute, tree_reduce
from .project import project_block

__all__ = ["EvaluatePlan", "error_summary", "evaluate_model", "format_evaluation",
           "plan_evaluate", "recall_at_n", "sample_pairs", "sample_queries"]

#: Quantiles (percent) of the relative errors reported.
QUANTILES = (50, 90, 99)
#: The comparison sketches, built from the model's statistics at the model's K and seed.
BASELINES = ("asymmetric", "gaussian")
#: Largest gap (rows) bridged by one read when gathering rows of a .npy source.
_NPY_GAP = 64
#: Two-sided level of the per-pair t-tests of ``seeds``.
ALPHA = 0.01
BIAS_NOTE = ("bias z = mean error / its standard error over the sampled pairs, for this one "
             "model (one draw of its random matrix): it tests whether this model's errors "
             "average out over such pairs, not whether the method is unbiased; for that, "
             "rebuild over seeds (--seeds N)")


# ---------------------------------------------------------------------------------------
# numpy parts


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


def _quantiles(values: np.ndarray) -> dict[str, float]:
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
               "rel_error_quantiles": _quantiles(rel)}
        if scale is not None:
            s = np.asarray(scale, dtype=np.float64)
            out["norm_error_quantiles"] = _quantiles(np.where(err == 0, 0.0, np.abs(err) / s))
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


def _pair_dots(a: np.ndarray, ia: np.ndarray, b: np.ndarray, ib: np.ndarray,
               chunk: int = 8192) -> np.ndarray:
    """a[ia[i]] · b[ib[i]] for every i, in float64, a chunk of pairs at a time."""
    out = np.empty(len(ia))
    for s in range(0, len(ia), chunk):
        out[s:s + chunk] = np.einsum("ij,ij->i", a[ia[s:s + chunk]].astype(np.float64),
                                     b[ib[s:s + chunk]].astype(np.float64))
    return out


# ---------------------------------------------------------------------------------------
# the plan


@dataclass(frozen=True)
class EvaluatePlan:
    """A validated ``evaluate`` job (see ``plan_evaluate``); ``print`` it to inspect it."""

    model: SketchModel
    model_path: str
    x: Source
    w: Source
    pairs: int
    seed: int
    top: int | None
    queries: int
    seeds: int
    block_rows: int

    def __str__(self) -> str:
        m = self.model
        lines = ["ddrp evaluate plan",
                 f"model: {self.model_path} (method={m.method}, K={m.k}, seed={m.seed})",
                 "inputs:", f"  x: {self.x.describe()}", f"  w: {self.w.describe()}",
                 "passes:",
                 f"  read the rows of {self.pairs} sampled pairs (seed {self.seed}): one task "
                 f"per block of {self.block_rows} rows holding a sampled row",
                 f"  compare {m.method} with {', '.join(BASELINES)} at K={m.k} (built from the "
                 "model's statistics)"]
        if self.top is not None:
            lines.append(f"  recall@{self.top} for {self.queries} x rows: score them against "
                         f"all {self.w.n_rows} W rows, block by block")
        if self.seeds:
            lines.append(f"  unbiasedness over {self.seeds} seeds of {m.method}")
        lines.append("outputs: a report (and --json)")
        return "\n".join(lines)


def plan_evaluate(model: str, x: str, w: str, pairs: int = 10000, seed: int = 0,
                  top: int | None = None, queries: int = 100, seeds: int = 0,
                  x_columns: str | list[str] | None = None,
                  w_columns: str | list[str] | None = None,
                  block_rows: int | None = None) -> EvaluatePlan:
    """Plan ``evaluate``: check the model and the sources; read nothing but metadata.

    Parameters
    ----------
    model : str
        A saved model (``fit``'s output or ``RUN/model``) holding its statistics.
    x, w : str
        The sources to sample rows from (any format ``open_source`` reads).
    pairs : int, default=10000
        Sampled (x, w) pairs, uniform with replacement.
    seed : int, default=0
        Seed of the sampling.
    top : int, optional
        N of recall@N; scores ``queries`` x rows against every W row.
    queries : int, default=100
        x rows used for recall@N (at most n).
    seeds : int, default=0
        With S ≥ 2, rebuild the model's method with seeds 0..S−1 and test its unbiasedness.
    x_columns, w_columns : str or list of str, optional
        Parquet vector columns.
    block_rows : int, optional
        Rows per read block; default from d (``default_block_rows``).
    """
    from .plan import _block_rows, _check_same_d, _check_seed

    fitted = load_model(model)
    if fitted.stats_x is None or fitted.stats_w is None:
        raise ModelError(f"{model}: the model holds no statistics (saved by an older ddrp); "
                         "fit it again to evaluate it")
    sx, sw = open_source(x, x_columns), open_source(w, w_columns)
    _check_same_d(sx, sw)
    if sx.d != fitted.d:
        raise OptionError(f"got d={sx.d} for --x ({x}) but the model {model} was fitted for "
                          f"d={fitted.d}")
    if int(pairs) < 2:
        raise OptionError(f"--pairs must be at least 2, got {pairs}")
    if top is not None and not 1 <= int(top) <= sw.n_rows:
        raise OptionError(f"--top must be between 1 and the {sw.n_rows} rows of --w, got {top}")
    if not 1 <= int(queries):
        raise OptionError(f"--queries must be at least 1, got {queries}")
    if int(seeds) == 1 or int(seeds) < 0:
        raise OptionError(f"--seeds must be 0 (off) or at least 2, got {seeds}")
    return EvaluatePlan(fitted, str(model), sx, sw, int(pairs), _check_seed(seed),
                        None if top is None else int(top), min(int(queries), sx.n_rows),
                        int(seeds), _block_rows(block_rows, sx.d))


# ---------------------------------------------------------------------------------------
# tasks


def _runs(idx: np.ndarray, max_gap: int | None) -> list[tuple[int, int]]:
    """Row ranges covering the sorted ``idx``, bridging gaps of at most ``max_gap`` rows
    (all of them for None)."""
    if max_gap is None:
        return [(int(idx[0]), int(idx[-1]) + 1)]
    cuts = np.flatnonzero(np.diff(idx) > max_gap + 1) + 1
    return [(int(part[0]), int(part[-1]) + 1) for part in np.split(idx, cuts)]


def _gather_task(src: Source, idx: np.ndarray, flag: str) -> np.ndarray:
    """Rows ``idx`` (sorted, distinct, within one block) of ``src``. A .npy file is read run
    by run; other formats decode whole chunks or row groups anyway, so the range is read once."""
    with threadpool_limits(limits=1):
        parts = []
        for start, stop in _runs(idx, _NPY_GAP if src.kind == "npy" else None):
            block = src.read_rows(start, stop)
            check_finite(block, f"{flag} {src.path}", start)
            mine = idx[(idx >= start) & (idx < stop)]
            parts.append(block[mine - start])
        return np.concatenate(parts)


def _gather_graph(src: Source, rows: np.ndarray, block_rows: int, flag: str) -> list[Any]:
    """One task per block holding a wanted row; their results, in order, are ``src[rows]``."""
    blocks = rows // block_rows
    cuts = np.flatnonzero(np.diff(blocks)) + 1
    return [dask.delayed(_gather_task, pure=True)(src, part, flag)
            for part in np.split(rows, cuts)]


def _scores_task(src: Source, start: int, stop: int, queries: Any, sketches: dict[str, Any],
                 maps: dict[str, SideMap], n: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Top-n W rows of this block for the query rows: exactly, and by each method's sketch."""
    with threadpool_limits(limits=1):
        block = src.read_rows(start, stop)
        check_finite(block, f"--w {src.path}", start)
        out = {"exact": top_n_products(queries, block, n, offset=start)}
        for name, side_map in maps.items():
            t = project_block(block, side_map, f"--w {src.path}", start)
            out[name] = top_n_products(sketches[name], t, n, offset=start)
        return out


def _merge_named(parts: Sequence[dict[str, tuple[np.ndarray, np.ndarray]]],
                 n: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    return {key: merge_top_n([p[key] for p in parts], n) for key in parts[0]}


# ---------------------------------------------------------------------------------------
# running


def _models(model: SketchModel) -> dict[str, SketchModel]:
    """The model, then the baselines of the same K and seed from its statistics."""
    assert model.stats_x is not None and model.stats_w is not None
    shrinkage = model.provenance.get("shrinkage", "oas")
    out = {model.method: model}
    for method in BASELINES:
        if method not in out:
            out[method] = build(model.stats_x, model.stats_w, model.k, method, model.seed,
                                shrinkage)
    return out


def _read_rows(plan: EvaluatePlan, wanted: dict[str, np.ndarray], scheduler: Any,
               progress: bool) -> dict[str, np.ndarray]:
    """Pass 1: the wanted rows (sorted, distinct) of each side, in one compute."""

    srcs = {"x": plan.x, "w": plan.w}
    graphs = [_gather_graph(srcs[side], rows, plan.block_rows, f"--{side}")
              for side, rows in wanted.items()]
    results = compute([g for gs in graphs for g in gs], scheduler, progress,
                       "evaluate: reading sampled rows")
    out, i = {}, 0
    for side, gs in zip(wanted, graphs, strict=True):
        out[side] = np.concatenate(results[i:i + len(gs)])
        i += len(gs)
    return out


def _recall(plan: EvaluatePlan, models: dict[str, SketchModel], queries: np.ndarray,
            scheduler: Any, progress: bool) -> dict[str, float]:
    """Pass 2: recall@N of every method for the query rows, over all W blocks."""

    assert plan.top is not None
    q = dask.delayed(queries.astype(np.float64), pure=True)
    sketches = dask.delayed({name: project_block(queries, m.x) for name, m in models.items()},
                            pure=True)
    maps = dask.delayed({name: m.w for name, m in models.items()}, pure=True)
    n, rows = plan.w.n_rows, plan.block_rows
    leaves = [dask.delayed(_scores_task, pure=True)(plan.w, s, min(s + rows, n), q, sketches,
                                                    maps, plan.top)
              for s in range(0, n, rows)]
    (best,) = compute([tree_reduce(leaves, _merge_named, plan.top)], scheduler, progress,
                       "evaluate: top-N over W")
    return {name: recall_at_n(best["exact"][0], best[name][0]) for name in models}


def _over_seeds(plan: EvaluatePlan, xs: np.ndarray, ws: np.ndarray,
                exact: np.ndarray) -> dict[str, Any]:
    """Rebuild the model's method with seeds 0..S−1: the mean error over seeds, tested."""
    from scipy import stats as sps

    m = plan.model
    assert m.stats_x is not None and m.stats_w is not None
    shrinkage = m.provenance.get("shrinkage", "oas")
    errors = np.empty((plan.seeds, len(exact)))
    for s in range(plan.seeds):
        rebuilt = build(m.stats_x, m.stats_w, m.k, m.method, s, shrinkage)
        est = np.einsum("ij,ij->i", project_block(xs, rebuilt.x).astype(np.float64),
                        project_block(ws, rebuilt.w).astype(np.float64))
        errors[s] = est - exact
    per_seed = errors.mean(axis=1)
    se = float(per_seed.std(ddof=1) / np.sqrt(plan.seeds))
    mean = float(per_seed.mean())
    pair_mean = errors.mean(axis=0)
    pair_se = errors.std(axis=0, ddof=1) / np.sqrt(plan.seeds)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(pair_mean == 0, 0.0, np.abs(pair_mean) / pair_se)
    crit = float(sps.t.ppf(1 - ALPHA / 2, plan.seeds - 1))
    return {"seeds": plan.seeds, "mean_error": mean, "se": se,
            "z": mean / se if se > 0 else (0.0 if mean == 0 else float(np.inf)),
            "pair_reject_rate": float(np.mean(t > crit)), "expected_reject_rate": ALPHA,
            "note": f"per pair: t-test of mean error over seeds = 0 at level {ALPHA}; an "
                    f"unbiased method rejects about {ALPHA:.0%} of pairs"}


def evaluate_model(plan: EvaluatePlan, scheduler: Any = None,
                   progress: bool = False) -> dict[str, Any]:
    """Run an ``EvaluatePlan``: sample, read, compare; returns the JSON-ready report.

    Parameters
    ----------
    plan : EvaluatePlan
    scheduler : str, distributed.Client or None, default=None
        As for ``ddrp_dask.execute``.
    progress : bool, default=False

    Returns
    -------
    dict
        ``mse``, ``rel_mse``, ``mean_error``, ``bias_z``, ``rel_error_quantiles``, ... of the
        model; ``gaussian_mse``, ``asymmetric_mse``; ``gain`` (gaussian_mse / mse) and
        ``predicted_gain``; ``predicted``: the build's MSE of each method; ``methods``: the
        full summary of each method; with ``top``, ``recall_at_n`` (also per method in
        ``methods``); with ``seeds``, ``over_seeds``.
    """
    m = plan.model
    ix, iw = sample_pairs(plan.x.n_rows, plan.w.n_rows, plan.pairs, plan.seed)
    queries = sample_queries(plan.x.n_rows, plan.queries, plan.seed) if plan.top else ix[:0]
    ux, uw = np.unique(np.concatenate([ix, queries])), np.unique(iw)
    rows = _read_rows(plan, {"x": ux, "w": uw}, scheduler, progress)
    px, pw = np.searchsorted(ux, ix), np.searchsorted(uw, iw)
    xs, ws = rows["x"][px], rows["w"][pw]
    exact = np.einsum("ij,ij->i", xs.astype(np.float64), ws.astype(np.float64))
    scale = (np.linalg.norm(xs.astype(np.float64), axis=1) *
             np.linalg.norm(ws.astype(np.float64), axis=1))
    with threadpool_limits(limits=1):
        models = _models(m)
    predicted = dict(m.info.get("predicted", {}))
    methods: dict[str, dict[str, Any]] = {}
    for name, model in models.items():
        sx = project_block(rows["x"], model.x, "--x")
        sw = project_block(rows["w"], model.w, "--w")
        methods[name] = error_summary(exact, _pair_dots(sx, px, sw, pw), scale)
        methods[name]["predicted_mse"] = predicted.get(name, model.info["predicted"][name])
    result: dict[str, Any] = {"model": plan.model_path, "method": m.method, "k": m.k, "d": m.d,
                              "model_seed": m.seed, "pairs": plan.pairs, "seed": plan.seed,
                              "exact_mean_square": float(np.mean(exact**2))}
    result.update({key: value for key, value in methods[m.method].items()})
    for name in BASELINES:
        result[f"{name}_mse"] = methods[name]["mse"]
    mse = methods[m.method]["mse"]
    result["gain"] = methods["gaussian"]["mse"] / mse if mse > 0 else float("inf")
    result["predicted_gain"] = m.info.get("gain")
    result["predicted"] = {name: methods[name]["predicted_mse"] for name in methods}
    result["methods"] = methods
    result["bias_test"] = BIAS_NOTE
    if plan.top:
        recall = _recall(plan, models, rows["x"][np.searchsorted(ux, queries)], scheduler,
                         progress)
        result.update({"top": plan.top, "queries": len(queries),
                       "recall_at_n": recall[m.method]})
        for name in models:
            methods[name]["recall_at_n"] = recall[name]
    if plan.seeds:
        with threadpool_limits(limits=1):
            result["over_seeds"] = _over_seeds(plan, xs, ws, exact)
    return result


def format_evaluation(result: dict[str, Any]) -> str:
    """The report of ``evaluate_model`` as a table, with the notes a reader needs."""
    qs = "/".join(str(q) for q in QUANTILES)
    lines = [f"evaluate {result['model']}: method {result['method']}, K={result['k']}, "
             f"{result['pairs']} sampled pairs (seed {result['seed']}), "
             f"mean (x.w)^2 = {result['exact_mean_square']:.4g}",
             f"  {'method':<11} {'MSE':>10} {'predicted':>10} {'rel MSE':>9} "
             f"{'rel err ' + qs + '%':>28} {'bias z':>7}"
             + (f" {'recall@' + str(result['top']):>10}" if result.get("top") else "")]
    for name, s in result["methods"].items():
        q = " ".join(f"{v:.3g}" for v in s["rel_error_quantiles"].values())
        rec = f" {s['recall_at_n']:>10.3f}" if "recall_at_n" in s else ""
        lines.append(f"  {name:<11} {s['mse']:>10.4g} {s['predicted_mse']:>10.4g} "
                     f"{s['rel_mse']:>9.3g} {q:>28} {s['bias_z']:>7.2f}{rec}")
    pg = result.get("predicted_gain")
    lines.append(f"  gain over gaussian: measured {result['gain']:.3g}x, predicted "
                 f"{pg:.3g}x" if pg is not None else
                 f"  gain over gaussian: measured {result['gain']:.3g}x")
    if result.get("top"):
        lines.append(f"  recall@{result['top']}: share of the exact top {result['top']} W rows "
                     f"found by the estimated top {result['top']}, over {result['queries']} "
                     "sampled x rows")
    lines.append("  rel err: |estimate - x.w| / |x.w| (large where x.w is near 0); "
                 "predicted: the build's pair-averaged MSE over the fitted rows")
    lines.append(f"  note: {BIAS_NOTE}")
    seeds = result.get("over_seeds")
    if seeds:
        lines.append(f"  over {seeds['seeds']} seeds of {result['method']}: mean error "
                     f"{seeds['mean_error']:.3g} (z = {seeds['z']:.2f}); pairs rejecting "
                     f"'unbiased' at level {seeds['expected_reject_rate']}: "
                     f"{seeds['pair_reject_rate']:.1%}")
    return "\n".join(lines)
