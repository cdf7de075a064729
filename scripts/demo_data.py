"""Small real data for the demo and the accuracy benchmark: scikit-learn's digits.

X: the 1,797 8x8 digit images (d = 64) that scikit-learn ships. W: weight vectors of
multinomial logistic-regression classifiers trained on bootstrap samples of X (10 per fit),
the paper's "data points vs model weight vectors" use. X is written as Parquet with a
fixed-size-list column (beside an id column), W as .npy.

    python scripts/demo_data.py OUTDIR
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np


def digits_pair(n_fits: int = 20, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(X, W): digits images as float32 and bootstrap classifier weights as float32."""
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression
    from threadpoolctl import threadpool_limits

    x, y = load_digits(return_X_y=True)
    rng = np.random.default_rng(seed)
    weights = []
    # one BLAS thread: these small fits run ~15x faster than with two (they oversubscribe)
    with threadpool_limits(limits=1):
        for _ in range(n_fits):
            idx = rng.integers(0, len(x), len(x))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                clf = LogisticRegression(max_iter=300, C=0.05).fit(x[idx], y[idx])
            weights.append(clf.coef_)
    return x.astype(np.float32), np.concatenate(weights).astype(np.float32)


def write_demo(outdir: str | Path) -> tuple[Path, Path]:
    """Write ``digits.parquet`` (columns id, pixels) and ``weights.npy`` under ``outdir``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    x, w = digits_pair()
    pixels = pa.FixedSizeListArray.from_arrays(pa.array(x.ravel()), x.shape[1])
    table = pa.table({"id": np.arange(len(x)), "pixels": pixels})
    pq.write_table(table, out / "digits.parquet", row_group_size=512, use_dictionary=False)
    np.save(out / "weights.npy", w)
    return out / "digits.parquet", out / "weights.npy"


if __name__ == "__main__":
    xp, wp = write_demo(sys.argv[1] if len(sys.argv) > 1 else "demo-data")
    print(f"wrote {xp} and {wp}")
