"""The ``ddrp plan`` figure (``ddrp_dask.plot``): the PNG is written, every method is in the
legend, coinciding curves are named (and only those), d is marked and the x axis stays near d."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ddrp_dask.maths.choose import choose_k
from ddrp_dask.maths.stats import block_moments
from ddrp_dask.options import METHODS
from ddrp_dask.plot import (
    coincident_curves,
    draw_mse_curve,
    legend_labels,
    plot_mse_curve,
    x_limits,
)

D = 32


def _rows(n: int, scale: np.ndarray, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, D)) * scale + 1.0


@pytest.fixture(scope="module")
def same_report() -> dict[str, Any]:
    """X and W with the same statistics: gaussian, asymmetric and diagonal coincide."""
    m = block_moments(_rows(500, np.linspace(3, 0.2, D), 0))
    return choose_k(m, m)


@pytest.fixture(scope="module")
def distinct_report() -> dict[str, Any]:
    """X and W with energy in different directions: every curve is its own."""
    mx = block_moments(_rows(500, np.linspace(3, 0.2, D), 0))
    mw = block_moments(_rows(80, np.linspace(0.2, 3, D), 1))
    return choose_k(mx, mw)


def test_png_written(same_report: dict[str, Any], tmp_path: Path) -> None:
    path = tmp_path / "plan.png"
    plot_mse_curve(same_report, str(path), title="test")
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert (width, height) == (1000, 500)
    assert 20_000 < len(data) < 2_000_000


def test_coinciding_curves_named(same_report: dict[str, Any]) -> None:
    assert coincident_curves(same_report) == {"diagonal": "asymmetric",
                                              "gaussian": "asymmetric"}
    labels = legend_labels(same_report)
    assert [label.split(" ")[0].rstrip(":") for label in labels] == list(METHODS)
    by_method = dict(zip(METHODS, labels, strict=True))
    assert "(same as asymmetric)" in by_method["diagonal"]
    assert "(same as asymmetric)" in by_method["gaussian"]
    assert "same as" not in by_method["asymmetric"] + by_method["sparse"]
    assert by_method["auto"] == f"auto: K = {same_report['min_k']['auto']}"
    assert "(biased)" in by_method["truncated"] and "(> d)" in by_method["gaussian"]


def test_distinct_curves_get_no_note(distinct_report: dict[str, Any]) -> None:
    assert coincident_curves(distinct_report) == {}
    labels = legend_labels(distinct_report)
    assert len(labels) == len(METHODS)
    assert not any("same as" in label or " = " in label.split(":")[0] for label in labels)


def test_one_curve_differing_once_is_not_the_same(distinct_report: dict[str, Any]) -> None:
    report = {**distinct_report, "curve": {**distinct_report["curve"], "mse": {
        "a": np.array([1.0, 2.0, 3.0, np.nan]), "b": np.array([1.0, 2.0, 3.0 * (1 + 1e-6), 4.0]),
        "c": np.array([np.nan, 2.0, 3.0, 4.0]), "e": np.array([1.0, np.nan, np.nan, np.nan])}}}
    assert coincident_curves(report) == {"c": "a"}  # e shares only one finite K with a


def test_d_marked_and_axis_near_d(same_report: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    try:
        draw_mse_curve(ax, same_report)
        assert f"d = {D}" in [t.get_text().strip() for t in ax.texts]
        assert any(list(line.get_xdata()) == [D, D] for line in ax.lines)
        legend = [t.get_text() for t in ax.get_legend().get_texts()]
        assert "K > d: raw vectors are smaller" in legend
        assert legend[:len(METHODS)] == legend_labels(same_report)
        assert ax.get_xscale() == ax.get_yscale() == "log"
        assert ax.get_xlim()[1] <= 1.1 * 2 * (D + 2) < same_report["curve"]["k"][-1]
    finally:
        plt.close(fig)
    assert x_limits(same_report) == (0.9, 2 * (D + 2) * 1.1)
