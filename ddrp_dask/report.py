"""The reports a user reads: the build report (to choose K before projecting anything),
``ddrp plan``'s table and ``ddrp evaluate``'s measurements, as text."""

from __future__ import annotations

from typing import Any

import numpy as np

from .maths.metrics import QUANTILES
from .maths.model import SketchModel
from .options import not_smaller_than_raw

__all__ = ["BIAS_NOTE", "format_evaluation", "format_k_table", "format_report", "report_dict"]

BIAS_NOTE = ("bias z = mean error / its standard error over the sampled pairs, for this one "
             "model (one draw of its random matrix): it tests whether this model's errors "
             "average out over such pairs, not whether the method is unbiased; for that, "
             "rebuild over seeds (--seeds N)")


def report_dict(model: SketchModel) -> dict[str, object]:
    """The report's facts: method, K, r, shrinkage, σ, predicted MSEs and gain."""
    info = model.info
    predicted = dict(info.get("predicted", {}))
    return {
        "method": model.method,
        "k": model.k,
        "d": model.d,
        "seed": model.seed,
        "r": info.get("r"),
        "k_tail": info.get("k_tail"),
        "n_x": info.get("n_x"),
        "n_w": info.get("n_w"),
        "shrinkage_x": info.get("shrinkage_x"),
        "shrinkage_w": info.get("shrinkage_w"),
        "sigma": list(np.asarray(info.get("sigma", []), dtype=float)),
        "predicted_mse": predicted,
        "predicted_gain": info.get("gain"),
    }


def format_report(model: SketchModel, top: int = 8) -> str:
    """Human-readable report (DESIGN §4): σ, r, predicted MSE of this sketch, of the paper's
    and of the Gaussian one at the same K, and the predicted gain."""
    rep = report_dict(model)
    lines = [f"method {model.method}, K={model.k} stored columns, d={model.d}, seed={model.seed}"]
    if rep["r"] is not None:
        lines.append(f"  columns: {rep['r']} exact head + {rep['k_tail']} orthogonal tail + 2 "
                     "exact mean")
    lines.append(f"  rows fitted: x {rep['n_x']}, w {rep['n_w']}")
    if rep["shrinkage_x"] is not None:
        lines.append(f"  shrinkage (OAS or given): x {rep['shrinkage_x']:.3g}, "
                     f"w {rep['shrinkage_w']:.3g}")
    sigma = rep["sigma"]
    assert isinstance(sigma, list)
    if sigma:
        shown = ", ".join(f"{s:.3g}" for s in sigma[:top])
        more = f", ... ({len(sigma)} in all)" if len(sigma) > top else ""
        lines.append(f"  sigma: {shown}{more}")
    lines.append("  predicted MSE of x.w, averaged over pairs of fitted rows:")
    predicted = rep["predicted_mse"]
    assert isinstance(predicted, dict)
    for name in dict.fromkeys([model.method, "asymmetric", "gaussian"]):
        lines.append(f"    {name:<12} {predicted[name]:.4g}")
    gain = rep["predicted_gain"]
    lines.append(f"  predicted gain over gaussian: {gain:.3g}x")
    if model.method == "truncated":
        lines.append("  note: truncated is BIASED (no tail); its MSE is squared bias on rows like "
                     "the fitted ones, with no guarantee for others")
    return "\n".join(lines)


def format_k_table(report: dict[str, Any]) -> str:
    """``choose_k``'s table (rows K, columns methods) and the smallest K's, as text."""
    rel = report["table"]["rel_mse"]
    methods = list(rel)
    lines = [f"d={report['d']}, rows: x {report['n_x']}, w {report['n_w']}; "
             f"E(x.w)^2 over pairs = {report['energy']:.4g}",
             "predicted relative MSE of x.w (MSE / E(x.w)^2, averaged over pairs of the "
             "rows' statistics; '-': K invalid for the method)",
             f"{'K':>8} " + " ".join(f"{m:>11}" for m in methods)]
    for i, k in enumerate(report["table"]["k"]):
        cells = ["-" if not np.isfinite(rel[m][i]) else f"{rel[m][i]:.4g}" for m in methods]
        lines.append(f"{k:>8} " + " ".join(f"{c:>11}" for c in cells))
    lines.append(f"smallest K with predicted relative MSE <= {report['target_rel_mse']:g}:")
    for m, k in report["min_k"].items():
        notes = ["biased: its error is squared bias, not variance"] if m == "truncated" else []
        if not_smaller_than_raw(k, report["d"]):
            notes.append(f"K ≥ d={report['d']}: storing the raw vectors is as small")
        note = f"  ({'; '.join(notes)})" if notes else ""
        lines.append(f"  {m:<11} K = {k}{note}")
    return "\n".join(lines)


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
