"""A pass that finishes although workers die, and fails in one line when it cannot.

A cluster gives up on a task after ``allowed-failures`` workers died running it (Dask's
default: 3), raising ``KilledWorker`` to the client; ddrp cannot set a remote scheduler's
configuration. So a pass is a function that builds the graph of *what is not finished yet*
(pass 1 from its kept partial sums, pass 2 from its done flags or files), and
``compute_rounds`` submits it again after such a loss, with fresh task keys
(``compute.key_round``), up to ``ROUNDS`` submissions, saying so on stderr. Every other
failure — a task's own exception, a lost scheduler, or the losses outlasting the rounds —
becomes one ``RunError`` line naming the pass and what to do (``docs/faults.md``).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from concurrent.futures import CancelledError
from typing import Any

from ..errors import DdrpError, RunError
from .compute import (
    TaskFailed,
    client_of,
    compute,
    describe_key,
    key_round,
    scheduler_lost,
    silence_cluster_logs,
)
from .watchdog import ClusterGone, answers

__all__ = ["KEEP_AND_RESUME", "ROUNDS", "compute_rounds"]

#: Submissions of one pass at most (the first and the resubmissions).
ROUNDS = 10

#: How to finish a pass whose finished work is kept (``--resume``).
KEEP_AND_RESUME = "what was finished is kept: run the same command with --resume to finish it"

#: What ``build`` returns: the graph's outputs and its per-block tasks (progress units).
Build = Callable[[], tuple[Sequence[Any], Sequence[Any]]]


def compute_rounds(build: Build, scheduler: Any, progress: bool, label: str,
                   unit: str = "blocks", finish: str = KEEP_AND_RESUME) -> list[Any]:
    """``compute`` the graph ``build()`` makes, and after work lost on the cluster (a task
    given up on, results lost with their worker) build and submit what remains again, at
    most ``ROUNDS`` times in all. ``label`` names the pass, ``unit`` its tasks, ``finish``
    how the user finishes after a failure. Returns the outputs of the round that finished.

    Raises
    ------
    RunError
        A task raised an unexpected exception (no resubmission: it would fail again), the
        scheduler was lost, or work was still lost in the last round.
    """
    n, client = 1, client_of(scheduler)
    objs, units = _built(build, n)
    while True:
        if client is not None and scheduler_lost(client):  # a compute would wait for it
            raise _failure(ConnectionError("no scheduler"), label, n, client, finish)
        try:
            return compute(objs, scheduler, progress, label, units, unit)
        except (DdrpError, KeyboardInterrupt):
            raise
        except TaskFailed as e:
            raise RunError(f"{label} failed: {e}; {finish}") from None
        except ClusterGone as e:  # the watchdog's: nothing would ever come
            silence_cluster_logs()
            raise RunError(f"{label}: {e}; {finish}") from None
        except Exception as e:
            if client is None or _gone(client, e) or not _lost_work(e) or n == ROUNDS:
                raise _failure(e, label, n, client, finish) from None
            n += 1
            objs, units = _built(build, n)
            left = len(units or objs)
            sys.stderr.write(f"{_lost_text(e)} during {_short(label)}; " + (
                f"resubmitting {left} {unit}, round {n} of {ROUNDS}\n" if left else
                f"every one of its {unit} was already finished: nothing to resubmit\n"))
            sys.stderr.flush()


def _built(build: Build, n: int) -> tuple[list[Any], list[Any]]:
    with key_round(n):
        objs, units = build()
    return list(objs), list(units)


def _short(label: str) -> str:
    """``"pass 1"`` of ``"pass 1: statistics"``."""
    return label.split(":")[0]


def _gone(client: Any, e: BaseException) -> bool:
    """Whether ``client`` lost its scheduler: it says so, or (a comm closed before it noticed)
    the scheduler does not answer. In a pass a closed comm may be a worker's (work lost in
    transit: resubmitted), so the scheduler is asked; outside the passes the client speaks
    to the scheduler alone and any closed comm is its loss (``compute.local_scheduler``'s
    rule, which does not ask: a client that reconnected meanwhile would hide it)."""
    from distributed.comm import CommClosedError

    return scheduler_lost(client) or (isinstance(e, CommClosedError) and not answers(client))


def _killed(e: BaseException) -> bool:
    from distributed.scheduler import KilledWorker

    return isinstance(e, KilledWorker)


def _lost_work(e: BaseException) -> bool:
    """Whether ``e`` means work lost on a cluster that is still there: a task given up on
    after its workers died, results cancelled or lost in transit with a worker."""
    from distributed.comm import CommClosedError

    return _killed(e) or isinstance(e, CancelledError | CommClosedError | OSError |
                                    TimeoutError)


def _lost_text(e: BaseException) -> str:
    return "worker lost" if _killed(e) else f"work lost ({type(e).__name__})"


def _failure(e: BaseException, label: str, n: int, client: Any, finish: str) -> RunError:
    """The one line of a failure ``compute_rounds`` does not resubmit."""
    silence_cluster_logs()
    if client is not None and _gone(client, e):
        return RunError(f"{label}: lost the scheduler ({type(e).__name__}); {finish} once "
                        "the cluster is back")
    if _killed(e):
        failures = getattr(e, "allowed_failures", None)
        times = "workers" if not isinstance(failures, int) else \
            "1 worker" if failures == 0 else f"{failures + 1} workers"
        return RunError(f"{label}: the cluster gave up on {describe_key(getattr(e, 'task', ''))}"
                        f" after {times} died running it, in round {n} of {ROUNDS}; the "
                        f"workers keep dying (memory? see the workers' logs); {finish}")
    text = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
    rounds = f" in round {n} of {ROUNDS}" if n > 1 else ""
    return RunError(f"{label} failed{rounds} ({text}); {finish}")
