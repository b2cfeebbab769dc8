"""Node bitmaps: one bit a node, for membership tests cheaper than a dense flag array.

Numba only (see ``walks/kernels/__init__.py`` for the conventions every kernel shares).
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True)
def node_bitmap(nodes, n):
    """A bitmap of ``nodes`` among n: bit v & 63 of word v >> 6."""
    bits = np.zeros((n >> 6) + 1, np.uint64)
    for v in nodes:
        bits[v >> 6] |= np.uint64(1) << np.uint64(v & 63)
    return bits


@njit(cache=True, inline="always")
def in_bitmap(bits, v):
    return (bits[v >> 6] >> np.uint64(v & 63)) & np.uint64(1)


@njit(cache=True)
def mark_bits(bits, nodes):
    """Set the bits of ``nodes`` in a bitmap made by :func:`node_bitmap` (in place)."""
    for v in nodes:
        bits[v >> 6] |= np.uint64(1) << np.uint64(v & 63)
