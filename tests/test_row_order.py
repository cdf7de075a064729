"""Both passes run their blocks in row order on Dask's local schedulers, so that a chunk two
blocks share is held only while its neighbours run (``io.chunk_cache``) and pass 1's merges
follow their blocks (``graph.compute.row_order``, ``FAN_IN``)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from dask.callbacks import Callback

import ddrp_dask as dd
from ddrp_dask.graph import compute, passes
from ddrp_dask.io import chunk_cache

from .conftest import make_pair, write_zarr

BLOCK = 100
_BLOCK_KEY = re.compile(r"ddrp-([xw])-(\d{15})-(fold_stats_task|stats_task|project_task)-")


class _Starts(Callback):  # type: ignore[misc]
    """The block tasks in the order they start, as ``(pass, side, key number)``, and the
    most chunks the cache held when one started."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[int, str, int]] = []
        self.most_held = 0

    def _pretask(self, key: Any, dsk: Any, state: Any) -> None:
        m = _BLOCK_KEY.match(str(key))
        if m:
            self.seen.append((2 if m.group(3) == "project_task" else 1, m.group(1),
                              int(m.group(2))))
        self.most_held = max(self.most_held, chunk_cache.held())


def _run(tmp_path: Path, scheduler: str) -> _Starts:
    x, w = make_pair(n=4000, m=1000, d=8)
    xp = write_zarr(tmp_path / "x.zarr", x, 150)  # 1.5 blocks: every block shares a chunk
    wp = write_zarr(tmp_path / "w.zarr", w, 150)
    chunk_cache.clear()
    starts = _Starts()
    with starts:
        dd.execute(dd.plan_run(xp, wp, 4, str(tmp_path / "out"), block_rows=BLOCK),
                   scheduler=scheduler)
    return starts


def _rows(starts: _Starts, which: int, side: str) -> list[int]:
    return [compute.ROW_KEY_TOP - n for p, s, n in starts.seen if p == which and s == side]


@pytest.mark.parametrize("scheduler", ["sync", "threads"])
def test_both_passes_start_their_blocks_in_row_order(tmp_path: Path, scheduler: str) -> None:
    """40 + 10 blocks (pass 1 per fold, its merges in a tree of pairs): every side's blocks
    start in ascending rows in both passes, and the cache never holds more than a few
    chunks."""
    starts = _run(tmp_path, scheduler)
    for which in (1, 2):
        for side, n in (("x", 40), ("w", 10)):
            rows = _rows(starts, which, side)
            assert rows == [BLOCK * i for i in range(n)], (which, side, rows)
    assert starts.most_held <= 3


def test_row_order_control_ascending_keys_run_out_of_order(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Control: with key numbers that count up (the keys before ``row_order``) Dask takes
    the blocks in another order, which the test above would see."""
    monkeypatch.setattr(passes, "row_order", lambda prefix, row: f"{prefix}-{row:015d}")
    starts = _run(tmp_path, "threads")
    for which in (1, 2):
        rows = [n for p, s, n in starts.seen if p == which and s == "x"]  # the rows, here
        assert len(rows) == 40 and rows != sorted(rows)


def test_row_order_keys_count_down() -> None:
    assert compute.row_order("p", 0) > compute.row_order("p", 1) > compute.row_order("p", 10**9)
    assert compute.row_order("p", 5) == f"p-{compute.ROW_KEY_TOP - 5:015d}"
    assert np.iinfo(np.int64).max > compute.ROW_KEY_TOP
