"""A byte budget per row: the K and storage layout of ``auto`` with the smallest predicted
MSE at B bytes per row, the rounding variance included (``docs/quantized.md`` §6). Pure
numpy."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .allocation import Alloc, systematic
from .crossfit import AutoPredictor
from .model import SketchModel
from .quantize import LAYOUTS, Layout, layout_facts, quantized_model, rounding_mse
from .shrinkage import Shrinkage
from .stats import Moments, combine_all

__all__ = ["BudgetOption", "budget_curve", "budget_options", "budgeted_model", "choose_budget",
           "layout_at", "stored_energies"]


@dataclass(frozen=True)
class BudgetOption:
    """One layout at a budget: the widest K that fits, its predicted MSEs."""

    layout: Layout
    sketch_mse: float
    rounding_mse: float

    @property
    def mse(self) -> float:
        return self.sketch_mse + self.rounding_mse

    def facts(self, energy: float) -> dict[str, Any]:
        """JSON form, with the relative MSE for E(x·w)² = ``energy``."""
        return {**layout_facts(self.layout), "predicted_mse": self.mse,
                "predicted_sketch_mse": self.sketch_mse,
                "predicted_rounding_mse": self.rounding_mse,
                "predicted_rel_mse": self.mse / energy if energy > 0 else 0.0,
                "predicted_rounding_rel_mse": self.rounding_mse / energy if energy > 0 else 0.0}


def stored_energies(alloc: Alloc, alpha: np.ndarray, beta: np.ndarray,
                    k: int) -> tuple[np.ndarray, np.ndarray]:
    """Second moments of the K stored columns of ``auto`` with allocation ``alloc``, on each
    side, from the balanced coordinates' (``alpha``, ``beta``): a head column keeps its
    coordinate's; a sampled one stores a_i/√π_i (a representative sample, offset 0.5); each
    of the ``width`` tail columns carries Σ_{i ≥ j} α_i / width (a Haar tail with
    E RᵀR = I); columns beyond d are zero."""
    head = np.flatnonzero(alloc.pi >= 1.0)
    chosen, p = systematic(alloc.pi, 0.5)
    out = []
    for e in (alpha, beta):
        tail = np.full(alloc.width, float(np.sum(e[alloc.j:])) / max(alloc.width, 1))
        cols = np.concatenate([e[head], e[chosen] / p, tail])
        out.append(np.concatenate([cols, np.zeros(max(k - cols.size, 0))])[:k])
    return out[0], out[1]


def layout_at(name: str, budget: int, d: int, head_of: Any) -> Layout | None:
    """The widest layout ``name`` within ``budget`` bytes per row (K ≤ d: from K = d the
    sketch is exact), its scale codes counted (``Layout.bytes_per_row``); ``head_of(k)`` is
    the exact head of K columns (the mixed layouts' float16 part). None when not even one
    column fits."""
    for k in range(min(budget, d), 0, -1):
        layout = Layout.of(name, k, min(int(head_of(k)), k))
        if layout.is_mixed and not (layout.wide and layout.narrow):
            continue
        if layout.bytes_per_row <= budget:
            return layout
    return None


def budget_options(predictor: AutoPredictor, budget: int,
                   names: Sequence[str] = LAYOUTS) -> list[BudgetOption]:
    """Every layout of ``names`` at ``budget`` bytes per row, with its predicted MSEs."""
    alpha, beta = predictor.coordinate_energies
    d = predictor.d
    out = []
    for name in names:
        layout = layout_at(name, budget, d, lambda k: predictor.allocation(k).head)
        if layout is None:
            continue
        ex, ew = stored_energies(predictor.allocation(layout.k), alpha, beta, layout.k)
        out.append(BudgetOption(layout, predictor.mse(layout.k), rounding_mse(ex, ew, layout)))
    return out


def choose_budget(folds_x: Sequence[Moments], folds_w: Sequence[Moments], budget: int,
                  shrinkage: Shrinkage = "auto", dtype: str | None = None
                  ) -> tuple[BudgetOption, list[BudgetOption]]:
    """The option of smallest predicted MSE at ``budget`` bytes per row (only ``dtype``'s
    when given), and every option considered. float32 is always among them when it fits
    (B ≥ 4), so the choice is never predicted worse than float32 at the same bytes."""
    predictor = AutoPredictor(folds_x, folds_w, shrinkage)
    options = budget_options(predictor, budget, [dtype] if dtype else LAYOUTS)
    if not options:
        raise ValueError(f"no layout fits {budget} bytes per row")
    return min(options, key=lambda o: (o.mse, -o.layout.bytes_per_row)), options


def budgeted_model(model: SketchModel, budget: int, chosen: BudgetOption,
                   options: Sequence[BudgetOption]) -> SketchModel:
    """``model`` (built at the chosen K) stored in the chosen layout, with
    ``info["budget"]``: the budget, the choice and every option's predicted MSEs."""
    out = quantized_model(model, chosen.layout.name, chosen.layout.head)
    energy = float(model.info.get("expected_square") or 0.0)
    out.info["budget"] = {"bytes_per_row": budget, "chosen": chosen.facts(energy),
                          "options": [o.facts(energy) for o in options]}
    return out


def budget_curve(folds_x: Sequence[Moments], folds_w: Sequence[Moments], budget: int,
                 shrinkage: Shrinkage = "auto") -> dict[str, Any]:
    """``ddrp plan --bytes-per-row B``: the predicted relative MSE of every layout at byte
    budgets around B (B/4 … 4B and B), and the choice at B."""
    predictor = AutoPredictor(folds_x, folds_w, shrinkage)
    mx, mw = (combine_all(folds_x), combine_all(folds_w))
    energy = float(np.sum(mx.second_moment * mw.second_moment))
    budgets = sorted({max(4, round(budget * f)) for f in (0.25, 0.5, 0.75, 1, 1.5, 2, 4)})
    curve: dict[str, list[float | None]] = {name: [] for name in LAYOUTS}
    ks: dict[str, list[int | None]] = {name: [] for name in LAYOUTS}
    chosen: dict[str, Any] = {}
    for b in budgets:
        options = {o.layout.name: o for o in budget_options(predictor, b)}
        for name in LAYOUTS:
            o = options.get(name)
            curve[name].append(None if o is None else o.mse / energy if energy > 0 else 0.0)
            ks[name].append(None if o is None else o.layout.k)
        if b == budget:
            best = min(options.values(), key=lambda o: (o.mse, -o.layout.bytes_per_row))
            chosen = best.facts(energy)
    return {"bytes_per_row": budget, "budgets": budgets, "rel_mse": curve, "k": ks,
            "chosen": chosen}
