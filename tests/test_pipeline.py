"""The whole pipeline on real schedulers, real Zarr and Parquet files: numbers against numpy,
byte-identical across schedulers, chunkings and formats, bounded memory, safe outputs."""

from __future__ import annotations

import itertools
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr

import ddrp_dask as dd
from ddrp_dask.errors import InvalidValueError, OutputError
from ddrp_dask.testing import reference_covariance, reference_sketch

from .conftest import (
    make_pair,
    write_npy,
    write_parquet_list,
    write_parquet_scalars,
    write_zarr,
)

BLOCK = 500


@pytest.fixture(scope="module")
def pair() -> tuple[np.ndarray, np.ndarray]:
    return make_pair(n=2300, m=700, d=16, seed=1)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory,
          pair: tuple[np.ndarray, np.ndarray]) -> dict[str, str]:
    x, w = pair
    t = tmp_path_factory.mktemp("inputs")
    return {
        "x_npy": write_npy(t / "x.npy", x),
        "x_zarr_a": write_zarr(t / "xa.zarr", x, 700),
        "x_zarr_b": write_zarr(t / "xb.zarr", x, 128),
        "x_parquet": write_parquet_list(t / "x.parquet", x, 333),
        "x_scalars": write_parquet_scalars(t / "xs.parquet", x, 1000),
        "w_npy": write_npy(t / "w.npy", w),
        "w_parquet": write_parquet_list(t / "w.parquet", w, 100),
    }


def _run(tmp: Path, x: str, w: str, scheduler: Any = "threads", method: str = "auto",
         k: int = 8, name: str = "out.zarr") -> tuple[dd.SketchModel, zarr.Group]:
    plan = dd.plan_run(x, w, k, str(tmp / name), method, seed=3, block_rows=BLOCK)
    model = dd.execute(plan, scheduler=scheduler)
    return model, zarr.open_group(str(tmp / name), mode="r")


def test_run_matches_numpy(tmp_path: Path, files: dict[str, str],
                           pair: tuple[np.ndarray, np.ndarray]) -> None:
    x, w = pair
    model, out = _run(tmp_path, files["x_npy"], files["w_npy"])
    assert out.attrs["complete"] is True
    prov = out.attrs["ddrp"]
    assert prov["method"] == "auto" and prov["k"] == 8 and prov["seed"] == 3
    assert set(prov["inputs"]) == {"x", "w"} and "ddrp_dask" in prov["versions"]
    sx, sw = out["x"][...], out["w"][...]
    assert sx.dtype == np.float32 and sx.shape == (2300, 8) and sw.shape == (700, 8)
    # the statistics the model was built from are numpy's
    mx = dd.compute_moments(dd.plan_fit(files["x_npy"], files["w_npy"], 8,
                                        str(tmp_path / "m"), block_rows=BLOCK),
                            scheduler="sync")["x"]
    ref = reference_covariance(x)
    assert np.linalg.norm(mx.scatter - ref) / np.linalg.norm(ref) < 1e-6
    # the stored sketches are the model's affine maps, computed independently in float64
    assert np.allclose(sx, reference_sketch(model, "x", x), rtol=1e-4, atol=1e-3)
    assert np.allclose(sw, reference_sketch(model, "w", w), rtol=1e-4, atol=1e-3)
    # and their plain dot products estimate X @ W.T as predicted
    err = np.mean((sx.astype(np.float64) @ sw.T - x.astype(np.float64) @ w.T) ** 2)
    assert err < 5 * model.info["predicted"]["auto"]
    saved = dd.load_model(str(tmp_path / "out.zarr" / "model"))
    assert np.array_equal(saved.x.matrix, model.x.matrix)


def _bytes(group: zarr.Group) -> tuple[bytes, bytes]:
    return group["x"][...].tobytes(), group["w"][...].tobytes()


def _digest_tree(paths: list[str]) -> dict[str, str]:
    import hashlib

    out = {}
    for p in paths:
        root = Path(p)
        for f in sorted([root] if root.is_file() else root.rglob("*")):
            if f.is_file():
                out[str(f)] = hashlib.sha256(f.read_bytes()).hexdigest()
    return out


@pytest.mark.cluster
def test_byte_identical_across_schedulers_chunkings_and_formats(
        tmp_path: Path, files: dict[str, str], cluster1: Any, cluster2: Any) -> None:
    before = _digest_tree(list(files.values()))
    _, ref = _run(tmp_path, files["x_npy"], files["w_npy"], "threads", name="ref.zarr")
    expected = _bytes(ref)
    variants = [
        (files["x_npy"], files["w_npy"], "sync"),
        (files["x_npy"], files["w_npy"], cluster1),
        (files["x_npy"], files["w_npy"], cluster2),
        (files["x_zarr_a"], files["w_parquet"], "threads"),
        (files["x_zarr_b"], files["w_npy"], cluster2),
        (files["x_parquet"], files["w_parquet"], cluster2),
        (files["x_scalars"], files["w_npy"], "threads"),
    ]
    for i, (x, w, sched) in enumerate(variants):
        _, out = _run(tmp_path, x, w, sched, name=f"v{i}.zarr")
        assert _bytes(out) == expected, (i, x, w, sched)
    assert _digest_tree(list(files.values())) == before  # no input was modified


def _parquet_sketches(out: Path, side: str) -> bytes:
    import pyarrow.parquet as pq

    table = pq.read_table(out / side).sort_by("row")
    return np.stack(table["sketch"].to_numpy(zero_copy_only=False)).tobytes()


@pytest.mark.cluster
@pytest.mark.slow
def test_every_input_format_scheduler_and_output_format_gives_the_same_bytes(
        tmp_path: Path, files: dict[str, str], cluster1: Any, cluster2: Any) -> None:
    """The README's promise, as a matrix: .npy, Zarr (chunks unlike the blocks) and Parquet
    inputs × sync, threads, LocalCluster 1 × 2 and 2 × 1 × Zarr and Parquet outputs."""
    _, ref = _run(tmp_path, files["x_npy"], files["w_npy"], "threads", name="ref.zarr")
    expected = _bytes(ref)
    inputs = [("x_npy", "w_npy"), ("x_zarr_b", "w_parquet"), ("x_parquet", "w_parquet")]
    schedulers = {"sync": "sync", "threads": "threads", "local1": cluster1, "local2": cluster2}
    for (xi, wi), (sname, sched), fmt in itertools.product(inputs, schedulers.items(),
                                                            ("zarr", "parquet")):
        out = tmp_path / f"{xi}-{sname}-{fmt}"
        plan = dd.plan_run(files[xi], files[wi], 8, str(out), "auto", seed=3,
                           block_rows=BLOCK, format=fmt)
        dd.execute(plan, scheduler=sched)
        if fmt == "zarr":
            got = _bytes(zarr.open_group(str(out), mode="r"))
        else:
            got = (_parquet_sketches(out, "x"), _parquet_sketches(out, "w"))
        assert got == expected, (xi, wi, sname, fmt)


def test_fit_then_project_equals_run(tmp_path: Path, files: dict[str, str]) -> None:
    _, run_out = _run(tmp_path, files["x_npy"], files["w_npy"], method="asymmetric")
    fit_plan = dd.plan_fit(files["x_npy"], files["w_npy"], 8, str(tmp_path / "model"),
                           "asymmetric", seed=3, block_rows=BLOCK)
    dd.execute(fit_plan, scheduler="threads")
    for side, src in (("x", files["x_parquet"]), ("w", files["w_npy"])):
        plan = dd.plan_project(str(tmp_path / "model"), side, src, str(tmp_path / f"p{side}"))
        assert plan.block_rows == BLOCK  # taken from the model
        dd.execute(plan, scheduler="threads")
        got = zarr.open_group(str(tmp_path / f"p{side}"), mode="r")
        assert got.attrs["complete"] is True
        assert got["sketch"][...].tobytes() == run_out[side][...].tobytes()


def test_every_method_runs_and_has_k_columns(tmp_path: Path, files: dict[str, str],
                                              pair: tuple[np.ndarray, np.ndarray]) -> None:
    x, w = pair
    exact = x.astype(np.float64) @ w.T
    for method in dd.METHODS:
        model, out = _run(tmp_path, files["x_npy"], files["w_npy"], method=method,
                          name=f"{method}.zarr")
        sx, sw = out["x"][...], out["w"][...]
        assert sx.shape == (2300, 8) and sw.shape == (700, 8)
        mse = np.mean((sx.astype(np.float64) @ sw.T - exact) ** 2)
        assert mse < 20 * model.info["predicted"][method] + 1e-6, method


def _npy_run(tmp_path: Path, n_blocks: int, tag: str) -> Any:
    """A run plan of an .npy X of ``n_blocks`` blocks of 4,000 × 32 rows."""
    x = np.random.default_rng(n_blocks).standard_normal((n_blocks * 4000, 32)).astype(
        np.float32)
    xp = write_npy(tmp_path / f"x{tag}.npy", x)
    wp = write_npy(tmp_path / f"w{tag}.npy", x[:100])
    return dd.plan_run(xp, wp, 8, str(tmp_path / f"o{tag}"), block_rows=4000)


def test_memory_does_not_grow_with_rows(tmp_path: Path) -> None:
    """Peak traced allocation of a whole run is the same for 8 and 48 blocks, measured after
    one untraced run (a fresh process's first run also allocates once-only caches)."""
    plans = [_npy_run(tmp_path, n, str(n)) for n in (8, 48)]
    dd.execute(_npy_run(tmp_path, 8, "warm"), scheduler="sync")
    peaks = []
    for plan in plans:
        tracemalloc.start()
        dd.execute(plan, scheduler="sync")
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
    block_bytes = 4000 * 32 * 4
    assert peaks[1] < peaks[0] * 1.25 + block_bytes, peaks
    assert peaks[1] < 48 * block_bytes / 3  # far below the source's size


def test_nan_fails_naming_the_row_and_leaves_no_complete_output(tmp_path: Path,
                                                                  files: dict[str, str],
                                                                  pair: Any) -> None:
    x = pair[0].copy()
    x[1234, 5] = np.nan
    bad = write_npy(tmp_path / "bad.npy", x)
    plan = dd.plan_run(bad, files["w_npy"], 8, str(tmp_path / "o.zarr"), block_rows=BLOCK)
    with pytest.raises(InvalidValueError, match=r"bad.npy: row 1234 column 5 is nan"):
        dd.execute(plan, scheduler="threads")
    assert not (tmp_path / "o.zarr").exists()


def test_outputs_are_protected(tmp_path: Path, files: dict[str, str]) -> None:
    out = str(tmp_path / "o.zarr")
    dd.execute(dd.plan_run(files["x_npy"], files["w_npy"], 8, out, block_rows=BLOCK),
               scheduler="threads")
    with pytest.raises(OutputError, match="exists; pass --overwrite"):
        dd.plan_run(files["x_npy"], files["w_npy"], 8, out)
    dd.execute(dd.plan_run(files["x_npy"], files["w_npy"], 8, out, method="gaussian",
                           overwrite=True, block_rows=BLOCK), scheduler="threads")
    assert zarr.open_group(out, mode="r").attrs["ddrp"]["method"] == "gaussian"
    # an interrupted run (complete: false) is recognised and named as such
    g = zarr.open_group(out, mode="r+")
    g.attrs["complete"] = False
    with pytest.raises(OutputError, match="incomplete ddrp output"):
        dd.plan_run(files["x_npy"], files["w_npy"], 8, out)
    # never delete what is not ours, never write into an input
    (tmp_path / "mine").mkdir()
    with pytest.raises(OutputError, match="not a ddrp output"):
        dd.plan_run(files["x_npy"], files["w_npy"], 8, str(tmp_path / "mine"), overwrite=True)
    with pytest.raises(OutputError, match="overlaps input"):
        dd.plan_run(files["x_zarr_a"], files["w_npy"], 8, files["x_zarr_a"] + "/sub")
    with pytest.raises(OutputError, match="overlaps input"):
        dd.plan_run(files["x_npy"], files["w_npy"], 8, files["x_npy"], overwrite=True)


def test_plan_writes_nothing_and_describes_the_job(tmp_path: Path, files: dict[str, str]) -> None:
    plan = dd.plan_run(files["x_parquet"], files["w_npy"], 8, str(tmp_path / "o.zarr"),
                       block_rows=BLOCK)
    text = str(plan)
    for piece in ("inputs:", "x.parquet [parquet] 2300 x 16", "5 block(s) of 500 rows",
                  "pass 1", "pass 2", "o.zarr/x (2300 x 8 float32)", "memory: about"):
        assert piece in text, piece
    assert not (tmp_path / "o.zarr").exists()


def test_stats_fraction_reads_only_chosen_blocks(tmp_path: Path,
                                                 pair: tuple[np.ndarray, np.ndarray]) -> None:
    x, w = pair  # 2300 rows in blocks of 500: 5 blocks
    wp = write_npy(tmp_path / "w.npy", w)
    plan = dd.plan_fit(write_npy(tmp_path / "x.npy", x), wp, 8, str(tmp_path / "m"),
                       block_rows=BLOCK, stats_fraction=0.4, seed=5)
    chosen = plan.stats_blocks("x")
    assert len(chosen) == 2 and chosen == sorted(set(chosen))
    assert chosen == dd.plan_fit(files_of(tmp_path, x), wp, 8, str(tmp_path / "m2"),
                                 block_rows=BLOCK, stats_fraction=0.4, seed=5).stats_blocks("x")
    mx = dd.compute_moments(plan, scheduler="threads")["x"]
    rows = np.concatenate([x[i * BLOCK:(i + 1) * BLOCK] for i in chosen])
    assert mx.n == len(rows)
    ref = reference_covariance(rows)
    assert np.linalg.norm(mx.scatter - ref) / np.linalg.norm(ref) < 1e-6
    # a NaN in a block pass 1 skips is caught by pass 2, naming its row
    skipped = next(i for i in range(5) if i not in chosen)
    bad = x.copy()
    bad[skipped * BLOCK + 7, 1] = np.nan
    bp = write_parquet_list(tmp_path / "bad.parquet", bad, BLOCK)
    run = dd.plan_run(bp, wp, 8, str(tmp_path / "o.zarr"), block_rows=BLOCK,
                      stats_fraction=0.4, seed=5)
    assert run.stats_blocks("x") == chosen
    dd.fit_model(run, scheduler="threads")  # pass 1 never reads the bad row group
    with pytest.raises(InvalidValueError, match=f"row {skipped * BLOCK + 7} column 1 is nan"):
        dd.execute(run, scheduler="threads")
    assert not (tmp_path / "o.zarr").exists()  # nothing is left that could be mistaken
    with pytest.raises(dd.DdrpError, match=r"stats fraction must be in \(0, 1\]"):
        dd.plan_fit(bp, wp, 8, str(tmp_path / "m3"), stats_fraction=0)


def files_of(tmp: Path, x: np.ndarray) -> str:
    """The same rows in another format (Zarr, other chunking)."""
    return write_zarr(tmp / "x_other.zarr", x, 333)


@pytest.mark.cluster
def test_blocks_too_large_for_worker_memory_are_refused_up_front(tmp_path: Path,
                                                                 files: dict[str, str]) -> None:
    import dask
    from distributed import Client, LocalCluster

    plan = dd.plan_run(files["x_npy"], files["w_npy"], 8, str(tmp_path / "o.zarr"),
                       block_rows=2048)  # ~0.4 MiB per task: over a 1 MiB worker's budget
    # a tiny limit, with the memory manager's pausing off so that the small job still runs
    off = {f"distributed.worker.memory.{k}": False
           for k in ("target", "spill", "pause", "terminate")}
    with dask.config.set(off), LocalCluster(n_workers=1, threads_per_worker=2,
                                            processes=False, memory_limit="1MiB",
                                            dashboard_address=None) as cluster, \
            Client(cluster) as client:
        with pytest.raises(dd.DdrpError, match=r"a block of 2048 rows needs about \d+ MiB "
                                               r"per task.*pass --block-rows \d+"):
            dd.execute(plan, scheduler=client)
        assert not (tmp_path / "o.zarr").exists()
        dd.execute(dd.plan_run(files["x_npy"], files["w_npy"], 8, str(tmp_path / "o.zarr"),
                               block_rows=BLOCK), scheduler=client)
