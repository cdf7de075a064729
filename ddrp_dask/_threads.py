"""One BLAS thread inside a block: Dask threads × BLAS threads ≤ cores (FIELD-NOTES), and the
same bytes on any scheduler (float32 products and LAPACK both change with the thread count)."""

from __future__ import annotations

from typing import Any

from threadpoolctl import ThreadpoolController

_controller: ThreadpoolController | None = None


def one_blas_thread() -> Any:
    """A context manager limiting BLAS to one thread. The controller is built once per
    process: ``threadpool_limits`` rediscovers the libraries on every call (~7 ms)."""
    global _controller
    if _controller is None:
        _controller = ThreadpoolController()
    return _controller.limit(limits=1, user_api="blas")
