"""bootstrap_weights: shapes, determinism, and weights checked against independent fits."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer, load_digits, load_wine

import ddrp_dask as dd
from ddrp_dask import bootstrap_weights
from ddrp_dask.errors import InputError, OptionError


def test_ridge_on_noiseless_linear_data_recovers_the_true_vector() -> None:
    x, _ = load_wine(return_X_y=True)  # real features, scales from 0.1 to 1000
    rng = np.random.default_rng(0)
    beta = rng.standard_normal(x.shape[1]) / x.std(axis=0)
    y = x @ beta + 3.0
    w = bootstrap_weights(x, y, n_boot=5, model="ridge", model_params={"alpha": 1e-8})
    assert w.shape == (5, x.shape[1]) and w.dtype == np.float64
    assert np.allclose(w, beta, rtol=1e-5, atol=1e-8)
    # without standardising too
    raw = bootstrap_weights(x, y, n_boot=2, standardize=False, model_params={"alpha": 1e-10})
    assert np.allclose(raw, beta, rtol=1e-4, atol=1e-6)
    # two targets: one vector per target, per fit
    y2 = np.column_stack([y, x @ (2 * beta)])
    w2 = bootstrap_weights(x, y2, n_boot=3, model_params={"alpha": 1e-8})
    assert w2.shape == (6, x.shape[1])
    assert np.allclose(w2[0::2], beta, rtol=1e-5) and np.allclose(w2[1::2], 2 * beta, rtol=1e-5)


def test_each_fit_equals_an_independent_fit_on_its_resample() -> None:
    """Fit b's vectors are a plain ridge fit, on standardised columns, mapped back."""
    from sklearn.linear_model import Ridge

    x, y = load_breast_cancer(return_X_y=True)
    w = bootstrap_weights(x, y, n_boot=3, model="ridge", seed=5)
    assert w.shape == (3, 30)  # two classes: one ±1 target
    # independent: the same resamples (stratified by class), numpy standardisation
    rng = np.random.default_rng(5)
    mean, std = x.mean(0), x.std(0)
    z = (x - mean) / std
    target = np.where(y == 1, 1.0, -1.0)
    for b in range(3):
        idx = np.sort(np.concatenate([np.flatnonzero(y == c)[rng.integers(0, n, n)]
                                      for c, n in ((0, np.sum(y == 0)), (1, np.sum(y == 1)))]))
        coef = Ridge().fit(z[idx], target[idx]).coef_ / std
        assert np.allclose(w[b], coef, rtol=1e-10, atol=1e-14)
    # and the vector separates the classes: x.w is a useful decision value
    score = x @ w[0]
    assert np.mean((score > np.median(score)) == (y == 1)) > 0.8


def test_logistic_shapes_determinism_and_sample() -> None:
    x, y = load_digits(return_X_y=True)
    w = bootstrap_weights(x, y, n_boot=3, model="logistic", sample=400, seed=2,
                          model_params={"C": 0.1})
    assert w.shape == (30, 64)  # 10 classes x 3 fits
    again = bootstrap_weights(x, y, n_boot=3, model="logistic", sample=400, seed=2,
                              model_params={"C": 0.1})
    assert np.array_equal(w, again)
    other = bootstrap_weights(x, y, n_boot=3, model="logistic", sample=400, seed=3,
                              model_params={"C": 0.1})
    assert not np.array_equal(w, other)
    # constant pixels get exactly zero weight; weights vary across resamples
    constant = x.std(axis=0) == 0
    assert constant.any() and np.all(w[:, constant] == 0)
    assert np.std(w[0::10], axis=0).max() > 0
    # binary: one coef_ row per fit; ridge one-vs-rest: one vector per class
    assert bootstrap_weights(x, y % 2, n_boot=2, model="logistic").shape == (2, 64)
    assert bootstrap_weights(x, y, n_boot=2, model="ridge", sample=0.5).shape == (20, 64)


def test_logistic_bootstrap_fits_scatter_around_the_full_data_fit() -> None:
    from sklearn.linear_model import LogisticRegression

    x, y = load_wine(return_X_y=True)  # 3 classes, column scales from 0.1 to 1000
    w = bootstrap_weights(x, y, n_boot=4, model="logistic", seed=2)
    assert w.shape == (12, 13)
    # independent: one multinomial fit on all rows, on columns standardised with numpy
    std = x.std(axis=0)
    full = LogisticRegression(max_iter=1000).fit((x - x.mean(0)) / std, y).coef_
    for b in range(4):
        wb = w[3 * b:3 * (b + 1)] * std  # back to standardised units
        cos = np.sum(wb * full, axis=1) / np.linalg.norm(wb, axis=1) / np.linalg.norm(full,
                                                                                      axis=1)
        assert cos.min() > 0.9, cos
        assert np.abs(wb - full).max() > 1e-2  # but they are resampled fits, not the same
    # raw-unit vectors: x . w differs from the full model's decision value by a constant
    full_raw = full / std
    for c in range(3):
        diff = x @ w[c] - x @ full_raw[c]
        assert np.std(diff) < 0.5 * np.std(x @ full_raw[c])


def test_dask_input_reads_only_the_sample() -> None:
    """A dask X is indexed lazily: only the chunks holding sampled rows are computed (each
    chunk task records its index when it runs)."""
    import dask

    from ddrp_dask.maths.prior import _sample_rows

    x, y = load_digits(return_X_y=True)
    rows, sample, seed = 32, 20, 4
    computed: list[int] = []  # appended by the chunk tasks (list.append is thread-safe)

    def chunk(i: int) -> np.ndarray:
        computed.append(i)
        return x[i * rows:(i + 1) * rows]

    starts = range(0, len(x), rows)
    xd = da.concatenate([da.from_delayed(dask.delayed(chunk, pure=False)(i),
                                         shape=(min(rows, len(x) - s), x.shape[1]),
                                         dtype=x.dtype)
                         for i, s in enumerate(starts)])
    yd = da.from_array(y, chunks=rows)
    with dask.config.set(scheduler="threads"):  # in this process: the recorder sees the tasks
        w = bootstrap_weights(xd, yd, n_boot=2, model="ridge", sample=sample, seed=seed)
    assert np.array_equal(w, bootstrap_weights(x, y, n_boot=2, model="ridge", sample=sample,
                                               seed=seed))
    # the sample is the first draw of the seed's generator
    wanted = {int(r) // rows for r in _sample_rows(len(x), sample, np.random.default_rng(seed))}
    assert len(computed) == len(set(computed)), computed  # each chunk once
    assert set(computed) == wanted and len(wanted) < len(starts) // 2, (computed, wanted)
    # control: the recorder sees every chunk when the whole array is computed
    computed.clear()
    assert np.array_equal(xd.compute(scheduler="threads"), x)
    assert sorted(computed) == list(range(len(starts)))


def test_errors() -> None:
    x, y = load_wine(return_X_y=True)
    with pytest.raises(OptionError, match="unknown model 'lasso'"):
        bootstrap_weights(x, y, model="lasso")
    with pytest.raises(OptionError, match="n_boot must be a positive integer, got 0"):
        bootstrap_weights(x, y, n_boot=0)
    with pytest.raises(OptionError, match=r"sample=500 rows is outside 2\.\.178"):
        bootstrap_weights(x, y, sample=500)
    with pytest.raises(InputError, match="X has 178 rows but y has 10 labels"):
        bootstrap_weights(x, y[:10])
    with pytest.raises(InputError, match="holds one class"):
        bootstrap_weights(x, np.zeros(len(x), dtype=int), model="logistic")


def test_w_from_labels_in_the_cli(tmp_path: Path) -> None:
    """run --w-from-labels: W is estimated from a sample of labelled rows, saved, sketched."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    import zarr
    from click.testing import CliRunner
    from sklearn.datasets import load_digits

    from ddrp_cli.main import cli

    x, y = load_digits(return_X_y=True)
    table = pa.table({"label": y, "pixels": pa.FixedSizeListArray.from_arrays(
        pa.array(x.astype(np.float32).ravel()), 64)})
    pq.write_table(table, tmp_path / "d.parquet", row_group_size=256)
    out = tmp_path / "o.zarr"
    args = ["run", "--x", str(tmp_path / "d.parquet"), "--w-from-labels", "label",
            "--prior-fits", "3", "--prior-sample", "600", "-k", "12", "--out", str(out),
            "--scheduler", "threads", "--quiet", "--block-rows", "256"]
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.stderr
    prior = np.load(str(out) + ".w-prior.npy")
    assert prior.shape == (30, 64)  # 3 logistic fits x 10 classes
    expected = dd.prior_from_labels(str(tmp_path / "d.parquet"), "label", n_boot=3,
                                    sample=600, block_rows=256)
    assert np.array_equal(prior, expected)
    g = zarr.open_group(str(out), mode="r")
    assert g["w"].shape == (30, 12) and g.attrs["complete"] is True
    res = CliRunner().invoke(cli, [*args[:-1], "256", "--w", str(out) + ".w-prior.npy"])
    assert res.exit_code == 2 and "either --w or --w-from-labels" in res.stderr
    bad = CliRunner().invoke(cli, ["fit", "--x", str(tmp_path / "d.parquet"), "--w-from-labels",
                                   "nope", "-k", "5", "--out", str(tmp_path / "m")])
    assert bad.exit_code == 2 and "no label column 'nope'" in bad.stderr


def _labelled(tmp_path: Path) -> str:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(3)
    x = rng.standard_normal((400, 6)).astype(np.float32)
    y = (x @ np.arange(6.0) > 0).astype(np.int64)
    pq.write_table(pa.table({"label": y, "vec": pa.FixedSizeListArray.from_arrays(
        pa.array(x.ravel()), 6)}), tmp_path / "l.parquet", row_group_size=100)
    return str(tmp_path / "l.parquet")


def test_the_prior_is_written_whole_or_not_at_all(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Through io.writer: a write that dies half-way leaves no file under the prior's name
    (it was written to it directly before), and an existing file is refused unless
    overwritten."""
    from ddrp_dask.errors import OutputError
    from ddrp_dask.jobs.prior import plan_prior

    src = _labelled(tmp_path)
    out = str(tmp_path / "p.npy")
    real_save = np.save

    def dies(file: Any, arr: Any, *args: Any, **kwargs: Any) -> None:
        real_save(file, arr[:1], *args, **kwargs)  # some bytes, then the kill
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "save", dies)
    with pytest.raises(KeyboardInterrupt):
        plan_prior(src, "label", out, n_boot=2, sample=300).execute()
    monkeypatch.undo()
    assert not Path(out).exists()
    plan_prior(src, "label", out, n_boot=2, sample=300).execute()
    expected = dd.prior_from_labels(src, "label", n_boot=2, sample=300)
    assert np.array_equal(np.load(out), expected)
    with pytest.raises(OutputError, match=r"p\.npy exists; pass --overwrite"):
        plan_prior(src, "label", out, n_boot=2, sample=300)
    with pytest.raises(OutputError, match="is the input"):
        plan_prior(src, "label", src, n_boot=2, sample=300, overwrite=True)
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # renamed


def test_the_prior_goes_to_a_url(tmp_path: Path) -> None:
    import fsspec

    from ddrp_dask.jobs.prior import plan_prior

    src = _labelled(tmp_path)
    out = "memory://ddrp-prior/p.npy"
    plan_prior(src, "label", out, n_boot=2, sample=300).execute()
    fs, inner = fsspec.core.url_to_fs(out)
    with fs.open(inner, "rb") as fh:
        got = np.load(fh)
    assert np.array_equal(got, dd.prior_from_labels(src, "label", n_boot=2, sample=300))
    fs.rm("/ddrp-prior", recursive=True)
