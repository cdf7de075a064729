"""Independent numpy references for tests: whole-array statistics and sketches in float64."""

from __future__ import annotations

import numpy as np

from .maths.model import SketchModel

__all__ = ["reference_covariance", "reference_mean", "reference_sketch"]


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
