"""One BLAS thread for every product and factorisation whose bytes matter.

Dask threads × BLAS threads ≤ cores (FIELD-NOTES), and the same bytes on any scheduler:
float32 products and LAPACK both change in their last bits with the BLAS thread count.

The limit is process-wide (threadpoolctl sets OpenBLAS's global count), so on the threaded
scheduler a task leaving its block must not restore two threads while another task is still
inside its product. The limit is therefore counted: the first block to enter sets one
thread, the last to leave restores the original count.

threadpoolctl (≥ 3.6) lets only one "controlling" thread set OpenBLAS's count and silently
ignores the others: the first thread that ever set it. A pool thread's limit then did
nothing once the main thread had set one (measured: products on two threads inside tasks,
sketches differing in the last bits). The counting above already serialises the settings,
so each first entrant takes control and the last to leave gives it up.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

import threadpoolctl
from threadpoolctl import ThreadpoolController

__all__ = ["one_blas_thread"]

_lock = threading.Lock()
_controller: ThreadpoolController | None = None
_depth = 0
_limiter: Any = None


@contextlib.contextmanager
def one_blas_thread() -> Iterator[None]:
    """Limit BLAS to one thread while any thread of the process is inside this block.

    The controller is built once per process: ``threadpool_limits`` rediscovers the
    libraries on every call (~7 ms).
    """
    global _controller, _depth, _limiter
    with _lock:
        if _depth == 0:
            if _controller is None:
                _controller = ThreadpoolController()
            _release_control()
            _limiter = _controller.limit(limits=1, user_api="blas")
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                _limiter.restore_original_limits()
                _limiter = None
                _release_control()


def _release_control() -> None:
    """Let the next thread to limit OpenBLAS take control (threadpoolctl ≥ 3.6; a no-op
    for versions without controlling threads)."""
    controller = getattr(threadpoolctl, "OpenBLASController", None)
    clear = getattr(controller, "clear_controlling_thread", None)
    if clear is not None:
        clear(force=True)
