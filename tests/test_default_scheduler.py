"""The default local scheduler: threads for small jobs, a LocalCluster above, said."""

from __future__ import annotations

from pathlib import Path

import dask
import pytest

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


def test_every_command_runs_a_small_job_on_threads(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Without --scheduler, each command that computes chooses by its input's size: small
    jobs say "scheduler: threads" and start no cluster (evaluate, matmul and plan had started
    a LocalCluster for any size: their plans gave no size)."""
    from click.testing import CliRunner

    from ddrp_cli.main import cli

    from .conftest import make_pair, write_npy

    monkeypatch.delenv("DASK_SCHEDULER_ADDRESS", raising=False)
    x, w = make_pair(n=600, m=150, d=8, seed=3)
    xp, wp = write_npy(tmp_path / "x.npy", x), write_npy(tmp_path / "w.npy", w)
    out = str(tmp_path / "o.zarr")
    commands = {
        "run": ["run", "--x", xp, "--w", wp, "-k", "4", "--out", out],
        "fit": ["fit", "--x", xp, "--w", wp, "-k", "4", "--out", str(tmp_path / "m")],
        "evaluate": ["evaluate", "--model", f"{out}/model", "--x", xp, "--w", wp,
                     "--pairs", "200", "--top", "3", "--queries", "5"],
        "matmul": ["matmul", "--x-sketch", f"{out}/x", "--w-sketch", f"{out}/w", "--out",
                   str(tmp_path / "p.zarr"), "--top", "3"],
        "plan": ["plan", "--x", xp, "--w", wp],
    }
    for name, args in commands.items():
        with dask.config.set({"scheduler-address": None}):
            res = CliRunner().invoke(cli, args)
        assert res.exit_code == 0, (name, res.stderr, res.stdout)
        assert "scheduler: threads" in res.stderr, (name, res.stderr)
        assert "local cluster" not in res.stderr, (name, res.stderr)
