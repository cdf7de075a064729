"""How ddrp scales: rows, d, K, workers, and where the O(d^3) build overtakes the passes.

Each point is ddrp's Python API run in its own subprocess (``vs_libraries.py``'s ``passes`` job:
pass 1, the build and pass 2 timed inside the process; peak RSS of the process tree sampled),
on synthetic Zarr sources (zstd, chunks of ``default_block_rows(d)`` rows; cached under
``--scratch``, shared with vs_libraries.py):

* rows: 250k, 500k, 1M, 2M at d=256, K=32 (threads);
* d: 64, 256, 1024 at 500k rows (threads; 2 GB at d=1024), 2048 at 125k rows (1 GB), 4096
  at 60k rows (1 GB);
* K: 8, 32, 128 at 1M rows, d=256 (threads);
* workers: LocalCluster of 1 and 2 workers x 1 thread, 1M rows, d=256;
* the build alone (``ddrp_dask.build`` on synthetic Moments, auto and gaussian) for d from
  64 to ``--max-build-d`` (default 4096), in this process, on the fixed BLAS threads ddrp
  builds with (``maths.blas.BUILD_BLAS_THREADS``); auto cross-fitted over five synthetic
  folds up to d = 1024, as a job runs it.

The passes are modelled as a fixed part (the intercept of the rows sweep: graph, scheduler,
first reads) plus a per-row cost c + a·d + b·d² fitted to the d sweep; the measured points
of the d panel are scaled to 2 GB the same way (the fixed part is not multiplied).

    python benchmarks/scaling.py [--quick] [--max-build-d 4096] [--replot]

Prints a table and the d where the build takes longer than the two passes (for a 2 GB source
and per million rows); writes bench-out/scaling.png and .json. ~10 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from benchlib import (
    OUT,
    PY,
    ROOT,
    Job,
    check_library,
    dir_bytes,
    fmt_gb,
    library_version,
    load,
    make_zarr,
    pyplot,
    run_job,
    warm,
)

PERF = str(Path(__file__).resolve().with_name("vs_libraries.py"))
W_ROWS = 20_000


def passes_job(label: str, sweep: str, x: Path, w: Path, d: int, k: int, sched: str,
               workers: int, out: Path, log_dir: Path) -> Job:
    """One API run of pass 1 + build + pass 2 in a subprocess (vs_libraries.py's passes job)."""
    from ddrp_dask.options import default_block_rows

    p = {"job": "passes", "x": str(x), "w": str(w), "d": d, "k": k, "scheduler": sched,
         "workers": workers, "block_rows": default_block_rows(d), "out": str(out)}
    rows = int(x.name.split("_")[1].split("x")[0])
    job = run_job(Job(label, [PY, PERF, "--job", json.dumps(p)], sweep, rows + W_ROWS),
                  None, 0.1, log_dir)
    job.result.update({"d": d, "k": k, "sched": sched, "workers": workers, "x_rows": rows})
    shutil.rmtree(out, ignore_errors=True)
    return job


def synthetic_moments(d: int, seed: int, n: int = 1_000_000, jitter: float = 0.0) -> Any:
    """Moments of a made-up source of ``n`` rows: scatter A·Aᵀ with a decaying spectrum,
    nonzero mean; ``jitter``: that much relative noise on A and the mean (one fold of it)."""
    from ddrp_dask import Moments

    rng = np.random.default_rng(seed)
    a = rng.standard_normal((d, d)) * np.geomspace(3, 0.03, d)
    mean = rng.standard_normal(d) * 0.3
    if jitter:
        noise = np.random.default_rng([seed, int(jitter * 1e6), n])
        a = a * (1 + jitter * noise.standard_normal((d, d)))
        mean = mean * (1 + jitter * noise.standard_normal(d))
    return Moments(n, mean, n * (a @ a.T) / d)


def time_build(d: int, k: int, method: str) -> float:
    """Seconds of ``ddrp_dask.build`` at dimension d as a job runs it: ``auto`` cross-fitted
    over ``folds_for(d)`` folds (five synthetic folds of 200,000 rows per source) where the
    job cross-fits, in-sample above; it fixes its BLAS threads itself."""
    import ddrp_dask as dd
    from ddrp_dask.maths.folds import folds_for
    from ddrp_dask.maths.stats import combine_all

    n_folds = folds_for(d) if method == "auto" else 1
    if n_folds > 1:
        folds = tuple([synthetic_moments(d, side, 1_000_000 // n_folds, 0.02 * (f + 1))
                       for f in range(n_folds)] for side in (1, 2))
        mx, mw = combine_all(folds[0]), combine_all(folds[1])
    else:
        folds, mx, mw = None, synthetic_moments(d, 1), synthetic_moments(d, 2)
    t = time.perf_counter()
    dd.build(mx, mw, k, method, 0, folds=folds)
    return time.perf_counter() - t


def main(argv: list[str] | None = None) -> int:
    """Run the sweeps, print, plot."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scratch", default=str(OUT / "data"))
    ap.add_argument("--max-build-d", type=int, default=4096)
    ap.add_argument("--sweeps", default="rows,d,K,workers,build",
                    help="which sweeps to run (comma-separated)")
    ap.add_argument("--quick", action="store_true",
                    help="a quarter of the rows everywhere (a few minutes)")
    ap.add_argument("--replot", action="store_true",
                    help="only the tables and plot again, from bench-out/scaling.json")
    args = ap.parse_args(argv)
    if args.replot:
        saved = json.loads((OUT / "scaling.json").read_text())
        report([_job(j) for j in saved["jobs"]], saved["builds"], 1)
        return 0
    scratch = Path(args.scratch).resolve()
    scratch.mkdir(parents=True, exist_ok=True)
    log_dir = scratch / "logs" / "scaling"
    div = 4 if args.quick else 1
    t_start = time.perf_counter()
    version = library_version()
    print(f"scaling: load {load():.2f}; sources under {scratch}; {version}")
    from ddrp_dask.options import default_block_rows

    def source(rows: int, d: int, side: str = "x") -> Path:
        path = scratch / f"{side}_{rows}x{d}.zarr"
        secs = make_zarr(path, side, rows, d, default_block_rows(d))
        if secs:
            print(f"  generated {path.name} ({fmt_gb(dir_bytes(path))} GB) in {secs:.1f} s")
        warm(path)
        return path

    jobs: list[Job] = []
    out = scratch / "scaling-out"
    sweeps = set(args.sweeps.split(","))
    print("\nrows (d=256, K=32, threads):")
    w256 = source(W_ROWS, 256, "w")
    for rows in (250_000, 500_000, 1_000_000, 2_000_000) if "rows" in sweeps else ():
        rows //= div
        jobs.append(passes_job(f"rows={rows}", "rows", source(rows, 256), w256, 256, 32,
                               "threads", 2, out, log_dir))
    print("\nd (500k rows; 125k at d=2048, 60k at 4096, 1 GB; K=32, threads):")
    for d in (64, 256, 1024, 2048, 4096) if "d" in sweeps else ():
        rows_d = {2048: 125_000, 4096: 60_000}.get(d, 500_000) // div
        jobs.append(passes_job(f"d={d}", "d", source(rows_d, d), source(W_ROWS, d, "w"), d, 32,
                               "threads", 2, out, log_dir))
    print("\nK (1M rows, d=256, threads):")
    for k in (8, 32, 128) if "K" in sweeps else ():
        jobs.append(passes_job(f"K={k}", "K", source(1_000_000 // div, 256), w256, 256, k,
                               "threads", 2, out, log_dir))
    print("\nworkers (1M rows, d=256, K=32, LocalCluster n x 1 thread):")
    for n in (1, 2) if "workers" in sweeps else ():
        jobs.append(passes_job(f"workers={n}", "workers", source(1_000_000 // div, 256), w256,
                               256, 32, "local", n, out, log_dir))
    print(f"\nbuild alone (synthetic Moments, the build's BLAS threads, up to "
          f"d={args.max_build_d}):")
    builds: list[dict[str, Any]] = []
    d = 64
    while d <= args.max_build_d and "build" in sweeps:
        row = {"d": d, "auto_s": time_build(d, 32, "auto"),
               "gaussian_s": time_build(d, 32, "gaussian")}
        builds.append(row)
        print(f"  d={d:<5} auto {row['auto_s']:8.2f} s   gaussian {row['gaussian_s']:8.2f} s",
              flush=True)
        d *= 2
    report(jobs, builds, div)
    print(f"\ntotal {time.perf_counter() - t_start:.0f} s; load {load():.2f}")
    check_library(version)
    return 0


def _job(saved: dict[str, Any]) -> Job:
    """A finished job again from its ``Job.summary()`` (for ``--replot``)."""
    return Job(saved["label"], saved["cmd"], group=saved["group"], rows=saved["rows"],
               wall=saved["wall_s"], returncode=saved["returncode"], rss=[saved["peak_rss"]],
               result=saved["result"])


def _fixed_cost(jobs: list[Job]) -> float:
    """Seconds of both passes that do not grow with the rows (graph, scheduler, first
    reads): the intercept of a line through the rows sweep (0 without one)."""
    pts = [(j.rows, j.result["pass1_s"] + j.result["pass2_s"]) for j in jobs
           if j.group == "rows" and j.ok]
    if len(pts) < 2:
        return 0.0
    _, intercept = np.polyfit([p[0] for p in pts], [p[1] for p in pts], 1)
    return max(float(intercept), 0.0)


def _pass_model(jobs: list[Job], fixed: float) -> tuple[float, float, float]:
    """Fit seconds per row of both passes, beyond ``fixed``, as c + a·d + b·d² (all ≥ 0) to
    the d sweep, in relative error."""
    pts = [(j.result["d"], (j.result["pass1_s"] + j.result["pass2_s"] - fixed) / j.rows)
           for j in jobs if j.group == "d" and j.ok]
    from scipy.optimize import nnls

    if len(pts) < 3:
        return float("nan"), float("nan"), float("nan")
    ds = np.array([p[0] for p in pts], dtype=float)
    t = np.array([p[1] for p in pts])
    # every term costs time (≥ 0); relative errors weigh each d alike (absolute ones let
    # d = 4096, 300 µs a row, decide the fit for d = 64, 1 µs a row)
    design = np.column_stack([np.ones_like(ds), ds, ds**2]) / t[:, None]
    coef, _ = nnls(design, np.ones_like(t))
    return float(coef[0]), float(coef[1]), float(coef[2])


def report(jobs: list[Job], builds: list[dict[str, Any]], div: int) -> None:
    """Table, build-vs-passes crossover, plot, JSON."""
    print(f"\n=== scaling (load at end {load():.2f}) ===")
    print(f"{'point':<14} {'rows':>9} {'d':>5} {'K':>4} {'sched':>10} {'wall s':>7} "
          f"{'pass1 s':>7} {'build s':>7} {'pass2 s':>7} {'p1 rows/s':>9} {'p2 rows/s':>9} "
          f"{'F=0.1 p1':>8} {'peak RSS':>8}")
    for j in jobs:
        r = j.result
        if not j.ok:
            print(f"{j.label:<14} FAILED")
            continue
        sched = r["sched"] if r["sched"] == "threads" else f"local{r['workers']}x1"
        print(f"{j.label:<14} {r['x_rows']:>9} {r['d']:>5} {r['k']:>4} {sched:>10} "
              f"{j.wall:>7.1f} {r['pass1_s']:>7.2f} {r['build_s']:>7.2f} {r['pass2_s']:>7.2f} "
              f"{j.rows / r['pass1_s']:>9.0f} {j.rows / r['pass2_s']:>9.0f} "
              f"{r['pass1_f0.1_s']:>8.2f} {fmt_gb(j.peak_rss):>8}")
    print("(rows: of X; W has 20,000 more rows, counted in rows/s; times inside the process; "
          f"F=0.1 p1: pass 1 on a tenth of the blocks{'; --quick: rows / 4' if div > 1 else ''})")
    fixed = _fixed_cost(jobs)
    c, a, b = _pass_model(jobs, fixed)
    if not (np.isfinite(a) and builds):
        (OUT / "scaling.json").write_text(json.dumps(
            {"jobs": [j.summary() for j in jobs], "builds": builds}, indent=1))
        print("(no d sweep or no build timings: no build-vs-passes table, no plot)")
        return
    print(f"\nboth passes cost ≈ {fixed:.2f} s + ({c * 1e9:.0f} + {a * 1e9:.2f}·d + "
          f"{b * 1e9:.4f}·d²) ns per row (fixed part from the rows sweep, per row fitted to "
          "the d sweep); build vs passes:")
    print(f"{'d':>6} {'build auto s':>12} {'gaussian s':>10} {'passes, 2 GB s':>14} "
          f"{'passes, 1M rows s':>17} {'rows where build = passes':>25}")
    cross_2gb = None
    for row in builds:
        d = row["d"]
        per_row = c + a * d + b * d * d
        two_gb = fixed + (2**29 // d) * per_row
        row.update(passes_2gb_s=two_gb, passes_1m_s=fixed + 1e6 * per_row,
                   rows_equal=max(row["auto_s"] - fixed, 0.0) / per_row)
        if cross_2gb is None and row["auto_s"] > two_gb:
            cross_2gb = d
        print(f"{d:>6} {row['auto_s']:>12.2f} {row['gaussian_s']:>10.2f} {two_gb:>14.1f} "
              f"{fixed + 1e6 * per_row:>17.1f} {row['rows_equal']:>25.0f}")
    print("(passes extrapolated from the d sweep; 2 GB = 2^29 float32 values)")
    print(f"build of a 2 GB source takes longer than its passes from d = {cross_2gb}"
          if cross_2gb else "the build stays below the passes of a 2 GB source up to the "
          "largest d timed")
    plot(jobs, builds, fixed, OUT / "scaling.png")
    (OUT / "scaling.json").write_text(json.dumps(
        {"jobs": [j.summary() for j in jobs], "builds": builds,
         "pass_cost": {"fixed_s": fixed, "per_row": [c, a, b]}}, indent=1))
    print(f"wrote {ROOT / 'bench-out' / 'scaling.png'} and scaling.json")


def plot(jobs: list[Job], builds: list[dict[str, Any]], fixed: float, path: Path) -> None:
    """Four panels: rows, d (with the build as a job runs it), K, workers."""
    plt = pyplot()

    fig, ax = plt.subplots(1, 4, figsize=(18, 4.2))

    def series(sweep: str, key: str) -> tuple[list[Any], list[Job]]:
        sel = [j for j in jobs if j.group == sweep and j.ok]
        return [j.result[key] for j in sel], sel

    xs, sel = series("rows", "x_rows")
    for part in ("pass1_s", "pass2_s"):
        ax[0].plot(xs, [j.result[part] for j in sel], "o-", label=part[:5])
    ax[0].plot(xs, [j.wall for j in sel], "s--", label="wall (process)")
    ax[0].set(title="rows (d=256, K=32)", xlabel="rows of X", ylabel="seconds")
    ds = [r["d"] for r in builds]
    ax[1].loglog(ds, [r["auto_s"] for r in builds], "o-",
                 label="build auto (cross-fitted to d=1024)")
    ax[1].loglog(ds, [r["gaussian_s"] for r in builds], "o:", label="build gaussian")
    ax[1].loglog(ds, [r["passes_2gb_s"] for r in builds], "--", label="passes, 2 GB (fit)")
    ax[1].loglog(ds, [r["passes_1m_s"] for r in builds], "-.", label="passes, 1M rows (fit)")
    xd, seld = series("d", "d")
    ax[1].loglog(xd, [fixed + (j.result["pass1_s"] + j.result["pass2_s"] - fixed)
                      * 2**29 / (j.rows * d) for j, d in zip(seld, xd, strict=True)], "k^",
                 label="passes measured, scaled to 2 GB")
    ax[1].set(title="d: build vs passes", xlabel="d", ylabel="seconds")
    xk, selk = series("K", "k")
    for part in ("pass1_s", "build_s", "pass2_s"):
        ax[2].plot(xk, [j.result[part] for j in selk], "o-", label=part[:-2])
    ax[2].set(title="K (1M rows, d=256)", xlabel="K", ylabel="seconds", xscale="log")
    xw, selw = series("workers", "workers")
    width = 0.35
    for i, part in enumerate(("pass1_s", "pass2_s")):
        ax[3].bar(np.array(xw) + (i - 0.5) * width, [j.result[part] for j in selw], width,
                  label=part[:5])
    ax[3].set(title="LocalCluster workers x 1 thread (1M rows)", xlabel="workers",
              ylabel="seconds", xticks=xw)
    for axis in ax:
        axis.grid(True, alpha=0.3)
        axis.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
