"""Partial outputs never read as data: a local output is written in a hidden staging directory
beside OUT and appears only by one rename at the end; ``--resume`` continues the staged state;
``--overwrite`` keeps the old output readable until the new one is complete; URLs (object
stores: no atomic rename) are written in place with the ``complete`` marker."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
import zarr

import ddrp_dask as dd
from ddrp_dask.errors import OutputError
from ddrp_dask.io import lifecycle
from ddrp_dask.io.lifecycle import staging_path

from .conftest import (
    Interrupted,
    interrupt_after,
    interrupted_in_a_task,
    make_pair,
    write_npy,
)

ROWS = 200  # block rows: 10 blocks of X, 3 of W


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    t = tmp_path_factory.mktemp("staging-in")
    x, w = make_pair(n=2000, m=600, d=8, seed=4)
    return {"x": write_npy(t / "x.npy", x), "w": write_npy(t / "w.npy", w)}


def _planner(command: str, fmt: str, inputs: dict[str, str],
             model: str) -> Callable[..., Any]:
    if command == "run":
        return lambda out, **kw: dd.plan_run(inputs["x"], inputs["w"], 4, out, block_rows=ROWS,
                                             format=fmt, **kw)
    return lambda out, **kw: dd.plan_project(model, "x", inputs["x"], out, format=fmt, **kw)


def _content(out: Path, command: str, fmt: str) -> bytes:
    """The bytes of the sketches (and keys) of a complete output, as plain readers see them."""
    if fmt == "zarr":
        g = zarr.open_group(str(out), mode="r")
        assert g.attrs["complete"] is True
        names = ["x", "w"] if command == "run" else ["sketch"]
        return b"".join(np.asarray(g[name][...]).tobytes() for name in names)
    marker = lifecycle.read_marker(str(out))
    assert marker is not None and marker["complete"] is True
    dirs = [out / "x", out / "w"] if command == "run" else [out]
    parts = []
    for d in dirs:
        t = pq.read_table(str(d))
        parts += [np.asarray(t["row"]).tobytes(),
                  np.asarray(t["sketch"].combine_chunks().flatten()).tobytes()]
    return b"".join(parts)


def _data_files(root: Path, fmt: str) -> dict[Path, int]:
    """Finished data files under ``root`` (Zarr chunks, Parquet files) and their mtimes."""
    if fmt == "zarr":
        files = [p for p in root.rglob("*") if p.is_file() and "/c/" in p.as_posix()
                 and not p.relative_to(root).as_posix().startswith(("_progress", "model"))]
    else:
        files = [p for p in root.rglob("*.parquet") if not p.name.startswith((".", "_"))]
    return {p.relative_to(root): p.stat().st_mtime_ns for p in files}


@pytest.fixture(scope="module")
def model(inputs: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> str:
    out = tmp_path_factory.mktemp("staging-model") / "fit.zarr"
    dd.execute(dd.plan_run(inputs["x"], inputs["w"], 4, str(out), block_rows=ROWS),
               scheduler="sync")
    return str(out / "model")


@pytest.mark.parametrize("fmt", ["zarr", "parquet"])
@pytest.mark.parametrize("command", ["run", "project"])
def test_interrupted_output_is_not_data_and_resumes_identical(
        command: str, fmt: str, inputs: dict[str, str], model: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    plan = _planner(command, fmt, inputs, model)
    ref = tmp_path / "ref.out"
    dd.execute(plan(str(ref)), scheduler="sync")
    expected = _content(ref, command, fmt)

    out = tmp_path / "o.out"
    with monkeypatch.context() as m:
        interrupt_after(m, fmt, 3)
        with interrupted_in_a_task():
            dd.execute(plan(str(out)), scheduler="sync")
    # nothing at OUT for plain zarr or pyarrow to take for data
    assert not out.exists()
    with pytest.raises(Exception):  # noqa: B017 - whatever the reader raises
        zarr.open_group(str(out), mode="r")
    with pytest.raises(Exception):  # noqa: B017
        pq.read_table(str(out / "x") if command == "run" else str(out))
    assert [p for p in tmp_path.rglob("*.parquet") if not p.is_relative_to(ref)
            and not any(part.startswith(".") for part in p.relative_to(tmp_path).parts)] == []
    stage = Path(str(staging_path(out)))
    assert stage.name == ".o.out.ddrp-partial" and stage.parent == tmp_path
    assert lifecycle.output_state(str(out)) == "incomplete"
    kept = _data_files(stage, fmt)
    assert len(kept) >= 2, kept
    # the staged output is recognised: refused without --resume, named as interrupted
    with pytest.raises(OutputError, match=r"incomplete ddrp output.*--resume"):
        plan(str(out))

    dd.execute(plan(str(out), resume=True), scheduler="sync")
    assert not stage.exists()
    assert _content(out, command, fmt) == expected
    for rel, mtime in kept.items():  # finished before the interruption: kept, not rewritten
        assert (out / rel).stat().st_mtime_ns == mtime, rel


@pytest.mark.parametrize("fmt", ["zarr", "parquet"])
def test_overwrite_that_fails_leaves_the_old_output_intact(
        fmt: str, inputs: dict[str, str], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "o.out"
    dd.execute(dd.plan_run(inputs["x"], inputs["w"], 4, str(out), block_rows=ROWS, format=fmt),
               scheduler="sync")
    before = _content(out, "run", fmt)
    new = dd.plan_run(inputs["x"], inputs["w"], 4, str(out), block_rows=ROWS, format=fmt,
                      method="gaussian", overwrite=True)
    with monkeypatch.context() as m:
        interrupt_after(m, fmt, 2)
        with interrupted_in_a_task():
            dd.execute(new, scheduler="sync")
    # the old output is still there, complete and readable, model included
    assert _content(out, "run", fmt) == before
    assert dd.load_model(str(out / "model")).method != "gaussian"
    assert lifecycle.output_state(str(out), staged=False) == "complete"
    # ... and the interrupted replacement is resumable; it replaces the old one at the end
    dd.execute(dd.plan_run(inputs["x"], inputs["w"], 4, str(out), block_rows=ROWS, format=fmt,
                           method="gaussian", resume=True), scheduler="sync")
    assert dd.load_model(str(out / "model")).method == "gaussian"
    assert _content(out, "run", fmt) != before
    assert not Path(str(staging_path(out))).exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.out"]


def test_output_of_an_older_version_interrupted_in_place_resumes(
        inputs: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ref = tmp_path / "ref.zarr"
    dd.execute(dd.plan_run(inputs["x"], inputs["w"], 4, str(ref), block_rows=ROWS),
               scheduler="sync")
    out = tmp_path / "o.zarr"
    with monkeypatch.context() as m:
        interrupt_after(m, "zarr", 3)
        with interrupted_in_a_task():
            dd.execute(dd.plan_run(inputs["x"], inputs["w"], 4, str(out), block_rows=ROWS),
                       scheduler="sync")
    shutil.move(str(staging_path(out)), str(out))  # what older versions left: OUT, incomplete
    assert zarr.open_group(str(out), mode="r").attrs["complete"] is False
    with pytest.raises(OutputError, match="incomplete ddrp output"):
        dd.plan_run(inputs["x"], inputs["w"], 4, str(out), block_rows=ROWS)
    dd.execute(dd.plan_run(inputs["x"], inputs["w"], 4, str(out), block_rows=ROWS,
                           resume=True), scheduler="sync")
    assert _content(out, "run", "zarr") == _content(ref, "run", "zarr")


def test_fit_model_appears_only_when_saved(inputs: dict[str, str], tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "m.zarr"
    dd.execute(dd.plan_fit(inputs["x"], inputs["w"], 4, str(out), block_rows=ROWS),
               scheduler="sync")
    old = dd.load_model(str(out))
    import ddrp_dask.jobs.fit as fit_job

    real_save = fit_job.save_model

    def save_then_die(model: Any, path: Any) -> None:
        real_save(model, path)
        raise Interrupted

    monkeypatch.setattr(fit_job, "save_model", save_then_die)
    with pytest.raises(Interrupted):
        dd.execute(dd.plan_fit(inputs["x"], inputs["w"], 4, str(out), block_rows=ROWS,
                               method="gaussian", overwrite=True), scheduler="sync")
    assert dd.load_model(str(out)).digest == old.digest  # the old model, untouched
    fresh = tmp_path / "fresh.zarr"
    with pytest.raises(Interrupted):
        dd.execute(dd.plan_fit(inputs["x"], inputs["w"], 4, str(fresh), block_rows=ROWS),
                   scheduler="sync")
    assert not fresh.exists()


def test_matmul_output_is_staged(inputs: dict[str, str], model: str, tmp_path: Path,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    run = Path(model).parent
    out = tmp_path / "mm.zarr"
    import ddrp_dask.jobs.matmul as matmul_job

    def die(*args: Any, **kwargs: Any) -> None:
        assert not out.exists()  # written in the staging directory while it runs
        raise Interrupted

    monkeypatch.setattr(matmul_job, "matmul_top", die)
    with pytest.raises(Interrupted):
        dd.plan_matmul(str(run / "x"), str(run / "w"), str(out), top=3).execute("sync")
    assert not out.exists()
    monkeypatch.undo()
    dd.plan_matmul(str(run / "x"), str(run / "w"), str(out), top=3,
                   overwrite=True).execute("sync")
    g = zarr.open_group(str(out), mode="r")
    assert g.attrs["complete"] is True and g["indices"].shape == (2000, 3)


def test_memory_url_is_written_in_place_with_the_marker(
        inputs: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import fsspec

    base = "memory://ddrp-staging"
    fs, root = fsspec.core.url_to_fs(base)
    fs.put(inputs["x"], f"{root}/x.npy")
    fs.put(inputs["w"], f"{root}/w.npy")
    ref = tmp_path / "ref"
    dd.execute(dd.plan_run(inputs["x"], inputs["w"], 4, str(ref), block_rows=ROWS,
                           format="parquet"), scheduler="sync")
    out = f"{base}/out"
    assert staging_path(out) is None  # no atomic rename on object stores: in place
    from fsspec.implementations.memory import MemoryFileSystem

    real_mv, moves = MemoryFileSystem.mv, {"n": 0}

    def mv(self: Any, *args: Any, **kwargs: Any) -> Any:  # dies before the 4th file's rename
        moves["n"] += 1
        if moves["n"] > 3:
            raise Interrupted
        return real_mv(self, *args, **kwargs)

    with monkeypatch.context() as m:
        m.setattr(MemoryFileSystem, "mv", mv)
        with interrupted_in_a_task():
            dd.execute(dd.plan_run(f"{base}/x.npy", f"{base}/w.npy", 4, out, block_rows=ROWS,
                                   format="parquet"), scheduler="sync")
    marker = lifecycle.read_marker(out)  # what a reader of an object store must check
    assert marker is not None and marker["complete"] is False
    # finished files, and the one being written under a name hidden from pyarrow
    names = [p.rsplit("/", 1)[-1] for side in ("x", "w") for p in fs.find(f"{root}/out/{side}")]
    assert len(names) == 4 and sum(n.startswith(".") for n in names) == 1, names
    assert all(n.endswith(".parquet") or n == "_ddrp.json" or n.startswith(".")
               for n in names), names
    dd.execute(dd.plan_run(f"{base}/x.npy", f"{base}/w.npy", 4, out, block_rows=ROWS,
                           format="parquet", resume=True), scheduler="sync")
    marker = lifecycle.read_marker(out)
    assert marker is not None and marker["complete"] is True
    for side in ("x", "w"):
        got = pq.read_table(f"{root}/out/{side}", filesystem=fs)
        assert got.equals(pq.read_table(str(ref / side)))
    zout = f"{base}/out.zarr"
    dd.execute(dd.plan_run(f"{base}/x.npy", f"{base}/w.npy", 4, zout, block_rows=ROWS),
               scheduler="sync")
    assert zarr.open_group(zout, mode="r").attrs["complete"] is True
