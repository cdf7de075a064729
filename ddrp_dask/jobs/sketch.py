"""Pass 2, shared by ``run`` and ``project``: sketch sources through a model into a Zarr
group or Parquet datasets, with the output's life cycle (create or resume, complete)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from ..errors import DdrpError, RunError
from ..graph.passes import SketchTarget, project_parquet, project_zarr
from ..graph.scheduler import Scheduler
from ..io import lifecycle, writer
from ..io.codes import LAYOUT_KEY, zarr_codes
from ..io.common import working_dtype
from ..io.source import Source
from ..io.writer import ArraySpec
from ..maths.blas import one_blas_thread
from ..maths.model import SideMap, SketchModel
from ..maths.project import project_block
from ..maths.quantize import Layout, decode, encode, layout_facts, model_layout
from .base import block_ranges

__all__ = ["SketchTarget", "sketch_numpy", "write_parquet", "write_sketches", "write_zarr",
           "zarr_side_outputs"]


def zarr_side_outputs(out: str, side: str, src: Source, k: int | str, array: str, prefix: str,
                      skip: bool, storage: str = "float32") -> list[str]:
    """The lines of a plan's text for one side's arrays in a Zarr output: its sketches
    ``array`` (stored as ``storage``), its ids ``{prefix}ids`` (with an id column) and, with
    ``skip``, the lists of the rows left out."""
    lines = [f"{out}/{array} ({src.n_rows} x {k} {storage})"]
    if src.id_column:
        lines.append(f"{out}/{prefix}ids ({src.n_rows} {src.id_dtype}, id column "
                     f"{src.id_column!r})")
    if skip:
        also = f" and {prefix}skipped_ids" if src.id_column else ""
        lines.append(f"{out}/{prefix}skipped_rows{also} (the {side} rows left out by "
                     "--on-invalid skip)")
    return lines


def _code_specs(array: str, side: str, rows: int, block_rows: int,
                layout: Layout) -> list[ArraySpec]:
    """The Zarr arrays of a quantized sketch ``array`` (``io.codes``): codes and (rows × 1)
    scales per part, dimensions ``{side}_row`` and ``component`` (for two parts, of other
    widths, ``{name}_component``) or ``scale``."""
    chunk = min(block_rows, rows)
    two = len(zarr_codes(array, rows, layout)) > 2
    specs = []
    for name, (n, width, dtype) in zarr_codes(array, rows, layout).items():
        scale = name.endswith("_scale")
        dim = "scale" if scale else f"{name}_component" if two else "component"
        specs.append(ArraySpec(name, (n, width), dtype, (chunk, width), (f"{side}_row", dim),
                               "float"))
    return specs


@contextlib.contextmanager
def _removed_on_data_error(out: str, resume: bool) -> Iterator[None]:
    """A bad input met in pass 2 (a block pass 1 did not read) leaves no output behind,
    unless resuming (then the finished blocks are kept for a rerun after the fix); a run
    that failed (``RunError``: the cluster, a task's own exception) keeps them for
    ``--resume``."""
    try:
        yield
    except DdrpError as e:
        if not (resume or isinstance(e, RunError)):  # a failed run keeps its finished work
            lifecycle.remove_output(out)
        raise


def _storage(model: SketchModel) -> tuple[Layout, int] | None:
    """The model's quantized layout and seed for pass 2 (None: float32)."""
    layout = model_layout(model)
    return None if layout.name == "float32" else (layout, model.seed)


def _maps(model: SketchModel, targets: list[SketchTarget]) -> dict[str, SideMap]:
    """The model's map of every target's side."""
    return {t.side: model.side(t.side) for t in targets}


def write_zarr(out: str, targets: list[SketchTarget], model: SketchModel, block_rows: int,
               facts: dict[str, Any], resume: bool, skip: bool, scheduler: Scheduler,
               progress: bool, created: Callable[[str], None] | None = None) -> None:
    """Pass 2 into the Zarr group ``out`` (the path ``lifecycle.begin`` gave): create (or
    reopen when resuming) it, call ``created(out)``, one task per pending block, the skipped
    rows listed, then ``complete: true``."""
    layout = model_layout(model)
    arrays = [spec for t in targets for spec in lifecycle.sketch_arrays(
        t.array, t.ids, t.source.n_rows, model.k, block_rows, str(t.source.id_dtype), t.side)]
    if layout.name != "float32":  # the float32 sketch array becomes its codes and scales
        codes = {t.array: _code_specs(t.array, t.side, t.source.n_rows, block_rows, layout)
                 for t in targets}
        arrays = [c for spec in arrays for c in codes.get(spec.name, [spec])]
    blocks = {t.array: len(block_ranges(t.source.n_rows, block_rows)) for t in targets}
    group = lifecycle.open_output(out, facts, arrays, blocks, resume)
    if layout.name != "float32":
        for t in targets:
            group[t.array].attrs.update({LAYOUT_KEY: layout_facts(layout)})
    if created is not None:
        created(out)
    def jobs() -> list[Any]:  # the blocks not flagged done (again after a lost worker)
        todo = []
        for t in targets:
            ranges = block_ranges(t.source.n_rows, block_rows)
            pending = [(int(b), *ranges[b]) for b in lifecycle.pending_blocks(group, t.array)]
            todo.append((t, pending))
        return todo

    with _removed_on_data_error(out, resume):
        project_zarr(jobs, _maps(model, targets), out, skip, scheduler, progress,
                     _storage(model))
    if skip:
        facts["skipped"] = lifecycle.record_skipped(
            group, block_rows, {t.side: (t.array, t.ids, t.prefix, t.source) for t in targets})
    lifecycle.finish(group, facts)


def write_parquet(out: str, targets: list[SketchTarget], model: SketchModel, block_rows: int,
                  facts: dict[str, Any], resume: bool, skip: bool, scheduler: Scheduler,
                  progress: bool, created: Callable[[str], None] | None = None) -> None:
    """Pass 2 into Parquet datasets under ``out`` (the path ``lifecycle.begin`` gave;
    ``io.writer.write_file``): one task per output file; files finished before a resume are
    kept."""
    lifecycle.write_marker(out, False, facts)  # a resumed plan was vetted when planned
    if created is not None:
        created(out)
    files = {t.side: writer.file_jobs(t.source, f"{out.rstrip('/')}/{t.parquet_dir}"
                                      if t.parquet_dir else out, block_rows)
             for t in targets}
    first = [not resume]

    def jobs() -> list[Any]:  # the files not written yet (again after a lost worker)
        todo = [(t, [(target, ranges) for target, ranges in files[t.side]
                     if first[0] or not lifecycle.exists(target)])
                for t in targets]
        first[0] = False
        return todo

    with _removed_on_data_error(out, resume):
        project_parquet(jobs, _maps(model, targets), model.k, skip, scheduler, progress,
                        _storage(model))
    if skip:  # read back from the files, so files finished before a resume count too
        facts["skipped_rows"] = {side: sorted(r for target, _ in side_files
                                              for r in writer.skipped_of(target))
                                 for side, side_files in files.items()}
        facts["skipped"] = {side: len(rows) for side, rows in facts["skipped_rows"].items()}
    lifecycle.write_marker(out, True, facts)


def write_sketches(fmt: str, out: str, targets: list[SketchTarget], model: SketchModel,
                   block_rows: int, facts: dict[str, Any], resume: bool, skip: bool,
                   scheduler: Scheduler, progress: bool,
                   created: Callable[[str], None] | None = None) -> None:
    """Pass 2 of ``run`` and ``project`` for ``out`` in format ``fmt``: nothing when
    resuming a complete output; else written where ``lifecycle.begin`` says (a local
    output's staging directory, continued when resuming), then ``lifecycle.commit``ted (an
    earlier output, vetted at planning, is replaced only then)."""
    if resume and lifecycle.output_state(out) == "complete":
        return
    work = lifecycle.begin(out, resume)
    if lifecycle.output_state(work, staged=False) != "complete":  # else: only the rename
        write = write_parquet if fmt == "parquet" else write_zarr   # was left to do
        write(work, targets, model, block_rows, facts, resume, skip, scheduler, progress,
              created)
    lifecycle.commit(out, work)


def sketch_numpy(model: SketchModel, side: str, data: np.ndarray,
                 block_rows: int | None = None) -> np.ndarray:
    """Sketch an in-memory array with ``model`` block by block, as pass 2 does (no Dask);
    a quantized model's sketches come back decoded (float32, the values its codes stand
    for, ``docs/quantized.md`` §3)."""
    arr = np.ascontiguousarray(data, dtype=working_dtype(np.asarray(data).dtype))
    rows = block_rows or int(model.provenance.get("block_rows") or max(len(arr), 1))
    with one_blas_thread():  # the bytes of a float32 product depend on BLAS threads
        parts = [project_block(arr[i:i + rows], model.side(side), row0=i)
                 for i in range(0, len(arr), rows)]
    out = np.concatenate(parts) if parts else np.zeros((0, model.k), np.float32)
    layout = model_layout(model)
    if layout.name == "float32":
        return out
    return decode(encode(out, layout, model.seed, side, 0), layout)
