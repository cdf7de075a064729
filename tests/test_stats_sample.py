"""``--stats-fraction auto`` (the default): a source with many more rows than the statistics
need gives pass 1 a seeded sample of blocks spread over all of it; others are read whole."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import ddrp_dask as dd
from ddrp_dask.options import MIN_STATS_ROWS, SAMPLE_ABOVE, stats_blocks_needed, stats_rows
from ddrp_dask.testing import reference_covariance

from .conftest import write_npy, write_zarr

ROOT = Path(__file__).resolve().parents[1]
BLOCK = 25_000


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """X of 2.6 times the rows the rule asks for at d = 4, sorted (its mean drifts along the
    rows, as sorted or partitioned data do), and a W below the rule's threshold."""
    root = tmp_path_factory.mktemp("big")
    rng = np.random.default_rng(3)
    n = int(2.6 * SAMPLE_ABOVE * MIN_STATS_ROWS) // 2
    x = rng.standard_normal((n, 4)).astype(np.float32)
    x[:, 0] += np.linspace(-3.0, 3.0, n, dtype=np.float32)  # sorted by its first column
    w = rng.standard_normal((3_000, 4)).astype(np.float32)
    return {"x": write_npy(root / "x.npy", x), "w": write_npy(root / "w.npy", w),
            "x_zarr": write_zarr(root / "x.zarr", x, 7_777)}


def test_the_rule_in_rows() -> None:
    assert stats_rows(64) == MIN_STATS_ROWS and stats_rows(8192) > MIN_STATS_ROWS
    # below SAMPLE_ABOVE times the rows needed, every block is read
    assert stats_blocks_needed(SAMPLE_ABOVE * MIN_STATS_ROWS - 1, BLOCK, 4) is None
    assert stats_blocks_needed(SAMPLE_ABOVE * MIN_STATS_ROWS, BLOCK, 4) == \
        -(-MIN_STATS_ROWS // BLOCK)


def test_auto_reads_a_spread_sample_of_a_large_source(tmp_path: Path,
                                                      big: dict[str, str]) -> None:
    plan = dd.plan_fit(big["x"], big["w"], 3, str(tmp_path / "m"), block_rows=BLOCK, seed=1)
    n = plan.n_blocks("x")
    chosen = plan.stats_blocks("x")
    m = -(-MIN_STATS_ROWS // BLOCK)
    assert len(chosen) == m < n and chosen == sorted(set(chosen))
    # one block in each of m equal runs: the sample covers the whole (sorted) source
    edges = np.linspace(0, n, m + 1).astype(int)
    assert [int(np.searchsorted(edges, c, side="right")) - 1 for c in chosen] == list(range(m))
    assert plan.stats_blocks("w") == [0]  # small: read whole
    # seeded: the same for another format of the same rows, another for another seed
    again = dd.plan_fit(big["x_zarr"], big["w"], 3, str(tmp_path / "m2"), block_rows=BLOCK,
                        seed=1)
    assert again.stats_blocks("x") == chosen
    other = dd.plan_fit(big["x"], big["w"], 3, str(tmp_path / "m3"), block_rows=BLOCK, seed=2)
    assert other.stats_blocks("x") != chosen
    # pass 1 reads those blocks only: the statistics are theirs (numpy reference)
    mx = dd.compute_moments(plan, scheduler="threads")["x"]
    x = np.load(big["x"])
    rows = np.concatenate([x[i * BLOCK:(i + 1) * BLOCK] for i in chosen])
    assert mx.n == len(rows)
    ref = reference_covariance(rows)
    assert np.linalg.norm(mx.scatter - ref) / np.linalg.norm(ref) < 1e-6
    # the sample's mean of the sorted column is near the whole source's (0), unlike the
    # first m blocks' (a prefix of the sort)
    assert abs(float(mx.mean[0])) < 0.6 < abs(float(x[:m * BLOCK, 0].mean()))
    # --stats-fraction 1 reads every block
    full = dd.plan_fit(big["x"], big["w"], 3, str(tmp_path / "m4"), block_rows=BLOCK,
                       stats_fraction=1)
    assert full.stats_blocks("x") == list(range(n))


def test_dry_run_and_report_say_so(tmp_path: Path, big: dict[str, str]) -> None:
    def cli(*args: str) -> str:
        proc = subprocess.run([sys.executable, "-m", "ddrp_cli.main", *args],
                              capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    base = ["fit", "--x", big["x"], "--w", big["w"], "-k", "3", "--block-rows", str(BLOCK),
            "--scheduler", "threads", "--quiet"]
    m = -(-MIN_STATS_ROWS // BLOCK)
    n = -(-len(np.load(big["x"], mmap_mode="r")) // BLOCK)
    plan = cli(*base, "--out", str(tmp_path / "m"), "--dry-run")
    assert f"on a seeded sample spread over the input: {m} of {n} blocks of x" in plan
    assert "--stats-fraction auto; 1 reads all" in plan
    assert "seeded sample" not in cli(*base, "--out", str(tmp_path / "m"), "--dry-run",
                                      "--stats-fraction", "1")
    report = cli(*base, "--out", str(tmp_path / "m"), "--report", str(tmp_path / "r.json"))
    assert f"rows fitted: x {m * BLOCK}, w 3000 (statistics from a seeded sample: {m} of {n} " \
           "blocks of x)" in report
    saved = json.loads((tmp_path / "r.json").read_text())
    assert saved["stats_blocks"] == {"x": [m, n], "w": [1, 1]}
