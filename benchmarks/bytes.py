"""Accuracy per byte on held-out real data: ddrp's byte budget (``--bytes-per-row``,
docs/quantized.md) against float32 sketches, FAISS's PQ, OPQ and scalar quantizers and PCA at
the same bytes per vector.

Cases are built from data scikit-learn ships (no download): digits against classifier weights
trained on them, digits 0–4 against 5–9, breast-cancer malignant against benign (raw and
standardised). Each side's rows are split in halves: everything is fitted on the first halves
(ddrp's statistics, the FAISS codebooks — trained on both sides' fit rows together, a single
codebook being how FAISS is used — and the PCA basis) and the error is measured over every
pair of the held-out halves: relative MSE = mean (estimate − x·w)² / mean (x·w)². ddrp's
sketches are rebuilt for ``--seeds`` seeds (the MSE is their mean) and their unbiasedness on the
held-out pairs is t-tested across seeds with one contrast per seed (``seed_test``); FAISS and
PCA are deterministic (and biased).

    python benchmarks/bytes.py [--seeds 20] [--out-dir bench-out]

Prints a Markdown table (also written to OUT/bytes.md) and plots relative MSE against bytes
per vector (OUT/bytes.png).
"""

from __future__ import annotations

import argparse
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from benchlib import OUT, pyplot
from threadpoolctl import threadpool_limits

from ddrp_dask.maths.budget import budgeted_model, choose_budget
from ddrp_dask.maths.build import build
from ddrp_dask.maths.folds import N_FOLDS, fold_moments
from ddrp_dask.maths.metrics import seed_test
from ddrp_dask.maths.model import SketchModel
from ddrp_dask.maths.quantize import Layout, decode, encode, model_layout
from ddrp_dask.maths.stats import Moments, combine_all

SPLIT_SEED = 2024


@dataclass(frozen=True)
class Case:
    name: str
    x: np.ndarray
    w: np.ndarray
    budgets: tuple[int, ...]


def _weights(x: np.ndarray, y: np.ndarray, fits: int) -> np.ndarray:
    """coef_ rows of a logistic fit and of ``fits − 1`` bootstrap refits."""
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    rows = []
    for i in range(fits):
        idx = np.arange(len(x)) if i == 0 else rng.integers(0, len(x), len(x))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            rows.append(LogisticRegression(C=0.05, max_iter=300).fit(x[idx], y[idx]).coef_)
    return np.concatenate(rows)


def cases() -> list[Case]:
    from sklearn import datasets as skd

    xd, yd = skd.load_digits(return_X_y=True)
    xb, yb = skd.load_breast_cancer(return_X_y=True)
    xbs = (xb - xb.mean(0)) / xb.std(0)
    with threadpool_limits(limits=1):
        wd = _weights(xd, yd, 6)  # 60 weight vectors
    d64 = (8, 16, 24, 32, 48, 64, 128)
    d30 = (8, 12, 16, 24, 30, 60)
    return [Case("digits vs classifier weights (d=64)", xd, wd, d64),
            Case("digits 0-4 vs 5-9 (d=64)", xd[yd < 5], xd[yd >= 5], d64),
            Case("cancer malignant vs benign, raw (d=30)", xb[yb == 0], xb[yb == 1], d30),
            Case("cancer malignant vs benign, standardised (d=30)", xbs[yb == 0],
                 xbs[yb == 1], d30)]


def halves(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    perm = np.random.default_rng(SPLIT_SEED).permutation(len(a))
    cut = len(a) // 2
    return a[perm[:cut]].astype(np.float32), a[perm[cut:]].astype(np.float32)


def folds(a: np.ndarray) -> list[Moments]:
    parts = [fold_moments(a[i:i + 256].copy(), i) for i in range(0, len(a), 256)]
    return [combine_all([p[f] for p in parts]) for f in range(N_FOLDS)]


# ---------------------------------------------------------------------------------------
# ddrp


def _stored(model: SketchModel, side: str, v: np.ndarray) -> np.ndarray:
    s = (v.astype(np.float64) @ model.side(side).matrix + model.side(side).offset)
    s = s.astype(np.float32)
    layout = model_layout(model)
    if layout.name == "float32":
        return s
    return decode(encode(s, layout, model.seed, side, 0), layout)


def ddrp_errors(fx: list[Moments], fw: list[Moments], xt: np.ndarray, wt: np.ndarray,
                exact: np.ndarray, budget: int, seeds: int, float32: bool
                ) -> tuple[np.ndarray, Layout]:
    """(seeds, pairs) errors of ddrp at ``budget`` bytes: the budget's choice, or float32
    sketches of K = budget / 4 (``float32``)."""
    mx, mw = combine_all(fx), combine_all(fw)
    chosen, options = choose_budget(fx, fw, budget, dtype="float32" if float32 else None)
    k = chosen.layout.k
    first = build(mx, mw, k, "auto", 0, folds=(fx, fw))
    shrink = (first.info["shrinkage_x"], first.info["shrinkage_w"])
    out = []
    for seed in range(seeds):
        model = first if seed == 0 else build(mx, mw, k, "auto", seed, shrink, folds=(fx, fw))
        model = budgeted_model(model, budget, chosen, options)
        est = _stored(model, "x", xt).astype(np.float64) @ \
            _stored(model, "w", wt).astype(np.float64).T
        out.append((est - exact).ravel())
    return np.array(out), chosen.layout


# ---------------------------------------------------------------------------------------
# FAISS and PCA (biased, deterministic)


def faiss_estimate(spec: str, train: np.ndarray, xt: np.ndarray, wt: np.ndarray) -> np.ndarray:
    import faiss

    index = faiss.index_factory(train.shape[1], spec)
    inner = faiss.downcast_index(index.index if hasattr(index, "index") else index)
    if hasattr(inner, "do_polysemous_training"):
        inner.do_polysemous_training = False  # a search-time aid, irrelevant to the codes
    index.train(np.ascontiguousarray(train, dtype=np.float32))
    dx = index.sa_decode(index.sa_encode(np.ascontiguousarray(xt)))
    dw = index.sa_decode(index.sa_encode(np.ascontiguousarray(wt)))
    return np.asarray(dx.astype(np.float64) @ dw.astype(np.float64).T)


def faiss_specs(d: int, budget: int, n_train: int) -> dict[str, str]:
    """FAISS codecs storing ``budget`` bytes per vector: PQ and OPQ with ``budget`` 8-bit
    sub-quantizers (PQ needs d divisible by them; both need ≥ 256 training rows), 8-bit
    scalar quantization (d bytes) and 4-bit (d/2 bytes)."""
    out = {}
    if n_train >= 256 and budget <= d:
        if d % budget == 0:
            out["faiss PQ"] = f"PQ{budget}x8"
        d2 = budget * -(-d // budget)
        out["faiss OPQ"] = f"OPQ{budget}_{d2},PQ{budget}x8"
    if budget == d:
        out["faiss SQ8"] = "SQ8"
    if 2 * budget == d:
        out["faiss SQ4"] = "SQ4"
    return out


def pca_estimate(train: np.ndarray, xt: np.ndarray, wt: np.ndarray, k: int) -> np.ndarray:
    """Reconstructions from the top-k principal components of the fit rows (k float32 per
    vector; the mean and basis are shared, not per vector)."""
    t = train.astype(np.float64)
    mu = t.mean(0)
    basis = np.linalg.svd(t - mu, full_matrices=False)[2][:k].T
    rx = mu + (xt - mu) @ basis @ basis.T
    rw = mu + (wt - mu) @ basis @ basis.T
    return np.asarray(rx @ rw.T)


# ---------------------------------------------------------------------------------------


def run_case(case: Case, seeds: int) -> list[dict[str, Any]]:
    x_fit, xt = halves(case.x)
    w_fit, wt = halves(case.w)
    fx, fw = folds(x_fit), folds(w_fit)
    exact = xt.astype(np.float64) @ wt.astype(np.float64).T
    energy = float(np.mean(exact ** 2))
    train = np.concatenate([x_fit, w_fit])
    d = case.x.shape[1]
    rows = []
    for b in case.budgets:
        row: dict[str, Any] = {"case": case.name, "d": d, "bytes": b}
        for name, f32 in (("ddrp budget", False), ("ddrp float32", True)):
            err, layout = ddrp_errors(fx, fw, xt, wt, exact, b, seeds, f32)
            row[name] = float(np.mean(err ** 2)) / energy
            if not f32:
                row["layout"] = (f"{layout.name} K={layout.k}" +
                                 (f" ({layout.head} f16)" if layout.is_mixed else ""))
                test = seed_test(err, exact.ravel(), np.outer(
                    np.linalg.norm(xt, axis=1), np.linalg.norm(wt, axis=1)).ravel())
                row["bias p"] = test["p_value"]
        for name, spec in faiss_specs(d, b, len(train)).items():
            row[name] = float(np.mean((faiss_estimate(spec, train, xt, wt) - exact) ** 2)) \
                / energy
        if b // 4 >= 1:
            row["PCA float32"] = float(np.mean((pca_estimate(train, xt, wt, min(b // 4, d))
                                                - exact) ** 2)) / energy
        rows.append(row)
        print(_line(row), flush=True)
    return rows


COLUMNS = ("ddrp budget", "ddrp float32", "faiss PQ", "faiss OPQ", "faiss SQ8", "faiss SQ4",
           "PCA float32")


def _cell(v: Any) -> str:
    return "-" if v is None else f"{v:.2g}"


def _line(r: dict[str, Any]) -> str:
    gain = r["ddrp float32"] / r["ddrp budget"] if r["ddrp budget"] > 0 else float("inf")
    return (f"| {r['case']} | {r['bytes']} | {r['layout']} | "
            + " | ".join(_cell(r.get(c)) for c in COLUMNS)
            + f" | {gain:.3g}x | {r['bias p']:.2g} |")


def table(rows: list[dict[str, Any]], seeds: int) -> str:
    head = ("| case | bytes/vector | budget's choice | " + " | ".join(COLUMNS)
            + " | float32 / budget | bias p |")
    sep = "|" + "---|" * (len(COLUMNS) + 5)
    note = (f"relative MSE over every held-out pair; ddrp: mean over {seeds} seeds, `bias p`: "
            "the budget sketch's unbiasedness over those seeds (one contrast per seed, "
            "t-tested; small p = bias); FAISS and PCA are biased and deterministic.")
    return "\n".join([head, sep, *(_line(r) for r in rows), "", note])


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    plt = pyplot()

    names = list(dict.fromkeys(r["case"] for r in rows))
    fig, axes = plt.subplots(1, len(names), figsize=(4.5 * len(names), 4), squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        mine = [r for r in rows if r["case"] == name]
        for i, col in enumerate(COLUMNS):
            pts = [(r["bytes"], r[col]) for r in mine if r.get(col) is not None]
            if pts:
                bx, vy = zip(*pts, strict=True)
                ax.plot(bx, np.maximum(vy, 1e-16), "o-" if len(pts) > 1 else "o", label=col,
                        color=f"C{i}")
        ax.axvline(mine[0]["d"], color="grey", lw=0.5)
        ax.set(xscale="log", yscale="log", xlabel="bytes per vector", title=name)
    axes[0][0].set_ylabel("relative MSE of x.w (held-out pairs)")
    handles = {h.get_label(): h for ax in axes[0] for h in ax.get_lines()
               if not str(h.get_label()).startswith("_")}
    fig.legend(list(handles.values()), list(handles), loc="lower center", ncol=len(handles),
               fontsize=8)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--out-dir", default=str(OUT))
    args = ap.parse_args()
    import faiss

    faiss.omp_set_num_threads(1)
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    with threadpool_limits(limits=1):
        for case in cases():
            rows += run_case(case, args.seeds)
    text = table(rows, args.seeds)
    print(text)
    (out / "bytes.md").write_text(text + "\n")
    plot(rows, out / "bytes.png")
    print(f"wrote {out / 'bytes.md'} and {out / 'bytes.png'}")


if __name__ == "__main__":
    main()
