"""Speed at the widths embeddings have (d = 256–4096): the build alone, ``ddrp run`` against a
plain Dask projection, the longest silence on a terminal, and what a sample of the statistics
costs in accuracy.

    PYTHONPATH=.:cli python benchmarks/widths.py build [--ds 256,384,...] [--k 64] [--rounds 2]
                                                       [--base DIR]
    PYTHONPATH=.:cli python benchmarks/widths.py run   [--ds 384,768,...] [--rows 200000]
                                                       [--rounds 1] [--extra "--stats-fraction 1"]
    PYTHONPATH=.:cli python benchmarks/widths.py sample [--ds 256,768] [--k 64]
    PYTHONPATH=.:cli python benchmarks/widths.py profile [--d 1024]

* ``build``: ``ddrp_dask.build`` (``auto``, K = 64) alone, from in-memory fold statistics of
  the synthetic sources of ``scaling.py`` (five folds of 200,000 rows per source where a job
  cross-fits, ``folds_for(d)``), each in a fresh process, rounds interleaved; ``--base DIR``
  runs an older checkout (``git archive``) beside it. Prints wall seconds, the predicted MSE,
  the gain over gaussian, the allocation and the chosen shrinkage, and the ratios to the base.
* ``run``: X of ``--rows`` rows and W of 50,000 (synthetic embeddings: decaying spectrum,
  non-zero mean, float32, zstd Zarr in 50,000-row chunks) at each d: plain Dask
  ``from_zarr @ R -> to_zarr`` of both sources (threads) against ``ddrp run -k 64`` (default
  scheduler), which runs under a pseudo-terminal so that it draws its progress: wall, CPU
  seconds and peak RSS of the process tree, and the longest time without output. Sources are
  read once before each round (warm page cache).
* ``sample``: held-out MSE of ``auto`` fitted on the statistics of the first n rows against
  those of all rows (fresh held-out rows of the same distributions): how many rows the
  statistics need (the default ``--stats-fraction``'s rule, ``options.stats_rows``).
* ``profile``: cProfile of the build at one d (top functions by own time).

Data is generated once under ``--scratch`` (/tmp/widths-bench).
"""

from __future__ import annotations

import argparse
import os
import pty
import select
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil
from benchlib import (
    PY,
    ROOT,
    Job,
    check_library,
    emit,
    library_version,
    load,
    make_block,
    make_zarr,
    run_job,
    spectrum,
    vm_hwm,
    warm,
)

SCRATCH = Path("/tmp/widths-bench")
HERE = Path(__file__).resolve()


def _python(root: Path) -> list[str]:
    """Python with the library at ``root`` first on the path."""
    return [PY, "-c", f"import sys; sys.path[:0] = ['{root}', '{root}/cli', '{HERE.parent}']; "
            "import runpy; sys.argv = sys.argv[1:]; "
            f"runpy.run_path('{HERE}', run_name='__main__')", str(HERE)]


def _cli(root: Path) -> list[str]:
    return [PY, "-c", f"import sys; sys.path[:0] = ['{root}', '{root}/cli']; "
            "from ddrp_cli.main import cli; sys.argv[0] = 'ddrp'; cli()"]


# ---------------------------------------------------------------------------------------
# the build alone


def fold_stats(d: int) -> tuple[Any, Any, Any]:
    """(folds, mx, mw) as ``scaling.time_build`` makes them: five jittered synthetic folds of
    200,000 rows per source where a job cross-fits at this d, one fold of 1 M rows above."""
    from scaling import synthetic_moments

    from ddrp_dask.maths.stats import combine_all

    try:
        from ddrp_dask.maths.folds import folds_for
    except ImportError:  # a checkout before maths.optimal was split
        from ddrp_dask.maths.optimal import folds_for  # type: ignore[no-redef]
    n_folds = folds_for(d)
    if n_folds > 1:
        folds = tuple([synthetic_moments(d, side, 1_000_000 // n_folds, 0.02 * (f + 1))
                       for f in range(n_folds)] for side in (1, 2))
        return folds, combine_all(folds[0]), combine_all(folds[1])
    return None, synthetic_moments(d, 1), synthetic_moments(d, 2)


def build_job(d: int, k: int) -> None:
    """One timed build (in a subprocess): wall seconds and the facts of the model."""
    import ddrp_dask as dd

    folds, mx, mw = fold_stats(d)
    t, cpu = time.perf_counter(), time.process_time()
    model = dd.build(mx, mw, k, "auto", 0, folds=folds)
    wall = time.perf_counter() - t
    info = model.info
    emit({"wall": wall, "cpu": time.process_time() - cpu, "mse": info["predicted_mse"],
          "gain": info["gain"],
          "alloc": info["allocation"], "digest": model.digest,
          "shrink": f"{info['shrinkage_x']['kind']}/{info['shrinkage_w']['kind']}",
          "search": info.get("shrinkage_search", "")})


def build(args: argparse.Namespace) -> None:
    roots = {"": ROOT} | ({"base": Path(args.base)} if args.base else {})
    jobs: dict[tuple[str, int], list[Job]] = {}
    for r in range(args.rounds):
        print(f"round {r + 1}/{args.rounds}, load {load():.2f}")
        for d in args.ds:
            for tag, root in roots.items():
                cmd = [*_python(root), "_build", str(d), str(args.k)]
                job = run_job(Job(f"build d={d} {tag}".strip(), cmd),
                              log_dir=SCRATCH / "logs")
                jobs.setdefault((tag, d), []).append(job)
    base_cols = "base s | base CPU s | ÷ base | " if args.base else ""
    print(f"\n| d | build s (median) | CPU s | {base_cols}"
          f"predicted MSE | {'÷ base | ' if args.base else ''}gain | allocation "
          "(head/sampled/tail/candidates) | shrinkage x/w | runs |")
    print("|---|---|---|" + ("---|---|---|" if args.base else "") + "---|" +
          ("---|" if args.base else "") + "---|---|---|---|")
    for d in args.ds:
        now = jobs[("", d)]
        wall = statistics.median(j.result['wall'] for j in now)
        res = now[-1].result
        a = res.get("alloc", {})
        alloc = f"{a.get('head')}/{a.get('sampled')}/{a.get('tail')}/{a.get('candidates')}"
        base = ""
        mse_ratio = ""
        if args.base:
            old = jobs[("base", d)]
            bwall = statistics.median(j.result['wall'] for j in old)
            bcpu = statistics.median(j.result.get('cpu', float('nan')) for j in old)
            base = f"{bwall:.2f} | {bcpu:.1f} | {wall / bwall:.3f} | "
            mse_ratio = f"{res['mse'] / old[-1].result['mse']:.4f} | "
        runs = " ".join(f"{j.result['wall']:.2f}" for j in now)
        cpu = statistics.median(j.result.get('cpu', float('nan')) for j in now)
        print(f"| {d} | {wall:.2f} | {cpu:.1f} | {base}{res.get('mse', float('nan')):.4g} | "
              f"{mse_ratio}"
              f"{res.get('gain', float('nan')):.2f} | {alloc} | {res.get('shrink')} | {runs} |")


# ---------------------------------------------------------------------------------------
# ddrp run against a plain projection, with the longest silence on a terminal


def pty_job(job: Job, interval: float = 0.1) -> tuple[Job, float]:
    """Run ``job.cmd`` with stdout and stderr on a pseudo-terminal (so that it draws its
    progress), sampling the process tree's RSS; also the longest time between two outputs
    (from the start to the first, and from the last to the exit included)."""
    master, slave = pty.openpty()
    job.load_before = load()
    t0 = time.perf_counter()
    env = {k: v for k, v in os.environ.items() if k != "DASK_SCHEDULER_ADDRESS"}
    proc = subprocess.Popen(job.cmd, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave,
                            env=env, close_fds=True)
    os.close(slave)
    root = psutil.Process(proc.pid)
    last, gap, out = t0, 0.0, bytearray()
    while True:
        ready, _, _ = select.select([master], [], [], interval)
        now = time.perf_counter()
        if ready:
            try:
                chunk = os.read(master, 65536)
            except OSError:
                chunk = b""
            if chunk:
                out += chunk
                gap, last = max(gap, now - last), now
            elif proc.poll() is not None:
                break
        elif proc.poll() is not None:
            break
        rss = _tree_rss(root, job)
        if rss:
            job.rss.append(rss)
    proc.wait()
    os.close(master)
    end = time.perf_counter()
    job.wall = end - t0
    gap = max(gap, end - last)
    job.returncode = proc.returncode
    job.load_after = load()
    job.stderr = out.decode(errors="replace")
    status = "" if job.ok else f"  FAILED (exit {job.returncode})"
    print(f"  {job.label:<30} {job.wall:7.1f} s  peak {job.peak_rss / 1e9:5.2f} GB  "
          f"silence {gap:5.1f} s  load {job.load_after:4.1f}{status}", flush=True)
    if not job.ok:
        print("    " + job.stderr.strip()[-2000:].replace("\n", "\n    "))
    return job, gap


def _tree_rss(root: psutil.Process, job: Job) -> int:
    """Summed RSS of ``root`` and its descendants; their CPU seconds into ``job.cpu``."""
    try:
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
            t = p.cpu_times()
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
        job.cpu[p.pid] = t.user + t.system + t.children_user + t.children_system
        job.hwm[p.pid] = max(job.hwm.get(p.pid, 0), vm_hwm(p.pid))
    return total


def plain_dask(out: str, k: int, *paths: str) -> None:
    """Plain Dask ``from_zarr @ R -> to_zarr`` of each path on threads (in a subprocess)."""
    import dask
    import dask.array as da

    t0 = time.perf_counter()
    for i, path in enumerate(paths):
        a = da.from_zarr(path)
        r = np.random.default_rng(i).standard_normal((a.shape[1], k)).astype(np.float32)
        dask.compute((a @ r).to_zarr(f"{out}-{i}", overwrite=True, compute=False),
                     scheduler="threads")
    emit({"wall": time.perf_counter() - t0})


def sources(d: int, rows: int, w_rows: int) -> tuple[Path, Path]:
    x, w = SCRATCH / f"x_{rows}x{d}.zarr", SCRATCH / f"w_{w_rows}x{d}.zarr"
    for path, side, n in ((x, "x", rows), (w, "w", w_rows)):
        secs = make_zarr(path, side, n, d, 50_000)
        if secs:
            print(f"  generated {path.name} in {secs:.0f} s", flush=True)
    return x, w


def run(args: argparse.Namespace) -> None:
    roots = {"": ROOT} | ({" (base)": Path(args.base)} if args.base else {})
    table: dict[tuple[int, str], list[tuple[Job, float]]] = {}
    for d in args.ds:
        sources(d, args.rows, args.w_rows)
    for r in range(args.rounds):
        print(f"round {r + 1}/{args.rounds}, load {load():.2f}")
        for d in args.ds:
            x, w = sources(d, args.rows, args.w_rows)
            warm(x)
            warm(w)
            out = SCRATCH / "out"
            plain = run_job(Job(f"plain d={d}", [PY, str(HERE), "_plain", str(out),
                                                 str(args.k), str(x), str(w)]),
                            log_dir=SCRATCH / "logs")
            table.setdefault((d, "plain Dask threads"), []).append((plain, 0.0))
            for tag, root in roots.items():
                cmd = [*_cli(root), "run", "--x", str(x), "--w", str(w), "-k", str(args.k),
                       "--out", str(SCRATCH / "o-run.zarr"), "--overwrite",
                       *shlex.split(args.extra)]
                label = f"ddrp run{tag}"
                table.setdefault((d, label), []).append(pty_job(Job(f"{label} d={d}", cmd)))
    print(f"\nX {args.rows:,} rows, W {args.w_rows:,}, K = {args.k}, zstd Zarr in 50,000-row "
          f"chunks; medians of {args.rounds}; load {load():.2f}\n")
    print("| d | job | wall s | ÷ plain | CPU s | peak RSS GB | longest silence s |")
    print("|---|---|---|---|---|---|---|")
    for d in args.ds:
        base = statistics.median(j.wall for j, _ in table[(d, "plain Dask threads")])
        for (dd, label), runs in table.items():
            if dd != d:
                continue
            wall = statistics.median(j.wall for j, _ in runs)
            cpu = statistics.median(j.cpu_s for j, _ in runs)
            rss = statistics.median(j.peak_rss for j, _ in runs) / 1e9
            gap = statistics.median(g for _, g in runs)
            silence = f"{gap:.1f}" if label != "plain Dask threads" else "—"
            print(f"| {d} | {label} | {wall:.1f} | {wall / base:.2f} | {cpu:.1f} | {rss:.2f} | "
                  f"{silence} |")


# ---------------------------------------------------------------------------------------
# how many rows the statistics need


def sample(args: argparse.Namespace) -> None:
    """Held-out MSE of the model fitted on the statistics of the first r rows of each source
    (at most all) over the one fitted on all rows: fresh rows (blocks far past the fitted
    ones) are the held-out pairs; the predicted MSE over the measured one, as a check that
    the cross-fit stays honest on a sample."""
    import ddrp_dask as dd
    from ddrp_dask.maths.stats import combine_all

    print("| d | K | rows used x / w | rows / d | held-out MSE | ÷ all rows | predicted ÷ "
          "measured | build s | shrinkage search |")
    print("|---|---|---|---|---|---|---|---|---|")
    for d in args.ds:
        sp = spectrum(d)
        xh = np.concatenate([make_block(sp, "x", 900 + i, 1000) for i in range(2)])
        wh = np.concatenate([make_block(sp, "w", 900 + i, 500) for i in range(2)])
        exact = xh.astype(np.float64) @ wh.T.astype(np.float64)
        blocks = {side: _stats_blocks(side, d, n) for side, n in (("x", args.rows),
                                                                   ("w", args.w_rows))}
        ref = None
        for r in [max(args.rows, args.w_rows), *args.row_counts]:
            fx, fw = (_first(blocks[side], r) for side in ("x", "w"))
            t = time.perf_counter()
            mses, preds, searched = [], [], ""
            for k in args.ks:
                for seed in range(args.seeds):
                    m = dd.build(combine_all(fx), combine_all(fw), k, "auto", seed,
                                 folds=(fx, fw))
                    s = xh @ m.x.matrix + m.x.offset
                    tt = wh @ m.w.matrix + m.w.offset
                    mses.append(float(np.mean((s.astype(np.float64) @ tt.T - exact) ** 2)))
                    preds.append(m.info["predicted_mse"])
                    searched = str(m.info.get("shrinkage_search", "")).split(":")[0]
            secs = (time.perf_counter() - t) / args.seeds / len(args.ks)
            per_k = np.array(mses).reshape(len(args.ks), args.seeds).mean(axis=1)
            pred_k = np.array(preds).reshape(len(args.ks), args.seeds).mean(axis=1)
            ref = per_k if ref is None else ref
            nx, nw = sum(f.n for f in fx), sum(f.n for f in fw)
            for i, k in enumerate(args.ks):
                print(f"| {d} | {k} | {nx:,} / {nw:,} | {nx / d:.0f} | {per_k[i]:.5g} | "
                      f"{per_k[i] / ref[i]:.3f} | {pred_k[i] / per_k[i]:.2f} | {secs:.1f} | "
                      f"{searched} |", flush=True)


def _stats_blocks(side: str, d: int, rows: int) -> list[list[Any]]:
    """Per 10,000-row block of the benchmark's generator, its fold statistics."""
    try:
        from ddrp_dask.maths.folds import fold_moments
    except ImportError:  # a checkout before maths.optimal was split
        from ddrp_dask.maths.optimal import fold_moments  # type: ignore[no-redef]

    sp = spectrum(d)
    return [fold_moments(make_block(sp, side, i, 10_000), i * 10_000)
            for i in range(rows // 10_000)]


def _first(parts: list[list[Any]], rows: int) -> list[Any]:
    """The fold statistics of the first ``rows`` rows (whole blocks, at least one)."""
    from ddrp_dask.maths.stats import combine_all

    use = parts[:max(1, rows // 10_000)]
    return [combine_all([p[f] for p in use]) for f in range(len(use[0]))]


# ---------------------------------------------------------------------------------------


def profile(args: argparse.Namespace) -> None:
    import cProfile
    import pstats

    import ddrp_dask as dd

    folds, mx, mw = fold_stats(args.d)
    prof = cProfile.Profile()
    t = time.perf_counter()
    prof.enable()
    model = dd.build(mx, mw, args.k, "auto", 0, folds=folds)
    prof.disable()
    print(f"build d={args.d} K={args.k}: {time.perf_counter() - t:.2f} s, "
          f"{model.info.get('shrinkage_search')}, load {load():.2f}")
    pstats.Stats(prof).sort_stats(os.environ.get("SORT", "tottime")).print_stats(30)


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v]


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_build":
        build_job(int(sys.argv[2]), int(sys.argv[3]))
        return
    if len(sys.argv) > 1 and sys.argv[1] == "_plain":
        plain_dask(sys.argv[2], int(sys.argv[3]), *sys.argv[4:])
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=["build", "run", "sample", "profile"])
    ap.add_argument("--ds", type=_ints, default=None)
    ap.add_argument("--d", type=int, default=1024)
    ap.add_argument("--k", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--w-rows", type=int, default=50_000)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--row-counts", type=_ints, default=[100_000, 50_000, 20_000, 10_000],
                    help="sample: rows of each source the statistics come from")
    ap.add_argument("--ks", type=_ints, default=[16, 64], help="sample: the K fitted")
    ap.add_argument("--extra", default="", help="more options of ddrp run")
    ap.add_argument("--base", default=None, help="an older checkout to run beside")
    args = ap.parse_args()
    defaults = {"build": [256, 384, 768, 1024, 1536, 3072, 4096],
                "run": [384, 768, 1024, 1536, 3072], "sample": [256, 768], "profile": []}
    args.ds = args.ds or defaults[args.what]
    SCRATCH.mkdir(parents=True, exist_ok=True)
    version = library_version()
    print(f"widths {args.what}: load {load():.2f}; {version}; {os.cpu_count()} cores",
          flush=True)
    {"build": build, "run": run, "sample": sample, "profile": profile}[args.what](args)
    check_library(version)


if __name__ == "__main__":
    main()
