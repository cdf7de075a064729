"""``ddrp run``: fit, then sketch both sources (pass 2) into one output with the model."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..graph.scheduler import Scheduler
from ..io import lifecycle
from ..io.model_store import save_model
from ..maths.model import SketchModel
from ..options import FitOptions
from .base import OnModel
from .fit import FitPlan, open_pair
from .prior import PriorPlan
from .sketch import SketchTarget, write_sketches, zarr_side_outputs

__all__ = ["RunPlan", "plan_run"]


@dataclass(frozen=True)
class RunPlan(FitPlan):
    """A validated ``run`` job (see ``plan_run``): fit, then arrays ``x``, ``w`` (and
    ``x_ids``/``w_ids``) and the model at ``out/model``, or Parquet datasets."""

    command: ClassVar[str] = "run"

    @property
    def passes(self) -> list[str]:
        sides = " and ".join(self.sides)
        fmt = "Parquet" if self.format == "parquet" else "Zarr"
        return [*super().passes, f"pass 2: project {sides} (one GEMM per block) -> {fmt}"]

    @property
    def outputs(self) -> list[str]:
        k = self.options.columns_text  # "K" when chosen after pass 1, said once per line
        later = f"; {self.options.k_later}" if self.options.k_later else ""
        prior = [] if self.prior is None else [f"{self.out}/w (the W prior's rows x {k} "
                                                 f"float32{later})"]
        if self.format == "parquet":
            lines = [f"{self.out}/{side}/... (Parquet mirroring {src.path}: "
                     f"{src.output_key()}, sketch[{k}] {self.storage_text}{later})"
                     for side, src in self.sources.items()]
            return [*lines, *prior, f"{self.out}/_ddrp.json (completion marker)",
                    f"{self.out}/model (model)"]
        return [*(line for side, src in self.sources.items()
                  for line in zarr_side_outputs(self.out, side, src, k, side, f"{side}_",
                                                self.skip, f"{self.storage_text}{later}")),
                *prior, f"{self.out}/model (model)"]

    def output_bytes(self) -> int:
        """Uncompressed bytes pass 2 writes: float32 sketches (plus 8-byte ids); with a
        target instead of K, for the largest K it could choose; with a byte budget, the
        budget (quantized layouts store fewer bytes than float32 of the same K)."""
        per_row = self.bytes_per_row if self.bytes_per_row is not None else 4 * self.width()
        return sum(src.n_rows * (per_row + (8 if src.id_column else 0))
                   for src in self.sources.values())

    def model_path(self, root: str | None = None) -> str:
        return f"{root or self.out}/model"

    def targets(self) -> list[SketchTarget]:
        """Where each side's sketches go."""
        return [SketchTarget(side, src, side, f"{side}_ids" if src.id_column else None,
                             f"{side}_", side)
                for side, src in self.sources.items()]

    def _run(self, scheduler: Scheduler, progress: bool,
             on_model: OnModel | None) -> SketchModel:
        """The model fitted (or, resuming, the one saved), then both sides' sketches."""
        plan = self.with_prior(scheduler)
        assert isinstance(plan, RunPlan)
        model = plan.model_for(scheduler, progress, on_model)

        def save(work: str) -> None:  # inside the output (staged), once it exists
            path = plan.model_path(work)
            if lifecycle.output_state(path) != "complete":
                lifecycle.remove_within(path)  # what an interrupted save left, in our output
                save_model(model, path)

        write_sketches(plan.format, plan.out, plan.targets(), model, plan.block_rows,
                       plan.facts(model), plan.resume, plan.skip, scheduler, progress, save)
        return model


def plan_run(x: str, w: str | None, k: int | None, out: str, method: str = "auto",
             seed: int = 0, x_columns: str | list[str] | None = None,
             w_columns: str | list[str] | None = None, block_rows: int | None = None,
             shrinkage: float | str = "auto", overwrite: bool = False, resume: bool = False,
             stats_fraction: float | str = "auto", x_id_column: str | None = None,
             w_id_column: str | None = None, format: str = "zarr",
             on_invalid: str = "error", target_rel_mse: float | None = None,
             prior: PriorPlan | None = None, strict_chunks: bool = False,
             dtype: str | None = None, bytes_per_row: int | None = None) -> RunPlan:
    """Plan ``run``: fit, then project both sources into the Zarr group ``out`` (arrays ``x``,
    ``w`` and the model at ``out/model``). Parameters as for ``plan_fit``, and
    ``x_id_column``/``w_id_column``: Parquet id columns copied to ``out/x_ids``/``out/w_ids``;
    ``format="parquet"``: Parquet datasets ``out/x``, ``out/w`` mirroring the inputs' files
    (see ``ddrp_dask.io.writer``); ``strict_chunks`` as for ``plan_fit``; ``dtype``: the
    sketches' storage layout, quantized codes and scales for all but float32
    (``ddrp_dask.io.codes``); ``bytes_per_row``: a budget instead of K.
    """
    sources = open_pair(x, w, x_columns, w_columns, x_id_column, w_id_column, prior,
                        strict_chunks)
    options = FitOptions.check(sources["x"].d, block_rows, seed, stats_fraction, on_invalid,
                               method=method, k=k, target_rel_mse=target_rel_mse,
                               shrinkage=shrinkage, format=format, dtype=dtype,
                               bytes_per_row=bytes_per_row)
    plan = RunPlan(sources, options, out=str(out), overwrite=overwrite, resume=resume,
                   prior=prior)
    lifecycle.check_out(plan.out, [x, *([w] if w else [])], overwrite, resume)
    lifecycle.check_resumable(plan.out, plan.facts(), resume)
    lifecycle.check_room(plan.out, plan.output_bytes())
    return plan
