"""Quantized sketches on disk (``docs/quantized.md`` §5): which arrays or columns hold the
codes and scales of a layout, the values a block writes, and ``CodesSource``, which reads
them back as decoded float32 sketch rows (so ``matmul``, top-N and any reader of sketches
need nothing else).

Zarr, for a sketch array named ``A`` (``x``, ``w``, ``sketch``):

* ``float16`` / ``int8``: ``A`` holds the codes (rows × K, float16 / int8) and ``A_scale``
  the per-row scale codes (rows × 1: int8 exponents for float16 codes, int16 log codes for
  int8 codes, ``maths.quantize``);
* ``mixed``: ``A`` holds the float16 head codes (rows × h) with ``A_scale`` (int8),
  ``A_tail`` the int8 codes (rows × (K − h)) with ``A_tail_scale`` (int16);
* ``int8max`` / ``mixedmax``: as ``int8`` / ``mixed``, the int8 codes' scale float32 (s8
  itself, the row's max).

``A`` carries the attribute ``ddrp_layout`` (``{"name", "k", "head"}``). Parquet: the column
``sketch`` (``fixed_size_list`` of float16 or int8) with ``scale`` (int8, int16 or float32),
and for the mixed layouts ``sketch_tail`` with ``scale_tail`` (int16 or float32); every
file's key-value metadata carries ``ddrp_layout``. float32 sketches are stored as before
(``A`` alone, column ``sketch``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..maths.quantize import (
    WIDE_SCALE_DTYPE,
    Codes,
    Layout,
    decode,
    encode,
    layout_of,
)
from .source import Source

__all__ = [
    "LAYOUT_KEY",
    "CodesSource",
    "Part",
    "block_arrays",
    "parquet_columns",
    "part_values",
    "parts",
    "zarr_codes",
]

#: The attribute / key-value metadata naming a quantized sketch's layout.
LAYOUT_KEY = "ddrp_layout"


@dataclass(frozen=True)
class Part:
    """One kind of code of a layout: its columns ``lo:hi`` of the sketch, the suffix of its
    arrays (Zarr) or columns (Parquet), the numpy dtype of its scale codes (the layout's) and
    of its codes."""

    kind: str
    lo: int
    hi: int
    suffix: str
    scale_dtype: str

    @property
    def dtype(self) -> str:
        return "float16" if self.kind == "f16" else "int8"

    @property
    def width(self) -> int:
        return self.hi - self.lo


def parts(layout: Layout) -> list[Part]:
    """The stored parts of a quantized layout, the first without a suffix; [] for float32."""
    if layout.name == "float32":
        return []
    narrow = layout.narrow_scale_dtype.name
    found = [Part(kind, lo, hi, "", scale) for kind, lo, hi, scale in
             (("f16", 0, layout.wide, WIDE_SCALE_DTYPE.name),
              ("i8", layout.wide, layout.k, narrow)) if hi > lo]
    if len(found) == 2:
        found[1] = Part("i8", layout.wide, layout.k, "_tail", narrow)
    return found


def part_values(codes: Codes, part: Part) -> tuple[np.ndarray, np.ndarray]:
    """The codes (rows × width) and scale codes (rows × 1, ``part.scale_dtype``) one part
    stores."""
    if part.kind == "f16":
        return codes.wide, codes.wide_scale[:, None]
    return codes.narrow, codes.narrow_scale[:, None]


def zarr_codes(array: str, rows: int, layout: Layout) -> dict[str, tuple[int, int, str]]:
    """The Zarr arrays of a quantized sketch named ``array``: name → (rows, columns, dtype);
    {} for float32 (the sketch array alone)."""
    out = {}
    for part in parts(layout):
        out[array + part.suffix] = (rows, part.width, part.dtype)
        out[f"{array}{part.suffix}_scale"] = (rows, 1, part.scale_dtype)
    return out


def block_arrays(array: str, sketch: np.ndarray, layout: Layout, seed: int, side: str,
                 row0: int | np.ndarray) -> dict[str, np.ndarray]:
    """What a block of sketch rows stores, by Zarr array name: ``{array: sketch}`` for
    float32, else each part's codes and ``(rows, 1)`` scales (``encode``; the dither keyed by
    the model's ``seed``, the ``side`` and each row's global index)."""
    if layout.name == "float32":
        return {array: sketch}
    codes = encode(sketch, layout, seed, side, row0)
    out = {}
    for part in parts(layout):
        out[array + part.suffix], out[f"{array}{part.suffix}_scale"] = part_values(codes, part)
    return out


def parquet_columns(sketch: np.ndarray, layout: Layout, seed: int, side: str,
                    rows: np.ndarray) -> dict[str, Any]:
    """The Parquet columns of sketch rows (global indices ``rows``): ``sketch`` as a
    ``fixed_size_list<float32>[K]`` for float32, else each part's ``sketch<suffix>``
    (fixed-size list of float16 / int8 codes) and ``scale<suffix>`` (int8 / int16 scale
    codes)."""
    import pyarrow as pa

    def fixed(values: np.ndarray) -> Any:
        return pa.FixedSizeListArray.from_arrays(pa.array(np.ascontiguousarray(values).ravel()),
                                                 values.shape[1])

    if layout.name == "float32":
        return {"sketch": fixed(sketch)}
    codes = encode(sketch, layout, seed, side, rows)
    out = {}
    for part in parts(layout):
        values, scales = part_values(codes, part)
        out[f"sketch{part.suffix}"] = fixed(values)
        out[f"scale{part.suffix}"] = pa.array(scales[:, 0])
    return out


@dataclass(frozen=True)
class CodesSource(Source):
    """Decoded float32 rows (rows × K) of a quantized sketch, from the sources of its codes
    and scales: one ``(codes, scales)`` pair of sources per ``Part`` of the layout."""

    kind = "codes"

    layout_json: str = "{}"
    pieces: tuple[tuple[Source, Source], ...] = field(default=(), compare=False)

    @property
    def layout(self) -> Layout:
        found = layout_of(json.loads(self.layout_json))
        assert found is not None
        return found

    def _read(self, start: int, stop: int, as_nan: bool) -> np.ndarray:
        layout = self.layout
        n = stop - start
        empty = Codes(np.zeros((n, 0), np.float16), np.zeros(n, WIDE_SCALE_DTYPE),
                      np.zeros((n, 0), np.int8), np.zeros(n, layout.narrow_scale_dtype))
        got = {"wide": empty.wide, "wide_scale": empty.wide_scale, "narrow": empty.narrow,
               "narrow_scale": empty.narrow_scale}
        for part, (codes, scales) in zip(parts(layout), self.pieces, strict=True):
            values = codes.read_rows(start, stop).astype(part.dtype)  # exact: the codes are
            scale = scales.read_rows(start, stop)[:, 0].astype(part.scale_dtype)  # exact too
            key = "wide" if part.kind == "f16" else "narrow"
            got[key], got[f"{key}_scale"] = values, scale
        return decode(Codes(**got), layout)

    def read_column(self, name: str, start: int, stop: int, what: str = "column") -> np.ndarray:
        return self.pieces[0][0].read_column(name, start, stop, what)

    @property
    def id_dtype(self) -> str | None:
        return self.pieces[0][0].id_dtype

    def _fingerprint_extra(self) -> dict[str, Any]:
        return {"layout": json.loads(self.layout_json)}

    def _describe_extra(self) -> str:
        layout = self.layout
        return f" (decoded from {layout.name} codes, {layout.bytes_per_row} bytes per row)"
