"""Held-out accuracy of ``auto`` (``crossfit.fit_optimal``, ``docs/method.md §5``) against
head-tail (``docs/method.md §4``) and the build methods.

Real data that scikit-learn ships (no download). Each case splits X's rows and W's rows
into fit and held-out halves (``--splits`` fixed split seeds); fold statistics come from the
fit rows only; every method is built for ``--seeds`` seeds and its MSE of s·t against x·w
is measured over all held-out pairs. Methods: ``auto7`` (``fit_optimal``), ``s4``
(``baselines.fit_head_tail``, the head-tail construction with Ledoit–Wolf), and ``asymmetric``,
``truncated``, ``gaussian`` via ``ddrp_dask.build.build``. Gains are over gaussian at the
same k (ratio of split-mean MSEs); ``held/pred`` is the measured held-out MSE over the
out-of-sample predicted one (geometric mean over splits, with its range).

    python benchmarks/heldout.py [--seeds 20] [--splits 5] [--out-dir bench-out] [--no-timing]
    python benchmarks/heldout.py --search [--splits 3]   # the refined search against the full
"""

from __future__ import annotations

import argparse
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from baselines import fit_head_tail
from benchlib import OUT, pyplot
from threadpoolctl import threadpool_limits

from ddrp_dask.maths.build import build
from ddrp_dask.maths.crossfit import OptimalFit, fit_optimal
from ddrp_dask.maths.folds import N_FOLDS, fold_moments
from ddrp_dask.maths.model import SideMap
from ddrp_dask.maths.stats import Moments, combine_all

SPLIT_SEED = 2024
METHODS = ("auto7", "s4", "asymmetric", "truncated", "gaussian")


@dataclass(frozen=True)
class Case:
    name: str
    x: np.ndarray
    w: np.ndarray
    ks: tuple[int, ...]


def _logistic_weights(x: np.ndarray, y: np.ndarray, fits: int) -> np.ndarray:
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
    """Six X/W pairs from scikit-learn's bundled data sets."""
    from sklearn import datasets as skd

    xd, yd = skd.load_digits(return_X_y=True)
    xb, yb = skd.load_breast_cancer(return_X_y=True)
    xbs = (xb - xb.mean(0)) / xb.std(0)
    xw, yw = skd.load_wine(return_X_y=True)
    xdi, ydi = skd.load_diabetes(return_X_y=True)
    with threadpool_limits(limits=1):
        wd = _logistic_weights(xd, yd, 6)  # 60 weight vectors
    return [
        Case("digits_vs_lr_weights", xd, wd, (8, 16, 32)),
        Case("digits_0-4_vs_5-9", xd[yd < 5], xd[yd >= 5], (8, 16, 32)),
        Case("cancer_malignant_vs_benign_raw", xb[yb == 0], xb[yb == 1], (4, 8, 16)),
        Case("cancer_malignant_vs_benign_std", xbs[yb == 0], xbs[yb == 1], (4, 8, 16)),
        Case("wine_raw_class0-1_vs_2", xw[yw < 2], xw[yw == 2], (4, 8)),
        Case("diabetes_high_vs_low", xdi[ydi > np.median(ydi)], xdi[ydi <= np.median(ydi)],
             (3, 5)),
    ]


def halves(a: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    perm = np.random.default_rng(seed).permutation(len(a))
    cut = len(a) // 2
    return a[perm[:cut]], a[perm[cut:]]


def folds(a: np.ndarray) -> list[Moments]:
    """Fold statistics in blocks of 256 rows, merged as pass 1 would."""
    parts = [fold_moments(a[i:i + 256].copy(), i) for i in range(0, len(a), 256)]
    return [combine_all([p[f] for p in parts]) for f in range(N_FOLDS)]


def _mse(x_map: SideMap, w_map: SideMap, x: np.ndarray, w: np.ndarray,
         exact: np.ndarray) -> float:
    s = x @ x_map.matrix + x_map.offset
    t = w @ w_map.matrix + w_map.offset
    return float(np.mean((s @ t.T - exact) ** 2))


def builders(fx: list[Moments], fw: list[Moments], k: int
             ) -> tuple[dict[str, Callable[[int], tuple[SideMap, SideMap]]], dict[str, float]]:
    """Per method, a function seed → (x map, w map); and the predicted out-of-sample MSEs."""
    mx, mw = combine_all(fx), combine_all(fw)
    first = fit_optimal(fx, fw, k, 0)
    chosen = (first.info["shrinkage_x"], first.info["shrinkage_w"])
    s4 = fit_head_tail(mx, mw, k, 0, "lw", fx, fw)

    def auto7(s: int) -> tuple[SideMap, SideMap]:
        f = fit_optimal(fx, fw, k, s, chosen)
        return f.x, f.w

    def head_tail(s: int) -> tuple[SideMap, SideMap]:
        f = fit_head_tail(mx, mw, k, s, "lw")
        return f.x, f.w

    def method(name: str) -> Callable[[int], tuple[SideMap, SideMap]]:
        def make(s: int) -> tuple[SideMap, SideMap]:
            m = build(mx, mw, k, name, s)
            return m.x, m.w
        return make

    out = {"auto7": auto7, "s4": head_tail}
    out.update({name: method(name) for name in ("asymmetric", "truncated", "gaussian")})
    pred = {"auto7": first.info["predicted_mse"], "s4": s4.info["predicted_mse"],
            "auto7_in": first.info["predicted_mse_in_sample"],
            "alloc": first.info["allocation"], "shr": (chosen[0]["kind"], chosen[1]["kind"])}
    return out, pred  # type: ignore[return-value]


def run_case(case: Case, seeds: int, splits: int) -> list[dict[str, object]]:
    """Per k: per split (fit/held-out halves of X and of W) the mean held-out MSE of every
    method over the seeds, and the predictions of the split's fit."""
    rows = []
    for k in case.ks:
        per_split = []
        for sp in range(splits):
            x_fit, x_held = halves(case.x, SPLIT_SEED + 2 * sp)
            w_fit, w_held = halves(case.w, SPLIT_SEED + 2 * sp + 1)
            fx, fw = folds(x_fit), folds(w_fit)
            exact = x_held @ w_held.T
            make, pred = builders(fx, fw, k)
            mse = {name: float(np.mean([_mse(*fn(s), x_held, w_held, exact)
                                        for s in range(1 if name == "truncated" else seeds)]))
                   for name, fn in make.items()}
            per_split.append((mse, pred))
        rows.append({"case": case.name, "d": case.x.shape[1], "n": len(x_fit),
                     "m": len(w_fit), "k": k, "splits": per_split})
    return rows


def summary(r: dict[str, object]) -> dict[str, object]:
    """Gains: ratio of the split-mean MSEs; held/pred: geometric mean of the per-split
    ratios, and their range."""
    per_split = r["splits"]
    assert isinstance(per_split, list)
    mean = {m: float(np.mean([mse[m] for mse, _ in per_split])) for m in METHODS}
    ratio = {m: np.array([mse[m] / pred[m] for mse, pred in per_split]) for m in ("auto7", "s4")}
    return {"gain": {m: mean["gaussian"] / mean[m] for m in METHODS}, "mse": mean,
            "held_pred": {m: float(np.exp(np.mean(np.log(v)))) for m, v in ratio.items()},
            "range": {m: (float(v.min()), float(v.max())) for m, v in ratio.items()},
            "alloc": per_split[0][1]["alloc"], "shr": per_split[0][1]["shr"]}


def table(rows: list[dict[str, object]]) -> str:
    head = ("| case | d | n/m fit | k | gauss MSE | gain auto7 | gain s4 | gain asym | "
            "gain trunc (biased) | auto7/s4 | held/pred auto7 [range] | held/pred s4 | "
            "alloc h/s/t/j | shrink x/w |")
    lines = [head, "|" + "---|" * 14]
    for r in rows:
        sm = summary(r)
        g, hp, rg, a = sm["gain"], sm["held_pred"], sm["range"], sm["alloc"]
        assert isinstance(g, dict) and isinstance(hp, dict) and isinstance(rg, dict)
        assert isinstance(a, dict) and isinstance(sm["mse"], dict)
        shr = sm["shr"]
        assert isinstance(shr, tuple)
        lines.append(
            f"| {r['case']} | {r['d']} | {r['n']}/{r['m']} | {r['k']} | "
            f"{sm['mse']['gaussian']:.3g} | {g['auto7']:.3g} | {g['s4']:.3g} | "
            f"{g['asymmetric']:.3g} | {g['truncated']:.3g} | {g['auto7'] / g['s4']:.2f} | "
            f"{hp['auto7']:.2f} [{rg['auto7'][0]:.2f}–{rg['auto7'][1]:.2f}] | {hp['s4']:.2f} | "
            f"{a['head']}/{a['sampled']}/{a['tail']}/{a['candidates']} | {shr[0]}/{shr[1]} |")
    return "\n".join(lines)


def plot(rows: list[dict[str, object]], path: Path) -> None:
    plt = pyplot()

    names = list(dict.fromkeys(str(r["case"]) for r in rows))
    fig, axes = plt.subplots(2, 3, figsize=(15, 8.5), squeeze=False)
    styles = {"auto7": ("C0", "o", "auto"), "s4": ("C1", "s", "s4: head-tail, LW"),
              "asymmetric": ("C2", "^", "asymmetric (paper)"),
              "truncated": ("C3", "x", "truncated (biased)"),
              "gaussian": ("0.4", "", "gaussian (=1)")}
    for ax, name in zip(axes.flat, names, strict=False):
        sub = [r for r in rows if r["case"] == name]
        ks = [int(r["k"]) for r in sub]  # type: ignore[call-overload]
        for m, (color, marker, label) in styles.items():
            gains = [summary(r)["gain"][m] for r in sub]  # type: ignore[index]
            ax.plot(ks, gains, color=color, marker=marker, label=label,
                    linestyle="--" if m in ("truncated", "gaussian") else "-")
        ax.set_yscale("log")
        ax.set_xscale("log", base=2)
        ax.set_xticks(ks, [str(k) for k in ks])
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("k")
        ax.set_ylabel("held-out MSE gain over gaussian")
        ax.grid(True, which="both", alpha=0.3)
    axes.flat[0].legend(fontsize=8)
    fig.suptitle("Held-out MSE gain over a gaussian sketch at the same k (log scale)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def timing() -> str:
    """Build time of fit_optimal on synthetic data at d = 256 and 1024, one BLAS thread."""
    lines = ["| d | k | n / m | build s | shrinkage search |", "|---|---|---|---|---|"]
    for d in (256, 1024):
        rng = np.random.default_rng(0)
        q, _ = np.linalg.qr(rng.standard_normal((d, d)))
        x = rng.standard_normal((4 * d, d)) * np.geomspace(4, 0.05, d) @ q.T + 3
        w = rng.standard_normal((2 * d, d)) * np.geomspace(0.05, 4, d) @ q.T - 1
        fx, fw = folds(x), folds(w)
        for k in (16, 64):
            t = time.perf_counter()
            f = fit_optimal(fx, fw, k, 0)
            lines.append(f"| {d} | {k} | {4 * d} / {2 * d} | {time.perf_counter() - t:.1f} | "
                         f"{f.info['shrinkage_search']} |")
    return "\n".join(lines)


def _gaussian_rows(rng: np.random.Generator, n: int, scales: np.ndarray, q: np.ndarray,
                   mean: float, cols: np.ndarray) -> np.ndarray:
    return ((rng.standard_normal((n, len(scales))) * scales) @ q.T + mean) * cols


def search_cases(d: int) -> list[tuple[str, int, int, np.ndarray, float]]:
    """Synthetic X/W at dimension d where the shrinkage matters, and one where it does not:
    (name, fit rows of X, of W, column scales, how far W's spectrum is rolled)."""
    flat = np.ones(d)
    return [("scarce rows", 2 * d, d, flat, 0.5),
            ("64 weight vectors", 8 * d, 64, flat, 0.5),
            ("raw column scales", 4 * d, 2 * d, np.geomspace(30.0, 0.03, d), 0.5),
            ("aligned, scarce", 2 * d, d, flat, 0.0),
            ("plentiful rows", 40 * d, 10 * d, flat, 0.5)]


def search(ds: tuple[int, ...], ks: tuple[int, ...], splits: int, seeds: int) -> str:
    """Held-out MSE and build time of the "refined" shrinkage search against the "full" one
    (every grid point, two sweeps): fresh held-out rows of the same distributions."""
    lines = ["| d | case | n/m fit | k | held-out MSE refined/full (geo mean [range]) | "
             "build s full / refined | pairs full / refined | shrink x/w full → refined |",
             "|---|---|---|---|---|---|---|---|"]
    for d in ds:
        for name, n, m, cols, roll in search_cases(d):
            for k in ks:
                ratios, times, pairs, shr = [], {"full": 0.0, "refined": 0.0}, {}, {}
                for sp in range(splits):
                    rng = np.random.default_rng([d, k, sp, len(name)])
                    q, _ = np.linalg.qr(rng.standard_normal((d, d)))
                    sx = np.geomspace(4, 0.05, d)
                    sw = np.roll(sx, int(roll * d))
                    x = _gaussian_rows(rng, n + 1000, sx, q, 3.0, cols)
                    w = _gaussian_rows(rng, m + 500, sw, q, -1.0, 1.0 / cols)
                    fx, fw = folds(x[:n]), folds(w[:m])
                    xh, wh = x[n:], w[m:]
                    exact = xh @ wh.T
                    held = {}
                    for kind in ("full", "refined"):
                        t = time.perf_counter()
                        f = fit_optimal(fx, fw, k, 0, search=kind)
                        times[kind] += (time.perf_counter() - t) / splits
                        pairs[kind] = f.info["shrinkage_search"].rsplit(", ", 1)[1].split()[0]
                        chosen = (f.info["shrinkage_x"], f.info["shrinkage_w"])
                        shr.setdefault(kind, f"{chosen[0]['kind']}/{chosen[1]['kind']}")
                        held[kind] = float(np.mean([
                            _mse(*_maps(fit_optimal(fx, fw, k, s, chosen)), xh, wh, exact)
                            for s in range(seeds)]))
                    ratios.append(held["refined"] / held["full"])
                r = np.array(ratios)
                lines.append(
                    f"| {d} | {name} | {n}/{m} | {k} | {np.exp(np.mean(np.log(r))):.3f} "
                    f"[{r.min():.3f}–{r.max():.3f}] | {times['full']:.2f} / "
                    f"{times['refined']:.2f} | {pairs['full']} / {pairs['refined']} | "
                    f"{shr['full']} → {shr['refined']} |")
                print(lines[-1], flush=True)
    return "\n".join(lines)


def _maps(f: OptimalFit) -> tuple[SideMap, SideMap]:
    return f.x, f.w


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--splits", type=int, default=5,
                        help="random fit/held-out splits (one split's held-out MSE is noisy: "
                        "held/pred varied 0.7–2.5 across splits of one case)")
    parser.add_argument("--out-dir", default=str(OUT))
    parser.add_argument("--no-timing", action="store_true")
    parser.add_argument("--search", action="store_true",
                        help="only the refined shrinkage search against the full one, on "
                        "synthetic data at d = 192, 256 and 384")
    args = parser.parse_args()
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if args.search:
        with threadpool_limits(limits=1):
            text = search((192, 256, 384), (16, 64), args.splits, min(args.seeds, 5))
        print(text)
        (out / "heldout_search.md").write_text(text + "\n")
        return
    rows = []
    with threadpool_limits(limits=1):
        for case in cases():
            t = time.perf_counter()
            rows += run_case(case, args.seeds, args.splits)
            print(f"# {case.name}: {time.perf_counter() - t:.1f} s", flush=True)
        text = table(rows)
        print(text)
        plot(rows, out / "heldout.png")
        (out / "heldout.md").write_text(text + "\n")
        if not args.no_timing:
            t_text = timing()
            print(t_text)
            (out / "heldout_timing.md").write_text(t_text + "\n")
    print(f"wrote {out / 'heldout.png'}")


if __name__ == "__main__":
    main()
