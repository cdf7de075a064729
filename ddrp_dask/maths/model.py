"""The fitted sketch model: the two sides' affine maps and what the build learned.

A model maps a row ``v`` of either side to its sketch by one affine map

    sketch(v) = (v − shift) @ matrix + (offset + shift @ matrix)

``matrix`` (d, k), ``offset`` (k,) and ``shift`` (d,) are float64. The shift is the side's
mean: subtracting it before the float32 product keeps the product accurate when the mean is
far larger than the spread. Every method (auto's mean columns included) fits this form, so
projecting is one GEMM per block.

``ddrp_dask.io.model_store`` saves and loads it (a Zarr group, no pickle).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .stats import Moments

__all__ = ["MAP_ARRAYS", "SideMap", "SketchModel", "array_digest"]

#: The arrays of one side's map, in the order ``SideMap`` takes them.
MAP_ARRAYS = ("matrix", "offset", "shift")


def array_digest(a: np.ndarray) -> str:
    """SHA-256 of an array's little-endian float64 bytes."""
    return hashlib.sha256(np.ascontiguousarray(a, dtype="<f8").tobytes()).hexdigest()


@dataclass(frozen=True)
class SideMap:
    """The affine map of one side: ``sketch = (v − shift) @ matrix + offset + shift @ matrix``."""

    matrix: np.ndarray
    offset: np.ndarray
    shift: np.ndarray

    def effective_offset(self, dtype: np.dtype[Any]) -> np.ndarray:
        """``offset + shift @ matrix`` with the shift rounded as it is applied to ``dtype``."""
        shift = self.shift.astype(dtype).astype(np.float64)
        return self.offset + shift @ self.matrix


@dataclass(frozen=True)
class SketchModel:
    """A fitted projection pair and what the build learned.

    Attributes
    ----------
    method : str
    k : int
        Stored columns per row, every one of them counted.
    d : int
    seed : int
    x, w : SideMap
        The maps of the two sides.
    info : dict
        JSON-serialisable build facts: ``r`` (exact head columns), ``k_tail``, ``sigma``,
        ``shrinkage_x``/``shrinkage_w``, ``n_x``/``n_w``, ``predicted`` MSEs and ``gain``.
    provenance : dict
        Inputs' fingerprints, package versions, block rows.
    stats_x, stats_w : Moments or None
        The statistics the model was built from, so that other methods can be built, and
        their accuracy predicted, later without a pass over the data.
    """

    method: str
    k: int
    d: int
    seed: int
    x: SideMap
    w: SideMap
    info: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    stats_x: Moments | None = field(default=None, repr=False)
    stats_w: Moments | None = field(default=None, repr=False)

    def side(self, name: str) -> SideMap:
        """The map of side ``"x"`` or ``"w"``."""
        if name not in ("x", "w"):
            raise ValueError(f"side must be 'x' or 'w', got {name!r}")
        return self.x if name == "x" else self.w

    @property
    def digest(self) -> str:
        """The model's identity: a digest of its method, K, d, seed and both sides' maps.
        Sketches made by two models combine only when their digests are equal."""
        parts = [f"{self.method}|{self.k}|{self.d}|{self.seed}"]
        parts += [array_digest(getattr(self.side(s), name)) for s in ("x", "w")
                  for name in MAP_ARRAYS]
        return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]
