"""The default local scheduler: threads for small jobs, a LocalCluster above, said."""

from __future__ import annotations

import dask

from ddrp_dask.graph.compute import THREADS_BELOW_BYTES, default_scheduler, local_scheduler


def test_small_jobs_run_on_threads_and_say_so() -> None:
    said: list[str] = []
    with dask.config.set({"scheduler-address": None}), \
            local_scheduler(None, say=said.append, job_bytes=10 * 2**20) as sched:
        assert sched == "threads"
    assert said and said[0].startswith("scheduler: threads") and "--scheduler local" in said[0]


def test_the_choice_follows_the_size_and_a_flag_forces() -> None:
    assert THREADS_BELOW_BYTES >= 7 << 30  # threads won at every size measured (7.6 GB)
    assert default_scheduler(THREADS_BELOW_BYTES - 1) == "threads"
    assert default_scheduler(THREADS_BELOW_BYTES) == "local"
    assert default_scheduler(None) == "local"  # size unknown: as before
    with local_scheduler("sync", job_bytes=1) as sched:
        assert sched == "sync"
