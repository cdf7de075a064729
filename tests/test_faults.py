"""Faults: Ctrl-C of the ddrp process (one line on stderr, exit 130), workers killed again
and again by distributed's own chaos plugin through both passes, and clients interrupted
at seeded random points then resumed; every finished output has the bytes of an
undisturbed run."""

from __future__ import annotations

import contextlib
import datetime
import os
import pty
import random
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ddrp_dask.graph.rounds import ROUNDS

from .conftest import make_pair, write_npy
from .test_cluster import (
    _flags_done,
    _free_port,
    _sketch_bytes,
    _wait_for_workers,
    stop_processes,
)
from .test_failures import NannyCluster

pytestmark = pytest.mark.cluster

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "cli")]))
#: Mean life of a worker under the chaos plugin; with two workers one dies about every
#: 0.5-1 s (the restarted one also needs ~1 s to start).
CHAOS_DELAY = "0.75s"
#: Task retries on worker death before the scheduler calls a task bad (default 3): the
#: chaos kills far more often than a real cluster loses workers.
ALLOWED_FAILURES = "50"

CHAOS_PRELOAD = """
import os
from distributed.chaos import KillWorker

async def dask_setup(worker):
    # every start of the worker process, restarts by the nanny included
    plugin = KillWorker(delay=os.environ["DDRP_CHAOS_DELAY"], mode="segfault")
    await worker.plugin_add(plugin, name="chaos")
"""

INTERRUPTED = ("ddrp: interrupted; run the same command with --resume to finish it (what was "
               "written is kept, hidden beside OUT, or marked incomplete at a URL)\n")


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    t = tmp_path_factory.mktemp("faultdata")
    x, w = make_pair(n=200_000, m=20_000, d=32, seed=5)
    return {"x": write_npy(t / "x.npy", x), "w": write_npy(t / "w.npy", w)}


def _args(data: dict[str, str], out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "ddrp_cli.main", "run", "--x", data["x"], "--w", data["w"],
            "-k", "8", "--seed", "4", "--block-rows", "2000", "--out", str(out), "--quiet",
            *extra]


def _run(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=180, env=ENV)


def _start(args: list[str]) -> subprocess.Popen[str]:
    """The ddrp process in a session of its own, so that (as Ctrl-C in a terminal does) a
    SIGINT can go to its whole process group: it and the LocalCluster's workers."""
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=ENV, start_new_session=True)


class Tty:
    """The ddrp process (own session) with stderr on a pseudo-terminal, so that it draws
    its progress lines: the test sees which pass runs and how far it got."""

    def __init__(self, args: list[str]) -> None:
        master, slave = pty.openpty()
        self.proc = subprocess.Popen([a for a in args if a != "--quiet"],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=slave, env=ENV, start_new_session=True)
        os.close(slave)
        self.master, self.chunks = master, [b""]
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        while True:
            try:
                chunk = os.read(self.master, 4096)
            except OSError:  # EIO: the process closed the terminal
                return
            if not chunk:
                return
            self.chunks.append(chunk)

    def text(self) -> str:
        return b"".join(self.chunks).decode().replace("\r\n", "\n")

    def blocks_done(self, label: str) -> int:
        """Blocks done of the last progress line drawn for ``label`` (-1: none yet)."""
        lines = [ln for ln in self.text().replace("\r", "\n").split("\n")
                 if ln.startswith(label) and " blocks" in ln]
        return int(lines[-1].split("] ")[1].split("/")[0]) if lines else -1

    def ctrl_c(self) -> tuple[int, list[str]]:
        """Interrupt its process group; the exit status and the lines of stderr, each
        redrawn progress line counted once (its last drawing)."""
        assert self.proc.poll() is None, "the run ended before the interrupt"
        os.killpg(self.proc.pid, signal.SIGINT)
        self.proc.communicate(timeout=60)
        self.reader.join(timeout=10)
        os.close(self.master)
        return self.proc.returncode, [ln.split("\r")[-1] for ln in
                                      self.text().split("\n")[:-1]]


def _only_progress_then_interrupted(lines: list[str]) -> None:
    """Progress and status lines, then the one interrupt line, and nothing else."""
    assert lines[-1] + "\n" == INTERRUPTED, lines
    for line in lines[:-1]:
        assert line.startswith(("pass ", "local cluster:", "scheduler ")), lines


def _ctrl_c(proc: subprocess.Popen[str]) -> tuple[int, str]:
    assert proc.poll() is None, "the run ended before the interrupt"
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    return proc.returncode, err


def _staged(out: Path) -> Path:
    """Where a local output is written until it is complete (``io.lifecycle``)."""
    return out.parent / f".{out.name}.ddrp-partial"


def _wait(cond: object, proc: subprocess.Popen[str], timeout: float = 120) -> None:
    end = time.monotonic() + timeout
    while not cond():  # type: ignore[operator]
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < end, "the run did not get there in time"
        time.sleep(0.01)


@pytest.fixture(scope="module")
def reference(data: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> bytes:
    out = tmp_path_factory.mktemp("faultref") / "ref.zarr"
    proc = _run(_args(data, out, "--scheduler", "threads"))
    assert proc.returncode == 0, proc.stderr
    return _sketch_bytes(out)


# -- Ctrl-C: one line ------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("point", ["pass 1", "pass 2"])
def test_ctrl_c_on_local_cluster_prints_one_line(data: dict[str, str], tmp_path: Path,
                                                 point: str) -> None:
    """Before: ~30-80 lines (the workers took the SIGINT too and died printing
    KeyboardInterrupt tracebacks; the client's cancelled gathers logged 'Task exception was
    never retrieved'; a LocalCluster interrupted while starting failed to close at exit)."""
    out = tmp_path / "o.zarr"
    if point == "pass 1":  # seen on the progress line, which needs a terminal
        tty = Tty(_args(data, out, "--scheduler", "local", "--workers", "2"))
        _wait(lambda: tty.blocks_done("pass 1") >= 5, tty.proc)
        code, lines = tty.ctrl_c()
        assert code == 130
        _only_progress_then_interrupted(lines)
        return
    proc = _start(_args(data, out, "--scheduler", "local", "--workers", "2"))
    _wait(lambda: _flags_done(out) >= 3, proc)
    assert _ctrl_c(proc) == (130, INTERRUPTED)


def test_ctrl_c_on_threads_prints_one_line(data: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "o.zarr"
    proc = _start(_args(data, out, "--scheduler", "threads"))
    _wait(lambda: _flags_done(out) >= 3, proc)
    assert _ctrl_c(proc) == (130, INTERRUPTED)


# -- chaos: workers killed through both passes -------------------------------------------------

class ChaosCluster:
    """``dask scheduler`` and two nanny-managed ``dask worker`` processes on 127.0.0.1 whose
    workers load distributed.chaos.KillWorker (a segfault after an exponential life of mean
    CHAOS_DELAY); each nanny restarts its worker, and the plugin comes with it. (The
    plugin's default mode, sys.exit, closes the worker cleanly with exit status 0, and its
    nanny then closes too instead of restarting it: the cluster was left without workers
    after the first kill of each.)"""

    def __init__(self, tmp: Path) -> None:
        self.port = _free_port()
        self.address = f"tcp://127.0.0.1:{self.port}"
        preload = tmp / "chaos_preload.py"
        preload.write_text(CHAOS_PRELOAD)
        self.log_path = tmp / "chaos.log"
        self.log = open(self.log_path, "w")  # closed in stop()
        env = dict(ENV, DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES=ALLOWED_FAILURES,
                   DDRP_CHAOS_DELAY=CHAOS_DELAY)
        self.procs = [subprocess.Popen(
            [str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port", str(self.port),
             "--no-dashboard"], stdout=self.log, stderr=self.log, env=env)]
        _wait_for_workers_started = [subprocess.Popen(
            [str(BIN / "dask"), "worker", self.address, "--nanny", "--nthreads", "1",
             "--no-dashboard", "--memory-limit", "2GiB", "--host", "127.0.0.1",
             "--preload", str(preload)], stdout=self.log, stderr=self.log, env=env)
            for _ in range(2)]
        self.procs += _wait_for_workers_started
        _wait_for_workers(self.address, 1, ENV)

    def restarts(self) -> list[datetime.datetime]:
        """When a nanny restarted its dead worker (from the cluster's log)."""
        self.log.flush()
        return [datetime.datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")
                for line in self.log_path.read_text().splitlines()
                if "Restarting worker" in line]

    def stop(self) -> None:
        stop_processes(list(reversed(self.procs)))
        self.log.close()


@pytest.fixture(scope="module")
def chaos(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChaosCluster]:
    c = ChaosCluster(tmp_path_factory.mktemp("chaos"))
    yield c
    c.stop()


@pytest.mark.slow
def test_chaos_kills_workers_through_both_passes(data: dict[str, str], reference: bytes,
                                                 chaos: ChaosCluster, tmp_path: Path) -> None:
    out = tmp_path / "o.zarr"
    start = datetime.datetime.now()
    proc = subprocess.Popen(_args(data, out, "--scheduler", chaos.address),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    _wait(lambda: (_staged(out) / "_progress_x").exists(), proc, timeout=90)
    pass_2 = datetime.datetime.now()
    _, err = proc.communicate(timeout=90)
    end = datetime.datetime.now()
    assert proc.returncode == 0, err
    assert _sketch_bytes(out) == reference
    kills = [t for t in chaos.restarts() if start <= t <= end]
    assert len(kills) >= 1, kills  # workers died during the run ...
    # ... in each pass, where a pass lasted long enough for the exponential lives of two
    # workers (mean CHAOS_DELAY each) to make that near certain
    for lo, hi in ((start, pass_2), (pass_2, end)):
        if (hi - lo).total_seconds() > 5 * float(CHAOS_DELAY.rstrip("s")):
            assert any(lo <= t <= hi for t in kills), (lo, hi, kills)


# -- Ctrl-C of the client at seeded random points, then --resume -------------------------------

@pytest.mark.slow
def test_interrupted_at_random_points_then_resumed(data: dict[str, str], reference: bytes,
                                                   chaos: ChaosCluster,
                                                   tmp_path: Path) -> None:
    """On the chaos cluster: interrupt in pass 1, while the model is saved (after the build)
    and in pass 2 (twice), each time resuming the same output; the last resume finishes it
    with the bytes of an undisturbed run."""
    rng = random.Random(20261201)
    out = tmp_path / "o.zarr"
    cmd = _args(data, out, "--scheduler", chaos.address, "--resume")
    points: list[tuple[str, int]] = [
        ("pass 1", rng.randint(3, 40)),  # blocks of pass 1 done (its 110 leaves)
        ("model save", 0),
        ("pass 2", rng.randint(5, 30)),  # blocks of pass 2 (x) done, in all
        ("pass 2", rng.randint(40, 80)),
    ]
    for phase, where in points:
        if phase == "pass 1":
            tty = Tty(cmd)
            _wait(lambda: tty.blocks_done("pass 1") >= where, tty.proc)  # noqa: B023
            assert not out.exists()
            code, lines = tty.ctrl_c()
            assert code == 130
            _only_progress_then_interrupted(lines)
            continue
        proc = _start(cmd)
        if phase == "model save":
            _wait(lambda: (_staged(out) / "model").exists(), proc)
        else:
            _wait(lambda: _flags_done(out) >= where, proc)  # noqa: B023
        code, err = _ctrl_c(proc)
        assert (code, err) == (130, INTERRUPTED), phase
    done = _run(cmd)
    assert done.returncode == 0, done.stderr
    assert _sketch_bytes(out) == reference


def test_interrupted_as_the_output_is_created_then_resumed(data: dict[str, str],
                                                           reference: bytes,
                                                           tmp_path: Path) -> None:
    out = tmp_path / "o.zarr"
    cmd = _args(data, out, "--scheduler", "threads", "--resume")
    proc = _start(cmd)
    _wait(lambda: _staged(out).exists(), proc)  # the output is being created (staged)
    assert _ctrl_c(proc) == (130, INTERRUPTED)
    done = _run(cmd)
    assert done.returncode == 0, done.stderr
    assert _sketch_bytes(out) == reference


# -- chaos at the scheduler's default allowed-failures: ddrp resubmits -------------------------

class Killer:
    """A thread SIGKILLing a random one of ``pids()`` every 0.5-1.1 s (seeded), at most
    ``most`` times, until stopped; ``kills`` counts them."""

    def __init__(self, pids: Callable[[], list[int]], most: int = 25, seed: int = 26) -> None:
        self.pids, self.most, self.kills = pids, most, 0
        self.rng = random.Random(seed)
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while self.kills < self.most and not self.done.wait(self.rng.uniform(0.5, 1.1)):
            pids = self.pids()
            if pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.rng.choice(pids), signal.SIGKILL)
                    self.kills += 1

    def stop(self) -> int:
        self.done.set()
        self.thread.join(timeout=10)
        return self.kills


@pytest.mark.slow
def test_chaos_at_default_allowed_failures_finishes_identical(
        data: dict[str, str], reference: bytes, tmp_path: Path) -> None:
    """A separate scheduler with Dask's default allowed-failures (3) and two nanny workers,
    a random worker SIGKILLed every 0.5-1.1 s: the scheduler gives up on tasks, ddrp
    resubmits what is not finished, and the run ends with exit 0 and the undisturbed
    run's bytes."""
    env = {k: v for k, v in ENV.items() if "ALLOWED_FAILURES" not in k}
    cluster = NannyCluster(tmp_path, env)
    out = tmp_path / "o.zarr"
    try:
        proc = _start(_args(data, out, "--scheduler", cluster.address))
        killer = Killer(cluster.worker_pids)
        _, err = proc.communicate(timeout=300)
        kills = killer.stop()
    finally:
        cluster.stop()
    assert proc.returncode == 0, err
    assert kills >= 3, (kills, err)
    assert _sketch_bytes(out) == reference
    _only_resubmissions_said(err)


# -- ddrp's own LocalCluster: workers killed from outside; left without workers -------------

def _local_workers(proc: subprocess.Popen[str]) -> list[int]:
    """The worker processes of the LocalCluster the ddrp process ``proc`` started: its
    children that multiprocessing spawned (not its resource tracker)."""
    import psutil

    try:
        children = psutil.Process(proc.pid).children()
    except psutil.Error:
        return []
    pids = []
    for c in children:
        with contextlib.suppress(psutil.Error):
            if "spawn_main" in " ".join(c.cmdline()):
                pids.append(c.pid)
    return pids


@pytest.mark.slow
def test_chaos_on_ddrps_own_local_cluster_finishes_identical(
        data: dict[str, str], reference: bytes, tmp_path: Path) -> None:
    """``--scheduler local``: a random worker process of ddrp's own cluster SIGKILLed from
    outside every 0.5-1.1 s from pass 1 on (at most 8 times); the nannies restart them,
    ddrp resubmits what the scheduler gave up on, and the run ends with exit 0 and the
    undisturbed run's bytes."""
    out = tmp_path / "o.zarr"
    start = time.monotonic()
    proc = _start(_args(data, out, "--scheduler", "local", "--workers", "2"))
    # from pass 1 on: a worker killed while the cluster starts fails the start, in one
    # line ("the local cluster did not start ...; run the same command again")
    _wait(lambda: any((_staged(out) / "_pass1").rglob("*.npz")), proc)
    killer = Killer(lambda: _local_workers(proc), most=8, seed=2612)
    try:
        _, err = proc.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        _, err = proc.communicate()
    finally:
        kills = killer.stop()
    took = time.monotonic() - start
    assert proc.returncode == 0, err
    assert kills >= 3, (kills, took, err)
    assert _sketch_bytes(out) == reference
    _only_resubmissions_said(err)


#: A worker preload: the worker process SIGKILLs itself as it starts once the file
#: DDRP_NO_RESTART exists, so that the nannies' restarts all fail.
NO_RESTART_PRELOAD = """
import os
import signal


def dask_setup(worker):
    if os.path.exists(os.environ["DDRP_NO_RESTART"]):
        os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.mark.slow
def test_own_cluster_left_without_workers_ends_in_one_line(
        data: dict[str, str], reference: bytes, tmp_path: Path) -> None:
    """In pass 1 every worker of ddrp's own cluster is killed and none can start again
    (before: the run waited forever for workers that never came). With ddrp.no-workers at
    15 s the watchdog ends the run in one line, exit 1, pointing to --resume; the resumed
    run finishes with an undisturbed run's bytes."""
    (tmp_path / "no_restart.py").write_text(NO_RESTART_PRELOAD)
    marker = tmp_path / "no-restart"
    out = tmp_path / "o.zarr"
    env = dict(ENV, DDRP_NO_RESTART=str(marker), DASK_DDRP__NO_WORKERS="15s",
               DASK_DISTRIBUTED__WORKER__PRELOAD=f'["{tmp_path / "no_restart.py"}"]')
    proc = subprocess.Popen(_args(data, out, "--scheduler", "local", "--workers", "2"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, start_new_session=True)
    _wait(lambda: any((_staged(out) / "_pass1").rglob("*.npz")), proc)
    marker.write_text("")
    killed = time.monotonic()
    for pid in _local_workers(proc):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    _, err = proc.communicate(timeout=240)
    took = time.monotonic() - killed
    assert proc.returncode == 1, err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert re.fullmatch(r"ddrp: error: pass 1: statistics: the local cluster has had no "
                        r"worker for \d+ s \(.*\); what was finished is kept: run the same "
                        r"command with --resume to finish it", lines[0]), lines[0]
    assert 15 <= took < 180, took
    done = _run(_args(data, out, "--scheduler", "threads", "--resume"))
    assert done.returncode == 0, done.stderr
    assert _sketch_bytes(out) == reference


def _only_resubmissions_said(err: str) -> None:
    """Every stderr line of a --quiet run is a resubmission's (``graph.rounds``)."""
    for line in err.splitlines():
        assert re.fullmatch(r"(worker lost|work lost \(\w+\)) during pass [12]; "
                            r"(resubmitting \d+ (blocks|files), "
                            rf"round \d+ of {ROUNDS}|every one of its (blocks|files) was "
                            r"already finished: nothing to resubmit)", line), err
