"""Vectors by row: the one place a collection's raw vectors live.

Rows are numbered in insertion order, but their physical order is free: a multi-tenant index
lays the rows out leaf by leaf, and tenant by tenant within a leaf, so that scanning a tenant's
rows in a leaf reads consecutive memory. ``positions(rows)`` says where rows are.

Two kinds of store: :class:`VectorStore` owns a growable float32 array (the collection's own,
or a multi-tenant index's); :class:`IndexStore` reads the vectors an index already holds
(faiss's flat storage under an HNSW graph, one per partition), without a copy. Either way a
reader gets the rows' vectors as :meth:`RowStore.segments`: arrays to scan in place.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from shardwalk.index._kernels import permute_rows

__all__ = ["DeltaBuffer", "DeltaStore", "IndexStore", "RowStore", "Segment", "VectorStore"]

# (vectors, positions of some rows in them, which of the rows asked for: None for all of them)
Segment = tuple[np.ndarray, np.ndarray, "np.ndarray | None"]


class RowStore:
    """What the collection and the planner read vectors by row through.

    The arrays :meth:`segments` gives are views: valid until the next write (the collection's
    readers/writer lock keeps writes out while a reader holds them).
    """

    dim: int

    def segments(self, rows: np.ndarray) -> list[Segment]:
        """Where the vectors of ``rows`` are: for each array holding some of them, the array,
        their positions in it (int64) and which of ``rows`` they are (None: all, in order)."""
        raise NotImplementedError

    def take(self, rows: np.ndarray) -> np.ndarray:
        """The vectors of ``rows`` (a copy), in the order given."""
        rows = np.asarray(rows, dtype=np.int64)
        parts = self.segments(rows)
        if len(parts) == 1 and parts[0][2] is None:
            vectors, positions, _ = parts[0]
            return vectors[positions]
        out = np.zeros((rows.size, self.dim), dtype=np.float32)
        for vectors, positions, which in parts:
            out[slice(None) if which is None else which] = vectors[positions]
        return out


class IndexStore(RowStore):
    """Vectors by row read from an index's own storage (no copy of its own).

    ``segments`` is the index's: it looks the arrays up on every call, so a view never
    outlives a write that moved them (faiss reallocates its storage as it grows).
    """

    def __init__(self, dim: int, segments: Callable[[np.ndarray], list[Segment]]) -> None:
        self.dim = dim
        self._segments = segments

    def segments(self, rows: np.ndarray) -> list[Segment]:
        return self._segments(np.asarray(rows, dtype=np.int64))


class VectorStore(RowStore):
    """Append-only (rows, dim) float32 storage with amortised growth and a free physical order.

    ``physical()[positions(rows)]`` are the vectors of ``rows``; until :meth:`arrange` is
    called the positions are the rows themselves.
    """

    def __init__(
        self, dim: int, data: np.ndarray | None = None, positions: np.ndarray | None = None
    ) -> None:
        self.dim = dim
        if data is None:
            self._data = np.zeros((1024, dim), dtype=np.float32)
            self._n = 0
        else:
            self._data = np.ascontiguousarray(data, dtype=np.float32)
            self._n = self._data.shape[0]
        self._pos: np.ndarray | None = None  # row -> position; None while they are equal
        if positions is not None:
            self._pos = np.array(positions, dtype=np.int64)

    def __len__(self) -> int:
        return self._n

    def extend(self, vectors: np.ndarray) -> np.ndarray:
        """Append vectors (physically at the end); returns their rows."""
        n = vectors.shape[0]
        if self._n + n > self._data.shape[0]:
            grown = np.zeros(
                (max(self._n + n, 2 * self._data.shape[0]), self.dim), dtype=np.float32
            )
            grown[: self._n] = self._data[: self._n]
            self._data = grown
        self._data[self._n : self._n + n] = vectors
        rows = np.arange(self._n, self._n + n, dtype=np.int64)
        if self._pos is not None:
            if self._n + n > self._pos.shape[0]:
                pos = np.empty(max(self._n + n, 2 * self._pos.shape[0]), dtype=np.int64)
                pos[: self._n] = self._pos[: self._n]
                self._pos = pos
            self._pos[self._n : self._n + n] = rows
        self._n += n
        return rows

    def physical(self) -> np.ndarray:
        """The stored vectors in physical order (a view: valid until the next write)."""
        return self._data[: self._n]

    def positions(self, rows: np.ndarray) -> np.ndarray:
        """Where ``rows`` are in :meth:`physical`."""
        return rows if self._pos is None else self._pos[rows]

    def take(self, rows: np.ndarray) -> np.ndarray:
        """The vectors of ``rows`` (a copy), in the order given."""
        return self._data[: self._n][self.positions(rows)]

    def segments(self, rows: np.ndarray) -> list[Segment]:
        return [(self.physical(), np.asarray(self.positions(rows), dtype=np.int64), None)]

    def arrange(self, order: np.ndarray) -> None:
        """Lay the rows out physically in ``order`` (a permutation of all rows), in place: no
        second copy of the vectors is ever held."""
        n = self._n
        order = np.asarray(order, dtype=np.int64)
        if order.shape != (n,):
            raise ValueError(f"arrange needs a permutation of all {n} rows, got {order.shape}")
        source = self.positions(order)  # new position i takes the vector now at source[i]
        permute_rows(self._data, source)
        pos = np.empty(max(n, 1024), dtype=np.int64)
        pos[order] = np.arange(n, dtype=np.int64)
        self._pos = pos

    def row_positions(self) -> np.ndarray:
        """Every row's position (for saving)."""
        return np.arange(self._n, dtype=np.int64) if self._pos is None else self._pos[: self._n]

    @property
    def nbytes(self) -> int:
        return self._n * self.dim * 4 + (0 if self._pos is None else self._n * 8)


class DeltaBuffer:
    """The rows written but not yet in the index (a growing segment, as Qdrant's and Milvus's):
    rows ``start .. end - 1`` (row numbers are append-only, so they are always the newest
    rows), their vectors and their owner codes (the index's layout hint), kept until a
    background indexer has inserted them and moved ``start`` past them.

    Writes append at ``end``; the indexer copies rows from ``start`` and then calls
    :meth:`advance`. Both under the collection's exclusive lock; readers (under the shared
    lock) see :meth:`vectors` as one contiguous array, valid until the next write.
    """

    def __init__(self, dim: int, start: int = 0) -> None:
        self.dim = dim
        self.start = start  # the first row not in the index
        self.end = start  # one past the last row written
        self._first = start  # the row of _vectors[0]
        self._vectors = np.zeros((0, dim), dtype=np.float32)
        self._groups = np.zeros(0, dtype=np.int32)

    def __len__(self) -> int:
        return self.end - self.start

    @property
    def nbytes(self) -> int:
        return int(self._vectors.nbytes + self._groups.nbytes)

    def append(self, rows: np.ndarray, vectors: np.ndarray, groups: np.ndarray) -> None:
        """Add the vectors of ``rows`` (which continue ``end``, ascending)."""
        n = rows.size
        if n == 0:
            return
        if int(rows[0]) != self.end or int(rows[-1]) != self.end + n - 1:
            raise ValueError(f"delta rows must continue at row {self.end}; got {rows[:3]}...")
        held, used = self.end - self._first, self.end - self.start
        if held + n > self._vectors.shape[0]:  # move the unindexed rows to the front, grow
            size = max(used + n, 2 * self._vectors.shape[0], 64)
            grown = np.empty((size, self.dim), dtype=np.float32)
            codes = np.empty(size, dtype=np.int32)
            skip = self.start - self._first
            grown[:used] = self._vectors[skip:held]
            codes[:used] = self._groups[skip:held]
            self._vectors, self._groups, self._first = grown, codes, self.start
            held = used
        self._vectors[held : held + n] = vectors
        self._groups[held : held + n] = groups
        self.end += n

    def head(self, count: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Rows, vectors and owner codes (copies) of the first ``count`` unindexed rows."""
        count = min(count, len(self))
        skip = self.start - self._first
        rows = np.arange(self.start, self.start + count, dtype=np.int64)
        return (
            rows,
            self._vectors[skip : skip + count].copy(),
            self._groups[skip : skip + count].copy(),
        )

    def advance(self, count: int) -> None:
        """The first ``count`` unindexed rows are in the index now."""
        self.start += count
        if self.start == self.end and self._vectors.shape[0] > 1024:
            self._vectors = np.zeros((0, self.dim), dtype=np.float32)  # give a burst back
            self._groups = np.zeros(0, dtype=np.int32)
            self._first = self.start

    def reset(self, start: int) -> None:
        """Empty, continuing at row ``start`` (a new index holding every row before it)."""
        self.__init__(self.dim, start)  # type: ignore[misc]

    def vectors(self) -> np.ndarray:
        """The unindexed rows' vectors, row ``start`` first (a view)."""
        skip = self.start - self._first
        return self._vectors[skip : skip + len(self)]


class DeltaStore(RowStore):
    """Vectors by row over an index's store and the rows not yet indexed (a
    :class:`DeltaBuffer`): rows before ``delta.start`` from ``base``, the others from the
    delta."""

    def __init__(self, base: RowStore, delta: DeltaBuffer) -> None:
        self.dim = base.dim
        self.base = base
        self.delta = delta

    def segments(self, rows: np.ndarray) -> list[Segment]:
        rows = np.asarray(rows, dtype=np.int64)
        delta = self.delta
        if delta.end == delta.start or not rows.size:
            return self.base.segments(rows)
        new = rows >= delta.start
        if not new.any():
            return self.base.segments(rows)
        if new.all():
            return [(delta.vectors(), rows - delta.start, None)]
        old_at, new_at = np.flatnonzero(~new), np.flatnonzero(new)
        parts: list[Segment] = [
            (vectors, positions, old_at if which is None else old_at[which])
            for vectors, positions, which in self.base.segments(rows[old_at])
        ]
        parts.append((delta.vectors(), rows[new_at] - delta.start, new_at))
        return parts

    def take(self, rows: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows, dtype=np.int64)
        if self.delta.end == self.delta.start:
            return self.base.take(rows)
        return super().take(rows)
