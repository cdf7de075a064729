"""Contracts between commands and formats: each test here failed before its fix."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zarr
from click.testing import CliRunner

import ddrp_dask as dd
from ddrp_cli.main import cli
from ddrp_dask.io.parquet_reader import ParquetSource

from .conftest import make_pair, write_npy


def _invoke(*args: str) -> tuple[int, str, str]:
    res = CliRunner().invoke(cli, list(args))
    return res.exit_code, res.stdout, res.stderr


def _hive(root: Path, x: np.ndarray) -> None:
    for i, (a, b) in enumerate([(0, 300), (300, len(x))]):
        path = root / f"part={i}" / "f.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table({"emb": pa.FixedSizeListArray.from_arrays(
            pa.array(x[a:b].ravel()), x.shape[1])}), path, row_group_size=100)


@pytest.mark.parametrize("parent", ["plain", "_hidden", ".dot"])
@pytest.mark.parametrize("form", ["relative", "dot-relative", "absolute", "symlink"])
def test_parquet_output_mirrors_the_input_whatever_the_path(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, parent: str, form: str) -> None:
    x, w = make_pair(n=500, m=40, d=6, seed=1)
    base = tmp_path / parent
    _hive(base / "docs", x)
    wp = write_npy(base / "w.npy", w)
    if form == "symlink":
        os.symlink(base / "docs", tmp_path / "link")
    monkeypatch.chdir(tmp_path)
    given = {"relative": f"{parent}/docs", "dot-relative": f"./{parent}/docs",
             "absolute": str(base / "docs"), "symlink": "link"}[form]
    out = base / "out"
    code, _, stderr = _invoke("run", "--x", given, "--w", wp, "-k", "4", "--out", str(out),
                              "--format", "parquet", "--scheduler", "threads", "--quiet")
    assert code == 0, stderr
    files = sorted(str(p.relative_to(out / "x")) for p in (out / "x").rglob("*.parquet"))
    assert files == ["part=0/f.parquet", "part=1/f.parquet"]
    assert pq.read_table(out / "x").num_rows == len(x)  # pyarrow reads it
    assert dd.open_source(str(out / "x"), columns="sketch").n_rows == len(x)  # and ddrp


def _run(out: Path, x: str, w: str, *extra: str) -> tuple[int, str, str]:
    return _invoke("run", "--x", x, "--w", w, "--out", str(out), "--scheduler", "threads",
                   "--quiet", "--block-rows", "128", *extra)


@pytest.fixture()
def pair(tmp_path: Path) -> tuple[str, str]:
    x, w = make_pair(n=600, m=50, d=8, seed=2)
    return write_npy(tmp_path / "x.npy", x), write_npy(tmp_path / "w.npy", w)


def test_resume_of_a_complete_output_with_another_k_is_refused_before_pass_1(
        tmp_path: Path, pair: tuple[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "o.zarr"
    assert _run(out, *pair, "-k", "4")[0] == 0
    before = zarr.open_group(str(out), mode="r")["x"][...].tobytes()
    from ddrp_dask.jobs import base  # every plan's pass 1 (SourcePlan.statistics)

    def no_pass(*args: object, **kwargs: object) -> None:
        raise AssertionError("a pass ran")

    monkeypatch.setattr(base, "moments", no_pass)
    code, _, stderr = _run(out, *pair, "-k", "6", "--resume")
    assert code == 2
    assert "the output was made with K=4; this run asks for K=6" in stderr
    assert stderr.count("\n") == 1 and stderr.startswith("ddrp: error: ")
    assert zarr.open_group(str(out), mode="r")["x"][...].tobytes() == before


def test_resume_with_other_inputs_says_which(tmp_path: Path, pair: tuple[str, str]) -> None:
    out = tmp_path / "o.zarr"
    assert _run(out, *pair, "-k", "4")[0] == 0
    other = write_npy(tmp_path / "x2.npy", make_pair(n=601, m=5, d=8, seed=3)[0])
    code, _, stderr = _run(out, other, pair[1], "-k", "4", "--resume")
    assert code == 2 and "input x was npy 600 x 8 float32" in stderr
    assert "this run reads npy 601 x 8 float32" in stderr


def test_sketches_of_two_models_with_the_same_method_k_and_seed_do_not_combine(
        tmp_path: Path, pair: tuple[str, str]) -> None:
    a, b = tmp_path / "a.zarr", tmp_path / "b.zarr"
    refit = write_npy(tmp_path / "x2.npy", make_pair(n=600, m=5, d=8, seed=9)[0] * 3)
    assert _run(a, *pair, "-k", "4")[0] == 0
    assert _run(b, refit, pair[1], "-k", "4")[0] == 0  # same method, K and seed
    code, _, stderr = _invoke("matmul", "--x-sketch", str(b / "x"), "--w-sketch", str(a / "w"),
                              "--out", str(tmp_path / "m.zarr"), "--top", "3",
                              "--scheduler", "threads")
    assert code == 2 and "different models" in stderr
    ga, gb = (zarr.open_group(str(p), mode="r").attrs["ddrp"]["model"] for p in (a, b))
    assert ga != gb and ga in stderr and gb in stderr
    # a control: the two sides of one run combine
    code, _, stderr = _invoke("matmul", "--x-sketch", str(a / "x"), "--w-sketch", str(a / "w"),
                              "--out", str(tmp_path / "ok.zarr"), "--top", "3",
                              "--scheduler", "threads", "--quiet")
    assert code == 0, stderr


def test_dry_run_with_labels_reads_no_data(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    x, _ = make_pair(n=400, m=5, d=6, seed=4)
    path = tmp_path / "lab.parquet"
    pq.write_table(pa.table({"emb": pa.FixedSizeListArray.from_arrays(pa.array(x.ravel()), 6),
                             "y": np.arange(len(x)) % 2}), path)

    def no_read(*args: object, **kwargs: object) -> None:
        raise AssertionError("data was read")

    monkeypatch.setattr(ParquetSource, "_read", no_read)
    monkeypatch.setattr(ParquetSource, "read_column", no_read)
    out = tmp_path / "o.zarr"
    code, stdout, stderr = _invoke("run", "--x", str(path), "--w-from-labels", "y", "-k", "4",
                                   "--out", str(out), "--dry-run")
    assert code == 0, stderr
    assert "W prior: 20 logistic fits" in stdout and "w-prior.npy" in stdout
    assert not out.exists() and not Path(f"{out}.w-prior.npy").exists()


def test_quiet_success_prints_nothing(tmp_path: Path, pair: tuple[str, str]) -> None:
    res = CliRunner().invoke(cli, ["fit", "--x", pair[0], "--w", pair[1], "-k", "4", "--out",
                                   str(tmp_path / "m"), "--scheduler", "threads", "--quiet"])
    assert res.exit_code == 0 and res.stderr == ""


def test_a_misspelt_scheduler_gets_a_suggestion(tmp_path: Path, pair: tuple[str, str]) -> None:
    code, _, stderr = _invoke("fit", "--x", pair[0], "--w", pair[1], "-k", "4", "--out",
                              str(tmp_path / "m"), "--scheduler", "thread")
    assert code == 2 and "--scheduler 'thread' is neither an address" in stderr
    assert "threads" in stderr and "Traceback" not in stderr


def test_the_shipped_config_does_not_overwrite() -> None:
    import yaml

    cfg = yaml.safe_load((Path(__file__).parents[1] / "configs" / "local.yaml").read_text())
    assert not cfg.get("overwrite")


@pytest.mark.cluster
@pytest.mark.parametrize("scheduler", ["local", "threads", "sync"])
def test_a_bad_input_is_one_error_line_on_every_scheduler(tmp_path: Path, scheduler: str) -> None:
    import subprocess
    import sys

    x, w = make_pair(n=3000, m=40, d=6, seed=5)
    x[2100, 3] = np.nan
    xp, wp = write_npy(tmp_path / "x.npy", x), write_npy(tmp_path / "w.npy", w)
    ddrp = Path(sys.executable).parent / "ddrp"
    proc = subprocess.run([str(ddrp), "run", "--x", xp, "--w", wp, "-k", "4", "--out",
                           str(tmp_path / "o.zarr"), "--block-rows", "500", "--quiet",
                           "--scheduler", scheduler, "--workers", "1"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        f"ddrp: error: --x {xp}: row 2100 column 3 is nan (1 rows in rows 2000..2499 are not "
        "finite); remove or impute them before sketching"]
    assert not (tmp_path / "o.zarr").exists()


@pytest.mark.cluster
def test_parquet_input_gives_the_same_bytes_run_after_run_and_on_every_scheduler(
        tmp_path: Path) -> None:
    """Near-equal σ amplify last-bit differences in the statistics (FIELD-NOTES): a product
    on two BLAS threads in any task shows up in the sketches."""
    rng = np.random.default_rng(3)
    x = (rng.standard_normal((6000, 16)) * np.linspace(1, 1.001, 16)).astype(np.float32)
    w = rng.standard_normal((300, 16)).astype(np.float32)
    _hive(tmp_path / "docs", x[:, :16])
    pq.write_table(pa.table({"emb": pa.FixedSizeListArray.from_arrays(pa.array(x.ravel()), 16)}),
                   tmp_path / "x.parquet", row_group_size=700)
    wp = write_npy(tmp_path / "w.npy", w)
    runs = []
    for i, scheduler in enumerate(["threads", "threads", "threads", "sync", "local"]):
        out = tmp_path / f"o{i}.zarr"
        code, _, stderr = _invoke("run", "--x", str(tmp_path / "x.parquet"), "--w", wp, "-k", "6",
                                  "--out", str(out), "--block-rows", "512", "--quiet",
                                  "--scheduler", scheduler, "--workers", "2")
        assert code == 0, stderr
        runs.append(zarr.open_group(str(out), mode="r")["x"][...].tobytes())
    assert all(r == runs[0] for r in runs)


def test_a_run_with_labels_resumes_and_its_plan_names_w_as_the_prior(tmp_path: Path) -> None:
    x, _ = make_pair(n=600, m=5, d=6, seed=7)
    path = tmp_path / "lab.parquet"
    pq.write_table(pa.table({"emb": pa.FixedSizeListArray.from_arrays(pa.array(x.ravel()), 6),
                             "y": (x[:, 0] > np.median(x[:, 0])).astype(np.int64)}), path)
    args = ["run", "--x", str(path), "--w-from-labels", "y", "-k", "4", "--scheduler",
            "threads", "--quiet"]
    code, stdout, stderr = _invoke(*args, "--out", str(tmp_path / "dry.zarr"), "--dry-run")
    assert code == 0, stderr
    assert "statistics of x and w" in stdout and "the W prior's rows" in stdout
    assert "  w: " not in stdout  # X does not stand in for W
    out = tmp_path / "o.zarr"
    assert _invoke(*args, "--out", str(out))[0] == 0
    before = zarr.open_group(str(out), mode="r")["w"][...].tobytes()
    code, _, stderr = _invoke(*args, "--out", str(out), "--resume")
    assert code == 0, stderr
    assert zarr.open_group(str(out), mode="r")["w"][...].tobytes() == before


def test_sketch_bytes_do_not_depend_on_output_format_blocks_or_row_groups(
        tmp_path: Path) -> None:
    x, w = make_pair(n=5000, m=100, d=64, seed=8)  # (at d=9 the products happen to agree)
    pq.write_table(pa.table({"emb": pa.FixedSizeListArray.from_arrays(pa.array(x.ravel()),
                                                                      64)}),
                   tmp_path / "x.parquet", row_group_size=777)
    wp = write_npy(tmp_path / "w.npy", w)
    xp = str(tmp_path / "x.parquet")
    assert _invoke("fit", "--x", xp, "--w", wp, "-k", "16", "--out", str(tmp_path / "m"),
                   "--scheduler", "threads", "--quiet", "--block-rows", "1000")[0] == 0
    sketches = []
    for i, extra in enumerate([["--block-rows", "1000"], ["--block-rows", "300"],
                               ["--format", "parquet"]]):
        out = tmp_path / f"p{i}"
        code, _, stderr = _invoke("project", "--model", str(tmp_path / "m"), "--side", "x",
                                  "--input", xp, "--out", str(out), "--scheduler", "threads",
                                  "--quiet", *extra)
        assert code == 0, stderr
        if "parquet" in extra:
            t = pq.read_table(out).sort_by("row")
            sketches.append(np.stack(t["sketch"].to_numpy(zero_copy_only=False)).tobytes())
        else:
            sketches.append(zarr.open_group(str(out), mode="r")["sketch"][...].tobytes())
    assert sketches[0] == sketches[1] == sketches[2]
