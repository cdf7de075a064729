"""Plans: everything a job will do, validated and inspectable before anything runs.

``plan_fit``, ``plan_project`` and ``plan_run`` open the inputs' metadata, check every option
and the output location, and return a ``Plan``. Nothing is read beyond metadata and nothing is
written; ``print(plan)`` (the CLI's ``--dry-run``) shows inputs, chunking, passes, outputs and
a memory estimate. ``ddrp_dask.pipeline.execute`` then runs it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .build import METHODS, check_k
from .errors import OptionError
from .io import Source, default_block_rows, open_source
from .model import SketchModel, load_model
from .output import check_out, check_room

__all__ = ["Plan", "plan_fit", "plan_project", "plan_run", "plan_stats"]


@dataclass(frozen=True)
class Plan:
    """A validated job: ``command`` is ``fit``, ``project`` or ``run``.

    Attributes
    ----------
    sources : dict of str to Source
        ``{"x": ..., "w": ...}`` for fit/run; ``{side: ...}`` for project.
    k, method, seed, shrinkage : as for ``ddrp_dask.build.build``
    block_rows : int
        Rows of one canonical block: one task, one output chunk, one leaf of the reduction.
    out : str
        The output: model directory (fit) or Zarr group (project, run).
    model : SketchModel or None
        The loaded model (project).
    """

    command: str
    sources: dict[str, Source]
    k: int
    method: str
    seed: int
    block_rows: int
    out: str
    shrinkage: float | str = "oas"
    overwrite: bool = False
    resume: bool = False
    model: SketchModel | None = field(default=None, repr=False)
    model_path: str | None = None
    stats_fraction: float = 1.0
    format: str = "zarr"
    on_invalid: str = "error"
    target_rel_mse: float | None = None

    @property
    def skip(self) -> bool:
        """Whether invalid rows are skipped (and listed) instead of failing the job."""
        return self.on_invalid == "skip"

    def n_blocks(self, side: str) -> int:
        """Number of canonical row blocks of one source."""
        return -(-self.sources[side].n_rows // self.block_rows)

    def stats_blocks(self, side: str) -> list[int]:
        """The blocks pass 1 reads: all of them, or a seeded fraction (at least one).

        The choice depends only on the seed, the side and the block count, so it is the
        same on every machine and for every format of the same data.
        """
        n = self.n_blocks(side)
        if self.stats_fraction >= 1.0:
            return list(range(n))
        m = max(1, math.ceil(self.stats_fraction * n))
        rng = np.random.default_rng([self.seed, 0x5747, 0 if side == "x" else 1])
        return sorted(int(i) for i in rng.choice(n, size=m, replace=False))

    def block_ranges(self, side: str) -> list[tuple[int, int]]:
        """``(start, stop)`` of every canonical block of one source, in row order."""
        n, b = self.sources[side].n_rows, self.block_rows
        return [(s, min(s + b, n)) for s in range(0, n, b)]

    @property
    def passes(self) -> list[str]:
        """The passes over the data, in order."""
        sides = list(self.sources)
        steps = []
        if self.command == "stats":
            steps.append(f"pass 1: statistics of {' and '.join(sides)}")
        if self.command in ("fit", "run"):
            frac = "" if self.stats_fraction >= 1 else \
                f", on a seeded {self.stats_fraction:g} of the blocks"
            steps.append(f"pass 1: statistics of {' and '.join(sides)} (map per block, tree "
                         f"reduce in float64{frac})")
            k = f"K={self.k}" if self.target_rel_mse is None else \
                f"K = smallest with predicted relative MSE <= {self.target_rel_mse:g}"
            steps.append(f"build: method={self.method}, {k}, seed={self.seed} (driver, O(d^3))")
        if self.command in ("project", "run"):
            steps.append(f"pass 2: project {' and '.join(sides)} (one GEMM per block) -> Zarr")
        return steps

    @property
    def outputs(self) -> list[str]:
        """What the job writes."""
        if self.command == "stats":
            return ["(none: statistics are returned to the caller)"]
        if self.command == "fit":
            return [f"{self.out} (model)"]
        if self.format == "parquet":
            lines = []
            for side, src in self.sources.items():
                where = f"{self.out}/{side}" if self.command == "run" else self.out
                lines.append(f"{where}/... (Parquet mirroring {src.path}: "
                             f"{src.id_column or 'row'}, sketch[{self.k}] float32)")
            return [*lines, f"{self.out}/_ddrp.json (completion marker)"]
        if self.command == "project":
            side = next(iter(self.sources))
            return [f"{self.out}/sketch ({self.sources[side].n_rows} x {self.k} float32)"]
        return [f"{self.out}/x ({self.sources['x'].n_rows} x {self.k} float32)",
                f"{self.out}/w ({self.sources['w'].n_rows} x {self.k} float32)",
                f"{self.out}/model (model)"]

    def output_bytes(self) -> int:
        """Uncompressed bytes pass 2 writes: float32 sketches (plus 8-byte ids); with a
        target instead of K, for the largest K it could choose."""
        if self.command in ("fit", "stats"):
            return 0
        d = next(iter(self.sources.values())).d
        per_row = 4 * (self.k if self.target_rel_mse is None else max(d + 2, 3))
        return sum(src.n_rows * (per_row + (8 if src.id_column else 0))
                   for src in self.sources.values())

    def memory_per_task(self) -> int:
        """Bytes one task holds at its peak: the block, its shifted copy and (pass 1) the
        float64 scatter, or (pass 2) the output rows."""
        d = next(iter(self.sources.values())).d
        itemsize = max(s.working_dtype.itemsize for s in self.sources.values())
        rows = min(self.block_rows, max(s.n_rows for s in self.sources.values()))
        return int(2 * rows * d * itemsize + 4 * d * d * 8 + rows * self.k * 8)

    def __str__(self) -> str:
        lines = [f"ddrp {self.command} plan"]
        lines.append("inputs:")
        for side, src in self.sources.items():
            lines.append(f"  {side}: {src.describe()}")
            lines.append(f"     {self.n_blocks(side)} block(s) of {self.block_rows} rows")
        if self.model_path:
            lines.append(f"model: {self.model_path} (method={self.method}, K={self.k})")
        lines.append("passes:")
        lines += [f"  {p}" for p in self.passes]
        lines.append("outputs:")
        lines += [f"  {o}" for o in self.outputs]
        mb = self.memory_per_task() / 2**20
        lines.append(f"memory: about {mb:.0f} MiB per running task (x threads per worker)")
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------
# validation helpers


def _check_same_d(x: Source, w: Source) -> None:
    if x.d != w.d:
        raise OptionError(f"got d={w.d} for --w ({w.path}) but d={x.d} for --x ({x.path}); both "
                          "sources must have the same dimension")


def _block_rows(block_rows: int | None, d: int) -> int:
    if block_rows is None:
        return default_block_rows(d)
    if block_rows < 1:
        raise OptionError(f"block rows must be at least 1, got {block_rows}")
    return int(block_rows)


def _check_seed(seed: int) -> int:
    if not 0 <= int(seed) < 2**63:
        raise OptionError(f"seed must be a non-negative integer below 2**63, got {seed}")
    return int(seed)


def _check_shrinkage(shrinkage: float | str) -> float | str:
    if shrinkage == "oas":
        return shrinkage
    try:
        value = float(shrinkage)
    except (TypeError, ValueError):
        value = float("nan")
    if not 0.0 <= value <= 1.0:
        raise OptionError(f"shrinkage must be 'oas' or a number in [0, 1], got {shrinkage!r}")
    return value


# ---------------------------------------------------------------------------------------
# constructors


def _check_on_invalid(value: str) -> str:
    if value not in ("error", "skip"):
        raise OptionError(f"on_invalid must be 'error' or 'skip', got {value!r}")
    return value


def _check_format(fmt: str) -> str:
    if fmt not in ("zarr", "parquet"):
        raise OptionError(f"output format must be 'zarr' or 'parquet', got {fmt!r}")
    return fmt


def _check_fraction(fraction: float) -> float:
    value = float(fraction)
    if not 0.0 < value <= 1.0:
        raise OptionError(f"stats fraction must be in (0, 1], got {fraction}")
    return value


def _plan_two_sources(command: str, x: str, w: str, k: int | None, out: str,
                      method: str = "auto",
                      seed: int = 0, x_columns: Any = None, w_columns: Any = None,
                      block_rows: int | None = None, shrinkage: float | str = "oas",
                      overwrite: bool = False, resume: bool = False,
                      stats_fraction: float = 1.0, x_id_column: str | None = None,
                      w_id_column: str | None = None, format: str = "zarr",
                      on_invalid: str = "error", target_rel_mse: float | None = None) -> Plan:
    if method not in METHODS:
        raise OptionError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    sx = open_source(x, x_columns, x_id_column)
    sw = open_source(w, w_columns, w_id_column)
    _check_same_d(sx, sw)
    if (k is None) == (target_rel_mse is None):
        raise OptionError("give either K (-k) or a target relative MSE (--target-rel-mse), "
                          "not both and not neither")
    if target_rel_mse is not None or k is None:
        from .choose import check_target

        target_rel_mse, k = check_target(float(target_rel_mse or 0)), 0
    else:
        check_k(int(k), sx.d, method)
    check_out(out, [x, w], overwrite, resume)
    plan = Plan(command, {"x": sx, "w": sw}, int(k), method, _check_seed(seed),
                _block_rows(block_rows, sx.d), str(out), _check_shrinkage(shrinkage), overwrite,
                resume, stats_fraction=_check_fraction(stats_fraction),
                format=_check_format(format), on_invalid=_check_on_invalid(on_invalid),
                target_rel_mse=target_rel_mse)
    check_room(plan.out, plan.output_bytes())
    return plan


def plan_fit(x: str, w: str, k: int | None, out: str, method: str = "auto", seed: int = 0,
             x_columns: str | list[str] | None = None, w_columns: str | list[str] | None = None,
             block_rows: int | None = None, shrinkage: float | str = "oas",
             overwrite: bool = False, resume: bool = False,
             stats_fraction: float = 1.0, on_invalid: str = "error",
             target_rel_mse: float | None = None) -> Plan:
    """Plan ``fit``: statistics of both sources, then the build; the model goes to ``out``.

    Parameters
    ----------
    x, w : str
        Paths of the two sources (see ``ddrp_dask.io.open_source``).
    k : int or None
        Stored columns per sketch; None with ``target_rel_mse``.
    out : str
        Directory the model is written to.
    method : str, default="auto"
    seed : int, default=0
    x_columns, w_columns : str or list of str, optional
        Parquet vector columns.
    block_rows : int, optional
        Rows per canonical block; default from d only (``default_block_rows``).
    shrinkage : "oas" or float, default="oas"
    overwrite : bool, default=False
        Replace an existing ddrp output at ``out``.
    resume : bool, default=False
        Finish an interrupted output at ``out`` made with the same options: finished blocks
        are kept, the rest written (a complete one is left as it is).
    stats_fraction : float in (0, 1], default=1.0
        Compute the statistics on this seeded fraction of the row blocks only (pass 1 reads
        just those); pass 2 still sketches every row.
    on_invalid : {"error", "skip"}, default="error"
        A row with NaN, inf, a null or a wrong length fails the job naming file and row; with
        ``"skip"`` it is left out of the statistics, its sketch row is NaN (Zarr) or absent
        (Parquet), and its row index and id are listed in the output.
    target_rel_mse : float, optional
        Instead of K: the smallest K whose predicted relative MSE (MSE / E(x·w)², pairs of
        fitted rows) is at most this, chosen after pass 1 (``ddrp_dask.choose.min_k``).
    """
    return _plan_two_sources("fit", x, w, k, out, method, seed, x_columns, w_columns,
                             block_rows, shrinkage, overwrite, resume, stats_fraction,
                             on_invalid=on_invalid, target_rel_mse=target_rel_mse)


def plan_run(x: str, w: str, k: int | None, out: str, method: str = "auto", seed: int = 0,
             x_columns: str | list[str] | None = None, w_columns: str | list[str] | None = None,
             block_rows: int | None = None, shrinkage: float | str = "oas",
             overwrite: bool = False, resume: bool = False,
             stats_fraction: float = 1.0, x_id_column: str | None = None,
             w_id_column: str | None = None, format: str = "zarr",
             on_invalid: str = "error", target_rel_mse: float | None = None) -> Plan:
    """Plan ``run``: fit, then project both sources into the Zarr group ``out`` (arrays ``x``,
    ``w`` and the model at ``out/model``). Parameters as for ``plan_fit``, and
    ``x_id_column``/``w_id_column``: Parquet id columns copied to ``out/x_ids``/``out/w_ids``;
    ``format="parquet"``: Parquet datasets ``out/x``, ``out/w`` mirroring the inputs' files
    (see ``ddrp_dask.parquet_out``).
    """
    return _plan_two_sources("run", x, w, k, out, method, seed, x_columns, w_columns,
                             block_rows, shrinkage, overwrite, resume, stats_fraction,
                             x_id_column, w_id_column, format, on_invalid, target_rel_mse)


def plan_stats(x: str, w: str, x_columns: str | list[str] | None = None,
               w_columns: str | list[str] | None = None, block_rows: int | None = None,
               stats_fraction: float = 1.0, seed: int = 0) -> Plan:
    """Plan pass 1 alone (``compute_moments(plan)``): the statistics of both sources, for
    choosing K or method before fitting. Writes nothing; ``k`` and ``method`` are unset.
    ``stats_fraction`` and ``seed`` choose the blocks read, as for ``plan_fit``."""
    sx = open_source(x, x_columns)
    sw = open_source(w, w_columns)
    _check_same_d(sx, sw)
    return Plan("stats", {"x": sx, "w": sw}, 0, "", _check_seed(seed),
                _block_rows(block_rows, sx.d), "", stats_fraction=_check_fraction(stats_fraction))


def plan_project(model: str, side: str, input: str, out: str,
                 columns: str | list[str] | None = None, block_rows: int | None = None,
                 overwrite: bool = False, resume: bool = False,
                 id_column: str | None = None, format: str = "zarr",
                 on_invalid: str = "error") -> Plan:
    """Plan ``project``: sketch the rows of ``input`` as side ``side`` of the saved model into
    the Zarr group ``out`` (array ``sketch``).

    ``block_rows`` defaults to the model's, so the bytes match the ``run`` that fitted it.
    ``id_column``: a Parquet id column copied to ``out/ids``; ``format="parquet"``: a Parquet
    dataset mirroring the input's files.
    """
    if side not in ("x", "w"):
        raise OptionError(f"--side must be 'x' or 'w', got {side!r}")
    fitted = load_model(model)
    src = open_source(input, columns, id_column)
    if src.d != fitted.d:
        raise OptionError(f"got d={src.d} for {input} but the model {model} was fitted for "
                          f"d={fitted.d}")
    check_out(out, [input, model], overwrite, resume)
    rows = block_rows if block_rows is not None else fitted.provenance.get("block_rows")
    plan = Plan("project", {side: src}, fitted.k, fitted.method, fitted.seed,
                _block_rows(rows, src.d), str(out), overwrite=overwrite, resume=resume,
                model=fitted, model_path=str(model), format=_check_format(format),
                on_invalid=_check_on_invalid(on_invalid))
    check_room(plan.out, plan.output_bytes())
    return plan


def plan_summary(plan: Plan) -> dict[str, Any]:
    """The plan's facts as a JSON-ready dict (recorded as provenance)."""
    return {
        "command": plan.command,
        "method": plan.method,
        "k": plan.k,
        "target_rel_mse": plan.target_rel_mse,
        "seed": plan.seed,
        "block_rows": plan.block_rows,
        "shrinkage": plan.shrinkage,
        "stats_fraction": plan.stats_fraction,
        "format": plan.format,
        "on_invalid": plan.on_invalid,
        "inputs": {side: src.fingerprint() for side, src in plan.sources.items()},
        "versions": _versions(),
    }


def _versions() -> dict[str, str]:
    import dask
    import zarr

    from . import __version__

    return {"ddrp_dask": __version__, "numpy": np.__version__, "dask": dask.__version__,
            "zarr": zarr.__version__}
