"""``ddrp plan``: pass 1 alone, then the predicted MSE against K of every method and the
smallest K meeting a target (``maths.choose.choose_k``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from ..graph.progress import step_line
from ..graph.scheduler import Scheduler
from ..io.registry import open_source
from ..maths.budget import budget_curve
from ..maths.choose import choose_k
from ..maths.folds import folds_for
from ..maths.methods import fold_count
from ..maths.stats import Moments, combine_all
from ..options import ChooseOptions, PassOptions, check_same_d
from .base import OnModel, SourcePlan

__all__ = ["ChoosePlan", "StatsPlan", "plan_choose", "plan_stats"]


@dataclass(frozen=True)
class StatsPlan(SourcePlan[dict[str, Moments]]):
    """Pass 1 alone: the statistics of both sources (``execute`` returns them)."""

    command: ClassVar[str] = "stats"

    @property
    def passes(self) -> list[str]:
        return [f"pass 1: statistics of {' and '.join(self.sources)}{self.stats_text()}"]

    @property
    def outputs(self) -> list[str]:
        return ["(none: statistics are returned to the caller)"]

    def _run(self, scheduler: Scheduler, progress: bool,
             on_model: OnModel | None) -> dict[str, Moments]:
        """Pass 1: ``{"x": Moments, "w": Moments}``."""
        return self.statistics(scheduler, progress)


@dataclass(frozen=True)
class ChoosePlan(SourcePlan[dict[str, Any]]):
    """``ddrp plan``: pass 1, then ``choose_k`` for a target relative MSE; ``execute``
    returns ``choose_k``'s report."""

    command: ClassVar[str] = "plan"

    options: ChooseOptions
    extra: list[str] = field(default_factory=list)

    @property
    def target_rel_mse(self) -> float:
        """The target relative MSE."""
        return self.options.target_rel_mse

    @property
    def methods(self) -> tuple[str, ...]:
        """The methods compared."""
        return self.options.methods

    @property
    def passes(self) -> list[str]:
        return [f"pass 1: statistics of {' and '.join(self.sources)}{self.stats_text()}",
                f"then: predicted MSE against K for {', '.join(self.methods)} "
                "(driver, no pass)"]

    @property
    def outputs(self) -> list[str]:
        return ["a table on stdout", *self.extra]

    def _run(self, scheduler: Scheduler, progress: bool,
             on_model: OnModel | None) -> dict[str, Any]:
        """Pass 1 (per fold when a compared method cross-fits, so its predictions are
        out of sample) and the choice: ``choose_k``'s report (its progress line drawn with
        ``progress``)."""
        opts = self.options
        n_folds = max(fold_count(m, self.d) for m in self.methods)
        if opts.bytes_per_row is not None:  # the budget's curve is cross-fitted too
            n_folds = folds_for(self.d)
        if n_folds == 1:
            stats = self.statistics(scheduler, progress)
            folds = ([stats["x"]], [stats["w"]])
        else:
            by_fold = self.statistics(scheduler, progress, n_folds)
            folds = (by_fold["x"], by_fold["w"])
        with step_line(progress, f"predicted MSE against K (d={self.d})") as line:
            if line is not None:
                line(", ".join(self.methods))
            if n_folds == 1:
                report = choose_k(folds[0][0], folds[1][0], self.target_rel_mse,
                                  list(self.methods), opts.shrinkage)
            else:
                report = choose_k(combine_all(folds[0]), combine_all(folds[1]),
                                  self.target_rel_mse, list(self.methods), opts.shrinkage,
                                  folds)
            if opts.bytes_per_row is not None:  # auto's curve per storage layout
                if line is not None:
                    line("the budget's layouts")
                report["bytes"] = budget_curve(folds[0], folds[1], opts.bytes_per_row,
                                               opts.shrinkage)
        return report


def _open_both(x: str, w: str, x_columns: str | list[str] | None,
               w_columns: str | list[str] | None) -> dict[str, Any]:
    sx, sw = open_source(x, x_columns), open_source(w, w_columns)
    check_same_d(sx.d, sw.d, f"--x ({sx.path})", f"--w ({sw.path})")
    return {"x": sx, "w": sw}


def plan_stats(x: str, w: str, x_columns: str | list[str] | None = None,
               w_columns: str | list[str] | None = None, block_rows: int | None = None,
               stats_fraction: float | str = "auto", seed: int = 0) -> StatsPlan:
    """Plan pass 1 alone (``plan.execute()`` returns ``{"x": Moments, "w": Moments}``): the
    statistics of both sources, for choosing K or method before fitting. Writes nothing.
    ``stats_fraction`` and ``seed`` choose the blocks read, as for ``plan_fit``."""
    sources = _open_both(x, w, x_columns, w_columns)
    return StatsPlan(sources, PassOptions.check(sources["x"].d, block_rows, seed,
                                                stats_fraction))


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
    sources = _open_both(x, w, x_columns, w_columns)
    options = ChooseOptions.check(sources["x"].d, block_rows, seed, stats_fraction,
                                  target_rel_mse=target_rel_mse, methods=methods,
                                  shrinkage=shrinkage, bytes_per_row=bytes_per_row)
    return ChoosePlan(sources, options, extra=list(outputs or []))
