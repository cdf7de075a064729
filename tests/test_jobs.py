"""The one job protocol: every ``plan_*`` gives a ``Plan`` that prints itself and runs by
``execute``; options validated once into frozen objects; the scheduler resolved once a job."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

import ddrp_dask as dd
from ddrp_cli.main import cli
from ddrp_dask.errors import OptionError
from ddrp_dask.jobs.base import Plan
from ddrp_dask.options import FitOptions

from .conftest import make_pair, write_npy


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    t = tmp_path_factory.mktemp("jobs")
    x, w = make_pair(n=900, m=200, d=10, seed=5)
    labelled = pa.table({"vec": pa.FixedSizeListArray.from_arrays(pa.array(x.ravel()), 10),
                         "y": pa.array(np.arange(len(x)) % 2)})
    pq.write_table(labelled, t / "xl.parquet", row_group_size=300)
    return {"x": write_npy(t / "x.npy", x), "w": write_npy(t / "w.npy", w),
            "xl": str(t / "xl.parquet")}


def _plans(files: dict[str, str], t: Path) -> dict[str, Plan[Any]]:
    x, w = files["x"], files["w"]
    run = dd.plan_run(x, w, 4, str(t / "run.zarr"), block_rows=256)
    dd.execute(run, scheduler="sync")
    from ddrp_dask.jobs.plan import plan_choose
    from ddrp_dask.jobs.prior import plan_prior

    return {
        "fit": dd.plan_fit(x, w, 4, str(t / "m")),
        "run": run,
        "project": dd.plan_project(f"{t}/run.zarr/model", "x", x, str(t / "p.zarr")),
        "stats": dd.plan_stats(x, w),
        "plan": plan_choose(x, w, 0.05, "gaussian,asymmetric"),
        "matmul": dd.plan_matmul(f"{t}/run.zarr/x", f"{t}/run.zarr/w", str(t / "mm.zarr"),
                                 top=3),
        "evaluate": dd.plan_evaluate(f"{t}/run.zarr/model", x, w, pairs=50),
        "prior": plan_prior(files["xl"], "y", str(t / "prior.npy"), "vec", n_boot=2,
                            sample=100),
    }


def test_every_command_plans_a_plan_that_prints_and_executes(files: dict[str, str],
                                                             tmp_path: Path) -> None:
    plans = _plans(files, tmp_path)
    for name, plan in plans.items():
        assert isinstance(plan, Plan), name
        assert str(plan), name
        assert plan.input_bytes() > 0, name
    stats = dd.execute(plans["stats"], scheduler="sync")  # no special case for pass 1 alone
    alone = dd.compute_moments(plans["stats"], scheduler="sync")
    assert np.array_equal(stats["x"].scatter, alone["x"].scatter)
    report = plans["plan"].execute("sync")
    assert set(report["min_k"]) == {"gaussian", "asymmetric"}
    assert dd.execute(plans["evaluate"], "sync")["pairs"] == 50
    assert plans["matmul"].execute("sync") is None
    assert Path(plans["prior"].execute()).exists()
    seen: list[str] = []
    model = plans["project"].execute("sync", on_model=lambda m: seen.append(m.digest))
    assert seen == [model.digest]


def test_a_target_instead_of_k_says_where_k_comes_from(files: dict[str, str],
                                                       tmp_path: Path) -> None:
    """--dry-run with --target-rel-mse said ``x (900 x 0 float32)``: K was 0 until chosen."""
    res = CliRunner().invoke(cli, ["run", "--x", files["x"], "--w", files["w"],
                                   "--target-rel-mse", "0.01", "--out",
                                   str(tmp_path / "o.zarr"), "--dry-run"])
    assert res.exit_code == 0, res.stderr
    assert "x 0 float32" not in res.stdout
    assert "(900 x K float32; K from --target-rel-mse 0.01, chosen after pass 1)" in res.stdout
    plan = dd.plan_run(files["x"], files["w"], None, str(tmp_path / "o.zarr"),
                       target_rel_mse=0.01)
    assert plan.k is None and plan.options.k_later
    assert plan.facts()["k"] is None


def test_options_are_validated_once_into_a_frozen_object() -> None:
    opts = FitOptions.check(10, None, 3, 1.0, "error", method="gaussian", k=4)
    assert (opts.k, opts.seed, opts.target_rel_mse, opts.block_rows) == (4, 3, None, 1048576)
    with pytest.raises(AttributeError):
        opts.k = 5  # type: ignore[misc]
    for k, target in ((None, None), (4, 0.01)):  # exactly one: also when built directly
        with pytest.raises(OptionError, match="give exactly one of K"):
            FitOptions(256, method="gaussian", k=k, target_rel_mse=target)
    with pytest.raises(OptionError, match="too large for method 'auto'"):
        FitOptions.check(10, k=13)


def test_the_scheduler_is_resolved_once_per_job(files: dict[str, str], tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a scheduler a job asks for the active client once; each check and pass
    asked again (six times for a run)."""
    import distributed

    real = distributed.get_client
    asked: list[int] = []

    def get_client(*args: Any, **kwargs: Any) -> Any:
        asked.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(distributed, "get_client", get_client)
    dd.execute(dd.plan_run(files["x"], files["w"], 4, str(tmp_path / "o.zarr"),
                           block_rows=256), scheduler=None)
    assert len(asked) == 1
