"""ddrp side by side with a plain Dask projection, scikit-learn and dask-ml.

Generates once (cached under ``--scratch``) a rows x d float32 X as Zarr v3 (zstd, chunks of
``default_block_rows(d)`` rows) and as Parquet (one ``fixed_size_list<float32>[d]`` column,
row groups of the same size, no dictionary), and W (20,000 x d Zarr). Then runs every job as
a separate subprocess, sampling the summed RSS of its whole process tree every ~0.1 s:

* ``ddrp run`` --method auto / gaussian / auto --stats-fraction 0.1 (CLI), per scheduler;
* the plain Dask oblivious projection ``da.from_zarr(X) @ R -> da.to_zarr`` of X and W
  (BLAS pinned to one thread), per scheduler: the baseline of the ratios;
* ``ddrp fit`` and ``ddrp project`` (CLI) and the same passes timed inside one process
  through the Python API, to time pass 1, the build and pass 2 separately;
* scikit-learn ``GaussianRandomProjection`` in memory; dask-ml ``PCA`` (randomized) and
  ``TruncatedSVD`` (randomized) fit + transform + write;
* machine limits: Gram / projection rates on one chunk (1 BLAS thread), read, read+Gram,
  write and read+write throughput of the store;
* peak RSS of ``ddrp run`` on a source ``--big`` times larger.

    python benchmarks/vs_libraries.py [--rows N] [--d 256] [-k 32] [--repeat 2] [--big 4]

Prints tables and the targets (ratios to the plain Dask projection); writes
bench-out/perf[-dD].png and .json.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from benchlib import (
    DDRP,
    ONE_BLAS,
    OUT,
    PY,
    Job,
    check_library,
    compute,
    dir_bytes,
    emit,
    fmt_gb,
    library_version,
    load,
    make_parquet,
    make_zarr,
    pyplot,
    run_job,
    scheduler,
)

W_ROWS = 20_000
TARGET_RSS = 1.5e9
SECTIONS = ("limits", "tiny", "core", "thp", "passes", "parquet", "other", "big")
#: glibc malloc backed by transparent huge pages (THP is in "madvise" mode here): fewer page
#: faults for the 60 MB buffers zarr's codec pipeline allocates per chunk.
THP_ENV = {"GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}


# ---------------------------------------------------------------------------------------
# jobs run inside the subprocesses (python vs_libraries.py --job '{...}')


def _parquet_array(path: str, d: int) -> Any:
    """X from Parquet as a dask array: one task per row group (faster than dask.dataframe)."""
    import dask
    import dask.array as da
    import pyarrow.parquet as pq

    meta = pq.ParquetFile(path).metadata
    parts = [da.from_delayed(dask.delayed(_read_row_group)(path, i, d),
                             shape=(meta.row_group(i).num_rows, d), dtype=np.float32)
             for i in range(meta.num_row_groups)]
    return da.concatenate(parts)


def _read_row_group(path: str, i: int, d: int) -> np.ndarray:
    import pyarrow.parquet as pq

    table = pq.ParquetFile(path, pre_buffer=False).read_row_group(i)
    col = table.column(0).combine_chunks()
    return np.asarray(col.values.to_numpy(zero_copy_only=False)).reshape(-1, d)


def job_plain(p: dict[str, Any]) -> dict[str, Any]:
    """The oblivious baseline: X @ R and W @ R (R float32 d x K Gaussian) to Zarr, one
    compute. BLAS is pinned by the environment (OPENBLAS_NUM_THREADS=1)."""
    t0 = time.perf_counter()
    import dask.array as da

    with scheduler(p["scheduler"]) as sched:
        t1 = time.perf_counter()
        d, k = p["d"], p["k"]
        r = (np.random.default_rng(0).standard_normal((d, k)) / math.sqrt(k)).astype(np.float32)
        x = _parquet_array(p["x"], d) if p["x"].endswith(".parquet") else da.from_zarr(p["x"])
        w = da.from_zarr(p["w"])
        writes = [da.to_zarr(a @ r, f"{p['out']}/{name}", overwrite=True, compute=False)
                  for name, a in (("x", x), ("w", w))]
        compute(writes, sched)
        t2 = time.perf_counter()
    return {"startup_s": t1 - t0, "compute_s": t2 - t1}


def _best(fn: Any, repeat: int = 5) -> float:
    """Shortest of ``repeat`` timings of ``fn()``."""
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def _first(b: np.ndarray) -> np.ndarray:
    return np.asarray(b[:1, :1], dtype=np.float32).copy()


def _gram64(b: np.ndarray) -> np.ndarray:
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        return (b.T @ b).astype(np.float64)


def _fill(b: np.ndarray, block_info: Any = None) -> np.ndarray:
    i = block_info[None]["chunk-location"][0] if block_info else 0
    return np.random.default_rng(i).random(b.shape, dtype=np.float32)


def job_limits(p: dict[str, Any]) -> dict[str, Any]:
    """Machine limits. Per chunk, one thread, 1 BLAS thread: the kernels (decode, Gram,
    projection, encode + write) and whole tasks: ddrp's pass-1 and pass-2 tasks
    (``ddrp_dask.graph.passes._stats_task`` / ``_project_task``) against the plain ones (read +
    Gram; read + ``@ R`` + write). Whole store on the job's scheduler: read, read + float32
    Gram, write of K columns, read + write of K columns (best of 2, fresh keys each time)."""
    import dask
    import dask.array as da
    import zarr
    from threadpoolctl import threadpool_limits

    from ddrp_dask.graph.passes import _project_task, _stats_task
    from ddrp_dask.io.lifecycle import open_output, sketch_arrays
    from ddrp_dask.io.registry import open_source
    from ddrp_dask.maths.model import SideMap
    from ddrp_dask.maths.project import check_finite, project_block
    from ddrp_dask.maths.stats import block_moments

    d, k, br = p["d"], p["k"], p["block_rows"]
    z = zarr.open_array(p["x"], mode="r")
    res: dict[str, Any] = {}
    out = Path(p["out"])
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    chunk = np.ascontiguousarray(z[:br])
    rows = len(chunk)
    r32 = (np.random.default_rng(0).standard_normal((d, k)) / math.sqrt(k)).astype(np.float32)
    side = SideMap(r32.astype(np.float64), np.zeros(k), chunk.mean(axis=0).astype(np.float64))
    shift = chunk.mean(axis=0)
    c = chunk - shift
    sketch = project_block(chunk, side)
    zk = zarr.create_array(str(out / "chunk_k"), shape=sketch.shape, dtype="float32",
                           chunks=sketch.shape, overwrite=True)
    src = open_source(p["x"])
    open_output(str(out / "task"), {}, sketch_arrays("x", None, rows, k, br, "int64", "x"),
                {"x": 1}, False)

    def write_k() -> None:
        zk[...] = sketch

    def plain_pass1_task() -> None:
        b = z[:br]
        b.T @ b

    def plain_pass2_task() -> None:
        zk[...] = z[:br] @ r32

    with threadpool_limits(limits=1):
        secs = {
            "zarr_decode": _best(lambda: z[:br], 6),
            "ddrp_read (direct reader)": _best(lambda: src.read_rows(0, br), 6),
            "check_finite": _best(lambda: check_finite(chunk, "x", 0)),
            "block_moments": _best(lambda: block_moments(chunk)),
            " gram_f32": _best(lambda: c.T @ c),
            " sum_f64": _best(lambda: np.sum(chunk, axis=0, dtype=np.float64)),
            " sub_shift": _best(lambda: chunk - shift),
            " max_abs": _best(lambda: np.max(np.abs(c))),
            "project_block": _best(lambda: project_block(chunk, side)),
            " proj_f32": _best(lambda: chunk @ r32),
            "zarr_write_k": _best(write_k, 3),
            "TASK plain read+gram": _best(plain_pass1_task, 6),
            "TASK ddrp _stats_task": _best(lambda: _stats_task(src, 0, br, "x", False, ()), 6),
            "TASK plain read+@R+write": _best(plain_pass2_task, 6),
            "TASK ddrp _project_task": _best(lambda: _project_task(
                src, 0, br, "x", side, str(out / "task"), "x", 0, None, False, ()), 6),
        }
    res["chunk_rows"] = rows
    res["chunk_ms"] = {key: 1e3 * v for key, v in secs.items()}
    res["chunk"] = {key.strip(): rows / v for key, v in secs.items()}
    x = da.from_zarr(p["x"])
    n = x.shape[0]
    whole: dict[str, float] = {}

    def timed(name: str, make: Any, sched: Any, repeat: int = 2) -> None:
        """Best of ``repeat`` computes of ``make(i)``: new keys each time, so a cluster
        cannot answer from memory."""
        best = float("inf")
        for i in range(repeat):
            objs = make(i)
            t = time.perf_counter()
            compute(objs, sched)
            best = min(best, time.perf_counter() - t)
        whole[name] = best

    def tiny(a: Any, tok: str) -> list[Any]:
        return [a.map_blocks(_first, chunks=((1,) * a.numblocks[0], (1,)), token=tok)]

    def direct(i: int) -> Any:
        """X through ddrp's reader (``Source.read_rows``), one block per task."""
        bounds = [(a, min(a + br, n)) for a in range(0, n, br)]
        return da.concatenate([da.from_delayed(
            dask.delayed(src.read_rows, pure=False)(a, b), (b - a, d), np.float32,
            name=f"direct-{i}-{a}") for a, b in bounds])

    with scheduler(p["scheduler"]) as sched:
        compute([x[:1].map_blocks(_first, chunks=((1,), (1,)))], sched)  # warm-up
        timed("read", lambda i: tiny(x, f"read-{i}"), sched)
        timed("read_direct", lambda i: tiny(direct(i), f"rd-{i}"), sched)
        timed("read_gram", lambda i: [dask.delayed(sum, pure=False)(
            [dask.delayed(_gram64, pure=False)(b) for b in x.to_delayed().ravel()])], sched)
        timed("write", lambda i: [da.to_zarr(
            da.zeros((n, k), chunks=(x.chunks[0], (k,)), dtype=np.float32).map_blocks(
                _fill, dtype=np.float32, token=f"fill-{i}"),
            str(out / f"write{i}"), overwrite=True, compute=False)], sched)
        timed("read_write", lambda i: [da.to_zarr(
            x.map_blocks(_first_k, k, chunks=(x.chunks[0], (k,)), token=f"copy-{i}"),
            str(out / f"copy{i}"), overwrite=True, compute=False)], sched)
        timed("read_direct_write", lambda i: [da.to_zarr(
            direct(i).map_blocks(_first_k, k, chunks=(x.chunks[0], (k,)), token=f"dcp-{i}"),
            str(out / f"dcopy{i}"), overwrite=True, compute=False)], sched)
        if p.get("parquet"):
            xp = _parquet_array(p["parquet"], d)
            timed("read_parquet", lambda i: tiny(xp, f"pq-{i}"), sched)
    shutil.rmtree(out, ignore_errors=True)
    res["whole_s"] = whole
    res["whole_rows_s"] = {key: n / v for key, v in whole.items()}
    res["rows"] = n
    return res


def _first_k(b: np.ndarray, k: int) -> np.ndarray:
    return b[:, :k].copy()


def job_passes(p: dict[str, Any]) -> dict[str, Any]:
    """ddrp's passes timed inside one process through the Python API: pass 1 (statistics of
    X and W), the build, pass 2 (project X and W), and pass 1 at --stats-fraction 0.1."""
    t0 = time.perf_counter()
    import ddrp_dask as dd
    from ddrp_dask.jobs.fit import compute_folds
    from ddrp_dask.maths.folds import folds_for

    out = Path(p["out"])
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    res: dict[str, Any] = {}
    with scheduler(p["scheduler"], p.get("workers", 2)) as sched:
        res["startup_s"] = time.perf_counter() - t0
        plan = dd.plan_fit(p["x"], p["w"], p["k"], str(out / "model"), method="auto")
        t = time.perf_counter()
        n_folds = folds_for(plan.d)  # as ``ddrp fit`` does: per-fold statistics for auto
        folds = None
        if n_folds > 1:
            by_fold = compute_folds(plan, n_folds, sched)
            folds = (by_fold["x"], by_fold["w"])
            moments = {side: dd.combine_all(f) for side, f in zip("xw", folds, strict=True)}
        else:
            moments = dd.compute_moments(plan, sched)
        res["pass1_s"] = time.perf_counter() - t
        t = time.perf_counter()
        model = dd.build(moments["x"], moments["w"], p["k"], "auto", 0,
                         provenance=plan.facts(), folds=folds)
        res["build_s"] = time.perf_counter() - t
        dd.save_model(model, str(out / "model"))
        t = time.perf_counter()
        for side in ("x", "w"):
            pplan = dd.plan_project(str(out / "model"), side, p[side], str(out / f"sk_{side}"))
            dd.execute(pplan, sched)
            if side == "x":
                res["pass2_x_s"] = time.perf_counter() - t
        res["pass2_s"] = time.perf_counter() - t
        plan_f = dd.plan_fit(p["x"], p["w"], p["k"], str(out / "model_f"), method="auto",
                             stats_fraction=0.1)
        t = time.perf_counter()
        if n_folds > 1:
            compute_folds(plan_f, n_folds, sched)
        else:
            dd.compute_moments(plan_f, sched)
        res["pass1_f0.1_s"] = time.perf_counter() - t
        res["gain"] = float(model.info["gain"])
    return res


def job_sklearn(p: dict[str, Any]) -> dict[str, Any]:
    """scikit-learn's GaussianRandomProjection in memory: load X and W fully, fit_transform
    X, transform W, write both to Zarr."""
    import zarr
    from sklearn.random_projection import GaussianRandomProjection

    t = time.perf_counter()
    x = zarr.open_array(p["x"], mode="r")[...]
    w = zarr.open_array(p["w"], mode="r")[...]
    res: dict[str, Any] = {"load_s": time.perf_counter() - t}
    t = time.perf_counter()
    grp = GaussianRandomProjection(n_components=p["k"], random_state=0)
    sx = grp.fit_transform(x)
    sw = grp.transform(w)
    res["fit_transform_s"] = time.perf_counter() - t
    res["dtype"] = str(sx.dtype)
    t = time.perf_counter()
    for name, a in (("x", sx), ("w", sw)):
        arr = zarr.create_array(f"{p['out']}/{name}", shape=a.shape, dtype=a.dtype,
                                chunks=(p["block_rows"], p["k"]), overwrite=True)
        arr[...] = a
    res["write_s"] = time.perf_counter() - t
    return res


def job_daskml(p: dict[str, Any]) -> dict[str, Any]:
    """dask-ml PCA (randomized) or TruncatedSVD (randomized): fit on X, transform X and W,
    write both to Zarr. PCA is monkeypatched at runtime (see ``patch_dask_ml``)."""
    t0 = time.perf_counter()
    import dask
    import dask.array as da
    from dask_ml.decomposition import PCA, TruncatedSVD

    patched = patch_dask_ml()
    res: dict[str, Any] = {"patched": patched}
    with scheduler(p["scheduler"]) as sched:
        res["startup_s"] = time.perf_counter() - t0
        ctx = dask.config.set(scheduler="threads") if sched == "threads" else _nullctx()
        with ctx:
            x, w = da.from_zarr(p["x"]), da.from_zarr(p["w"])
            if p["kind"] == "pca":
                est: Any = PCA(n_components=p["k"], svd_solver="randomized", random_state=0)
            else:  # float64: float32 power iterations overflow (see TSVD_NOTE)
                est = TruncatedSVD(n_components=p["k"], algorithm="randomized", random_state=0)
                x, w = x.astype(np.float64), w.astype(np.float64)
            t = time.perf_counter()
            est.fit(x)
            res["fit_s"] = time.perf_counter() - t
            t = time.perf_counter()
            writes = [da.to_zarr(est.transform(a).astype(np.float32), f"{p['out']}/{name}",
                                 overwrite=True, compute=False) for name, a in (("x", x), ("w", w))]
            compute(writes, sched)
            res["transform_write_s"] = time.perf_counter() - t
    return res


TSVD_NOTE = ("dask-ml TruncatedSVD(algorithm='randomized') runs on X cast to float64: on float32 "
             "it fails with 'SVD did not converge' because dask's svd_compressed "
             "(iterator='power', n_power_iter=5) never renormalises between power iterations "
             "and the float32 products overflow (|H| reached 9e36 after 4 iterations on 200k "
             "rows of this data)")


class _nullctx:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def patch_dask_ml() -> list[str]:
    """Runtime patches so dask-ml 2025.1.0 runs with the installed scikit-learn; returns what
    was patched. scikit-learn's PCA.__sklearn_tags__ reads ``power_iteration_normalizer``,
    which dask-ml's PCA never sets: give the class that attribute ("auto", sklearn's default;
    dask-ml's randomized solver does not use it)."""
    from dask_ml.decomposition import PCA

    done = []
    if not hasattr(PCA, "power_iteration_normalizer"):
        PCA.power_iteration_normalizer = "auto"
        done.append("dask_ml.decomposition.PCA.power_iteration_normalizer = 'auto'")
    return done


JOBS = {"plain": job_plain, "limits": job_limits, "passes": job_passes, "sklearn": job_sklearn,
        "daskml": job_daskml}


# ---------------------------------------------------------------------------------------
# the driver


def _job_cmd(p: dict[str, Any]) -> list[str]:
    return [PY, str(Path(__file__).resolve()), "--job", json.dumps(p)]


def _ddrp(cmd: str, *args: str) -> list[str]:
    return [DDRP, cmd, *args, "--overwrite", "--quiet"]


class Runner:
    """Runs jobs, keeps them in order, writes logs under the scratch directory."""

    def __init__(self, scratch: Path, interval: float) -> None:
        self.jobs: list[Job] = []
        self.scratch = scratch
        self.interval = interval

    def run(self, label: str, cmd: list[str], group: str, rows: int,
            env: dict[str, str] | None = None) -> Job:
        job = run_job(Job(label, cmd, group, rows), env, self.interval,
                      self.scratch / "logs" / "perf")
        self.jobs.append(job)
        return job

    def walls(self, label: str) -> list[float]:
        return [j.wall for j in self.jobs if j.label == label and j.ok]

    def median(self, label: str) -> float:
        w = self.walls(label)
        return statistics.median(w) if w else float("nan")

    def get(self, label: str) -> Job | None:
        found = [j for j in self.jobs if j.label == label and j.ok]
        return found[-1] if found else None

    def cpu(self, label: str) -> float:
        c = [j.cpu_s for j in self.jobs if j.label == label and j.ok]
        return statistics.median(c) if c else float("nan")

    def peak(self, label: str) -> int:
        return max((j.peak_rss for j in self.jobs if j.label == label and j.ok), default=0)


def _gain(job: Job | None) -> str:
    if job is None:
        return ""
    for line in job.stdout.splitlines():
        if "predicted gain" in line:
            return line.split(":")[-1].strip()
    return ""


def main(argv: list[str] | None = None) -> int:
    """Generate the data, run all jobs, print the tables and targets, plot."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--job", help=argparse.SUPPRESS)
    ap.add_argument("--d", type=int, default=256)
    ap.add_argument("--rows", type=int, default=None,
                    help="rows of X (default 2,000,000 x 256 / d: ~2 GB)")
    ap.add_argument("-k", type=int, default=32)
    ap.add_argument("--w-rows", type=int, default=W_ROWS)
    ap.add_argument("--scratch", default=str(OUT / "data"))
    ap.add_argument("--schedulers", default="local,threads")
    ap.add_argument("--repeat", type=int, default=1,
                    help="rounds of the core jobs (ddrp run x3, plain), interleaved")
    ap.add_argument("--big", type=int, default=4,
                    help="peak RSS also on a source this many times larger (0: skip)")
    ap.add_argument("--dask-ml", default="pca,tsvd", help="dask-ml jobs ('' to skip)")
    ap.add_argument("--dask-ml-schedulers", default="threads")
    ap.add_argument("--parquet-schedulers", default="local")
    ap.add_argument("--interval", type=float, default=0.1)
    ap.add_argument("--keep-big", action="store_true", help="keep the big source afterwards")
    ap.add_argument("--sections", default=",".join(SECTIONS),
                    help=f"what to run, comma-separated among {','.join(SECTIONS)}")
    ap.add_argument("--profile", action="store_true",
                    help="also run `ddrp run --method auto` under py-spy, per scheduler")
    args = ap.parse_args(argv)
    if args.job:
        p = json.loads(args.job)
        emit(JOBS[p["job"]](p))
        return 0
    return drive(args)


def drive(args: argparse.Namespace) -> int:
    """The benchmark proper."""
    from ddrp_dask.options import default_block_rows

    d, k = args.d, args.k
    rows = args.rows or 2_000_000 * 256 // d
    br = default_block_rows(d)
    scratch = Path(args.scratch).resolve()
    scratch.mkdir(parents=True, exist_ok=True)
    outs = scratch / "out"
    outs.mkdir(exist_ok=True)
    tag = f"{rows}x{d}"
    xz, xp = scratch / f"x_{tag}.zarr", scratch / f"x_{tag}.parquet"
    wz = scratch / f"w_{args.w_rows}x{d}.zarr"
    version = library_version()
    print(f"perf: X {rows} x {d} float32, W {args.w_rows} x {d}, K={k}, block rows {br}, "
          f"{__import__('os').cpu_count()} cores, load {load():.2f}; {version}")
    for what, secs in (("X zarr", make_zarr(xz, "x", rows, d, br)),
                       ("X parquet", make_parquet(xp, rows, d, br)),
                       ("W zarr", make_zarr(wz, "w", args.w_rows, d, br))):
        print(f"  {what}: {'cached' if secs == 0 else f'generated in {secs:.1f} s'}")
    print(f"  sizes: X zarr {fmt_gb(dir_bytes(xz))} GB, X parquet {fmt_gb(dir_bytes(xp))} GB "
          f"(raw {fmt_gb(rows * d * 4)} GB)")
    scheds = [s for s in args.schedulers.split(",") if s]
    n_both = rows + args.w_rows
    R = Runner(scratch, args.interval)
    base = {"d": d, "k": k, "block_rows": br, "w": str(wz)}

    def run_ddrp(label: str, sched: str, *extra: str, x: Path = xz, n: int = n_both,
                 env: dict[str, str] | None = None) -> Job:
        return R.run(label, _ddrp("run", "--x", str(x), "--w", str(wz), "-k", str(k),
                                  "--out", str(outs / f"{label}.zarr"), "--scheduler", sched,
                                  *extra), "ddrp", n, env)

    def run_plain(label: str, sched: str, x: Path = xz, env: dict[str, str] | None = None
                  ) -> Job:
        p = dict(base, job="plain", x=str(x), scheduler=sched, out=str(outs / f"{label}.zarr"))
        return R.run(label, _job_cmd(p), "plain", n_both, dict(ONE_BLAS, **(env or {})))

    sections = set(args.sections.split(","))
    print("\nmachine limits (per scheduler):")
    for s in (scheds if "limits" in sections else []):
        p = dict(base, job="limits", x=str(xz), scheduler=s, out=str(outs / f"limits-{s}"),
                 parquet=str(xp))
        R.run(f"limits[{s}]", _job_cmd(p), "limits", rows, ONE_BLAS)
    print("\nfixed costs (tiny job: W as both sources):")
    for s in (scheds if "tiny" in sections else []):
        R.run(f"ddrp-tiny[{s}]", _ddrp("run", "--x", str(wz), "--w", str(wz), "-k", str(k),
                                       "--out", str(outs / f"tiny-{s}.zarr"),
                                       "--scheduler", s), "tiny", 2 * args.w_rows)
        p = dict(base, job="plain", x=str(wz), scheduler=s, out=str(outs / f"plain-tiny-{s}"))
        R.run(f"plain-tiny[{s}]", _job_cmd(p), "tiny", 2 * args.w_rows, ONE_BLAS)
    print(f"\ncore jobs ({args.repeat} round(s), interleaved):")
    for rnd in range(args.repeat if "core" in sections else 0):
        for s in scheds:
            run_plain(f"plain[{s}]", s)
            run_ddrp(f"ddrp-auto[{s}]", s, "--method", "auto")
            run_ddrp(f"ddrp-gaussian[{s}]", s, "--method", "gaussian")
            run_ddrp(f"ddrp-auto-f0.1[{s}]", s, "--method", "auto", "--stats-fraction", "0.1")
            if "thp" in sections:
                run_plain(f"plain+thp[{s}]", s, env=THP_ENV)
                run_ddrp(f"ddrp-auto+thp[{s}]", s, "--method", "auto", env=THP_ENV)
        if rnd + 1 < args.repeat:
            print("  --")
    print("\npasses (CLI fit / project, and the API inside one process):")
    for s in (scheds if "passes" in sections else []):
        model = outs / f"model-{s}"
        R.run(f"ddrp-fit[{s}]", _ddrp("fit", "--x", str(xz), "--w", str(wz), "-k", str(k),
                                      "--out", str(model), "--scheduler", s), "passes", n_both)
        R.run(f"ddrp-project-x[{s}]", _ddrp("project", "--model", str(model), "--side", "x",
                                            "--input", str(xz), "--out",
                                            str(outs / f"proj-x-{s}.zarr"), "--scheduler", s),
              "passes", rows)
        p = dict(base, job="passes", x=str(xz), scheduler=s, out=str(outs / f"passes-{s}"))
        R.run(f"api-passes[{s}]", _job_cmd(p), "passes", n_both)
    print("\nParquet X:")
    for s in [s for s in args.parquet_schedulers.split(",") if s and "parquet" in sections]:
        run_plain(f"plain-parquet[{s}]", s, x=xp)
        run_ddrp(f"ddrp-auto-parquet[{s}]", s, "--method", "auto", x=xp)
    print("\nscikit-learn / dask-ml:")
    p = dict(base, job="sklearn", x=str(xz), out=str(outs / "sklearn"))
    if "other" in sections:
        R.run("sklearn-grp[mem]", _job_cmd(p), "other", n_both)
    for s in [s for s in args.dask_ml_schedulers.split(",") if s and "other" in sections]:
        for kind in [x for x in args.dask_ml.split(",") if x]:
            p = dict(base, job="daskml", kind=kind, x=str(xz), scheduler=s,
                     out=str(outs / f"daskml-{kind}-{s}"))
            R.run(f"daskml-{kind}[{s}]", _job_cmd(p), "other", n_both, ONE_BLAS)
    if args.big > 1 and "big" in sections:
        big_rows = rows * args.big
        xb = scratch / f"x_{big_rows}x{d}.zarr"
        print(f"\npeak RSS on a {args.big}x source ({big_rows} rows):")
        secs = make_zarr(xb, "x", big_rows, d, br)
        print(f"  X zarr {fmt_gb(dir_bytes(xb))} GB: "
              f"{'cached' if secs == 0 else f'generated in {secs:.1f} s'}")
        for s in scheds:
            run_ddrp(f"ddrp-auto-{args.big}x[{s}]", s, "--method", "auto", x=xb,
                     n=big_rows + args.w_rows)
            p = dict(base, job="plain", x=str(xb), scheduler=s,
                     out=str(outs / f"plain-{args.big}x-{s}"))
            R.run(f"plain-{args.big}x[{s}]", _job_cmd(p), "plain", big_rows + args.w_rows,
                  ONE_BLAS)
        if not args.keep_big:
            shutil.rmtree(xb, ignore_errors=True)
    profiles = {}
    if args.profile:
        print("\nprofiles (py-spy):")
        for s in scheds:
            label = f"ddrp-auto[{s}]"
            profiles[label] = profile(label, _ddrp(
                "run", "--x", str(xz), "--w", str(wz), "-k", str(k), "--out",
                str(outs / "profiled.zarr"), "--scheduler", s),
                OUT / f"profile-{s}{_suffix(rows, d)}.txt")
    report(R, args, rows, d, k, scheds, profiles)
    check_library(version)
    shutil.rmtree(outs, ignore_errors=True)
    return 0


# ---------------------------------------------------------------------------------------
# profiling with py-spy

#: ddrp functions whose inclusive share of the samples is reported.
PROFILED = ("_stats_task", "_project_task", "read_valid", "read_rows", "check_finite",
            "block_moments", "_gram", "project_block", "mark_done", "build", "save_model",
            "open_output", "finish", "run_job")


def profile(label: str, cmd: list[str], path: Path, rate: int = 100) -> dict[str, Any]:
    """Run ``cmd`` under ``py-spy record --subprocesses`` (raw stacks to ``path``) and
    summarise: inclusive share of the ddrp functions in ``PROFILED``, share of import time,
    and the deepest ddrp_dask line of each sample (where the time goes, numpy/zarr/BLAS work
    included under the line that called it)."""
    spy = str(Path(PY).with_name("py-spy"))
    print(f"  {label:<28} ...", end="", flush=True)
    t = time.perf_counter()
    done = subprocess.run([spy, "record", "--rate", str(rate), "--format", "raw",
                           "--subprocesses", "-o", str(path), "--", *cmd],
                          capture_output=True, text=True)
    print(f" {time.perf_counter() - t:7.1f} s (under py-spy)", flush=True)
    if done.returncode != 0 or not path.exists():
        return {"error": done.stderr[-500:]}
    total = 0
    incl: dict[str, int] = {}
    lines: dict[str, int] = {}
    for row in path.read_text().splitlines():
        stack, _, count = row.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = stack.split(";")[1:]
        names = {f.split(" (", 1)[0] for f in frames}
        if any("importlib" in f for f in frames):
            names.add("(imports)")
        for name in (*PROFILED, "(imports)"):
            if name in names:
                incl[name] = incl.get(name, 0) + n
        own = [f for f in frames if "ddrp_dask/" in f or "ddrp_cli/" in f]
        key = own[-1] if own else "(outside ddrp: " + (frames[-1] if frames else "?") + ")"
        if "importlib" in stack:
            key = "(imports)"
        lines[key] = lines.get(key, 0) + n
    top = sorted(lines.items(), key=lambda kv: -kv[1])[:14]
    return {"samples": total, "rate": rate,
            "inclusive": {key: v / total for key, v in incl.items()},
            "top_lines": [(key, v / total) for key, v in top]}


def print_profile(name: str, prof: dict[str, Any]) -> None:
    """The summary of one profile."""
    if "error" in prof:
        print(f"  {name}: py-spy failed: {prof['error']}")
        return
    secs = prof["samples"] / prof["rate"]
    print(f"  {name}: {prof['samples']} samples at {prof['rate']} Hz = {secs:.1f} "
          "thread-seconds busy (all processes, all threads)")
    print("    inclusive: " + ", ".join(f"{k} {v:.0%}" for k, v in
                                         sorted(prof["inclusive"].items(), key=lambda kv: -kv[1])))
    print("    deepest ddrp line of each sample (share of busy samples):")
    for key, v in prof["top_lines"]:
        print(f"      {v:6.1%}  {key[:140]}")


# ---------------------------------------------------------------------------------------
# reporting


def _suffix(rows: int, d: int) -> str:
    """Output name suffix: none for the default 2 GB at d=256, ``-dD`` for the default rows
    at another d, ``-NxD`` for other row counts (so small runs keep the big results)."""
    if rows == 2_000_000 * 256 // d:
        return "" if d == 256 else f"-d{d}"
    return f"-{rows}x{d}"


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}" if b and math.isfinite(a) and math.isfinite(b) else ""


def report(R: Runner, args: argparse.Namespace, rows: int, d: int, k: int,
           scheds: list[str], profiles: dict[str, dict[str, Any]]) -> None:
    """Tables, targets, plot and JSON."""
    print(f"\n=== perf: X {rows} x {d}, W {args.w_rows} x {d}, K={k}; load at end "
          f"{load():.2f} ({__import__('os').cpu_count()} cores) ===")
    print(f"{'job':<26} {'wall s':>7} {'min s':>6} {'runs':>23} {'rows/s':>9} {'peak RSS':>8} "
          f"{'ΣHWM':>6} {'cpu s':>6} {'load':>5} {'/plain':>6} {'min/':>5} {'cpu/':>5}  note")
    seen: list[str] = []
    for j in R.jobs:
        if j.label in seen or j.group == "limits":
            continue
        seen.append(j.label)
        if not R.walls(j.label):
            print(f"{j.label:<26} FAILED (exit {j.returncode})")
            continue
        med = R.median(j.label)
        runs = ",".join(f"{w:.1f}" for w in R.walls(j.label)) if len(R.walls(j.label)) > 1 else ""
        runs = runs if len(runs) <= 23 else runs[:20] + "..."
        sched = j.label[j.label.find("[") + 1:-1]
        base_label = j.label.split("[")[0]
        plain_label = "plain-parquet" if "parquet" in j.label else \
            ("plain-tiny" if j.group == "tiny" else
             ("plain+thp" if "+thp" in j.label else
              (f"plain-{args.big}x" if base_label.endswith(f"-{args.big}x") else "plain")))
        if sched == "mem":
            sched = scheds[-1]
        ratio = _ratio(med, R.median(f"{plain_label}[{sched}]"))
        ratio_min = _ratio(min(R.walls(j.label)), min(R.walls(f"{plain_label}[{sched}]"),
                                                      default=float("nan")))
        ratio_cpu = _ratio(R.cpu(j.label), R.cpu(f"{plain_label}[{sched}]"))
        last = R.get(j.label)
        assert last is not None
        note = _gain(last)
        note = f"gain {note}" if note else ""
        if last.result:
            note += " " + " ".join(f"{key}={v:.1f}" if isinstance(v, float) else f"{key}={v}"
                                   for key, v in last.result.items()
                                   if key != "patched" and v is not None)
        print(f"{j.label:<26} {med:>7.1f} {min(R.walls(j.label)):>6.1f} {runs:>23} "
              f"{j.rows / med:>9.0f} {fmt_gb(R.peak(j.label)):>8} {fmt_gb(last.hwm_sum):>6} "
              f"{R.cpu(j.label):>6.1f} {last.load_after:>5.1f} {ratio:>6} {ratio_min:>5} "
              f"{ratio_cpu:>5}  {note.strip()}")
    print("(wall: whole subprocess incl. interpreter, imports, cluster start; rows/s: rows of "
          "X+W over wall; peak RSS: summed over the process tree, sampled every "
          f"{args.interval} s; ΣHWM: sum of each process's own peak, an upper bound; /plain: "
          "ratio of median walls to the plain Dask projection on the same scheduler and format; "
          "min/: ratio of the fastest runs; cpu s: median CPU seconds of the tree (user+system), "
          "cpu/: its ratio, the least load-sensitive comparison)")
    limits = {s: (R.get(f"limits[{s}]").result if R.get(f"limits[{s}]") else {})  # type: ignore
              for s in scheds}
    print("\nmachine limits:")
    for s in scheds:
        lim = limits[s]
        if not lim:
            continue
        c = lim["chunk"]
        print(f"  [{s}] one {lim['chunk_rows']}-row chunk, one thread, 1 BLAS thread "
              "(best of 5-6; indented: parts of the line above):")
        for key, v in lim["chunk_ms"].items():
            print(f"      {key:<28} {v:7.1f} ms  {c[key.strip()] / 1e3:7.0f}k rows/s")
        print(f"  [{s}] whole X ({rows} rows), 2 cores, Dask {s} (best of 2):")
        for key, v in lim["whole_rows_s"].items():
            print(f"      {key:<28} {lim['whole_s'][key]:7.1f} s   {v / 1e3:7.0f}k rows/s  "
                  f"{v * d * 4 / 1e9:5.2f} GB/s")
    targets(R, args, rows, d, scheds, limits)
    if any(j.label.startswith("daskml-") for j in R.jobs):
        print("\ndask-ml notes: runtime patch " + "; ".join(
            next((j.result.get("patched") for j in R.jobs if j.result.get("patched")), []))
            + f"; {TSVD_NOTE}")
    if profiles:
        print("\nprofiles of ddrp run --method auto (py-spy, Python frames):")
        for name, prof in profiles.items():
            print_profile(name, prof)
    path = OUT / f"perf{_suffix(rows, d)}.json"
    plot(R, scheds, path.with_suffix(".png"), rows, d, k)
    path.write_text(json.dumps({"rows": rows, "d": d, "k": k, "w_rows": args.w_rows,
                                "jobs": [j.summary() for j in R.jobs],
                                "profiles": profiles}, indent=1))
    print(f"\nwrote {path} and {path.with_suffix('.png')}")


def _alt(R: Runner, a: str, b: str) -> str:
    """Ratio of the fastest runs and of the median CPU seconds of ``a`` to ``b``."""
    wa, wb = min(R.walls(a), default=float("nan")), min(R.walls(b), default=float("nan"))
    ca, cb = R.cpu(a), R.cpu(b)
    return f"min {wa:.1f}/{wb:.1f} = {_ratio(wa, wb)}; cpu {ca:.0f}/{cb:.0f} = {_ratio(ca, cb)}"


def targets(R: Runner, args: argparse.Namespace, rows: int, d: int, scheds: list[str],
            limits: dict[str, dict[str, Any]]) -> None:
    """The targets, measured side by side."""
    print("\ntargets:")
    n_both = rows + args.w_rows

    def line(name: str, value: str, ok: bool | None) -> None:
        mark = "n/a" if ok is None else ("MET" if ok else "MISSED")
        print(f"  {name:<60} {value:<46} {mark}")

    for s in scheds:
        plain, auto = R.median(f"plain[{s}]"), R.median(f"ddrp-auto[{s}]")
        frac = R.median(f"ddrp-auto-f0.1[{s}]")
        tiny_d = R.median(f"ddrp-tiny[{s}]")
        line(f"[{s}] ddrp run auto <= 1.9 x plain (median walls)", f"{auto:.1f} / {plain:.1f} s = "
             f"{auto / plain:.2f}", auto / plain <= 1.9)
        line(f"[{s}]   fastest runs; CPU seconds of the trees", _alt(R, f"ddrp-auto[{s}]",
                                                               f"plain[{s}]"), None)
        thp_d, thp_p = R.median(f"ddrp-auto+thp[{s}]"), R.median(f"plain+thp[{s}]")
        if math.isfinite(thp_d):
            line(f"[{s}]   with {THP_ENV['GLIBC_TUNABLES']} (both jobs)",
                 f"{thp_d:.1f} / {thp_p:.1f} s = {thp_d / thp_p:.2f}; "
                 f"vs without: {thp_d / auto:.2f}, {thp_p / plain:.2f}", None)
        line(f"[{s}] ddrp run auto --stats-fraction 0.1 <= 1.2 x plain",
             f"{frac:.1f} / {plain:.1f} s = {frac / plain:.2f}", frac / plain <= 1.2)
        line(f"[{s}]   fastest runs; CPU seconds of the trees", _alt(R, f"ddrp-auto-f0.1[{s}]",
                                                               f"plain[{s}]"), None)
        api, pl = R.get(f"api-passes[{s}]"), R.get(f"plain[{s}]")
        if api and pl:
            r, inner = api.result, pl.result["compute_s"]
            full = r["pass1_s"] + r["build_s"] + r["pass2_s"]
            light = r["pass1_f0.1_s"] + r["build_s"] + r["pass2_s"]
            line(f"[{s}]   inside the process: pass1+build+pass2 vs plain compute",
                 f"{full:.1f} / {inner:.1f} s = {full / inner:.2f}", full / inner <= 1.9)
            line(f"[{s}]   inside the process, F=0.1", f"{light:.1f} / {inner:.1f} s = "
                 f"{light / inner:.2f}", light / inner <= 1.2)
        pca = R.median(f"daskml-pca[{s}]")
        if math.isfinite(pca):
            line(f"[{s}] dask-ml PCA fit+transform >= 3 x ddrp run auto",
                 f"{pca:.1f} / {auto:.1f} s = {pca / auto:.2f}", pca / auto >= 3)
        lim = limits.get(s) or {}
        if api and lim:
            r = api.result
            p1 = n_both / r["pass1_s"]
            gram2 = 2 * lim["chunk"]["gram_f32"]  # both cores
            read_gram = lim["whole_rows_s"]["read_gram"]
            line(f"[{s}] pass 1 >= 70% of numpy Gram rate (2 cores)",
                 f"{p1 / 1e3:.0f}k / {gram2 / 1e3:.0f}k rows/s = {p1 / gram2:.0%}",
                 p1 / gram2 >= 0.7)
            line(f"[{s}]   pass 1 vs plain read + Gram (the floor)",
                 f"{p1 / 1e3:.0f}k / {read_gram / 1e3:.0f}k rows/s = {p1 / read_gram:.0%}",
                 p1 / read_gram >= 0.7)
            p2 = rows / r["pass2_x_s"]
            rw = lim["whole_rows_s"]["read_write"]
            line(f"[{s}] pass 2 (X) >= 70% of read + write throughput",
                 f"{p2 / 1e3:.0f}k / {rw / 1e3:.0f}k rows/s = {p2 / rw:.0%}", p2 / rw >= 0.7)
            drw = lim["whole_rows_s"].get("read_direct_write")
            if drw:
                line(f"[{s}]   pass 2 (X) vs ddrp's own reader + write",
                     f"{p2 / 1e3:.0f}k / {drw / 1e3:.0f}k rows/s = {p2 / drw:.0%}", None)
                drg = gram2 * lim["whole_rows_s"]["read_direct"] / (
                    gram2 + lim["whole_rows_s"]["read_direct"])
                line(f"[{s}]   pass 1 vs ddrp's reader then Gram (rates combined)",
                     f"{p1 / 1e3:.0f}k / {drg / 1e3:.0f}k rows/s = {p1 / drg:.0%}", None)
            line(f"[{s}]   (API: pass1 / build / pass2 / pass1 at F=0.1)",
                 f"{r['pass1_s']:.1f} / {r['build_s']:.2f} / {r['pass2_s']:.1f} / "
                 f"{r['pass1_f0.1_s']:.1f} s", None)
        if lim:
            ms = lim["chunk_ms"]
            t1, t2 = ms["TASK ddrp _stats_task"], ms["TASK ddrp _project_task"]
            q1, q2 = ms["TASK plain read+gram"], ms["TASK plain read+@R+write"]
            line(f"[{s}]   one chunk, 1 thread: ddrp tasks / plain tasks",
                 f"p1 {t1:.0f}/{q1:.0f}, p2 {t2:.0f}/{q2:.0f} ms; (p1+p2)/plain p2 "
                 f"{(t1 + t2) / q2:.2f}", None)
        fit, proj = R.median(f"ddrp-fit[{s}]"), R.median(f"ddrp-project-x[{s}]")
        if math.isfinite(fit) and math.isfinite(proj):
            line(f"[{s}]   (CLI walls: ddrp fit / ddrp project --side x / tiny)",
                 f"{fit:.1f} / {proj:.1f} / {tiny_d:.1f} s", None)
        peak = R.peak(f"ddrp-auto[{s}]")
        line(f"[{s}] peak RSS (tree) of ddrp run auto < 1.5 GB", f"{fmt_gb(peak)} GB",
             0 < peak < TARGET_RSS)
        big = R.peak(f"ddrp-auto-{args.big}x[{s}]")
        big_d, big_p = R.median(f"ddrp-auto-{args.big}x[{s}]"), R.median(f"plain-{args.big}x[{s}]")
        if math.isfinite(big_d) and math.isfinite(big_p):
            line(f"[{s}] ddrp run auto <= 1.9 x plain on the {args.big}x source",
                 f"{big_d:.1f} / {big_p:.1f} s = {big_d / big_p:.2f}", big_d / big_p <= 1.9)
        if big:
            line(f"[{s}] peak RSS unchanged on a {args.big}x source",
                 f"{fmt_gb(big)} vs {fmt_gb(peak)} GB ({big / peak:.2f}x)",
                 big <= 1.15 * peak and big < TARGET_RSS)


def plot(R: Runner, scheds: list[str], path: Path, rows: int, d: int, k: int) -> None:
    """Bars: median wall and peak RSS of each job, coloured by scheduler."""
    plt = pyplot()

    labels = list(dict.fromkeys(j.label for j in R.jobs
                                if j.group in ("ddrp", "plain", "other") and R.walls(j.label)))
    colors = {"local": "tab:blue", "threads": "tab:orange", "mem": "tab:green"}
    c = [colors.get(lbl[lbl.find("[") + 1:-1], "tab:gray") for lbl in labels]
    fig, axes = plt.subplots(1, 2, figsize=(13, 0.35 * len(labels) + 2), sharey=True)
    y = np.arange(len(labels))
    axes[0].barh(y, [R.median(lbl) for lbl in labels], color=c)
    axes[0].set_xlabel("wall time, s (whole process)")
    axes[0].set_yticks(y, labels)
    axes[0].invert_yaxis()
    axes[1].barh(y, [R.peak(lbl) / 1e9 for lbl in labels], color=c)
    axes[1].axvline(TARGET_RSS / 1e9, color="red", ls=":", label="1.5 GB target")
    axes[1].set_xlabel("peak RSS of the process tree, GB")
    axes[1].legend()
    for ax in axes:
        ax.grid(True, axis="x", alpha=0.3)
    fig.suptitle(f"X {rows:,} x {d} float32 (+ W), K={k}; blue: LocalCluster 2x1, "
                 "orange: threads, green: in memory")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
