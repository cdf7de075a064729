"""The commands that use sketches and models: ``matmul``, ``evaluate`` and ``plan``."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import click

from ddrp_dask.build import METHODS
from ddrp_dask.choose import check_options, choose_k, format_k_table, plot_mse_curve
from ddrp_dask.errors import OptionError, OutputError
from ddrp_dask.evaluate import evaluate_model, format_evaluation, plan_evaluate
from ddrp_dask.matmul import execute_matmul, plan_matmul
from ddrp_dask.pipeline import compute_moments
from ddrp_dask.plan import plan_stats

from .common import column_options, guard, parse_shrinkage, run_options, say, scheduler_context

#: Options of execution_options that go to the scheduler.
_SCHEDULER_KEYS = ("scheduler", "workers", "threads_per_worker", "memory_limit")
#: Options of execution_options these commands use themselves.
_USED_KEYS = ("block_rows", "overwrite", "dry_run", "quiet")


def _split(opts: dict[str, Any], command: str, own: tuple[str, ...]) -> tuple[
        dict[str, Any], dict[str, Any], bool, bool]:
    """(the command's options, scheduler options, dry_run, quiet) from all its options.

    ``own``: the command's own option names. Any other shared option
    that does not apply here, set to anything but its default, is refused.
    """
    sched = {key: opts.pop(key) for key in _SCHEDULER_KEYS}
    params = {p.name: p for p in click.get_current_context().command.params}
    for key in [k for k in opts if k not in own and k not in _USED_KEYS]:
        value = opts.pop(key)
        if value != params[key].default and value not in (None, False):
            flag = "/".join(params[key].opts)
            raise OptionError(f"{flag} does not apply to {command}; remove it")
    dry_run, quiet = opts.pop("dry_run"), opts.pop("quiet")
    opts["progress"] = not quiet and sys.stderr.isatty()
    return opts, sched, dry_run, quiet


def _check_report_file(path: str | None, inputs: list[str], overwrite: bool) -> None:
    """A report file (--json, --plot) must not be an input, nor exist without --overwrite."""
    if path is None:
        return
    p = Path(path).resolve()
    if any(p == Path(src).resolve() for src in inputs):
        raise OutputError(f"{path} is an input; choose another file for the report")
    if p.is_dir():
        raise OutputError(f"{path} is a directory; give a file name")
    if not p.parent.is_dir():
        raise OutputError(f"{path}: directory {p.parent} does not exist")
    if p.exists() and not overwrite:
        raise OutputError(f"{path} exists; pass --overwrite to replace it")


def _jsonable(obj: Any) -> Any:
    """Plain JSON: numpy values become Python ones; NaN and infinities become null."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if hasattr(obj, "tolist"):
        return _jsonable(obj.tolist())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _write_json(path: str | None, data: dict[str, Any]) -> None:
    if path is not None:
        Path(path).write_text(json.dumps(_jsonable(data), indent=2) + "\n")


_MATMUL = ("x_sketch", "w_sketch", "out", "top", "block_cols")


@click.command()
@click.option("--x-sketch", required=True,
              help="Sketches of X rows: a Zarr array such as RUN/x or PROJECTED/sketch.")
@click.option("--w-sketch", required=True,
              help="Sketches of W rows from the same model, e.g. RUN/w.")
@click.option("--out", required=True,
              help="Zarr group written: array product (n x m), or indices and scores (--top).")
@click.option("--top", type=int, default=None,
              help="Keep only the N largest estimates of every x row (best first).")
@click.option("--block-cols", type=int, default=None,
              help="W rows per task; default 4096 (product) or 65536 (--top).")
@run_options
@guard
def matmul(**opts: Any) -> None:
    """Estimate X @ W.T from two sketches, block by block; or its top N per x row."""
    kwargs, sched, dry_run, quiet = _split(opts, "matmul", _MATMUL)
    progress = kwargs.pop("progress")
    plan = plan_matmul(**kwargs)
    if dry_run:
        click.echo(str(plan))
        return
    with scheduler_context(**sched) as scheduler:
        execute_matmul(plan, scheduler=scheduler, progress=progress)
    if not quiet:
        say(f"wrote {plan.out}")


_EVALUATE = ("model", "x", "w", "x_columns", "w_columns", "pairs", "seed", "top", "queries",
             "seeds", "json_path")


@click.command()
@click.option("--model", required=True, help="A model written by fit (or RUN/model).")
@click.option("--x", "x", required=True, help="Source of X rows to sample.")
@click.option("--w", "w", required=True, help="Source of W rows to sample.")
@column_options
@click.option("--pairs", type=int, default=10000, show_default=True,
              help="Sampled (x, w) pairs.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the sampling.")
@click.option("--top", type=int, default=None,
              help="Also measure recall@N of top-N search over all W rows.")
@click.option("--queries", type=int, default=100, show_default=True,
              help="Sampled x rows for recall@N.")
@click.option("--seeds", type=int, default=0, show_default=True,
              help="Test the method's unbiasedness over this many rebuilt seeds (0: off).")
@click.option("--json", "json_path", default=None, help="Write the report as JSON here.")
@run_options
@guard
def evaluate(**opts: Any) -> None:
    """Measure a model on sampled pairs against exact inner products and equal-K baselines."""
    kwargs, sched, dry_run, _ = _split(opts, "evaluate", _EVALUATE)
    progress, json_path = kwargs.pop("progress"), kwargs.pop("json_path")
    overwrite = kwargs.pop("overwrite")
    plan = plan_evaluate(**kwargs)
    _check_report_file(json_path, [kwargs["x"], kwargs["w"], kwargs["model"]], overwrite)
    if dry_run:
        click.echo(str(plan))
        return
    with scheduler_context(**sched) as scheduler:
        result = evaluate_model(plan, scheduler=scheduler, progress=progress)
    click.echo(format_evaluation(result))
    _write_json(json_path, result)


_PLAN = ("x", "w", "x_columns", "w_columns", "target_rel_mse", "methods", "shrinkage",
         "stats_fraction", "seed", "plot", "json_path")


@click.command("plan")
@click.option("--x", "x", required=True, help="Source of X rows: .npy, Zarr array, Parquet.")
@click.option("--w", "w", required=True, help="Source of W rows: .npy, Zarr array, Parquet.")
@column_options
@click.option("--target-rel-mse", type=float, default=0.01, show_default=True,
              help="Target MSE / E(x.w)^2 (0.01: RMS error 10% of the RMS inner product).")
@click.option("--methods", default=",".join(METHODS), show_default=True,
              help="Methods to compare, comma-separated.")
@click.option("--shrinkage", default="oas", show_default=True,
              help="'oas' or a fixed number in [0, 1].")
@click.option("--stats-fraction", type=float, default=1.0, show_default=True,
              help="Statistics from this fraction of the row blocks (seeded choice).")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed of the choice of blocks for --stats-fraction.")
@click.option("--plot", default=None, help="Write the curves as a PNG here.")
@click.option("--json", "json_path", default=None, help="Write the numbers as JSON here.")
@run_options
@guard
def plan_command(**opts: Any) -> None:
    """Choose K from the statistics alone: predicted MSE against K, smallest K per method."""
    kwargs, sched, dry_run, _ = _split(opts, "plan", _PLAN)
    methods = [m.strip() for m in kwargs["methods"].split(",") if m.strip()]
    shrinkage = parse_shrinkage(kwargs["shrinkage"])
    stats = plan_stats(kwargs["x"], kwargs["w"], kwargs["x_columns"], kwargs["w_columns"],
                       kwargs["block_rows"], stats_fraction=kwargs["stats_fraction"],
                       seed=kwargs["seed"])
    inputs = [kwargs["x"], kwargs["w"]]
    _check_report_file(kwargs["plot"], inputs, kwargs["overwrite"])
    _check_report_file(kwargs["json_path"], inputs, kwargs["overwrite"])
    check_options(kwargs["target_rel_mse"], methods, shrinkage)
    if dry_run:
        click.echo(str(stats))
        click.echo(f"then: predicted MSE against K for {', '.join(methods)} (driver, no pass)")
        return
    with scheduler_context(**sched) as scheduler:
        moments = compute_moments(stats, scheduler, kwargs["progress"])
    report = choose_k(moments["x"], moments["w"], kwargs["target_rel_mse"], methods, shrinkage)
    click.echo(format_k_table(report))
    if kwargs["plot"]:
        plot_mse_curve(report, kwargs["plot"])
        say(f"wrote {kwargs['plot']}")
    _write_json(kwargs["json_path"], report)
