"""Save and load a ``SketchModel`` as a Zarr v3 group (no pickle).

The group's attributes hold the metadata, the format version and a SHA-256 of every array's
bytes; loading refuses another format version or a changed array. Its arrays carry dimension
names (``feature``, ``component``) and its metadata is consolidated, so ``xarray.open_zarr``
opens it as one dataset.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

from ..errors import ModelError
from ..maths.model import MAP_ARRAYS, SideMap, SketchModel, array_digest
from ..maths.stats import Moments
from .writer import ArraySpec, consolidate, create_array

__all__ = ["FORMAT", "FORMAT_VERSION", "load_model", "save_model"]

FORMAT = "ddrp-model"
FORMAT_VERSION = 1


def save_model(model: SketchModel, path: str | os.PathLike[str]) -> None:
    """Write ``model`` as a Zarr v3 group at ``path`` (which must not exist)."""
    import zarr

    # the group appears with its marks in one write: an interrupted save is always a
    # recognisable incomplete model, never a bare group
    group = zarr.open_group(str(path), mode="w-",
                            attributes={"format": FORMAT, "complete": False})
    arrays = {f"{side}_{name}": getattr(model.side(side), name)
              for side in ("x", "w") for name in MAP_ARRAYS}
    counts = {}
    for side, m in (("x", model.stats_x), ("w", model.stats_w)):
        if m is not None:
            arrays[f"{side}_stats_mean"], arrays[f"{side}_stats_scatter"] = m.mean, m.scatter
            counts[side] = m.n
    checksums = {}
    for key, value in arrays.items():
        a = np.ascontiguousarray(value, dtype="<f8")
        arr = create_array(group, ArraySpec(key, a.shape, "<f8", a.shape, _dims(key), "none"))
        arr[...] = a
        checksums[key] = array_digest(a)
    group.attrs.update({
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "method": model.method,
        "k": model.k,
        "d": model.d,
        "seed": model.seed,
        "info": _jsonable(model.info),
        "provenance": _jsonable(model.provenance),
        "stats_n": counts,
        "checksums": checksums,
        "complete": True,
    })
    consolidate(group)


#: The dimensions of a model's arrays (by the name after the side): ``feature`` (d) and
#: ``component`` (K), so that ``xarray.open_zarr`` opens a model as one dataset; the scatter
#: matrix's second axis has a name of its own (a variable's dimensions must differ).
_DIMS = {"matrix": ("feature", "component"), "offset": ("component",), "shift": ("feature",),
         "stats_mean": ("feature",), "stats_scatter": ("feature", "feature_2")}


def _dims(key: str) -> tuple[str, ...]:
    """Dimension names of the model array ``key`` (``x_matrix``, ``w_stats_mean``, ...)."""
    return _DIMS[key.split("_", 1)[1]]


def load_model(path: str | os.PathLike[str]) -> SketchModel:
    """Read a model written by ``save_model``; refuse other versions and changed arrays."""
    import zarr

    spath = str(path)
    try:
        # the stored nodes themselves, not the consolidated snapshot: a changed model shows
        group = zarr.open_group(spath, mode="r", use_consolidated=False)
        attrs: dict[str, Any] = dict(group.attrs)
    except Exception as e:
        raise ModelError(f"{spath}: not a ddrp model ({e})") from e
    if attrs.get("format") != FORMAT:
        raise ModelError(f"{spath}: not a ddrp model (no 'format: {FORMAT}' attribute)")
    if attrs.get("complete") is not True:
        raise ModelError(f"{spath}: the model was not completely written (an interrupted "
                         "save); fit it again")
    version = attrs.get("format_version")
    if version != FORMAT_VERSION:
        raise ModelError(f"{spath}: model format version {version!r}; this ddrp reads version "
                         f"{FORMAT_VERSION}; refit the model with this version")
    checksums = attrs.get("checksums", {})
    if set(checksums) != set(group.array_keys()):
        raise ModelError(f"{spath}: arrays {sorted(group.array_keys())} do not match the saved "
                         f"list {sorted(checksums)}; the model was changed after it was saved")
    arrays = {key: _checked_array(group, key, checksums[key], spath) for key in checksums}
    sides = {side: SideMap(*(arrays.get(f"{side}_{name}") for name in MAP_ARRAYS))  # type: ignore[arg-type]
             for side in ("x", "w")}
    stats = {side: Moments(int(n), arrays[f"{side}_stats_mean"], arrays[f"{side}_stats_scatter"])
             for side, n in attrs.get("stats_n", {}).items()}
    try:
        model = SketchModel(attrs["method"], int(attrs["k"]), int(attrs["d"]),
                            int(attrs["seed"]), sides["x"], sides["w"], attrs.get("info", {}),
                            attrs.get("provenance", {}), stats.get("x"), stats.get("w"))
    except KeyError as e:
        raise ModelError(f"{spath}: model attribute {e} is missing") from e
    for sm in (model.x, model.w):
        if sm.matrix is None or sm.offset is None or sm.shift is None:
            raise ModelError(f"{spath}: the projection arrays are incomplete")
        if sm.matrix.shape != (model.d, model.k) or sm.offset.shape != (model.k,) \
                or sm.shift.shape != (model.d,):
            raise ModelError(f"{spath}: array shapes do not match d={model.d}, k={model.k}")
    return model


def _checked_array(group: Any, key: str, digest: str, where: str) -> np.ndarray:
    """One float64 array of the model, refused unless its SHA-256 matches."""
    try:
        a = np.asarray(group[key][...], dtype=np.float64)
    except Exception as e:
        raise ModelError(f"{where}: array {key!r} is missing or unreadable ({e})") from e
    if array_digest(a) != digest:
        raise ModelError(f"{where}: array {key!r} does not match its checksum; the model was "
                         "changed or damaged after it was saved")
    return a


def _jsonable(obj: Any) -> Any:
    """Round-trip through JSON so numpy scalars and tuples become plain types."""
    return json.loads(json.dumps(obj, default=_to_builtin))


def _to_builtin(o: Any) -> Any:
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, np.generic):
        return o.item()
    raise TypeError(f"{type(o).__name__} is not JSON serialisable")

