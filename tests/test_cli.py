"""The command line: contracts (commands, flags, outputs), exit statuses and messages."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import zarr
from click.testing import CliRunner

from ddrp_cli.main import cli

from .conftest import make_pair, write_npy, write_parquet_list


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    t = tmp_path_factory.mktemp("cli")
    x, w = make_pair(n=1200, m=300, d=12, seed=4)
    return {"x": write_parquet_list(t / "x.parquet", x, 250), "w": write_npy(t / "w.npy", w),
            "w13": write_npy(t / "w13.npy", np.ones((5, 13), np.float32)), "dir": str(t)}


def _invoke(*args: str) -> tuple[int, str, str]:
    res = CliRunner().invoke(cli, list(args))
    return res.exit_code, res.stdout, res.stderr


def test_run_prints_report_and_writes_group(tmp_path: Path, inputs: dict[str, str]) -> None:
    out = str(tmp_path / "o.zarr")
    code, stdout, stderr = _invoke("run", "--x", inputs["x"], "--w", inputs["w"], "-k", "6",
                                   "--out", out, "--scheduler", "threads", "--quiet")
    assert code == 0, stderr
    for piece in ("method auto, K=6", "rho:", "predicted MSE", "asymmetric", "gaussian",
                  "predicted gain over gaussian"):
        assert piece in stdout, piece
    g = zarr.open_group(out, mode="r")
    assert g.attrs["complete"] is True
    assert g["x"].shape == (1200, 6) and g["w"].shape == (300, 6)
    assert g["model"].attrs["format"] == "ddrp-model"


def test_fit_project_contract(tmp_path: Path, inputs: dict[str, str]) -> None:
    model = str(tmp_path / "model")
    code, stdout, stderr = _invoke("fit", "--x", inputs["x"], "--w", inputs["w"], "-k", "5",
                                   "--method", "diagonal", "--seed", "9", "--out", model,
                                   "--scheduler", "sync")
    assert code == 0, stderr
    assert "method diagonal, K=5" in stdout
    out = str(tmp_path / "p.zarr")
    code, _, stderr = _invoke("project", "--model", model, "--side", "w", "--input",
                              inputs["w"], "--out", out, "--scheduler", "threads")
    assert code == 0, stderr
    g = zarr.open_group(out, mode="r")
    assert g["sketch"].shape == (300, 5) and g["sketch"].dtype == np.float32
    assert g.attrs["complete"] is True and g.attrs["ddrp"]["seed"] == 9


def test_dry_run_prints_plan_and_writes_nothing(tmp_path: Path, inputs: dict[str, str]) -> None:
    out = tmp_path / "o.zarr"
    code, stdout, _ = _invoke("run", "--x", inputs["x"], "--w", inputs["w"], "-k", "6",
                              "--out", str(out), "--dry-run")
    assert code == 0
    assert "ddrp run plan" in stdout and "memory: about" in stdout
    assert not out.exists()


@pytest.mark.parametrize(("args", "match"), [
    (["-k", "6", "--w", "{w13}"], "got d=13 for --w"),
    (["-k", "0"], "K must be at least 1"),
    (["-k", "2", "--method", "head-tail"], "too small for method 'head-tail'"),
    (["-k", "40"], "too large for method 'auto'"),
    (["-k", "6", "--x", "{dir}/nope.npy"], "nope.npy: no such file"),
    (["-k", "6", "--x-columns", "id,vec"], "column 'vec' has type fixed_size_list"),
    (["-k", "6", "--shrinkage", "2"], "shrinkage must be"),
    (["-k", "6", "--out", "{x}"], "overlaps input"),
])
def test_errors_exit_2_with_a_message(tmp_path: Path, inputs: dict[str, str], args: list[str],
                                      match: str) -> None:
    base = {"--x": inputs["x"], "--w": inputs["w"], "--out": str(tmp_path / "o.zarr")}
    args = [a.format(**inputs) for a in args]
    for flag, value in base.items():
        if flag not in args:
            args += [flag, value]
    code, _, stderr = _invoke("run", *args, "--scheduler", "sync", "--quiet")
    assert code == 2
    assert stderr.startswith("ddrp: error:") and match in stderr, stderr
    assert "Traceback" not in stderr


def test_a_missing_input_is_named_once(tmp_path: Path, inputs: dict[str, str]) -> None:
    nope = f"{inputs['dir']}/nope.npy"
    code, _, stderr = _invoke("run", "--x", nope, "--w", inputs["w"], "-k", "6", "--out",
                              str(tmp_path / "o.zarr"), "--scheduler", "sync", "--quiet")
    assert code == 2
    assert stderr.strip() == f"ddrp: error: {nope}: no such file or directory"


@pytest.mark.parametrize(("args", "match"), [
    (["run", "--x", "{x}", "--w", "{w}", "-k", "6"], "Missing option '--out'; see 'ddrp run"),
    (["run", "--x", "{x}", "--w", "{w}", "-k", "6", "--dtype", "int4", "--out", "o"],
     "Invalid value for '--dtype'"),
    (["run", "--x", "{x}", "--w", "{w}", "--bytes-per-rows", "8", "--out", "o"],
     "No such option '--bytes-per-rows'"),
    (["rnu"], "No such command 'rnu'"),
])
def test_usage_errors_are_one_line(args: list[str], match: str, inputs: dict[str, str]) -> None:
    res = CliRunner().invoke(cli, [a.format(**inputs) for a in args], prog_name="ddrp")
    assert res.exit_code == 2
    assert len(res.stderr.splitlines()) == 1, res.stderr
    assert res.stderr.startswith("ddrp: error: ") and match in res.stderr, res.stderr


def test_existing_output_refused_without_overwrite(tmp_path: Path,
                                                   inputs: dict[str, str]) -> None:
    out = str(tmp_path / "o.zarr")
    args = ["run", "--x", inputs["x"], "--w", inputs["w"], "-k", "4", "--out", out,
            "--scheduler", "sync", "--quiet", "--method", "gaussian"]
    assert _invoke(*args)[0] == 0
    code, _, stderr = _invoke(*args)
    assert code == 2 and "exists; pass --overwrite" in stderr
    assert _invoke(*args, "--overwrite")[0] == 0


@pytest.mark.parametrize("flags", [[], ["--overwrite"], ["--resume"]])
def test_existing_foreign_output_is_not_advised_overwrite(tmp_path: Path,
                                                          inputs: dict[str, str],
                                                          flags: list[str]) -> None:
    """A file or directory that ddrp did not write: never suggest a flag that would be
    refused; say it stays, and to choose another output."""
    for out in (tmp_path / "mine.txt", tmp_path / "mine"):
        if out.suffix:
            out.write_text("keep me")
        else:
            (out / "sub").mkdir(parents=True)
        code, _, stderr = _invoke("run", "--x", inputs["x"], "--w", inputs["w"], "-k", "4",
                                  "--out", str(out), "--scheduler", "sync", *flags)
        assert code == 2
        assert stderr.strip() == (f"ddrp: error: output {out} exists and is not a ddrp "
                                  "output; ddrp will not replace it (not even with "
                                  "--overwrite): choose another output")
        assert "pass --overwrite" not in stderr
    assert (tmp_path / "mine.txt").read_text() == "keep me" and (tmp_path / "mine/sub").is_dir()


@pytest.mark.cluster
def test_console_script_on_local_cluster(tmp_path: Path, inputs: dict[str, str]) -> None:
    """The installed ``ddrp`` in a real process: on its default scheduler (threads, for a
    small job: said), then on a LocalCluster with its dashboard."""
    out = tmp_path / "o.zarr"
    exe = Path(sys.executable).with_name("ddrp")
    proc = subprocess.run([str(exe), "run", "--x", inputs["x"], "--w", inputs["w"], "-k", "6",
                           "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "scheduler: threads" in proc.stderr and "--scheduler local" in proc.stderr
    proc = subprocess.run([str(exe), "run", "--x", inputs["x"], "--w", inputs["w"], "-k", "6",
                           "--out", str(out), "--overwrite", "--scheduler", "local",
                           "--workers", "2"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "local cluster: 2 worker(s)" in proc.stderr and "dashboard" in proc.stderr
    assert zarr.open_group(str(out), mode="r").attrs["complete"] is True
    bad = subprocess.run([str(exe), "run", "--x", inputs["x"], "--w", inputs["w13"], "-k", "6",
                          "--out", str(tmp_path / "b.zarr")],
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "same dimension" in bad.stderr
    assert "Traceback" not in bad.stderr


def _run_on_a_terminal(args: list[str]) -> str:
    """Run the CLI with stderr on a pseudo-terminal; return what it printed there."""
    import os
    import pty

    exe = Path(sys.executable).with_name("ddrp")
    leader, follower = pty.openpty()
    proc = subprocess.Popen([str(exe), *args], stdout=subprocess.DEVNULL, stderr=follower)
    os.close(follower)
    chunks = []
    while True:
        try:
            data = os.read(leader, 4096)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    proc.wait(timeout=120)
    os.close(leader)
    assert proc.returncode == 0
    return b"".join(chunks).decode(errors="replace")


def test_progress_bars_on_a_terminal_and_quiet(tmp_path: Path, inputs: dict[str, str]) -> None:
    args = ["run", "--x", inputs["x"], "--w", inputs["w"], "-k", "5", "--scheduler", "threads",
            "--block-rows", "100"]
    shown = _run_on_a_terminal([*args, "--out", str(tmp_path / "a.zarr")])
    assert "pass 1: statistics" in shown and "pass 2: projection" in shown
    n_x = -(-len(pq.read_table(inputs["x"])) // 100)
    n_w = -(-np.load(inputs["w"]).shape[0] // 100)
    # blocks done of blocks, per pass, with the elapsed time
    assert f"pass 1: statistics [{'#' * 40}] {n_x + n_w}/{n_x + n_w} blocks" in shown
    assert f"] {n_x + n_w}/{n_x + n_w} blocks, 0:0" in shown and "elapsed" in shown
    assert "pass 2: projection" in shown and "left" in shown
    quiet = _run_on_a_terminal([*args, "--out", str(tmp_path / "b.zarr"), "--quiet"])
    assert quiet.strip() == ""  # on success --quiet prints nothing
    # into Parquet, pass 2 writes one task per output file, and says so
    files = _run_on_a_terminal([*args, "--out", str(tmp_path / "c"), "--format", "parquet"])
    assert re.search(rf"pass 2: projection \[{'#' * 40}\] (\d+)/\1 files, ", files), files
    assert f"{n_x + n_w}/{n_x + n_w} blocks" in files  # pass 1 still counts blocks


def test_config_file_flags_win_and_unknown_keys_fail(tmp_path: Path,
                                                     inputs: dict[str, str]) -> None:
    cfg = tmp_path / "job.yaml"
    out = tmp_path / "o.zarr"
    cfg.write_text(f"x: {inputs['x']}\nw: {inputs['w']}\nk: 4\nmethod: gaussian\n"
                   f"out: {out}\nscheduler: threads\nquiet: true\nblock-rows: 256\n")
    code, stdout, stderr = _invoke("run", "--config", str(cfg), "-k", "5")
    assert code == 0, stderr
    assert "method gaussian, K=5" in stdout  # -k on the command line beats k: 4
    g = zarr.open_group(str(out), mode="r")
    assert g["x"].shape == (1200, 5) and g["x"].chunks == (256, 5)
    cfg.write_text("x: a.npy\nbogus_key: 1\n")
    code, _, stderr = _invoke("run", "--config", str(cfg))
    assert code == 2 and "unknown key 'bogus_key'" in stderr
    cfg.write_text("- just\n- a list\n")
    code, _, stderr = _invoke("run", "--config", str(cfg))
    assert code == 2 and "must be a mapping" in stderr


def test_fit_with_target_rel_mse_picks_k(tmp_path: Path, inputs: dict[str, str]) -> None:
    from ddrp_dask import compute_moments, load_model, plan_stats
    from ddrp_dask.maths.choose import min_k

    out = str(tmp_path / "o.zarr")
    code, stdout, stderr = _invoke("run", "--x", inputs["x"], "--w", inputs["w"],
                                   "--target-rel-mse", "0.01", "--out", out,
                                   "--scheduler", "threads", "--quiet")
    assert code == 0, stderr
    m = compute_moments(plan_stats(inputs["x"], inputs["w"]), scheduler="threads")
    k = min_k(m["x"], m["w"], 0.01, "auto")
    assert f"K={k} stored columns" in stdout
    g = zarr.open_group(out, mode="r")
    assert g["x"].shape == (1200, k) and g.attrs["ddrp"]["k"] == k
    assert load_model(out + "/model").k == k
    code, _, stderr = _invoke("run", "--x", inputs["x"], "--w", inputs["w"], "-k", "5",
                              "--target-rel-mse", "0.01", "--out", str(tmp_path / "b.zarr"))
    assert code == 2 and "not both" in stderr


@pytest.mark.parametrize("quiet", [False, True])
def test_k_not_below_d_warns_but_runs(tmp_path: Path, inputs: dict[str, str],
                                      quiet: bool) -> None:
    """K ≥ d: a one-line warning on stderr (even with --quiet), exit 0, output written."""
    base = ["--x", inputs["x"], "--w", inputs["w"], "--scheduler", "threads"]
    q = ["--quiet"] if quiet else []
    code, _, stderr = _invoke("run", *base, "--method", "asymmetric", "-k", "30",
                              "--out", str(tmp_path / "a.zarr"), *q)
    assert code == 0, stderr
    warning = ("ddrp: warning: K=30 is 2.5x d=12: the sketches are larger than the raw "
               "vectors")
    assert stderr.splitlines().count(warning) == 1
    assert zarr.open_group(str(tmp_path / "a.zarr"), mode="r").attrs["complete"] is True
    code, _, stderr = _invoke("fit", *base, "--method", "orthogonal", "-k", "12",
                              "--out", str(tmp_path / "m"), *q)
    assert code == 0, stderr
    assert "ddrp: warning: K=12 is 1x d=12: the sketches are as large as the raw vectors" \
        in stderr
    code, _, stderr = _invoke("run", *base, "-k", "11", "--out", str(tmp_path / "b.zarr"), *q)
    assert code == 0 and "warning" not in stderr, stderr


def test_k_chosen_by_target_warns_when_not_below_d(tmp_path: Path,
                                                   inputs: dict[str, str]) -> None:
    code, _, stderr = _invoke("fit", "--x", inputs["x"], "--w", inputs["w"], "--method",
                              "gaussian", "--target-rel-mse", "0.01", "--out",
                              str(tmp_path / "m"), "--scheduler", "threads", "--quiet")
    assert code == 0, stderr
    assert "ddrp: warning: K=" in stderr and "larger than the raw vectors" in stderr
