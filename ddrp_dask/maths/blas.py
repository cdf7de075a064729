"""Fixed BLAS thread counts for every product and factorisation whose bytes matter.

Dask threads × BLAS threads ≤ cores (oversubscription is ruinous), and the same bytes on
any scheduler: float32 products and LAPACK both change in their last bits with the BLAS
thread count. The per-block tasks run on one thread (``one_blas_thread``); the build, which
runs alone on the driver between the passes, runs its d³ factorisations on
``build_threads(d)`` threads (``build_blas``), a number fixed by d alone, so its bytes do
not depend on the machine's cores either.

The limit is process-wide (threadpoolctl sets OpenBLAS's global count), so on the threaded
scheduler a task leaving its block must not restore two threads while another task is still
inside its product. The limit is therefore counted: the first block to enter a count sets
it, the last to leave restores the count before. A block asking for another count than the
current one (the build's inside a caller's one thread, or the reverse) sets its own, and
restores the previous one when it and every block entered after it have left.

threadpoolctl (≥ 3.6) lets only one "controlling" thread set OpenBLAS's count and silently
ignores the others: the first thread that ever set it. A pool thread's limit then did
nothing once the main thread had set one (measured: products on two threads inside tasks,
sketches differing in the last bits). The lock above already serialises the settings, so
each setting takes control first and gives it up after.

scipy's wheels bring their own OpenBLAS, a second library beside numpy's: scipy.linalg is
imported here so that the controller, built once, limits both.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

import scipy.linalg  # noqa: F401  (scipy's own OpenBLAS, loaded before the controller looks)
import threadpoolctl
from threadpoolctl import ThreadpoolController

__all__ = ["BUILD_BLAS_THREADS", "WIDE_BUILD_D", "build_blas", "build_threads",
           "fixed_blas_threads", "one_blas_thread"]

#: BLAS threads of a build above ``WIDE_BUILD_D``: a few large factorisations, which two
#: threads speed up on the common 2-core machines (benchmarks/RESULTS.md, wide vectors).
BUILD_BLAS_THREADS = 2
#: At or below this d the build is many small factorisations (cross-fitted over folds):
#: one thread, since two barely help on a quiet machine and spin-wait for each other on a
#: busy one (``benchmarks/RESULTS.md``, wide vectors).
WIDE_BUILD_D = 1024

_lock = threading.Lock()
_controller: ThreadpoolController | None = None
# the active limits, innermost last: [threads, entries still inside, threadpoolctl limiter]
_stack: list[list[Any]] = []


@contextlib.contextmanager
def fixed_blas_threads(n: int) -> Iterator[None]:
    """Limit BLAS to ``n`` threads while any thread of the process is inside this block
    (counted, as described above).

    The controller is built once per process: ``threadpool_limits`` rediscovers the
    libraries on every call.
    """
    global _controller
    n = max(1, int(n))
    with _lock:
        if _stack and _stack[-1][0] == n:
            entry = _stack[-1]
            entry[1] += 1
        else:
            if _controller is None:
                _controller = ThreadpoolController()
            _release_control()
            entry = [n, 1, _controller.limit(limits=n, user_api="blas")]
            _release_control()
            _stack.append(entry)
    try:
        yield
    finally:
        with _lock:
            entry[1] -= 1
            while _stack and _stack[-1][1] == 0:
                _release_control()
                _stack.pop()[2].restore_original_limits()
                _release_control()


def one_blas_thread() -> contextlib.AbstractContextManager[None]:
    """Limit BLAS to one thread while any thread of the process is inside this block."""
    return fixed_blas_threads(1)


def build_threads(d: int) -> int:
    """BLAS threads of a build at dimension ``d`` (recorded in the model as
    ``info["build_blas_threads"]``).

    >>> build_threads(256), build_threads(4096)
    (1, 2)
    """
    return BUILD_BLAS_THREADS if d > WIDE_BUILD_D else 1


def build_blas(d: int) -> contextlib.AbstractContextManager[None]:
    """The build's BLAS limit at dimension ``d``: ``build_threads(d)`` threads."""
    return fixed_blas_threads(build_threads(d))


def _release_control() -> None:
    """Let the next thread to set OpenBLAS's count take control (threadpoolctl ≥ 3.6; a
    no-op for versions without controlling threads)."""
    controller = getattr(threadpoolctl, "OpenBLASController", None)
    clear = getattr(controller, "clear_controlling_thread", None)
    if clear is not None:
        clear(force=True)
