"""Accuracy side of ``--stats-fraction``: how much of auto's gain over gaussian survives when
the statistics come from F = 1, 0.1 and 0.01 of the row blocks.

Two data sets, each split into rows the statistics may see (written as .npy) and held-out
rows (never seen: X rows and W rows from outside the fit):

* digits: scikit-learn's 1,797 digit images (d=64) vs weight vectors of bootstrap
  logistic-regression classifiers (``scripts/demo_data.py``'s ``digits_pair``); fit on 1,297
  images and the weights of 15 fits (150 rows), evaluate on the 500 other images x the 50
  weights of 5 other fits; K=16, block_rows=8 (163 + 19 blocks);
* synthetic: X and W with energy in different directions and nonzero means (benchlib's
  spectrum), d=256; fit on 200,000 x 40,000 rows, evaluate on 2,000 x 500 others; K=32,
  block_rows=256 (782 + 157 blocks).

A third variant takes only X's statistics from the fraction and W's from all its rows
(``plan_stats`` + ``compute_moments`` + ``build``): W is often small. For each seed the model is
fitted with ``plan_fit(..., stats_fraction=F, block_rows=B)`` +
``fit_model(plan, scheduler="threads")`` (the seed also picks the blocks), the held-out rows
are sketched with ``sketch_numpy`` and the MSE of ``S @ T.T`` against ``X @ W.T`` is taken over
all held-out pairs. Gain = mean gaussian MSE / mean auto MSE over the seeds.

    python benchmarks/fraction.py [--seeds 10]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from benchlib import OUT, ROOT, check_library, library_version, load, make_block, spectrum

FRACTIONS = (1.0, 0.1, 0.01)


def digits() -> dict[str, Any]:
    """The digits pair split into fitted and held-out rows."""
    sys.path.insert(0, str(ROOT / "scripts"))
    from demo_data import digits_pair

    x, w = digits_pair(n_fits=20, seed=0)
    rng = np.random.default_rng(0)
    order = rng.permutation(len(x))
    fit_x, test_x = x[order[:1297]], x[order[1297:]]
    fit_w, test_w = w[:150], w[150:]  # weights of fits 0-14 vs 15-19
    return {"name": "digits", "k": 16, "block_rows": 8, "fit": (fit_x, fit_w),
            "test": (test_x, test_w)}


def synthetic(n_x: int = 200_000, n_w: int = 40_000) -> dict[str, Any]:
    """benchlib's X/W spectrum at d=256, with held-out rows from other seeds."""
    sp = spectrum(256)
    fit_x = np.concatenate([make_block(sp, "x", i, 50_000) for i in range(n_x // 50_000)])
    fit_w = make_block(sp, "w", 0, n_w)
    return {"name": "synthetic", "k": 32, "block_rows": 256, "fit": (fit_x, fit_w),
            "test": (make_block(sp, "x", 999, 2_000), make_block(sp, "w", 999, 500))}


def mse(model: Any, test: tuple[np.ndarray, np.ndarray], exact: np.ndarray) -> float:
    """Mean squared error of the sketched inner products over all held-out pairs."""
    import ddrp_dask as dd

    s = dd.sketch_numpy(model, "x", test[0]).astype(np.float64)
    t = dd.sketch_numpy(model, "w", test[1]).astype(np.float64)
    return float(np.mean((s @ t.T - exact) ** 2))


def evaluate(data: dict[str, Any], seeds: int, tmp: Path) -> list[dict[str, Any]]:
    """MSE of gaussian and of auto at each F, averaged over seeds."""
    import ddrp_dask as dd

    xp, wp = tmp / f"{data['name']}_x.npy", tmp / f"{data['name']}_w.npy"
    np.save(xp, data["fit"][0])
    np.save(wp, data["fit"][1])
    test = data["test"]
    exact = test[0].astype(np.float64) @ test[1].astype(np.float64).T
    k, br = data["k"], data["block_rows"]
    rows = []
    for method, fractions in (("gaussian", (1.0,)), ("auto", FRACTIONS)):
        for f in fractions:
            errs, predicted, fitted, t0 = [], [], [], time.perf_counter()
            for seed in range(seeds):
                plan = dd.plan_fit(str(xp), str(wp), k, str(tmp / "model"), method=method,
                                   seed=seed, stats_fraction=f, block_rows=br)
                model = dd.fit_model(plan, scheduler="threads")
                errs.append(mse(model, test, exact))
                predicted.append(float(model.info["gain"]))
                fitted.append((model.info["n_x"], model.info["n_w"]))
            blocks = (plan.n_blocks("x"), plan.n_blocks("w"))
            used = (len(plan.stats_blocks("x")), len(plan.stats_blocks("w")))
            rows.append({"data": data["name"], "method": method, "F": f, "k": k,
                         "mse": float(np.mean(errs)), "mse_sd": float(np.std(errs)),
                         "predicted_gain": float(np.mean(predicted)), "blocks": blocks,
                         "blocks_used": used, "rows_fitted": fitted[-1],
                         "seconds": time.perf_counter() - t0, "mean_sq_exact":
                         float(np.mean(exact**2))})
            print(f"  {data['name']:<9} {method:<8} F={f:<5} MSE {rows[-1]['mse']:.4g} "
                  f"({seeds} seeds, {rows[-1]['seconds']:.1f} s)", flush=True)
    # F on X only, W's statistics from all its rows: what a per-source fraction would give
    mw = dd.compute_moments(dd.plan_stats(str(wp), str(wp), block_rows=br), "threads")["x"]
    for f in FRACTIONS[1:]:
        errs, predicted, t0 = [], [], time.perf_counter()
        for seed in range(seeds):
            plan = dd.plan_stats(str(xp), str(wp), block_rows=br, stats_fraction=f, seed=seed)
            mx = dd.compute_moments(plan, "threads")["x"]
            model = dd.build(mx, mw, k, "auto", seed)
            errs.append(mse(model, test, exact))
            predicted.append(float(model.info["gain"]))
        rows.append({"data": data["name"], "method": "auto, F on X only", "F": f, "k": k,
                     "mse": float(np.mean(errs)), "mse_sd": float(np.std(errs)),
                     "predicted_gain": float(np.mean(predicted)),
                     "blocks": (plan.n_blocks("x"), plan.n_blocks("w")),
                     "blocks_used": (len(plan.stats_blocks("x")), plan.n_blocks("w")),
                     "rows_fitted": (mx.n, mw.n), "seconds": time.perf_counter() - t0,
                     "mean_sq_exact": float(np.mean(exact**2))})
        print(f"  {data['name']:<9} auto, F on X only F={f:<5} MSE {rows[-1]['mse']:.4g}",
              flush=True)
    base = rows[0]["mse"]
    for r in rows:
        r["gain"] = base / r["mse"]
    return rows


def main(argv: list[str] | None = None) -> int:
    """Evaluate both data sets, print the table, write bench-out/fraction.json."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=10)
    args = ap.parse_args(argv)
    version = library_version()
    print(f"fraction: {args.seeds} seeds, load {load():.2f}; {version}")
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for make in (digits, synthetic):
            rows += evaluate(make(), args.seeds, Path(tmp))
    print(f"\n=== gain of auto over gaussian on held-out pairs vs --stats-fraction "
          f"(load {load():.2f}) ===")
    print(f"{'data':<10} {'K':>3} {'method':<18} {'F':>5} {'blocks used x/w':>16} "
          f"{'rows fitted x/w':>16} {'MSE':>10} {'± sd':>9} {'gain':>7} {'predicted':>9} "
          f"{'gain vs F=1':>11}")
    for r in rows:
        full = next(q for q in rows if q["data"] == r["data"] and q["method"] == "auto"
                    and q["F"] == 1.0)
        rel = f"{r['gain'] / full['gain']:.0%}" if r["method"].startswith("auto") else ""
        used = f"{r['blocks_used'][0]}/{r['blocks'][0]} {r['blocks_used'][1]}/{r['blocks'][1]}"
        print(f"{r['data']:<10} {r['k']:>3} {r['method']:<18} {r['F']:>5g} {used:>16} "
              f"{r['rows_fitted'][0]:>7}/{r['rows_fitted'][1]:<8} {r['mse']:>10.4g} "
              f"{r['mse_sd']:>9.2g} {r['gain']:>6.1f}x {r['predicted_gain']:>8.1f}x {rel:>11}")
    print("(MSE over all held-out pairs, mean over seeds; ± sd: across seeds; gain: gaussian "
          "MSE / this MSE; predicted: the build's own prediction on the fitted rows; "
          "gain vs F=1: share of the full-statistics gain kept; 'F on X only': statistics of X "
          "from the fraction, of W from all its rows, built with ddrp_dask.build — not a CLI "
          "option today)")
    out = OUT / "fraction.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(rows, indent=1))
    print(f"wrote {out}")
    check_library(version)
    return 0


if __name__ == "__main__":
    sys.exit(main())
