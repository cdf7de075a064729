"""``ddrp plan``: pass 1 alone, then the predicted MSE against K of every method and the
smallest K meeting a target (``maths.choose.choose_k``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from ..graph.progress import step_line
from ..io.registry import open_source
from ..maths.budget import budget_curve
from ..maths.choose import choose_k
from ..maths.folds import folds_for
from ..maths.methods import fold_count
from ..maths.stats import Moments, combine_all
from ..options import (
    check_block_rows,
    check_bytes_per_row,
    check_fraction,
    check_methods,
    check_same_d,
    check_seed,
    check_shrinkage,
    check_target,
)
from .base import Plan
from .fit import compute_folds, compute_moments

__all__ = ["ChoosePlan", "StatsPlan", "plan_choose", "plan_stats"]


@dataclass(frozen=True)
class StatsPlan(Plan):
    """Pass 1 alone: the statistics of both sources (``execute`` returns them)."""

    command: ClassVar[str] = "stats"

    @property
    def passes(self) -> list[str]:
        return [f"pass 1: statistics of {' and '.join(self.sources)}{self.stats_text()}"]

    @property
    def outputs(self) -> list[str]:
        return ["(none: statistics are returned to the caller)"]

    def execute(self, scheduler: Any = None, progress: bool = False) -> dict[str, Moments]:
        """Pass 1: ``{"x": Moments, "w": Moments}``."""
        return compute_moments(self, scheduler, progress)


@dataclass(frozen=True)
class ChoosePlan(StatsPlan):
    """``ddrp plan``: pass 1, then ``choose_k`` for a target relative MSE."""

    command: ClassVar[str] = "plan"

    target_rel_mse: float = 0.01
    methods: tuple[str, ...] = ()
    shrinkage: float | str = "auto"
    extra: list[str] = field(default_factory=list)
    bytes_per_row: int | None = None

    @property
    def passes(self) -> list[str]:
        return [*super().passes, f"then: predicted MSE against K for {', '.join(self.methods)} "
                "(driver, no pass)"]

    @property
    def outputs(self) -> list[str]:
        return ["a table on stdout", *self.extra]

    def choose(self, scheduler: Any = None, progress: bool = False) -> dict[str, Any]:
        """Pass 1 (per fold when ``auto`` is compared, so its predictions are cross-fitted)
        and the choice: ``choose_k``'s report (its progress line drawn with ``progress``)."""
        n_folds = max(fold_count(m, self.d) for m in self.methods)
        if self.bytes_per_row is not None:  # the budget's curve is cross-fitted too
            n_folds = folds_for(self.d)
        if n_folds == 1:
            stats = compute_moments(self, scheduler, progress)
            folds = ([stats["x"]], [stats["w"]])
        else:
            by_fold = compute_folds(self, n_folds, scheduler, progress)
            folds = (by_fold["x"], by_fold["w"])
        with step_line(progress, f"predicted MSE against K (d={self.d})") as line:
            if line is not None:
                line(", ".join(self.methods))
            if n_folds == 1:
                report = choose_k(folds[0][0], folds[1][0], self.target_rel_mse,
                                  list(self.methods), self.shrinkage)
            else:
                report = choose_k(combine_all(folds[0]), combine_all(folds[1]),
                                  self.target_rel_mse, list(self.methods), self.shrinkage,
                                  folds)
            if self.bytes_per_row is not None:  # auto's curve per storage layout
                if line is not None:
                    line("the budget's layouts")
                report["bytes"] = budget_curve(folds[0], folds[1], self.bytes_per_row,
                                               self.shrinkage)
        return report


def plan_stats(x: str, w: str, x_columns: str | list[str] | None = None,
               w_columns: str | list[str] | None = None, block_rows: int | None = None,
               stats_fraction: float | str = "auto", seed: int = 0) -> StatsPlan:
    """Plan pass 1 alone (``compute_moments(plan)``): the statistics of both sources, for
    choosing K or method before fitting. Writes nothing. ``stats_fraction`` and ``seed``
    choose the blocks read, as for ``plan_fit``."""
    sx, sw = open_source(x, x_columns), open_source(w, w_columns)
    check_same_d(sx.d, sw.d, f"--x ({sx.path})", f"--w ({sw.path})")
    return StatsPlan({"x": sx, "w": sw}, check_block_rows(block_rows, sx.d), check_seed(seed),
                     check_fraction(stats_fraction))


def plan_choose(x: str, w: str, target_rel_mse: float = 0.01,
                methods: str | list[str] | None = None, shrinkage: Any = "auto",
                x_columns: str | list[str] | None = None,
                w_columns: str | list[str] | None = None, block_rows: int | None = None,
                stats_fraction: float | str = "auto", seed: int = 0,
                outputs: list[str] | None = None,
                bytes_per_row: int | None = None) -> ChoosePlan:
    """Plan ``ddrp plan``: every option checked before pass 1 (``outputs``: the report
    files the caller writes, for the plan's text; ``bytes_per_row``: also ``auto``'s
    predicted relative MSE per storage layout at byte budgets around it)."""
    from ..options import METHODS

    stats = plan_stats(x, w, x_columns, w_columns, block_rows, stats_fraction, seed)
    return ChoosePlan(stats.sources, stats.block_rows, stats.seed, stats.stats_fraction,
                      target_rel_mse=check_target(target_rel_mse),
                      methods=tuple(check_methods(methods if methods is not None
                                                  else list(METHODS))),
                      shrinkage=check_shrinkage(shrinkage), extra=list(outputs or []),
                      bytes_per_row=check_bytes_per_row(bytes_per_row, None, None, "auto"))
