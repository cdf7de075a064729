"""Peak memory and speed of the real ``ddrp run`` CLI on a source larger than one task.

Generates (once; reused while the shape matches) a float32 Zarr v3 source of ``--rows`` x 256
rows in chunks of 65,536 rows, written block by block (low memory), a second one of half the
rows, and a small W (5,000 x 256 .npy). Then runs

    ddrp run --x X.zarr --w W.npy -k 32 --out OUT.zarr --overwrite --quiet --scheduler S

as a subprocess for both sources and S in (local, threads), sampling every ~0.1 s the summed
RSS (and PSS) of the whole process tree (ddrp, its LocalCluster workers, and any helper
processes). Prints a table (target: peak summed RSS < 1.5 GB) and writes an RSS-over-time plot
to bench-out/memory.png.

    python benchmarks/memory.py [--rows 2000000] [--scratch bench-out] [--regen]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import psutil
from benchlib import OUT, pyplot, vm_hwm

D = 256
CHUNK_ROWS = 65_536
W_ROWS = 5_000
K = 32
TARGET_BYTES = 1.5e9
DDRP = str(Path(sys.executable).with_name("ddrp"))


# ---------------------------------------------------------------------------------------
# data


def _x_block(i: int, rows: int, basis: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """Block ``i`` of X: a 16-dimensional signal plus noise plus a mean, float32."""
    rng = np.random.default_rng([7, i])
    z = rng.standard_normal((rows, basis.shape[0]), dtype=np.float32)
    out = z @ basis
    out += 0.3 * rng.standard_normal((rows, D), dtype=np.float32)
    out += mean
    return out


def make_x(path: Path, rows: int, regen: bool) -> None:
    """Write a ``rows`` x 256 float32 Zarr v3 array (zstd, 65,536-row chunks) block by block.

    Kept if it already exists with this shape and was completed (``--regen`` forces).
    """
    import zarr

    if not regen and (path / "zarr.json").exists():
        try:
            arr = zarr.open_array(str(path), mode="r")
            if arr.shape == (rows, D) and arr.attrs.get("bench_complete") is True:
                return
        except Exception:  # anything unreadable is regenerated
            pass
    rng = np.random.default_rng(3)
    basis = (rng.standard_normal((16, D)) * np.geomspace(3, 0.3, 16)[:, None]).astype(np.float32)
    mean = (2.0 + rng.standard_normal(D)).astype(np.float32)
    arr = zarr.create_array(str(path), shape=(rows, D), chunks=(CHUNK_ROWS, D),
                            dtype="float32", overwrite=True)
    t0 = time.perf_counter()
    for i, start in enumerate(range(0, rows, CHUNK_ROWS)):
        stop = min(start + CHUNK_ROWS, rows)
        arr[start:stop] = _x_block(i, stop - start, basis, mean)
    arr.attrs["bench_complete"] = True
    print(f"generated {path} ({rows} x {D} float32) in {time.perf_counter() - t0:.1f} s")


def make_w(path: Path) -> None:
    """A small W (5,000 x 256 float32 .npy): weight-like vectors in other directions."""
    rng = np.random.default_rng(11)
    basis = rng.standard_normal((8, D)).astype(np.float32)
    w = rng.standard_normal((W_ROWS, 8), dtype=np.float32) @ basis
    w += 0.1 * rng.standard_normal((W_ROWS, D), dtype=np.float32)
    np.save(path, w)


# ---------------------------------------------------------------------------------------
# running and sampling


@dataclass
class Run:
    """One CLI run: its samples and summary."""

    label: str
    rows: int
    scheduler: str
    wall: float = 0.0
    returncode: int = 0
    times: list[float] = field(default_factory=list)
    rss: list[int] = field(default_factory=list)
    pss: list[int] = field(default_factory=list)
    nproc: list[int] = field(default_factory=list)
    peak_parts: dict[str, int] = field(default_factory=dict)
    report: str = ""
    load: float = 0.0
    hwm: dict[int, int] = field(default_factory=dict)
    cpu: dict[int, float] = field(default_factory=dict)

    @property
    def peak_rss(self) -> int:
        return max(self.rss, default=0)

    @property
    def peak_pss(self) -> int:
        return max(self.pss, default=0)

    @property
    def hwm_sum(self) -> int:
        """Sum of every process's own peak RSS (kernel VmHWM): an upper bound of the true
        peak of the summed RSS, which catches spikes shorter than the sampling period."""
        return sum(self.hwm.values())

    @property
    def cpu_seconds(self) -> float:
        return sum(self.cpu.values())


def _role(p: psutil.Process, root_pid: int) -> str:
    """A short name for a process of the tree: ddrp (the CLI), worker, or the helper's name."""
    if p.pid == root_pid:
        return "ddrp"
    try:
        cmd = " ".join(p.cmdline())
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return "gone"
    if "resource_tracker" in cmd:
        return "resource_tracker"
    if "spawn_main" in cmd or "forkserver" in cmd:
        return "worker"
    return p.name()


def _sample(root: psutil.Process, roles: dict[int, str],
            res: Run) -> tuple[int, int, dict[str, int]]:
    """Summed RSS and PSS of ``root`` and all its descendants, and RSS per process; updates
    each process's peak RSS (VmHWM) and CPU time in ``res``."""
    try:
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0, 0, {}
    rss = pss = 0
    parts: dict[str, int] = {}
    for p in procs:
        try:
            mem = p.memory_full_info()
            cpu = p.cpu_times()
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
        res.hwm[p.pid] = max(res.hwm.get(p.pid, 0), vm_hwm(p.pid))
        res.cpu[p.pid] = cpu.user + cpu.system
        role = roles.setdefault(p.pid, _role(p, root.pid))
        rss += mem.rss
        pss += mem.pss
        key = f"{role}[{p.pid}]"
        parts[key] = mem.rss
    return rss, pss, parts


def run_cli(label: str, x: Path, w: Path, out: Path, rows: int, scheduler: str,
            interval: float, log_dir: Path) -> Run:
    """Run ``ddrp run`` once, sampling the process tree's memory until it exits."""
    cmd = [DDRP, "run", "--x", str(x), "--w", str(w), "-k", str(K), "--out", str(out),
           "--overwrite", "--quiet", "--scheduler", scheduler]
    env = {k: v for k, v in os.environ.items() if k != "DASK_SCHEDULER_ADDRESS"}
    res = Run(label, rows, scheduler)
    roles: dict[int, str] = {}
    stdout_path, stderr_path = log_dir / f"{label}.stdout", log_dir / f"{label}.stderr"
    with open(stdout_path, "wb") as so, open(stderr_path, "wb") as se:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=so, stderr=se, env=env)
        root = psutil.Process(proc.pid)
        while proc.poll() is None:
            rss, pss, parts = _sample(root, roles, res)
            now = time.perf_counter() - t0
            if rss:
                res.times.append(now)
                res.rss.append(rss)
                res.pss.append(pss)
                res.nproc.append(len(parts))
                if rss >= res.peak_rss:
                    res.peak_parts = parts
            time.sleep(interval)
        res.wall = time.perf_counter() - t0
        res.load = os.getloadavg()[0]
        res.returncode = proc.returncode
    res.report = stdout_path.read_text()
    if res.returncode != 0:
        print(f"!! {label}: exit status {res.returncode}\n{stderr_path.read_text()[-3000:]}")
    return res


def check_output(out: Path, rows: int) -> str:
    """'ok' if OUT.zarr is complete with the expected shapes, else what is wrong."""
    import zarr

    try:
        group = zarr.open_group(str(out), mode="r")
        complete = group.attrs.get("complete")
        shape_x, shape_w = group["x"].shape, group["w"].shape
    except Exception as e:  # reported, not raised
        return f"unreadable ({e})"
    if complete is not True or shape_x != (rows, K) or shape_w != (W_ROWS, K):
        return f"complete={complete} x{shape_x} w{shape_w}"
    return "ok"


# ---------------------------------------------------------------------------------------
# output


def _gb(b: float) -> str:
    return f"{b / 1e9:.3f}"


def print_table(runs: list[Run], checks: dict[str, str]) -> None:
    """The summary table, then which processes held the memory at each run's peak."""
    print(f"\n{'run':<22} {'rows':>9} {'sched':>7} {'wall s':>7} {'rows/s':>9} "
          f"{'med RSS':>7} {'peak RSS GB':>11} {'peak PSS GB':>11} {'ΣHWM GB':>8} {'procs':>5} "
          f"{'<1.5GB':>6} "
          f"{'output':>6} {'cpu s':>6} {'load':>5}")
    for r in runs:
        ok = "n/a" if r.returncode else ("yes" if r.peak_rss < TARGET_BYTES else "NO")
        print(f"{r.label:<22} {r.rows:>9} {r.scheduler:>7} {r.wall:>7.1f} "
              f"{r.rows / r.wall:>9.0f} {_gb(float(np.median(r.rss))):>7} "
              f"{_gb(r.peak_rss):>11} {_gb(r.peak_pss):>11} "
              f"{_gb(r.hwm_sum):>8} {max(r.nproc, default=0):>5} {ok:>6} "
              f"{checks[r.label]:>6} {r.cpu_seconds:>6.1f} {r.load:>5.1f}")
    print("(wall: whole CLI process incl. imports and cluster start; med/peak RSS, peak PSS: "
          "summed over the tree, sampled every ~0.1 s; ΣHWM: sum of each process's own peak "
          "RSS, an upper bound; cpu s: user+system of the tree; load: 1-min load average at "
          f"the end, {os.cpu_count()} cores)")
    print("\nRSS per process at the peak (GB):")
    for r in runs:
        parts = ", ".join(f"{k} {_gb(v)}" for k, v in
                          sorted(r.peak_parts.items(), key=lambda kv: -kv[1]))
        print(f"  {r.label}: {parts}")


def plot(runs: list[Run], path: Path) -> None:
    """Summed RSS of the process tree over time, one panel per scheduler."""
    plt = pyplot()

    scheds = list(dict.fromkeys(r.scheduler for r in runs))
    fig, axes = plt.subplots(1, len(scheds), figsize=(6.5 * len(scheds), 4.2), squeeze=False,
                             sharey=True)
    for ax, sched in zip(axes[0], scheds, strict=True):
        for r in runs:
            if r.scheduler != sched:
                continue
            line, = ax.plot(r.times, np.asarray(r.rss) / 1e9, label=f"{r.rows:,} rows RSS")
            ax.plot(r.times, np.asarray(r.pss) / 1e9, "--", color=line.get_color(), lw=0.8,
                    label=f"{r.rows:,} rows PSS")
        ax.axhline(TARGET_BYTES / 1e9, color="red", lw=0.8, ls=":", label="1.5 GB target")
        ax.set_title(f"ddrp run, K={K}, scheduler={sched}")
        ax.set_xlabel("seconds since start")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    axes[0][0].set_ylabel("summed memory of the process tree (GB)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    """Generate the sources, run the CLI four times, print and plot; status 1 over target."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2_000_000, help="rows of the large X")
    parser.add_argument("--scratch", default=str(OUT),
                        help="directory for the generated data and outputs")
    parser.add_argument("--schedulers", default="local,threads",
                        help="comma-separated --scheduler values to run")
    parser.add_argument("--interval", type=float, default=0.1, help="sampling period, s")
    parser.add_argument("--regen", action="store_true", help="regenerate the sources")
    args = parser.parse_args(argv)
    scratch = Path(args.scratch).resolve()
    scratch.mkdir(parents=True, exist_ok=True)
    w_path = scratch / "mem_w.npy"
    if args.regen or not w_path.exists():
        make_w(w_path)
    sizes = [args.rows, args.rows // 2]
    for rows in sizes:
        make_x(scratch / f"mem_x_{rows}.zarr", rows, args.regen)
    runs, checks = [], {}
    logs = scratch / "memory-logs"
    logs.mkdir(exist_ok=True)
    for sched in args.schedulers.split(","):
        for rows in sizes:
            label = f"{sched}-{rows}"
            out = scratch / f"mem_out_{label}.zarr"
            print(f"running {label} ...", flush=True)
            r = run_cli(label, scratch / f"mem_x_{rows}.zarr", w_path, out, rows, sched,
                        args.interval, logs)
            runs.append(r)
            checks[label] = check_output(out, rows) if r.returncode == 0 else "FAILED"
    print_table(runs, checks)
    plot(runs, scratch / "memory.png")
    summary = [{"label": r.label, "rows": r.rows, "scheduler": r.scheduler, "wall_s": r.wall,
                "load": r.load,
                "peak_rss": r.peak_rss, "peak_pss": r.peak_pss, "peak_parts": r.peak_parts,
                "hwm_sum": r.hwm_sum, "cpu_s": r.cpu_seconds,
                "output": checks[r.label]} for r in runs]
    (scratch / "memory.json").write_text(json.dumps(summary, indent=1))
    print(f"\nwrote {scratch / 'memory.png'} and {scratch / 'memory.json'}")
    bad = any(r.peak_rss >= TARGET_BYTES or checks[r.label] != "ok" for r in runs)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
