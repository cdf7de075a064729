"""Pass 1's finished partial sums, kept in an output's staging directory, so that a pass 1
that failed or was interrupted is resumed reading only the blocks whose statistics are
missing.

Pass 1 merges the blocks' statistics in a fixed tree of pairs: node ``(level, i)`` merges
``(level - 1, 2i)`` and ``(level - 1, 2i + 1)`` (or is its one child at a ragged edge), the
leaves ``(0, i)`` being the blocks pass 1 reads, in order. Its tasks save the nodes of every
``KEEP_EVERY``-th level — each block, each merged group of 8, 64, … (from a higher level
where a block's statistics outweigh its rows, at d in the thousands) — and the root, each as
one ``.npz`` of float64 arrays (``n`` int64, ``mean``, ``scatter``, one row per fold), read
back without pickle. A node is written under a temporary name and renamed, so it is whole or
absent; saving a node deletes the nodes saved below it, so the directory holds about what the
reduction itself holds in memory, not one file per block. A resumed pass 1 takes the highest
saved node of every subtree and reads only the blocks under none: the same values merged in
the same tree, hence the same bytes as an undisturbed run.

A run reads the nodes it resumes from through links of its own (``pin``): a task of an
interrupted run (still finishing on a cluster after its client left) or of an earlier round
may save a node above them meanwhile and delete them, and a link keeps the file.
"""

from __future__ import annotations

import os
import re
import shutil
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..maths.stats import Moments

__all__ = ["KEEP_EVERY", "PartialSums"]

#: Levels of the tree whose nodes are saved: every third (blocks, groups of 8, of 64, …).
KEEP_EVERY = 3

_NAME = re.compile(r"^(\d+)-(\d+)\.npz$")


@dataclass(frozen=True)
class PartialSums:
    """The partial sums of pass 1 kept under the local directory ``root`` (one
    subdirectory per side); shipped to the tasks, which save and delete nodes."""

    root: str
    #: The lowest level saved (then every ``KEEP_EVERY``-th above it): 0 saves each block,
    #: higher saves only groups of ``2**lowest`` blocks, for statistics larger than the
    #: rows they sum (``lowest_level``).
    lowest: int = 0

    def keeps(self, level: int, top: int) -> bool:
        """Whether a node at ``level`` of a tree whose root is at ``top`` is saved."""
        return level == top or (level >= self.lowest and
                                (level - self.lowest) % KEEP_EVERY == 0)

    @staticmethod
    def lowest_level(node_bytes: int, block_bytes: int) -> int:
        """The lowest level worth saving: the first whose nodes' statistics
        (``node_bytes``) are no larger than the rows they stand for (``block_bytes`` per
        block), since reading those rows again costs no more than writing them.

        >>> PartialSums.lowest_level(5 * 256 * 256 * 8, 16384 * 256 * 4)
        0
        >>> PartialSums.lowest_level(4096 * 4096 * 8, 1024 * 4096 * 4)
        3
        """
        level = 0
        while node_bytes > block_bytes << level:
            level += 1
        return level

    def path(self, side: str, level: int, index: int) -> str:
        """The file of node ``(level, index)`` of ``side``'s tree."""
        return os.path.join(self.root, side, f"{level}-{index}.npz")

    def saved(self, side: str) -> set[tuple[int, int]]:
        """The nodes of ``side``'s tree saved so far, as ``(level, index)``."""
        try:
            names = os.listdir(os.path.join(self.root, side))
        except FileNotFoundError:
            return set()
        return {(int(m[1]), int(m[2])) for m in map(_NAME.match, names) if m}

    def save(self, side: str, level: int, index: int, parts: Sequence[Moments]) -> None:
        """Write node ``(level, index)``: its statistics per fold (one ``Moments`` without
        folds), whole or not at all; then delete the nodes saved below it."""
        path = self.path(side, level, index)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.{uuid.uuid4().hex}.tmp"  # a retried task may write the same node
        with open(tmp, "wb") as fh:
            np.savez(fh, n=np.array([m.n for m in parts], dtype=np.int64),
                     mean=np.stack([m.mean for m in parts]).astype(np.float64, copy=False),
                     scatter=np.stack([m.scatter for m in parts]).astype(np.float64,
                                                                         copy=False))
        os.replace(tmp, path)
        self._drop_below(side, level, index)

    def pin(self, side: str, into: str) -> dict[tuple[int, int], str]:
        """Links, under the new directory ``into``, to the nodes of ``side`` saved so far:
        ``{(level, index): path}`` of the links. A node deleted before it was linked is
        left out: a node above it was saved, and the next listing links that one."""
        dest = os.path.join(into, side)
        os.makedirs(dest, exist_ok=True)
        pinned: dict[tuple[int, int], str] = {}
        tried: set[tuple[int, int]] = set()
        while new := self.saved(side) - tried:
            for level, index in sorted(new):
                tried.add((level, index))
                link = os.path.join(dest, f"{level}-{index}.npz")
                try:
                    _link(self.path(side, level, index), link)
                except FileNotFoundError:
                    continue
                pinned[level, index] = link
        return pinned

    def pin_directory(self) -> str:
        """A new directory for one run's links (``pin``), beside the saved nodes."""
        return os.path.join(self.root, "pinned", uuid.uuid4().hex)

    @staticmethod
    def unpin(into: str) -> None:
        """Delete the links under ``into`` (the saved nodes stay)."""
        shutil.rmtree(into, ignore_errors=True)

    @staticmethod
    def load(path: str) -> list[Moments]:
        """The statistics per fold of the node saved (or pinned) at ``path``."""
        with np.load(path, allow_pickle=False) as f:
            n, mean, scatter = f["n"], f["mean"], f["scatter"]
        return [Moments(int(n[i]), mean[i], scatter[i]) for i in range(len(n))]

    def _drop_below(self, side: str, level: int, index: int) -> None:
        """Delete the saved nodes of the subtree under ``(level, index)``."""
        for lv, i in self.saved(side):
            if lv < level and i >> (level - lv) == index:
                try:
                    os.remove(self.path(side, lv, i))
                except FileNotFoundError:  # another task's retry deleted it first
                    pass


def _link(src: str, dst: str) -> None:
    """A hard link ``dst`` to ``src`` (a copy where the filesystem has no hard links)."""
    try:
        os.link(src, dst)
    except FileNotFoundError:
        raise
    except FileExistsError:
        pass
    except OSError:
        shutil.copyfile(src, dst)
