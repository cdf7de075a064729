"""Output locations: safety checks, the incomplete → complete life cycle, and resumption.

An output group is created with ``"complete": false`` and the plan's facts, plus one
``_progress_<array>`` flag array (one uint8 per block, one chunk per flag). A pass-2 task
writes its chunk of sketches, then its flag; ``finish`` deletes the flags and sets
``"complete": true`` last. So an interrupted output always says so, and ``--resume`` knows
exactly which blocks are done (a flag is written only after its chunk).

Staging (``begin`` → write → ``commit``). A local output ``DIR/NAME`` is written in the
hidden directory ``DIR/.NAME.ddrp-partial`` (``staging_path``), on the same filesystem, and
appears as ``DIR/NAME`` only by one ``os.rename`` at the end: so no reader (plain zarr, dask,
pyarrow) ever sees a partial output as data, and an earlier output replaced with
``--overwrite`` stays intact and readable until that rename (it is first renamed away to
``DIR/.NAME.ddrp-old``, then deleted). ``--resume`` continues in the staging directory (or,
for outputs of older versions, in an incomplete ``DIR/NAME``, which is moved there first).
URLs (object stores have no atomic rename) are written in place, as before: readers must
check ``complete`` (Zarr attribute, or ``_ddrp.json`` for Parquet) themselves.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import OptionError, OutputError
from ..maths.quantize import not_finite_rows
from .common import filesystem, is_url
from .partials import PartialSums
from .source import Source
from .writer import ArraySpec, consolidate, create_array, write_rows

MARKER = "_ddrp.json"

__all__ = [
    "MARKER",
    "RESUME_KEYS",
    "begin",
    "begin_pass1",
    "check_file_out",
    "check_out",
    "check_resumable",
    "check_room",
    "check_same_plan",
    "commit",
    "current_path",
    "drop_staged",
    "finish",
    "mark_done",
    "open_output",
    "output_facts",
    "output_state",
    "pending_blocks",
    "read_marker",
    "read_node",
    "record_skipped",
    "remove_output",
    "remove_within",
    "sketch_arrays",
    "staging_path",
    "write_marker",
]

#: Facts of a plan that must match for an incomplete output to be resumed.
RESUME_KEYS = ("command", "method", "k", "target_rel_mse", "seed", "block_rows", "shrinkage",
               "stats_fraction", "model", "inputs", "top", "per", "format", "block_cols")


def read_node(path: str | os.PathLike[str]) -> tuple[str | None, dict[str, Any]]:
    """(node type, attributes) of the Zarr v3 node at ``path`` — or ``("parquet", marker)``
    for a Parquet output, or ``(None, {})`` when there is neither."""
    fs, inner = filesystem(str(path))
    try:
        meta = json.loads(fs.cat_file(f"{inner.rstrip('/')}/zarr.json"))
    except (OSError, ValueError):
        marker = read_marker(str(path))
        return ("parquet", marker) if marker is not None else (None, {})
    return meta.get("node_type"), dict(meta.get("attributes") or {})


def staging_path(out: str | os.PathLike[str]) -> str | None:
    """Where a local output ``DIR/NAME`` is written until it is complete:
    ``DIR/.NAME.ddrp-partial`` (hidden, same filesystem, so ``commit`` is one rename); None
    for a URL, which is written in place."""
    if is_url(str(out)):
        return None
    p = Path(out)
    return str(p.parent / f".{p.name}.ddrp-partial")


def _old_path(out: str) -> str:
    """Where an output replaced by ``commit`` waits, briefly, to be deleted."""
    p = Path(out)
    return str(p.parent / f".{p.name}.ddrp-old")


def _state(path: str | os.PathLike[str]) -> str | None:
    """The state recorded in the node at ``path`` itself."""
    attrs = read_node(path)[1]
    if attrs.get("format") != "ddrp-model" and "ddrp" not in attrs:
        return None
    return "complete" if attrs.get("complete") is True else "incomplete"


def output_state(path: str | os.PathLike[str], staged: bool = True) -> str | None:
    """``"complete"``/``"incomplete"`` for a ddrp output group or model, else None. A ddrp
    output staged for ``path`` (``staging_path``) makes it ``"incomplete"`` — even when a
    complete earlier output is still at ``path`` — unless ``staged=False`` (what a reader of
    ``path`` sees)."""
    stage = staging_path(path) if staged else None
    if stage is not None and _state(stage) is not None:
        return "incomplete"
    return _state(path)


def current_path(out: str) -> str:
    """Where the output ``out`` stands now: its staging directory when there is a ddrp
    output there, else ``out``."""
    stage = staging_path(out)
    return stage if stage is not None and _state(stage) is not None else out


def check_room(out: str, nbytes: int) -> None:
    """Refuse a local output whose filesystem has less free space than ``nbytes`` (the
    uncompressed size: an upper bound; compression usually saves a little). An earlier ddrp
    output at ``out`` (``--overwrite``) stays intact until the new one is complete and
    renamed over it (``commit``), so both must fit at once: the old one's bytes are already
    taken from the filesystem, so the new one's must be free — and the refusal says that
    the old output is not freed first."""
    if is_url(out):
        return
    parent = Path(out).resolve().parent
    free = shutil.disk_usage(parent).free
    if free >= nbytes:
        return
    old = _tree_bytes(out) if _state(out) is not None else 0
    if not old:
        raise OutputError(f"output {out} needs up to {_mib(nbytes)} MiB but {parent} has "
                          f"{_mib(free)} MiB free; free space or choose another output")
    raise OutputError(
        f"output {out} needs up to {_mib(nbytes)} MiB beside the output it replaces "
        f"({_mib(old)} MiB), which stays intact until the new one is complete: "
        f"{_mib(old + nbytes)} MiB in all, but {parent} has {_mib(free)} MiB free besides "
        "the old output's; free space, delete the old output first, or choose another output")


def _mib(nbytes: int) -> str:
    """A size in MiB for a message: one decimal below 10 MiB."""
    mib = nbytes / 2**20
    return f"{mib:.1f}" if mib < 10 else f"{mib:.0f}"


def _tree_bytes(path: str) -> int:
    """Bytes of the files under ``path`` (a file: its size)."""
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path)
               for f in files)


def output_facts(path: str) -> dict[str, Any]:
    """The provenance an output records (``ddrp`` attribute or Parquet marker) — the staged
    one's while there is one."""
    attrs = read_node(current_path(path))[1]
    facts = attrs.get("provenance" if attrs.get("format") == "ddrp-model" else "ddrp", {})
    return facts if isinstance(facts, dict) else {}


def check_out(out: str, inputs: list[str], overwrite: bool, resume: bool = False) -> None:
    """Refuse an output that is, contains or sits inside an input; one that exists, unless
    ``overwrite`` (or ``resume`` for a ddrp output); and anything not ddrp's to delete."""
    if overwrite and resume:
        raise OptionError("--overwrite and --resume contradict each other; choose one")
    if is_url(out):
        return _check_out_url(out, inputs, overwrite, resume)
    out_p = Path(out).resolve()
    for src in inputs:
        src_p = Path(src).resolve()
        if out_p == src_p or src_p in out_p.parents or out_p in src_p.parents:
            raise OutputError(f"output {out} overlaps input {src}; choose an output outside "
                              "the inputs")
    if not out_p.exists() and output_state(out) is None:
        if not out_p.parent.exists():
            raise OutputError(f"output {out}: parent directory {out_p.parent} does not exist")
        if not os.access(out_p.parent, os.W_OK):
            raise OutputError(f"output {out}: directory {out_p.parent} is not writable")
        return
    _check_existing(out, overwrite, resume)


def check_file_out(out: str, inputs: list[str], overwrite: bool) -> None:
    """Refuse a one-file output (a path or URL) that is an input, whose directory does not
    exist, or that exists, unless ``overwrite``."""
    fs, inner = filesystem(out)
    for src in inputs:
        if filesystem(src)[1].rstrip("/") == inner.rstrip("/"):
            raise OutputError(f"output {out} is the input {src}; choose another output")
    if not is_url(out) and not Path(out).resolve().parent.is_dir():
        raise OutputError(f"output {out}: directory {Path(out).resolve().parent} does not "
                          "exist")
    if fs.exists(inner) and not overwrite:
        raise OutputError(f"{out} exists; pass --overwrite to replace it")


def _check_out_url(out: str, inputs: list[str], overwrite: bool, resume: bool) -> None:
    norm = out.rstrip("/") + "/"
    for src in inputs:
        other = src.rstrip("/") + "/"
        if norm.startswith(other) or other.startswith(norm):
            raise OutputError(f"output {out} overlaps input {src}; choose an output outside "
                              "the inputs")
    fs, inner = filesystem(out)
    if fs.exists(inner):
        _check_existing(out, overwrite, resume)


def _check_existing(out: str, overwrite: bool, resume: bool) -> None:
    """The rules for an output location that already exists."""
    state = output_state(out)
    if state is None:  # not ours: no flag may delete it, so none is suggested
        raise OutputError(f"output {out} exists and is not a ddrp output; ddrp will not "
                          "replace it (not even with --overwrite): choose another output")
    if resume:
        return
    if not overwrite:
        if state == "incomplete":
            stage = current_path(out)
            where = f", kept at {stage}" if stage != out else ""
            raise OutputError(f"output {out} is an incomplete ddrp output (an interrupted "
                              f"run{where}); pass --resume to finish it or --overwrite to "
                              "replace it")
        raise OutputError(f"output {out} exists; pass --overwrite to replace it")


def remove_within(path: str) -> None:
    """Delete whatever is at ``path`` inside a ddrp output being written (e.g. a model save
    that was interrupted before it marked itself)."""
    fs, inner = filesystem(path)
    if fs.exists(inner):
        fs.rm(inner, recursive=True)


def remove_output(out: str) -> None:
    """Delete the ddrp output at ``out`` itself (vetted by ``check_out``), if there is one."""
    if _state(out) is not None:
        fs, inner = filesystem(out)
        fs.rm(inner, recursive=True)


def _remove_tree(path: str) -> None:
    """Delete a staging or replaced directory of ddrp's own (hidden, named by ddrp)."""
    for attempt in range(5):
        if not os.path.lexists(path):
            return
        try:
            shutil.rmtree(path)
            return
        except OSError:
            # a task of a failed job may still be finishing a file inside (pass 1's partial
            # sums on a threaded scheduler): try again once it has
            if attempt == 4:
                raise
            time.sleep(0.2 * (attempt + 1))


def begin(out: str, resume: bool) -> str:
    """Start (or, with ``resume``, continue) writing the output ``out``; returns the path
    to write to. Local: the staging directory (an earlier staged output is deleted unless
    resuming; an old-style incomplete ``out`` is moved there to be resumed; an earlier
    complete ``out`` is left readable until ``commit``). URL: ``out`` itself, in place (an
    earlier output is deleted unless resuming)."""
    stage = staging_path(out)
    if stage is None:
        if not resume:
            remove_output(out)
        return out
    _remove_tree(_old_path(out))  # left by a commit interrupted after its renames
    if resume:
        if _state(stage) is not None:
            return stage
        if _state(out) == "incomplete":  # written in place by an older version
            _remove_tree(stage)
            os.rename(out, stage)
            return stage
    _remove_tree(stage)
    return stage


def begin_pass1(out: str, facts: dict[str, Any], resume: bool,
                lowest: int = 0) -> PartialSums | None:
    """Where pass 1 of a job writing the local output ``out`` keeps its finished partial
    sums (``io.partials``): in the staging directory, created as an incomplete ddrp output
    with the plan's ``facts`` (so that it is refused without ``--resume`` and vetted with
    it, as any interrupted output), or, with ``resume``, the one already there; ``lowest``:
    the lowest level of the tree saved (``PartialSums.lowest``). None for a URL: there pass
    1 keeps nothing."""
    stage = staging_path(out)
    if stage is None:
        return None
    if not (resume and _state(stage) is not None):
        import zarr

        _remove_tree(stage)
        zarr.open_group(stage, mode="w-", attributes={"complete": False, "ddrp": facts})
    return PartialSums(os.path.join(stage, "_pass1"), lowest)


def drop_staged(out: str) -> None:
    """Delete the staging directory of ``out`` (a run that failed on bad input leaves
    nothing behind)."""
    stage = staging_path(out)
    if stage is not None:
        _remove_tree(stage)


def commit(out: str, work: str) -> None:
    """Make the finished output at ``work`` (from ``begin``) appear as ``out``: for a local
    output, an earlier ddrp output is renamed away, the staging directory renamed to
    ``out`` (atomic: same directory), then the earlier one deleted. Nothing for a URL."""
    if work == out:
        return
    old = _old_path(out)
    if os.path.lexists(out):
        if _state(out) is None:
            raise OutputError(f"output {out} appeared while the job ran and is not a ddrp "
                              f"output; the finished output is kept at {work}")
        _remove_tree(old)
        os.rename(out, old)
    os.rename(work, str(Path(out)))
    _remove_tree(old)


def progress_name(array: str) -> str:
    """Name of the flag array of one output array."""
    return f"_progress_{array}"


def open_output(out: str, facts: dict[str, Any], arrays: Sequence[ArraySpec],
                blocks: Mapping[str, int], resume: bool) -> Any:
    """The output group, created marked incomplete with its empty ``arrays`` and one flag
    array per entry of ``blocks`` (array name → number of blocks, i.e. of tasks writing it)
    — or, when resuming, the existing incomplete group (``check_resumable`` vetted it when
    the job was planned)."""
    import zarr

    if resume and _state(out) == "incomplete":
        group = zarr.open_group(out, mode="r+")
        wanted = [*(a.name for a in arrays), *map(progress_name, blocks)]
        if all(name in group for name in wanted):
            return group
        # interrupted while its arrays were being created: no block was written in it yet
        fs, inner = filesystem(out)
        fs.rm(inner, recursive=True)
    # the group appears with its marks in one write: never a ddrp group without them
    group = zarr.open_group(out, mode="w-", attributes={"complete": False, "ddrp": facts})
    for spec in arrays:
        create_array(group, spec)
    for name, n_blocks in blocks.items():
        create_array(group, ArraySpec(progress_name(name), (n_blocks,), "uint8", (1,),
                                      (f"_block_{name}",), "none", 0))
    return group


def sketch_arrays(name: str, ids: str | None, rows: int, k: int, block_rows: int,
                  id_dtype: str, side: str) -> list[ArraySpec]:
    """The arrays of one side's float32 sketches (``rows`` × ``k``, dimensions
    ``{side}_row`` and ``component``) and of its ids, one chunk per block."""
    chunk = min(block_rows, rows)
    specs = [ArraySpec(name, (rows, k), "float32", (chunk, k), (f"{side}_row", "component"),
                       "float")]
    if ids is not None:
        specs.append(ArraySpec(ids, (rows,), id_dtype, (chunk,), (f"{side}_row",)))
    return specs


def check_resumable(out: str, facts: dict[str, Any], resume: bool) -> None:
    """With ``resume``, refuse — before any pass runs — an existing ddrp output (complete or
    not) that another plan made; the message says what differs, in words."""
    if resume and output_state(out) is not None:
        check_same_plan(out, output_facts(out), facts)


#: How the facts compared on resume are named in messages.
_NAMES = {"command": "the command", "method": "method", "k": "K", "seed": "seed",
          "block_rows": "block rows", "shrinkage": "shrinkage",
          "stats_fraction": "stats fraction", "target_rel_mse": "target relative MSE",
          "model": "the model", "top": "top", "per": "per", "format": "format",
          "block_cols": "block cols"}


def check_same_plan(out: str, recorded: dict[str, Any], facts: dict[str, Any]) -> None:
    """Refuse to resume ``out`` unless its ``recorded`` facts match this plan's ``facts``
    (``RESUME_KEYS``; K is not compared when this plan chooses it from a target)."""
    diffs = []
    for key in RESUME_KEYS:
        then, now = _strip(recorded.get(key)), _strip(facts.get(key))
        if (key == "k" and facts.get("target_rel_mse") is not None) or \
                (key == "model" and now is None):  # chosen after pass 1: not known yet
            continue
        if key == "inputs" and isinstance(then, dict) and isinstance(now, dict):
            diffs += [f"input {side} was {_input_text(then[side])}; this run reads "
                      f"{_input_text(now[side])}"
                      for side in sorted(set(then) & set(now)) if then[side] != now[side]]
        elif then != now:
            diffs.append(f"the output was made with {_NAMES.get(key, key)}={then}; this run "
                         f"asks for {_NAMES.get(key, key)}={now}")
    if diffs:
        raise OutputError(f"cannot resume {out}: {'; '.join(diffs)}; pass --overwrite to "
                          "start again")


def _strip(value: Any) -> Any:
    """Plan facts as compared on resume: JSON-normalised, without paths (inputs may move)."""
    value = json.loads(json.dumps(value))
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if k != "path"}
    return value


def _input_text(fingerprint: Any) -> str:
    if not isinstance(fingerprint, dict):
        return str(fingerprint)
    shape = fingerprint.get("shape") or ["?", "?"]
    return (f"{fingerprint.get('kind')} {shape[0]} x {shape[1]} {fingerprint.get('dtype')} "
            f"(digest {fingerprint.get('digest')})")


def pending_blocks(group: Any, array: str) -> np.ndarray:
    """Indices of the blocks of ``array`` whose flag is not set."""
    flags = np.asarray(group[progress_name(array)][...])
    return np.flatnonzero(flags != 1)


def mark_done(out: str, array: str, block: int, flag: int = 1) -> None:
    """Set one block's flag after its chunk was written: 1 done, 2 done with skipped rows."""
    write_rows(f"{out}/{progress_name(array)}", slice(block, block + 1),
               np.array([flag], dtype=np.uint8))


def record_skipped(group: Any, block_rows: int,
                   outputs: dict[str, tuple[str, str | None, str, Source]]) -> dict[str, int]:
    """Find the skipped (NaN) rows of the blocks flagged 2 and store their row indices as
    ``<prefix>skipped_rows`` (and ids as ``<prefix>skipped_ids``), both along the dimension
    ``{side}_skipped``; ``outputs``: side → (sketch array, ids array or None, prefix,
    source). Returns counts per side. Reads one flagged chunk at a time, so it also covers
    blocks done before a resume."""
    counts = {}
    for side, (name, ids_name, prefix, src) in outputs.items():
        flags = np.asarray(group[progress_name(name)][...])
        rows = []
        for b in np.flatnonzero(flags == 2):
            start = int(b) * block_rows
            probe = f"{name}_scale" if f"{name}_scale" in group else name  # quantized
            chunk = group[probe][start:start + block_rows]
            rows.append(start + np.flatnonzero(not_finite_rows(chunk)))  # NaN or sentinel
        skipped = np.concatenate(rows) if rows else np.zeros(0, dtype=np.int64)
        dims = (f"{side}_skipped",)
        arr = create_array(group, ArraySpec(f"{prefix}skipped_rows", skipped.shape, "int64",
                                            (len(skipped),), dims), overwrite=True)
        arr[...] = skipped
        if ids_name is not None:
            ids = np.concatenate([src.read_ids(int(r), int(r) + 1) for r in skipped]) \
                if skipped.size else np.zeros(0, dtype=str)
            ida = create_array(group, ArraySpec(
                f"{prefix}skipped_ids", ids.shape, "str" if ids.dtype.kind in "OUS" else "int64",
                (len(ids),), dims), overwrite=True)
            ida[...] = ids
        counts[side] = int(skipped.size)
    return counts


def finish(group: Any, facts: dict[str, Any]) -> None:
    """Drop the flags and mark the output complete, with its provenance; then consolidate
    its metadata (``writer.consolidate``), which snapshots the completed state: the last
    write."""
    for name in list(group.array_keys()):
        if name.startswith("_progress_"):
            del group[name]
    group.attrs.update({"complete": True, "ddrp": facts})
    consolidate(group)


def write_marker(out: str, complete: bool, facts: dict[str, Any]) -> None:
    """Write ``OUT/_ddrp.json``: the completion flag and the provenance."""
    fs, inner = filesystem(out)
    fs.makedirs(inner, exist_ok=True)
    fs.pipe_file(f"{inner}/{MARKER}", json.dumps({"complete": complete, "ddrp": facts},
                                                 indent=1).encode())


def read_marker(out: str) -> dict[str, Any] | None:
    """The marker's content, or None when there is none."""
    fs, inner = filesystem(out)
    try:
        doc = json.loads(fs.cat_file(f"{inner.rstrip('/')}/{MARKER}"))
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def exists(target: str) -> bool:
    """Whether an output file is already complete (it exists under its final name)."""
    fs, inner = filesystem(target)
    return bool(fs.exists(inner))
