"""The one job protocol, and what every job that reads sources shares.

Every command's plan derives from ``Plan``: it is frozen, reads only metadata and writes
nothing; ``str(plan)`` is ``--dry-run``'s output and ``plan.execute(scheduler, progress,
on_model)`` runs it (rechunker's plan-then-execute), resolving the scheduler once
(``graph.scheduler.resolve``). ``SourcePlan`` is the plan of a job over sources cut into
canonical row blocks (fit, run, project, plan and its pass 1 alone).
"""

from __future__ import annotations

import itertools
import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, TypeVar

import numpy as np

from ..graph import compute as graph
from ..graph.passes import moments
from ..graph.scheduler import Scheduler, SchedulerLike, resolve
from ..io.source import Source
from ..maths.model import SketchModel
from ..options import PassOptions, by_rule, stats_blocks_needed, stats_rows

__all__ = ["OnModel", "Plan", "SourcePlan", "block_ranges", "versions"]

#: Called with the model a job fitted or uses, as soon as it has it (before pass 2).
OnModel = Callable[[SketchModel], None]

R = TypeVar("R")


@dataclass(frozen=True)
class Plan(ABC, Generic[R]):
    """A validated job: ``str(plan)`` says what it will read, do and write (``--dry-run``),
    ``plan.execute()`` does it and returns the job's result ``R``."""

    #: The command's name, as recorded in outputs' provenance.
    command: ClassVar[str] = ""

    @abstractmethod
    def __str__(self) -> str:
        """The plan in words: inputs, passes, outputs (what ``--dry-run`` prints)."""

    @abstractmethod
    def input_bytes(self) -> int:
        """Bytes of the inputs the job reads (what the default scheduler follows:
        ``graph.compute.default_scheduler``)."""

    @abstractmethod
    def _run(self, scheduler: Scheduler, progress: bool, on_model: OnModel | None) -> R:
        """The job, on the ``scheduler`` ``execute`` resolved."""

    def execute(self, scheduler: SchedulerLike = None, progress: bool = False,
                on_model: OnModel | None = None) -> R:
        """Run the plan.

        Parameters
        ----------
        scheduler : str, distributed.Client, Scheduler or None, default=None
            A Dask scheduler name ("threads", "sync", "processes"), a Client, or None for
            the active client or Dask's default; resolved once, here.
        progress : bool, default=False
            A progress line per pass on stderr.
        on_model : callable, optional
            Called with the model the job fits or uses as soon as it has it (before pass 2),
            e.g. to print its report; jobs without a model never call it.

        Returns
        -------
        The job's result: the model (fit, run, project), the statistics (pass 1 alone), a
        report (plan, evaluate), the path written (the W prior) or None (matmul).
        """
        return self._run(resolve(scheduler), progress, on_model)


@dataclass(frozen=True)
class SourcePlan(Plan[R]):
    """A validated job over one or two sources, cut into canonical row blocks.

    Attributes
    ----------
    sources : dict of str to Source
        ``{"x": ..., "w": ...}`` (fit, run, stats) or ``{side: ...}`` (project).
    options : PassOptions
        The validated options (``options.PassOptions``; a subclass for fit, run and plan).
    """

    sources: dict[str, Source]
    options: PassOptions

    @property
    def block_rows(self) -> int:
        """Rows of one canonical block."""
        return self.options.block_rows

    @property
    def seed(self) -> int:
        """Seed of every random draw."""
        return self.options.seed

    @property
    def stats_fraction(self) -> float | str:
        """Share of the blocks pass 1 reads, or ``"auto"`` (``stats_blocks``)."""
        return self.options.stats_fraction

    @property
    def on_invalid(self) -> str:
        """``"error"`` or ``"skip"``."""
        return self.options.on_invalid

    @property
    def skip(self) -> bool:
        """Whether invalid rows are skipped (and listed) instead of failing the job."""
        return self.options.skip

    def n_blocks(self, side: str) -> int:
        """Number of canonical row blocks of one source."""
        return -(-self.sources[side].n_rows // self.block_rows)

    def stats_blocks(self, side: str) -> list[int]:
        """The blocks pass 1 reads: all of them, a seeded fraction (at least one), or under
        ``"auto"`` the sample ``options.stats_blocks_needed`` asks for: one block drawn in
        each of as many equal runs of the source, so that the sample covers all of it
        (sorted or partitioned data included).

        The choice depends only on the seed, the side, the block count and d, so it is the
        same on every machine and for every format of the same data.
        """
        n = self.n_blocks(side)
        rng = np.random.default_rng([self.seed, 0x5747, 0 if side == "x" else 1])
        if by_rule(self.stats_fraction):
            m = stats_blocks_needed(self.sources[side].n_rows, self.block_rows, self.d)
            if m is None or m >= n:
                return list(range(n))
            edges = np.linspace(0, n, m + 1).astype(np.int64)  # m runs of ≥ 1 block
            return [int(rng.integers(lo, hi)) for lo, hi in itertools.pairwise(edges)]
        if float(self.stats_fraction) >= 1.0:
            return list(range(n))
        m = max(1, math.ceil(float(self.stats_fraction) * n))
        return sorted(int(i) for i in rng.choice(n, size=m, replace=False))

    def stats_text(self) -> str:
        """How pass 1 chooses its blocks, for the plan's text ("" when it reads all)."""
        if by_rule(self.stats_fraction):
            parts = [f"{len(self.stats_blocks(side))} of {self.n_blocks(side)} blocks of "
                     f"{side}" for side in self.sources
                     if len(self.stats_blocks(side)) < self.n_blocks(side)]
            if not parts:
                return ""
            return (f", on a seeded sample spread over the input: {', '.join(parts)} (at "
                    f"least {stats_rows(self.d):,} rows: --stats-fraction auto; 1 reads all)")
        if float(self.stats_fraction) >= 1:
            return ""
        return f", on a seeded {float(self.stats_fraction):g} of the blocks"

    def block_ranges(self, side: str) -> list[tuple[int, int]]:
        """``(start, stop)`` of every canonical block of one source, in row order."""
        return block_ranges(self.sources[side].n_rows, self.block_rows)

    def stats_ranges(self) -> dict[str, tuple[Source, list[tuple[int, int]]]]:
        """Each side's source and the ranges of the blocks pass 1 reads."""
        return {side: (src, [self.block_ranges(side)[i] for i in self.stats_blocks(side)])
                for side, src in self.sources.items()}

    def statistics(self, scheduler: Scheduler, progress: bool,
                   n_folds: int = 0) -> dict[str, Any]:
        """Pass 1 over the plan's sources, in one compute: ``{side: Moments}``, or with
        ``n_folds`` ``{side: [Moments per fold]}`` (a row's fold follows its global index,
        ``maths.optimal.fold_of``)."""
        return moments(self.stats_ranges(), self.skip, scheduler, progress, n_folds)

    @property
    def d(self) -> int:
        """The sources' dimension."""
        return next(iter(self.sources.values())).d

    def input_bytes(self) -> int:
        """Bytes of the sources' values as the passes read them (the default scheduler's
        size: ``graph.compute.default_scheduler``)."""
        return sum(s.nbytes for s in self.sources.values())

    def memory_per_task(self) -> int:
        """Bytes one task holds at its peak: the block, its shifted copy, the float64
        scatter and the output rows."""
        itemsize = max(s.working_dtype.itemsize for s in self.sources.values())
        rows = min(self.block_rows, max(s.n_rows for s in self.sources.values()))
        return int(2 * rows * self.d * itemsize + 4 * self.d * self.d * 8
                   + rows * self.width() * 8)

    def width(self) -> int:
        """Columns of the output rows (0: no pass 2; with K chosen after pass 1, the
        largest it could be)."""
        return 0

    @property
    def passes(self) -> list[str]:
        """The passes over the data, in order."""
        return []

    @property
    def outputs(self) -> list[str]:
        """What the job writes."""
        return []

    def check_cluster(self, scheduler: Scheduler) -> None:
        """Before any work: every worker sees the local paths, and a task fits a worker."""
        graph.check_visible(self.visible_paths(), scheduler)
        graph.check_memory(self.memory_per_task(), self.block_rows, scheduler)

    def visible_paths(self) -> list[str]:
        """Local paths every worker must see: the inputs (and the output's directory)."""
        return [src.path for src in self.sources.values()]

    def _header(self) -> list[str]:
        """Extra lines between the inputs and the passes (e.g. the model used)."""
        return []

    def __str__(self) -> str:
        # "ddrp plan plan" would stutter: the command named plan gets "the plan of ddrp plan"
        title = "the plan of ddrp plan" if self.command == "plan" else \
            f"ddrp {self.command} plan"
        lines = [title, "inputs:"]
        for side, src in self.sources.items():
            lines.append(f"  {side}: {src.describe()}")
            lines.append(f"     {self.n_blocks(side)} block(s) of {self.block_rows} rows")
        lines += self._header()
        lines.append("passes:")
        lines += [f"  {p}" for p in self.passes]
        lines.append("outputs:")
        lines += [f"  {o}" for o in self.outputs]
        mb = self.memory_per_task() / 2**20
        lines.append(f"memory: about {mb:.0f} MiB per running task (x threads per worker)")
        return "\n".join(lines)


def block_ranges(n: int, rows: int) -> list[tuple[int, int]]:
    """``(start, stop)`` of consecutive blocks of ``rows`` rows covering ``n`` rows.

    >>> block_ranges(5, 2)
    [(0, 2), (2, 4), (4, 5)]
    """
    return [(s, min(s + rows, n)) for s in range(0, n, rows)]


def versions() -> dict[str, str]:
    """The versions recorded in every output's provenance."""
    import zarr

    from .._version import __version__

    return {"ddrp_dask": __version__, "numpy": np.__version__, "dask": graph.dask_version(),
            "zarr": zarr.__version__}
