"""What every reader shares: paths and URLs, the working dtype, numeric checks. No Dask."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import InputError

__all__ = ["check_numeric", "filesystem", "is_url", "qualify", "short_list", "working_dtype"]


def is_url(path: str) -> bool:
    """True for an fsspec URL (``s3://``, ``gs://``, ``memory://``, ...), False for a path."""
    return "://" in str(path) and not str(path).startswith("file://")


def filesystem(path: str) -> tuple[Any, str]:
    """The fsspec filesystem of ``path`` and the path inside it. Credentials and endpoints
    come from the environment (e.g. ``AWS_*``) and fsspec's configuration."""
    import fsspec

    return fsspec.core.url_to_fs(str(path))


def qualify(fs: Any, inner: str, like: str) -> str:
    """A path returned by ``fs`` as the user would write it (a URL stays a URL)."""
    return str(fs.unstrip_protocol(inner)) if is_url(like) else inner


def working_dtype(dtype: np.dtype[Any]) -> np.dtype[Any]:
    """float32 for float16/float32/bool/≤16-bit integers, float64 for everything wider."""
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        return np.dtype(np.float64) if dtype.itemsize >= 8 else np.dtype(np.float32)
    if dtype.kind in "iub":
        return np.dtype(np.float32) if dtype.itemsize <= 2 else np.dtype(np.float64)
    raise InputError(f"dtype {dtype} is not numeric")


def check_numeric(dtype: np.dtype[Any], where: str) -> None:
    """Refuse a non-numeric dtype, naming the source."""
    try:
        working_dtype(dtype)
    except InputError as e:
        raise InputError(f"{where}: {e}; ddrp needs numeric vectors") from e


def short_list(names: tuple[str, ...]) -> str:
    """Column names for one line: all of up to four, else the first two and the last."""
    if len(names) <= 4:
        return ", ".join(names)
    return f"{names[0]}, {names[1]}, ..., {names[-1]} ({len(names)} columns)"
