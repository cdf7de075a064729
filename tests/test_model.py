"""The saved model: round trip, format version, checksums, no pickle."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import zarr

from ddrp_dask import build, load_model, save_model
from ddrp_dask.errors import ModelError
from ddrp_dask.maths.stats import block_moments

from .conftest import make_pair


@pytest.fixture
def saved(tmp_path: Path) -> str:
    x, w = make_pair(n=300, m=50, d=6)
    model = build(block_moments(x), block_moments(w), 5, "auto", 4,
                  provenance={"block_rows": 128})
    save_model(model, tmp_path / "m")
    return str(tmp_path / "m")


def test_round_trip_is_exact(saved: str) -> None:
    x, w = make_pair(n=300, m=50, d=6)
    model = build(block_moments(x), block_moments(w), 5, "auto", 4)
    back = load_model(saved)
    for side in ("x", "w"):
        for name in ("matrix", "offset", "shift"):
            assert np.array_equal(getattr(back.side(side), name), getattr(model.side(side), name))
    assert back.stats_x is not None and back.stats_x.n == 300
    assert np.array_equal(back.stats_w.scatter, block_moments(w).scatter)  # type: ignore[union-attr]
    assert (back.method, back.k, back.d, back.seed) == ("auto", 5, 6, 4)
    assert back.info["allocation"] == model.info["allocation"]
    assert back.provenance["block_rows"] == 128


def test_tampered_array_is_refused(saved: str) -> None:
    arr = zarr.open_array(saved + "/x_matrix", mode="r+")
    arr[0, 0] = arr[0, 0] + 1e-12
    with pytest.raises(ModelError, match="'x_matrix' does not match its checksum"):
        load_model(saved)


def test_other_format_version_is_refused(saved: str) -> None:
    meta = Path(saved) / "zarr.json"
    doc = json.loads(meta.read_text())
    doc["attributes"]["format_version"] = 99
    meta.write_text(json.dumps(doc))
    with pytest.raises(ModelError, match="format version 99; this ddrp reads version 1"):
        load_model(saved)


def test_missing_array_and_non_model_are_refused(saved: str, tmp_path: Path) -> None:
    import shutil

    shutil.rmtree(Path(saved) / "w_offset")
    with pytest.raises(ModelError, match="do not match the saved list"):
        load_model(saved)
    zarr.open_group(str(tmp_path / "g"), mode="w")
    with pytest.raises(ModelError, match="not a ddrp model"):
        load_model(str(tmp_path / "g"))
    with pytest.raises(ModelError, match="not a ddrp model"):
        load_model(str(tmp_path / "nothing"))


def test_no_pickle_anywhere() -> None:
    root = Path(__file__).resolve().parents[1]
    for f in [*(root / "ddrp_dask").rglob("*.py"), *(root / "cli").rglob("*.py")]:
        text = f.read_text()
        assert "import pickle" not in text and "allow_pickle=True" not in text, f
