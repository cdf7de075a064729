"""Use the sketches: the estimate of X @ W.T, or the top-N W rows of every x row, out of core.

``S @ T.T`` (S: x sketches, n × K; T: w sketches, m × K) is computed tile by tile: a task reads
one block of S rows and one block of T rows itself, so memory is bounded by the block sizes
and the client never holds a sketch. For the full product each task writes exactly one chunk
of ``OUT/product``. For ``top`` each task keeps the N best scores of its tile (``top_n``), the
tiles of one row block are merged in a fixed tree (``merge_top_n``), and one task writes the
rows of ``OUT/indices`` and ``OUT/scores``.

The selection is exact and deterministic: rows are ordered by score, highest first, ties by
the lower W index, a strict total order, so the union of per-tile winners always holds the
global winners, whatever the tiling. NaN scores rank last; a sketch row holding NaN (a row
left out by ``--on-invalid skip``) gives NaN products, and top-N entries without a valid
estimate are written as index −1 with score NaN.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import DdrpError, InputError, OptionError
from ..graph import compute as graph
from ..graph.tiles import matmul_product, matmul_top
from ..io import lifecycle
from ..io.registry import open_source
from ..io.source import Source
from ..io.writer import float_compressors, ids_kind
from ..maths.topn import MAX_SCORES
from ..options import check_positive, check_top
from .base import block_ranges, versions

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
class MatmulPlan:
    """A validated ``matmul`` job (see ``plan_matmul``); ``print`` it to inspect it.

    Attributes
    ----------
    x, w : Source
        The two sketch arrays (n × K and m × K).
    out : str
        The Zarr group written.
    top : int or None
        N for top-N search, None for the full product.
    block_rows, block_cols : int
        S rows and W rows per task.
    origins : dict
        What ddrp recorded about each sketch (its output group, side, method, K, seed).
    w_ids : str or None
        With ``top``: the ids array of the W rows (``RUN/w_ids``, ``PROJECTED/ids``) when the
        w sketch's output has one; their ids are then written to ``out/ids``.
    """

    x: Source
    w: Source
    out: str
    top: int | None
    block_rows: int
    block_cols: int
    overwrite: bool = False
    origins: dict[str, dict[str, Any]] = field(default_factory=dict)
    w_ids: str | None = None

    @property
    def k(self) -> int:
        """Columns of both sketches."""
        return self.x.d

    @property
    def sources(self) -> dict[str, Source]:
        """The inputs, by option (what the pipeline's worker checks look at)."""
        return {"x_sketch": self.x, "w_sketch": self.w}

    def input_bytes(self) -> int:
        """Bytes of the two sketches (the default scheduler's size)."""
        return self.x.nbytes + self.w.nbytes

    def output_bytes(self) -> int:
        """Uncompressed bytes written."""
        n, m = self.x.n_rows, self.w.n_rows
        return 4 * n * m if self.top is None else (12 + 8 * bool(self.w_ids)) * n * self.top

    def row_ranges(self) -> list[tuple[int, int]]:
        """``(start, stop)`` of every block of x rows."""
        return block_ranges(self.x.n_rows, self.block_rows)

    def col_ranges(self) -> list[tuple[int, int]]:
        """``(start, stop)`` of every block of w rows."""
        return block_ranges(self.w.n_rows, self.block_cols)

    @property
    def outputs(self) -> list[str]:
        """What the job writes."""
        n, m = self.x.n_rows, self.w.n_rows
        if self.top is None:
            return [f"{self.out}/product ({n} x {m} float32, chunks {self.block_rows} x "
                    f"{self.block_cols})"]
        ids = [] if self.w_ids is None else [
            f"{self.out}/ids ({n} x {self.top} {ids_kind(self.w_ids)[1]}, the ids of those W "
            f"rows, from {self.w_ids}; -1 or \"\" where the index is -1)"]
        return [f"{self.out}/indices ({n} x {self.top} int64, rows of W, best first)",
                f"{self.out}/scores ({n} x {self.top} float32)", *ids]

    def memory_per_task(self) -> int:
        """Bytes one task holds at its peak: both blocks and its scores."""
        rows = min(self.block_rows, self.x.n_rows)
        cols = min(self.block_cols, self.w.n_rows)
        blocks = (rows + cols) * self.k * max(self.x.working_dtype.itemsize,
                                              self.w.working_dtype.itemsize)
        if self.top is None:
            return int(blocks + 2 * rows * cols * 4)
        return int(blocks + min(rows * cols, MAX_SCORES) * 12 + rows * self.top * 24)

    def facts(self) -> dict[str, Any]:
        """The plan as JSON-ready provenance."""
        return {"command": "matmul", "k": self.k, "top": self.top,
                "block_rows": self.block_rows, "block_cols": self.block_cols,
                "inputs": {"x_sketch": self.x.fingerprint(), "w_sketch": self.w.fingerprint()},
                "sketches": self.origins, "versions": versions()}

    def execute(self, scheduler: Any = None, progress: bool = False) -> None:
        """One compute over all tiles; ``"complete": true`` written last.

        Parameters
        ----------
        scheduler : str, distributed.Client or None, default=None
            As for ``ddrp_dask.execute``.
        progress : bool, default=False
            A progress line on stderr.
        """
        graph.check_visible([self.x.path, self.w.path], scheduler)
        graph.check_memory(self.memory_per_task(), self.block_rows, scheduler)
        facts = self.facts()
        work = lifecycle.begin(self.out, False)  # staged; an earlier output (--overwrite)
        group = _create(self, facts, work)        # is replaced only by the final rename
        try:
            if self.top is None:
                matmul_product(self.x, self.w, self.row_ranges(), self.col_ranges(), work,
                               scheduler, progress)
            else:
                matmul_top(self.x, self.w, self.row_ranges(), self.col_ranges(), self.top,
                           work, scheduler, progress, self.w_ids)
        except DdrpError:  # an unreadable sketch chunk: leave no output behind
            lifecycle.remove_output(work)
            raise
        lifecycle.finish(group, facts)
        lifecycle.commit(self.out, work)

    def __str__(self) -> str:
        rows, cols = self.row_ranges(), self.col_ranges()
        what = "full product" if self.top is None else f"top {self.top} W rows per x row"
        lines = ["ddrp matmul plan", "inputs:",
                 f"  x sketch: {self.x.describe()}", f"  w sketch: {self.w.describe()}"]
        for side in ("x", "w"):
            origin = self.origins.get(side) or {}
            if origin.get("method") is not None:
                lines.append(f"     {origin.get('side') or '?'} side of the model method="
                             f"{origin['method']}, K={origin.get('k')}, "
                             f"seed={origin.get('seed')} ({origin['group']})")
        lines += ["passes:", f"  {what}: {len(rows)} x {len(cols)} tile task(s) of "
                  f"{self.block_rows} x rows by {self.block_cols} w rows"]
        if self.top is not None:
            lines.append(f"  exact merge of the tiles' top {self.top} per x block "
                         f"(tree of fan-in {graph.FAN_IN}), one write task per x block")
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
                overwrite: bool = False) -> MatmulPlan:
    """Plan ``matmul``: the estimate of X @ W.T from two sketches, or its top-N per x row.

    Reads only metadata and writes nothing.

    Parameters
    ----------
    x_sketch, w_sketch : str
        Sketch arrays (rows × K) of the x and w sides of one model: Zarr arrays such as
        ``RUN/x``, ``RUN/w`` or ``PROJECTED/sketch`` (any source ``open_source`` reads).
    out : str
        Zarr group to write: array ``product`` (n × m float32), or with ``top`` arrays
        ``indices`` (n × N int64) and ``scores`` (n × N float32), best first, and ``ids``
        (n × N, the W rows' ids) when the w sketch's output holds ids (``run --w-id-column``,
        ``project --id-column``).
    top : int, optional
        N: keep the N largest estimated inner products of every x row (1 ≤ N ≤ m).
    block_rows : int, optional
        x rows per task; default ``min(n, 4096)``.
    block_cols : int, optional
        w rows per task; default ``min(m, 4096)`` for the product (its output chunks are
        block_rows × block_cols), ``min(m, 65536)`` for top-N.
    overwrite : bool, default=False
        Replace an existing ddrp output at ``out``.

    Returns
    -------
    MatmulPlan
    """
    x, ox = _open_sketch(x_sketch, "--x-sketch")
    w, ow = _open_sketch(w_sketch, "--w-sketch")
    _check_pair(x, w, ox, ow)
    top = check_top(top, w.n_rows, "the w sketch")
    rows = min(x.n_rows, DEFAULT_TILE) if block_rows is None else \
        check_positive(block_rows, "block rows")
    default_cols = DEFAULT_TILE if top is None else DEFAULT_TOP_COLS
    cols = min(w.n_rows, default_cols) if block_cols is None else \
        check_positive(block_cols, "block cols")
    groups = [o["group"] for o in (ox, ow) if o.get("group")]
    lifecycle.check_out(str(out), [x_sketch, w_sketch, *groups], overwrite)
    w_ids = ow.get("ids") if top is not None else None
    if w_ids is not None and ids_kind(w_ids)[0] != w.n_rows:
        raise InputError(f"--w-sketch {w_sketch}: its ids {w_ids} have "
                         f"{ids_kind(w_ids)[0]} rows, the sketch {w.n_rows}")
    plan = MatmulPlan(x, w, str(out), top, rows, cols, overwrite, {"x": ox, "w": ow}, w_ids)
    lifecycle.check_room(plan.out, plan.output_bytes())
    return plan


def _create(plan: MatmulPlan, facts: dict[str, Any], path: str) -> Any:
    """The output group at ``path``, marked incomplete, with its empty arrays."""
    import zarr

    group = zarr.open_group(path, mode="w-")
    group.attrs.update({"complete": False, "ddrp": facts})
    n, m = plan.x.n_rows, plan.w.n_rows
    rows = max(min(plan.block_rows, n), 1)
    if plan.top is None:
        group.create_array("product", shape=(n, m), dtype="float32",
                           chunks=(rows, max(min(plan.block_cols, m), 1)),
                           compressors=float_compressors(), dimension_names=("x_row", "w_row"))
    else:
        group.create_array("indices", shape=(n, plan.top), dtype="int64",
                           chunks=(rows, plan.top), dimension_names=("x_row", "rank"))
        group.create_array("scores", shape=(n, plan.top), dtype="float32",
                           chunks=(rows, plan.top), compressors=float_compressors(),
                           dimension_names=("x_row", "rank"))
        if plan.w_ids is not None:
            kind = ids_kind(plan.w_ids)[1]
            group.create_array("ids", shape=(n, plan.top), dtype=str if kind == "str" else kind,
                               chunks=(rows, plan.top), dimension_names=("x_row", "rank"))
    return group


def execute_matmul(plan: MatmulPlan, scheduler: Any = None, progress: bool = False) -> None:
    """Run a ``MatmulPlan`` (``plan.execute``)."""
    plan.execute(scheduler, progress)
