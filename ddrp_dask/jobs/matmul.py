"""Use the sketches: the estimate of X @ W.T, or the top-N rows of one side for every row of
the other, out of core.

``S @ T.T`` (S: x sketches, n × K; T: w sketches, m × K) is computed tile by tile: a task reads
one block of S rows and one block of T rows itself, so memory is bounded by the block sizes
and the client never holds a sketch. For the full product each task writes exactly one chunk
of ``OUT/product``. For ``top`` (per x row by default, per w row with ``per="w"``) each task
keeps the N best scores of its tile (``top_n``), the tiles of one row block are merged in a
fixed tree (``merge_top_n``), and one task writes that block's rows (``io.writer.TopLayout``:
Zarr arrays, or one Parquet file per block).

The selection is exact and deterministic: rows are ordered by score, highest first, ties by
the lower row index, a strict total order, so the union of per-tile winners always holds the
global winners, whatever the tiling. NaN scores rank last; a sketch row holding NaN (a row
left out by ``--on-invalid skip``) gives NaN products, and top-N entries without a valid
estimate are written as index −1 with score NaN (left out of Parquet).

The output has the life cycle of every ddrp output (``io.lifecycle``): written staged (hidden
beside ``OUT``) with one flag per finished task, so ``resume`` continues an interrupted job,
and it appears as ``OUT`` only when complete (at a URL: in place, marked incomplete).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from ..errors import DdrpError, InputError, OptionError
from ..graph import compute as graph
from ..graph.scheduler import Scheduler, SchedulerLike
from ..graph.tiles import matmul_product, matmul_top
from ..io import lifecycle, writer
from ..io.registry import open_source
from ..io.source import Source
from ..maths.topn import MAX_SCORES
from ..options import check_matmul_layout, check_positive, check_top
from .base import OnModel, Plan, block_ranges, versions

__all__ = ["MatmulPlan", "execute_matmul", "plan_matmul"]

#: Default rows of S per task, and W rows per task for the full product (output chunk 64 MiB).
DEFAULT_TILE = 4096
#: Default W rows per task for top-N (scored in pieces of at most ``MAX_SCORES`` values).
DEFAULT_TOP_COLS = 65536


# ---------------------------------------------------------------------------------------
# top-N selection (pure numpy)


# ---------------------------------------------------------------------------------------
# the plan


@dataclass(frozen=True)
class MatmulPlan(Plan[None]):
    """A validated ``matmul`` job (see ``plan_matmul``); ``print`` it to inspect it.

    Attributes
    ----------
    x, w : Source
        The two sketch arrays (n × K and m × K).
    out : str
        The output written: a Zarr group, or with ``format="parquet"`` a Parquet dataset.
    top : int or None
        N for top-N search, None for the full product.
    block_rows, block_cols : int
        Rows searched from, and rows of the other side, per task.
    origins : dict
        What ddrp recorded about each sketch (its output group, side, method, K, seed, ids).
    per : {"x", "w"}
        With ``top``: the side whose every row gets its N best rows of the other side.
    format : {"zarr", "parquet"}
        Parquet writes top-N as rows (from, rank, to, score); the product is Zarr only.
    resume : bool
        Continue an interrupted output (its finished tasks are kept).
    """

    command: ClassVar[str] = "matmul"

    x: Source
    w: Source
    out: str
    top: int | None
    block_rows: int
    block_cols: int
    overwrite: bool = False
    origins: dict[str, dict[str, Any]] = field(default_factory=dict)
    per: str = "x"
    format: str = "zarr"
    resume: bool = False

    @property
    def k(self) -> int:
        """Columns of both sketches."""
        return self.x.d

    @property
    def sources(self) -> dict[str, Source]:
        """The inputs, by option (what the pipeline's worker checks look at)."""
        return {"x_sketch": self.x, "w_sketch": self.w}

    @property
    def searched(self) -> tuple[Source, Source]:
        """(side searched from, side whose rows are found): (x, w) unless ``per="w"``."""
        return (self.x, self.w) if self.per == "x" else (self.w, self.x)

    def ids_of(self, side: str) -> str | None:
        """The ids array written beside ``side``'s sketches, when there is one."""
        ids = self.origins.get(side, {}).get("ids")
        return None if ids is None else str(ids)

    def layout(self, out: str | None = None) -> writer.TopLayout:
        """How the top-N result is written (at ``out``, default ``self.out``)."""
        assert self.top is not None
        other = "w" if self.per == "x" else "x"
        return writer.TopLayout(out or self.out, self.per, self.format,
                                self.searched[0].n_rows, self.top, self.block_rows,
                                self.ids_of(self.per), self.ids_of(other))

    def input_bytes(self) -> int:
        """Bytes of the two sketches (the default scheduler's size)."""
        return self.x.nbytes + self.w.nbytes

    def output_bytes(self) -> int:
        """Uncompressed bytes written."""
        if self.top is None:
            return 4 * self.x.n_rows * self.w.n_rows
        ids = 8 * sum(self.ids_of(s) is not None for s in ("x", "w"))
        return (12 + 8 * (self.format == "parquet") + ids) * self.searched[0].n_rows * self.top

    def row_ranges(self) -> list[tuple[int, int]]:
        """``(start, stop)`` of every block of rows searched from (x rows for the product)."""
        return block_ranges(self.searched[0].n_rows, self.block_rows)

    def col_ranges(self) -> list[tuple[int, int]]:
        """``(start, stop)`` of every block of the other side's rows."""
        return block_ranges(self.searched[1].n_rows, self.block_cols)

    def blocks(self) -> dict[str, int]:
        """The flag arrays of a Zarr output: array → tasks writing it (``io.lifecycle``)."""
        if self.top is None:
            return {"product": len(self.row_ranges()) * len(self.col_ranges())}
        return {"indices": len(self.row_ranges())}

    def arrays(self, out: str) -> list[writer.ArraySpec]:
        """The arrays of a Zarr output at ``out``."""
        if self.top is not None:
            return self.layout(out).arrays()
        n, m = self.x.n_rows, self.w.n_rows
        return [writer.ArraySpec("product", (n, m), "float32",
                                 (min(self.block_rows, n), min(self.block_cols, m)),
                                 ("x_row", "w_row"), "float")]

    @property
    def outputs(self) -> list[str]:
        """What the job writes."""
        n, m = self.x.n_rows, self.w.n_rows
        if self.top is None:
            return [f"{self.out}/product ({n} x {m} float32, chunks {self.block_rows} x "
                    f"{self.block_cols})"]
        rows, n_top, per = self.searched[0].n_rows, self.top, self.per
        other = "w" if per == "x" else "x"
        to_ids, from_ids = self.ids_of(other), self.ids_of(per)
        if self.format == "parquet":
            cols = [f"{per}_row", *([f"{per}_id"] if from_ids else []), "rank",
                    f"{other}_row", *([f"{other}_id"] if to_ids else []), "score"]
            return [f"{self.out}/part-*.parquet ({len(self.row_ranges())} file(s), up to "
                    f"{rows * n_top} rows of {', '.join(cols)}; best first, rank from 1)",
                    f"{self.out}/_ddrp.json (completion marker)"]
        lines = [f"{self.out}/indices ({rows} x {n_top} int64, rows of {other.upper()} for "
                 f"every {per} row, best first)", f"{self.out}/scores ({rows} x {n_top} float32)"]
        if to_ids is not None:
            lines.append(f"{self.out}/ids ({rows} x {n_top} {writer.ids_kind(to_ids)[1]}, the "
                         f"ids of those {other.upper()} rows, from {to_ids}; -1 or \"\" where "
                         "the index is -1)")
        if from_ids is not None:
            lines.append(f"{self.out}/row_ids ({rows} {writer.ids_kind(from_ids)[1]}, the ids "
                         f"of the {per} rows, from {from_ids})")
        return lines

    def memory_per_task(self) -> int:
        """Bytes one task holds at its peak: both blocks and its scores."""
        a, b = self.searched
        rows = min(self.block_rows, a.n_rows)
        cols = min(self.block_cols, b.n_rows)
        blocks = (rows + cols) * self.k * max(self.x.working_dtype.itemsize,
                                              self.w.working_dtype.itemsize)
        if self.top is None:
            return int(blocks + 2 * rows * cols * 4)
        return int(blocks + min(rows * cols, MAX_SCORES) * 12 + rows * self.top * 24)

    def facts(self) -> dict[str, Any]:
        """The plan as JSON-ready provenance."""
        return {"command": "matmul", "k": self.k, "top": self.top, "per": self.per,
                "format": self.format, "block_rows": self.block_rows,
                "block_cols": self.block_cols,
                "inputs": {"x_sketch": self.x.fingerprint(), "w_sketch": self.w.fingerprint()},
                "sketches": self.origins, "versions": versions()}

    def _run(self, scheduler: Scheduler, progress: bool, on_model: OnModel | None) -> None:
        """Compute the pending tiles into the staged output, then complete and show it.
        Nothing is done when resuming an output that is already complete."""
        if self.resume and lifecycle.output_state(self.out) == "complete":
            return
        graph.check_visible([self.x.path, self.w.path], scheduler)
        graph.check_memory(self.memory_per_task(), self.block_rows, scheduler)
        facts = self.facts()
        work = lifecycle.begin(self.out, self.resume)  # staged; an earlier output
        if lifecycle.output_state(work, staged=False) != "complete":  # (--overwrite) is
            self._write(work, facts, scheduler, progress)  # replaced only by the rename
        lifecycle.commit(self.out, work)

    def _write(self, work: str, facts: dict[str, Any], scheduler: Scheduler,
               progress: bool) -> None:
        """Create (or reopen) the output at ``work``, run the pending tasks, complete it."""
        if self.format == "parquet":
            lifecycle.write_marker(work, False, facts)
            group = None
        else:
            group = lifecycle.open_output(work, facts, self.arrays(work), self.blocks(),
                                          self.resume)
        try:
            if self.top is None:
                tiles = [(t, r, c) for t, (r, c) in enumerate(
                    (r, c) for r in self.row_ranges() for c in self.col_ranges())]
                done = set(range(len(tiles))) - set(lifecycle.pending_blocks(group, "product"))
                matmul_product(self.x, self.w, [t for t in tiles if t[0] not in done], work,
                               scheduler, progress)
            else:
                layout = self.layout(work)
                rows = [(b, r) for b, r in enumerate(self.row_ranges())
                        if not (lifecycle.exists(layout.file(b)) if group is None
                                else b not in set(lifecycle.pending_blocks(group, "indices")))]
                matmul_top(*self.searched, rows, self.col_ranges(), layout, scheduler,
                           progress)
        except DdrpError:  # an unreadable sketch chunk: leave no output behind
            if not self.resume:
                lifecycle.remove_output(work)
            raise
        if group is None:
            lifecycle.write_marker(work, True, facts)
        else:
            lifecycle.finish(group, facts)

    def __str__(self) -> str:
        rows, cols = self.row_ranges(), self.col_ranges()
        per, other = self.per, "w" if self.per == "x" else "x"
        what = "full product" if self.top is None else \
            f"top {self.top} {other.upper()} rows per {per} row"
        lines = ["ddrp matmul plan", "inputs:",
                 f"  x sketch: {self.x.describe()}", f"  w sketch: {self.w.describe()}"]
        for side in ("x", "w"):
            origin = self.origins.get(side) or {}
            if origin.get("method") is not None:
                lines.append(f"     {origin.get('side') or '?'} side of the model method="
                             f"{origin['method']}, K={origin.get('k')}, "
                             f"seed={origin.get('seed')} ({origin['group']})")
        by = f"{self.block_rows} {per if self.top else 'x'} rows by {self.block_cols} " \
             f"{other if self.top else 'w'} rows"
        lines += ["passes:", f"  {what}: {len(rows)} x {len(cols)} tile task(s) of {by}"]
        if self.top is not None:
            lines.append(f"  exact merge of the tiles' top {self.top} per {per} block "
                         f"(tree of fan-in {graph.FAN_IN}), one write task per {per} block")
        lines += ["outputs:", *[f"  {o}" for o in self.outputs]]
        lines.append(f"memory: about {self.memory_per_task() / 2**20:.0f} MiB per running task "
                     "(x threads per worker)")
        return "\n".join(lines)


def sketch_origin(path: str) -> dict[str, Any]:
    """What a ddrp output says about the sketch array at ``path`` (``RUN/x``, ``PROJ/sketch``
    or the group ``PROJ``): its group, state, side, method, K and seed (None when unknown)."""
    p = Path(path)
    kind, _ = lifecycle.read_node(p)
    group, name = (p, None) if kind == "group" else (p.parent, p.name)
    gkind, attrs = lifecycle.read_node(group)
    facts = attrs.get("ddrp") if gkind == "group" else None
    if not isinstance(facts, dict):
        return {}
    side = None
    if facts.get("command") == "run" and name in ("x", "w"):
        side = name
    elif facts.get("command") == "project" and len(facts.get("inputs") or {}) == 1:
        side = next(iter(facts["inputs"]))
    ids = f"{name}_ids" if side is not None and facts.get("command") == "run" else \
        "ids" if side is not None else None  # the ids written beside these sketches
    ids_path = group / ids if ids and lifecycle.read_node(group / ids)[0] == "array" else None
    return {"group": str(group), "state": lifecycle.output_state(str(group), staged=False),
            "side": side, "method": facts.get("method"), "k": facts.get("k"),
            "seed": facts.get("seed"), "model": facts.get("model"),
            "ids": None if ids_path is None else str(ids_path)}


def _open_sketch(path: str, flag: str) -> tuple[Source, dict[str, Any]]:
    try:
        src = open_source(path)
    except InputError as e:
        raise InputError(f"{flag}: {e}; give a sketch array such as RUN/x or PROJECTED/sketch"
                         ) from e
    origin = sketch_origin(path)
    if origin.get("state") == "incomplete":
        raise InputError(f"{flag} {path}: the ddrp output {origin['group']} is incomplete (an "
                         "interrupted run); finish it with --resume or run it again")
    return src, origin


def _check_pair(x: Source, w: Source, ox: dict[str, Any], ow: dict[str, Any]) -> None:
    if x.d != w.d:
        raise OptionError(f"got K={w.d} for --w-sketch ({w.path}) but K={x.d} for --x-sketch "
                          f"({x.path}); both sketches must come from one model")
    for flag, src, origin, want in (("--x-sketch", x, ox, "x"), ("--w-sketch", w, ow, "w")):
        if origin.get("side") not in (None, want):
            other = "--w-sketch" if want == "x" else "--x-sketch"
            raise OptionError(f"{flag} {src.path} holds {origin['side']}-side sketches; pass "
                              f"it as {other} (the estimate is x sketch . w sketch)")
    if ox.get("model") and ow.get("model") and ox["model"] != ow["model"]:
        raise OptionError(f"the sketches come from different models: --x-sketch from model "
                          f"{ox['model']} ({ox['group']}), --w-sketch from model {ow['model']} "
                          f"({ow['group']}); sketch both sides with one model")
    keys = ("method", "k", "seed")
    if all(ox.get(key) is not None and ow.get(key) is not None for key in keys) and \
            any(ox[key] != ow[key] for key in keys):
        def desc(o: dict[str, Any]) -> str:
            return f"method={o['method']} K={o['k']} seed={o['seed']}"
        raise OptionError(f"the sketches come from different models ({desc(ox)} for --x-sketch, "
                          f"{desc(ow)} for --w-sketch); sketch both sides with one model")


def plan_matmul(x_sketch: str, w_sketch: str, out: str, top: int | None = None,
                block_rows: int | None = None, block_cols: int | None = None,
                overwrite: bool = False, per: str = "x", format: str = "zarr",
                resume: bool = False) -> MatmulPlan:
    """Plan ``matmul``: the estimate of X @ W.T from two sketches, or its top-N per row.

    Reads only metadata and writes nothing.

    Parameters
    ----------
    x_sketch, w_sketch : str
        Sketch arrays (rows × K) of the x and w sides of one model: Zarr arrays such as
        ``RUN/x``, ``RUN/w`` or ``PROJECTED/sketch`` (any source ``open_source`` reads).
    out : str
        The output: a Zarr group with array ``product`` (n × m float32), or with ``top``
        arrays ``indices`` (rows of the other side) and ``scores``, best first, ``ids`` (the
        other side's ids of ``indices``) and ``row_ids`` (the ids of the rows searched from)
        when the sketches' outputs hold ids (``run --x-id-column``/``--w-id-column``,
        ``project --id-column``); see ``io.writer.TopLayout`` and ``docs/outputs.md``.
    top : int, optional
        N: keep the N largest estimated inner products of every row searched from
        (1 ≤ N ≤ rows of the other side).
    block_rows : int, optional
        Rows searched from (x rows for the product) per task; default ``min(rows, 4096)``.
    block_cols : int, optional
        Rows of the other side per task; default ``min(rows, 4096)`` for the product (its
        output chunks are block_rows × block_cols), ``min(rows, 65536)`` for top-N.
    overwrite : bool, default=False
        Replace an existing ddrp output at ``out``.
    per : {"x", "w"}, default="x"
        With ``top``: the N best w rows of every x row, or (``"w"``) the N best x rows of
        every w row (documents per query when X holds the documents).
    format : {"zarr", "parquet"}, default="zarr"
        ``"parquet"`` (with ``top``): a Parquet dataset of rows (from row [and id], rank,
        to row [and id], score) that duckdb, pandas and polars join directly.
    resume : bool, default=False
        Finish an interrupted output made by the same plan, keeping its finished tasks.

    Returns
    -------
    MatmulPlan
    """
    per, fmt = check_matmul_layout(per, format, top)
    x, ox = _open_sketch(x_sketch, "--x-sketch")
    w, ow = _open_sketch(w_sketch, "--w-sketch")
    _check_pair(x, w, ox, ow)
    searched_from, found = (x, w) if per == "x" else (w, x)
    top = check_top(top, found.n_rows, f"the {'w' if per == 'x' else 'x'} sketch")
    rows = min(searched_from.n_rows, DEFAULT_TILE) if block_rows is None else \
        check_positive(block_rows, "block rows")
    default_cols = DEFAULT_TILE if top is None else DEFAULT_TOP_COLS
    cols = min(found.n_rows, default_cols) if block_cols is None else \
        check_positive(block_cols, "block cols")
    groups = [o["group"] for o in (ox, ow) if o.get("group")]
    lifecycle.check_out(str(out), [x_sketch, w_sketch, *groups], overwrite, resume)
    for flag, src, origin in (("--x-sketch", x, ox), ("--w-sketch", w, ow)):
        ids = origin.get("ids")
        if top is None or ids is None:
            origin.pop("ids", None)  # the product writes no ids
        elif writer.ids_kind(ids)[0] != src.n_rows:
            raise InputError(f"{flag} {src.path}: its ids {ids} have "
                             f"{writer.ids_kind(ids)[0]} rows, the sketch {src.n_rows}")
    plan = MatmulPlan(x, w, str(out), top, rows, cols, overwrite, {"x": ox, "w": ow}, per,
                      fmt, resume)
    lifecycle.check_resumable(plan.out, plan.facts(), resume)
    lifecycle.check_room(plan.out, plan.output_bytes())
    return plan


def execute_matmul(plan: MatmulPlan, scheduler: SchedulerLike = None,
                   progress: bool = False) -> None:
    """Run a ``MatmulPlan``: the same as ``plan.execute(scheduler, progress)``."""
    plan.execute(scheduler, progress)
