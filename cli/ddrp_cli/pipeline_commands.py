"""The pipeline commands: ``fit``, ``run`` and ``project``."""

from __future__ import annotations

from typing import Any

import click

from ddrp_dask.errors import DdrpError
from ddrp_dask.jobs.fit import plan_fit
from ddrp_dask.jobs.prior import PriorPlan, plan_prior
from ddrp_dask.jobs.project import plan_project
from ddrp_dask.jobs.run import plan_run
from ddrp_dask.options import DTYPES

from .common import SchedulerOptions, execution_options, guard, run_plan, source_options

_prior_options = (
    click.option("--w-from-labels", "labels", default=None,
                 help="Instead of --w: estimate W from bootstrap fits on a sample of the "
                      "labelled X rows (this Parquet label column); written to OUT.w-prior.npy."),
    click.option("--prior-model", type=click.Choice(["logistic", "ridge"]), default="logistic",
                 show_default=True),
    click.option("--prior-fits", type=int, default=20, show_default=True,
                 help="Bootstrap fits for --w-from-labels."),
    click.option("--prior-sample", type=int, default=10_000, show_default=True,
                 help="Labelled rows sampled for --w-from-labels."),
)


def prior_options(f: Any) -> Any:
    """The --w-from-labels options of fit and run."""
    for option in reversed(_prior_options):
        f = option(f)
    return f


def _prior(x: str, x_columns: str | None, w: str | None, labels: str | None, out: str,
           prior_model: str, prior_fits: int, prior_sample: int, seed: int,
           block_rows: int | None, overwrite: bool, resume: bool) -> PriorPlan | None:
    """The W-prior plan of --w-from-labels (None with --w); it reads no data."""
    if (w is None) == (labels is None):
        raise DdrpError("give either --w or --w-from-labels, not both and not neither")
    if labels is None:
        return None
    return plan_prior(x, labels, f"{str(out).rstrip('/')}.w-prior.npy", x_columns,
                      prior_fits, prior_model, prior_sample, seed, block_rows,
                      overwrite=overwrite or resume)


_dtype_options = (
    click.option(
        "--dtype", type=click.Choice(DTYPES), default=None,
        help="Storage of the sketches: float32 (default), float16 or int8 codes with a per-row "
             "scale, mixed (exact head float16, the rest int8), or int8max / mixedmax (int8 "
             "with the row's max as a float32 scale, 2 bytes more, which stores that max "
             "exactly); stochastically rounded, so "
             "every estimate stays unbiased (docs/quantized.md). With --bytes-per-row: force "
             "this layout (default: the best predicted)."),
    click.option(
        "--bytes-per-row", type=int, default=None,
        help="Instead of -k: a storage budget per sketch row; K and the layout with the "
             "smallest predicted relative MSE within it are chosen after pass 1 (auto)."),
)


def dtype_option(f: Any) -> Any:
    """--dtype and --bytes-per-row of fit and run."""
    for option in reversed(_dtype_options):
        f = option(f)
    return f


@click.command()
@source_options
@prior_options
@click.option("--out", required=True, help="Directory the model is written to.")
@click.option("--report", "report_path", default=None,
              help="Also write the build report as JSON to this file.")
@dtype_option
@execution_options
@guard
def fit(x: str, w: str | None, x_columns: str | None, w_columns: str | None, k: int | None,
        target_rel_mse: float | None, method: str, seed: int, shrinkage: str,
        stats_fraction: float | str, labels: str | None, prior_model: str, prior_fits: int,
        prior_sample: int, out: str, report_path: str | None, dtype: str | None,
        bytes_per_row: int | None, on_invalid: str,
        resume: bool, strict_chunks: bool, block_rows: int | None, overwrite: bool,
        dry_run: bool, quiet: bool, scheduler: str | None, workers: int | None,
        threads_per_worker: int,
        memory_limit: str) -> None:
    """Fit the projection pair from both sources and save it to OUT (prints the report)."""
    prior = _prior(x, x_columns, w, labels, out, prior_model, prior_fits, prior_sample, seed,
                   block_rows, overwrite, resume)
    plan = plan_fit(x, w, k, out, method=method, seed=seed, x_columns=x_columns,
                    w_columns=w_columns, block_rows=block_rows, shrinkage=shrinkage,
                    overwrite=overwrite, resume=resume, stats_fraction=stats_fraction,
                    on_invalid=on_invalid, target_rel_mse=target_rel_mse, prior=prior,
                    strict_chunks=strict_chunks, dtype=dtype, bytes_per_row=bytes_per_row)
    run_plan(plan, dry_run, quiet,
             SchedulerOptions(scheduler, workers, threads_per_worker, memory_limit),
             show_report=True,
             report_path=report_path)


@click.command()
@source_options
@prior_options
@click.option("--out", required=True, help="Zarr group written: arrays x, w and model.")
@click.option("--x-id-column", default=None, help="Parquet id column of X, written to OUT/x_ids.")
@click.option("--w-id-column", default=None, help="Parquet id column of W, written to OUT/w_ids.")
@click.option("--format", "fmt", type=click.Choice(["zarr", "parquet"]), default="zarr",
              show_default=True, help="Zarr arrays, or Parquet datasets mirroring the inputs.")
@click.option("--report", "report_path", default=None,
              help="Also write the build report as JSON to this file.")
@dtype_option
@execution_options
@guard
def run(x: str, w: str | None, x_columns: str | None, w_columns: str | None, k: int | None,
        target_rel_mse: float | None, method: str, seed: int, shrinkage: str,
        stats_fraction: float | str, labels: str | None, prior_model: str, prior_fits: int,
        prior_sample: int, out: str, x_id_column: str | None, w_id_column: str | None,
        fmt: str, report_path: str | None, dtype: str | None,
        bytes_per_row: int | None, on_invalid: str, resume: bool,
        strict_chunks: bool, block_rows: int | None, overwrite: bool,
        dry_run: bool, quiet: bool, scheduler: str | None, workers: int | None,
        threads_per_worker: int, memory_limit: str) -> None:
    """Fit, then sketch both sources into the Zarr group OUT (arrays x, w; model at OUT/model)."""
    prior = _prior(x, x_columns, w, labels, out, prior_model, prior_fits, prior_sample, seed,
                   block_rows, overwrite, resume)
    plan = plan_run(x, w, k, out, method=method, seed=seed, x_columns=x_columns,
                    w_columns=w_columns, block_rows=block_rows, shrinkage=shrinkage,
                    overwrite=overwrite, resume=resume, stats_fraction=stats_fraction,
                    x_id_column=x_id_column, w_id_column=w_id_column, format=fmt,
                    on_invalid=on_invalid, target_rel_mse=target_rel_mse, prior=prior,
                    strict_chunks=strict_chunks, dtype=dtype, bytes_per_row=bytes_per_row)
    run_plan(plan, dry_run, quiet,
             SchedulerOptions(scheduler, workers, threads_per_worker, memory_limit),
             show_report=True,
             report_path=report_path)


@click.command()
@click.option("--model", required=True, help="A model written by fit (or RUN/model).")
@click.option("--side", type=click.Choice(["x", "w"]), required=True)
@click.option("--input", "input_path", required=True, help="Rows to sketch.")
@click.option("--columns", default=None, help="Parquet column(s) of the vectors.")
@click.option("--id-column", default=None, help="Parquet id column, written to OUT/ids.")
@click.option("--format", "fmt", type=click.Choice(["zarr", "parquet"]), default="zarr",
              show_default=True, help="A Zarr array, or a Parquet dataset mirroring the input.")
@click.option("--out", required=True, help="Zarr group written: array sketch.")
@execution_options
@guard
def project(model: str, side: str, input_path: str, columns: str | None,
            id_column: str | None, fmt: str, out: str, on_invalid: str, resume: bool,
            strict_chunks: bool, block_rows: int | None, overwrite: bool, dry_run: bool,
            quiet: bool, scheduler: str | None, workers: int | None, threads_per_worker: int,
            memory_limit: str) -> None:
    """Sketch the rows of INPUT as side x or w of a saved model into the Zarr group OUT."""
    plan = plan_project(model, side, input_path, out, columns=columns, block_rows=block_rows,
                        overwrite=overwrite, resume=resume, id_column=id_column, format=fmt,
                        on_invalid=on_invalid, strict_chunks=strict_chunks)
    run_plan(plan, dry_run, quiet,
             SchedulerOptions(scheduler, workers, threads_per_worker, memory_limit),
             show_report=False)
