"""Running graphs: one compute per pass with progress, the fixed reduction tree, the checks
that a cluster can run a job (visibility, memory), and the local cluster.

This package is the only part of ddrp that imports dask or distributed.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import dask
import dask.base

from ..errors import DdrpError, OptionError, RunError
from ..maths.blas import one_blas_thread
from ..maths.folds import combine_folds, merge_folds
from ..maths.stats import combine_all, merge_moments
from .progress import Ticker
from .scheduler import SchedulerLike, resolve
from .watchdog import ClusterGone, tripped, watch

__all__ = ["FAN_IN", "ROW_KEY_TOP", "TaskFailed", "check_memory", "check_visible", "client_of",
           "compute", "default_scheduler", "describe_key", "key_round", "local_scheduler",
           "row_order", "scheduler_lost", "silence_cluster_logs", "statistics_merge",
           "tree_reduce"]

#: Leaves merged per reduction task; groups are aligned, so the tree equals combine_all's
#: (for any power of two). Pairs: ``dask.order`` then walks pass 1 in row order (a wider
#: group's leaves are a set to it, taken in no fixed order), and a merge holds two blocks'
#: statistics, not eight (128 MiB each at d = 4096).
FAN_IN = 2


#: Inputs below this go to the threaded scheduler by default: on one machine it beat a
#: 2-worker LocalCluster at every size measured, 0.15 to 7.6 GB (``benchmarks/RESULTS.md``;
#: small jobs also skip the cluster's start-up). Above it, unmeasured: a LocalCluster
#: (memory limits, spilling).
THREADS_BELOW_BYTES = 8 << 30
#: Names of Dask's local schedulers (no cluster); ``synchronous`` is Dask's alias of ``sync``.
LOCAL_SCHEDULERS = ("threads", "sync", "synchronous", "processes")
#: The scheduler names ``--scheduler`` takes besides an address, as its help and its error
#: list them.
SCHEDULER_NAMES = ("local", "threads", "processes", "sync")


def tree_reduce(leaves: list[Any], merge: Callable[..., Any], *args: Any,
                fan_in: int = FAN_IN, orders: Sequence[str] = ()) -> Any:
    """Merge delayed results with ``merge(group, *args)`` in aligned groups of ``fan_in``,
    level by level: a fixed tree, so the result is the same however it is scheduled (for
    Moments and any power-of-two ``fan_in`` it equals ``combine_all``'s tree).

    ``orders``, the leaves' key prefixes (``row_order``), name each merge after its group's
    first leaf, so that Dask runs it beside its group rather than where its random key sorts.
    """
    if fan_in < 2 or fan_in & (fan_in - 1):
        raise ValueError(f"fan_in must be a power of two ≥ 2, not {fan_in}")
    level, names = list(leaves), list(orders) or [""] * len(leaves)
    depth = 0
    while len(level) > 1:
        depth += 1
        starts = range(0, len(level), fan_in)
        level = [task(merge, level[i:i + fan_in], *args,
                      order=names[i] and f"{names[i]}-{depth}") for i in starts]
        names = [names[i] for i in starts]  # a group is named after its first leaf
    return level[0]


#: ``row_order`` counts rows down from here (15 digits).
ROW_KEY_TOP = 10**15 - 1


def row_order(prefix: str, row: int) -> str:
    """A key prefix (``task``'s ``order``) that makes Dask run ``prefix``'s tasks in ascending
    ``row`` where its ordering ties. ``dask.order`` takes the largest key first on a critical
    path, so the number counts down: keys with ascending rows ran in descending row order,
    and pass 1's tree visited its groups out of order (a chunk shared by the blocks either side
    of a group's edge was then held across the whole group)."""
    return f"{prefix}-{ROW_KEY_TOP - row:015d}"


def delayed(obj: Any) -> Any:
    """``obj`` as a delayed value (shipped once to the workers that need it)."""
    return dask.delayed(obj, pure=True)


class TaskFailed(Exception):
    """A task's own unexpected exception (not a ``DdrpError``), raised on the worker with
    what the task was doing (``task``'s ``what``); ``graph.rounds`` makes it one line."""


def _guarded(func: Callable[..., Any], what: str, *args: Any) -> Any:
    """Run a task's ``func``: a ``DdrpError`` passes as it is, any other exception becomes a
    ``TaskFailed`` saying ``what`` failed (its traceback stays on the worker)."""
    try:
        return func(*args)
    except DdrpError:
        raise
    except Exception as e:
        text = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
        raise TaskFailed(f"{what or getattr(func, '__name__', 'a task')}: {text}") from e


#: The submission round of the graphs built now (``key_round``): salts the task keys.
_ROUND: contextvars.ContextVar[int] = contextvars.ContextVar("ddrp_round", default=1)


@contextlib.contextmanager
def key_round(n: int) -> Iterator[None]:
    """Tasks made in this block get keys of submission round ``n``: a resubmitted graph must
    not share keys with the tasks the scheduler gave up on (it may still hold them erred).
    Round 1 keeps the plain keys."""
    token = _ROUND.set(n)
    try:
        yield
    finally:
        _ROUND.reset(token)


def task(func: Callable[..., Any], *args: Any, order: str = "", what: str = "",
         name: str = "") -> Any:
    """A delayed call of ``func(*args)``: one task of a graph. ``order`` prefixes its key
    (``ORDER-name-token``): where Dask's ordering heuristics tie, it breaks ties by key, so
    ``row_order``'s prefixes make a pass walk its source in row order. ``what`` names the
    task in the user's terms (e.g. a block's rows and source): an unexpected exception of
    it then becomes a ``TaskFailed`` saying so (for ``graph.rounds``'s one line; without
    ``what`` the exception is raised as it is). ``name``, the key's middle part, defaults to
    ``func``'s name."""
    name = (name or getattr(func, "__name__", "task")).strip("_")
    salt = () if _ROUND.get() == 1 else (f"round-{_ROUND.get()}",)
    token = dask.base.tokenize(func, *args, *salt)
    key = f"{order}-{name}-{token}" if order else f"{name}-{token}"
    call = functools.partial(_guarded, func, what) if what else func
    return dask.delayed(call, pure=True)(*args, dask_key_name=key)


def describe_key(key: Any) -> str:
    """A task's key in the user's terms: the side and first row of a pass's block task
    (``row_order``'s prefix), else the key itself.

    >>> describe_key(f"{row_order('ddrp-x', 24000)}-stats_task-abc")
    'the task of x rows from 24000 (stats_task)'
    """
    parts = str(key).split("-")
    if len(parts) >= 5 and parts[0] == "ddrp" and parts[2].isdigit() and len(parts[2]) == 15:
        name = next((p for p in parts[3:] if not p.isdigit()), "")
        return f"the task of {parts[1]} rows from {ROW_KEY_TOP - int(parts[2])} ({name})"
    return f"task {key}"


def statistics_merge(folds: bool, scheduler: SchedulerLike) -> Callable[[Sequence[Any]], Any]:
    """Pass 1's merge of statistics (a list per fold with ``folds``) on ``scheduler``.

    On a local scheduler, where a task runs once on its inputs, it sums into its inputs'
    arrays (``maths.stats.merge_moments``: no d x d array beyond its inputs). Not on a
    cluster: there a merge can run again on inputs still in a worker's memory — its run is
    cancelled when another of its inputs is lost with a worker (the scheduler computes that
    one again), and the run already summed into the first, which then counted twice (a
    LocalCluster whose workers were killed wrote a model from scatters some percent too
    large). The same bytes either way."""
    in_place = client_of(scheduler) is None
    if folds:
        return merge_folds if in_place else combine_folds
    return merge_moments if in_place else combine_all


def dask_version() -> str:
    """The installed dask's version (recorded in provenance)."""
    return str(dask.__version__)


def client_of(scheduler: SchedulerLike) -> Any:
    """The distributed Client to use: the one given, or (for None) the active one, if any
    (``graph.scheduler.resolve``)."""
    return resolve(scheduler).client


def _missing_paths(paths: list[str]) -> list[str]:
    """Run on each worker: which of the local paths it cannot see."""
    return [p for p in paths if not os.path.exists(p)]


def check_visible(paths: Sequence[str], scheduler: SchedulerLike) -> None:
    """Fail early when a worker of the cluster cannot see one of the local ``paths`` (e.g. a
    laptop path given to a remote cluster); URLs are left to the workers."""
    client = client_of(scheduler)
    if client is None:
        return
    local = [p for p in paths if "://" not in p]
    # a worker that cannot be reached (dying, restarting) answers with its exception: it runs
    # no task either, so it is skipped rather than failing the command with a traceback
    missing = client.run(_missing_paths, local, on_error="return")
    for worker, gone in sorted(missing.items()):
        if isinstance(gone, list) and gone:
            raise OptionError(
                f"{gone[0]} is not visible to worker {worker}; put inputs and outputs on a "
                "filesystem every worker mounts, or use URLs they can reach (s3://, gs://, ...)"
            )


def check_memory(need: int, block_rows: int, scheduler: SchedulerLike) -> None:
    """Refuse, before any work, blocks that would not fit the workers' memory: a task holds
    about ``need`` bytes and a worker runs one task per thread."""
    client = client_of(scheduler)
    if client is not None:
        workers = [(addr, w.get("memory_limit") or 0, w.get("nthreads") or 1)
                   for addr, w in client.scheduler_info(n_workers=-1)["workers"].items()]
    else:
        import psutil

        workers = [("this machine", psutil.virtual_memory().available, os.cpu_count() or 1)]
    for addr, limit, threads in workers:
        budget = 0.6 * limit / threads  # Dask starts spilling at 60 % of the limit
        if limit and need > budget:
            rows = max(1, int(block_rows * budget / need))
            fit_rows = 2 ** (rows.bit_length() - 1)
            raise OptionError(
                f"a block of {block_rows} rows needs about {need / 2**20:.0f} MiB per task, "
                f"but {addr} offers {budget / 2**20:.0f} MiB per thread ({threads} thread(s), "
                f"memory {limit / 2**20:.0f} MiB); pass --block-rows {fit_rows}, or give the "
                "workers more memory or fewer threads"
            )


def compute(objs: Sequence[Any], scheduler: SchedulerLike, progress: bool, label: str,
            units: Sequence[Any] = (), unit: str = "blocks") -> list[Any]:
    """One compute of ``objs`` on ``scheduler`` (a name, a Client or None).

    With ``progress``, a line on stderr counts the ``units`` (the pass's per-block tasks;
    default ``objs``) done of all, with elapsed and remaining time, the same on every
    scheduler; ``unit`` names what they are (pass 2 into Parquet writes ``"files"``).
    """
    sched = resolve(scheduler)
    client = sched.client
    if client is not None:
        futures = client.compute([*objs, *units]) if progress else client.compute(list(objs))
        outputs, units_f = futures[:len(objs)], futures[len(objs):]
        released: set[int] = set()
        try:
            with _quiet_interrupt(), _quiet_recoveries():
                if progress:
                    _follow(units_f or outputs, label, unit, released,
                            {f.key for f in outputs})
                return list(client.gather(outputs))
        finally:  # a released future must not be cancelled: the scheduler asserts it is wanted
            if not tripped(client):  # else the scheduler may never answer
                client.cancel([f for f in futures if id(f) not in released])
    # Local schedulers run the tasks in this process: hold the (counted, process-wide) BLAS
    # limit for the whole compute, so that whatever a task computes outside its own
    # one_blas_thread block (reader conversions, small products) runs on one thread too.
    with one_blas_thread():
        if progress:
            with _LocalProgress(label, unit, {u.key for u in (units or objs)}):
                return list(dask.compute(*objs, scheduler=sched.name))
        return list(dask.compute(*objs, scheduler=sched.name))


def format_progress(label: str, done: int, total: int, elapsed: float,
                    unit: str = "blocks") -> str:
    """One progress line: ``label [####    ] done/total unit, elapsed, ~remaining``.

    >>> format_progress("pass 1", 1, 4, 10.0)
    'pass 1 [##########                              ] 1/4 blocks, 0:10 elapsed, ~0:30 left'
    """
    filled = int(40 * done / total) if total else 40
    left = elapsed / done * (total - done) if done else None
    rest = f", ~{_clock(left)} left" if left is not None and done < total else ""
    return (f"{label} [{'#' * filled}{' ' * (40 - filled)}] {done}/{total} {unit}, "
            f"{_clock(elapsed)} elapsed{rest}")


def _mib(nbytes: int) -> str:
    """A size in MiB for a status line: one decimal below 10 MiB.

    >>> _mib(480_000), _mib(3 * 2**30)
    ('0.5', '3072')
    """
    mib = nbytes / 2**20
    return f"{mib:.1f}" if mib < 10 else f"{mib:.0f}"


def _clock(seconds: float) -> str:
    s = round(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else \
        f"{s // 60}:{s % 60:02d}"


def _follow(futures: list[Any], label: str, unit: str, released: set[int],
            gathered: set[Any]) -> None:
    """Draw the progress line as the cluster finishes ``futures``, releasing each (so
    per-block results are not held on the client's behalf) and noting its ``id`` in
    ``released`` — but for those of a key in ``gathered``. A future the caller still gathers
    must not be released: its gather then fails as cancelled (pass 2 on a cluster with
    progress did, since its blocks are both the units and the outputs, and so did pass 1 of
    a source of one block, whose leaf is its tree's root)."""
    from distributed import as_completed

    start, total, done = time.monotonic(), len(futures), [0]
    ticker = Ticker(lambda: _draw(label, unit, done[0], total, time.monotonic() - start))
    _draw(label, unit, 0, total, 0.0)
    try:
        with ticker:  # redrawn every second: a slow block does not leave the line silent
            for f in as_completed(futures):
                if f.key not in gathered:
                    f.release()
                    released.add(id(f))
                with ticker.lock:
                    done[0] += 1
                    _draw(label, unit, done[0], total, time.monotonic() - start)
    finally:  # also when interrupted: the error or interrupt line then starts a line
        sys.stderr.write("\n")


def _draw(label: str, unit: str, done: int, total: int, elapsed: float) -> None:
    sys.stderr.write("\r" + format_progress(label, done, total, elapsed, unit))
    sys.stderr.flush()


class _LocalProgress:
    """Dask's local-scheduler callbacks drawing the progress line of ``keys``."""

    def __init__(self, label: str, unit: str, keys: set[Any]) -> None:
        from dask.callbacks import Callback

        self.label, self.unit, self.keys = label, unit, keys
        self.done, self.start = 0, time.monotonic()
        self._callback = Callback(posttask=self._posttask)
        self._ticker = Ticker(self._redraw)  # a slow block does not leave the line silent

    def _redraw(self) -> None:
        _draw(self.label, self.unit, self.done, len(self.keys), time.monotonic() - self.start)

    def _posttask(self, key: Any, result: Any, dsk: Any, state: Any, worker_id: Any) -> None:
        if key in self.keys:
            with self._ticker.lock:
                self.done += 1
                self._redraw()

    def __enter__(self) -> None:
        _draw(self.label, self.unit, 0, len(self.keys), 0.0)
        self._callback.__enter__()
        self._ticker.__enter__()

    def __exit__(self, *exc: object) -> None:
        self._ticker.__exit__(*exc)
        self._callback.__exit__(*exc)
        sys.stderr.write("\n")  # also when interrupted: the next line starts a line


def default_scheduler(job_bytes: int | None) -> str:
    """The local scheduler for a job reading ``job_bytes`` of input (None: unknown): the
    threaded scheduler below ``THREADS_BELOW_BYTES``, whose jobs finish before a
    LocalCluster has started, else a LocalCluster (``"local"``).

    >>> default_scheduler(100 * 2**20), default_scheduler(None), default_scheduler(2**40)
    ('threads', 'local', 'local')
    """
    return "threads" if job_bytes is not None and job_bytes < THREADS_BELOW_BYTES else "local"


@contextlib.contextmanager
def local_scheduler(scheduler: str | None = None, workers: int | None = None,
                    threads_per_worker: int = 1, memory_limit: str = "auto",
                    say: Callable[[str], None] | None = None,
                    job_bytes: int | None = None) -> Iterator[Any]:
    """Yield what a job's ``execute`` takes as ``scheduler``: a Client or a local name.

    ``scheduler``: an address (``tcp://``, ``tls://``), ``"local"`` (a LocalCluster of
    ``workers`` × ``threads_per_worker``), or a local scheduler name (``"threads"``,
    ``"sync"``, ``"processes"``). None: the address in Dask's config
    (``DASK_SCHEDULER_ADDRESS``), else ``default_scheduler(job_bytes)`` (threads up to
    ``THREADS_BELOW_BYTES``, a LocalCluster above), said. ``say`` receives one status line (the
    scheduler chosen, or the cluster and its dashboard).
    """
    tell = say or (lambda _msg: None)
    name = scheduler or dask.config.get("scheduler-address", None)
    if not name:
        name = default_scheduler(job_bytes)
        if job_bytes is not None:
            size = f"{_mib(job_bytes)} MiB of input"
            limit = f"{THREADS_BELOW_BYTES / 2**20:.0f} MiB"
            tell(f"scheduler: {name} ({size}, {'<' if name == 'threads' else '≥'} {limit}; "
                 f"--scheduler {'local' if name == 'threads' else 'threads'} for the other)")
    if name in LOCAL_SCHEDULERS:
        yield name
        return
    from distributed import Client, LocalCluster

    if name == "local":
        n = workers or max(1, (os.cpu_count() or 1) // threads_per_worker)
        # huge pages for malloc in the worker processes (read by glibc at start, ignored
        # elsewhere): every task allocates block-sized arrays, and faulting them in 4 KiB
        # pages cost ~15 % of a run here (benchmarks/vs_libraries.py, "+thp")
        environ = dict(dask.config.get("distributed.nanny.pre-spawn-environ", {}) or {})
        environ.setdefault("GLIBC_TUNABLES", "glibc.malloc.hugetlb=1")
        with contextlib.ExitStack() as stack, _quiet_interrupt():
            # Ctrl-C reaches the whole foreground process group, and worker processes that
            # took it died printing tracebacks: the preload makes them ignore SIGINT (the
            # CLI's workers from their first import, see ddrp_cli/__init__.py), so only this
            # process handles it, closing the cluster
            preload = [*(dask.config.get("distributed.worker.preload", []) or []),
                       "ddrp_dask.graph.quiet_worker"]
            with dask.config.set({"distributed.nanny.pre-spawn-environ": environ,
                                  "distributed.worker.preload": preload}), \
                    _sigint_deferred():
                try:
                    cluster = LocalCluster(
                        n_workers=n, threads_per_worker=threads_per_worker,
                        memory_limit=memory_limit, silence_logs=logging.CRITICAL,
                        dashboard_address=":0")
                    stack.callback(_close_own_cluster, cluster)
                    client = stack.enter_context(Client(cluster))
                except (OSError, RuntimeError, TimeoutError) as e:  # e.g. a worker died
                    silence_cluster_logs()
                    raise RunError(f"the local cluster did not start ({type(e).__name__}: "
                                   f"{e}); nothing was written: run the same command "
                                   "again") from None
            tell(f"local cluster: {n} worker(s) x {threads_per_worker} thread(s), dashboard "
                 f"{client.dashboard_link}")
            with _lost_scheduler(client, "of the local cluster"), \
                    watch(client, "of the local cluster", own=True):
                yield client
        return
    if "://" not in name and ":" not in name:
        raise OptionError(f"--scheduler {name!r} is neither an address (tcp://HOST:PORT, "
                          f"tls://HOST:PORT) nor one of {', '.join(SCHEDULER_NAMES)}")
    try:
        client = Client(name, timeout="20s")
    except (OSError, TimeoutError, TypeError, ValueError) as e:
        silence_cluster_logs()
        raise RunError(
            f"cannot connect to the scheduler at {name} ({type(e).__name__}: {e}); check the "
            "address, that the scheduler runs, and for tls:// the certificates "
            "(distributed.comm.tls.* in the Dask config or DASK_DISTRIBUTED__COMM__TLS__*)"
        ) from None
    with client, _quiet_interrupt(), _lost_scheduler(client, name), \
            watch(client, f"at {name}"):
        tell(f"scheduler {name}, dashboard {client.dashboard_link}")
        yield client


#: Seconds ddrp's own cluster may take to close before its worker processes are killed.
CLOSE_GRACE = 10.0


def _close_own_cluster(cluster: Any, grace: float = CLOSE_GRACE) -> None:
    """Close ddrp's own LocalCluster, killing its worker processes if it has not closed
    after ``grace`` seconds.

    A nanny whose worker process was killed while it was being restarted can be left
    waiting forever for that worker's start-up message (two restarts of one nanny race,
    and one drops the other's message), although the worker runs and serves the
    scheduler; closing the nanny then waits for the start forever, and so did the job
    after its output was complete (``tests/test_faults.py``, chaos on ddrp's own
    cluster). Once its worker process is gone, the nanny's start ends and it closes.
    Killing is safe here: the job is over, and its outputs are written whole or not at
    all (a worker may die at any time)."""
    killer = threading.Timer(grace, _kill_workers, args=(cluster,))
    killer.daemon = True
    killer.start()
    try:
        cluster.close()
    finally:
        killer.cancel()


def _kill_workers(cluster: Any) -> None:
    """SIGKILL the worker processes of the LocalCluster ``cluster``'s nannies."""
    for nanny in list(getattr(cluster, "workers", {}).values()):
        pid = getattr(nanny, "pid", None)
        if isinstance(pid, int):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)


@contextlib.contextmanager
def _sigint_deferred() -> Iterator[None]:
    """A Ctrl-C (SIGINT) while the block runs raises KeyboardInterrupt when it ends, not in
    the middle (a LocalCluster interrupted while starting is left half made, and closing
    it at exit fails with a traceback)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    got: list[int] = []
    old = signal.signal(signal.SIGINT, lambda signum, frame: got.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)
    if got:
        raise KeyboardInterrupt


@contextlib.contextmanager
def _quiet_recoveries() -> Iterator[None]:
    """While a compute runs on a cluster, keep the client's warnings about what the scheduler
    recovers by itself (a worker lost while its results were gathered: "Couldn't gather 1
    keys, rescheduling") off the user's terminal; its errors still print, and a failure
    still ends the compute."""
    client_log = logging.getLogger("distributed.client")
    level = client_log.level
    client_log.setLevel(max(level, logging.ERROR))
    try:
        yield
    finally:
        client_log.setLevel(level)


def silence_cluster_logs() -> None:
    """From now on, nothing from distributed's (and asyncio's, tornado's) loggers: after a
    failure ddrp reports in one line, closing the client and cluster would print their
    errors and tracebacks after it."""
    names = ("asyncio", "distributed", "tornado")
    for name in [*names, *(n for n in list(logging.root.manager.loggerDict)
                           if n.startswith(tuple(f"{p}." for p in names)))]:
        logging.getLogger(name).setLevel(logging.CRITICAL + 1)  # children set their own


def scheduler_lost(client: Any) -> bool:
    """Whether ``client`` lost its scheduler (it is reconnecting, or closed)."""
    return str(getattr(client, "status", "running")) not in ("running", "newly-created")


@contextlib.contextmanager
def _lost_scheduler(client: Any, name: str) -> Iterator[None]:
    """An exception raised while ``client`` has lost its scheduler becomes one line saying
    so (``RunError``): whatever step met it (a pass, the checks, a save), the scheduler is
    gone. Exceptions with the scheduler there pass unchanged."""
    from distributed.comm import CommClosedError

    finish = "what was finished is kept: when the cluster is back, run the same command with " \
        "--resume"
    try:
        yield
    except (DdrpError, KeyboardInterrupt):
        raise
    except ClusterGone as e:
        silence_cluster_logs()
        raise RunError(f"{e}; {finish}") from None
    except Exception as e:
        # a closed comm is the scheduler's connection lost, whether or not the client has
        # noticed yet (a step between the passes met it first)
        if not (scheduler_lost(client) or isinstance(e, CommClosedError)):
            raise
        silence_cluster_logs()
        where = name if name.startswith("of ") else f"at {name}"
        raise RunError(f"lost the scheduler {where} ({type(e).__name__}"
                       f"{': ' + str(e) if str(e) else ''}); {finish}") from None


@contextlib.contextmanager
def _quiet_interrupt() -> Iterator[None]:
    """On KeyboardInterrupt, silence what closing the client and cluster would print: the
    client's interrupted gathers end as asyncio tasks whose ``AllExit`` nobody retrieves
    ("Task exception was never retrieved", logged by ``asyncio`` when they are collected,
    after ddrp's own line), and distributed's shutdown warnings. The interrupt itself
    propagates (the CLI prints one line)."""
    try:
        yield
    except KeyboardInterrupt:
        silence_cluster_logs()
        raise
