"""The one helper module of the benchmarks (not a test module).

* synthetic sources written block by block (Zarr v3 zstd, Parquet with one
  ``fixed_size_list<float32>[d]`` column, .npy), cached under a scratch directory;
* running one job as a subprocess while sampling the summed RSS of its whole process tree;
* the scheduler a job runs on (threads, or a LocalCluster like the CLI's default);
* where results go (``OUT``), the machine's load, the library's version, and pyplot.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import psutil

ROOT = Path(__file__).resolve().parents[1]
#: Where benchmarks write their tables, JSON and figures by default.
OUT = ROOT / "bench-out"
PY = sys.executable
DDRP = str(Path(sys.executable).with_name("ddrp"))
RESULT_TAG = "BENCH-JSON "
#: Environment that pins BLAS to one thread (for jobs that do not pin it themselves).
ONE_BLAS = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def load() -> float:
    """1-minute load average."""
    return os.getloadavg()[0]


def pyplot() -> Any:
    """matplotlib's pyplot on the Agg backend (files only, no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def library_version() -> str:
    """Git HEAD of the repository and a digest of the library's and the CLI's sources as they
    are now (they may change under a long benchmark: compare the value at start and end)."""
    import hashlib

    digest = hashlib.sha256()
    sources = [*(ROOT / "ddrp_dask").glob("*.py"), *(ROOT / "cli" / "ddrp_cli").glob("*.py")]
    for f in sorted(sources):
        digest.update(f.read_bytes())
    try:
        head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        head = "?"
    return f"HEAD {head}, ddrp_dask + ddrp_cli sources {digest.hexdigest()[:12]}"


def check_library(start: str) -> None:
    """Print whether the library changed since ``start`` (a ``library_version()``)."""
    now = library_version()
    if now.split("sources ")[-1] == start.split("sources ")[-1]:
        print(f"library sources unchanged during the run ({now})")
    else:
        print(f"WARNING: the library changed during the run: {start} -> {now}; "
              "jobs before and after the change are not comparable")


# ---------------------------------------------------------------------------------------
# data


@dataclass(frozen=True)
class Spectrum:
    """Directions and scales of the synthetic sources: X and W put their energy in different
    directions of one random rotation ``q`` and have nonzero means."""

    q: np.ndarray
    sx: np.ndarray
    sw: np.ndarray
    mu_x: np.ndarray
    mu_w: np.ndarray


def spectrum(d: int, seed: int = 3) -> Spectrum:
    """X: scales decaying 3 → 0.03 along q's columns; W: the same scales rolled by d/2, so
    W is strong where X is weak; means of about 0.5 and 0.2 per coordinate."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    scales = np.geomspace(3.0, 0.03, d)
    return Spectrum(q.astype(np.float32), scales.astype(np.float32),
                    np.roll(scales, d // 2).astype(np.float32),
                    (0.5 * rng.standard_normal(d)).astype(np.float32),
                    (0.2 * rng.standard_normal(d)).astype(np.float32))


def make_block(sp: Spectrum, side: str, index: int, rows: int) -> np.ndarray:
    """Rows of block ``index`` of side ``x`` or ``w`` (float32), from a per-block seed."""
    rng = np.random.default_rng([17, 0 if side == "x" else 1, index])
    z = rng.standard_normal((rows, sp.q.shape[0]), dtype=np.float32)
    z *= sp.sx if side == "x" else sp.sw
    out = z @ sp.q.T
    out += sp.mu_x if side == "x" else sp.mu_w
    return out


def _complete(path: Path, shape: tuple[int, int]) -> bool:
    import zarr

    if not (path / "zarr.json").exists():
        return False
    try:
        arr = zarr.open_array(str(path), mode="r")
        return bool(arr.shape == shape and arr.attrs.get("bench_complete") is True)
    except Exception:  # anything unreadable is regenerated
        return False


def make_zarr(path: Path, side: str, rows: int, d: int, chunk_rows: int) -> float:
    """Write (unless cached) a rows x d float32 Zarr v3 array, default codec (zstd), in
    ``chunk_rows`` chunks, block by block; returns seconds spent (0 if cached)."""
    import zarr

    if _complete(path, (rows, d)):
        return 0.0
    t0 = time.perf_counter()
    sp = spectrum(d)
    arr = zarr.create_array(str(path), shape=(rows, d), chunks=(min(chunk_rows, rows), d),
                            dtype="float32", overwrite=True)
    for i, start in enumerate(range(0, rows, chunk_rows)):
        stop = min(start + chunk_rows, rows)
        arr[start:stop] = make_block(sp, side, i, stop - start)
    arr.attrs["bench_complete"] = True
    return time.perf_counter() - t0


def make_parquet(path: Path, rows: int, d: int, group_rows: int, scalars: bool = False) -> float:
    """Write (unless cached) X as one Parquet file, one ``fixed_size_list<float32>[d]`` column
    ``vec`` (or with ``scalars`` one float32 column per dimension, ``f0``...), row groups of
    ``group_rows``, no dictionary; the same rows as ``make_zarr``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if path.exists():
        try:
            if pq.ParquetFile(path).metadata.num_rows == rows:
                return 0.0
        except Exception:  # a damaged file is regenerated
            pass
    t0 = time.perf_counter()
    sp = spectrum(d)
    schema = pa.schema([(f"f{j}", pa.float32()) for j in range(d)] if scalars else
                       [("vec", pa.list_(pa.float32(), d))])
    tmp = path.with_suffix(".partial")
    with pq.ParquetWriter(tmp, schema, use_dictionary=False) as writer:
        for i, start in enumerate(range(0, rows, group_rows)):
            block = make_block(sp, "x", i, min(group_rows, rows - start))
            cols = {f"f{j}": block[:, j] for j in range(d)} if scalars else \
                {"vec": pa.FixedSizeListArray.from_arrays(pa.array(block.ravel()), d)}
            writer.write_table(pa.table(cols, schema=schema), row_group_size=group_rows)
    tmp.rename(path)
    return time.perf_counter() - t0


def warm(path: Path) -> None:
    """Read every file under ``path`` once, so that a timed job finds it in the page cache
    (a run after a large one found its sources evicted and read them cold: pass 1 2.5 times
    slower)."""
    for f in [path] if path.is_file() else sorted(path.rglob("*")):
        if f.is_file():
            with open(f, "rb") as fh:
                while fh.read(1 << 24):
                    pass


def dir_bytes(path: Path) -> int:
    """Bytes on disk of a file or directory tree."""
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


# ---------------------------------------------------------------------------------------
# running a job as a sampled process tree


@dataclass
class Job:
    """One subprocess run: wall time, summed-RSS samples of its process tree, its result."""

    label: str
    cmd: list[str]
    group: str = ""
    rows: int = 0
    wall: float = 0.0
    returncode: int = 0
    times: list[float] = field(default_factory=list)
    rss: list[int] = field(default_factory=list)
    hwm: dict[int, int] = field(default_factory=dict)
    cpu: dict[int, float] = field(default_factory=dict)
    nproc: int = 0
    load_before: float = 0.0
    load_after: float = 0.0
    result: dict[str, Any] = field(default_factory=dict)
    stdout: str = ""
    stderr: str = ""

    @property
    def peak_rss(self) -> int:
        """Largest sampled sum of RSS over the tree."""
        return max(self.rss, default=0)

    @property
    def hwm_sum(self) -> int:
        """Sum of each process's own peak RSS (VmHWM): an upper bound of the true peak."""
        return sum(self.hwm.values())

    @property
    def cpu_s(self) -> float:
        """User + system CPU seconds of the tree (last sample of each process)."""
        return sum(self.cpu.values())

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def summary(self) -> dict[str, Any]:
        """JSON-serialisable facts of the run."""
        return {"label": self.label, "group": self.group, "rows": self.rows, "wall_s": self.wall,
                "returncode": self.returncode, "peak_rss": self.peak_rss,
                "hwm_sum": self.hwm_sum, "cpu_s": self.cpu_s, "nproc": self.nproc,
                "load_before": self.load_before, "load_after": self.load_after,
                "result": self.result, "cmd": " ".join(self.cmd)}


def vm_hwm(pid: int) -> int:
    """The kernel's peak RSS of a process (VmHWM), in bytes; 0 if unavailable."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _sample(root: psutil.Process, job: Job) -> int:
    """Summed RSS of ``root`` and its descendants; updates per-process peak and CPU."""
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
    job.nproc = max(job.nproc, len(procs))
    return total


def run_job(job: Job, env: dict[str, str] | None = None, interval: float = 0.1,
            log_dir: Path | None = None, echo: bool = True) -> Job:
    """Run ``job.cmd``, sampling the tree's summed RSS every ``interval`` s until it exits.

    A line ``BENCH-JSON {...}`` on stdout becomes ``job.result``.
    """
    full_env = {k: v for k, v in os.environ.items() if k != "DASK_SCHEDULER_ADDRESS"}
    full_env.update(env or {})
    if echo:
        print(f"  {job.label:<28} ...", end="", flush=True)
    job.load_before = load()
    t0 = time.perf_counter()
    proc = subprocess.Popen(job.cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=full_env, text=True)
    root = psutil.Process(proc.pid)
    out_parts: list[str] = []
    err_parts: list[str] = []
    import threading

    readers = [threading.Thread(target=lambda s, acc: acc.append(s.read()), args=(s, acc),
                                daemon=True)
               for s, acc in ((proc.stdout, out_parts), (proc.stderr, err_parts))]
    for r in readers:
        r.start()
    while proc.poll() is None:
        rss = _sample(root, job)
        if rss:
            job.times.append(time.perf_counter() - t0)
            job.rss.append(rss)
        time.sleep(interval)
    job.wall = time.perf_counter() - t0
    for r in readers:
        r.join()
    job.returncode = proc.returncode
    job.load_after = load()
    job.stdout, job.stderr = "".join(out_parts), "".join(err_parts)
    for line in job.stdout.splitlines():
        if line.startswith(RESULT_TAG):
            job.result = json.loads(line[len(RESULT_TAG):])
    if log_dir is not None:
        log_dir.mkdir(parents=True, exist_ok=True)
        safe = job.label.replace("/", "_").replace(" ", "_")
        (log_dir / f"{safe}.stdout").write_text(job.stdout)
        (log_dir / f"{safe}.stderr").write_text(job.stderr)
    if echo:
        status = "" if job.ok else f"  FAILED (exit {job.returncode})"
        print(f" {job.wall:7.1f} s  peak {job.peak_rss / 1e9:5.2f} GB  "
              f"load {job.load_after:4.1f}{status}", flush=True)
        if not job.ok:
            print("    " + job.stderr.strip()[-2000:].replace("\n", "\n    "))
    return job


def emit(result: dict[str, Any]) -> None:
    """Print a job's result for ``run_job`` to pick up."""
    print(RESULT_TAG + json.dumps(result), flush=True)


# ---------------------------------------------------------------------------------------
# schedulers inside a job


@contextlib.contextmanager
def scheduler(name: str, workers: int = 2) -> Iterator[Any]:
    """``"threads"`` as it is, or a LocalCluster of ``workers`` x 1 thread with a Client, set
    up as the ``ddrp`` CLI's default one (cli/ddrp_cli/common.py: workers start with
    ``GLIBC_TUNABLES=glibc.malloc.hugetlb=1``), so that baselines get the same workers."""
    if name != "local":
        yield name
        return
    import logging

    import dask
    from distributed import Client, LocalCluster

    environ = dict(dask.config.get("distributed.nanny.pre-spawn-environ", {}) or {})
    environ.setdefault("GLIBC_TUNABLES", "glibc.malloc.hugetlb=1")
    with dask.config.set({"distributed.nanny.pre-spawn-environ": environ}), \
            LocalCluster(n_workers=workers, threads_per_worker=1, memory_limit="auto",
                         silence_logs=logging.ERROR, dashboard_address=":0") as cluster, \
            Client(cluster) as client:
        yield client


def compute(objs: list[Any], sched: Any) -> list[Any]:
    """``dask.compute`` on a scheduler name or a Client."""
    import dask

    if isinstance(sched, str):
        return list(dask.compute(*objs, scheduler=sched))
    return list(sched.gather(sched.compute(objs)))


def fmt_gb(b: float) -> str:
    """Bytes as GB with two decimals."""
    return f"{b / 1e9:.2f}"
