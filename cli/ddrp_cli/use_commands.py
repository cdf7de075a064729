"""The commands that use sketches and models: ``matmul``, ``evaluate`` and ``plan``."""

from __future__ import annotations

import click

from ddrp_dask.errors import require_extra
from ddrp_dask.io.lifecycle import output_state
from ddrp_dask.jobs.evaluate import plan_evaluate
from ddrp_dask.jobs.matmul import plan_matmul
from ddrp_dask.jobs.plan import plan_choose
from ddrp_dask.options import METHODS
from ddrp_dask.plot import plot_mse_curve
from ddrp_dask.report import format_bytes_table, format_evaluation, format_k_table

from .common import (
    SchedulerOptions,
    check_report_file,
    column_options,
    guard,
    run_job,
    run_options,
    say,
    write_json,
)


@click.command()
@click.option("--x-sketch", required=True,
              help="Sketches of X rows: a Zarr array such as RUN/x or PROJECTED/sketch.")
@click.option("--w-sketch", required=True,
              help="Sketches of W rows from the same model, e.g. RUN/w.")
@click.option("--out", required=True,
              help="Output: a Zarr group with array product (n x m), or with --top indices, "
                   "scores, ids (the found rows' ids) and row_ids (the searched rows' ids) when "
                   "the sketches' outputs have ids; or a Parquet dataset (--format parquet).")
@click.option("--top", type=int, default=None,
              help="Keep only the N largest estimates of every row searched from (best first).")
@click.option("--per", type=click.Choice(["x", "w"]), default="x", show_default=True,
              help="With --top: the N best w rows of every x row, or the N best x rows of "
                   "every w row (e.g. documents per query).")
@click.option("--format", "fmt", type=click.Choice(["zarr", "parquet"]), default="zarr",
              show_default=True,
              help="With --top, parquet: rows of (from row and id, rank, to row and id, score) "
                   "to join on the ids.")
@click.option("--block-cols", type=int, default=None,
              help="Rows of the other side per task; default 4096 (product) or 65536 (--top).")
@click.option("--resume", is_flag=True,
              help="Finish an interrupted output: keep its finished tasks.")
@run_options
@guard
def matmul(x_sketch: str, w_sketch: str, out: str, top: int | None, per: str, fmt: str,
           block_cols: int | None, resume: bool, block_rows: int | None, overwrite: bool,
           dry_run: bool, quiet: bool, scheduler: str | None, workers: int | None,
           threads_per_worker: int, memory_limit: str) -> None:
    """Estimate X @ W.T from two sketches, block by block; or its top N per x (or w) row."""
    plan = plan_matmul(x_sketch, w_sketch, out, top=top, block_rows=block_rows,
                       block_cols=block_cols, overwrite=overwrite, per=per, format=fmt,
                       resume=resume)
    done_before = not dry_run and resume and output_state(plan.out) == "complete"
    run_job(plan, dry_run, quiet,
            SchedulerOptions(scheduler, workers, threads_per_worker, memory_limit))
    if not (dry_run or quiet):
        say(f"{plan.out} was already complete (--resume): nothing written to it"
            if done_before else f"wrote {plan.out}")


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
def evaluate(model: str, x: str, w: str, x_columns: str | None, w_columns: str | None,
             pairs: int, seed: int, top: int | None, queries: int, seeds: int,
             json_path: str | None, block_rows: int | None, overwrite: bool, dry_run: bool,
             quiet: bool, scheduler: str | None, workers: int | None,
             threads_per_worker: int, memory_limit: str) -> None:
    """Measure a model on sampled pairs against exact inner products and equal-K baselines."""
    plan = plan_evaluate(model, x, w, pairs=pairs, seed=seed, top=top, queries=queries,
                         seeds=seeds, x_columns=x_columns, w_columns=w_columns,
                         block_rows=block_rows)
    check_report_file(json_path, [x, w, model], overwrite)
    result = run_job(plan, dry_run, quiet,
                     SchedulerOptions(scheduler, workers, threads_per_worker, memory_limit))
    if result is None:  # --dry-run
        return
    click.echo(format_evaluation(result))
    write_json(json_path, result)


@click.command("plan")
@click.option("--x", "x", required=True, help="Source of X rows: .npy, Zarr array, Parquet.")
@click.option("--w", "w", required=True, help="Source of W rows: .npy, Zarr array, Parquet.")
@column_options
@click.option("--target-rel-mse", type=float, default=0.01, show_default=True,
              help="Target MSE / E(x.w)^2 (0.01: RMS error 10% of the RMS inner product).")
@click.option("--methods", default=",".join(METHODS), show_default=True,
              help="Methods to compare, comma-separated.")
@click.option("--shrinkage", default="auto", show_default=True,
              help="'auto' (for auto: chosen per source by cross-fitting; else OAS), "
                      "'oas' or a fixed number in [0, 1].")
@click.option("--stats-fraction", default="auto", show_default=True,
              help="Statistics from this fraction of the row blocks (seeded choice); 'auto': "
                   "a sample spread over a source with many more rows than needed.")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed of the choice of blocks for --stats-fraction.")
@click.option("--bytes-per-row", type=int, default=None,
              help="Also print auto's predicted relative MSE per storage layout (float32, "
                   "float16, int8, mixed, int8max, mixedmax) at byte budgets around this one.")
@click.option("--plot", default=None, help="Write the curves as a PNG here.")
@click.option("--json", "json_path", default=None, help="Write the numbers as JSON here.")
@run_options
@guard
def plan_command(x: str, w: str, x_columns: str | None, w_columns: str | None,
                 target_rel_mse: float, methods: str, shrinkage: str,
                 stats_fraction: float | str,
                 seed: int, bytes_per_row: int | None, plot: str | None,
                 json_path: str | None, block_rows: int | None,
                 overwrite: bool, dry_run: bool, quiet: bool, scheduler: str | None,
                 workers: int | None, threads_per_worker: int, memory_limit: str) -> None:
    """Choose K from the statistics alone: predicted MSE against K, smallest K per method."""
    if plot:  # before pass 1, not after it
        require_extra("matplotlib", "--plot")
    written = [f"{p} ({what})" for p, what in ((plot, "PNG plot"), (json_path, "JSON"))
               if p]
    plan = plan_choose(x, w, target_rel_mse, methods, shrinkage, x_columns, w_columns,
                       block_rows, stats_fraction, seed, written, bytes_per_row)
    for path in (plot, json_path):
        check_report_file(path, [x, w], overwrite)
    report = run_job(plan, dry_run, quiet,
                     SchedulerOptions(scheduler, workers, threads_per_worker, memory_limit))
    if report is None:  # --dry-run
        return
    click.echo(format_k_table(report))
    if "bytes" in report:
        click.echo(format_bytes_table(report["bytes"]))
    if plot:
        plot_mse_curve(report, plot)
        say(f"wrote {plot}")
    write_json(json_path, report)
    if json_path:
        say(f"wrote {json_path}")
