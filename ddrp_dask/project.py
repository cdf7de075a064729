"""Project one block of rows through one side of a model: one GEMM, float32 out. Pure numpy."""

from __future__ import annotations

import numpy as np

from .errors import InvalidValueError
from .model import SideMap

__all__ = ["project_block", "sketch_valid"]


def project_block(block: np.ndarray, side: SideMap, where: str = "input",
                  row0: int = 0) -> np.ndarray:
    """Sketch the rows of ``block`` (float32 or float64, shape (rows, d)) as float32 (rows, k).

    The product runs in the block's dtype on rows shifted by the side's mean (see
    ``ddrp_dask.model``); the offset is added in that dtype. A sketch value that does not fit
    float32 raises ``InvalidValueError`` rather than storing infinity.
    """
    dtype = block.dtype
    shifted = block - side.shift.astype(dtype)
    out = shifted @ side.matrix.astype(dtype)
    out += side.effective_offset(dtype).astype(dtype)
    result = out.astype(np.float32)
    if not np.isfinite(result).all():
        bad = int(np.flatnonzero(~np.isfinite(result).all(axis=1))[0])
        raise InvalidValueError(
            f"{where}: the sketch of row {row0 + bad} overflows float32 (inputs of magnitude "
            f"{float(np.max(np.abs(block[bad]))):.3g}); rescale the data"
        )
    return result


def sketch_valid(block: np.ndarray, bad: np.ndarray, side_map: SideMap, where: str,
                 row0: int) -> np.ndarray:
    """The block's sketches, with NaN rows for the invalid (skipped) rows."""
    if not bad.size:
        return project_block(block, side_map, where, row0)
    good = np.setdiff1d(np.arange(len(block)), bad)
    out = np.full((len(block), side_map.matrix.shape[1]), np.nan, dtype=np.float32)
    out[good] = project_block(block[good], side_map, where, row0)
    return out
