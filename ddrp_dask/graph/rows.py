"""What a block task does with its rows: read them validated, or sketch them (pass 2).

``io`` only reads and writes; the checks for NaN and inf and the sketching of rows are the
maths' (``maths.project``), and this module joins the two for the tasks of ``graph.passes``.
"""

from __future__ import annotations

import numpy as np

from ..io.source import Given, Source, locating
from ..maths.model import SideMap
from ..maths.project import check_finite, project_pieces, sketch_valid

__all__ = ["invalid_mode", "read_valid", "sketch_rows"]


def read_valid(src: Source, start: int, stop: int, where: str, skip: bool,
               check: bool = True, given: Given = ()
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Rows ``start:stop``, the in-block indices of invalid ones (NaN, inf, null, wrong
    length) — an error naming the row, or with ``skip`` an index list (the rows are NaN) —
    and the block's float64 column sums when every row is valid (else None).

    ``check=False`` (without ``skip``) leaves NaN and inf to the caller and returns no sums:
    ``maths.project.project_block`` finds them afterwards, through the non-finite sketches
    they make, and raises the same error; this saves a pass over the block.
    """
    block = src.read_rows(start, stop, invalid_mode(skip), given)
    none = np.zeros(0, dtype=np.int64)
    if not skip:
        with locating(src):
            return block, none, check_finite(block, where, start) if check else None
    colsum = np.asarray(np.sum(block, axis=0, dtype=np.float64))
    if np.isfinite(colsum).all():
        return block, none, colsum
    return block, np.flatnonzero(~np.isfinite(block).all(axis=1)), None


def invalid_mode(skip: bool) -> str:
    """``Source.read_rows``'s ``invalid`` for a pass that skips invalid rows or not."""
    return "nan" if skip else "error"


def sketch_rows(src: Source, start: int, stop: int, side_map: SideMap, where: str,
                skip: bool, given: Given = ()) -> tuple[np.ndarray, np.ndarray]:
    """Pass 2's sketches of rows ``start:stop`` (float32, NaN rows for skipped ones) and the
    in-block indices of the skipped rows. Without ``skip`` the rows are read as pieces
    (``Source.read_pieces``) and NaN or inf is found through the sketches it makes."""
    with locating(src):
        if skip:
            rows, bad, _ = read_valid(src, start, stop, where, skip, check=False, given=given)
            return sketch_valid(rows, bad, side_map, where, start,
                                overwrite_input=rows.flags.writeable), bad
        return (project_pieces(src.read_pieces(start, stop, given), side_map, where, start),
                np.zeros(0, dtype=np.int64))
