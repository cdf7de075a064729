"""project_block: the affine map against numpy, and the errors it owns (non-finite inputs,
found through their sketches, and sketches that overflow float32)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import ddrp_dask as dd
from ddrp_dask.errors import InvalidValueError
from ddrp_dask.maths.model import SideMap
from ddrp_dask.maths.project import project_block

from .conftest import make_pair, write_npy, write_zarr


def _side(d: int = 12, k: int = 5, seed: int = 0) -> SideMap:
    rng = np.random.default_rng(seed)
    return SideMap(rng.standard_normal((d, k)), rng.standard_normal(k),
                   rng.standard_normal(d) * 10)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("overwrite", [False, True])
def test_matches_numpy(dtype: type, overwrite: bool) -> None:
    side = _side()
    block = (np.random.default_rng(1).standard_normal((300, 12)) * 3 + 10).astype(dtype)
    want = block.astype(np.float64) @ side.matrix + side.offset
    kept = block.copy()
    got = project_block(block, side, overwrite_input=overwrite)
    assert got.dtype == np.float32 and got.shape == (300, 5)
    tol = 1e-5 if dtype == np.float32 else 1e-6
    assert np.abs(got - want).max() < tol * np.abs(want).max()
    assert np.array_equal(block, kept)  # shifted a tile at a time: the block is never changed


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("overwrite", [False, True])
def test_non_finite_inputs_are_named(bad: float, overwrite: bool) -> None:
    block = np.random.default_rng(2).standard_normal((300, 12)).astype(np.float32)
    block[217, 3] = bad
    block[250, 0] = bad
    with pytest.raises(InvalidValueError, match=rf"x.npy: row 1217 column 3 is {bad}"
                                                r" \(2 rows in rows 1000..1299"):
        project_block(block, _side(), "x.npy", 1000, overwrite_input=overwrite)


def test_zero_weights_still_reveal_nan() -> None:
    """A feature every column ignores (a zero row of the matrix) still makes NaN sketches."""
    side = _side()
    side.matrix[4] = 0.0
    block = np.ones((10, 12), dtype=np.float32)
    block[6, 4] = np.nan
    with pytest.raises(InvalidValueError, match="row 6 column 4 is nan"):
        project_block(block, side)


def test_overflowing_sketch_is_named() -> None:
    side = _side()
    block = np.zeros((50, 12), dtype=np.float32)
    block[33] = 3e38
    with pytest.raises(InvalidValueError, match=r"row 33 overflows float32 .*3e\+38"):
        project_block(block, side)


def test_pass_two_names_inf_in_a_block_pass_one_skipped(tmp_path: Path) -> None:
    """Zarr blocks are the task's own and are shifted in place: an inf in a block the
    statistics did not read is still named by pass 2, and no output is left."""
    block = 500
    x, w = make_pair(n=3000, m=400, d=12, seed=3)
    wp = write_npy(tmp_path / "w.npy", w)
    plan = dd.plan_run(write_zarr(tmp_path / "x.zarr", x, block), wp, 6,
                       str(tmp_path / "o.zarr"), block_rows=block, stats_fraction=0.3, seed=1)
    chosen = plan.stats_blocks("x")
    skipped = next(i for i in range(6) if i not in chosen)
    x[skipped * block + 41, 7] = -np.inf
    plan = dd.plan_run(write_zarr(tmp_path / "bad.zarr", x, block), wp, 6,
                       str(tmp_path / "o.zarr"), block_rows=block, stats_fraction=0.3, seed=1)
    assert plan.stats_blocks("x") == chosen
    with pytest.raises(InvalidValueError,
                       match=rf"bad.zarr: row {skipped * block + 41} column 7 is -inf"):
        dd.execute(plan, scheduler="threads")
    assert not (tmp_path / "o.zarr").exists()
