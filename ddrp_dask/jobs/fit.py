"""``ddrp fit``: statistics of both sources (pass 1), then the build; the model is saved."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

from ..errors import DdrpError, RunError
from ..graph.passes import moments
from ..graph.progress import step_line
from ..graph.scheduler import Scheduler, SchedulerLike, resolve
from ..io import lifecycle
from ..io.model_store import load_model, save_model
from ..io.partials import PartialSums
from ..io.registry import open_source
from ..maths.budget import budgeted_model, choose_budget
from ..maths.build import build
from ..maths.choose import min_k
from ..maths.methods import fold_count
from ..maths.model import SketchModel
from ..maths.quantize import quantized_model
from ..maths.stats import Moments, combine_all
from ..options import FitOptions, check_same_d, check_strict_chunks
from .base import OnModel, SourcePlan, versions
from .prior import PriorPlan

__all__ = ["FitPlan", "OnModel", "compute_folds", "compute_moments", "fit_model", "open_pair",
           "plan_fit"]


@dataclass(frozen=True)
class FitPlan(SourcePlan[SketchModel]):
    """A validated ``fit`` job (see ``plan_fit``): pass 1, the build, the model saved to
    ``out``."""

    command: ClassVar[str] = "fit"

    options: FitOptions
    out: str = ""
    overwrite: bool = False
    resume: bool = False
    prior: PriorPlan | None = field(default=None, repr=False)

    @property
    def k(self) -> int | None:
        """Stored columns per sketch; None when chosen after pass 1 (a target or a budget)."""
        return self.options.k

    @property
    def method(self) -> str:
        """The projection method."""
        return self.options.method

    @property
    def shrinkage(self) -> float | str:
        """The shrinkage rule or intensity."""
        return self.options.shrinkage

    @property
    def target_rel_mse(self) -> float | None:
        """The target K is chosen for after pass 1, if any."""
        return self.options.target_rel_mse

    @property
    def bytes_per_row(self) -> int | None:
        """The byte budget K and the layout are chosen for after pass 1, if any."""
        return self.options.bytes_per_row

    @property
    def format(self) -> str:
        """The sketches' format (``run``)."""
        return self.options.format

    @property
    def dtype(self) -> str | None:
        """The sketches' storage layout (``docs/quantized.md``); None: the budget's."""
        return self.options.dtype

    def width(self) -> int:
        """K, or when it is chosen after pass 1 the largest it could be (d + 2)."""
        return self.k if self.k is not None else max(self.d + 2, 3)

    @property
    def storage_text(self) -> str:
        """How the sketches are stored, in words."""
        if self.dtype is None:
            return "layout chosen for the byte budget, docs/quantized.md"
        return "float32" if self.dtype == "float32" else \
            f"{self.dtype} codes + float32 per-row scales, docs/quantized.md"

    @property
    def sides(self) -> list[str]:
        """The sides fitted: ``x`` and ``w`` (W comes from the prior when there is one, and
        is opened only when the plan runs)."""
        return [*self.sources, *(["w"] if self.prior is not None else [])]

    @property
    def passes(self) -> list[str]:
        """The passes over the data, in order."""
        sides = " and ".join(self.sides)
        steps = [f"pass 1: statistics of {sides} (map per block, tree reduce in "
                 f"float64{self.stats_text()})",
                 f"build: method={self.method}, {self.options.k_text}, seed={self.seed} (driver, "
                 "O(d^3))" + ("" if self.dtype in ("float32", None) else
                              f"; sketches stored as {self.dtype} codes")]
        if self.prior is not None:
            steps.insert(0, f"first: {self.prior}")
        return steps

    @property
    def outputs(self) -> list[str]:
        """What the job writes."""
        return [f"{self.out} (model)"]

    def visible_paths(self) -> list[str]:
        import os

        return [*super().visible_paths(), os.path.dirname(os.path.abspath(self.out))]

    def facts(self, model: SketchModel | None = None, k: int | None = None) -> dict[str, Any]:
        """The plan's facts as a JSON-ready dict (recorded as provenance); with the
        ``model`` fitted (or its ``k`` chosen), its K and identity. Before K is chosen after
        pass 1, ``k`` is None."""
        return {
            "command": self.command,
            "method": self.method,
            "k": model.k if model is not None else k if k is not None else self.k,
            "model": None if model is None else model.digest,
            "target_rel_mse": self.target_rel_mse,
            "seed": self.seed,
            "block_rows": self.block_rows,
            "shrinkage": self.shrinkage,
            "stats_fraction": self.stats_fraction,
            "stats_blocks": {side: [len(self.stats_blocks(side)), self.n_blocks(side)]
                             for side in self.sources},
            "format": self.format,
            "on_invalid": self.on_invalid,
            "inputs": {side: src.fingerprint() for side, src in self.sources.items()},
            "versions": versions(),
            **({} if self.dtype == "float32" else {"dtype": self.dtype}),
            **({} if self.bytes_per_row is None else {"bytes_per_row": self.bytes_per_row}),
        }

    def model_path(self, root: str | None = None) -> str:
        """Where the model is saved (in the output ``root``, by default ``out``)."""
        return root or self.out

    def fit(self, scheduler: SchedulerLike = None, progress: bool = False,
            keep: PartialSums | None = None) -> SketchModel:
        """Pass 1 and the build: the fitted model (nothing written, but for pass 1's partial
        sums in ``keep``, ``io.partials``). A method that cross-fits (``auto``) takes the
        statistics per fold (``maths.methods.fold_count``) in the same pass."""
        sched = resolve(scheduler)
        folds = None
        n_folds = fold_count(self.method, self.d)
        if n_folds > 1:
            by_fold = moments(self.stats_ranges(), self.skip, sched, progress, n_folds, keep)
            folds = (by_fold["x"], by_fold["w"])
            stats = {"x": combine_all(folds[0]), "w": combine_all(folds[1])}
        else:
            stats = moments(self.stats_ranges(), self.skip, sched, progress, keep=keep)
        k = self.k
        with step_line(progress, f"build ({self.method}, d={self.d})") as line:
            if self.target_rel_mse is not None:  # K from the statistics: the smallest
                if line is not None:              # meeting it
                    line("choosing K")
                k = min_k(stats["x"], stats["w"], self.target_rel_mse, self.method,
                          self.shrinkage, folds)
            budget = None
            if self.bytes_per_row is not None:  # K and layout from the statistics
                if line is not None:
                    line("choosing K and the layout for the budget")
                fx, fw = folds or ([stats["x"]], [stats["w"]])
                budget = choose_budget(fx, fw, self.bytes_per_row, self.shrinkage, self.dtype)
                k = budget[0].layout.k
            assert k is not None
            if line is not None:
                line(f"K={k}, on the driver")
            model = build(stats["x"], stats["w"], k, self.method, self.seed, self.shrinkage,
                          provenance=self.facts(k=k), folds=folds, progress=line)
        if budget is None:
            return quantized_model(model, self.dtype or "float32")
        return budgeted_model(model, self.bytes_per_row or 0, *budget)

    def _saved_model(self) -> SketchModel | None:
        """When resuming: the model saved earlier by the same plan, if complete (in the
        output, or in its staging directory)."""
        path = self.model_path(lifecycle.current_path(self.out))
        if self.resume and lifecycle.output_state(path) == "complete":
            return load_model(path)
        return None

    def with_prior(self, scheduler: Scheduler) -> FitPlan:
        """The plan with its W prior fitted and written, W opened from it."""
        if self.prior is None:
            return self
        path = self.prior.execute(scheduler)
        w = open_source(path)
        check_same_d(self.sources["x"].d, w.d, "--x", f"the W prior {path}")
        return replace(self, sources={"x": self.sources["x"], "w": w}, prior=None)

    def _fit_kept(self, scheduler: Scheduler, progress: bool) -> SketchModel:
        """``fit``, pass 1 keeping its finished partial sums in the staged output (resumed
        with ``resume``); bad input found in pass 1 leaves nothing behind (unless resuming),
        while a failed run keeps them for ``--resume``."""
        folds = max(fold_count(self.method, self.d), 1)
        itemsize = max(s.working_dtype.itemsize for s in self.sources.values())
        lowest = PartialSums.lowest_level(folds * (self.d + 1) * self.d * 8,
                                          self.block_rows * self.d * itemsize)
        keep = lifecycle.begin_pass1(self.out, self.facts(), self.resume, lowest)
        try:
            return self.fit(scheduler, progress, keep)
        except DdrpError as e:
            if not (self.resume or isinstance(e, RunError)):
                lifecycle.drop_staged(self.out)
            raise

    def model_for(self, scheduler: Scheduler, progress: bool,
                  on_model: OnModel | None) -> SketchModel:
        """The checks against the cluster, then the model (saved, when resuming; else pass
        1 and the build), shown to ``on_model``."""
        self.check_cluster(scheduler)
        model = self._saved_model() or self._fit_kept(scheduler, progress)
        if on_model is not None:
            on_model(model)
        return model

    def _run(self, scheduler: Scheduler, progress: bool,
             on_model: OnModel | None) -> SketchModel:
        """The model fitted (or, resuming, the one saved), saved to ``out``."""
        plan = self.with_prior(scheduler)
        model = plan.model_for(scheduler, progress, on_model)
        if not (plan.resume and lifecycle.output_state(plan.out) == "complete"):
            work = lifecycle.begin(plan.out, False)  # a save is not resumed: written anew,
            save_model(model, work)                  # staged; an older model (vetted at
            lifecycle.commit(plan.out, work)         # planning) is replaced by the rename
        return model


def compute_moments(plan: SourcePlan[Any], scheduler: SchedulerLike = None,
                    progress: bool = False) -> dict[str, Moments]:
    """Pass 1 alone over any plan's sources: ``plan.statistics`` (a ``plan_stats`` plan's
    ``execute`` returns the same)."""
    return plan.statistics(resolve(scheduler), progress)


def compute_folds(plan: SourcePlan[Any], n_folds: int, scheduler: SchedulerLike = None,
                  progress: bool = False) -> dict[str, list[Moments]]:
    """Pass 1 per fold: ``plan.statistics`` with ``n_folds`` folds (a row's fold follows
    its global index, ``maths.folds.fold_of``)."""
    return plan.statistics(resolve(scheduler), progress, n_folds)


def fit_model(plan: FitPlan, scheduler: SchedulerLike = None,
              progress: bool = False) -> SketchModel:
    """Pass 1 and the build of a ``fit`` or ``run`` plan, nothing written: ``plan.fit``."""
    return plan.fit(scheduler, progress)


def open_pair(x: str, w: str | None, x_columns: Any = None, w_columns: Any = None,
              x_id_column: str | None = None, w_id_column: str | None = None,
              prior: PriorPlan | None = None, strict_chunks: bool = False) -> dict[str, Any]:
    """The two sources of a fit, checked for the same d. With a ``prior``, only X: W is
    written by the prior's fits when the plan runs (``FitPlan.with_prior``).
    ``strict_chunks``: refuse Zarr arrays with absent chunks (``open_source``)."""
    strict = check_strict_chunks(strict_chunks)
    sx = open_source(x, x_columns, x_id_column, strict)
    if prior is not None:
        return {"x": sx}
    assert w is not None
    sw = open_source(w, w_columns, w_id_column, strict)
    check_same_d(sx.d, sw.d, f"--x ({sx.path})", f"--w ({sw.path})")
    return {"x": sx, "w": sw}


def plan_fit(x: str, w: str | None, k: int | None, out: str, method: str = "auto",
             seed: int = 0, x_columns: str | list[str] | None = None,
             w_columns: str | list[str] | None = None, block_rows: int | None = None,
             shrinkage: float | str = "auto", overwrite: bool = False, resume: bool = False,
             stats_fraction: float | str = "auto", on_invalid: str = "error",
             target_rel_mse: float | None = None, prior: PriorPlan | None = None,
             strict_chunks: bool = False, dtype: str | None = None,
             bytes_per_row: int | None = None) -> FitPlan:
    """Plan ``fit``: statistics of both sources, then the build; the model goes to ``out``.

    Parameters
    ----------
    x, w : str
        Paths of the two sources (see ``ddrp_dask.open_source``); ``w`` None with ``prior``.
    k : int or None
        Stored columns per sketch; None with ``target_rel_mse``.
    out : str
        Directory the model is written to.
    method : str, default="auto"
    seed : int, default=0
    x_columns, w_columns : str or list of str, optional
        Parquet vector columns.
    block_rows : int, optional
        Rows per canonical block; default from d only (``options.default_block_rows``).
    shrinkage : "auto", "oas" or float, default="auto"
    overwrite : bool, default=False
        Replace an existing ddrp output at ``out``.
    resume : bool, default=False
        Finish an interrupted output at ``out`` made with the same options: finished blocks
        are kept, the rest written (a complete one is left as it is).
    stats_fraction : "auto" or float in (0, 1], default="auto"
        Compute the statistics on this seeded fraction of the row blocks only (pass 1 reads
        just those); pass 2 still sketches every row. "auto": a source with many more rows
        than the statistics need (``options.stats_blocks_needed``: about
        ``options.stats_rows(d)``) gives a seeded sample of blocks spread over all of it,
        others all their rows; 1 reads every block.
    on_invalid : {"error", "skip"}, default="error"
        A row with NaN, inf, a null or a wrong length fails the job naming file and row; with
        ``"skip"`` it is left out of the statistics, its sketch row is NaN (Zarr) or absent
        (Parquet), and its row index and id are listed in the output.
    target_rel_mse : float, optional
        Instead of K: the smallest K whose predicted relative MSE (MSE / E(x·w)², pairs of
        fitted rows) is at most this, chosen after pass 1 (``ddrp_dask.min_k``).
    prior : PriorPlan, optional
        W from labels (``jobs.prior.plan_prior``), fitted when the plan is executed.
    strict_chunks : bool, default=False
        Refuse a Zarr array with absent chunks instead of reading them as its fill value
        (the Zarr specification's reading; the plan counts them).
    dtype : {"float32", "float16", "int8", "mixed", "int8max", "mixedmax"}, optional
        The storage layout the model records for its sketches (``docs/quantized.md``):
        ``run`` and ``project`` store float16 / int8 codes with per-row scales, unbiased.
        Default float32, or with ``bytes_per_row`` the layout the budget chooses.
    bytes_per_row : int, optional
        Instead of K: a storage budget per row; K and the layout with the smallest
        predicted MSE within it are chosen after pass 1 (``auto`` only).
    """
    sources = open_pair(x, w, x_columns, w_columns, prior=prior, strict_chunks=strict_chunks)
    options = FitOptions.check(sources["x"].d, block_rows, seed, stats_fraction, on_invalid,
                               method=method, k=k, target_rel_mse=target_rel_mse,
                               shrinkage=shrinkage, dtype=dtype, bytes_per_row=bytes_per_row)
    plan = FitPlan(sources, options, out=str(out), overwrite=overwrite, resume=resume,
                   prior=prior)
    lifecycle.check_out(plan.out, [x, *([w] if w else [])], overwrite, resume)
    lifecycle.check_resumable(plan.out, plan.facts(), resume)
    return plan
