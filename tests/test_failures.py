"""Failures reaching the client, on real processes: each kind ends in one ``ddrp: error:``
line with its exit status; pass 1 keeps its finished partial sums, so a resumed run reads
only the blocks whose statistics are missing and writes an undisturbed run's bytes; a
worker lost again and again is resubmitted for; ``--overwrite`` says the old output stays."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import ddrp_dask as dd
from ddrp_dask import testing
from ddrp_dask.errors import OutputError
from ddrp_dask.graph.compute import ROW_KEY_TOP
from ddrp_dask.graph.rounds import ROUNDS
from ddrp_dask.io.lifecycle import staging_path
from ddrp_dask.io.partials import PartialSums

from .conftest import make_pair, write_npy, write_zarr
from .test_cluster import Cluster, _free_port, _sketch_bytes, _wait_for_workers, stop_processes

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "cli")]))

#: A worker preload: the worker kills itself (SIGKILL) as it starts a task whose key holds
#: DDRP_KILL_ON, on every start of its process (its nanny restarts it).
KILL_ON_PRELOAD = """
import os
import re
import signal

from distributed.diagnostics.plugin import WorkerPlugin


class KillOn(WorkerPlugin):
    def transition(self, key, start, finish, **kwargs):
        if finish == "executing" and os.environ["DDRP_KILL_ON"] in str(key):
            os.kill(os.getpid(), signal.SIGKILL)


async def dask_setup(worker):
    await worker.plugin_add(KillOn(), name="kill-on")
"""


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    t = tmp_path_factory.mktemp("faildata")
    x, w = make_pair(n=200_000, m=20_000, d=32, seed=5)
    return {"x": write_npy(t / "x.npy", x), "w": write_npy(t / "w.npy", w)}


def _args(data: dict[str, str], out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "ddrp_cli.main", "run", "--x", data["x"], "--w", data["w"],
            "-k", "8", "--seed", "4", "--block-rows", "2000", "--out", str(out), "--quiet",
            *extra]


def _run(args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=300, env=env or ENV)


def _start(args: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=ENV, start_new_session=True)


def _wait(cond: object, proc: subprocess.Popen[str], timeout: float = 120) -> None:
    end = time.monotonic() + timeout
    while not cond():  # type: ignore[operator]
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < end, "the run did not get there in time"
        time.sleep(0.01)


def _one_error_line(err: str) -> str:
    """The one line of stderr, checked to be ddrp's error line (no traceback, nothing
    else)."""
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("ddrp: error: "), err
    return lines[0]


def _kept(out: Path) -> PartialSums:
    return PartialSums(str(Path(str(staging_path(out))) / "_pass1"))


@pytest.fixture(scope="module")
def reference(data: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> bytes:
    out = tmp_path_factory.mktemp("failref") / "ref.zarr"
    proc = _run(_args(data, out, "--scheduler", "threads"))
    assert proc.returncode == 0, proc.stderr
    return _sketch_bytes(out)


# -- a task's own exception --------------------------------------------------------------------

@pytest.mark.cluster
@pytest.mark.parametrize("scheduler", ["threads", "local"])
def test_a_tasks_own_exception_is_one_line_and_resumable(
        data: dict[str, str], reference: bytes, tmp_path: Path, scheduler: str) -> None:
    """The last block's chunk cannot be written (a file stands where its directory goes):
    one line naming pass 2, the block, its rows and the input; exit 1; the finished
    blocks are kept, and --resume (the obstacle gone) finishes with the undisturbed bytes."""
    out = tmp_path / "o.zarr"
    cmd = _args(data, out, "--scheduler", scheduler, "--workers", "2")
    proc = _start(cmd)
    array = Path(str(staging_path(out))) / "x"
    _wait(lambda: (array / "zarr.json").exists(), proc)
    (array / "c").mkdir(exist_ok=True)
    (array / "c" / "99").write_text("in the way")
    _, err = proc.communicate(timeout=300)
    line = _one_error_line(err)
    assert proc.returncode == 1
    assert line.startswith("ddrp: error: pass 2: projection failed: block 99 (rows "
                           f"198000..200000) of x input {data['x']}: "), line
    assert line.endswith("run the same command with --resume to finish it"), line
    (array / "c" / "99").unlink()
    done = _run(_args(data, out, "--scheduler", "threads", "--resume"))
    assert done.returncode == 0, done.stderr
    assert _sketch_bytes(out) == reference


# -- the scheduler lost, or not answering --------------------------------------------------------

@pytest.mark.cluster
@pytest.mark.slow
def test_scheduler_lost_in_pass_1_is_one_line_then_resumed(
        data: dict[str, str], reference: bytes, tmp_path: Path) -> None:
    cluster = Cluster(tmp_path)
    out = tmp_path / "o.zarr"
    try:
        proc = _start(_args(data, out, "--scheduler", cluster.address))
        _wait(lambda: bool(_kept(out).saved("x")), proc)
        cluster.scheduler.send_signal(signal.SIGKILL)
        _, err = proc.communicate(timeout=120)
    finally:
        cluster.stop()
    line = _one_error_line(err)
    assert proc.returncode == 1
    assert line.startswith("ddrp: error: pass 1: statistics: lost the scheduler"), line
    assert "--resume" in line
    assert _kept(out).saved("x")  # the finished partial sums are still there
    again = Cluster(tmp_path)
    try:
        done = _run(_args(data, out, "--scheduler", again.address, "--resume"))
    finally:
        again.stop()
    assert done.returncode == 0, done.stderr
    assert _sketch_bytes(out) == reference


@pytest.mark.cluster
@pytest.mark.slow
def test_scheduler_that_never_answers_times_out_in_one_line(data: dict[str, str],
                                                             tmp_path: Path) -> None:
    """No scheduler at the address: the connection times out (20 s) in one line, exit 1,
    and nothing is written."""
    address = f"tcp://127.0.0.1:{_free_port()}"
    out = tmp_path / "o.zarr"
    proc = _run(_args(data, out, "--scheduler", address))
    line = _one_error_line(proc.stderr)
    assert proc.returncode == 1
    assert line.startswith(f"ddrp: error: cannot connect to the scheduler at {address} "
                           "(OSError: Timed out trying to connect"), line
    assert not out.exists() and not Path(str(staging_path(out))).exists()


#: A scheduler preload: the scheduler SIGKILLs itself as a client makes the request
#: DDRP_DIE_ON ("broadcast": client.run, as the cluster checks do; "gather": a pass's
#: results), so the client's comm closes in the middle of it.
DIE_ON_PRELOAD = """
import os
import signal


def dask_setup(scheduler):
    def die(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGKILL)

    scheduler.handlers[os.environ["DDRP_DIE_ON"]] = die
"""


@pytest.mark.cluster
@pytest.mark.parametrize(("request_", "said"), [
    ("broadcast", "lost the scheduler at {address} (CommClosedError: "),
    ("gather", "pass 1: statistics: lost the scheduler (CommClosedError); ")])
def test_scheduler_dying_mid_request_is_one_line(data: dict[str, str], tmp_path: Path,
                                                 request_: str, said: str) -> None:
    """The scheduler dies while it answers the client (before: the cluster check's
    CommClosedError reached the user as a traceback when the client had not yet noticed
    the loss): one line, exit 1, pointing to --resume."""
    (tmp_path / "die.py").write_text(DIE_ON_PRELOAD)
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    env = dict(ENV, DDRP_DIE_ON=request_)
    with open(tmp_path / "cluster.log", "w") as log:
        procs = [subprocess.Popen(
            [str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port", str(port),
             "--no-dashboard", "--preload", str(tmp_path / "die.py")],
            stdout=log, stderr=log, env=env)]
        procs.append(subprocess.Popen(
            [str(BIN / "dask"), "worker", address, "--nthreads", "1", "--no-nanny",
             "--no-dashboard", "--host", "127.0.0.1"], stdout=log, stderr=log, env=env))
        try:
            _wait_for_workers(address, 1, env)
            proc = _run(_args(data, tmp_path / "o.zarr", "--scheduler", address))
        finally:
            stop_processes(procs)
    line = _one_error_line(proc.stderr)
    assert proc.returncode == 1
    assert line.startswith("ddrp: error: " + said.format(address=address)), line
    assert "run the same command with --resume" in line, line


@pytest.mark.cluster
@pytest.mark.slow
def test_stopped_scheduler_times_out_in_one_line_then_resumed(
        data: dict[str, str], reference: bytes, tmp_path: Path) -> None:
    """The scheduler is stopped (SIGSTOP) in pass 1: its connection stays open and no
    error ever comes (before: ddrp waited forever). The watchdog's question goes
    unanswered for ddrp.scheduler-silence (10 s here), and the run ends in one line, exit
    1; the scheduler continued, --resume finishes with an undisturbed run's bytes."""
    cluster = Cluster(tmp_path)
    out = tmp_path / "o.zarr"
    env = dict(ENV, DASK_DDRP__SCHEDULER_SILENCE="10s")
    try:
        proc = subprocess.Popen(_args(data, out, "--scheduler", cluster.address),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=env, start_new_session=True)
        _wait(lambda: bool(_kept(out).saved("x")), proc)
        cluster.scheduler.send_signal(signal.SIGSTOP)
        stopped = time.monotonic()
        try:
            _, err = proc.communicate(timeout=120)
        finally:
            took = time.monotonic() - stopped
            cluster.scheduler.send_signal(signal.SIGCONT)
        line = _one_error_line(err)
        assert proc.returncode == 1
        assert 10 <= took < 90, took
        assert re.fullmatch(rf"ddrp: error: pass 1: statistics: the scheduler at "
                            rf"{cluster.address} has not answered for \d+ s \(stopped, or "
                            r"overloaded\?\); what was finished is kept: run the same "
                            r"command with --resume to finish it", line), line
        done = _run(_args(data, out, "--scheduler", cluster.address, "--resume"))
    finally:
        cluster.stop()
    assert done.returncode == 0, done.stderr
    assert _sketch_bytes(out) == reference


# -- workers killed: resubmitted, then given up on ---------------------------------------------

class NannyCluster:
    """``dask scheduler`` and nanny-managed ``dask worker`` processes on 127.0.0.1 with the
    given environment (e.g. the scheduler's allowed-failures) and worker preload."""

    def __init__(self, tmp: Path, env: dict[str, str], preload: str | None = None,
                 n_workers: int = 2) -> None:
        self.port = _free_port()
        self.address = f"tcp://127.0.0.1:{self.port}"
        self.log = open(tmp / f"nanny-{self.port}.log", "w")  # closed in stop()
        extra = []
        if preload is not None:
            (tmp / "preload.py").write_text(preload)
            extra = ["--preload", str(tmp / "preload.py")]
        self.scheduler = subprocess.Popen(
            [str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port", str(self.port),
             "--no-dashboard"], stdout=self.log, stderr=self.log, env=env)
        self.nannies = [subprocess.Popen(
            [str(BIN / "dask"), "worker", self.address, "--nanny", "--nthreads", "1",
             "--no-dashboard", "--memory-limit", "2GiB", "--host", "127.0.0.1", *extra],
            stdout=self.log, stderr=self.log, env=env) for _ in range(n_workers)]
        _wait_for_workers(self.address, n_workers, env)

    def worker_pids(self) -> list[int]:
        """The worker processes the nannies run now."""
        import psutil

        pids = []
        for nanny in self.nannies:
            try:
                pids += [c.pid for c in psutil.Process(nanny.pid).children()
                         if "resource_tracker" not in " ".join(c.cmdline())]
            except psutil.Error:
                continue
        return pids

    def stop(self) -> None:
        stop_processes([*self.nannies, self.scheduler])
        self.log.close()


@pytest.mark.cluster
@pytest.mark.slow
def test_a_block_whose_workers_always_die_is_resubmitted_then_one_line(
        data: dict[str, str], tmp_path: Path) -> None:
    """Every worker dies as it starts x's first block of pass 1, and the scheduler gives up
    on the first death (allowed-failures 0): ddrp resubmits, saying so, ROUNDS times in all,
    then ends in one line naming the block; exit 1."""
    first_block = f"ddrp-x-{ROW_KEY_TOP:015d}-"
    env = dict(ENV, DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES="0", DDRP_KILL_ON=first_block)
    cluster = NannyCluster(tmp_path, env, KILL_ON_PRELOAD)
    try:
        proc = _run(_args(data, tmp_path / "o.zarr", "--scheduler", cluster.address))
    finally:
        cluster.stop()
    *said, last = proc.stderr.splitlines()
    assert proc.returncode == 1, proc.stderr
    assert len(said) == ROUNDS - 1, proc.stderr
    for r, line in zip(range(2, ROUNDS + 1), said, strict=True):
        assert re.fullmatch(r"(worker lost|work lost \(\w+\)) during pass 1; resubmitting "
                            rf"\d+ blocks, round {r} of {ROUNDS}", line), line
    # the task named is one of those running on the worker that died last (with
    # allowed-failures 0 the scheduler gives up on each of them): a block, merge or load
    assert re.match(r"ddrp: error: pass 1: statistics: the cluster gave up on the task of "
                    r"[xw] rows from \d+ \(\w+\) after 1 worker died running it, in round "
                    rf"{ROUNDS} of {ROUNDS}; ", last), last
    assert last.endswith("run the same command with --resume to finish it"), last


# -- pass 1 interrupted: resumed reading only the missing blocks -------------------------------

@pytest.mark.parametrize(("sig", "block"), [(signal.SIGKILL, 2000), (signal.SIGINT, 2000),
                                            (signal.SIGKILL, 250)])
def test_pass_1_killed_then_resumed_reads_only_the_missing_blocks(
        tmp_path: Path, sig: signal.Signals, block: int) -> None:
    """``ddrp fit`` killed in pass 1 (SIGKILL, or Ctrl-C to its process group); the resumed
    fit decodes exactly the chunks of the blocks under no kept partial sum — some, not all —
    and saves the model of an undisturbed fit, byte for byte. With 250-row blocks a block's
    five fold statistics outweigh its rows: pairs of blocks are the smallest nodes kept."""
    x, w = make_pair(n=400_000, m=20_000, d=32, seed=7)
    paths = {"x": write_zarr(tmp_path / "x.zarr", x, block),
             "w": write_zarr(tmp_path / "w.zarr", w, block)}
    ref, out = tmp_path / "ref.model", tmp_path / "o.model"
    dd.execute(dd.plan_fit(paths["x"], paths["w"], 8, str(ref), seed=3, block_rows=block,
                           stats_fraction=1.0), scheduler="threads")
    n_blocks = {"x": 400_000 // block, "w": 20_000 // block}
    proc = _start([sys.executable, "-m", "ddrp_cli.main", "fit", "--x", paths["x"], "--w",
                   paths["w"], "-k", "8", "--seed", "3", "--block-rows", str(block), "--out",
                   str(out), "--quiet", "--scheduler", "threads", "--stats-fraction", "1"])
    _wait(lambda: len(_covered(_kept(out), "x", n_blocks["x"])) >= 40, proc)
    os.killpg(proc.pid, sig)
    proc.communicate(timeout=60)
    assert proc.returncode == (130 if sig == signal.SIGINT else -signal.SIGKILL)
    assert not out.exists()
    kept = {side: _covered(_kept(out), side, n) for side, n in n_blocks.items()}
    assert 40 <= len(kept["x"]) < n_blocks["x"], kept
    lowest = 0 if block == 2000 else 1
    top = (n_blocks["x"] - 1).bit_length()
    assert all(level == top or (level >= lowest and (level - lowest) % 3 == 0)
               for level, _ in _kept(out).saved("x")), _kept(out).saved("x")

    testing.count_decodes()
    before = testing.decode_counts()
    dd.execute(dd.plan_fit(paths["x"], paths["w"], 8, str(out), seed=3, block_rows=block,
                           stats_fraction=1.0, resume=True), scheduler="threads")
    after = testing.decode_counts()
    read = {key for key, n in after.items() if n > before.get(key, 0)}
    expected = {os.path.normpath(f"{paths[side]}/c/{b}/0") for side, n in n_blocks.items()
                for b in range(n) if b not in kept[side]}
    assert read == expected
    assert dd.load_model(str(out)).digest == dd.load_model(str(ref)).digest
    assert not Path(str(staging_path(out))).exists()


class _LeavesOnly(PartialSums):
    """Keeps every block's statistics and nothing above them."""

    def keeps(self, level: int, top: int) -> bool:
        return level == 0


class _Orphan(PartialSums):
    """Does what a task of an interrupted run still finishing on a cluster does: right after
    the resumed run has pinned the nodes it reads, saves the node above blocks 0-7 of x,
    which deletes their files."""

    def pin(self, side: str, into: str) -> dict[tuple[int, int], str]:
        pinned = super().pin(side, into)
        if side == "x":
            self.save("x", 3, 0, self.load(pinned[0, 0]))
            assert not os.path.exists(self.path("x", 0, 0))
        return pinned


class _OrphanUnlinked(_Orphan):
    """The control: the resumed run reads the saved files themselves, not links."""

    def pin(self, side: str, into: str) -> dict[tuple[int, int], str]:
        return {node: self.path(side, *node) for node in super().pin(side, into)}


def test_kept_statistics_deleted_by_an_orphan_task_are_read_through_the_links(
        tmp_path: Path) -> None:
    """A resumed pass 1 reads the nodes it resumes from through its own links: a task of the
    interrupted run that saves a node above them (deleting them) meanwhile changes nothing,
    and the links go when the pass ends."""
    x, w = make_pair(n=20_000, m=3_000, d=16, seed=2)
    paths = {"x": write_npy(tmp_path / "x.npy", x), "w": write_npy(tmp_path / "w.npy", w)}
    plan = dd.plan_fit(paths["x"], paths["w"], 4, str(tmp_path / "m"), seed=1,
                       block_rows=1000, stats_fraction=1.0)
    reference = plan.fit("threads").digest
    root = str(tmp_path / "_pass1")
    plan.fit("threads", keep=_LeavesOnly(root))
    leaves = {(0, i) for i in range(20)}
    assert PartialSums(root).saved("x") == leaves
    assert plan.fit("threads", keep=_Orphan(root)).digest == reference
    assert not os.listdir(os.path.join(root, "pinned"))
    shutil.rmtree(root)
    plan.fit("threads", keep=_LeavesOnly(root))
    with pytest.raises(Exception, match="kept statistics"):  # the control fails
        plan.fit("threads", keep=_OrphanUnlinked(root))


def _covered(keep: PartialSums, side: str, n: int) -> set[int]:
    """The blocks under a kept node of ``side``'s tree."""
    return {i for level, index in keep.saved(side)
            for i in range(index << level, min((index + 1) << level, n))}


# -- --overwrite needs room for both outputs -----------------------------------------------------

def test_overwrite_refusal_counts_the_old_output(tmp_path: Path) -> None:
    """An X of 10^11 rows (a sparse .npy file: no bytes on disk) needs more room than any
    test machine has; replacing a ddrp output with it is refused, and the line says the old
    output stays until the new one is complete (a new output's refusal does not)."""
    x, w = make_pair(n=3000, m=400, d=16, seed=1)
    xp, wp = write_npy(tmp_path / "x.npy", x), write_npy(tmp_path / "w.npy", w)
    out = tmp_path / "o.zarr"
    dd.execute(dd.plan_run(xp, wp, 4, str(out), block_rows=1000), scheduler="sync")
    old = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    huge = tmp_path / "huge.npy"
    with open(huge, "wb") as fh:
        np.lib.format.write_array_header_1_0(fh, {"descr": "<f4", "fortran_order": False,
                                                  "shape": (10**11, 16)})
        fh.truncate(fh.tell() + 10**11 * 16 * 4)
    with pytest.raises(OutputError, match="needs up to") as new:
        dd.plan_run(str(huge), wp, 4, str(tmp_path / "new.zarr"))
    assert "beside the output it replaces" not in str(new.value)
    with pytest.raises(OutputError, match=(
            rf"output {out} needs up to \d+ MiB beside the output it replaces "
            rf"\({old / 2**20:.1f} MiB\), which stays intact until the new one is complete: "
            r"\d+ MiB in all, but .* MiB free besides the old output's; free space, delete "
            "the old output first, or choose another output")):
        dd.plan_run(str(huge), wp, 4, str(out), overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["huge.npy", "o.zarr", "w.npy",
                                                          "x.npy"]
