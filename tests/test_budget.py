"""A byte budget per row (``--bytes-per-row``, ``ddrp_dask.maths.budget``): the widest K of
each layout within B, the choice of smallest predicted MSE (never predicted worse than float32
at the same bytes), and, measured on rows the fit never saw (scikit-learn's digits), far more
accurate than float32 at the same bytes."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import ddrp_dask as dd
from ddrp_cli.main import cli as main
from ddrp_dask.errors import OptionError
from ddrp_dask.maths import quantize as q
from ddrp_dask.maths.budget import layout_at


def test_layout_at_is_the_widest_that_fits() -> None:
    for budget in (4, 7, 16, 33, 64, 200):
        for name in q.LAYOUTS:
            layout = layout_at(name, budget, 64, lambda k: k // 3)
            if layout is None:
                assert name != "float32" or budget < 4
                continue
            assert layout.bytes_per_row <= budget and layout.name == name
            if layout.k < 64:
                wider = q.Layout.of(name, layout.k + 1, (layout.k + 1) // 3)
                assert wider.bytes_per_row > budget or layout.is_mixed
    assert layout_at("int8", 500, 64, lambda k: 0) == q.Layout.of("int8", 64)  # K ≤ d
    # the scale codes cost 1 (float16) and 2 (int8) bytes: 8 bytes hold 6 int8 columns
    assert layout_at("int8", 8, 64, lambda k: 0) == q.Layout.of("int8", 6)
    assert layout_at("float16", 8, 64, lambda k: k) == q.Layout.of("float16", 3)
    assert layout_at("mixed", 12, 64, lambda k: 2) == q.Layout.of("mixed", 7, 2)
    # the max layouts' float32 scale costs 4 bytes: 8 bytes hold 4 int8 columns
    assert layout_at("int8max", 8, 64, lambda k: 0) == q.Layout.of("int8max", 4)
    assert layout_at("mixedmax", 12, 64, lambda k: 2) == q.Layout.of("mixedmax", 5, 2)


def test_budget_takes_the_exact_max_where_one_coordinate_dominates() -> None:
    """Rows whose energy sits almost all in one coordinate (as in raw breast-cancer
    features): the log code's grid rounds the dominant value, the max layouts store it
    exactly, and the budget predicts it and takes them; on balanced rows the 2 bytes it
    costs are not worth it and the budget keeps int8."""
    from ddrp_dask.maths.budget import choose_budget
    from ddrp_dask.maths.folds import N_FOLDS, fold_moments
    from ddrp_dask.maths.stats import combine_all

    def folds(a: np.ndarray) -> list:  # type: ignore[type-arg]
        parts = [fold_moments(a[i:i + 100].copy(), i) for i in range(0, len(a), 100)]
        return [combine_all([p[f] for p in parts]) for f in range(N_FOLDS)]

    rng = np.random.default_rng(0)
    scales = np.geomspace(1.0, 0.01, 12)
    skewed = scales.copy()
    skewed[0] = 30.0
    chosen = {}
    for name, sc in (("balanced", scales), ("skewed", skewed)):
        x = rng.standard_normal((1000, 12)) * sc + sc
        w = rng.standard_normal((500, 12)) * sc + sc
        best, options = choose_budget(folds(x), folds(w), 10)
        names = [o.layout.name for o in options]
        assert "int8max" in names and "mixedmax" in names
        chosen[name] = best.layout.name
    assert chosen == {"balanced": "int8", "skewed": "int8max"}, chosen


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Train and unseen digits, and classifier weights trained on the train rows."""
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression

    x, y = load_digits(return_X_y=True)
    order = np.random.default_rng(0).permutation(len(x))
    x, y = x[order].astype(np.float32), y[order]
    train, test = x[:1300], x[1300:]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        w = np.vstack([LogisticRegression(max_iter=100, C=c).fit(train, y[:1300]).coef_
                       for c in (0.01, 0.1, 1.0)]).astype(np.float32)
    return train, test, w


def test_budget_beats_float32_at_the_same_bytes_on_unseen_rows(
        digits: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    train, test, w = digits
    exact = test.astype(np.float64) @ w.T.astype(np.float64)
    budget = 32
    mse = {}
    for name, kw in (("budget", {"bytes_per_row": budget}),
                     ("float32", {"n_components": budget // 4})):
        errs = []
        for seed in range(4):
            arp = dd.AsymmetricRandomProjection(random_state=seed, **kw).fit(train, W=w)
            est = arp.transform(test).astype(np.float64) @ arp.transform_w(w).T
            errs.append(np.mean((est - exact) ** 2))
        mse[name] = float(np.mean(errs))
        if name == "budget":
            info = arp.model_.info["budget"]
            assert q.model_layout(arp.model_).bytes_per_row <= budget
            assert info["chosen"]["predicted_mse"] == min(o["predicted_mse"]
                                                         for o in info["options"])
            assert "float32" in [o["name"] for o in info["options"]]
    assert mse["float32"] / mse["budget"] >= 3, mse


def test_cli_run_and_plan_with_a_budget(tmp_path: Path,
                                        digits: tuple[np.ndarray, np.ndarray, np.ndarray]
                                        ) -> None:
    train, _, w = digits
    np.save(tmp_path / "x.npy", train)
    np.save(tmp_path / "w.npy", w)
    x, wp = str(tmp_path / "x.npy"), str(tmp_path / "w.npy")
    runner = CliRunner()
    res = runner.invoke(main, ["run", "--x", x, "--w", wp, "--bytes-per-row", "24",
                               "--out", str(tmp_path / "r.zarr")])
    assert res.exit_code == 0, res.output
    assert "byte budget 24 per row: chose" in res.output
    model = dd.load_model(str(tmp_path / "r.zarr" / "model"))
    assert q.model_layout(model).bytes_per_row <= 24
    # --dtype with a budget forces that layout
    res = runner.invoke(main, ["fit", "--x", x, "--w", wp, "--bytes-per-row", "24",
                               "--dtype", "float16", "--out", str(tmp_path / "m")])
    assert res.exit_code == 0, res.output
    assert q.model_layout(dd.load_model(str(tmp_path / "m"))) == q.Layout.of("float16", 11)
    res = runner.invoke(main, ["plan", "--x", x, "--w", wp, "--bytes-per-row", "32"])
    assert res.exit_code == 0, res.output
    assert "at 32 bytes per row:" in res.output and "mixed" in res.output
    for bad, msg in ((["-k", "4"], "replaces -k"),
                     (["--method", "gaussian"], "for --method auto"),
                     (["--bytes-per-row", "3"], "at least 4")):
        args = ["fit", "--x", x, "--w", wp, "--out", str(tmp_path / "bad")]
        args += [] if "--bytes-per-row" in bad else ["--bytes-per-row", "16"]
        res = runner.invoke(main, args + bad)
        assert res.exit_code != 0 and msg in res.output, res.output
    with pytest.raises(OptionError, match="replaces -k"):
        dd.plan_fit(x, wp, 4, str(tmp_path / "bad"), bytes_per_row=16)
