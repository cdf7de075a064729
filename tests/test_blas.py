"""One BLAS thread in every task, whichever thread runs it (the threaded scheduler's pool)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import threadpoolctl

from ddrp_dask.maths.blas import (
    BUILD_BLAS_THREADS,
    build_blas,
    fixed_blas_threads,
    one_blas_thread,
)


def _blas_threads() -> list[int]:
    return [i["num_threads"] for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"]


def test_pool_threads_get_one_blas_thread_after_the_main_thread_limited() -> None:
    with one_blas_thread():  # the main thread limits first (as the CLI's build does)
        pass

    def inside(_: int) -> list[int]:
        with one_blas_thread():
            return _blas_threads()

    with ThreadPoolExecutor(2) as pool:
        seen = list(pool.map(inside, range(8)))
    assert all(set(s) == {1} for s in seen), seen


def test_products_in_pool_threads_equal_the_single_threaded_ones() -> None:
    rng = np.random.default_rng(0)
    a, m = rng.standard_normal((2048, 64)).astype("f4"), rng.standard_normal((64, 16)).astype("f4")
    with one_blas_thread():
        ref = a @ m

    def product(_: int) -> bytes:
        with one_blas_thread():
            return (a @ m).tobytes()

    with ThreadPoolExecutor(2) as pool:
        assert set(pool.map(product, range(6))) == {ref.tobytes()}


def test_control_a_plain_limit_from_a_pool_thread_is_ignored() -> None:
    """What the counted limit works around: threadpoolctl lets only its controlling thread
    set OpenBLAS's count; another thread's limit silently does nothing."""
    c = threadpoolctl.ThreadpoolController()
    if not any(lib.internal_api == "openblas" and lib.threading_layer != "openmp"
               for lib in c.lib_controllers) or max(_blas_threads()) < 2:
        return  # nothing to show on a one-core or non-OpenBLAS machine
    main = c.limit(limits=1, user_api="blas")
    main.restore_original_limits()  # the main thread is now the controlling thread

    def plain(_: int) -> list[int]:
        lim = c.limit(limits=1, user_api="blas")
        try:
            return _blas_threads()
        finally:
            lim.restore_original_limits()

    try:
        with ThreadPoolExecutor(1) as pool:
            assert max(next(iter(pool.map(plain, [0])))) > 1
    finally:
        controller = getattr(threadpoolctl, "OpenBLASController", None)
        if controller is not None and hasattr(controller, "clear_controlling_thread"):
            controller.clear_controlling_thread(force=True)


def test_limits_nest_and_restore() -> None:
    before = set(_blas_threads())
    with one_blas_thread():
        assert set(_blas_threads()) == {1}
        with build_blas(4096):
            assert set(_blas_threads()) == {BUILD_BLAS_THREADS}
            with one_blas_thread():
                assert set(_blas_threads()) == {1}
            assert set(_blas_threads()) == {BUILD_BLAS_THREADS}
        with one_blas_thread():
            assert set(_blas_threads()) == {1}
        assert set(_blas_threads()) == {1}
    assert set(_blas_threads()) == before


def test_overlapping_exits_restore_once_all_have_left() -> None:
    """Threads leave in any order: a count stays until every block entered after it has left."""
    before = set(_blas_threads())
    a, b = fixed_blas_threads(1), fixed_blas_threads(2)
    a.__enter__()
    b.__enter__()
    a.__exit__(None, None, None)  # the outer one leaves first: the inner count stays
    assert set(_blas_threads()) == {2}
    b.__exit__(None, None, None)
    assert set(_blas_threads()) == before
