"""For tests and benchmarks: independent numpy references (whole-array statistics and
sketches in float64), and a count of the chunk decodes of a process (any cluster worker's
too: ``client.run(count_decodes)``)."""

from __future__ import annotations

import numpy as np

from .io import decodes
from .maths.model import SketchModel

__all__ = ["count_decodes", "decode_counts", "reference_covariance", "reference_mean",
           "reference_sketch"]


def count_decodes() -> None:
    """From now on, count every chunk decode of this process (``io.decodes``): each Zarr
    chunk the direct reader or zarr-python decodes, each Parquet row group read whole or
    streamed in parts. On a cluster: ``client.run(count_decodes)``."""
    decodes.start()


def decode_counts() -> dict[str, int]:
    """Decodes counted so far (``count_decodes``), by chunk: a Zarr chunk's path (its store
    path and chunk key), or ``"<Parquet file>#<row group>"``."""
    return decodes.counts()


def reference_mean(x: np.ndarray) -> np.ndarray:
    """Column means of the whole array in float64."""
    return np.asarray(x, dtype=np.float64).mean(axis=0)


def reference_covariance(x: np.ndarray) -> np.ndarray:
    """Centred scatter Σ(x − mean)(x − mean)ᵀ of the whole array in float64."""
    c = np.asarray(x, dtype=np.float64) - reference_mean(x)
    return c.T @ c


def reference_sketch(model: SketchModel, side: str, x: np.ndarray) -> np.ndarray:
    """The model's sketch of ``x`` computed directly in float64: x @ matrix + offset."""
    m = model.side(side)
    return np.asarray(x, dtype=np.float64) @ m.matrix + m.offset
