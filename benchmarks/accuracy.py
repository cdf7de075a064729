"""Accuracy of every ddrp method on real data that scikit-learn ships (no download).

Data sets (X: data points, W: classifier weight vectors, the paper's use):

* ``digits``: ``scripts/demo_data.py``'s ``digits_pair()``: 1797 x 64 images, 200 weight
  vectors of bootstrap multinomial logistic fits (10 per fit).
* ``breast_cancer``: raw features (569 x 30, scales from 1e-3 to 1e3), 200 bootstrap binary
  logistic fits on standardized features, mapped back to raw units (w / std), so x . w is the
  classifier's logit up to a per-fit constant.
* ``breast_cancer_std``: standardized features and the weights in standardized units (no
  mean, equal scales: the hardest case for data-dependent methods).
* ``wine``: as breast_cancer (raw), 178 x 13, 3 classes, 70 fits (210 vectors).

X rows are split at random into a fit part (70%) and a held-out part; W rows by whole fits.
Statistics come from the fit parts only (``block_moments`` in float64); each method is built
for many seeds, the held-out rows are sketched with ``sketch_numpy`` and S @ T.T is compared
with X_held @ W_held.T.

Columns: empirical MSE on held-out pairs (±se: its standard error across seeds, relative);
empirical gain (gaussian MSE / method MSE);
predicted gain (``info["predicted"]``, which is about fitted rows); pred/emp(fit) = predicted
MSE / empirical MSE on the *fitted* pairs (about 1 when the prediction formula is right);
rel bias = mean |seed-mean error| / mean |x . w|; bias/noise = mean(seed-mean error²) /
mean(per-pair variance / seeds): about 1 for an unbiased method but noisy, since all pairs
share each seed's draw (values of a few occur by chance; they move when the seeds change),
and inf for a seed-independent method (truncated), whose error is all bias.

    python benchmarks/accuracy.py [--quick] [--seeds N] [--out bench-out]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from types import ModuleType

import numpy as np
from benchlib import OUT, ROOT, pyplot
from threadpoolctl import threadpool_limits

import ddrp_dask
from ddrp_dask.errors import OptionError
from ddrp_dask.options import METHODS, check_k

FIT_FRACTION = 0.7
SPLIT_SEED = 12345


@dataclass(frozen=True)
class Dataset:
    """One X/W pair; ``groups`` gives each W row's bootstrap fit (W is split by fit)."""

    name: str
    x: np.ndarray
    w: np.ndarray
    groups: np.ndarray
    ks: tuple[int, ...]


@dataclass
class Result:
    """One (data set, K, method) cell of the tables."""

    dataset: str
    k: int
    method: str
    r: int | None
    mse: float
    mse_se: float
    mse_fit: float
    predicted: float
    predicted_gaussian: float
    rel_bias: float
    bias_noise: float
    gain: float = float("nan")
    gain_predicted: float = float("nan")


# ---------------------------------------------------------------------------------------
# data


def _demo_data() -> ModuleType:
    spec = importlib.util.spec_from_file_location("demo_data", ROOT / "scripts" / "demo_data.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _bootstrap_weights(x: np.ndarray, y: np.ndarray, n_fits: int, seed: int
                       ) -> tuple[np.ndarray, np.ndarray]:
    """Weights of logistic fits on bootstrap samples of ``x`` (already standardized) and the
    fit index of every row. C varies log-uniformly in [0.01, 1] so the weights differ."""
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(seed)
    weights, groups = [], []
    for i in range(n_fits):
        idx = rng.integers(0, len(x), len(x))
        c = float(10 ** rng.uniform(-2, 0))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            clf = LogisticRegression(C=c, max_iter=500).fit(x[idx], y[idx])
        weights.append(clf.coef_)
        groups += [i] * clf.coef_.shape[0]
    return np.concatenate(weights), np.asarray(groups)


def load_datasets() -> list[Dataset]:
    """digits, breast_cancer (raw and standardized) and wine pairs, in float64.

    sklearn's solvers are pinned to one BLAS thread: with two, a digits fit ran ~15x slower
    on the 2-core machine (digits_pair took ~2 min instead of ~5 s).
    """
    from sklearn.datasets import load_breast_cancer, load_wine

    with threadpool_limits(limits=1):
        x, w = _demo_data().digits_pair()
        out = [Dataset("digits", x.astype(np.float64), w.astype(np.float64),
                       np.repeat(np.arange(len(w) // 10), 10), (8, 16, 32))]
        for name, loader, fits, ks in (("breast_cancer", load_breast_cancer, 200, (4, 8, 16)),
                                       ("wine", load_wine, 70, (3, 6, 10))):
            xs, ys = loader(return_X_y=True)
            mu, sd = xs.mean(axis=0), xs.std(axis=0)
            ws, groups = _bootstrap_weights((xs - mu) / sd, ys, fits, seed=1)
            # raw units: x . (w / sd) is the logit up to a per-fit constant
            out.append(Dataset(name, xs.astype(np.float64), ws / sd, groups, ks))
            if name == "breast_cancer":
                out.append(Dataset("breast_cancer_std", (xs - mu) / sd, ws, groups, ks))
    return out


def split(ds: Dataset) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_fit, x_held, w_fit, w_held): random 70/30 rows of X, whole fits of W."""
    rng = np.random.default_rng(SPLIT_SEED)
    perm = rng.permutation(len(ds.x))
    cut = round(FIT_FRACTION * len(ds.x))
    fits = rng.permutation(np.unique(ds.groups))
    fit_groups = fits[:round(FIT_FRACTION * len(fits))]
    in_fit = np.isin(ds.groups, fit_groups)
    return ds.x[perm[:cut]], ds.x[perm[cut:]], ds.w[in_fit], ds.w[~in_fit]


# ---------------------------------------------------------------------------------------
# evaluation


def feasible(k: int, d: int, method: str) -> bool:
    """Whether ``method`` accepts ``k`` at dimension ``d``."""
    try:
        check_k(k, d, method)
    except OptionError:
        return False
    return True


def evaluate(ds: Dataset, parts: tuple[np.ndarray, ...], k: int, method: str,
             seeds: int) -> Result:
    """Build ``method`` for ``seeds`` seeds and measure its error on held-out and fit pairs."""
    x_fit, x_held, w_fit, w_held = parts
    mx, mw = ddrp_dask.block_moments(x_fit), ddrp_dask.block_moments(w_fit)
    exact = x_held @ w_held.T
    exact_fit = x_fit @ w_fit.T
    errors = np.empty((seeds, *exact.shape))
    mse_fit = 0.0
    model = None
    for seed in range(seeds):
        model = ddrp_dask.build(mx, mw, k, method, seed)
        s = ddrp_dask.sketch_numpy(model, "x", x_held).astype(np.float64)
        t = ddrp_dask.sketch_numpy(model, "w", w_held).astype(np.float64)
        errors[seed] = s @ t.T - exact
        sf = ddrp_dask.sketch_numpy(model, "x", x_fit).astype(np.float64)
        tf = ddrp_dask.sketch_numpy(model, "w", w_fit).astype(np.float64)
        mse_fit += float(np.mean((sf @ tf.T - exact_fit) ** 2)) / seeds
    assert model is not None
    bias = errors.mean(axis=0)
    deterministic = bool(np.all(errors == errors[0]))
    noise = 0.0 if deterministic else float(np.mean(errors.var(axis=0, ddof=1))) / seeds
    per_seed = np.mean(errors**2, axis=(1, 2))
    bias_sq = float(np.mean(bias**2))
    # a seed-independent method (truncated) has no noise: its error is all bias
    bias_noise = bias_sq / noise if noise > 0 else float("inf")
    predicted = model.info["predicted"]
    return Result(ds.name, k, method, model.info.get("r"), float(per_seed.mean()),
                  float(per_seed.std(ddof=1) / np.sqrt(seeds)) if seeds > 1 else float("nan"),
                  mse_fit, float(predicted[method]), float(predicted["gaussian"]),
                  float(np.mean(np.abs(bias)) / np.mean(np.abs(exact))), bias_noise)


def run(datasets: list[Dataset], seeds: int) -> list[Result]:
    """Every feasible (data set, K, method) cell, gains filled in."""
    results = []
    for ds in datasets:
        parts = split(ds)
        for k in ds.ks:
            cells = {m: evaluate(ds, parts, k, m, seeds) for m in METHODS
                     if feasible(k, ds.x.shape[1], m)}
            for res in cells.values():
                res.gain = cells["gaussian"].mse / res.mse if res.mse > 0 else float("inf")
                res.gain_predicted = res.predicted_gaussian / res.predicted \
                    if res.predicted > 0 else float("inf")
            results += cells.values()
    return results


# ---------------------------------------------------------------------------------------
# output


def _fmt(v: float, spec: str = ".3g") -> str:
    return "inf" if np.isinf(v) else format(v, spec)


def print_tables(datasets: list[Dataset], results: list[Result], seeds: int) -> None:
    """One table per (data set, K)."""
    for ds in datasets:
        x_fit, x_held, w_fit, w_held = split(ds)
        print(f"\n== {ds.name}: d={ds.x.shape[1]}, X fit/held {len(x_fit)}/{len(x_held)}, "
              f"W fit/held {len(w_fit)}/{len(w_held)}, {seeds} seeds, "
              f"mean |x.w| (held) {np.mean(np.abs(x_held @ w_held.T)):.3g}")
        for k in ds.ks:
            print(f"-- K={k}")
            print(f"  {'method':<11} {'r':>3} {'MSE held':>10} {'±se':>5} {'gain emp':>9} "
                  f"{'gain pred':>9} {'pred/emp(fit)':>13} {'rel bias':>9} {'bias/noise':>10}")
            for res in results:
                if res.dataset != ds.name or res.k != k:
                    continue
                r = "" if res.r is None else str(res.r)
                determ = "  (seed-independent: error is all bias)" \
                    if np.isinf(res.bias_noise) else ""
                ratio = res.predicted / res.mse_fit if res.mse_fit > 0 else float("nan")
                se = f"{100 * res.mse_se / res.mse:.0f}%" if res.mse > 0 else ""
                print(f"  {res.method:<11} {r:>3} {res.mse:>10.4g} {se:>5} {_fmt(res.gain):>9} "
                      f"{_fmt(res.gain_predicted):>9} {ratio:>13.3f} "
                      f"{res.rel_bias:>9.2e} {_fmt(res.bias_noise, '.2f'):>10}{determ}")


def check_auto(results: list[Result]) -> bool:
    """Print whether auto's held-out MSE is below asymmetric's in every (data set, K)."""
    print("\nauto vs asymmetric (held-out MSE; requirement: auto lower everywhere)")
    ok = True
    cells = {(r.dataset, r.k, r.method): r for r in results}
    for (name, k, method), res in cells.items():
        if method != "auto":
            continue
        asym = cells[(name, k, "asymmetric")]
        better = res.mse < asym.mse
        ok &= better
        print(f"  {name:<18} K={k:<3} auto {res.mse:.4g}  asymmetric {asym.mse:.4g}  "
              f"ratio {asym.mse / res.mse:.3g}x  {'ok' if better else 'FAIL'}")
    print(f"auto beats asymmetric everywhere: {'YES' if ok else 'NO'}")
    return ok


def plot(datasets: list[Dataset], results: list[Result], path: Path) -> None:
    """Empirical (solid) and predicted (dashed) gain over gaussian vs K, one panel per set."""
    plt = pyplot()

    cols = 2
    rows = -(-len(datasets) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(6 * cols, 4.2 * rows), squeeze=False)
    colors = dict(zip(METHODS, plt.rcParams["axes.prop_cycle"].by_key()["color"], strict=False))
    for ax in axes.flat[len(datasets):]:
        ax.set_visible(False)
    for ax, ds in zip(axes.flat, datasets, strict=False):
        for method in METHODS:
            rows = [r for r in results if r.dataset == ds.name and r.method == method]
            if not rows:
                continue
            ks = [r.k for r in rows]
            ax.plot(ks, [r.gain for r in rows], "o-", color=colors[method], label=method)
            ax.plot(ks, [r.gain_predicted for r in rows], "--", color=colors[method], lw=0.8)
        ax.set_yscale("log")
        ax.set_xlabel("K (stored columns)")
        ax.set_ylabel("gain over gaussian (MSE ratio)")
        ax.set_title(f"{ds.name} (d={ds.x.shape[1]})")
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.suptitle("ddrp accuracy: solid = empirical on held-out rows, dashed = predicted (fit rows)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; exit status 1 if auto does not beat asymmetric everywhere."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10 seeds instead of 100")
    parser.add_argument("--seeds", type=int, default=None, help="seeds per cell (default 100)")
    parser.add_argument("--out", default=str(OUT), help="output directory")
    args = parser.parse_args(argv)
    seeds = args.seeds or (10 if args.quick else 100)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    datasets = load_datasets()
    with threadpool_limits(limits=1):  # small matrices: one BLAS thread is faster
        results = run(datasets, seeds)
    print_tables(datasets, results, seeds)
    ok = check_auto(results)
    plot(datasets, results, out / "accuracy.png")
    (out / "accuracy.json").write_text(json.dumps([asdict(r) for r in results], indent=1))
    print(f"\nwrote {out / 'accuracy.png'} and {out / 'accuracy.json'} "
          f"in {time.perf_counter() - t0:.1f} s")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
