"""``truncated`` (``docs/method.md §6``): head-tail's exact head and mean columns with
r = k − 2 and no tail. Its error on pairs like the fitted rows is the lowest of all, but it
is squared bias, not variance: BIASED, opt-in, never chosen unless asked for.
"""

from __future__ import annotations

import numpy as np

from .head_tail import HeadTail

__all__ = ["METHODS", "Truncated"]


class Truncated(HeadTail):
    """The leading k − 2 balanced coordinates and the two mean columns."""

    name = "truncated"
    unbiased = False
    min_k_reason = "it stores 2 exact mean columns"

    def k_range(self, d: int) -> tuple[int, int | None]:
        return 2, d + 2

    def head(self, sigma: np.ndarray, k: int) -> tuple[int, np.ndarray | None]:
        return k - 2, None

    def report_note(self) -> str | None:
        return ("truncated is BIASED (no tail); its MSE is squared bias on rows like the "
                "fitted ones, with no guarantee for others")


METHODS = (Truncated(),)
