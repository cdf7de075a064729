"""maths.blas: counted, nested BLAS thread limits."""

from __future__ import annotations

from threadpoolctl import threadpool_info

from ddrp_dask.maths.blas import BUILD_BLAS_THREADS, build_blas, fixed_blas_threads, one_blas_thread


def _threads() -> set[int]:
    return {int(lib["num_threads"]) for lib in threadpool_info() if lib["user_api"] == "blas"}


def test_limits_nest_and_restore() -> None:
    before = _threads()
    with one_blas_thread():
        assert _threads() == {1}
        with build_blas():
            assert _threads() == {BUILD_BLAS_THREADS}
            with one_blas_thread():
                assert _threads() == {1}
            assert _threads() == {BUILD_BLAS_THREADS}
        with one_blas_thread():
            assert _threads() == {1}
        assert _threads() == {1}
    assert _threads() == before


def test_overlapping_exits_restore_once_all_have_left() -> None:
    """Threads leave in any order: a count stays until every block entered after it has left."""
    before = _threads()
    a, b = fixed_blas_threads(1), fixed_blas_threads(2)
    a.__enter__()
    b.__enter__()
    a.__exit__(None, None, None)  # the outer one leaves first: the inner count stays
    assert _threads() == {2}
    b.__exit__(None, None, None)
    assert _threads() == before
