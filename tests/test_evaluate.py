"""evaluate: numbers against a numpy recomputation on the same sampled pairs, reading only the
sampled rows, recall@N against numpy, the unbiasedness test over seeds, errors and the command."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

import ddrp_dask as dd
from ddrp_cli.main import cli
from ddrp_dask.errors import ModelError, OptionError
from ddrp_dask.io.source import Source
from ddrp_dask.maths.metrics import error_summary, recall_at_n, sample_queries, seed_test
from ddrp_dask.testing import reference_sketch

from .conftest import make_pair, write_npy, write_parquet_list

N, M, D, K = 1500, 240, 14, 6


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    t = tmp_path_factory.mktemp("evaluate")
    x, w = make_pair(n=N, m=M, d=D, seed=8)
    paths = {"x": write_parquet_list(t / "x.parquet", x, 256), "w": write_npy(t / "w.npy", w),
             "x_npy": write_npy(t / "x.npy", x)}
    for method in ("auto", "truncated"):
        dd.execute(dd.plan_fit(paths["x"], paths["w"], K, str(t / method), method, seed=4,
                               block_rows=300), scheduler="threads")
        paths[method] = str(t / method)
    return {"xa": x, "wa": w, "dir": t, **paths}


def test_error_summary_against_direct_formulas() -> None:
    exact = np.array([1.0, -2.0, 4.0, 0.5])
    est = np.array([1.5, -2.0, 3.0, 0.0])
    err = est - exact
    s = error_summary(exact, est, scale=np.array([2.0, 2.0, 8.0, 1.0]))
    assert s["mse"] == pytest.approx(np.mean(err**2))
    assert s["rel_mse"] == pytest.approx(np.mean(err**2) / np.mean(exact**2))
    assert s["mean_error"] == pytest.approx(err.mean())
    assert "bias_z" not in s  # one model's errors share its draws: no bias test from them
    assert s["rel_error_quantiles"]["50"] == pytest.approx(0.5)  # of 0.5, 0, 0.25, 1: higher
    assert s["rel_error_quantiles"]["99"] == pytest.approx(1.0)
    assert s["norm_error_quantiles"]["90"] == pytest.approx(0.5)


def test_recall_and_sampling() -> None:
    assert recall_at_n(np.array([[1, 2, 3]]), np.array([[3, 4, 1]])) == pytest.approx(2 / 3)
    a, b = dd.sample_pairs(100, 7, 50, seed=3), dd.sample_pairs(100, 7, 50, seed=3)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[0], dd.sample_pairs(100, 7, 50, seed=4)[0])
    q = sample_queries(100, 30, seed=3)
    assert len(np.unique(q)) == 30 and np.all(np.diff(q) > 0)


def _reference(model: dd.SketchModel, method: str, x: np.ndarray, w: np.ndarray,
               ix: np.ndarray, iw: np.ndarray) -> float:
    """MSE of ``method`` (built from the model's statistics) on the pairs, in float64."""
    assert model.stats_x is not None and model.stats_w is not None
    m = model if method == model.method else dd.build(
        model.stats_x, model.stats_w, model.k, method, model.seed)
    est = np.sum(reference_sketch(m, "x", x[ix]) * reference_sketch(m, "w", w[iw]), axis=1)
    exact = np.sum(x[ix].astype(np.float64) * w[iw].astype(np.float64), axis=1)
    return float(np.mean((est - exact) ** 2))


def test_numbers_match_numpy_on_the_same_pairs(data: dict[str, Any]) -> None:
    plan = dd.plan_evaluate(data["auto"], data["x"], data["w"], pairs=3000, seed=11,
                            block_rows=300)
    res = dd.evaluate_model(plan, scheduler="threads")
    model = dd.load_model(data["auto"])
    ix, iw = dd.sample_pairs(N, M, 3000, seed=11)
    for key, method in (("mse", "auto"), ("gaussian_mse", "gaussian"),
                        ("asymmetric_mse", "asymmetric")):
        ref = _reference(model, method, data["xa"], data["wa"], ix, iw)
        assert res[key] == pytest.approx(ref, rel=1e-3), key
    assert res["gain"] == pytest.approx(res["gaussian_mse"] / res["mse"])
    assert res["predicted_gain"] == pytest.approx(model.info["gain"])
    assert res["predicted"] == pytest.approx(model.info["predicted"])
    exact = np.sum(data["xa"][ix].astype(np.float64) * data["wa"][iw], axis=1)
    assert res["exact_mean_square"] == pytest.approx(np.mean(exact**2))
    assert set(res["rel_error_quantiles"]) == {"50", "90", "99"}
    assert "tests nothing about bias" in res["bias_test"] and "over_seeds" not in res
    # this data is the case the method is for: a large measured gain, as predicted
    assert res["gain"] > 5 and res["mse"] < 3 * model.info["predicted"]["auto"]


def test_only_the_sampled_rows_are_read(data: dict[str, Any],
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    read: list[tuple[str, int, int]] = []
    real = Source.read_rows

    def spy(self: Source, start: int, stop: int) -> np.ndarray:
        read.append((self.path, start, stop))
        return real(self, start, stop)

    monkeypatch.setattr(Source, "read_rows", spy)
    plan = dd.plan_evaluate(data["auto"], data["x_npy"], data["w"], pairs=5, seed=2,
                            block_rows=100)
    res = dd.evaluate_model(plan, scheduler="threads")
    ix, iw = dd.sample_pairs(N, M, 5, seed=2)
    x_reads = [(a, b) for path, a, b in read if path == data["x_npy"]]
    assert all(np.any((ix >= a) & (ix < b)) for a, b in x_reads)  # no read without a sample
    assert sum(b - a for a, b in x_reads) <= 5 * 65 < 5 * 100  # not the whole blocks
    assert {path for path, _, _ in read} == {data["x_npy"], data["w"]}
    assert res["mse"] == pytest.approx(_reference(dd.load_model(data["auto"]), "auto",
                                                  data["xa"], data["wa"], ix, iw), rel=1e-3)


def test_recall_matches_numpy(data: dict[str, Any]) -> None:
    plan = dd.plan_evaluate(data["auto"], data["x"], data["w"], pairs=100, seed=5, top=10,
                            queries=40, block_rows=64)
    res = dd.evaluate_model(plan, scheduler="threads")
    model = dd.load_model(data["auto"])
    q = data["xa"][sample_queries(N, 40, seed=5)]
    exact = np.argsort(-(q.astype(np.float64) @ data["wa"].T), axis=1)[:, :10]
    est = dd.sketch_numpy(model, "x", q) @ dd.sketch_numpy(model, "w", data["wa"]).T
    ref = recall_at_n(exact, np.argsort(-est, axis=1, kind="stable")[:, :10])
    assert res["recall_at_n"] == pytest.approx(ref, abs=0.01)
    assert res["methods"]["auto"]["recall_at_n"] > res["methods"]["gaussian"]["recall_at_n"]
    assert res["top"] == 10 and res["queries"] == 40


def test_unbiasedness_over_seeds(data: dict[str, Any]) -> None:
    auto = dd.evaluate_model(dd.plan_evaluate(data["auto"], data["x"], data["w"], pairs=400,
                                              seeds=30), scheduler="sync")
    seeds = auto["over_seeds"]
    assert abs(seeds["t_mean"]) < 4 and abs(seeds["t_signed"]) < 4 and seeds["p_value"] > 1e-3
    assert seeds["pair_reject_rate"] < 0.05
    # the per-seed contrasts against a numpy recomputation of the first seeds' errors
    truncated = dd.evaluate_model(dd.plan_evaluate(data["truncated"], data["x"], data["w"],
                                                   pairs=400, seeds=3), scheduler="sync")
    assert truncated["over_seeds"]["pair_reject_rate"] > 0.5  # the same bias for every seed
    assert truncated["over_seeds"]["p_value"] < 1e-3


def test_seed_test_contrasts_against_numpy() -> None:
    """One contrast per seed, t-tested across seeds; a 3 % bias is caught, none is not."""
    rng = np.random.default_rng(0)
    exact = rng.standard_normal(300)
    scale = np.abs(exact) + 1.0
    shared = rng.standard_normal((40, 1))  # each seed's draw moves all its pairs together
    noise = 0.3 * (shared + rng.standard_normal((40, 300)))
    fair = seed_test(noise, exact, scale)
    c = (noise / scale).mean(axis=1)
    assert fair["t_mean"] == pytest.approx(c.mean() / (c.std(ddof=1) / np.sqrt(40)))
    assert fair["p_value"] > 0.01
    biased = seed_test(noise + 0.03 * exact * scale, exact, scale)
    assert biased["p_value"] < 1e-4 and biased["t_signed"] > 4


def test_a_quantized_model_is_measured_on_its_codes(data: dict[str, Any],
                                                    tmp_path: Path) -> None:
    dd.execute(dd.plan_fit(data["x"], data["w"], K, str(tmp_path / "q"), seed=4,
                           block_rows=300, dtype="int8"), scheduler="sync")
    res = dd.evaluate_model(dd.plan_evaluate(str(tmp_path / "q"), data["x"], data["w"],
                                             pairs=400, seeds=30), scheduler="sync")
    plain = dd.evaluate_model(dd.plan_evaluate(data["auto"], data["x"], data["w"],
                                               pairs=400), scheduler="sync")
    assert res["mse"] > plain["mse"]  # the rounding adds its variance
    assert res["over_seeds"]["p_value"] > 1e-3  # and no bias


def test_errors(data: dict[str, Any], tmp_path: Path) -> None:
    ok = {"model": data["auto"], "x": data["x"], "w": data["w"]}
    bad_d = write_npy(tmp_path / "w5.npy", np.ones((3, 5), np.float32))
    for kwargs, error, match in (
            ({"pairs": 1}, OptionError, "--pairs must be at least 2, got 1"),
            ({"top": M + 1}, OptionError, f"--top must be between 1 and the {M} rows"),
            ({"seeds": 1}, OptionError, "--seeds must be 0 .* got 1"),
            ({"queries": 0}, OptionError, "--queries must be at least 1"),
            ({"x": bad_d, "w": bad_d}, OptionError, "got d=5 for --x .* fitted for d=14"),
            ({"model": str(tmp_path)}, ModelError, "not a ddrp model")):
        with pytest.raises(error, match=match):
            dd.plan_evaluate(**{**ok, **kwargs})  # type: ignore[arg-type]
    model = dd.load_model(data["auto"])
    dd.save_model(dataclasses.replace(model, stats_x=None, stats_w=None),
                  str(tmp_path / "nostats"))
    with pytest.raises(ModelError, match="holds no statistics"):
        dd.plan_evaluate(str(tmp_path / "nostats"), data["x"], data["w"])


def _invoke(*args: str) -> tuple[int, str, str]:
    res = CliRunner().invoke(cli, list(args))
    return res.exit_code, res.stdout, res.stderr


def test_evaluate_command(data: dict[str, Any], tmp_path: Path) -> None:
    js = tmp_path / "e.json"
    args = ["evaluate", "--model", data["auto"], "--x", data["x"], "--w", data["w"],
            "--pairs", "500", "--seed", "3", "--top", "5", "--queries", "20", "--json", str(js),
            "--scheduler", "threads"]
    code, stdout, stderr = _invoke(*args)
    assert code == 0, stderr
    for piece in ("auto", "gaussian", "asymmetric", "gain over gaussian", "recall@5",
                  "--seeds N"):
        assert piece in stdout, piece
    assert "bias z" not in stdout
    res = json.loads(js.read_text())
    for key in ("mse", "gaussian_mse", "asymmetric_mse", "gain", "predicted_gain",
                "rel_error_quantiles", "recall_at_n", "predicted", "methods"):
        assert key in res, key
    ix, iw = dd.sample_pairs(N, M, 500, seed=3)
    assert res["mse"] == pytest.approx(_reference(dd.load_model(data["auto"]), "auto",
                                                  data["xa"], data["wa"], ix, iw), rel=1e-3)
    code, _, stderr = _invoke(*args)
    assert code == 2 and "exists; pass --overwrite" in stderr
    code, stdout, _ = _invoke(*args, "--dry-run", "--overwrite")
    assert code == 0 and "ddrp evaluate plan" in stdout
    code, _, stderr = _invoke(*args[:-2], "--scheduler", "sync", "--pairs", "1")
    assert code == 2 and stderr.startswith("ddrp: error: --pairs must be at least 2")
    code, _, stderr = _invoke(*args[:-2], "--on-invalid", "skip")
    assert code == 2 and "No such option '--on-invalid'" in stderr  # not an option here
