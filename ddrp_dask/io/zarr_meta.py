"""What a Zarr array's metadata says, read once when a source is opened: its format (2 or 3,
recognised by its metadata files), the keys of the objects it stores (chunks, or shards) and
which are absent, its codecs, and CF packing (``scale_factor``, ``add_offset``,
``_FillValue``, ``missing_value``: xarray's compact storage). No Dask, no reading of chunks.
"""

from __future__ import annotations

import base64
import itertools
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["Absent", "Packing", "absent_objects", "codecs_of", "object_key", "object_rows",
           "packing_of", "zarr_format_at"]


def zarr_format_at(fs: Any, inner: str) -> int | None:
    """3 for a Zarr v3 node (``zarr.json``), 2 for a Zarr v2 array or group (``.zarray``,
    ``.zgroup``), None for anything else: a format is recognised by its metadata."""
    root = inner.rstrip("/")
    if fs.exists(f"{root}/zarr.json"):
        return 3
    if fs.exists(f"{root}/.zarray") or fs.exists(f"{root}/.zgroup"):
        return 2
    return None


def object_rows(arr: Any) -> int:
    """Rows of one stored object: a shard's for a sharded array, else a chunk's."""
    shards = getattr(arr, "shards", None)
    return int(shards[0] if shards is not None else arr.chunks[0])


def object_key(arr: Any, coords: tuple[int, ...]) -> str:
    """The store key of the chunk (or shard) at grid position ``coords``, in either format."""
    meta = arr.metadata
    if arr.metadata.zarr_format == 2:
        return str(meta.dimension_separator or ".").join(map(str, coords))
    return str(meta.chunk_key_encoding.encode_chunk_key(coords))


def _grid(arr: Any) -> Iterator[tuple[int, ...]]:
    shape = getattr(arr, "shards", None) or arr.chunks
    return itertools.product(*(range(-(-n // c)) for n, c in zip(arr.shape, shape,
                                                                  strict=True)))


@dataclass(frozen=True)
class Absent:
    """The stored objects of an array that are absent: how many, the first one's key and
    first row, what one is (``chunk`` or ``shard``) and all their keys."""

    count: int = 0
    first_key: str = ""
    first_row: int = 0
    what: str = "chunk"
    keys: frozenset[str] = frozenset()


def absent_objects(arr: Any, fs: Any, inner: str) -> Absent:
    """The chunks (shards, for a sharded array) of ``arr`` at ``inner`` that no file holds:
    zarr-python does not write one that is all fill value (``write_empty_chunks=False``),
    and by the Zarr specification an absent chunk reads as the fill value. One listing."""
    root = inner.rstrip("/")
    stored = {f[len(root) + 1:] for f in fs.find(root)}
    what = "shard" if getattr(arr, "shards", None) is not None else "chunk"
    missing = [c for c in _grid(arr) if object_key(arr, c) not in stored]
    if not missing:
        return Absent(what=what)
    first = missing[0]
    return Absent(len(missing), object_key(arr, first), first[0] * object_rows(arr), what,
                  frozenset(object_key(arr, c) for c in missing))


def codecs_of(arr: Any) -> str:
    """The array's codecs in order, by name (filters, serializer, compressors)."""
    names = []
    for part in ("filters", "serializer", "compressors"):
        value = getattr(arr, part, None)
        for codec in value if isinstance(value, tuple) else (value,):
            if codec is not None:
                names.append(_codec_name(codec))
    return "+".join(names) if names else "none"


def _codec_name(codec: Any) -> str:
    name = getattr(codec, "codec_id", None)
    if name is None:
        name = codec.to_dict().get("name", type(codec).__name__)
    return str(name)


@dataclass(frozen=True)
class Packing:
    """CF packing of an array: the values are ``stored * scale + offset`` (in float64, as
    xarray decodes them), and stored values in ``missing`` (``_FillValue``,
    ``missing_value``; never NaN, which is invalid anyway) are missing: invalid values,
    under ``--on-invalid``."""

    scale: float | None = None
    offset: float | None = None
    missing: tuple[float, ...] = ()

    def decode(self, raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The float64 values of ``raw`` and the mask of its missing values (which are NaN)."""
        mask = np.zeros(raw.shape, dtype=bool)
        for m in self.missing:
            mask |= raw == m
        values = raw.astype(np.float64)
        if self.scale is not None:
            values *= self.scale
        if self.offset is not None:
            values += self.offset
        values[mask] = np.nan
        return values, mask

    def describe(self) -> str:
        """E.g. ``packed: stored * 0.001 + 0.5, missing -32768``."""
        parts = ["stored"]
        if self.scale is not None:
            parts.append(f"* {self.scale:g}")
        if self.offset is not None:
            parts.append(f"+ {self.offset:g}")
        text = "packed: " + " ".join(parts) if len(parts) > 1 else "masked"
        if self.missing:
            text += ", missing " + ", ".join(f"{m:g}" for m in self.missing)
        return text

    def facts(self) -> dict[str, Any]:
        """For the source's fingerprint."""
        return {"scale_factor": self.scale, "add_offset": self.offset,
                "missing": list(self.missing)}


def packing_of(arr: Any) -> Packing | None:
    """The CF packing xarray would decode on reading ``arr``, or None. ``_FillValue`` and
    ``missing_value`` are taken from the attributes (xarray writes a float ``_FillValue`` of
    format 3 as base64 of its bytes); a format 2 array's ``fill_value`` is its
    ``_FillValue`` when it is packed (xarray stores it there)."""
    attrs = dict(arr.attrs)
    scale, offset = attrs.get("scale_factor"), attrs.get("add_offset")
    missing: list[float] = []
    fill = attrs.get("_FillValue")
    if fill is None and arr.metadata.zarr_format == 2 and (scale is not None
                                                            or offset is not None):
        fill = arr.metadata.fill_value
    for value in (fill, attrs.get("missing_value")):  # NaN is invalid anyway: no mask
        missing += [m for m in _numbers(value) if m not in missing and not np.isnan(m)]
    if scale is None and offset is None and not missing:
        return None
    return Packing(None if scale is None else float(scale),
                   None if offset is None else float(offset), tuple(missing))


def _numbers(value: Any) -> list[float]:
    """A ``_FillValue``/``missing_value`` attribute as floats (scalar, list, or base64)."""
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return [x for v in value for x in _numbers(v)]
    if isinstance(value, str):
        if value in ("NaN", "Infinity", "-Infinity"):  # Zarr's JSON spelling
            return [float(value)]
        try:
            raw = base64.standard_b64decode(value)
        except ValueError:
            return []
        return [struct.unpack("<d" if len(raw) == 8 else "<f", raw)[0]] \
            if len(raw) in (4, 8) else []
    return [float(value)]
