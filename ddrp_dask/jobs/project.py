"""``ddrp project``: sketch new rows of one side with a saved model (pass 2 only)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ..errors import OptionError
from ..graph.scheduler import Scheduler
from ..io import lifecycle
from ..io.model_store import load_model
from ..io.registry import open_source
from ..maths.model import SketchModel
from ..options import PassOptions, check_format, check_side, check_strict_chunks
from .base import OnModel, SourcePlan, versions
from .sketch import SketchTarget, write_sketches, zarr_side_outputs

__all__ = ["ProjectPlan", "plan_project"]


@dataclass(frozen=True)
class ProjectPlan(SourcePlan[SketchModel]):
    """A validated ``project`` job (see ``plan_project``): array ``sketch`` (and ``ids``) in
    the Zarr group ``out``, or a Parquet dataset."""

    command: ClassVar[str] = "project"

    model: SketchModel | None = field(default=None, repr=False)
    model_path: str = ""
    out: str = ""
    overwrite: bool = False
    resume: bool = False
    format: str = "zarr"

    @property
    def fitted(self) -> SketchModel:
        """The model used."""
        assert self.model is not None
        return self.model

    @property
    def k(self) -> int:
        """Columns of the sketches."""
        return self.fitted.k

    @property
    def method(self) -> str:
        """The model's method."""
        return self.fitted.method

    @property
    def side(self) -> str:
        """The side sketched."""
        return next(iter(self.sources))

    def width(self) -> int:
        return self.k

    def _header(self) -> list[str]:
        return [f"model: {self.model_path} (method={self.method}, K={self.k}, "
                f"model {self.fitted.digest})"]

    @property
    def passes(self) -> list[str]:
        fmt = "Parquet" if self.format == "parquet" else "Zarr"
        return [f"pass 2: project {self.side} (one GEMM per block) -> {fmt}"]

    @property
    def outputs(self) -> list[str]:
        src = self.sources[self.side]
        if self.format == "parquet":
            return [f"{self.out}/... (Parquet mirroring {src.path}: "
                    f"{src.output_key()}, sketch[{self.k}] float32)",
                    f"{self.out}/_ddrp.json (completion marker)"]
        return zarr_side_outputs(self.out, self.side, src, self.k, "sketch", "", self.skip)

    def output_bytes(self) -> int:
        """Uncompressed bytes written: float32 sketches (plus 8-byte ids)."""
        src = self.sources[self.side]
        return src.n_rows * (4 * self.k + (8 if src.id_column else 0))

    def visible_paths(self) -> list[str]:
        return [*super().visible_paths(), self.model_path,
                os.path.dirname(os.path.abspath(self.out))]

    def facts(self) -> dict[str, Any]:
        """The plan's facts as a JSON-ready dict (recorded as provenance)."""
        m = self.fitted
        return {"command": self.command, "method": m.method, "k": m.k, "target_rel_mse": None,
                "seed": m.seed, "block_rows": self.block_rows, "shrinkage": "oas",
                "stats_fraction": 1.0, "format": self.format, "on_invalid": self.on_invalid,
                "model": m.digest,
                "inputs": {side: src.fingerprint() for side, src in self.sources.items()},
                "versions": versions()}

    def _run(self, scheduler: Scheduler, progress: bool,
             on_model: OnModel | None) -> SketchModel:
        """The sketches of the source, written; returns the model used."""
        self.check_cluster(scheduler)
        if on_model is not None:
            on_model(self.fitted)
        src = self.sources[self.side]
        target = SketchTarget(self.side, src, "sketch", "ids" if src.id_column else None, "",
                              "")
        write_sketches(self.format, self.out, [target], self.fitted, self.block_rows,
                       self.facts(), self.resume, self.skip, scheduler, progress)
        return self.fitted


def plan_project(model: str, side: str, input: str, out: str,
                 columns: str | list[str] | None = None, block_rows: int | None = None,
                 overwrite: bool = False, resume: bool = False,
                 id_column: str | None = None, format: str = "zarr",
                 on_invalid: str = "error", strict_chunks: bool = False) -> ProjectPlan:
    """Plan ``project``: sketch the rows of ``input`` as side ``side`` of the saved model into
    the Zarr group ``out`` (array ``sketch``).

    ``block_rows`` defaults to the model's, so the bytes match the ``run`` that fitted it.
    ``id_column``: a Parquet id column copied to ``out/ids``; ``format="parquet"``: a Parquet
    dataset mirroring the input's files; ``strict_chunks`` as for ``plan_fit``.
    """
    check_side(side)
    fitted = load_model(model)
    src = open_source(input, columns, id_column, check_strict_chunks(strict_chunks))
    if src.d != fitted.d:
        raise OptionError(f"got d={src.d} for {input} but the model {model} was fitted for "
                          f"d={fitted.d}")
    rows = block_rows if block_rows is not None else fitted.provenance.get("block_rows")
    options = PassOptions.check(src.d, rows, fitted.seed, on_invalid=on_invalid)
    plan = ProjectPlan({side: src}, options, model=fitted, model_path=str(model), out=str(out),
                       overwrite=overwrite, resume=resume, format=check_format(format))
    lifecycle.check_out(plan.out, [input, model], overwrite, resume)
    lifecycle.check_resumable(plan.out, plan.facts(), resume)
    lifecycle.check_room(plan.out, plan.output_bytes())
    return plan
