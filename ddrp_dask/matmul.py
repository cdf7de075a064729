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

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import dask
import numpy as np
from threadpoolctl import threadpool_limits

from .errors import DdrpError, InputError, OptionError
from .io import Source, open_source
from .output import (
    check_out,
    check_room,
    finish,
    float_compressors,
    output_state,
    remove_output,
    write_rows,
)
from .pipeline import FAN_IN, check_memory, check_visible, compute, tree_reduce

__all__ = ["MatmulPlan", "execute_matmul", "merge_top_n", "plan_matmul", "top_n",
           "top_n_products"]

#: Default rows of S per task, and W rows per task for the full product (output chunk 64 MiB).
DEFAULT_TILE = 4096
#: Default W rows per task for top-N (scored in pieces of at most ``MAX_SCORES`` values).
DEFAULT_TOP_COLS = 65536
#: Scores a top-N task holds at once (float32: 16 MiB, plus ~4 bytes/score of bookkeeping).
MAX_SCORES = 2**22


# ---------------------------------------------------------------------------------------
# top-N selection (pure numpy)


def top_n(scores: np.ndarray, n: int, offset: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The ``n`` largest scores of every row, best first, ties broken by the lower column.

    Parameters
    ----------
    scores : ndarray of shape (rows, cols)
    n : int
        Kept per row (all columns if ``n`` ≥ cols).
    offset : int, default=0
        Added to the column numbers (the first W row of the block).

    Returns
    -------
    indices : ndarray of int64, shape (rows, min(n, cols))
    values : ndarray of shape (rows, min(n, cols)), the dtype of ``scores`` (NaN as −inf)

    >>> top_n(np.array([[1.0, 3.0, 3.0, 2.0]]), 2, offset=10)
    (array([[11, 12]]), array([[3., 3.]]))
    """
    s = np.asarray(scores)
    if np.isnan(s).any():
        s = np.where(np.isnan(s), -np.inf, s)
    rows, cols = s.shape
    keep = min(int(n), cols)
    if keep == cols:
        cand = np.broadcast_to(np.arange(cols), (rows, cols))
    else:
        cand = np.argpartition(s, cols - keep, axis=1)[:, cols - keep:]  # ties: arbitrary
        kth = np.take_along_axis(s, cand, axis=1).min(axis=1, keepdims=True)
        straddle = np.flatnonzero((s >= kth).sum(axis=1) > keep)
        if straddle.size:  # ties at the n-th value: take the lowest columns among them
            sub, k_sub = s[straddle], kth[straddle]
            ties = sub == k_sub
            need = keep - (sub > k_sub).sum(axis=1, keepdims=True)
            chosen = (sub > k_sub) | (ties & (np.cumsum(ties, axis=1) <= need))
            cand = cand.copy()
            cand[straddle] = np.nonzero(chosen)[1].reshape(straddle.size, keep)
    values = np.take_along_axis(s, cand, axis=1)
    order = np.lexsort((cand, -values), axis=1)
    idx = np.take_along_axis(cand, order, axis=1).astype(np.int64) + offset
    return idx, np.take_along_axis(values, order, axis=1)


def merge_top_n(parts: Sequence[tuple[np.ndarray, np.ndarray]],
                n: int) -> tuple[np.ndarray, np.ndarray]:
    """Merge per-block ``(indices, values)`` of the same rows into the overall top ``n``
    (score descending, then index ascending): exact, whatever the blocks."""
    idx = np.concatenate([p[0] for p in parts], axis=1)
    val = np.concatenate([p[1] for p in parts], axis=1)
    order = np.lexsort((idx, -val), axis=1)[:, :n]
    return np.take_along_axis(idx, order, axis=1), np.take_along_axis(val, order, axis=1)


def top_n_products(a: np.ndarray, b: np.ndarray, n: int, offset: int = 0,
                   max_scores: int = MAX_SCORES) -> tuple[np.ndarray, np.ndarray]:
    """``top_n(a @ b.T, n, offset)`` computed over pieces of ``b`` so that at most about
    ``max_scores`` scores are held at once.

    Once every row holds n results, a later piece can only add scores strictly above a row's
    n-th best (a tie loses: its column is higher), so only those few scores are merged in:
    selection then costs about a comparison per score, less than the product itself.
    """
    step = max(1, max_scores // max(len(a), 1))
    best: tuple[np.ndarray, np.ndarray] | None = None
    for c0 in range(0, len(b), step):
        s = a @ b[c0:c0 + step].T
        if best is None or best[0].shape[1] < n:
            part = top_n(s, n, offset + c0)
            best = part if best is None else merge_top_n([best, part], n)
            continue
        best = _add_above(best, s, n, offset + c0)
    if best is None:
        return np.zeros((len(a), 0), np.int64), np.zeros((len(a), 0), np.result_type(a, b))
    return best


def _add_above(best: tuple[np.ndarray, np.ndarray], s: np.ndarray, n: int,
               offset: int) -> tuple[np.ndarray, np.ndarray]:
    """Merge into ``best`` (n per row, columns below ``offset``) the scores of ``s`` above each
    row's n-th best: one sort of the affected rows' entries and those scores."""
    rows, cols = np.nonzero(s > best[1][:, -1:])  # NaN never passes
    if rows.size == 0:
        return best
    hit = np.unique(rows)
    row_all = np.concatenate([np.repeat(hit, n), rows])
    idx_all = np.concatenate([best[0][hit].ravel(), cols.astype(np.int64) + offset])
    val_all = np.concatenate([best[1][hit].ravel(), s[rows, cols]])
    order = np.lexsort((idx_all, -val_all, row_all))
    starts = np.searchsorted(row_all[order], hit)
    take = order[(starts[:, None] + np.arange(n)).ravel()]
    idx, val = best[0].copy(), best[1].copy()
    idx[hit] = idx_all[take].reshape(hit.size, n)
    val[hit] = val_all[take].reshape(hit.size, n)
    return idx, val


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
    """

    x: Source
    w: Source
    out: str
    top: int | None
    block_rows: int
    block_cols: int
    overwrite: bool = False
    origins: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def k(self) -> int:
        """Columns of both sketches."""
        return self.x.d

    @property
    def sources(self) -> dict[str, Source]:
        """The inputs, by option (what the pipeline's worker checks look at)."""
        return {"x_sketch": self.x, "w_sketch": self.w}

    @property
    def model_path(self) -> None:
        """No model is read."""
        return None

    def output_bytes(self) -> int:
        """Uncompressed bytes written."""
        n, m = self.x.n_rows, self.w.n_rows
        return 4 * n * m if self.top is None else 12 * n * self.top

    def row_ranges(self) -> list[tuple[int, int]]:
        """``(start, stop)`` of every block of x rows."""
        return _ranges(self.x.n_rows, self.block_rows)

    def col_ranges(self) -> list[tuple[int, int]]:
        """``(start, stop)`` of every block of w rows."""
        return _ranges(self.w.n_rows, self.block_cols)

    @property
    def outputs(self) -> list[str]:
        """What the job writes."""
        n, m = self.x.n_rows, self.w.n_rows
        if self.top is None:
            return [f"{self.out}/product ({n} x {m} float32, chunks {self.block_rows} x "
                    f"{self.block_cols})"]
        return [f"{self.out}/indices ({n} x {self.top} int64, rows of W, best first)",
                f"{self.out}/scores ({n} x {self.top} float32)"]

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
        from .plan import _versions

        return {"command": "matmul", "k": self.k, "top": self.top,
                "block_rows": self.block_rows, "block_cols": self.block_cols,
                "inputs": {"x_sketch": self.x.fingerprint(), "w_sketch": self.w.fingerprint()},
                "sketches": self.origins, "versions": _versions()}

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
                         f"(tree of fan-in {FAN_IN}), one write task per x block")
        lines += ["outputs:", *[f"  {o}" for o in self.outputs]]
        lines.append(f"memory: about {self.memory_per_task() / 2**20:.0f} MiB per running task "
                     "(x threads per worker)")
        return "\n".join(lines)


def _ranges(n: int, step: int) -> list[tuple[int, int]]:
    return [(s, min(s + step, n)) for s in range(0, n, step)]


def _group_attrs(path: Path) -> tuple[str | None, dict[str, Any]]:
    """(node type, attributes) of the Zarr v3 node at ``path``, or (None, {})."""
    try:
        meta = json.loads((path / "zarr.json").read_text())
    except (OSError, ValueError):
        return None, {}
    return meta.get("node_type"), dict(meta.get("attributes") or {})


def sketch_origin(path: str) -> dict[str, Any]:
    """What a ddrp output says about the sketch array at ``path`` (``RUN/x``, ``PROJ/sketch``
    or the group ``PROJ``): its group, state, side, method, K and seed (None when unknown)."""
    p = Path(path)
    kind, _ = _group_attrs(p)
    group, name = (p, None) if kind == "group" else (p.parent, p.name)
    gkind, attrs = _group_attrs(group)
    facts = attrs.get("ddrp") if gkind == "group" else None
    if not isinstance(facts, dict):
        return {}
    side = None
    if facts.get("command") == "run" and name in ("x", "w"):
        side = name
    elif facts.get("command") == "project" and len(facts.get("inputs") or {}) == 1:
        side = next(iter(facts["inputs"]))
    return {"group": str(group), "state": output_state(group), "side": side,
            "method": facts.get("method"), "k": facts.get("k"), "seed": facts.get("seed")}


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
    keys = ("method", "k", "seed")
    if all(ox.get(key) is not None and ow.get(key) is not None for key in keys) and \
            any(ox[key] != ow[key] for key in keys):
        def desc(o: dict[str, Any]) -> str:
            return f"method={o['method']} K={o['k']} seed={o['seed']}"
        raise OptionError(f"the sketches come from different models ({desc(ox)} for --x-sketch, "
                          f"{desc(ow)} for --w-sketch); sketch both sides with one model")


def _positive(value: int | None, default: int, what: str) -> int:
    if value is None:
        return default
    if int(value) < 1:
        raise OptionError(f"{what} must be at least 1, got {value}")
    return int(value)


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
        ``indices`` (n × N int64) and ``scores`` (n × N float32), best first.
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
    if top is not None and not 1 <= int(top) <= w.n_rows:
        raise OptionError(f"--top must be between 1 and the {w.n_rows} rows of the w sketch, "
                          f"got {top}")
    rows = _positive(block_rows, min(x.n_rows, DEFAULT_TILE), "block rows")
    default_cols = DEFAULT_TILE if top is None else DEFAULT_TOP_COLS
    cols = _positive(block_cols, min(w.n_rows, default_cols), "block cols")
    groups = [o["group"] for o in (ox, ow) if o.get("group")]
    check_out(str(out), [x_sketch, w_sketch, *groups], overwrite)
    plan = MatmulPlan(x, w, str(out), None if top is None else int(top), rows, cols,
                      overwrite, {"x": ox, "w": ow})
    check_room(plan.out, plan.output_bytes())
    return plan


# ---------------------------------------------------------------------------------------
# tasks (each opens its inputs itself and pins BLAS to one thread)


def _read(src: Source, start: int, stop: int) -> np.ndarray:
    """Rows of a sketch; NaN rows (rows left out by ``--on-invalid skip``) are kept: they give
    NaN products and no top-N entries."""
    return src.read_rows(start, stop)


def _product_task(x: Source, w: Source, rows: tuple[int, int], cols: tuple[int, int],
                  out: str) -> int:
    """Write one chunk of the product: S[rows] @ T[cols].T."""
    with threadpool_limits(limits=1):
        a = _read(x, *rows)
        b = _read(w, *cols)
        tile = (a @ b.T).astype(np.float32, copy=False)
    write_rows(f"{out}/product", (slice(*rows), slice(*cols)), tile)
    return int(tile.size)


def _top_task(x: Source, w: Source, rows: tuple[int, int], cols: tuple[int, int],
              n: int) -> tuple[np.ndarray, np.ndarray]:
    """The top n of S[rows] @ T[cols].T, with global W indices."""
    with threadpool_limits(limits=1):
        a = _read(x, *rows)
        b = _read(w, *cols)
        return top_n_products(a, b, n, offset=cols[0])


def _write_top_task(part: tuple[np.ndarray, np.ndarray], out: str,
                    rows: tuple[int, int]) -> int:
    idx, val = part
    invalid = np.isnan(val) | np.isneginf(val)  # from NaN sketch rows: no valid estimate
    if invalid.any():
        idx, val = np.where(invalid, -1, idx), np.where(invalid, np.nan, val)
    write_rows(f"{out}/indices", slice(*rows), idx)
    write_rows(f"{out}/scores", slice(*rows), val.astype(np.float32))
    return int(idx.shape[0])


def _graphs(plan: MatmulPlan) -> list[Any]:
    cols = plan.col_ranges()
    if plan.top is None:
        return [dask.delayed(_product_task, pure=True)(plan.x, plan.w, r, c, plan.out)
                for r in plan.row_ranges() for c in cols]
    graphs = []
    for r in plan.row_ranges():
        leaves = [dask.delayed(_top_task, pure=True)(plan.x, plan.w, r, c, plan.top)
                  for c in cols]
        best = tree_reduce(leaves, merge_top_n, plan.top)
        graphs.append(dask.delayed(_write_top_task, pure=True)(best, plan.out, r))
    return graphs


def _create(plan: MatmulPlan, facts: dict[str, Any]) -> Any:
    """The output group, marked incomplete, with its empty arrays."""
    import zarr

    group = zarr.open_group(plan.out, mode="w-")
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
    return group


def execute_matmul(plan: MatmulPlan, scheduler: Any = None, progress: bool = False) -> None:
    """Run a ``MatmulPlan``: one compute over all tiles; ``"complete": true`` written last.

    Parameters
    ----------
    plan : MatmulPlan
    scheduler : str, distributed.Client or None, default=None
        As for ``ddrp_dask.execute``.
    progress : bool, default=False
        A progress bar on stderr.
    """

    check_visible(cast(Any, plan), scheduler)
    check_memory(cast(Any, plan), scheduler)
    facts = plan.facts()
    if plan.overwrite:
        remove_output(plan.out)
    group = _create(plan, facts)
    try:
        compute(_graphs(plan), scheduler, progress, "matmul")
    except DdrpError:  # an unreadable sketch chunk: leave no output behind
        remove_output(plan.out)
        raise
    finish(group, facts)
