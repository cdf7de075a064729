"""A job on a cluster that can no longer progress ends in one line instead of waiting forever.

Two ways a cluster leaves a client waiting with no error ever coming: a scheduler that stops
answering while its connection stays open (a stopped or wedged process: the kernel still
acknowledges the client's packets, so no comm ever closes), and ddrp's own LocalCluster left
with no worker (its nannies stopped restarting the worker processes that died, as seen on a
machine under heavy load). ``watch`` asks the scheduler every few seconds, from a thread, how
many workers it has; when it has not answered for ``SILENCE`` seconds, or (ddrp's own cluster
only: a remote cluster may scale to zero on purpose) has had no worker for ``NO_WORKERS``
seconds, it interrupts the job's thread with ``ClusterGone`` (a signal, which also wakes a
thread blocked waiting for the cluster), and the job ends in one line (``graph.rounds``,
``graph.compute``). The limits are Dask config keys, ``ddrp.scheduler-silence`` and
``ddrp.no-workers`` (e.g. ``DASK_DDRP__NO_WORKERS=20s``).
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

import dask

__all__ = ["NO_WORKERS", "SILENCE", "ClusterGone", "answers", "tripped", "watch"]

#: Seconds a scheduler may leave the client's question unanswered (Dask config
#: ``ddrp.scheduler-silence``); generous: a scheduler of a loaded machine answers late.
SILENCE = 120.0
#: Seconds ddrp's own cluster may have no worker (Dask config ``ddrp.no-workers``).
NO_WORKERS = 60.0
#: Seconds between two questions.
INTERVAL = 2.0
#: The signal that interrupts the job's thread (its handler is ddrp's only while watching).
SIGNAL = signal.SIGUSR1


class ClusterGone(Exception):
    """Raised in the job's thread when the cluster can no longer progress; the message says
    why (``graph.rounds`` and ``graph.compute`` make it one ``RunError`` line)."""


def limit(key: str, default: float) -> float:
    """Seconds of the Dask config ``key`` (a number or a duration such as ``"20s"``)."""
    from dask.utils import parse_timedelta

    value = dask.config.get(key, None)
    return default if value is None else float(parse_timedelta(value, default="seconds"))


#: The watchdogs that fired, by client id: the cleanup after a ``ClusterGone`` must not
#: wait for a scheduler that does not answer.
_TRIPPED: set[int] = set()


def tripped(client: Any) -> bool:
    """Whether a watchdog gave up on ``client``'s cluster."""
    return id(client) in _TRIPPED


def workers(client: Any, timeout: float) -> int | None:
    """The number of workers ``client``'s scheduler has, or None when it did not answer
    within ``timeout`` seconds (or its connection is closed)."""
    try:
        info = client.sync(client.scheduler.identity, n_workers=0, callback_timeout=timeout)
        return int(info.get("n_workers", 0))
    except Exception:
        return None


def answers(client: Any, timeout: float = 10.0) -> bool:
    """Whether ``client``'s scheduler answers a question within ``timeout`` seconds."""
    return workers(client, timeout) is not None


class _Watchdog:
    def __init__(self, client: Any, name: str, own: bool) -> None:
        self.client, self.name, self.own = client, name, own
        self.silence = limit("ddrp.scheduler-silence", SILENCE)
        self.no_workers = limit("ddrp.no-workers", NO_WORKERS)
        self.reason = ""
        self.armed = True
        self.lock = threading.Lock()
        self.done = threading.Event()
        self.main = threading.main_thread().ident
        self.thread = threading.Thread(target=self._run, name="ddrp-watchdog", daemon=True)

    def _run(self) -> None:
        answered = workers_seen = time.monotonic()
        while not self.done.wait(INTERVAL):
            n = workers(self.client, self.silence)
            now = time.monotonic()
            if self.done.is_set():
                return
            if n is not None:
                answered = now
                if n or not self.own:
                    workers_seen = now
            if now - answered >= self.silence:
                self._trip(f"the scheduler {self.name} has not answered for "
                           f"{now - answered:.0f} s (stopped, or overloaded?)")
                return
            if now - workers_seen >= self.no_workers:
                self._trip(f"the local cluster has had no worker for {now - workers_seen:.0f}"
                           " s (its worker processes died and were not restarted: memory? "
                           "an overloaded machine?)")
                return

    def _trip(self, reason: str) -> None:
        with self.lock:
            if not self.armed:
                return
            self.reason = reason
            _TRIPPED.add(id(self.client))
            signal.pthread_kill(self.main, SIGNAL)  # type: ignore[arg-type]

    def _handler(self, signum: int, frame: Any) -> None:
        if self.reason and self.armed:
            self.armed = False  # once
            raise ClusterGone(self.reason)


@contextlib.contextmanager
def watch(client: Any, name: str, own: bool = False) -> Iterator[None]:
    """Watch ``client``'s scheduler (``name`` as the line says it: "at ADDRESS", "of the
    local cluster") while the block runs in the main thread; ``own``: the cluster is ddrp's
    own, watched for having no worker too. Elsewhere than in the main thread, nothing is
    watched (a signal handler is the main thread's)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    dog = _Watchdog(client, name, own)
    old = signal.signal(SIGNAL, dog._handler)
    dog.thread.start()
    try:
        yield
    finally:
        with dog.lock:
            dog.armed = False
        dog.done.set()
        if dog.reason:  # a signal sent is delivered at the next system call: not to `old`
            time.sleep(0.05)
        signal.signal(SIGNAL, old)
