"""Parquet reading inside ddrp against a plain pyarrow read of the same dataset.

Two layouts of the same float32 rows: one ``fixed_size_list<float32>[d]`` column, and d
scalar float32 columns. Both are read row group by row group into an (n, d) numpy array:
plain pyarrow (``ParquetFile.read_row_group`` + conversion), and ddrp's ``Source.read_rows``
over its canonical blocks (what every pass-1 and pass-2 task does). One thread, one process,
alternating runs, best of ``--repeat``; the target is ddrp ≥ 80 % of pyarrow.

    python benchmarks/read_parquet.py [--rows 1000000] [--d 256] [--repeat 3]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from benchlib import OUT, load
from threadpoolctl import threadpool_limits

import ddrp_dask as dd


def write_layouts(root: Path, rows: int, d: int, row_group: int) -> dict[str, Path]:
    """Write the two layouts (once) and return their paths."""
    root.mkdir(parents=True, exist_ok=True)
    paths = {layout: root / f"{layout}-{rows}x{d}.parquet" for layout in ("list", "scalars")}
    if all(p.exists() for p in paths.values()):
        return paths
    rng = np.random.default_rng(0)
    schema_list = pa.schema([("vec", pa.list_(pa.float32(), d))])
    schema_scalars = pa.schema([(f"f{j}", pa.float32()) for j in range(d)])
    with pq.ParquetWriter(paths["list"], schema_list, use_dictionary=False) as wl, \
            pq.ParquetWriter(paths["scalars"], schema_scalars, use_dictionary=False) as ws:
        for start in range(0, rows, row_group):
            n = min(row_group, rows - start)
            block = rng.standard_normal((n, d), dtype=np.float32)
            wl.write_table(pa.table({"vec": pa.FixedSizeListArray.from_arrays(
                pa.array(block.ravel()), d)}, schema=schema_list))
            ws.write_table(pa.table({f"f{j}": block[:, j] for j in range(d)},
                                    schema=schema_scalars))
    return paths


def plain_pyarrow(path: Path) -> float:
    """Read every row group with pyarrow into one (n, d) float32 array per group."""
    pf = pq.ParquetFile(path, pre_buffer=False)
    total = 0.0
    for g in range(pf.metadata.num_row_groups):
        table = pf.read_row_group(g)
        if table.num_columns == 1:
            col = table.column(0).combine_chunks()
            d = col.type.list_size
            arr = np.asarray(col.flatten().to_numpy()).reshape(-1, d)
        else:
            arr = np.column_stack([c.to_numpy() for c in table.columns])
        total += float(arr[0, 0])
    return total


def ddrp_read(path: Path) -> float:
    """Read every canonical block with ddrp's reader."""
    src = dd.open_source(str(path))
    b = dd.io.default_block_rows(src.d)
    total = 0.0
    for start in range(0, src.n_rows, b):
        arr = src.read_rows(start, min(start + b, src.n_rows))
        total += float(arr[0, 0])
    return total


def best_time(fn: Callable[[Path], float], path: Path) -> float:
    """Wall time of one call."""
    t = time.perf_counter()
    fn(path)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--d", type=int, default=256)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--scratch", default=str(OUT / "parquet"))
    args = ap.parse_args()
    block = dd.io.default_block_rows(args.d)
    paths = write_layouts(Path(args.scratch), args.rows, args.d, block)
    mb = args.rows * args.d * 4 / 1e6
    print(f"{args.rows} x {args.d} float32 ({mb:.0f} MB), row groups of {block} rows, "
          f"load {load():.1f}")
    print(f"{'layout':<10}{'pyarrow MB/s':>14}{'ddrp MB/s':>12}{'ddrp/pyarrow':>14}")
    with threadpool_limits(limits=1):
        for layout, path in paths.items():
            times: dict[str, list[float]] = {"pyarrow": [], "ddrp": []}
            for _ in range(args.repeat):  # alternate, so load drifts hit both alike
                times["pyarrow"].append(best_time(plain_pyarrow, path))
                times["ddrp"].append(best_time(ddrp_read, path))
            pa_rate, dd_rate = mb / min(times["pyarrow"]), mb / min(times["ddrp"])
            verdict = "ok" if dd_rate >= 0.8 * pa_rate else "BELOW 80%"
            print(f"{layout:<10}{pa_rate:>14.0f}{dd_rate:>12.0f}{dd_rate / pa_rate:>13.2f}  "
                  f"{verdict}")


if __name__ == "__main__":
    main()
