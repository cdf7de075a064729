"""The error family: every failure a user can cause is a ``DdrpError`` with a message that
names the bad value and says what to change."""

from __future__ import annotations

__all__ = [
    "DdrpError",
    "InputError",
    "InvalidValueError",
    "ModelError",
    "OptionError",
    "OutputError",
]


class DdrpError(ValueError):
    """Base class of the errors ddrp raises for bad input, options or outputs."""


class OptionError(DdrpError):
    """An option is out of range or inconsistent with another (K, method, fraction, ...)."""


class InputError(DdrpError):
    """An input cannot be read or does not hold vectors: missing file, wrong columns, empty."""


class InvalidValueError(InputError):
    """An input holds a value ddrp refuses: NaN, infinity, a null vector, a wrong length."""


class OutputError(DdrpError):
    """An output location is unusable: exists, overlaps an input, incomplete."""


class ModelError(DdrpError):
    """A saved model is missing, from an incompatible version, or fails its checksums."""
