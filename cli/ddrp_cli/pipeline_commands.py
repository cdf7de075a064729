"""The pipeline commands: ``fit``, ``run`` and ``project``."""

from __future__ import annotations

import click

import ddrp_dask

from .common import (
    execution_options,
    guard,
    parse_shrinkage,
    run_plan,
    scheduler_args,
    source_options,
)


@click.command()
@source_options
@click.option("--out", required=True, help="Directory the model is written to.")
@execution_options
@guard
def fit(x: str, w: str, x_columns: str | None, w_columns: str | None, k: int, method: str,
        seed: int, shrinkage: str, out: str, block_rows: int | None, overwrite: bool,
        dry_run: bool, quiet: bool, scheduler: str, workers: int | None,
        threads_per_worker: int, memory_limit: str) -> None:
    """Fit the projection pair from both sources and save it to OUT (prints the report)."""
    plan = ddrp_dask.plan_fit(x, w, k, out, method, seed, x_columns, w_columns, block_rows,
                              parse_shrinkage(shrinkage), overwrite)
    run_plan(plan, dry_run, quiet, scheduler_args(scheduler, workers, threads_per_worker,
                                           memory_limit), show_report=True)


@click.command()
@source_options
@click.option("--out", required=True, help="Zarr group written: arrays x, w and model.")
@execution_options
@guard
def run(x: str, w: str, x_columns: str | None, w_columns: str | None, k: int, method: str,
        seed: int, shrinkage: str, out: str, block_rows: int | None, overwrite: bool,
        dry_run: bool, quiet: bool, scheduler: str, workers: int | None,
        threads_per_worker: int, memory_limit: str) -> None:
    """Fit, then sketch both sources into the Zarr group OUT (arrays x, w; model at OUT/model)."""
    plan = ddrp_dask.plan_run(x, w, k, out, method, seed, x_columns, w_columns, block_rows,
                              parse_shrinkage(shrinkage), overwrite)
    run_plan(plan, dry_run, quiet, scheduler_args(scheduler, workers, threads_per_worker,
                                           memory_limit), show_report=True)


@click.command()
@click.option("--model", required=True, help="A model written by fit (or RUN/model).")
@click.option("--side", type=click.Choice(["x", "w"]), required=True)
@click.option("--input", "input_", required=True, help="Rows to sketch.")
@click.option("--columns", default=None, help="Parquet column(s) of the vectors.")
@click.option("--out", required=True, help="Zarr group written: array sketch.")
@execution_options
@guard
def project(model: str, side: str, input_: str, columns: str | None, out: str,
            block_rows: int | None, overwrite: bool, dry_run: bool, quiet: bool,
            scheduler: str, workers: int | None, threads_per_worker: int,
            memory_limit: str) -> None:
    """Sketch the rows of INPUT as side x or w of a saved model into the Zarr group OUT."""
    plan = ddrp_dask.plan_project(model, side, input_, out, columns, block_rows, overwrite)
    run_plan(plan, dry_run, quiet, scheduler_args(scheduler, workers, threads_per_worker,
                                           memory_limit), show_report=False)
