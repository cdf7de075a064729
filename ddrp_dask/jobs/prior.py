"""W from labels (``--w-from-labels``): bootstrap fits on a seeded sample of labelled rows.

The plan reads only the source's metadata; ``execute`` reads the sampled blocks, fits, and
writes the weight vectors as a .npy file (a path or URL, written whole or not at all by
``io.writer.write_npy``) that ``fit``/``run`` then use as their W source. A resumed job fits
again: the fits are seeded, so the file is rewritten with the same bytes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from ..errors import OptionError, require_extra
from ..graph.scheduler import Scheduler
from ..io import lifecycle
from ..io.registry import open_source
from ..io.source import Source
from ..io.writer import write_npy
from ..maths.prior import MODELS, bootstrap_weights
from ..options import check_block_rows, check_positive, check_seed
from .base import OnModel, Plan

__all__ = ["PriorPlan", "plan_prior", "prior_from_labels"]


@dataclass(frozen=True)
class PriorPlan(Plan[str]):
    """A validated W-prior job (see ``plan_prior``); ``execute`` returns the path written.
    It reads in this process (a seeded sample of blocks, not a pass)."""

    command: ClassVar[str] = "prior"

    source: Source
    label_column: str
    out: str
    n_boot: int = 20
    model: str = "logistic"
    sample: int = 10_000
    seed: int = 0
    block_rows: int = 0

    def __str__(self) -> str:
        return (f"W prior: {self.n_boot} {self.model} fits on a seeded sample of "
                f"{self.sample} labelled rows of {self.source.path} (label column "
                f"{self.label_column!r}), written to {self.out}; W's rows are known after "
                "the fits")

    def input_bytes(self) -> int:
        """Bytes of the labelled source."""
        return self.source.nbytes

    def weights(self) -> np.ndarray:
        """Read the sampled blocks and fit: the W prior, shape (m, d)."""
        src, rows = self.source, self.block_rows
        rng = np.random.default_rng([self.seed, 0x9A1])
        xs, ys, have = [], [], 0
        for b in rng.permutation(-(-src.n_rows // rows)):
            start = int(b) * rows
            stop = min(start + rows, src.n_rows)
            xs.append(src.read_rows(start, stop))
            ys.append(src.read_column(self.label_column, start, stop, "label column"))
            have += stop - start
            if have >= self.sample:
                break
        x, y = np.concatenate(xs), np.concatenate(ys)
        if not np.isfinite(np.sum(x, axis=0, dtype=np.float64)).all():
            raise OptionError(f"{src.path}: the labelled sample holds NaN or inf values")
        keep = np.sort(rng.choice(len(x), size=min(self.sample, len(x)), replace=False))
        return bootstrap_weights(x[keep], y[keep], n_boot=self.n_boot, model=self.model,
                                 seed=self.seed)

    def _run(self, scheduler: Scheduler, progress: bool, on_model: OnModel | None) -> str:
        """Fit and write the prior; returns its path."""
        write_npy(self.out, self.weights())
        return self.out


def plan_prior(source: str, label_column: str, out: str, columns: str | list[str] | None = None,
               n_boot: int = 20, model: str = "logistic", sample: int = 10_000, seed: int = 0,
               block_rows: int | None = None, overwrite: bool = False) -> PriorPlan:
    """Plan a W prior from the labelled Parquet ``source``; reads only metadata.

    Parameters
    ----------
    source : str
        Parquet file or directory (as for ``ddrp_dask.open_source``).
    label_column : str
        Column of class labels (logistic) or targets (ridge).
    out : str
        The .npy file written (refused if it exists, unless ``overwrite``).
    columns : str or list of str, optional
        The vector columns, as for ``open_source``.
    n_boot, model, seed :
        As for ``ddrp_dask.bootstrap_weights``.
    sample : int, default=10000
        Labelled rows used.
    block_rows : int, optional
        Rows per block read; default from d.
    overwrite : bool, default=False
    """
    require_extra("sklearn", "--w-from-labels (W from bootstrap fits)")
    src = open_source(source, columns)
    if src.kind != "parquet":
        raise OptionError(f"{source}: labels (--w-from-labels) need a Parquet source with a "
                          "label column")
    if label_column in getattr(src, "columns", ()):
        raise OptionError(f"{source}: the label column {label_column!r} is also a vector column")
    if model not in MODELS:
        raise OptionError(f"unknown model {model!r}; choose one of {', '.join(MODELS)}")
    if out != os.devnull:
        lifecycle.check_file_out(str(out), [source], overwrite)
    return PriorPlan(src, label_column, str(out), check_positive(n_boot, "prior fits"), model,
                     check_positive(sample, "prior sample"), check_seed(seed),
                     check_block_rows(block_rows, src.d))


def prior_from_labels(source: str, label_column: str, columns: str | list[str] | None = None,
                      n_boot: int = 20, model: str = "logistic", sample: int = 10_000,
                      seed: int = 0, block_rows: int | None = None) -> np.ndarray:
    """W estimated from a labelled Parquet source: ``bootstrap_weights`` on a seeded sample.

    Reads whole canonical blocks chosen at random until ``sample`` rows are in hand (never
    the whole source), then keeps a uniform sample of ``sample`` of their rows. Parameters
    as for ``plan_prior``.

    Returns
    -------
    ndarray of shape (m, d)
    """
    plan = plan_prior(source, label_column, os.devnull, columns, n_boot, model, sample, seed,
                      block_rows, overwrite=True)
    return plan.weights()
