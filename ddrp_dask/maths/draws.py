"""Random matrices of the oblivious methods and the tails, drawn on the client from a seeded
``numpy.random.Generator`` (never from per-worker state). Pure numpy."""

from __future__ import annotations

import numpy as np

__all__ = ["gaussian_matrix", "orthogonal_matrix", "sparse_density", "sparse_matrix"]


def gaussian_matrix(rng: np.random.Generator, k: int, d: int) -> np.ndarray:
    """k × d, iid N(0, 1/k)."""
    return rng.standard_normal((k, d)) / np.sqrt(k)


def orthogonal_matrix(rng: np.random.Generator, k: int, d: int) -> np.ndarray:
    """k × d, sqrt(d/k)·Qᵀ with Q Haar-random d × k orthonormal columns (k ≤ d)."""
    q, r = np.linalg.qr(rng.standard_normal((d, k)))
    q = q * np.sign(np.where(np.diag(r) == 0, 1.0, np.diag(r)))
    return np.sqrt(d / k) * q.T


def sparse_density(d: int) -> float:
    """Li's s = √d (at least 1): one entry in s is non-zero."""
    return max(1.0, float(np.sqrt(d)))


def sparse_matrix(rng: np.random.Generator, k: int, d: int) -> np.ndarray:
    """k × d very sparse signs ±sqrt(s/k), each with probability 1/(2s)."""
    s = sparse_density(d)
    u = rng.random((k, d))
    signs = np.where(u < 0.5 / s, 1.0, np.where(u > 1.0 - 0.5 / s, -1.0, 0.0))
    return signs * np.sqrt(s / k)
