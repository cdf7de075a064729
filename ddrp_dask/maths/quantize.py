"""Quantized storage layouts of sketches: fewer bytes per column, every estimate unbiased.

Pure numpy (``docs/quantized.md`` §1–§4). A layout stores a row's K sketch values as

* ``float32``: the values themselves (4 bytes each, no scale);
* ``float16``: float16 codes of v / s16 with s16 = 2^e a power of two per row (2 bytes a
  column; the exponent e in 1 byte, int8);
* ``int8``: int8 codes c in [−127, 127] of 127 · v / s8, s8 = 2^(e/64) with e the smallest
  integer with s8 ≥ the row's max |v| (1 byte a column; the log code e in 2 bytes, int16);
* ``mixed``: the first ``head`` columns (a sketch's exact, energy-carrying head) as float16
  codes with their own power-of-two scale, the rest as int8 codes with their own scale;
* ``int8max`` and ``mixedmax``: ``int8`` and ``mixed`` with the int8 scale s8 stored as a
  float32, the smallest float32 ≥ the row's max |v| — the max itself for float32 sketches,
  so the row's largest value sits on the grid (code ±127) and is stored exactly (4 bytes of
  scale instead of 2; worth it when one value carries most of a row's energy).

Scales are otherwise stored as integer codes, not as float32 (4 bytes each: half of an 8-byte
budget); the smallest code of each integer dtype (NaN for a float32 scale) marks a row that
was not finite. 2^(e/64) is
decoded as ``ldexp(table[e mod 64], e // 64)`` with a fixed table of the 64 roots 2^(r/64)
(computed once with ``decimal``, correctly rounded), never with libm's ``pow``, so every
machine decodes the same float64 scales.

Every code is drawn by **stochastic rounding** to one of the two grid points around the
value, with the probability that makes its mean the value; the per-row scale holds every
value of the row, so nothing is clipped, for any row, seen or not. The dither is a
counter-based hash of (seed, side, global row index, column): the codes of a row do not
depend on the block, chunk, scheduler or resume it was written in.

Decoding: ``v̂_j = s16 · f_j`` (float16 columns) and ``v̂_j = (s8 / 127) · c_j`` (int8
columns); the estimate of x·w is ``s16x s16w (fx · fw) + (s8x s8w / 127²) (cx · cw)``, one
product of the codes of each kind and a fixed rescaling per row pair (``estimate``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from decimal import Decimal, localcontext
from typing import Any

import numpy as np

from .methods import get
from .model import SketchModel

__all__ = ["EXACT_SCALE_DTYPE", "INT8_MAX", "LAYOUTS", "LOG_STEPS", "NARROW_SCALE_DTYPE",
           "WIDE_SCALE_DTYPE",
           "Codes", "Layout", "column_energy", "decode", "dither", "dither_key", "encode",
           "estimate", "expected_max_square", "head_columns", "layout_facts", "layout_of",
           "log_scale", "model_layout", "not_finite_rows", "quantized_model", "round_nearest",
           "rounding_mse", "rounding_variance", "scale_values", "stochastic_round_f16",
           "stochastic_round_int"]

#: Layout names: narrower columns from float32 to int8, then the mixed layout, then the two
#: whose int8 scale is the row's exact max as float32 (``Layout.exact_scale``).
LAYOUTS = ("float32", "float16", "int8", "mixed", "int8max", "mixedmax")
_MIXED = ("mixed", "mixedmax")
#: Largest int8 code; −128 is never used, so the grid is symmetric.
INT8_MAX = 127
#: Stored scale codes: the float16 part's exponent e (s16 = 2^e) and the int8 part's log code
#: e (s8 = 2^(e / LOG_STEPS)); each dtype's smallest value marks a row that was not finite.
WIDE_SCALE_DTYPE = np.dtype(np.int8)
NARROW_SCALE_DTYPE = np.dtype(np.int16)
#: The int8 part's scale in ``int8max`` / ``mixedmax``: s8 itself (NaN: not finite).
EXACT_SCALE_DTYPE = np.dtype(np.float32)
#: Steps of the int8 scale's grid per octave: s8 overshoots the row's max by < 2^(1/64) − 1
#: (1.1 %), so its grid is at most that much coarser than a float32 scale's.
LOG_STEPS = 64
_WIDE_E = (-127, 127)  # exponents of s16 (−128 is the sentinel); float16 codes reach 65504
_NARROW_E = (-32767, 32767)  # log codes of s8 (−32768 is the sentinel): 2^±511.98


def _roots() -> np.ndarray:
    """2^(r/64), r = 0 … 63, correctly rounded to float64 by ``decimal`` (pure software, so
    the same table on every machine)."""
    with localcontext() as ctx:
        ctx.prec = 60
        return np.array([float(Decimal(2) ** (Decimal(r) / LOG_STEPS))
                         for r in range(LOG_STEPS)], dtype=np.float64)


_ROOTS = _roots()
#: Counter bits reserved for the column index (K < 2^24).
_COL_BITS = 24
_TAG = 0x5D17_B7E5  # separates the dither's streams from every other use of the seed


# ---------------------------------------------------------------------------------------
# layouts


@dataclass(frozen=True)
class Layout:
    """How a row of K sketch values is stored.

    Attributes
    ----------
    name : {"float32", "float16", "int8", "mixed", "int8max", "mixedmax"}
    k : int
        Sketch columns.
    head : int
        Leading columns stored as float16 codes (K for ``float16``, 0 for ``int8``,
        ``int8max`` and ``float32``); the other columns are int8 codes.
    """

    name: str
    k: int
    head: int = 0

    @classmethod
    def of(cls, name: str, k: int, head: int = 0) -> Layout:
        """The layout ``name`` for K = ``k``; ``head`` is read only by the mixed layouts."""
        if name not in LAYOUTS:
            raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}, got {name!r}")
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        if name in _MIXED and not 0 <= head <= k:
            raise ValueError(f"{name} layout: head must be in 0..{k}, got {head}")
        h = head if name in _MIXED else k if name == "float16" else 0
        return cls(name, int(k), int(h))

    @property
    def is_mixed(self) -> bool:
        """``mixed`` or ``mixedmax``: a float16 head, int8 the rest."""
        return self.name in _MIXED

    @property
    def exact_scale(self) -> bool:
        """The int8 scale is stored as a float32, the row's exact max (``int8max``,
        ``mixedmax``), not as a log code."""
        return self.name in ("int8max", "mixedmax")

    @property
    def narrow_scale_dtype(self) -> np.dtype[Any]:
        """The stored dtype of the int8 part's scale: int16 log codes, or float32 values."""
        return EXACT_SCALE_DTYPE if self.exact_scale else NARROW_SCALE_DTYPE

    @property
    def wide(self) -> int:
        """float16 columns."""
        return 0 if self.name == "float32" else self.head

    @property
    def narrow(self) -> int:
        """int8 columns."""
        return 0 if self.name == "float32" else self.k - self.head

    @property
    def scale_bytes(self) -> int:
        """Bytes of the scale codes stored per row: 1 (int8 exponent) with float16 columns,
        2 (int16 log code) or 4 (float32, ``exact_scale``) with int8 columns."""
        return WIDE_SCALE_DTYPE.itemsize * int(self.wide > 0) + \
            self.narrow_scale_dtype.itemsize * int(self.narrow > 0)

    @property
    def bytes_per_row(self) -> int:
        """Every byte a row costs: codes and scales."""
        if self.name == "float32":
            return 4 * self.k
        return 2 * self.wide + self.narrow + self.scale_bytes


@dataclass(frozen=True)
class Codes:
    """The stored form of a block of rows in a quantized layout.

    Attributes
    ----------
    wide : ndarray of float16, shape (rows, layout.wide)
    wide_scale : ndarray of int8, shape (rows,)
        The exponents e of s16 = 2^e; −128 marks a row that was not finite (a skipped row).
    narrow : ndarray of int8, shape (rows, layout.narrow)
    narrow_scale : ndarray of int16 or float32, shape (rows,)
        The log codes e of s8 = 2^(e/64) (``log_scale``), the smallest with s8 ≥ the row's
        max |value| over its int8 columns; −32768 as above. Or, in the ``exact_scale``
        layouts, s8 itself as float32: the smallest float32 ≥ that max; NaN as above.
    """

    wide: np.ndarray
    wide_scale: np.ndarray
    narrow: np.ndarray
    narrow_scale: np.ndarray


# ---------------------------------------------------------------------------------------
# the dither: a counter-based uniform per (seed, side, row, column)


def dither_key(seed: int, side: str) -> tuple[int, int]:
    """Two 64-bit keys of the dither of ``side`` ("x" or "w") for ``seed``, from
    ``numpy.random.SeedSequence`` (independent of the build's draws and of the other side)."""
    if side not in ("x", "w"):
        raise ValueError(f"side must be 'x' or 'w', got {side!r}")
    state = np.random.SeedSequence([int(seed), 0 if side == "x" else 1, _TAG])
    a, b = state.generate_state(2, np.uint64)
    return int(a), int(b)


def _mix(z: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser (a bijection of uint64), wrapping arithmetic."""
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def dither(key: tuple[int, int], rows: np.ndarray, k: int, col0: int = 0) -> np.ndarray:
    """Uniforms in [0, 1), shape (len(rows), k), for global rows ``rows`` and columns
    ``col0 .. col0 + k − 1``: a hash of the counter (row · 2^24 + column) under ``key``.
    Distinct counters give distinct hashes (each step is a bijection), and a value depends
    on nothing but its key, row and column."""
    if k + col0 > 1 << _COL_BITS:
        raise ValueError(f"at most {1 << _COL_BITS} columns, got {k + col0}")
    r = np.asarray(rows, dtype=np.uint64)[:, None] << np.uint64(_COL_BITS)
    ctr = r | np.arange(col0, col0 + k, dtype=np.uint64)[None, :]
    z = _mix(_mix(ctr + np.uint64(key[0])) ^ np.uint64(key[1]))
    return (z >> np.uint64(11)).astype(np.float64) * 2.0 ** -53


# ---------------------------------------------------------------------------------------
# rounding


def stochastic_round_int(y: np.ndarray, u: np.ndarray) -> np.ndarray:
    """⌊y⌋ + 1 with probability y − ⌊y⌋, else ⌊y⌋ (u uniform): E = y. float64 out."""
    lo = np.floor(y)
    return lo + (u < y - lo)


def stochastic_round_f16(v: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Each value (float64, |v| ≤ 65504) to one of the two float16 numbers around it, the
    upper with probability (v − lo)/(hi − lo): E = v. Values that are float16 stay."""
    near = v.astype(np.float16)
    above = near.astype(np.float64) > v
    other = np.nextafter(near, np.where(above, np.float16(-np.inf), np.float16(np.inf)))
    lo = np.where(above, other, near).astype(np.float64)
    hi = np.where(above, near, other).astype(np.float64)
    gap = hi - lo
    exact = near.astype(np.float64) == v
    p_up = np.where(exact, 0.0, (v - lo) / np.where(gap > 0, gap, 1.0))
    return np.where(exact, near, np.where(u < p_up, hi, lo)).astype(np.float16)


def round_nearest(sketch: np.ndarray, layout: Layout) -> Codes:
    """The **biased** control: the same codes and scales with round-to-nearest instead of
    stochastic rounding (what tests show the bias test catches). Never stored by ddrp."""
    return _encode(np.asarray(sketch, dtype=np.float64), layout, None)


def log_scale(e: np.ndarray) -> np.ndarray:
    """2^(e/64) in float64 for integer log codes ``e``: ``ldexp`` of the fixed table of
    roots (exact powers of two times a correctly rounded root; no libm ``pow``)."""
    e = np.asarray(e, dtype=np.int64)
    return np.asarray(np.ldexp(_ROOTS[e % LOG_STEPS], (e // LOG_STEPS).astype(np.int32)))


def _pow2_code(m: np.ndarray) -> np.ndarray:
    """e with m < 2^e per row (frexp's exponent), clamped to −127 … 127 (float16 codes of
    v / 2^127 still fit: float32 values stay below 2^128); 1 for m = 0."""
    _, e = np.frexp(np.where(m > 0, m, 1.0))
    return np.clip(e, *_WIDE_E).astype(WIDE_SCALE_DTYPE)


def _log_code(m: np.ndarray) -> np.ndarray:
    """The smallest log code e with ``log_scale(e)`` ≥ m per row (0 for m = 0), clamped to
    −32767 … 32767: a first guess from log2, then corrected against the decoded table
    itself, so the choice does not depend on libm's log2."""
    pos = m > 0
    guess = np.ceil(LOG_STEPS * np.log2(np.where(pos, m, 1.0)))
    e = np.clip(np.nan_to_num(guess), *_NARROW_E).astype(np.int64)
    for _ in range(2):
        e = np.where(log_scale(e - 1) >= m, e - 1, e)
        e = np.clip(np.where(log_scale(e) < m, e + 1, e), *_NARROW_E)
    return np.where(pos, e, 0).astype(NARROW_SCALE_DTYPE)


def _float32_above(m: np.ndarray) -> np.ndarray:
    """The smallest float32 ≥ m per row (m itself when it is a float32, as the max of a
    float32 sketch row is): the ``exact_scale`` layouts' s8."""
    s = m.astype(np.float32)
    low = s.astype(np.float64) < m
    s[low] = np.nextafter(s[low], np.float32(np.inf))
    return s


def _grid_units(v: np.ndarray, s8: np.ndarray, exact: bool) -> np.ndarray:
    """v in units of the int8 grid step s8/127, per row. Exact scales: (127 · v) / s8, both
    operations correctly rounded and so monotone, whence |v| ≤ s8 gives |y| ≤ 127 · s8 / s8
    = 127 exactly (127 · s8 is exact in float64) and v = ±s8 gives ±127: never clipped, the
    max on the grid. Log codes: v / (s8/127), which s8's margin over the max keeps below 127."""
    if exact:
        return np.asarray(INT8_MAX * v / np.where(s8 > 0, s8, 1.0)[:, None])
    return np.asarray(v / (s8 / INT8_MAX)[:, None])


def scale_values(codes: Codes) -> tuple[np.ndarray, np.ndarray]:
    """The float64 scales (s16, s8) per row that ``codes``' scale codes stand for; NaN for a
    row that was not finite. A float32 ``narrow_scale`` is s8 itself (``exact_scale``)."""
    e16 = codes.wide_scale.astype(np.int64)
    s16 = np.where(e16 == _sentinel(WIDE_SCALE_DTYPE), np.nan, np.ldexp(1.0, e16))
    if np.issubdtype(codes.narrow_scale.dtype, np.floating):
        return s16, codes.narrow_scale.astype(np.float64)
    e8 = codes.narrow_scale.astype(np.int64)
    s8 = np.where(e8 == _sentinel(NARROW_SCALE_DTYPE), np.nan, log_scale(e8))
    return s16, s8


def _sentinel(dtype: np.dtype[Any]) -> int:
    return int(np.iinfo(dtype).min)


def not_finite_rows(scales: np.ndarray) -> np.ndarray:
    """Rows (any axis-1 entry) whose stored scale codes mark a row that was not finite — a
    skipped row: the sentinel of an integer scale dtype, or NaN (float)."""
    a = np.asarray(scales)
    a = a.reshape(len(a), -1)
    if np.issubdtype(a.dtype, np.integer):
        return np.asarray((a == _sentinel(a.dtype)).any(axis=1))
    return np.asarray(np.isnan(a).any(axis=1))


def _encode(v: np.ndarray, layout: Layout, u: np.ndarray | None) -> Codes:
    """Codes of float64 rows ``v`` (rows, K); ``u`` the dither (None: round to nearest)."""
    h = layout.wide
    bad = ~np.isfinite(v).all(axis=1)
    v = np.where(bad[:, None], 0.0, v)
    head, tail = v[:, :h], v[:, h:]
    e16 = _pow2_code(np.max(np.abs(head), axis=1, initial=0.0))
    y16 = head / np.ldexp(1.0, e16.astype(np.int64))[:, None]
    wide = y16.astype(np.float16) if u is None else stochastic_round_f16(y16, u[:, :h])
    m8 = np.max(np.abs(tail), axis=1, initial=0.0)
    if layout.exact_scale:
        e8 = _float32_above(m8)
        y8 = _grid_units(tail, e8.astype(np.float64), True)
    else:
        e8 = _log_code(m8)
        y8 = _grid_units(tail, log_scale(e8), False)
    c8 = np.rint(y8) if u is None else stochastic_round_int(y8, u[:, h:])
    narrow = np.clip(c8, -INT8_MAX, INT8_MAX).astype(np.int8)  # |y8| ≤ 127: a no-op
    e16[bad] = _sentinel(WIDE_SCALE_DTYPE)
    e8[bad] = np.nan if layout.exact_scale else _sentinel(NARROW_SCALE_DTYPE)
    return Codes(wide, e16, narrow, e8)


def encode(sketch: np.ndarray, layout: Layout, seed: int, side: str,
           row0: int | np.ndarray) -> Codes:
    """The codes of a block of sketch rows.

    Parameters
    ----------
    sketch : ndarray of shape (rows, layout.k)
        float32 or float64 sketch values; a row with a NaN or infinite value (a skipped row)
        gets the sentinel scale codes and zero codes. Finite values must be within float32's
        range (as every float32 is), which the scale codes' ranges hold.
    layout : Layout
        Not ``float32`` (which stores the sketch itself).
    seed : int
        The model's seed; with ``side`` it keys the dither (``dither_key``).
    side : {"x", "w"}
    row0 : int or ndarray of int
        Global index of the block's first row, or of every row: a row's codes depend on its
        index, never on the block.

    Returns
    -------
    Codes
        E[decode(codes)] = sketch for every row (stochastic rounding, no clipping).
    """
    if layout.name == "float32":
        raise ValueError("float32 stores the sketch itself: nothing to encode")
    v = np.asarray(sketch, dtype=np.float64)
    if v.ndim != 2 or v.shape[1] != layout.k:
        raise ValueError(f"sketch must have shape (rows, {layout.k}), got {v.shape}")
    finite = np.where(np.isfinite(v), np.abs(v), 0.0)
    top = float(finite.max(initial=0.0))
    if top >= 2.0 ** 128 or (layout.exact_scale and top > float(np.finfo(np.float32).max)):
        raise ValueError("sketch values beyond float32's range cannot be stored quantized")
    rows = np.asarray(row0, dtype=np.int64)
    if rows.ndim == 0:
        rows = np.arange(int(rows), int(rows) + v.shape[0], dtype=np.int64)
    return _encode(v, layout, dither(dither_key(seed, side), rows, layout.k))


def column_energy(matrix: np.ndarray, offset: np.ndarray, second_moment: np.ndarray,
                  mean: np.ndarray) -> np.ndarray:
    """E s_j² of the sketch columns s = v @ matrix + offset for rows v with uncentred second
    moment ``second_moment`` (d, d) and mean ``mean``: mᵀΣm + 2 o (μ·m) + o² per column."""
    quad = np.einsum("ij,ij->j", matrix, second_moment @ matrix)
    return np.asarray(quad + 2.0 * offset * (mean @ matrix) + offset ** 2)


def decode(codes: Codes, layout: Layout) -> np.ndarray:
    """float32 rows (rows, K): ``s16 · f`` and ``(s8 / 127) · c``, computed in float64 and
    rounded once to float32 (a relative 2^−24, as float32 storage itself rounds); NaN rows
    where the scale codes mark a row that was not finite."""
    s16, s8 = scale_values(codes)
    wide = codes.wide.astype(np.float64) * s16[:, None]
    narrow = codes.narrow.astype(np.float64) * (s8 / INT8_MAX)[:, None]
    out = np.concatenate([wide, narrow], axis=1).astype(np.float32)
    assert out.shape[1] == layout.k
    return out


def estimate(cx: Codes, cw: Codes) -> np.ndarray:
    """x·w estimates (rows of x, rows of w) in float64, straight from the codes:
    ``s16x s16w (fx · fw) + (s8x s8w / 127²)(cx · cw)``, the scales decoded from their codes
    (``scale_values``). The int8 product is exact (int64)."""
    (s16x, s8x), (s16w, s8w) = scale_values(cx), scale_values(cw)
    wide = (cx.wide.astype(np.float64) @ cw.wide.astype(np.float64).T) * np.outer(s16x, s16w)
    narrow = (cx.narrow.astype(np.int64) @ cw.narrow.astype(np.int64).T).astype(np.float64)
    return np.asarray(wide + narrow * np.outer(s8x, s8w) / INT8_MAX ** 2)


# ---------------------------------------------------------------------------------------
# the rounding variance, for the predicted MSE


def _cell_variance(lo: np.ndarray, v: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Variance of stochastic rounding of v to the grid points lo ≤ v ≤ hi: (v − lo)(hi − v)."""
    return (v - lo) * (hi - v)


def _model_rows(energy: np.ndarray, draws: int) -> np.ndarray:
    """``draws`` rows of independent centred Gaussians with E v_j² = ``energy`` (a model of
    sketch rows, whose coordinates are decorrelated), from a fixed seed."""
    g = np.random.default_rng(_TAG).standard_normal((draws, energy.size))
    return np.asarray(g * np.sqrt(np.clip(energy, 0.0, None)))


def expected_max_square(energy: np.ndarray, draws: int = 2048) -> float:
    """E[max_j v_j²] over rows modelled as in ``rounding_variance`` (E[s8²] of int8 columns)."""
    e = np.asarray(energy, dtype=np.float64)
    if e.size == 0:
        return 0.0
    return float(np.mean(np.max(_model_rows(e, draws) ** 2, axis=1)))


def rounding_variance(energy: np.ndarray, layout: Layout, draws: int = 2048) -> np.ndarray:
    """Expected rounding variance of each stored column (K,) for rows whose column second
    moments are ``energy``.

    Exact for rows of independent centred Gaussians with those second moments (a model of a
    sketch row), averaged over ``draws`` such rows from a fixed seed, so the prediction is a
    deterministic function of the energies: each value's variance is (v − lo)(hi − v) for
    the grid points lo ≤ v ≤ hi of its column's code, the grid set by the row's own stored
    scale (2^e for float16, 2^(e/64) ≥ the row's max for int8, as ``encode`` chooses them;
    the max itself for the ``exact_scale`` layouts, whose model rows are rounded to float32
    first, as sketches are, so that the max is on the grid and adds nothing). 0 for
    float32. (For a value far larger than its grid step this is about step²/6; for one far
    smaller, about step·|v|.)
    """
    e = np.asarray(energy, dtype=np.float64)
    if layout.name == "float32" or layout.k == 0:
        return np.zeros(layout.k)
    v = _model_rows(e, draws)
    if layout.exact_scale:
        v = v.astype(np.float32).astype(np.float64)
    u = np.full_like(v, 0.5)
    codes = _encode(v, layout, u)  # any rounding: only the grid points are read
    sc16, sc8 = scale_values(codes)  # the stored scales' own grids (2^e, 2^(e/64), max)
    h = layout.wide
    head = v[:, :h] / sc16[:, None]
    near = head.astype(np.float16).astype(np.float64)
    other = np.nextafter(head.astype(np.float16), np.where(
        near > head, np.float16(-np.inf), np.float16(np.inf))).astype(np.float64)
    var16 = _cell_variance(np.minimum(near, other), head, np.maximum(near, other)) * \
        sc16[:, None] ** 2
    y = _grid_units(v[:, h:], sc8, layout.exact_scale)
    var8 = _cell_variance(np.floor(y), y, np.floor(y) + 1.0) * (sc8[:, None] / INT8_MAX) ** 2
    return np.concatenate([var16.mean(axis=0), var8.mean(axis=0)])


def rounding_mse(energy_x: np.ndarray, energy_w: np.ndarray, layout: Layout) -> float:
    """Pair-averaged MSE the rounding adds to a sketch's own (the two sides round
    independently, with mean-zero errors): Σ_j (Ew_j·Vx_j + Ex_j·Vw_j + Vx_j·Vw_j), with
    E the columns' second moments and V ``rounding_variance``."""
    ex = np.asarray(energy_x, dtype=np.float64)
    ew = np.asarray(energy_w, dtype=np.float64)
    vx, vw = rounding_variance(ex, layout), rounding_variance(ew, layout)
    return float(np.sum(ew * vx + ex * vw + vx * vw))


# ---------------------------------------------------------------------------------------
# the layout a model records


def layout_facts(layout: Layout) -> dict[str, Any]:
    """The JSON form of a layout (a model's ``info["layout"]``, a stored sketch's
    ``ddrp_layout``)."""
    return {"name": layout.name, "k": layout.k, "head": layout.head,
            "bytes_per_row": layout.bytes_per_row}


def layout_of(facts: Any) -> Layout | None:
    """The layout of a ``layout_facts`` dict (None when absent)."""
    if not isinstance(facts, dict) or "name" not in facts:
        return None
    return Layout.of(str(facts["name"]), int(facts["k"]), int(facts.get("head", 0)))


def model_layout(model: SketchModel) -> Layout:
    """The layout a model's sketches are stored in (float32 unless the fit chose another)."""
    return layout_of(model.info.get("layout")) or Layout.of("float32", model.k)


def head_columns(model: SketchModel) -> int:
    """The model's exact head columns (``auto``: coordinates kept with probability 1), the
    float16 part of a ``mixed`` layout; 0 for methods without one."""
    return min(get(model.method).exact_head(model.info), model.k)


def quantized_model(model: SketchModel, name: str, head: int | None = None) -> SketchModel:
    """``model`` recording the layout ``name`` for its sketches: ``info["layout"]`` (with
    the predicted MSE the rounding adds, from the columns' energies under the model's
    statistics) and the predicted MSE of its method raised by that much. float32: the
    model unchanged. ``head``: ``mixed``'s float16 columns (default: the exact head)."""
    layout = Layout.of(name, model.k, head_columns(model) if head is None else head)
    if layout.name == "float32":
        return model
    facts = layout_facts(layout)
    info = dict(model.info)
    if model.stats_x is not None and model.stats_w is not None:
        ex, ew = (column_energy(side.matrix, side.offset, m.second_moment, m.mean)
                  for side, m in ((model.x, model.stats_x), (model.w, model.stats_w)))
        rounding = rounding_mse(ex, ew, layout)
        facts["predicted_rounding_mse"] = rounding
        predicted = dict(info.get("predicted", {}))
        if model.method in predicted:
            facts["predicted_mse_float32"] = float(predicted[model.method])
            predicted[model.method] = float(predicted[model.method]) + rounding
            info["predicted"] = predicted
    info["layout"] = facts
    return replace(model, info=info)
