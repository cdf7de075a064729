"""Learning on sketches: test accuracy of a linear classifier trained on K-column sketches.

Real data that scikit-learn ships (no download): ``digits`` (1797 x 64, 10 classes),
``breast_cancer`` (569 x 30, 2 classes, raw column scales from 1e-3 to 1e3) and ``wine``
(178 x 13, 3 classes). For every seed the rows are split 70/30 (stratified) into train and
test; every classifier is ``StandardScaler`` + ``LogisticRegression`` trained on the train
rows, and the table shows test accuracy (mean ± std over seeds) of:

* ``full``        the classifier on all d raw features (the target);
* ``auto+prior``  on ddrp ``auto`` sketches fitted with W = ``bootstrap_weights`` of a
  labelled sample (20 bootstrap logistic fits on at most ``--labelled`` train rows): the
  paper's use, W a prior over the model vectors that the classifier will learn;
* ``auto (W=X)``  on ``auto`` sketches of the symmetric fit (no labels: PCA-like head);
* ``gaussian``    on an oblivious Gaussian projection of equal K;
* ``asymmetric``  on the paper's sketches with the same prior W.

Every sketch is ``AsymmetricRandomProjection(K, method, random_state=seed)`` fitted on the
train rows only, so no test row informs the projection.

Reading the table: ``auto`` spends 2 of its K columns on the exact mean terms
``[x̃·μw + μx·μw, 1]``. With a binary prior, ``x̃·μw`` is the bootstrap ensemble's own
decision value (so ``auto+prior`` is near ``full`` from K = 3 on breast_cancer); with a
multinomial prior the class vectors sum to about zero, μw ≈ 0 and both columns carry nothing
(digits at K = 4 has 2 informative columns against the others' 4).

    python benchmarks/learning.py [--quick] [--seeds N] [--labelled N] [--out bench-out]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from benchlib import OUT, pyplot
from threadpoolctl import threadpool_limits

from ddrp_dask import AsymmetricRandomProjection, bootstrap_weights

TEST_FRACTION = 0.3
N_BOOT = 20
#: (label, method, W): W "prior" = bootstrap weights, "x" = the symmetric fit
SKETCHES = (("auto+prior", "auto", "prior"), ("auto (W=X)", "auto", "x"),
            ("gaussian", "gaussian", "prior"), ("asymmetric", "asymmetric", "prior"))
COLUMNS = ("full", *(label for label, _, _ in SKETCHES))


@dataclass(frozen=True)
class Dataset:
    """A labelled real data set and the K values to try."""

    name: str
    x: np.ndarray
    y: np.ndarray
    ks: tuple[int, ...]


@dataclass
class Cell:
    """Accuracy of one (data set, K, column) over the seeds; K = 0 for ``full``."""

    dataset: str
    k: int
    column: str
    accuracies: list[float]

    @property
    def mean(self) -> float:
        return float(np.mean(self.accuracies))

    @property
    def std(self) -> float:
        return float(np.std(self.accuracies, ddof=1)) if len(self.accuracies) > 1 else 0.0


def load_datasets() -> list[Dataset]:
    """digits, breast_cancer and wine as float64 features and integer labels."""
    from sklearn.datasets import load_breast_cancer, load_digits, load_wine

    out = []
    for name, loader, ks in (("digits", load_digits, (4, 8, 16, 32)),
                             ("breast_cancer", load_breast_cancer, (3, 4, 8, 16)),
                             ("wine", load_wine, (3, 4, 6, 10))):
        x, y = loader(return_X_y=True)
        out.append(Dataset(name, x.astype(np.float64), y, ks))
    return out


def classifier() -> Any:
    """The downstream model, the same for every column."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000))


def accuracy(train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray]
             ) -> float:
    """Test accuracy of ``classifier()`` trained on ``train``."""
    clf = classifier().fit(*train)
    return float(np.mean(clf.predict(test[0]) == test[1]))


def run_seed(ds: Dataset, seed: int, labelled: int) -> dict[tuple[int, str], float]:
    """Every (K, column) accuracy for one split of one data set."""
    from sklearn.model_selection import train_test_split

    x_tr, x_te, y_tr, y_te = train_test_split(ds.x, ds.y, test_size=TEST_FRACTION,
                                              stratify=ds.y, random_state=seed)
    out = {(0, "full"): accuracy((x_tr, y_tr), (x_te, y_te))}
    prior = bootstrap_weights(x_tr, y_tr, n_boot=N_BOOT, model="logistic",
                              sample=min(labelled, len(x_tr)), seed=seed)
    for k in ds.ks:
        for label, method, w_kind in SKETCHES:
            arp = AsymmetricRandomProjection(k, method=method, random_state=seed)
            arp.fit(x_tr, W=prior if w_kind == "prior" else None)
            out[(k, label)] = accuracy((arp.transform(x_tr), y_tr), (arp.transform(x_te), y_te))
    return out


def run(datasets: list[Dataset], seeds: int, labelled: int) -> list[Cell]:
    """All cells, accuracies over ``seeds`` splits."""
    cells: dict[tuple[str, int, str], Cell] = {}
    for ds in datasets:
        for seed in range(seeds):
            for (k, column), acc in run_seed(ds, seed, labelled).items():
                cells.setdefault((ds.name, k, column), Cell(ds.name, k, column, []))
                cells[(ds.name, k, column)].accuracies.append(acc)
    return list(cells.values())


# ---------------------------------------------------------------------------------------
# output


def print_table(datasets: list[Dataset], cells: list[Cell], seeds: int, labelled: int) -> None:
    """One block per data set: a row per K, a column per method, ``full`` as reference."""
    by_key = {(c.dataset, c.k, c.column): c for c in cells}
    print(f"test accuracy, mean ± std over {seeds} seeds (70/30 stratified splits); "
          f"prior W: {N_BOOT} bootstrap logistic fits on ≤{labelled} labelled train rows")
    header = f"{'data set':<14} {'d':>3} {'K':>3}  " + "  ".join(f"{c:>13}" for c in COLUMNS)
    print(header)
    print("-" * len(header))
    for ds in datasets:
        full = by_key[(ds.name, 0, "full")]
        for i, k in enumerate(ds.ks):
            row = [f"{full.mean:.3f}±{full.std:.3f}" if i == 0 else ""]
            row += [f"{by_key[(ds.name, k, c)].mean:.3f}±{by_key[(ds.name, k, c)].std:.3f}"
                    for c in COLUMNS[1:]]
            print(f"{ds.name if i == 0 else '':<14} {ds.x.shape[1] if i == 0 else '':>3} "
                  f"{k:>3}  " + "  ".join(f"{v:>13}" for v in row))


def plot(datasets: list[Dataset], cells: list[Cell], path: Path) -> None:
    """Accuracy vs K, one panel per data set; ``full`` as a dashed line."""
    plt = pyplot()

    fig, axes = plt.subplots(1, len(datasets), figsize=(5.2 * len(datasets), 4.2),
                             squeeze=False)
    for ax, ds in zip(axes[0], datasets, strict=True):
        mine = {(c.k, c.column): c for c in cells if c.dataset == ds.name}
        full = mine[(0, "full")]
        ax.axhline(full.mean, color="black", ls="--", lw=1, label=f"full (d={ds.x.shape[1]})")
        for column in COLUMNS[1:]:
            ks = list(ds.ks)
            means = [mine[(k, column)].mean for k in ks]
            stds = [mine[(k, column)].std for k in ks]
            ax.errorbar(ks, means, yerr=stds, marker="o", capsize=3, label=column)
        ax.set_xscale("log", base=2)
        ax.set_xticks(ds.ks, [str(k) for k in ds.ks])
        ax.set_xlabel("K (stored columns)")
        ax.set_ylabel("test accuracy")
        ax.set_title(ds.name)
        ax.grid(True, alpha=0.3)
    axes[0][0].legend(fontsize=8, loc="lower right")
    fig.suptitle("LogisticRegression on K-column sketches (mean ± std over seeds)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark, print the table, write the plot and the raw accuracies."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 seeds instead of 10")
    parser.add_argument("--seeds", type=int, default=None, help="splits per data set")
    parser.add_argument("--labelled", type=int, default=300,
                        help="labelled train rows the prior is estimated from (default 300)")
    parser.add_argument("--out", default=str(OUT), help="output directory")
    args = parser.parse_args(argv)
    seeds = args.seeds or (3 if args.quick else 10)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    datasets = load_datasets()
    # small problems: one BLAS thread is much faster on 2 cores (as in maths/prior.py)
    with threadpool_limits(limits=1), warnings.catch_warnings():
        warnings.simplefilter("error")  # a non-converged fit would make the table lie
        cells = run(datasets, seeds, args.labelled)
    print_table(datasets, cells, seeds, args.labelled)
    plot(datasets, cells, out / "learning.png")
    (out / "learning.json").write_text(json.dumps(
        [asdict(c) | {"mean": c.mean, "std": c.std} for c in cells], indent=1))
    print(f"\nwrote {out / 'learning.png'} and {out / 'learning.json'} "
          f"in {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
