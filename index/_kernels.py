"""numba kernels of the index package: plain functions on arrays, no validation, no I/O."""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True)
def capacity_assign(
    order: np.ndarray, nearest: np.ndarray, n_parts: int, capacity: int
) -> np.ndarray:
    """Greedy capacity-constrained assignment.

    ``nearest`` is (n, P): each point's partitions, closest first; ``order`` lists the (point,
    rank) pairs as flat indexes ``point * P + rank`` sorted by distance. Walking the pairs from
    the closest, a point joins its partition unless that one already holds ``capacity`` points.
    Every point ends up assigned as long as ``capacity * P >= n``.
    """
    n = nearest.shape[0]
    assign = np.full(n, -1, dtype=np.int32)
    sizes = np.zeros(n_parts, dtype=np.int64)
    remaining = n
    for flat in order:
        point = flat // n_parts
        if assign[point] >= 0:
            continue
        part = nearest[point, flat % n_parts]
        if sizes[part] < capacity:
            assign[point] = part
            sizes[part] += 1
            remaining -= 1
            if remaining == 0:
                break
    return assign
