"""The error family: every failure a user can cause is a ``DdrpError`` with a message that
names the bad value and says what to change."""

from __future__ import annotations

import importlib.util

__all__ = [
    "EXTRAS",
    "DdrpError",
    "InputError",
    "InvalidValueError",
    "ModelError",
    "OptionError",
    "OutputError",
    "RunError",
    "extra_missing",
    "require_extra",
]

#: The optional dependencies, by the pip extra that installs each (``pip install
#: 'ddrp-dask[sklearn]'``): module imported → extra.
EXTRAS = {"sklearn": "sklearn", "matplotlib": "plot", "s3fs": "s3"}


class DdrpError(ValueError):
    """Base class of the errors ddrp raises for bad input, options or outputs.

    ``exit_status`` is the command line's exit status for it: 2 (the input, an option or
    the output must change) unless a subclass says otherwise.
    """

    exit_status: int = 2


class OptionError(DdrpError):
    """An option is out of range or inconsistent with another (K, method, fraction, ...)."""


class InputError(DdrpError):
    """An input cannot be read or does not hold vectors: missing file, wrong columns, empty."""


class InvalidValueError(InputError):
    """An input holds a value ddrp refuses: NaN, infinity, a null vector, a wrong length.

    ``row``: the global row holding it, when known, so that a reader can say where that row
    lies in its files and its id (``io.source.Source.located``); ``placed`` when the message
    says where already; ``located`` once the reader has added what it knows.
    """

    def __init__(self, message: str, row: int | None = None, placed: bool = False) -> None:
        super().__init__(message)
        self.row = row
        self.placed = placed
        self.located = False


class OutputError(DdrpError):
    """An output location is unusable: exists, overlaps an input, incomplete."""


class ModelError(DdrpError):
    """A saved model is missing, from an incompatible version, or fails its checksums."""


def extra_missing(module: str, needed_by: str) -> str | None:
    """None when ``module`` (an optional dependency, a key of ``EXTRAS``) is installed;
    else the message saying what needs it and the pip extra that installs it. Looks the
    module up without importing it."""
    try:
        found = importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        found = False
    if found:
        return None
    return (f"{needed_by} needs {module}, which is not installed: "
            f"pip install 'ddrp-dask[{EXTRAS[module]}]'")


def require_extra(module: str, needed_by: str) -> None:
    """Refuse (``OptionError``, before any work) an option whose optional dependency is
    missing, naming the extra that installs it (``extra_missing``)."""
    message = extra_missing(module, needed_by)
    if message is not None:
        raise OptionError(message)
class RunError(DdrpError):
    """A job failed while running, not for its input or options: the cluster gave up (workers
    kept dying, the scheduler was lost or did not answer) or a task raised an unexpected
    exception. The message names the pass and block; what was finished is kept for
    ``--resume``. Exit status 1."""

    exit_status = 1
