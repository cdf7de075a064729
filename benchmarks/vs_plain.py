"""ddrp against plain numpy / plain Dask doing the same work (fit, run, chunk decodes), side by
side, interleaved rounds, medians; peak RSS of the whole process tree (benchlib.run_job).

    PYTHONPATH=.:cli python benchmarks/vs_plain.py wide  [--rounds 3] [--base DIR]
    PYTHONPATH=.:cli python benchmarks/vs_plain.py small [--rounds 3]
    PYTHONPATH=.:cli python benchmarks/vs_plain.py run   [--rounds 3] [--base DIR]
    PYTHONPATH=.:cli python benchmarks/vs_plain.py decodes

* ``wide``: ``ddrp fit -k 64`` of X 120,000 x 4096, W 20,000 x 4096 (Zarr, 10,000-row chunks)
  on threads and on a LocalCluster, against a plain numpy fit of the same maths (chunked
  float32 Gram accumulated in float64, two eigh and one SVD, numpy's default threads).
* ``small``: ``ddrp run`` of 300,000 x 128 (W 50,000) on threads, LocalCluster and the
  default scheduler (the choice it printed).
* ``run``: ``ddrp run -k 32`` (default scheduler) of 1,000,000 x 256 X (``--rows``; W a
  quarter as many) against plain Dask ``from_zarr @ R -> to_zarr`` of X and W (threads and
  a 2-worker LocalCluster), on 100,000-row Zarr chunks (``--all-layouts``: also 65,536-row
  chunks and Parquet with a list column or scalar columns in 100,000-row groups), with the
  default ``--stats-fraction auto``, with ``1`` (every block) and with ``0.1``.

* ``decodes``: chunk decodes of both passes of ``ddrp run`` (200,000 + 50,000 rows in
  4,096-row blocks, chunks of 3,000 to 100,000 rows), threads and a 2-worker LocalCluster,
  against reading block by block.

``wide --build-only [--d 2048]``: the build alone (``ddrp_dask.build``, ``auto``, K = 64) from the
statistics of the same generator (computed once, cached under ``--scratch``), in a fresh
process per root and BLAS thread count (``--threads 1,2``), interleaved.

``--base DIR``: also run an older checkout of the library (e.g. ``git archive`` of the
parent commit) for before/after. Data is generated once under ``--scratch`` (/tmp/perf15).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

import numpy as np
from benchlib import PY, ROOT, Job, emit, make_parquet, make_zarr, run_job

SCRATCH = Path("/tmp/perf15")


def _cli(root: Path) -> list[str]:
    return [PY, "-c", f"import sys; sys.path[:0] = ['{root}', '{root}/cli']; "
            "from ddrp_cli.main import cli; sys.argv[0] = 'ddrp'; cli()"]


def numpy_fit(x: str, w: str) -> None:
    """The plain numpy fit of the same maths (run in a subprocess)."""
    import time

    import numpy as np
    import zarr

    t0 = time.perf_counter()
    sec = []
    for path in (x, w):
        a = zarr.open_array(path, mode="r")
        d = a.shape[1]
        g, s, n = np.zeros((d, d)), np.zeros(d), 0
        step = a.chunks[0]
        for i in range(0, a.shape[0], step):
            c = a[i:i + step]
            g += (c.T @ c).astype(np.float64)
            s += c.sum(axis=0, dtype=np.float64)
            n += len(c)
        sec.append(g / n)
    ex, vx = np.linalg.eigh(sec[0])
    ew, vw = np.linalg.eigh(sec[1])
    rx = vx * np.sqrt(np.maximum(ex, 0))
    rw = vw * np.sqrt(np.maximum(ew, 0))
    np.linalg.svd(rx.T @ rw)
    emit({"wall": time.perf_counter() - t0})


def _median_table(rows: dict[str, list[Job]], ref: str) -> None:
    """Medians per job: wall, its ratio to ``ref``, CPU seconds of the process tree (on two
    cores a wall time below half of them is impossible), peak RSS."""
    base = statistics.median(j.wall for j in rows[ref])
    print(f"\n{'job':<34} {'median s':>9} {'÷ ' + ref:>14} {'CPU s':>6} {'peak RSS GB':>12}  runs")
    for label, jobs in rows.items():
        wall = statistics.median(j.wall for j in jobs)
        cpu = statistics.median(j.cpu_s for j in jobs)
        rss = statistics.median(j.peak_rss for j in jobs) / 1e9
        ok = "" if all(j.ok for j in jobs) else "  FAILED"
        print(f"{label:<34} {wall:9.2f} {wall / base:14.2f} {cpu:6.1f} {rss:12.2f}  "
              f"{' '.join(f'{j.wall:.1f}' for j in jobs)}{ok}")


def _rounds(cmds: dict[str, list[str]], rounds: int, ref: str) -> dict[str, list[Job]]:
    rows: dict[str, list[Job]] = {k: [] for k in cmds}
    for r in range(rounds):
        print(f"round {r + 1}/{rounds}")
        for label, cmd in cmds.items():
            rows[label].append(run_job(Job(label, cmd), log_dir=SCRATCH / "logs"))
    _median_table(rows, ref)
    for label, cmd in cmds.items():
        print(f"  {label}: {' '.join(cmd[3:] if cmd[1] == '-c' else cmd)}")
    return rows


def wide_stats(d: int) -> Path:
    """X (120,000 rows) and W (20,000) of ``wide``'s generator at dimension d, their
    ``Moments`` saved as .npy files (once)."""
    out = SCRATCH / f"stats{d}"
    if (out / "w_n.txt").exists():
        return out
    from benchlib import make_block, spectrum

    from ddrp_dask.maths.stats import block_moments, combine_all

    out.mkdir(parents=True, exist_ok=True)
    sp = spectrum(d)
    for side, rows in (("x", 120_000), ("w", 20_000)):
        m = combine_all([block_moments(make_block(sp, side, i, 10_000), overwrite_input=True)
                         for i in range(rows // 10_000)])
        np.save(out / f"{side}_scatter.npy", m.scatter)
        np.save(out / f"{side}_mean.npy", m.mean)
        (out / f"{side}_n.txt").write_text(str(m.n))
    return out


def build_only(root: str, stats: str, threads: int) -> None:
    """One timed ``build`` (run in a subprocess): wall, the peak RSS over the statistics."""
    import resource
    import time

    sys.path.insert(0, root)
    from ddrp_dask.maths import blas
    from ddrp_dask.maths.build import build
    from ddrp_dask.maths.stats import Moments

    blas.BUILD_BLAS_THREADS = threads
    side = [Moments(int((Path(stats) / f"{s}_n.txt").read_text()),
                    np.load(Path(stats) / f"{s}_mean.npy"),
                    np.load(Path(stats) / f"{s}_scatter.npy")) for s in ("x", "w")]
    with open("/proc/self/status") as f:  # the current RSS (KiB), inputs loaded
        before = next(int(line.split()[1]) for line in f if line.startswith("VmRSS"))
    t0 = time.perf_counter()
    model = build(side[0], side[1], 64, "auto", seed=0)
    wall = time.perf_counter() - t0
    over = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 2**20
    emit({"wall": wall, "over_inputs_gib": over, "digest": model.digest,
          "asymmetric": model.info["predicted"]["asymmetric"],
          "auto": model.info["predicted"]["auto"]})


def wide_build(args: argparse.Namespace) -> None:
    stats = wide_stats(args.d)
    roots = {"": ROOT} | ({" (base)": Path(args.base)} if args.base else {})
    cmds = {f"build d={args.d} {t} BLAS{tag}": [PY, __file__, "_build", str(root), str(stats), t]
            for t in args.threads.split(",") for tag, root in roots.items()}
    rows = _rounds(cmds, args.rounds, next(iter(cmds)))
    print(f"\n{'build alone':<28} {'median s':>9} {'GiB over inputs':>16}  digest, predicted")
    for label, jobs in rows.items():
        res = [j.result for j in jobs if j.result]
        if res:
            wall = statistics.median(r["wall"] for r in res)
            over = statistics.median(r["over_inputs_gib"] for r in res)
            print(f"{label:<28} {wall:9.2f} {over:16.2f}  {res[0]['digest']} "
                  f"asymmetric={res[0]['asymmetric']:.6g} auto={res[0]['auto']:.6g}")


def wide(args: argparse.Namespace) -> None:
    if args.build_only:
        wide_build(args)
        return
    x, w = SCRATCH / "x4096.zarr", SCRATCH / "w4096.zarr"
    make_zarr(x, "x", 120_000, 4096, 10_000)
    make_zarr(w, "w", 20_000, 4096, 10_000)
    cmds = {} if args.skip_numpy else {
        "numpy fit (same maths)": [PY, __file__, "_numpy", str(x), str(w)]}
    roots = {"": ROOT} | ({" (base)": Path(args.base)} if args.base else {})
    for tag, root in roots.items():
        for sched in args.schedulers.split(","):
            cmds[f"ddrp fit -k 64 {sched}{tag}"] = [
                *_cli(root), "fit", "--x", str(x), "--w", str(w), "-k", "64", "--out",
                str(SCRATCH / f"m4096-{sched}{tag.strip(' ()')}.zarr"), "--overwrite",
                "--quiet", "--scheduler", sched]
    _rounds(cmds, args.rounds, next(iter(cmds)))
    for label, cmd in cmds.items():  # the same bytes on every scheduler
        if "--out" in cmd:
            print(f"  model digest {label}: {_model_digest(cmd[cmd.index('--out') + 1])}")


def _model_digest(path: str) -> str:
    """``SketchModel.digest`` of a saved model (read with this checkout's library)."""
    try:
        from ddrp_dask.io.model_store import load_model

        return load_model(path).digest
    except Exception as exc:  # a failed run leaves no model
        return f"unreadable ({type(exc).__name__})"


def small(args: argparse.Namespace) -> None:
    x, w = SCRATCH / "x_small.zarr", SCRATCH / "w_small.zarr"
    make_zarr(x, "x", 300_000, 128, 65_536)
    make_zarr(w, "w", 50_000, 128, 65_536)
    cmds = {}
    for sched in ("threads", "local", "default"):
        opt = [] if sched == "default" else ["--scheduler", sched]
        cmds[f"ddrp run {sched}"] = [*_cli(ROOT), "run", "--x", str(x), "--w", str(w), "-k",
                                     "32", "--out", str(SCRATCH / f"o-small-{sched}.zarr"),
                                     "--overwrite", *opt]
    _rounds(cmds, args.rounds, "ddrp run threads")


def plain_dask(sched: str, out: str, *paths: str) -> None:
    """Plain Dask ``from_zarr @ R -> to_zarr`` of each path on ``sched`` (subprocess)."""
    import time

    import dask.array as da
    import numpy as np
    from benchlib import compute, scheduler

    with scheduler(sched) as client:
        t0 = time.perf_counter()
        for i, path in enumerate(paths):
            a = da.from_zarr(path)
            r = np.random.default_rng(i).standard_normal((a.shape[1], 32)).astype(np.float32)
            compute([(a @ r).to_zarr(f"{out}-{i}", overwrite=True, compute=False)], client)
    emit({"wall": time.perf_counter() - t0})


def run(args: argparse.Namespace) -> None:
    """``ddrp run -k 32`` of X (``--rows``) and W (a quarter as many) against plain Dask
    projections of both, on every layout of X."""
    n = args.rows
    tag_n = f"{n // 1000}k"
    w = SCRATCH / f"w_{tag_n}.zarr"
    make_zarr(w, "w", n // 4, 256, 100_000)
    srcs = {"zarr 100k chunks": SCRATCH / f"x_{tag_n}_100k.zarr",
            "zarr 65,536 chunks (= blocks)": SCRATCH / f"x_{tag_n}_64k.zarr",
            "parquet list, 100k groups": SCRATCH / f"x_{tag_n}_list.parquet",
            "parquet scalars, 100k groups": SCRATCH / f"x_{tag_n}_scalars.parquet"}
    if not args.all_layouts:
        srcs = {k: v for k, v in srcs.items() if k == "zarr 100k chunks"}
    for name, path in srcs.items():
        if name.startswith("zarr"):
            make_zarr(path, "x", n, 256, 65_536 if "65,536" in name else 100_000)
        else:
            make_parquet(path, n, 256, 100_000, scalars="scalars" in name)
    x100 = str(srcs["zarr 100k chunks"])
    cmds = {f"plain dask {s}": [PY, __file__, "_dask", s, str(SCRATCH / "o-dask"), x100, str(w)]
            for s in ("threads", "local")}
    roots = {"": ROOT} | ({" (base)": Path(args.base)} if args.base else {})
    for tag, root in roots.items():
        for name, src in srcs.items():
            for frac in ("auto", "1", "0.1"):
                label = f"run {name}{'' if frac == 'auto' else ' sf' + frac}{tag}"
                cmds[label] = [*_cli(root), "run", "--x", str(src), "--w", str(w), "-k", "32",
                               "--out", str(SCRATCH / "o-run.zarr"), "--overwrite", "--quiet",
                               "--stats-fraction", frac]
    _rounds(cmds, args.rounds, "plain dask threads")


def _decodes_per_pass(n: int, chunk: int, block: int) -> tuple[int, int]:
    """Chunk decodes of one pass when every block decodes the chunks it overlaps, and the
    chunks a pass must decode (each once)."""
    per_block = sum(-(-min(s + block, n) // chunk) - s // chunk for s in range(0, n, block))
    return per_block, -(-n // chunk)


def decodes(args: argparse.Namespace) -> None:
    """Chunk decodes of ``ddrp run`` (both passes) counted in every process
    (``ddrp_dask.testing.count_decodes``), threads and a 2-worker LocalCluster, against
    reading block by block and against decoding each chunk once per pass."""
    import logging

    import numpy as np
    import zarr
    from distributed import Client, LocalCluster

    import ddrp_dask as dd
    from ddrp_dask import testing

    n, m, d, block = 200_000, 50_000, 16, 4096
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, d)).astype(np.float32)
    w = rng.standard_normal((m, d)).astype(np.float32)
    testing.count_decodes()
    print(f"\n{'chunk rows':>10} {'scheduler':>12} {'block by block':>15} {'each once':>10} "
          f"{'ddrp':>6} {'most of one chunk':>18}")
    for chunk in (3000, 10_000, 50_000, 100_000):
        paths = []
        for name, a in (("x", x), ("w", w)):
            path = SCRATCH / f"dec_{name}_{chunk}.zarr"
            arr = zarr.create_array(str(path), shape=a.shape, dtype=a.dtype, overwrite=True,
                                    chunks=(chunk, d))
            arr[...] = a
            paths.append(str(path))
        naive = sum(2 * _decodes_per_pass(r, chunk, block)[0] for r in (n, m))
        once = sum(2 * _decodes_per_pass(r, chunk, block)[1] for r in (n, m))
        for sched in ("threads", "local"):
            plan = dd.plan_run(*paths, 8, str(SCRATCH / "dec-out.zarr"), block_rows=block,
                               overwrite=True)
            if sched == "threads":
                before = [testing.decode_counts()]
                dd.execute(plan, scheduler="threads")
                after = [testing.decode_counts()]
            else:
                with LocalCluster(n_workers=2, threads_per_worker=1,
                                  silence_logs=logging.ERROR, dashboard_address=":0") as c, \
                        Client(c) as client:
                    client.run(testing.count_decodes)
                    before = list(client.run(testing.decode_counts).values())
                    dd.execute(plan, scheduler=client)
                    after = list(client.run(testing.decode_counts).values())
            per_chunk: dict[str, int] = {}
            for b0, a0 in zip(before, after, strict=True):
                for key, v in a0.items():
                    if "dec_" in key and f"_{chunk}.zarr" in key:
                        per_chunk[key] = per_chunk.get(key, 0) + v - b0.get(key, 0)
            print(f"{chunk:>10} {sched:>12} {naive:>15} {once:>10} "
                  f"{sum(per_chunk.values()):>6} {max(per_chunk.values()):>18}")


def main() -> None:
    if sys.argv[1] == "_numpy":
        numpy_fit(sys.argv[2], sys.argv[3])
        return
    if sys.argv[1] == "_build":
        build_only(sys.argv[2], sys.argv[3], int(sys.argv[4]))
        return
    if sys.argv[1] == "_dask":
        plain_dask(*sys.argv[2:])
        return
    p = argparse.ArgumentParser()
    p.add_argument("what", choices=["wide", "small", "run", "decodes"])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--schedulers", default="threads,local", help="wide: schedulers to run")
    p.add_argument("--base", default=None)
    p.add_argument("--skip-numpy", action="store_true", help="wide: only the ddrp fits")
    p.add_argument("--rows", type=int, default=1_000_000, help="run: rows of X (W: a quarter)")
    p.add_argument("--all-layouts", action="store_true",
                   help="run: also 65,536-row chunks and Parquet (list and scalar columns)")
    p.add_argument("--build-only", action="store_true", help="wide: the build alone")
    p.add_argument("--d", type=int, default=4096, help="wide --build-only: dimension")
    p.add_argument("--threads", default="1,2", help="wide --build-only: BLAS threads")
    args = p.parse_args()
    os.environ.pop("DASK_SCHEDULER_ADDRESS", None)
    {"wide": wide, "small": small, "run": run, "decodes": decodes}[args.what](args)


if __name__ == "__main__":
    main()
