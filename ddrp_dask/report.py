"""The reports a user reads: the build report (to choose K before projecting anything),
``ddrp plan``'s table and ``ddrp evaluate``'s measurements, as text."""

from __future__ import annotations

from typing import Any

import numpy as np

from .maths.methods import BASELINE, REFERENCES, get
from .maths.metrics import QUANTILES
from .maths.model import SketchModel
from .maths.predict import pair_energy
from .options import not_smaller_than_raw

__all__ = ["BIAS_NOTE", "format_bytes_table", "format_evaluation", "format_k_table",
           "format_report", "report_dict"]

BIAS_NOTE = ("bias is not measured from one model: its estimates all share one draw of its "
             "random matrix, so their mean error over pairs tests nothing about bias; --seeds N "
             "rebuilds the method with N seeds and t-tests one contrast of the errors per seed")


def report_dict(model: SketchModel) -> dict[str, Any]:
    """The build report's facts, JSON-ready (``--report FILE.json``).

    ``predicted_mse`` is the pair-averaged MSE of x·w predicted for this sketch — for
    ``auto`` built from fold statistics, out of sample (cross-fitted: new pairs like the
    data); for the other methods over pairs of the fitted rows (``predicted_mse_kind`` says
    which) — with ``predicted_rel_mse`` = MSE / E(x·w)², ``predicted_mse_gaussian`` at the
    same K, ``predicted_gain`` = gaussian / this, ``allocation`` (head, sampled, tail widths)
    and the shrinkage of each side.
    """
    info = model.info
    predicted = {name: float(v) for name, v in dict(info.get("predicted", {})).items()}
    mse = predicted.get(model.method, float("nan"))
    energy = info.get("expected_square")
    if energy is None and model.stats_x is not None and model.stats_w is not None:
        energy = pair_energy(model.stats_x, model.stats_w)
    method = get(model.method)
    return {
        "method": model.method, "k": model.k, "d": model.d, "seed": model.seed,
        "model": model.digest, "n_x": info.get("n_x"), "n_w": info.get("n_w"),
        "stats_blocks": model.provenance.get("stats_blocks"),
        "predicted_mse": mse,
        "predicted_mse_kind": info.get("predicted_mse_kind", "in-sample: pairs of the fitted "
                                       "rows"),
        "predicted_mse_in_sample": info.get("predicted_mse_in_sample", mse),
        "predicted_rel_mse": mse / energy if energy else None,
        "expected_square": energy,
        "predicted_mse_gaussian": predicted.get(BASELINE),
        "predicted_gain": info.get("gain"),
        "predicted_mse_by_method": predicted,
        "allocation": method.allocation(info),
        "shrinkage_x": info.get("shrinkage_x"), "shrinkage_w": info.get("shrinkage_w"),
        "sigma": [float(v) for v in np.asarray(info.get(method.spectrum, []), dtype=float)],
        "note": info.get("note"),
        **({"layout": info["layout"]} if "layout" in info else {}),
    }


def _shrinkage_text(value: Any) -> str:
    if isinstance(value, dict):
        kind, lam = value.get("kind"), value.get("intensity", 0.0)
        return str(kind) if kind in ("oas", "lw") else f"{kind} {lam:.3g}"
    return f"{value:.3g}" if isinstance(value, int | float) else str(value)


def _sample_text(rep: dict[str, Any]) -> str:
    """Which sources' statistics came from a sample of their blocks ("" when none did)."""
    sampled = [f"{used} of {n} blocks of {side}"
               for side, (used, n) in (rep.get("stats_blocks") or {}).items() if used < n]
    if not sampled:
        return ""
    return f" (statistics from a seeded sample: {', '.join(sampled)})"


def _columns_text(rep: dict[str, Any]) -> str | None:
    a = rep["allocation"]
    return f"  columns: {get(rep['method']).columns_text(a)}" if a else None


def _layout_text(layout: dict[str, Any], k: int) -> str:
    """The storage line of a quantized model's report (``docs/quantized.md``)."""
    name = layout["name"]
    mixed = f"{layout['head']} float16 head + {k - layout['head']} int8 codes"
    parts = {"float16": "float16 codes", "int8": "int8 codes", "mixed": mixed,
             "int8max": "int8 codes", "mixedmax": mixed}[name]
    scales = "per-row scales" + ("; the int8 scale is the row's exact max, a float32"
                                 if name.endswith("max") else "")
    text = (f"  storage: {name} ({parts} + {scales}): {layout['bytes_per_row']} bytes "
            f"per row (float32: {4 * k}); unbiased stochastic rounding")
    if "predicted_rounding_mse" in layout:
        text += (f"; rounding adds {layout['predicted_rounding_mse']:.4g} to the predicted "
                 "(absolute) MSE, included above")
    return text


def _budget_lines(budget: dict[str, Any]) -> list[str]:
    """What ``--bytes-per-row`` chose, against every layout at the same bytes."""
    c = budget["chosen"]
    lines = [f"  byte budget {budget['bytes_per_row']} per row: chose {c['name']} with K={c['k']}"
             f" ({c['bytes_per_row']} bytes), predicted relative MSE "
             f"{c['predicted_rel_mse']:.3g}; the layouts at these bytes:"]
    for o in budget["options"]:
        k = f"K={o['k']}" + (f" ({o['head']} float16)" if o["name"].startswith("mixed")
                             else "")
        lines.append(f"    {o['name']:<8} {k:<20} predicted relative MSE "
                     f"{o['predicted_rel_mse']:.3g}, of which rounding "
                     f"{o['predicted_rounding_rel_mse']:.3g}")
    return lines


def format_report(model: SketchModel, top: int = 8) -> str:
    """Human-readable build report: how the K columns are spent, the predicted error of x·w
    in relative terms (MSE / E(x·w)²) and the gain over a Gaussian sketch of the same K."""
    rep = report_dict(model)
    lines = [f"method {model.method}, K={model.k} stored columns, d={model.d}, seed={model.seed}"]
    columns = _columns_text(rep)
    if columns:
        lines.append(columns)
    lines.append(f"  rows fitted: x {rep['n_x']}, w {rep['n_w']}{_sample_text(rep)}")
    if rep["shrinkage_x"] is not None:
        lines.append(f"  shrinkage: x {_shrinkage_text(rep['shrinkage_x'])}, "
                     f"w {_shrinkage_text(rep['shrinkage_w'])}")
    sigma = rep["sigma"]
    if sigma:
        shown = ", ".join(f"{v:.3g}" for v in sigma[:top])
        more = f", ... ({len(sigma)} in all)" if len(sigma) > top else ""
        lines.append(f"  {get(model.method).spectrum}: {shown}{more}")
    rel = rep["predicted_rel_mse"]
    if rel is not None:
        lines.append(f"  predicted relative MSE of x.w (MSE / E(x.w)^2): {rel:.3g}"
                     f"  (RMS error {np.sqrt(rel):.1%} of the RMS inner product)")
    lines.append(f"    {rep['predicted_mse_kind']}")
    lines.append(f"  predicted gain over gaussian at K={model.k}: {rep['predicted_gain']:.3g}x")
    lines.append("  predicted MSE of x.w by method (absolute):")
    predicted = rep["predicted_mse_by_method"]
    for name in dict.fromkeys([model.method, *REFERENCES]):
        lines.append(f"    {name:<12} {predicted[name]:.4g}")
    if "predicted_mse_in_sample" in model.info and \
            rep["predicted_mse_in_sample"] != rep["predicted_mse"]:  # out of sample (auto)
        lines.append(f"    (in-sample, on the fitted rows: {rep['predicted_mse_in_sample']:.4g})")
    layout = rep.get("layout")
    if layout:
        lines.append(_layout_text(layout, model.k))
    if "budget" in model.info:
        lines += _budget_lines(model.info["budget"])
    note = get(model.method).report_note()
    if note:
        lines.append(f"  note: {note}")
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
        notes = [] if get(m).unbiased else ["biased: its error is squared bias, not variance"]
        if not_smaller_than_raw(k, report["d"]):
            notes.append(f"K ≥ d={report['d']}: storing the raw vectors is as small")
        note = f"  ({'; '.join(notes)})" if notes else ""
        lines.append(f"  {m:<11} K = {k}{note}")
    return "\n".join(lines)


def format_bytes_table(curve: dict[str, Any]) -> str:
    """``ddrp plan --bytes-per-row``: auto's predicted relative MSE per storage layout (and
    its K) at byte budgets per row, and the choice at the budget asked."""
    names = list(curve["rel_mse"])
    lines = ["auto: predicted relative MSE per storage layout at B bytes per row (K in "
             "brackets; docs/quantized.md)",
             f"{'B':>6} " + " ".join(f"{n:>15}" for n in names)]
    for i, b in enumerate(curve["budgets"]):
        cells = ["-" if curve["rel_mse"][n][i] is None else
                 f"{curve['rel_mse'][n][i]:.3g} [{curve['k'][n][i]}]" for n in names]
        lines.append(f"{b:>6} " + " ".join(f"{c:>15}" for c in cells))
    c = curve["chosen"]
    lines.append(f"at {curve['bytes_per_row']} bytes per row: {c['name']} with K={c['k']} "
                 f"(predicted relative MSE {c['predicted_rel_mse']:.3g}); "
                 f"--bytes-per-row {curve['bytes_per_row']} on fit/run chooses it")
    return "\n".join(lines)


def format_evaluation(result: dict[str, Any]) -> str:
    """The report of ``evaluate_model`` as a table, with the notes a reader needs."""
    qs = "/".join(str(q) for q in QUANTILES)
    lines = [f"evaluate {result['model']}: method {result['method']}, K={result['k']}, "
             f"{result['pairs']} sampled pairs (seed {result['seed']}), "
             f"mean (x.w)^2 = {result['exact_mean_square']:.4g}",
             f"  {'method':<11} {'MSE':>10} {'predicted':>10} {'rel MSE':>9} "
             f"{'rel err ' + qs + '%':>28}"
             + (f" {'recall@' + str(result['top']):>10}" if result.get("top") else "")]
    for name, s in result["methods"].items():
        q = " ".join(f"{v:.3g}" for v in s["rel_error_quantiles"].values())
        rec = f" {s['recall_at_n']:>10.3f}" if "recall_at_n" in s else ""
        lines.append(f"  {name:<11} {s['mse']:>10.4g} {s['predicted_mse']:>10.4g} "
                     f"{s['rel_mse']:>9.3g} {q:>28}{rec}")
    pg = result.get("predicted_gain")
    lines.append(f"  gain over gaussian: measured {result['gain']:.3g}x, predicted "
                 f"{pg:.3g}x" if pg is not None else
                 f"  gain over gaussian: measured {result['gain']:.3g}x")
    if result.get("top"):
        lines.append(f"  recall@{result['top']}: share of the exact top {result['top']} W rows "
                     f"found by the estimated top {result['top']}, over {result['queries']} "
                     "sampled x rows")
    lines.append("  rel err: |estimate - x.w| / |x.w| (large where x.w is near 0); "
                 "predicted: the build's pair-averaged MSE (auto: out of sample, new pairs; "
                 "the others: over pairs of the fitted rows)")
    seeds = result.get("over_seeds")
    if seeds:
        lines.append(f"  bias over {seeds['seeds']} seeds of {result['method']}: t = "
                     f"{seeds['t_mean']:.2f} (mean error/(|x||w|)), {seeds['t_signed']:.2f} "
                     f"(signed by x.w), p = {seeds['p_value']:.3g}; pairs rejecting 'unbiased' "
                     f"at level {seeds['expected_reject_rate']}: {seeds['pair_reject_rate']:.1%}")
    else:
        lines.append(f"  note: {BIAS_NOTE}")
    return "\n".join(lines)
