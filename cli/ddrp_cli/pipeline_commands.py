"""The pipeline commands: ``fit``, ``run`` and ``project``."""

from __future__ import annotations

import os
from typing import Any

import click

import ddrp_dask
from ddrp_dask.errors import DdrpError

from .common import execution_options, guard, parse_shrinkage, run_plan, say, source_options

#: Options of execution_options that go to the scheduler, not to the plan.
_SCHEDULER_KEYS = ("scheduler", "workers", "threads_per_worker", "memory_limit")


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


def _resolve_w(opts: dict[str, Any]) -> None:
    """--w, or with --w-from-labels a W prior estimated now and saved beside the output."""
    labels = opts.pop("labels")
    model, fits, sample = opts.pop("prior_model"), opts.pop("prior_fits"), opts.pop("prior_sample")
    if (opts["w"] is None) == (labels is None):
        raise DdrpError("give either --w or --w-from-labels, not both and not neither")
    if labels is None:
        return
    import numpy as np

    from ddrp_dask.prior import prior_from_labels

    path = f"{str(opts['out']).rstrip('/')}.w-prior.npy"
    if os.path.exists(path) and not opts.get("overwrite") and not opts.get("resume"):
        raise DdrpError(f"{path} exists; pass --overwrite to replace it")
    w = prior_from_labels(opts["x"], labels, opts["x_columns"], n_boot=fits, model=model,
                          sample=sample, seed=opts["seed"], block_rows=opts["block_rows"])
    if not opts.get("dry_run"):
        np.save(path, w)
        say(f"W prior: {w.shape[0]} {model} weight vectors from label column {labels!r}, "
            f"saved to {path}")
    opts["w"], opts["w_columns"] = path, None


def _split(opts: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], bool, bool]:
    """(plan keyword arguments, scheduler options, dry_run, quiet) from a command's options."""
    if "labels" in opts:
        _resolve_w(opts)
    sched = {key: opts.pop(key) for key in _SCHEDULER_KEYS}
    dry_run, quiet = opts.pop("dry_run"), opts.pop("quiet")
    if "shrinkage" in opts:
        opts["shrinkage"] = parse_shrinkage(opts["shrinkage"])
    return opts, sched, dry_run, quiet


@click.command()
@source_options
@prior_options
@click.option("--out", required=True, help="Directory the model is written to.")
@execution_options
@guard
def fit(**opts: Any) -> None:
    """Fit the projection pair from both sources and save it to OUT (prints the report)."""
    kwargs, sched, dry_run, quiet = _split(opts)
    run_plan(ddrp_dask.plan_fit(**kwargs), dry_run, quiet, sched, show_report=True)


@click.command()
@source_options
@prior_options
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
