"""What the CLI says is true: the default scheduler in every --help, the choices of a bad
--scheduler, and the messages of dry runs, resumes and report files."""

from __future__ import annotations

import json
import re
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

import ddrp_dask as dd
from ddrp_cli.main import cli
from ddrp_dask.graph.compute import THREADS_BELOW_BYTES, default_scheduler

from .conftest import make_pair, write_npy, write_parquet_list


def _invoke(*args: str) -> tuple[int, str, str]:
    res = CliRunner().invoke(cli, list(args))
    return res.exit_code, res.stdout, res.stderr


def _scheduler_help(command: str) -> str:
    cmd = cli.commands[command]  # type: ignore[attr-defined]
    opt = next(p for p in cmd.params if isinstance(p, click.Option) and p.name == "scheduler")
    return " ".join(str(opt.help).split())


SCHEDULED = ["fit", "run", "project", "matmul", "evaluate", "plan"]


@pytest.mark.parametrize("command", SCHEDULED)
def test_help_states_the_default_the_code_takes(command: str) -> None:
    """Before, every command's help said the default was 'local'; the code takes threads
    below 8 GiB of input and a LocalCluster above."""
    text = _scheduler_help(command)
    gib = THREADS_BELOW_BYTES / 2**30
    assert f"else 'threads' for inputs under {gib:.0f} GiB and 'local' above" in text
    assert default_scheduler(THREADS_BELOW_BYTES - 1) == "threads"
    assert default_scheduler(THREADS_BELOW_BYTES) == "local"
    code, out, _ = _invoke(command, "--help")
    assert code == 0 and "'threads' for inputs" in " ".join(out.split())


def test_a_bad_scheduler_lists_the_choices_the_help_lists(tmp_path: Path) -> None:
    x, w = make_pair(n=60, m=20, d=4)
    xp, wp = write_npy(tmp_path / "x.npy", x), write_npy(tmp_path / "w.npy", w)
    code, _, err = _invoke("run", "--x", xp, "--w", wp, "-k", "2", "--out",
                           str(tmp_path / "o.zarr"), "--scheduler", "thread")
    assert code == 2 and err.count("\n") == 1 and err.startswith("ddrp: error:")
    listed = re.search(r"nor one of (.*)$", err.strip())
    assert listed is not None
    names = listed.group(1).split(", ")
    in_help = re.search(r"or one of (.*?) \(", _scheduler_help("run"))
    assert in_help is not None and in_help.group(1).split(", ") == names
    assert "processes" in names and not (tmp_path / "o.zarr").exists()


def test_small_lies_are_gone(tmp_path: Path) -> None:
    x, w = make_pair(n=200, m=40, d=6, seed=1)
    xp = write_parquet_list(tmp_path / "x.parquet", x, 64)
    wp = write_npy(tmp_path / "w.npy", w)
    # ddrp plan --dry-run: no "ddrp plan plan"
    code, out, _ = _invoke("plan", "--x", xp, "--w", wp, "--dry-run")
    assert code == 0 and "ddrp plan plan" not in out and out.startswith("the plan of ddrp plan")
    # plan --json FILE says it wrote FILE
    report = tmp_path / "k.json"
    code, _, err = _invoke("plan", "--x", xp, "--w", wp, "--json", str(report),
                           "--scheduler", "sync")
    assert code == 0 and f"wrote {report}" in err and json.loads(report.read_text())
    # run --dry-run lists the id outputs (and the skipped-row lists)
    run = tmp_path / "run.zarr"
    code, out, _ = _invoke("run", "--x", xp, "--x-id-column", "id", "--w", wp, "-k", "3",
                           "--out", str(run), "--on-invalid", "skip", "--dry-run")
    assert code == 0 and f"{run}/x_ids (200 int64, id column 'id')" in out
    assert f"{run}/x_skipped_rows and x_skipped_ids" in out and f"{run}/w_skipped_rows" in out
    assert not run.exists()
    # project --resume on a complete output: says so, writes nothing
    dd.execute(dd.plan_run(xp, wp, 3, str(run), x_id_column="id"), scheduler="sync")
    proj = tmp_path / "p.zarr"
    base = ["project", "--model", f"{run}/model", "--side", "x", "--input", xp, "--out",
            str(proj), "--scheduler", "sync"]
    code, out, _ = _invoke(*base, "--id-column", "id", "--dry-run")
    assert code == 0 and f"{proj}/ids (200 int64, id column 'id')" in out
    assert _invoke(*base)[0] == 0
    before = {p: p.stat().st_mtime_ns for p in proj.rglob("*")}
    code, _, err = _invoke(*base, "--resume")
    assert code == 0 and f"{proj} was already complete (--resume): nothing written" in err
    assert "wrote" not in err
    assert {p: p.stat().st_mtime_ns for p in proj.rglob("*")} == before
