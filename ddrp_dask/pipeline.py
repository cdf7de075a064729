"""Wire the numpy stages into Dask and run a ``Plan``.

Pass 1 maps ``block_moments`` over canonical row blocks and merges them in a fixed tree of
aligned groups (the same tree as ``stats.combine_all``), so the statistics — hence the model
and the sketches — are bit-identical on any scheduler and for any input chunking or format.
Pass 2 maps ``project_block`` over the same blocks; each task writes exactly one chunk of the
output array, so tasks never share a chunk and a retried task rewrites the same bytes.
Every task opens its input itself: the client ships only small descriptions and the model.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import dask
import numpy as np

from ._threads import one_blas_thread
from .build import build
from .errors import DdrpError, OptionError
from .io import Source, read_valid
from .model import SideMap, SketchModel, load_model, save_model
from .output import (
    finish,
    mark_done,
    open_output,
    output_state,
    pending_blocks,
    record_skipped,
    remove_output,
    write_rows,
)
from .plan import Plan, plan_summary
from .project import project_block, sketch_valid
from .stats import Moments, block_moments, combine_all

__all__ = ["compute", "compute_moments", "execute", "fit_model", "tree_reduce"]

#: Leaves merged per reduction task; groups are aligned, so the tree equals combine_all's.
FAN_IN = 8


# ---------------------------------------------------------------------------------------
# tasks (run on workers; each pins BLAS to one thread: Dask threads x BLAS threads <= cores)


def _stats_task(src: Source, start: int, stop: int, side: str, skip: bool) -> Moments:
    with one_blas_thread():
        block, bad, colsum = read_valid(src, start, stop, f"--{side} {src.path}", skip)
        if bad.size:
            return block_moments(np.delete(block, bad, axis=0))
        # shift in place when the block is ours to change (zarr decodes a fresh array;
        # memory maps and Arrow buffers are read-only and get copied by the shift)
        return block_moments(block, colsum, overwrite_input=block.flags.writeable)


def _project_task(src: Source, start: int, stop: int, side: str, side_map: SideMap,
                  out: str, array: str, block: int, ids_array: str | None, skip: bool) -> int:
    """Sketch one block, write its chunk (and its ids), then its done flag (2 when it skipped
    rows); a retry rewrites the same bytes."""
    where = f"{side} input {src.path}"
    with one_blas_thread():
        rows, bad, _ = read_valid(src, start, stop, where, skip, check=False)
        sketch = sketch_valid(rows, bad, side_map, where, start,
                              overwrite_input=rows.flags.writeable)
    write_rows(f"{out}/{array}", slice(start, stop), sketch)
    if ids_array is not None:
        write_rows(f"{out}/{ids_array}", slice(start, stop), src.read_ids(start, stop))
    mark_done(out, array, block, 2 if bad.size else 1)
    return stop - start


def tree_reduce(leaves: list[Any], merge: Callable[..., Any], *args: Any) -> Any:
    """Merge delayed results with ``merge(group, *args)`` in aligned groups of ``FAN_IN``,
    level by level: a fixed tree, so the result is the same however it is scheduled (for
    Moments it equals ``combine_all``'s tree)."""
    level = leaves
    while len(level) > 1:
        level = [dask.delayed(merge, pure=True)(level[i:i + FAN_IN], *args)
                 for i in range(0, len(level), FAN_IN)]
    return level[0]


# ---------------------------------------------------------------------------------------
# computing


def _client_of(scheduler: Any) -> Any:
    """The distributed Client to use: the one given, or (for None) the active one, if any."""
    from distributed import Client

    if isinstance(scheduler, Client):
        return scheduler
    if scheduler is None:
        try:
            from distributed import get_client

            return get_client()
        except ValueError:
            return None
    return None


def _missing_paths(paths: list[str]) -> list[str]:
    """Run on each worker: which of the local paths it cannot see."""
    import os

    return [p for p in paths if not os.path.exists(p)]


def check_visible(plan: Plan, scheduler: Any) -> None:
    """Fail early when a worker of the cluster cannot see a local input or the output's
    directory (e.g. a laptop path given to a remote cluster)."""
    client = _client_of(scheduler)
    if client is None:
        return
    import os

    paths = [src.path for src in plan.sources.values()]
    if plan.model_path:
        paths.append(plan.model_path)
    if plan.out:
        paths.append(os.path.dirname(os.path.abspath(plan.out)))
    paths = [p for p in paths if "://" not in p]
    missing = client.run(_missing_paths, paths)
    for worker, gone in sorted(missing.items()):
        if gone:
            raise OptionError(
                f"{gone[0]} is not visible to worker {worker}; put inputs and outputs on a "
                "filesystem every worker mounts, or use URLs they can reach (s3://, gs://, ...)"
            )


def check_memory(plan: Plan, scheduler: Any) -> None:
    """Refuse, before any work, blocks that would not fit the workers' memory: a task holds
    about ``plan.memory_per_task()`` bytes and a worker runs one task per thread."""
    need = plan.memory_per_task()
    client = _client_of(scheduler)
    if client is not None:
        workers = [(addr, w.get("memory_limit") or 0, w.get("nthreads") or 1)
                   for addr, w in client.scheduler_info(n_workers=-1)["workers"].items()]
    else:
        import os

        import psutil

        workers = [("this machine", psutil.virtual_memory().available, os.cpu_count() or 1)]
    for addr, limit, threads in workers:
        budget = 0.6 * limit / threads  # Dask starts spilling at 60 % of the limit
        if limit and need > budget:
            rows = max(1, int(plan.block_rows * budget / need))
            fit_rows = 2 ** (rows.bit_length() - 1)
            raise OptionError(
                f"a block of {plan.block_rows} rows needs about {need / 2**20:.0f} MiB per task, "
                f"but {addr} offers {budget / 2**20:.0f} MiB per thread ({threads} thread(s), "
                f"memory {limit / 2**20:.0f} MiB); pass --block-rows {fit_rows}, or give the "
                "workers more memory or fewer threads"
            )


def compute(objs: Sequence[Any], scheduler: Any, progress: bool, label: str) -> list[Any]:
    """One ``dask.compute`` of ``objs`` on ``scheduler`` (a name, a Client or None), with a
    progress bar on stderr when asked."""
    client = _client_of(scheduler)
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
        ranges = plan.block_ranges(side)
        leaves = [dask.delayed(_stats_task, pure=True)(src, *ranges[i], side, plan.skip)
                  for i in plan.stats_blocks(side)]
        graphs.append(tree_reduce(leaves, combine_all))
    results = compute(graphs, scheduler, progress, "pass 1: statistics")
    return dict(zip(plan.sources, results, strict=True))


def fit_model(plan: Plan, scheduler: Any = None, progress: bool = False) -> SketchModel:
    """Pass 1 and the build: the fitted model of a ``fit`` or ``run`` plan (nothing written)."""
    moments = compute_moments(plan, scheduler, progress)
    k = plan.k
    if plan.target_rel_mse is not None:  # K from the statistics: the smallest that meets it
        from .choose import min_k

        k = min_k(moments["x"], moments["w"], plan.target_rel_mse, plan.method, plan.shrinkage)
    return build(moments["x"], moments["w"], k, plan.method, plan.seed, plan.shrinkage,
                 provenance=plan_summary(plan))


def _output_names(plan: Plan) -> dict[str, tuple[str, str | None]]:
    """side → (sketch array, ids array or None): ``x``/``w``/``x_ids``/``w_ids`` for run,
    ``sketch``/``ids`` for project."""
    names = {}
    for side, src in plan.sources.items():
        prefix = f"{side}_" if plan.command == "run" else ""
        sketch = side if plan.command == "run" else "sketch"
        names[side] = (sketch, f"{prefix}ids" if src.id_column else None)
    return names


def _project_graphs(plan: Plan, model: SketchModel, group: Any,
                    names: dict[str, tuple[str, str | None]]) -> list[Any]:
    """One task per pending block (all blocks, unless resuming), summed per side."""
    graphs = []
    for side, (name, ids_name) in names.items():
        side_map = dask.delayed(model.side(side), pure=True)
        ranges = plan.block_ranges(side)
        tasks = [dask.delayed(_project_task, pure=True)(plan.sources[side], *ranges[i], side,
                                                         side_map, plan.out, name, int(i),
                                                         ids_name, plan.skip)
                 for i in pending_blocks(group, name)]
        graphs.append(dask.delayed(sum, pure=True)(tasks))
    return graphs


def _resolve_model(plan: Plan, scheduler: Any, progress: bool) -> SketchModel:
    """The model a plan uses: the saved one (project; a resumed run whose model was
    saved), else pass 1 and the build."""
    if plan.command == "project":
        assert plan.model is not None
        return plan.model
    saved = plan.out if plan.command == "fit" else f"{plan.out}/model"
    if plan.resume and output_state(saved) == "complete":
        model = load_model(saved)
        if model.method == plan.method and model.seed == plan.seed and \
                (model.k == plan.k or plan.target_rel_mse is not None):
            return model
    return fit_model(plan, scheduler, progress)


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
    if plan.command == "stats":
        raise ValueError("a stats plan is run with compute_moments(plan)")
    check_visible(plan, scheduler)
    check_memory(plan, scheduler)
    done = plan.resume and output_state(plan.out) == "complete"
    model = _resolve_model(plan, scheduler, progress)
    if on_model is not None:
        on_model(model)
    if done:
        return model
    if plan.overwrite:  # only now: a failure up to here leaves the old output intact
        remove_output(plan.out)
    if plan.command == "fit":
        remove_output(plan.out)  # an interrupted save, when resuming
        save_model(model, plan.out)
        return model
    if plan.format == "parquet":
        _execute_parquet(plan, model, scheduler, progress)
        return model
    names = _output_names(plan)
    facts = dict(plan_summary(plan), k=model.k)
    sketches = {name: (plan.sources[side].n_rows, model.k) for side, (name, _) in names.items()}
    ids = {ids_name: (plan.sources[side].n_rows, str(plan.sources[side].id_dtype))
           for side, (_, ids_name) in names.items() if ids_name}
    group = open_output(plan.out, facts, sketches, plan.block_rows, plan.resume, ids)
    if plan.command == "run" and output_state(f"{plan.out}/model") != "complete":
        remove_output(f"{plan.out}/model")
        save_model(model, f"{plan.out}/model")
    with _removed_on_data_error(plan):
        compute(_project_graphs(plan, model, group, names), scheduler, progress,
                 "pass 2: projection")
    if plan.skip:
        facts["skipped"] = record_skipped(group, plan, names)
    finish(group, facts)
    return model


@contextlib.contextmanager
def _removed_on_data_error(plan: Plan) -> Iterator[None]:
    """A bad input met in pass 2 (a block pass 1 did not read) leaves no output behind,
    unless resuming (then the finished blocks are kept for a rerun after the fix)."""
    try:
        yield
    except DdrpError:
        if not plan.resume:
            remove_output(plan.out)
        raise


def _execute_parquet(plan: Plan, model: SketchModel, scheduler: Any, progress: bool) -> None:
    """Pass 2 into Parquet datasets (``ddrp_dask.parquet_out``): one task per output file."""
    from . import parquet_out

    facts = dict(plan_summary(plan), k=model.k)
    marker = parquet_out.read_marker(plan.out)
    if marker is not None and plan.resume:
        from .output import _check_same_plan

        _check_same_plan(plan.out, marker.get("ddrp", {}), facts)
    parquet_out.write_marker(plan.out, False, facts)
    if plan.command == "run" and output_state(f"{plan.out}/model") != "complete":
        remove_output(f"{plan.out}/model")
        save_model(model, f"{plan.out}/model")
    graphs, jobs = [], {}
    for side, src in plan.sources.items():
        out_dir = f"{plan.out}/{side}" if plan.command == "run" else plan.out
        side_map = dask.delayed(model.side(side), pure=True)
        jobs[side] = parquet_out.file_jobs(src, out_dir, plan.block_rows)
        tasks = [dask.delayed(parquet_out.write_file, pure=True)(src, ranges, side, side_map,
                                                                 target, model.k, plan.skip)
                 for target, ranges in jobs[side]
                 if not (plan.resume and parquet_out.exists(target))]
        graphs.append(dask.delayed(list, pure=True)(tasks))
    with _removed_on_data_error(plan):
        compute(graphs, scheduler, progress, "pass 2: projection")
    if plan.skip:  # read back from the files, so files finished before a resume count too
        facts["skipped_rows"] = {side: sorted(r for target, _ in side_jobs
                                              for r in parquet_out.skipped_of(target))
                                 for side, side_jobs in jobs.items()}
        facts["skipped"] = {side: len(rows) for side, rows in facts["skipped_rows"].items()}
    parquet_out.write_marker(plan.out, True, facts)


def sketch_numpy(model: SketchModel, side: str, data: np.ndarray,
                 block_rows: int | None = None) -> np.ndarray:
    """Sketch an in-memory array with ``model`` block by block, as pass 2 does (no Dask)."""
    from .io import working_dtype

    arr = np.ascontiguousarray(data, dtype=working_dtype(np.asarray(data).dtype))
    rows = block_rows or int(model.provenance.get("block_rows") or max(len(arr), 1))
    with one_blas_thread():  # the bytes of a float32 product depend on BLAS threads
        parts = [project_block(arr[i:i + rows], model.side(side))
                 for i in range(0, len(arr), rows)]
    return np.concatenate(parts) if parts else np.zeros((0, model.k), np.float32)
