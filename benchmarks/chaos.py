"""A cluster that keeps losing workers: ``ddrp run`` on a separate ``dask scheduler`` with its
default ``allowed-failures`` (3) and two nanny-managed ``dask worker`` processes, undisturbed
and then with a random worker SIGKILLed every 0.5-1.1 s (seeded) until the run ends. Reports
both wall times, the kills survived, the resubmissions said, and whether the sketches are
byte-identical.

    flock /work/helpers/bench.lock python benchmarks/chaos.py [--rows 2000000] [--w-rows 500000]
        [--d 256] [--block-rows 16384] [--scratch bench-data]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import zarr

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import DDRP, load, make_zarr

BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_cluster(log: Path) -> tuple[str, list[subprocess.Popen[bytes]]]:
    """A scheduler (default configuration) and two nanny workers of one thread each."""
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if "ALLOWED_FAILURES" not in k}
    out = open(log, "w")
    procs = [subprocess.Popen([str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port",
                               str(port), "--no-dashboard"], stdout=out, stderr=out, env=env)]
    procs += [subprocess.Popen([str(BIN / "dask"), "worker", address, "--nanny", "--nthreads",
                                "1", "--no-dashboard", "--host", "127.0.0.1"],
                               stdout=out, stderr=out, env=env) for _ in range(2)]
    code = ("import sys; from distributed import Client; c = Client(sys.argv[1], timeout=60); "
            "c.wait_for_workers(2, timeout=120); c.close()")
    subprocess.run([sys.executable, "-c", code, address], check=True, timeout=180)
    return address, procs


def worker_pids(nannies: list[subprocess.Popen[bytes]]) -> list[int]:
    pids = []
    for n in nannies:
        try:
            pids += [c.pid for c in psutil.Process(n.pid).children()
                     if "resource_tracker" not in " ".join(c.cmdline())]
        except psutil.Error:
            continue
    return pids


def run(args: list[str], nannies: list[subprocess.Popen[bytes]] | None) -> dict[str, object]:
    """One ``ddrp run``; with ``nannies``, a random worker of theirs killed every 0.5-1.1 s."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([DDRP, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    kills, stop, rng = [0], threading.Event(), random.Random(26)

    def chaos() -> None:
        assert nannies is not None
        while not stop.wait(rng.uniform(0.5, 1.1)):
            pids = worker_pids(nannies)
            if pids:
                try:
                    os.kill(rng.choice(pids), signal.SIGKILL)
                    kills[0] += 1
                except ProcessLookupError:
                    pass

    killer = threading.Thread(target=chaos, daemon=True)
    if nannies is not None:
        killer.start()
    _, err = proc.communicate()
    stop.set()
    wall = time.perf_counter() - t0
    return {"code": proc.returncode, "wall": wall, "kills": kills[0], "stderr": err}


def digest(out: Path) -> str:
    g = zarr.open_group(str(out), mode="r")
    h = hashlib.sha256()
    for name in ("x", "w"):
        h.update(g[name][...].tobytes())
    return h.hexdigest()[:16]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=2_000_000)
    p.add_argument("--w-rows", type=int, default=500_000)
    p.add_argument("--d", type=int, default=256)
    p.add_argument("--block-rows", type=int, default=16384)
    p.add_argument("--scratch", default="bench-data")
    a = p.parse_args()
    scratch = Path(a.scratch).resolve()
    scratch.mkdir(exist_ok=True)
    x, w = scratch / f"chaos-x-{a.rows}-{a.d}.zarr", scratch / f"chaos-w-{a.w_rows}-{a.d}.zarr"
    make_zarr(x, "x", a.rows, a.d, a.block_rows)
    make_zarr(w, "w", a.w_rows, a.d, a.block_rows)
    print(f"{a.rows} + {a.w_rows} rows x {a.d}, --block-rows {a.block_rows}; load {load():.1f}")
    results = {}
    for name in ("undisturbed", "chaos"):
        out = scratch / f"chaos-{name}.zarr"
        shutil.rmtree(out, ignore_errors=True)
        shutil.rmtree(out.parent / f".{out.name}.ddrp-partial", ignore_errors=True)
        address, procs = start_cluster(scratch / f"chaos-{name}.log")
        try:
            args = ["run", "--x", str(x), "--w", str(w), "-k", "32", "--seed", "1",
                    "--block-rows", str(a.block_rows), "--stats-fraction", "1", "--out",
                    str(out), "--quiet",
                    "--scheduler", address]
            r = run(args, procs[1:] if name == "chaos" else None)
        finally:
            for proc in reversed(procs):
                proc.terminate()
            for proc in procs:
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
        r["digest"] = digest(out) if r["code"] == 0 else None
        results[name] = r
        said = str(r["stderr"]).strip().splitlines()
        print(f"{name}: exit {r['code']}, {r['wall']:.1f} s, {r['kills']} kills, "
              f"{len(said)} line(s) on stderr, sketches {r['digest']}; load {load():.1f}")
        for line in said:
            print(f"  {line}")
    same = results["chaos"]["digest"] == results["undisturbed"]["digest"]
    ratio = float(results["chaos"]["wall"]) / float(results["undisturbed"]["wall"])  # type: ignore[arg-type]
    print(f"byte-identical: {same}; chaos / undisturbed wall time: {ratio:.2f}x")


if __name__ == "__main__":
    main()
