"""Project one block of rows through one side of a model: one GEMM, float32 out; and the
check that names the first NaN or infinite input. Pure numpy."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import InvalidValueError
from .model import SideMap

__all__ = ["TILE", "aligned_product", "check_finite", "project_block", "project_pieces",
           "sketch_valid"]

#: Rows of one product in ``aligned_product``.
TILE = 1024


def check_finite(block: np.ndarray, where: str, row0: int) -> np.ndarray:
    """Raise ``InvalidValueError`` naming the first row of ``block`` holding NaN or inf;
    return the block's float64 column sums (reused by the statistics).

    Cheap on clean data: a float64 column sum is finite exactly when every value is
    (float32 sums cannot overflow float64); only a failing block is searched row by row.
    """
    colsum = np.asarray(np.sum(block, axis=0, dtype=np.float64))
    if np.isfinite(colsum).all():
        return colsum
    bad_rows = np.flatnonzero(~np.isfinite(block).all(axis=1))
    if bad_rows.size == 0:
        raise InvalidValueError(
            f"{where}: values near row {row0} are so large that their sum overflows float64; "
            "rescale the data"
        )
    row = int(bad_rows[0])
    col = int(np.flatnonzero(~np.isfinite(block[row]))[0])
    raise InvalidValueError(
        f"{where}: row {row0 + row} column {col} is {float(block[row, col])} "
        f"({bad_rows.size} rows in rows {row0}..{row0 + len(block) - 1} are not finite); "
        "remove or impute them before sketching", row=row0 + row
    )


def project_block(block: np.ndarray, side: SideMap, where: str = "input",
                  row0: int = 0, overwrite_input: bool = False) -> np.ndarray:
    """Sketch the rows of ``block`` (float32 or float64, shape (rows, d)) as float32 (rows, k).

    The product runs in the block's dtype on rows shifted by the side's mean (see
    ``ddrp_dask.model``), a tile at a time (``aligned_product``: the block is neither copied
    nor changed); the offset is added in that dtype. A sketch value that does not fit
    float32 raises ``InvalidValueError`` rather than storing infinity, and so does a NaN or
    infinite input, named like ``check_finite`` names it. ``overwrite_input`` is accepted
    for compatibility and has no effect (the shift no longer needs a copy of the block).
    """
    del overwrite_input
    return project_pieces([block], side, where, row0)


def project_pieces(pieces: Sequence[np.ndarray], side: SideMap, where: str = "input",
                   row0: int = 0) -> np.ndarray:
    """``project_block`` of the concatenation of ``pieces`` (same dtype and d, in row order,
    the first row's global index ``row0``), with the same bytes, without concatenating them
    (``Source.read_pieces``: views of chunks shared with other blocks)."""
    dtype = pieces[0].dtype
    shift = side.shift.astype(dtype)
    with np.errstate(over="ignore", invalid="ignore"):  # checked below, with a clear error
        out = aligned_product(pieces, side.matrix.astype(dtype), row0, shift)
        out += side.effective_offset(dtype).astype(dtype)
        result = out.astype(np.float32)
    if not np.isfinite(result).all():
        # NaN and inf inputs make non-finite sketches (x·0 is NaN for them): name the first
        # such row as check_finite would
        block = pieces[0] if len(pieces) == 1 else np.concatenate(pieces)
        check_finite(block, where, row0)
        bad = int(np.flatnonzero(~np.isfinite(result).all(axis=1))[0])
        magnitude = float(np.max(np.abs(block[bad].astype(np.float64))))
        raise InvalidValueError(
            f"{where}: the sketch of row {row0 + bad} overflows float32 (inputs of magnitude "
            f"{magnitude:.3g}); rescale the data", row=row0 + bad
        )
    return result


def aligned_product(a: np.ndarray | Sequence[np.ndarray], m: np.ndarray, row0: int,
                    shift: np.ndarray | None = None) -> np.ndarray:
    """``(a − shift) @ m`` for rows whose first global index is ``row0``, computed in
    products of ``TILE`` rows aligned to the global row index: every row is multiplied at the
    same place of a product of the same shape, whatever block, row group or file it was read
    in, so its bytes do not depend on the cut (BLAS kernels round differently for other
    shapes and edges). Partial tiles are zero-padded. ``a`` may be pieces in row order (the
    bytes of their concatenation). The shift is subtracted tile by tile into one scratch
    tile: the values of shifting the whole block first, without a second pass over it."""
    pieces = [a] if isinstance(a, np.ndarray) else list(a)
    starts = np.cumsum([row0] + [len(p) for p in pieces])  # global first row of each piece
    n = int(starts[-1]) - row0
    out = np.empty((n, m.shape[1]), dtype=np.result_type(pieces[0], m))
    tile = np.empty((TILE, pieces[0].shape[1]), dtype=pieces[0].dtype)
    for t0 in range(row0 - row0 % TILE, row0 + n, TILE):
        lo, hi = max(t0, row0), min(t0 + TILE, row0 + n)
        parts = [(int(g), p[max(lo - g, 0):hi - g])
                 for g, p in zip(starts[:-1], pieces, strict=True) if g < hi and g + len(p) > lo]
        full = lo == t0 and hi == t0 + TILE
        if full and shift is None and len(parts) == 1:
            out[lo - row0:hi - row0] = parts[0][1] @ m
            continue
        if not full:
            tile[...] = 0
        for g, rows in parts:
            dest = tile[max(g, lo) - t0:max(g, lo) - t0 + len(rows)]
            if shift is None:
                dest[...] = rows
            else:
                np.subtract(rows, shift, out=dest)
        out[lo - row0:hi - row0] = (tile @ m)[lo - t0:hi - t0]
    return out


def sketch_valid(block: np.ndarray, bad: np.ndarray, side_map: SideMap, where: str,
                 row0: int, overwrite_input: bool = False) -> np.ndarray:
    """The block's sketches, with NaN rows for the invalid (skipped) rows (projected as zero
    rows, so the valid rows keep their place in the product). ``overwrite_input``: zero
    them in the task's own block rather than in a copy."""
    if not bad.size:
        return project_block(block, side_map, where, row0)
    rows = block if overwrite_input and block.flags.writeable else block.copy()
    rows[bad] = 0
    out = project_block(rows, side_map, where, row0)
    out[bad] = np.nan
    return out
