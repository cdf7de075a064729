"""The build report: what a user reads to choose K before projecting anything."""

from __future__ import annotations

import numpy as np

from .model import SketchModel

__all__ = ["format_report", "report_dict"]


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
