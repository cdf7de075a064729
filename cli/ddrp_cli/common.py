"""Options and helpers shared by the ddrp commands: option sets, scheduler, error guard."""

from __future__ import annotations

import json
import math
import os
import signal
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import click

import ddrp_dask
from ddrp_dask.errors import DdrpError, OutputError
from ddrp_dask.graph.compute import SCHEDULER_NAMES, THREADS_BELOW_BYTES, local_scheduler
from ddrp_dask.io.lifecycle import output_facts, output_state
from ddrp_dask.jobs.base import OnModel, Plan
from ddrp_dask.jobs.fit import FitPlan
from ddrp_dask.jobs.project import ProjectPlan
from ddrp_dask.options import METHODS, not_smaller_than_raw, storage_ratio
from ddrp_dask.report import format_report, report_dict

F = Callable[..., Any]
R = TypeVar("R")


def _options(*decorators: F) -> F:
    def apply(f: F) -> F:
        for d in reversed(decorators):
            f = d(f)
        return f
    return apply


column_options = _options(
    click.option("--x-columns", default=None, help="Parquet column(s) of X, comma-separated."),
    click.option("--w-columns", default=None, help="Parquet column(s) of W, comma-separated."),
)

source_options = _options(
    click.option("--x", "x", required=True, help="Source of X rows: .npy, Zarr array, Parquet."),
    click.option("--w", "w", default=None,
                 help="Source of W rows: .npy, Zarr array, Parquet (or --w-from-labels)."),
    column_options,
    click.option("-k", "--k", "k", type=int, default=None,
                 help="Stored columns per sketch (all counted)."),
    click.option("--target-rel-mse", type=float, default=None,
                 help="Instead of -k: the smallest K whose predicted relative MSE "
                      "(MSE / E(x.w)^2) is at most this, chosen after pass 1."),
    click.option("--method", type=click.Choice(METHODS), default="auto", show_default=True),
    click.option("--seed", type=int, default=0, show_default=True),
    click.option("--shrinkage", default="auto", show_default=True,
                 help="'auto' (for auto: chosen per source by cross-fitting; else OAS), "
                      "'oas' or a fixed number in [0, 1]."),
    click.option("--stats-fraction", default="auto", show_default=True,
                 help="Statistics from this seeded fraction of the row blocks (pass 1 reads "
                      "only those); every row is still sketched. 'auto': a seeded sample of "
                      "blocks spread over a source with many more rows than the statistics "
                      "need (see --dry-run), all blocks of others; 1 reads all."),
)

def _load_config(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    """``--config FILE``: YAML keys become the command's defaults, so flags still win."""
    if value is None:
        return
    import yaml

    try:
        with open(value) as fh:
            data = yaml.safe_load(fh)
    except (OSError, yaml.YAMLError) as e:
        raise click.BadParameter(f"{value}: cannot be read as YAML ({e})") from e
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise click.BadParameter(f"{value}: must be a mapping of option names to values")
    names = {opt[2:].replace("-", "_"): p.name for p in ctx.command.params
             if isinstance(p, click.Option) for opt in p.opts if opt.startswith("--")}
    names.pop("config", None)
    defaults = {}
    for key, v in data.items():
        norm = str(key).replace("-", "_")
        if norm not in names:
            raise click.BadParameter(f"{value}: unknown key {key!r}; known keys for "
                                     f"'{ctx.command.name}': {', '.join(sorted(names))}")
        defaults[names[norm]] = v
    ctx.default_map = {**(ctx.default_map or {}), **defaults}


#: ``--scheduler``'s help: the names ``local_scheduler`` takes and its true default.
SCHEDULER_HELP = (
    "Scheduler address (tcp://HOST:PORT, tls://HOST:PORT) or one of "
    f"{', '.join(SCHEDULER_NAMES)} ('local': a LocalCluster of --workers processes). "
    "Default: $DASK_SCHEDULER_ADDRESS / Dask config 'scheduler-address', else 'threads' for "
    f"inputs under {THREADS_BELOW_BYTES / 2**30:.0f} GiB and 'local' above.")

run_options = _options(
    click.option("--config", type=click.Path(dir_okay=False), is_eager=True,
                 expose_value=False, callback=_load_config,
                 help="YAML file of options (keys: long option names); flags win."),
    click.option("--block-rows", type=int, default=None,
                 help="Rows per block (task, output chunk); default from d only."),
    click.option("--overwrite", is_flag=True, help="Replace an existing ddrp output."),
    click.option("--dry-run", is_flag=True, help="Print the plan and write nothing."),
    click.option("--quiet", is_flag=True, help="No progress bars."),
    click.option("--scheduler", default=None, help=SCHEDULER_HELP),
    click.option("--workers", type=int, default=None, help="LocalCluster workers."),
    click.option("--threads-per-worker", type=int, default=1, show_default=True),
    click.option("--memory-limit", default="auto", show_default=True,
                 help="LocalCluster memory limit per worker."),
)
"""Options of every command that runs on Dask: config, blocks, output, scheduler."""

execution_options = _options(
    click.option("--on-invalid", type=click.Choice(["error", "skip"]), default="error",
                 show_default=True,
                 help="A row with NaN/inf/null/wrong length: fail naming it, or skip and list it."),
    click.option("--resume", is_flag=True,
                 help="Finish an interrupted output: keep its finished blocks."),
    click.option("--strict-chunks", is_flag=True,
                 help="Refuse a Zarr array with absent chunks (default: read them as the "
                      "fill value, as Zarr does, and say how many)."),
    run_options,
)
"""``run_options`` plus what the passes over the sources take: --on-invalid, --resume,
--strict-chunks."""


@dataclass(frozen=True)
class SchedulerOptions:
    """``--scheduler``, ``--workers``, ``--threads-per-worker``, ``--memory-limit``: where a
    command's job runs (``ddrp_dask.graph.compute.local_scheduler``)."""

    scheduler: str | None
    workers: int | None
    threads_per_worker: int
    memory_limit: str


def run_job(plan: Plan[R], dry_run: bool, quiet: bool, sched: SchedulerOptions,
            on_model: OnModel | None = None) -> R | None:
    """The one way a command runs its plan: print it (``--dry-run``; returns None), or
    execute it on the scheduler the options name, sized by the plan's input (the default
    follows it), with progress on a terminal unless ``--quiet``; returns the job's
    result."""
    if dry_run:
        click.echo(str(plan))
        return None
    with local_scheduler(sched.scheduler, sched.workers, sched.threads_per_worker,
                         sched.memory_limit, say=None if quiet else say,
                         job_bytes=plan.input_bytes()) as scheduler:
        return plan.execute(scheduler, show_progress(quiet), on_model)


def show_progress(quiet: bool) -> bool:
    """Progress lines on stderr: on a terminal, unless ``--quiet``."""
    return not quiet and sys.stderr.isatty()


def say(msg: str) -> None:
    """A status line on stderr (stdout is for reports)."""
    click.echo(msg, err=True)


def run_plan(plan: FitPlan | ProjectPlan, dry_run: bool, quiet: bool,
             sched: SchedulerOptions, show_report: bool,
             report_path: str | None = None) -> None:
    """Run a plan that writes a model or sketches (fit, run, project) with ``run_job``;
    ``report_path``: the build report as JSON (``--report``)."""
    if report_path is not None:
        check_report_file(report_path, [str(s.path) for s in plan.sources.values()],
                          plan.overwrite)
    fitting = isinstance(plan, FitPlan)
    if fitting and plan.k is not None:
        warn_storage(plan.k, plan.d)
    done_before = not dry_run and plan.resume and output_state(plan.out) == "complete"

    def on_model(model: ddrp_dask.SketchModel) -> None:
        if fitting and plan.k is None:  # K chosen after pass 1
            warn_storage(model.k, model.d)
        if show_report:
            click.echo(format_report(model))

    model = run_job(plan, dry_run, quiet, sched, on_model)
    if model is None:  # --dry-run
        return
    write_json(report_path, report_dict(model))
    if plan.command != "fit" and plan.skip:
        _report_skipped(plan)
    for src in plan.sources.values():
        for note in src.notes():
            say(note)
    if not quiet:
        say(f"{plan.out} was already complete (--resume): nothing written to it"
            if done_before else f"wrote {plan.out}")


def warn_storage(k: int, d: int) -> None:
    """A warning on stderr (even with --quiet: it is not progress) when K ≥ d: the sketches
    are then no smaller than the raw vectors. Not a refusal."""
    if not_smaller_than_raw(k, d):
        size = "as large as" if k == d else "larger than"
        click.echo(f"ddrp: warning: K={k} is {storage_ratio(k, d):.3g}x d={d}: the sketches "
                   f"are {size} the raw vectors", err=True)


def _report_skipped(plan: Any) -> None:
    """Say how many invalid rows were skipped, and where their list is."""
    counts = output_facts(plan.out).get("skipped", {})
    for side, n in counts.items():
        if n:
            prefix = "" if plan.command == "project" else f"{side}_"
            where = "the marker _ddrp.json" if plan.format == "parquet" else \
                f"{prefix}skipped_rows" + (f" and {prefix}skipped_ids"
                                           if plan.sources[side].id_column else "")
            say(f"skipped {n} invalid row(s) of {side}; listed in {plan.out}: {where}")


def guard(f: F) -> F:
    """Turn ddrp's errors into one line on stderr and their exit status (2: bad input or
    options; 1: the run failed, ``ddrp_dask.errors.RunError``); keep tracebacks for bugs."""
    import functools

    @functools.wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, signal.default_int_handler)  # see ddrp_cli/__init__
        try:
            return f(*args, **kwargs)
        except DdrpError as e:
            click.echo(f"ddrp: error: {e}", err=True)
            sys.exit(e.exit_status)
        except KeyboardInterrupt:
            click.echo("ddrp: interrupted; run the same command with --resume to finish it "
                       "(what was written is kept, hidden beside OUT, or marked incomplete at "
                       "a URL)", err=True)
            sys.stdout.flush()
            sys.stderr.flush()
            # the cluster is closed by now (its context has exited); leave without the
            # interpreter's teardown, whose warnings about interrupted I/O coroutines
            # ("coroutine … was never awaited", "Task was destroyed") would follow the line
            os._exit(130)
    return wrapper


def check_report_file(path: str | None, inputs: list[str], overwrite: bool) -> None:
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


def jsonable(obj: Any) -> Any:
    """Plain JSON: numpy values become Python ones; NaN and infinities become null."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [jsonable(v) for v in obj]
    if hasattr(obj, "tolist"):
        return jsonable(obj.tolist())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def write_json(path: str | None, data: dict[str, Any]) -> None:
    """Write ``data`` as JSON to ``path`` (nothing for None)."""
    if path is not None:
        Path(path).write_text(json.dumps(jsonable(data), indent=2) + "\n")
