"""The pipeline commands: ``fit``, ``run`` and ``project``."""

from __future__ import annotations

from typing import Any

import click

import ddrp_dask

from .common import execution_options, guard, parse_shrinkage, run_plan, source_options

#: Options of execution_options that go to the scheduler, not to the plan.
_SCHEDULER_KEYS = ("scheduler", "workers", "threads_per_worker", "memory_limit")


def _split(opts: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], bool, bool]:
    """(plan keyword arguments, scheduler options, dry_run, quiet) from a command's options."""
    sched = {key: opts.pop(key) for key in _SCHEDULER_KEYS}
    dry_run, quiet = opts.pop("dry_run"), opts.pop("quiet")
    if "shrinkage" in opts:
        opts["shrinkage"] = parse_shrinkage(opts["shrinkage"])
    return opts, sched, dry_run, quiet


@click.command()
@source_options
@click.option("--out", required=True, help="Directory the model is written to.")
@execution_options
@guard
def fit(**opts: Any) -> None:
    """Fit the projection pair from both sources and save it to OUT (prints the report)."""
    kwargs, sched, dry_run, quiet = _split(opts)
    run_plan(ddrp_dask.plan_fit(**kwargs), dry_run, quiet, sched, show_report=True)


@click.command()
@source_options
@click.option("--out", required=True, help="Zarr group written: arrays x, w and model.")
@click.option("--x-id-column", default=None, help="Parquet id column of X, written to OUT/x_ids.")
@click.option("--w-id-column", default=None, help="Parquet id column of W, written to OUT/w_ids.")
@click.option("--format", "format", type=click.Choice(["zarr", "parquet"]), default="zarr",
              show_default=True, help="Zarr arrays, or Parquet datasets mirroring the inputs.")
@execution_options
@guard
def run(**opts: Any) -> None:
    """Fit, then sketch both sources into the Zarr group OUT (arrays x, w; model at OUT/model)."""
    kwargs, sched, dry_run, quiet = _split(opts)
    run_plan(ddrp_dask.plan_run(**kwargs), dry_run, quiet, sched, show_report=True)


@click.command()
@click.option("--model", required=True, help="A model written by fit (or RUN/model).")
@click.option("--side", type=click.Choice(["x", "w"]), required=True)
@click.option("--input", "input", required=True, help="Rows to sketch.")
@click.option("--columns", default=None, help="Parquet column(s) of the vectors.")
@click.option("--id-column", default=None, help="Parquet id column, written to OUT/ids.")
@click.option("--format", "format", type=click.Choice(["zarr", "parquet"]), default="zarr",
              show_default=True, help="A Zarr array, or a Parquet dataset mirroring the input.")
@click.option("--out", required=True, help="Zarr group written: array sketch.")
@execution_options
@guard
def project(**opts: Any) -> None:
    """Sketch the rows of INPUT as side x or w of a saved model into the Zarr group OUT."""
    kwargs, sched, dry_run, quiet = _split(opts)
    run_plan(ddrp_dask.plan_project(**kwargs), dry_run, quiet, sched, show_report=False)
