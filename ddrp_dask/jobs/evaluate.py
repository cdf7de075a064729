"""Measure a fitted model on the data: sampled pairs, exact against estimated inner products.

``evaluate_model`` samples pairs of rows (seeded), reads only the blocks holding sampled rows (one
task per block; each task opens its source itself), and compares the exact x·w with the
estimates of the model, of a ``gaussian`` and of an ``asymmetric`` sketch of the same K built
from the statistics stored in the model, beside the MSEs the build predicted. With ``top`` it
also measures recall@N of top-N search for a sample of x rows, in a second pass that scores
them against every W row block by block.

About bias: a model is one draw of its random matrix, so its errors on the sampled pairs are
correlated through that draw, and their mean over pairs tests nothing about bias; none is
reported from one model. The unbiasedness of a *method* (the mean over seeds is x·w for every
pair) is tested with ``seeds``: the method is rebuilt from the stored statistics with seeds
0..S−1 (and stored in the model's layout, its rounding dithered by each seed) and one
contrast of each seed's errors is t-tested across seeds (``maths.metrics.seed_test``).

A model with a quantized layout (``docs/quantized.md``) is measured on the values its codes
stand for: the sampled rows' sketches are encoded as ``run`` would store them (dither keyed by
each row's global index) and decoded; the baselines are float32 at the same K. recall@N is
measured with float32 sketches for every method.

The numpy parts (``sample_pairs``, ``error_summary``, ``recall_at_n``) need no cluster.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from ..errors import ModelError, OptionError
from ..graph.scheduler import Scheduler, SchedulerLike
from ..graph.tiles import gather_rows, top_n_by_method
from ..io.model_store import load_model
from ..io.registry import open_source
from ..io.source import Source
from ..maths.blas import one_blas_thread
from ..maths.build import build
from ..maths.methods import BASELINE, REFERENCES, get
from ..maths.metrics import (
    error_summary,
    pair_dots,
    recall_at_n,
    sample_pairs,
    sample_queries,
    seed_test,
)
from ..maths.model import SketchModel
from ..maths.project import project_block
from ..maths.quantize import Layout, decode, encode, model_layout
from ..options import check_block_rows, check_positive, check_same_d, check_seed, check_top
from ..report import BIAS_NOTE
from .base import OnModel, Plan

__all__ = ["EvaluatePlan", "evaluate", "evaluate_model", "plan_evaluate"]

#: The comparison sketches, built from the model's statistics at the model's K and seed.
BASELINES = REFERENCES


@dataclass(frozen=True)
class EvaluatePlan(Plan[dict[str, Any]]):
    """A validated ``evaluate`` job (see ``plan_evaluate``); ``print`` it to inspect it;
    ``execute`` returns the report (``evaluate``'s docstring below)."""

    command: ClassVar[str] = "evaluate"

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

    def input_bytes(self) -> int:
        """Bytes of both sources' values (the sampled pairs reach most of their blocks; the
        default scheduler's size)."""
        return self.x.nbytes + self.w.nbytes

    def _run(self, scheduler: Scheduler, progress: bool,
             on_model: OnModel | None) -> dict[str, Any]:
        """Sample, read, compare: the report (``evaluate``)."""
        if on_model is not None:
            on_model(self.model)
        return evaluate(self, scheduler, progress)

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
    fitted = load_model(model)
    if fitted.stats_x is None or fitted.stats_w is None:
        raise ModelError(f"{model}: the model holds no statistics (saved by an older ddrp); "
                         "fit it again to evaluate it")
    sx, sw = open_source(x, x_columns), open_source(w, w_columns)
    check_same_d(sx.d, sw.d, f"--x ({sx.path})", f"--w ({sw.path})")
    if sx.d != fitted.d:
        raise OptionError(f"got d={sx.d} for --x ({x}) but the model {model} was fitted for "
                          f"d={fitted.d}")
    if int(pairs) < 2:
        raise OptionError(f"--pairs must be at least 2, got {pairs}")
    top = check_top(top, sw.n_rows, "--w")
    queries = check_positive(queries, "--queries")
    if int(seeds) == 1 or int(seeds) < 0:
        raise OptionError(f"--seeds must be 0 (off) or at least 2, got {seeds}")
    return EvaluatePlan(fitted, str(model), sx, sw, int(pairs), check_seed(seed), top,
                        min(queries, sx.n_rows), int(seeds), check_block_rows(block_rows, sx.d))


# ---------------------------------------------------------------------------------------
# tasks


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


def _recall(plan: EvaluatePlan, models: dict[str, SketchModel], queries: np.ndarray,
            scheduler: Scheduler, progress: bool) -> dict[str, float]:
    """Pass 2: recall@N of every method for the query rows, over all W blocks."""
    assert plan.top is not None
    sketches = {name: project_block(queries, m.x) for name, m in models.items()}
    best = top_n_by_method(plan.w, plan.block_rows, queries.astype(np.float64), sketches,
                           {name: m.w for name, m in models.items()}, plan.top, scheduler,
                           progress)
    return {name: recall_at_n(best["exact"][0], best[name][0]) for name in models}


def _shrinkage_of(model: SketchModel) -> Any:
    """The shrinkage to rebuild ``model``'s method with (``Method.rebuild_shrinkage``: auto's
    chosen pair, else the one the model was fitted with)."""
    return get(model.method).rebuild_shrinkage(model.info,
                                               model.provenance.get("shrinkage", "auto"))


def _stored(sketch: np.ndarray, layout: Layout, seed: int, side: str,
            rows: np.ndarray) -> np.ndarray:
    """The values a stored sketch holds: ``sketch`` itself for float32, else its codes
    (global rows ``rows``, dither keyed by ``seed``) decoded."""
    if layout.name == "float32":
        return sketch
    return decode(encode(sketch, layout, seed, side, rows), layout)


def _over_seeds(plan: EvaluatePlan, xs: np.ndarray, ws: np.ndarray, exact: np.ndarray,
                rows: tuple[np.ndarray, np.ndarray], scale: np.ndarray) -> dict[str, Any]:
    """Rebuild the model's method (in its layout) with seeds 0..S−1: the errors over seeds,
    tested (``seed_test``)."""
    m = plan.model
    assert m.stats_x is not None and m.stats_w is not None
    shrinkage = _shrinkage_of(m)
    layout = model_layout(m)
    errors = np.empty((plan.seeds, len(exact)))
    for s in range(plan.seeds):
        rebuilt = build(m.stats_x, m.stats_w, m.k, m.method, s, shrinkage)
        sx = _stored(project_block(xs, rebuilt.x), layout, s, "x", rows[0])
        sw = _stored(project_block(ws, rebuilt.w), layout, s, "w", rows[1])
        est = np.einsum("ij,ij->i", sx.astype(np.float64), sw.astype(np.float64))
        errors[s] = est - exact
    return seed_test(errors, exact, scale)


def evaluate_model(plan: EvaluatePlan, scheduler: SchedulerLike = None,
                   progress: bool = False) -> dict[str, Any]:
    """Run an ``EvaluatePlan``: the same as ``plan.execute(scheduler, progress)``.

    Parameters
    ----------
    plan : EvaluatePlan
    scheduler : str, distributed.Client, Scheduler or None, default=None
        As for ``Plan.execute``.
    progress : bool, default=False

    Returns
    -------
    dict
        ``mse``, ``rel_mse``, ``mean_error``, ``rel_error_quantiles``, ... of the
        model; ``gaussian_mse``, ``asymmetric_mse``; ``gain`` (gaussian_mse / mse) and
        ``predicted_gain``; ``predicted``: the build's MSE of each method; ``methods``: the
        full summary of each method; with ``top``, ``recall_at_n`` (also per method in
        ``methods``); with ``seeds``, ``over_seeds``.
    """
    return plan.execute(scheduler, progress)


def evaluate(plan: EvaluatePlan, scheduler: Scheduler, progress: bool) -> dict[str, Any]:
    """Sample, read, compare: the JSON-ready report of ``EvaluatePlan.execute`` (see
    ``evaluate_model``)."""
    m = plan.model
    ix, iw = sample_pairs(plan.x.n_rows, plan.w.n_rows, plan.pairs, plan.seed)
    queries = sample_queries(plan.x.n_rows, plan.queries, plan.seed) if plan.top else ix[:0]
    ux, uw = np.unique(np.concatenate([ix, queries])), np.unique(iw)
    rows = gather_rows({"x": (plan.x, ux), "w": (plan.w, uw)}, plan.block_rows, scheduler,
                       progress)
    px, pw = np.searchsorted(ux, ix), np.searchsorted(uw, iw)
    xs, ws = rows["x"][px], rows["w"][pw]
    exact = np.einsum("ij,ij->i", xs.astype(np.float64), ws.astype(np.float64))
    scale = (np.linalg.norm(xs.astype(np.float64), axis=1) *
             np.linalg.norm(ws.astype(np.float64), axis=1))
    with one_blas_thread():
        models = _models(m)
    predicted = dict(m.info.get("predicted", {}))
    methods: dict[str, dict[str, Any]] = {}
    layout = model_layout(m)
    for name, model in models.items():
        sx = project_block(rows["x"], model.x, "--x")
        sw = project_block(rows["w"], model.w, "--w")
        if name == m.method:  # what the model's outputs store
            sx = _stored(sx, layout, m.seed, "x", ux)
            sw = _stored(sw, layout, m.seed, "w", uw)
        methods[name] = error_summary(exact, pair_dots(sx, px, sw, pw), scale)
        methods[name]["predicted_mse"] = predicted.get(name, model.info["predicted"][name])
    result: dict[str, Any] = {"model": plan.model_path, "method": m.method, "k": m.k, "d": m.d,
                              "model_seed": m.seed, "pairs": plan.pairs, "seed": plan.seed,
                              "exact_mean_square": float(np.mean(exact**2))}
    result.update({key: value for key, value in methods[m.method].items()})
    for name in BASELINES:
        result[f"{name}_mse"] = methods[name]["mse"]
    mse = methods[m.method]["mse"]
    result["gain"] = methods[BASELINE]["mse"] / mse if mse > 0 else float("inf")
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
        with one_blas_thread():
            result["over_seeds"] = _over_seeds(plan, xs, ws, exact, (ix, iw), scale)
    return result


