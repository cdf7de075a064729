"""Wire the numpy stages into Dask and run a ``Plan``.

Pass 1 maps ``block_moments`` over canonical row blocks and merges them in a fixed tree of
aligned groups (the same tree as ``stats.combine_all``), so the statistics — hence the model
and the sketches — are bit-identical on any scheduler and for any input chunking or format.
Pass 2 maps ``project_block`` over the same blocks; each task writes exactly one chunk of the
output array, so tasks never share a chunk and a retried task rewrites the same bytes.
Every task opens its input itself: the client ships only small descriptions and the model.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import Any

import dask
import numpy as np
from threadpoolctl import threadpool_limits

from .build import build
from .io import Source, check_finite
from .model import SideMap, SketchModel, save_model
from .plan import Plan, plan_summary, remove_output
from .project import project_block
from .stats import Moments, block_moments, combine_all

__all__ = ["compute_moments", "execute", "fit_model"]

#: Leaves merged per reduction task; groups are aligned, so the tree equals combine_all's.
FAN_IN = 8


# ---------------------------------------------------------------------------------------
# tasks (run on workers; each pins BLAS to one thread: Dask threads x BLAS threads <= cores)


def _stats_task(src: Source, start: int, stop: int, side: str) -> Moments:
    with threadpool_limits(limits=1):
        block = src.read_rows(start, stop)
        check_finite(block, f"--{side} {src.path}", start)
        return block_moments(block)


def _project_task(src: Source, start: int, stop: int, side: str, side_map: SideMap,
                  out_array: str) -> int:
    import zarr

    with threadpool_limits(limits=1):
        block = src.read_rows(start, stop)
        where = f"{side} input {src.path}"
        check_finite(block, where, start)
        sketch = project_block(block, side_map, where, start)
    zarr.open_array(out_array, mode="r+")[start:stop] = sketch
    return stop - start


def _reduce_tree(leaves: list[Any]) -> Any:
    """Merge delayed Moments in aligned groups of ``FAN_IN``, level by level."""
    level = leaves
    while len(level) > 1:
        level = [dask.delayed(combine_all, pure=True)(level[i:i + FAN_IN])
                 for i in range(0, len(level), FAN_IN)]
    return level[0]


# ---------------------------------------------------------------------------------------
# computing


def _compute(objs: Sequence[Any], scheduler: Any, progress: bool, label: str) -> list[Any]:
    """One ``dask.compute`` of ``objs`` on ``scheduler`` (a name, a Client or None), with a
    progress bar on stderr when asked."""
    from distributed import Client

    client = scheduler if isinstance(scheduler, Client) else None
    if client is None and scheduler is None:
        try:
            from distributed import get_client

            client = get_client()
        except ValueError:
            client = None
    if client is not None:
        futures = client.compute(list(objs))
        if progress:
            _progress_futures(futures, label)
        return list(client.gather(futures))
    if progress:
        from dask.diagnostics import ProgressBar

        print(label, file=sys.stderr)
        with ProgressBar(out=sys.stderr):
            return list(dask.compute(*objs, scheduler=scheduler))
    return list(dask.compute(*objs, scheduler=scheduler))


def _progress_futures(futures: list[Any], label: str) -> None:
    """A text bar on stderr advancing as the cluster finishes the job's futures."""
    from distributed import as_completed

    done, total = 0, len(futures)
    for _ in as_completed(futures):
        done += 1
        filled = int(40 * done / total)
        sys.stderr.write(f"\r{label} [{'#' * filled}{' ' * (40 - filled)}] {done}/{total}")
        sys.stderr.flush()
    sys.stderr.write("\n")


def compute_moments(plan: Plan, scheduler: Any = None,
                    progress: bool = False) -> dict[str, Moments]:
    """Pass 1: the statistics of every source of the plan, in one compute."""
    graphs = []
    for side, src in plan.sources.items():
        leaves = [dask.delayed(_stats_task, pure=True)(src, a, b, side)
                  for a, b in plan.block_ranges(side)]
        graphs.append(_reduce_tree(leaves))
    results = _compute(graphs, scheduler, progress, "pass 1: statistics")
    return dict(zip(plan.sources, results, strict=True))


def fit_model(plan: Plan, scheduler: Any = None, progress: bool = False) -> SketchModel:
    """Pass 1 and the build: the fitted model of a ``fit`` or ``run`` plan (nothing written)."""
    moments = compute_moments(plan, scheduler, progress)
    return build(moments["x"], moments["w"], plan.k, plan.method, plan.seed, plan.shrinkage,
                 provenance=plan_summary(plan))


def _create_outputs(plan: Plan, arrays: dict[str, str]) -> Any:
    """The output group, marked incomplete, with one empty float32 array per side."""
    import zarr

    group = zarr.open_group(plan.out, mode="w-")
    group.attrs.update({"complete": False, "ddrp": {"command": plan.command}})
    for side, name in arrays.items():
        rows = plan.sources[side].n_rows
        group.create_array(name, shape=(rows, plan.k), dtype="float32",
                           chunks=(min(plan.block_rows, rows), plan.k),
                           dimension_names=("row", "component"))
    return group


def _project_graphs(plan: Plan, model: SketchModel, arrays: dict[str, str]) -> list[Any]:
    graphs = []
    for side, name in arrays.items():
        side_map = dask.delayed(model.side(side), pure=True)
        target = f"{plan.out}/{name}"
        tasks = [dask.delayed(_project_task, pure=True)(plan.sources[side], a, b, side, side_map,
                                                         target)
                 for a, b in plan.block_ranges(side)]
        graphs.append(dask.delayed(sum, pure=True)(tasks))
    return graphs


def _finish(group: Any, plan: Plan, model: SketchModel) -> None:
    """Mark the output complete, with its provenance: the last write of a job."""
    summary = plan_summary(plan)
    summary["method"], summary["k"], summary["seed"] = model.method, model.k, model.seed
    group.attrs.update({"complete": True, "ddrp": summary})


def execute(plan: Plan, scheduler: Any = None, progress: bool = False,
            on_model: Callable[[SketchModel], None] | None = None) -> SketchModel:
    """Run ``plan`` and return the model it fitted (``fit``/``run``) or used (``project``).

    Parameters
    ----------
    plan : Plan
    scheduler : str, distributed.Client or None, default=None
        A Dask scheduler name ("threads", "sync", "processes"), a Client, or None for the
        active client or Dask's default.
    progress : bool, default=False
        Print a progress bar per pass on stderr.
    on_model : callable, optional
        Called with the model as soon as it is built (before pass 2), e.g. to print the report.
    """
    if plan.command == "project":
        assert plan.model is not None
        model = plan.model
    else:
        model = fit_model(plan, scheduler, progress)
    if on_model is not None:
        on_model(model)
    if plan.overwrite:  # only now: a failure up to here leaves the old output intact
        remove_output(plan.out)
    if plan.command == "fit":
        save_model(model, plan.out)
        return model
    arrays = {"x": "x", "w": "w"} if plan.command == "run" else \
        {next(iter(plan.sources)): "sketch"}
    group = _create_outputs(plan, arrays)
    if plan.command == "run":
        save_model(model, f"{plan.out}/model")
    rows = _compute(_project_graphs(plan, model, arrays), scheduler, progress,
                    "pass 2: projection")
    expected = [plan.sources[side].n_rows for side in arrays]
    if rows != expected:  # pragma: no cover - a task that returned is a task that wrote
        raise RuntimeError(f"pass 2 wrote {rows} rows, expected {expected}")
    _finish(group, plan, model)
    return model


def sketch_numpy(model: SketchModel, side: str, data: np.ndarray,
                 block_rows: int | None = None) -> np.ndarray:
    """Sketch an in-memory array with ``model`` block by block, as pass 2 does (no Dask)."""
    from .io import working_dtype

    arr = np.ascontiguousarray(data, dtype=working_dtype(np.asarray(data).dtype))
    rows = block_rows or int(model.provenance.get("block_rows") or max(len(arr), 1))
    parts = [project_block(arr[i:i + rows], model.side(side)) for i in range(0, len(arr), rows)]
    return np.concatenate(parts) if parts else np.zeros((0, model.k), np.float32)
