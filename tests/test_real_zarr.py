"""Zarr as other tools write it (issue 23): format 2 arrays and groups, xarray's stores,
absent chunks (zarr-python's ``write_empty_chunks=False``), CF-packed arrays — each read as
the same rows as the same data from .npy, sketched to the same bytes, and described in the
plan."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xarray as xr
import zarr
from click.testing import CliRunner

import ddrp_dask as dd
from ddrp_cli.main import cli
from ddrp_dask.errors import InputError, InvalidValueError
from ddrp_dask.io.registry import open_source

from .conftest import make_pair, sketch_bytes, write_npy

BLOCK = 512
CHUNK = 500


@pytest.fixture(scope="module")
def pair() -> tuple[np.ndarray, np.ndarray]:
    x, w = make_pair(n=2600, m=700, d=12, seed=5)
    x[1000:1500] = 0.0  # one whole chunk of the fill value: zarr-python does not write it
    return x, w


def _run(x: str, w: str, out: Path, **kw: Any) -> tuple[bytes, ...]:
    dd.execute(dd.plan_run(x, w, 4, str(out), seed=3, block_rows=BLOCK, **kw),
               scheduler="sync")
    return sketch_bytes(out, "zarr")


@pytest.fixture(scope="module")
def reference(pair: Any, tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, ...]:
    t = tmp_path_factory.mktemp("ref")
    x, w = pair
    return _run(write_npy(t / "x.npy", x), write_npy(t / "w.npy", w), t / "out")


def _zarr2_array(path: Path, a: np.ndarray) -> str:
    arr = zarr.create_array(str(path), shape=a.shape, dtype=a.dtype, chunks=(CHUNK, a.shape[1]),
                            zarr_format=2)
    arr[...] = a
    return str(path)


def _zarr2_group(path: Path, a: np.ndarray) -> str:
    g = zarr.open_group(str(path), mode="w", zarr_format=2)
    g.create_array("vectors", shape=a.shape, dtype=a.dtype, chunks=(CHUNK, a.shape[1]))[...] = a
    return str(path)


def _xarray(fmt: int, name: bool, coords: bool = False) -> Callable[[Path, np.ndarray], str]:
    def write(path: Path, a: np.ndarray) -> str:
        ds = xr.Dataset({"emb": (("row", "dim"), a)})
        if coords:
            ds = ds.assign_coords(row=np.arange(len(a)) * 7, dim=np.arange(a.shape[1]))
        ds.chunk({"row": CHUNK}).to_zarr(str(path), zarr_format=fmt, mode="w",
                                         consolidated=fmt == 2)
        return f"{path}/emb" if name else str(path)
    return write


WRITERS = {
    "zarr2-array": _zarr2_array,
    "zarr2-group": _zarr2_group,
    "xarray2-variable": _xarray(2, True),
    "xarray2-group": _xarray(2, False),
    "xarray2-with-coordinates": _xarray(2, False, coords=True),
    "xarray3-group": _xarray(3, False, coords=True),
}


@pytest.mark.parametrize("writer", WRITERS, ids=list(WRITERS))
def test_zarr_format_2_and_xarray_stores_sketch_like_npy(
        tmp_path: Path, pair: Any, reference: tuple[bytes, ...], writer: str) -> None:
    x, w = pair
    write = WRITERS[writer]
    xs, ws = write(tmp_path / "x.zarr", x), write(tmp_path / "w.zarr", w)
    src = open_source(xs)
    assert src.kind == "zarr" and np.array_equal(src.read_rows(0, len(x)), x)
    assert _run(xs, ws, tmp_path / "out") == reference


def test_format_is_recognised_by_its_metadata(tmp_path: Path, pair: Any) -> None:
    """A format 2 store is read as Zarr, not tried as Parquet (its chunk files are not);
    a directory of neither names both."""
    x, _ = pair
    src = open_source(_zarr2_array(tmp_path / "v2.zarr", x))
    assert "Zarr format 2" in src.describe() and src.fingerprint()["zarr_format"] == 2
    assert "Zarr format 3" in open_source(_xarray(3, True)(tmp_path / "v3.zarr", x)).describe()
    (tmp_path / "v2.zarr" / ".zarray").unlink()
    with pytest.raises(InputError, match="not a readable Parquet file"):
        open_source(str(tmp_path / "v2.zarr"))


def test_a_group_of_several_variables_names_them(tmp_path: Path, pair: Any) -> None:
    x, _ = pair
    xr.Dataset({"a": (("row", "dim"), x), "b": (("row", "dim"), x)}).to_zarr(
        str(tmp_path / "g.zarr"), zarr_format=2)
    with pytest.raises(InputError, match=r"arrays \['a', 'b'\]; name one, e\.g\. .*g\.zarr/a"):
        open_source(str(tmp_path / "g.zarr"))
    assert np.array_equal(open_source(str(tmp_path / "g.zarr/b")).read_rows(0, 10), x[:10])


# ---------------------------------------------------------------------------------------
# absent chunks


def _sharded(path: Path, a: np.ndarray) -> str:
    arr = zarr.create_array(str(path), shape=a.shape, dtype=a.dtype,
                            chunks=(CHUNK // 2, a.shape[1]), shards=(CHUNK, a.shape[1]))
    arr[...] = a
    return str(path)


def _plain(path: Path, a: np.ndarray) -> str:
    arr = zarr.create_array(str(path), shape=a.shape, dtype=a.dtype, chunks=(CHUNK, a.shape[1]))
    arr[...] = a
    return str(path)


@pytest.mark.parametrize("write, what", [(_plain, "chunk"), (_sharded, "shard"),
                                         (_zarr2_array, "chunk")],
                         ids=["v3", "sharded", "v2"])
def test_absent_chunks_read_as_the_fill_value(tmp_path: Path, pair: Any,
                                              reference: tuple[bytes, ...],
                                              write: Any, what: str) -> None:
    """zarr-python leaves the all-zero chunk unwritten; by the Zarr specification it reads
    as the fill value, so the array sketches like the .npy of the same rows, the plan says
    so, and ``strict_chunks`` refuses it naming the rows of the object absent (a shard's,
    not its inner chunks')."""
    x, w = pair
    xs = write(tmp_path / "x.zarr", x)
    src = open_source(xs)
    assert src.fingerprint()["absent_chunks"] == 1
    assert f"1 {what}(s) absent, read as fill value 0" in src.describe()
    assert np.array_equal(src.read_rows(0, len(x)), x)
    assert _run(xs, write_npy(tmp_path / "w.npy", w), tmp_path / "out") == reference
    key = {"chunk": "c/2/0", "shard": "c/2/0"}[what] if "zarr2" not in write.__name__ else "2.0"
    with pytest.raises(InputError, match=rf"x\.zarr: {what} {key} \(rows 1000\.\.1499\) is "
                                         r"missing, and Zarr would read it as the fill value"):
        open_source(xs, strict_chunks=True)


def test_absent_chunks_are_said_by_the_cli(tmp_path: Path, pair: Any) -> None:
    x, w = pair
    xs, ws = _plain(tmp_path / "x.zarr", x), write_npy(tmp_path / "w.npy", w)
    args = ["run", "--x", xs, "--w", ws, "-k", "4", "--scheduler", "sync", "--quiet",
            "--out", str(tmp_path / "out")]
    res = CliRunner().invoke(cli, [*args, "--dry-run"])
    assert res.exit_code == 0, res.stderr
    assert "1 chunk(s) absent, read as fill value 0" in res.stdout
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.stderr
    assert "x.zarr: 1 chunk(s) absent, read as fill value 0" in res.stderr
    res = CliRunner().invoke(cli, [*args[:-1], str(tmp_path / "out2"), "--strict-chunks"])
    assert res.exit_code == 2
    assert res.stderr.startswith("ddrp: error: ") and "c/2/0 (rows 1000..1499) is missing" \
        in res.stderr and len(res.stderr.strip().splitlines()) == 1


# ---------------------------------------------------------------------------------------
# CF packing


def _packed(path: Path, a: np.ndarray, fmt: int, **enc: Any) -> str:
    enc = {"dtype": "int16", "scale_factor": 0.002, "add_offset": 1.5, "_FillValue": -32768,
           **enc}
    enc = {k: v for k, v in enc.items() if v is not None}
    xr.Dataset({"emb": (("row", "dim"), a)}).chunk({"row": CHUNK}).to_zarr(
        str(path), zarr_format=fmt, mode="w", consolidated=False, encoding={"emb": enc})
    return str(path)


@pytest.mark.parametrize("fmt", [2, 3])
def test_packed_arrays_are_decoded_as_xarray_decodes_them(tmp_path: Path, pair: Any,
                                                          fmt: int) -> None:
    x, w = pair
    xs = _packed(tmp_path / "x.zarr", x, fmt)
    decoded = xr.open_zarr(xs, consolidated=False)["emb"].values
    assert decoded.dtype == np.float64 and not np.array_equal(decoded, x)  # really packed
    src = open_source(xs)
    assert "packed: stored * 0.002 + 1.5, missing -32768" in src.describe()
    assert np.array_equal(src.read_rows(0, len(x)), decoded.astype(np.float32))
    ws = write_npy(tmp_path / "w.npy", w)
    want = _run(write_npy(tmp_path / "x.npy", decoded.astype(np.float32)), ws,
                tmp_path / "ref")
    assert _run(xs, ws, tmp_path / "out") == want


@pytest.mark.parametrize("marker", ["_FillValue", "missing_value"])
@pytest.mark.parametrize("fmt", [2, 3])
def test_missing_values_of_packed_arrays_are_invalid_rows(tmp_path: Path, pair: Any,
                                                          fmt: int, marker: str) -> None:
    """``_FillValue`` (and ``missing_value``) are missing values, as xarray's NaN: an error
    naming the row by default, skipped rows with ``on_invalid="skip"`` — the same as a NaN
    in those rows of a .npy."""
    x, w = pair
    x = x.copy()
    x[[7, 2222], [3, 0]] = np.nan  # xarray writes NaN as _FillValue
    enc = {} if marker == "_FillValue" else {"_FillValue": None, "missing_value": -32767}
    xs = _packed(tmp_path / "x.zarr", x, fmt, **enc)
    decoded = xr.open_zarr(xs, consolidated=False)["emb"].values
    assert np.isnan(decoded[7, 3]) and np.isnan(decoded[2222, 0])
    src = open_source(xs)
    value = -32768 if marker == "_FillValue" else -32767
    with pytest.raises(InvalidValueError, match=rf"x\.zarr: row 7 column 3 holds the missing "
                                                rf"value {value}"):
        src.read_rows(0, 100)
    ws = write_npy(tmp_path / "w.npy", w)
    want = _run(write_npy(tmp_path / "x.npy", decoded.astype(np.float32)), ws,
                tmp_path / "ref", on_invalid="skip")
    assert _run(xs, ws, tmp_path / "out", on_invalid="skip") == want
    g = zarr.open_group(str(tmp_path / "out"), mode="r")
    assert list(g["x_skipped_rows"][...]) == [7, 2222]


def test_missing_value_attribute_alone(tmp_path: Path) -> None:
    """A ``missing_value`` attribute on an unpacked array masks those values too."""
    a = np.arange(40, dtype=np.float32).reshape(10, 4)
    arr = zarr.create_array(str(tmp_path / "m.zarr"), shape=a.shape, dtype=a.dtype,
                            chunks=(5, 4), attributes={"missing_value": 9.0})
    arr[...] = a
    src = open_source(str(tmp_path / "m.zarr"))
    assert "masked, missing 9" in src.describe()
    with pytest.raises(InvalidValueError, match="row 2 column 1 holds the missing value 9"):
        src.read_rows(0, 10)
    assert np.isnan(src.read_rows(0, 10, invalid="nan")[2, 1])
