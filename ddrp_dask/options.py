"""Every option rule, once: the CLI, the estimator, the plans and the maths call these.

Each ``check_*`` takes the value as a user gave it (a CLI string, a Python number), returns it
in canonical form, or raises ``OptionError`` naming the value and the fix (as scikit-learn's
``validate_params`` does for its estimators).
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .errors import OptionError
from .maths.methods import NAMES, get
from .maths.quantize import LAYOUTS

__all__ = [
    "DEFAULT_BLOCK_BYTES",
    "DTYPES",
    "FORMATS",
    "METHODS",
    "ON_INVALID",
    "SHRINKAGE_NAMES",
    "SIDES",
    "ChooseOptions",
    "FitOptions",
    "PassOptions",
    "by_rule",
    "check_block_rows",
    "check_bytes_per_row",
    "check_dtype",
    "check_format",
    "check_fraction",
    "check_k",
    "check_matmul_layout",
    "check_method",
    "check_methods",
    "check_on_invalid",
    "check_positive",
    "check_same_d",
    "check_seed",
    "check_shrinkage",
    "check_side",
    "check_strict_chunks",
    "check_target",
    "check_top",
    "default_block_rows",
    "k_range",
    "not_smaller_than_raw",
    "stats_blocks_needed",
    "stats_rows",
    "storage_ratio",
]

#: Every method (``maths.methods``, its registry): ``auto``, the default, first.
METHODS = NAMES
#: Named shrinkage rules: ``auto`` (the default) is the cross-fitted choice per source for
#: ``auto`` and OAS for the other methods; a number in [0, 1] is a fixed intensity.
SHRINKAGE_NAMES = ("auto", "oas")
SIDES = ("x", "w")
FORMATS = ("zarr", "parquet")
ON_INVALID = ("error", "skip")
#: Storage layouts of sketches (``docs/quantized.md``): float32 (the default), float16 and
#: int8 codes with per-row scales, mixed (float16 exact head, int8 rest), and int8max /
#: mixedmax (the int8 scale the row's exact max as float32): ``maths.quantize.LAYOUTS``.
DTYPES = LAYOUTS
#: Target size of one canonical row block in float32: the unit of every task.
DEFAULT_BLOCK_BYTES = 64 * 2**20


def check_method(method: str) -> str:
    """``method`` if it is one of ``METHODS``."""
    if method not in METHODS:
        raise OptionError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    return method


def check_methods(methods: Sequence[str] | str) -> list[str]:
    """A non-empty list of known methods (a string is split at commas)."""
    if isinstance(methods, str):
        methods = [m.strip() for m in methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise OptionError(f"unknown method(s) {unknown or ''}; choose among "
                          f"{', '.join(METHODS)}")
    return list(methods)


def k_range(method: str, d: int) -> tuple[int, int | None]:
    """Smallest and largest valid K of ``method`` at dimension ``d`` (None: no upper bound),
    as the method gives them.

    ``auto`` is exact from K = d (its columns beyond d are zero), ``head-tail`` and
    ``truncated`` from K = d + 2.

    >>> k_range("auto", 10), k_range("head-tail", 10), k_range("orthogonal", 10)
    ((1, 12), (3, 12), (1, 10))
    """
    return get(check_method(method)).k_range(d)


def check_k(k: int, d: int, method: str) -> int:
    """``k`` if ``k`` columns are possible for ``method`` at dimension ``d``."""
    check_method(method)
    if isinstance(k, bool) or not isinstance(k, numbers.Integral):
        raise OptionError(f"K must be an integer, got {k!r}")
    k = int(k)
    if k < 1:
        raise OptionError(f"K must be at least 1, got K={k}")
    refusal = get(method).k_refusal(k, d)
    if refusal is not None:
        raise OptionError(refusal)
    return k


def storage_ratio(k: int, d: int) -> float:
    """Stored numbers per sketch over numbers per raw vector, K / d.

    >>> storage_ratio(2251, 128)
    17.5859375
    """
    return k / d


def not_smaller_than_raw(k: int, d: int) -> bool:
    """Whether K stored columns are no fewer than the raw vector's d values (K ≥ d): storing
    the raw vectors is then as small as the sketches, and exact.

    >>> not_smaller_than_raw(64, 64), not_smaller_than_raw(28, 64)
    (True, False)
    """
    return storage_ratio(k, d) >= 1


def check_shrinkage(shrinkage: Any) -> float | str:
    """``"auto"``, ``"oas"`` or a float in [0, 1] (CLI strings such as ``"0.1"`` are
    parsed): the one shrinkage rule, for the CLI, the estimator, the plans and the build.
    Ledoit–Wolf (``"lw"``) is a point of ``auto``'s search grid, not an option."""
    if shrinkage in SHRINKAGE_NAMES:
        return str(shrinkage)
    try:
        value = float(shrinkage)
    except (TypeError, ValueError):
        value = float("nan")
    if isinstance(shrinkage, bool) or not 0.0 <= value <= 1.0:
        raise OptionError(f"shrinkage must be 'oas' or a number in [0, 1] (or 'auto': chosen "
                          f"by cross-fitting), got {shrinkage!r}")
    return value


def check_seed(seed: Any) -> int:
    """A seed: an integer in [0, 2**63)."""
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) \
            or not 0 <= int(seed) < 2**63:
        raise OptionError(f"seed must be a non-negative integer below 2**63, got {seed!r}")
    return int(seed)


def check_fraction(fraction: Any) -> float | str:
    """The stats fraction: ``"auto"`` (``stats_rows``' rule) or a float in (0, 1]."""
    if isinstance(fraction, str) and fraction.strip().lower() == "auto":
        return "auto"
    try:
        value = float(fraction)
    except (TypeError, ValueError):
        value = float("nan")
    if not 0.0 < value <= 1.0:
        raise OptionError(f"stats fraction must be in (0, 1] or 'auto', got {fraction!r}")
    return value


#: Rows of each source the statistics need per dimension under ``--stats-fraction auto``:
#: from there on, more rows did not improve the held-out accuracy of ``auto`` by more than
#: a few % (benchmarks/RESULTS.md, "Session 9: widths").
STATS_ROWS_PER_D = 100
#: ... and at least this many rows (where pass 1 is cheap anyway).
MIN_STATS_ROWS = 200_000
#: A source is sampled only when it has this many times the rows needed: below it, the
#: saving would not be worth a statistic estimated from fewer rows.
SAMPLE_ABOVE = 2


def by_rule(fraction: float | str) -> bool:
    """Whether a checked stats fraction is ``"auto"``: pass 1's blocks follow
    ``stats_blocks_needed`` rather than a share of all."""
    return fraction == "auto"


def stats_rows(d: int) -> int:
    """Rows of one source that ``--stats-fraction auto`` reads, at least: ``STATS_ROWS_PER_D``
    per dimension, ``MIN_STATS_ROWS`` at the least.

    >>> stats_rows(256), stats_rows(4096)
    (200000, 409600)
    """
    return max(STATS_ROWS_PER_D * d, MIN_STATS_ROWS)


def stats_blocks_needed(n_rows: int, block_rows: int, d: int) -> int | None:
    """Blocks of a source of ``n_rows`` that ``--stats-fraction auto`` reads: enough blocks
    for ``stats_rows(d)`` rows when the source has ``SAMPLE_ABOVE`` times that, else None
    (all of them).

    >>> stats_blocks_needed(1_000_000, 65_536, 256), stats_blocks_needed(300_000, 65_536, 256)
    (4, None)
    """
    need = stats_rows(d)
    if n_rows < SAMPLE_ABOVE * need:
        return None
    return -(-need // max(1, block_rows))


def default_block_rows(d: int) -> int:
    """Rows of one canonical block: a power of two near 64 MiB of float32, from ``d`` only.

    It depends on nothing but the dimension, so the same data gives the same blocks (and so
    the same bytes) whatever its format or chunking on disk.

    >>> default_block_rows(256)
    65536
    """
    rows = DEFAULT_BLOCK_BYTES // (4 * max(d, 1))
    return int(min(max(2 ** (max(rows, 1).bit_length() - 1), 256), 2**20))


def check_block_rows(block_rows: int | None, d: int) -> int:
    """Rows per canonical block: the given count (≥ 1), or the default for ``d``."""
    if block_rows is None:
        return default_block_rows(d)
    return check_positive(block_rows, "block rows")


def check_positive(value: Any, what: str) -> int:
    """An integer ≥ 1."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or int(value) < 1:
        raise OptionError(f"{what} must be at least 1, got {value}")
    return int(value)


def check_side(side: str) -> str:
    """``"x"`` or ``"w"``."""
    if side not in SIDES:
        raise OptionError(f"--side must be 'x' or 'w', got {side!r}")
    return side


def check_format(fmt: str) -> str:
    """An output format: ``"zarr"`` or ``"parquet"``."""
    if fmt not in FORMATS:
        raise OptionError(f"output format must be 'zarr' or 'parquet', got {fmt!r}")
    return fmt


def check_on_invalid(value: str) -> str:
    """What to do with an invalid row: ``"error"`` or ``"skip"``."""
    if value not in ON_INVALID:
        raise OptionError(f"on_invalid must be 'error' or 'skip', got {value!r}")
    return value


def check_strict_chunks(value: Any) -> bool:
    """Whether absent Zarr chunks are refused (``True``) or read as the fill value, as the
    Zarr specification reads them (``False``, the default)."""
    if not isinstance(value, bool):
        raise OptionError(f"strict_chunks must be True or False, got {value!r}")
    return bool(value)


def check_matmul_layout(per: str, fmt: str, top: int | None) -> tuple[str, str]:
    """``matmul``'s ``per`` (the side whose rows get their top N: ``"x"`` or ``"w"``) and
    output format; both but the defaults need ``top`` (the full product is one Zarr array
    of x rows by w rows)."""
    if per not in ("x", "w"):
        raise OptionError(f"--per must be 'x' or 'w', got {per!r}")
    fmt = check_format(fmt)
    if top is None and per != "x":
        raise OptionError("--per w needs --top N (the N best x rows of every w row); the full "
                          "product is always x rows by w rows")
    if top is None and fmt == "parquet":
        raise OptionError("--format parquet writes top-N rows and needs --top N; the full "
                          "product is a Zarr array")
    return per, fmt


def check_top(top: int | None, n_rows: int, what: str = "--w") -> int | None:
    """N of a top-N search: None, or an integer in [1, rows of the searched side]."""
    if top is None:
        return None
    if isinstance(top, bool) or not isinstance(top, numbers.Integral) \
            or not 1 <= int(top) <= n_rows:
        raise OptionError(f"--top must be between 1 and the {n_rows} rows of {what}, "
                          f"got {top}")
    return int(top)


def check_target(target: Any) -> float:
    """A target relative MSE: a positive finite number."""
    try:
        value = float(target)
    except (TypeError, ValueError):
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise OptionError(f"the target relative MSE must be a positive number, got {target}; "
                          "e.g. 0.01 for an RMS error of 10% of the RMS inner product")
    return value


def check_k_or_target(k: int | None, target: float | None) -> tuple[int | None, float | None]:
    """Exactly one of K and a target relative MSE."""
    if (k is None) == (target is None):
        raise OptionError("give either K (-k) or a target relative MSE (--target-rel-mse), "
                          "not both and not neither")
    return k, None if target is None else check_target(target)


def check_same_d(d_x: int, d_w: int, x: str = "--x", w: str = "--w") -> int:
    """The common dimension of two sources (``x``, ``w``: how to name them)."""
    if d_x != d_w:
        raise OptionError(f"got d={d_w} for {w} but d={d_x} for {x}; both sources must have "
                          "the same dimension")
    return d_x


def check_dtype(dtype: Any) -> str:
    """A storage layout of sketches: one of ``DTYPES``."""
    if dtype not in DTYPES:
        raise OptionError(f"--dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    return str(dtype)


def check_bytes_per_row(bytes_per_row: Any, k: int | None, target: float | None,
                        method: str) -> int | None:
    """A byte budget per row (``--bytes-per-row``), instead of -k and --target-rel-mse: an
    integer ≥ 4 (one float32 column), for ``auto`` (whose predicted MSE at every K and
    layout it compares); None when not given."""
    if bytes_per_row is None:
        return None
    if k is not None or target is not None:
        raise OptionError("--bytes-per-row replaces -k and --target-rel-mse: give one of the "
                          "three")
    if method != "auto":
        raise OptionError(f"--bytes-per-row chooses K and the layout for --method auto, got "
                          f"--method {method}; give -k for other methods")
    if isinstance(bytes_per_row, bool) or not isinstance(bytes_per_row, numbers.Integral) \
            or int(bytes_per_row) < 4:
        raise OptionError(f"--bytes-per-row must be an integer of at least 4 (one float32 "
                          f"column), got {bytes_per_row!r}")
    return int(bytes_per_row)


# ---------------------------------------------------------------------------------------
# the validated options a plan receives: checked once, here, by the functions above


@dataclass(frozen=True)
class PassOptions:
    """The validated options of the passes over a job's sources (``PassOptions.check``).

    Attributes
    ----------
    block_rows : int
        Rows of one canonical block: one task, one output chunk, one leaf of the reduction.
    seed : int
        Seed of every random draw (the model's, and the blocks of ``stats_fraction``).
    stats_fraction : float or "auto"
        Share of the blocks pass 1 reads, in (0, 1]; ``"auto"``: a seeded sample of blocks
        when a source has many more rows than the statistics need (``stats_blocks_needed``).
    on_invalid : {"error", "skip"}
        What a row with NaN, inf, a null or a wrong length does: fail the job, or be skipped.
    """

    block_rows: int
    seed: int = 0
    stats_fraction: float | str = 1.0
    on_invalid: str = "error"

    @classmethod
    def check(cls, d: int, block_rows: int | None = None, seed: Any = 0,
              stats_fraction: Any = 1.0, on_invalid: str = "error") -> PassOptions:
        """The options as a user gave them, validated (``block_rows`` None: the default for
        dimension ``d``)."""
        return cls(check_block_rows(block_rows, d), check_seed(seed),
                   check_fraction(stats_fraction), check_on_invalid(on_invalid))

    @property
    def skip(self) -> bool:
        """Whether invalid rows are skipped (and listed) instead of failing the job."""
        return self.on_invalid == "skip"


@dataclass(frozen=True)
class FitOptions(PassOptions):
    """The validated options of ``fit`` and ``run`` (``FitOptions.check``): the passes', and
    the build's. Exactly one of ``k``, ``target_rel_mse`` and ``bytes_per_row`` is set.

    Attributes
    ----------
    method : str
        One of ``METHODS``.
    k : int or None
        Stored columns per sketch, valid for ``method`` at the sources' d; None when K is
        chosen after pass 1 for ``target_rel_mse``.
    target_rel_mse : float or None
        The target relative MSE K is chosen for after pass 1; else None.
    bytes_per_row : int or None
        The storage budget per row K and the layout are chosen for after pass 1; else None.
    shrinkage : "auto", "oas" or float
    format : {"zarr", "parquet"}
        The format of ``run``'s sketches.
    dtype : str or None
        The sketches' storage layout, one of ``DTYPES``; None when the byte budget chooses it.
    """

    method: str = "auto"
    k: int | None = None
    target_rel_mse: float | None = None
    shrinkage: float | str = "auto"
    format: str = "zarr"
    dtype: str | None = "float32"
    bytes_per_row: int | None = None

    def __post_init__(self) -> None:
        if [self.k, self.target_rel_mse, self.bytes_per_row].count(None) != 2:
            raise OptionError("give exactly one of K (-k), a target relative MSE "
                              "(--target-rel-mse) and a byte budget (--bytes-per-row)")

    @classmethod
    def check(cls, d: int, block_rows: int | None = None, seed: Any = 0,
              stats_fraction: Any = 1.0, on_invalid: str = "error", *, method: str = "auto",
              k: int | None = None, target_rel_mse: float | None = None,
              shrinkage: Any = "auto", format: str = "zarr", dtype: str | None = None,
              bytes_per_row: int | None = None) -> FitOptions:
        """The options as a user gave them, validated for sources of dimension ``d``
        (``dtype`` None: float32, or with ``bytes_per_row`` the layout the budget chooses)."""
        method = check_method(method)
        budget = check_bytes_per_row(bytes_per_row, k, target_rel_mse, method)
        k, target = (None, None) if budget else check_k_or_target(k, target_rel_mse)
        if dtype is not None or budget is None:
            dtype = check_dtype(dtype or "float32")
        k = None if k is None else check_k(k, d, method)
        seed, rows = check_seed(seed), check_block_rows(block_rows, d)
        shrinkage = check_shrinkage(shrinkage)
        return cls(rows, seed, check_fraction(stats_fraction), check_on_invalid(on_invalid),
                   method, k, target, shrinkage, check_format(format), dtype, budget)

    @property
    def k_text(self) -> str:
        """How K is set, in words: ``K=8``, or the rule that chooses it after pass 1."""
        if self.bytes_per_row is not None:
            return (f"K and layout with the smallest predicted MSE at {self.bytes_per_row} "
                    f"bytes per row{'' if self.dtype is None else f' ({self.dtype})'}")
        if self.k is not None:
            return f"K={self.k}"
        return f"K = smallest with predicted relative MSE <= {self.target_rel_mse:g}"

    @property
    def columns_text(self) -> str:
        """The sketches' columns as a plan says them: ``8``, or ``K`` when chosen later."""
        return "K" if self.k is None else str(self.k)

    @property
    def k_later(self) -> str:
        """Where K comes from when it is chosen after pass 1 (else "")."""
        if self.k is not None:
            return ""
        rule = f"--bytes-per-row {self.bytes_per_row}" if self.bytes_per_row is not None \
            else f"--target-rel-mse {self.target_rel_mse:g}"
        return f"K from {rule}, chosen after pass 1"


@dataclass(frozen=True)
class ChooseOptions(PassOptions):
    """The validated options of ``ddrp plan`` (``ChooseOptions.check``): the passes', the
    target relative MSE, the methods compared, the shrinkage and a byte budget to compare
    ``auto``'s storage layouts at (None: no such comparison)."""

    target_rel_mse: float = 0.01
    methods: tuple[str, ...] = METHODS
    shrinkage: float | str = "auto"
    bytes_per_row: int | None = None

    @classmethod
    def check(cls, d: int, block_rows: int | None = None, seed: Any = 0,
              stats_fraction: Any = 1.0, on_invalid: str = "error", *,
              target_rel_mse: Any = 0.01, methods: Sequence[str] | str | None = None,
              shrinkage: Any = "auto", bytes_per_row: int | None = None) -> ChooseOptions:
        """The options as a user gave them, validated for sources of dimension ``d``."""
        passes = PassOptions.check(d, block_rows, seed, stats_fraction, on_invalid)
        return cls(passes.block_rows, passes.seed, passes.stats_fraction, passes.on_invalid,
                   check_target(target_rel_mse),
                   tuple(check_methods(methods if methods is not None else list(METHODS))),
                   check_shrinkage(shrinkage),
                   check_bytes_per_row(bytes_per_row, None, None, "auto"))
