"""Vectors by row: a growable float32 array, the one place a collection's raw vectors live."""

from __future__ import annotations

import numpy as np

__all__ = ["VectorStore"]


class VectorStore:
    """Append-only (rows, dim) float32 storage with amortised growth; row r is ``view()[r]``."""

    def __init__(self, dim: int, data: np.ndarray | None = None) -> None:
        self.dim = dim
        if data is None:
            self._data = np.zeros((1024, dim), dtype=np.float32)
            self._n = 0
        else:
            self._data = np.ascontiguousarray(data, dtype=np.float32)
            self._n = self._data.shape[0]

    def __len__(self) -> int:
        return self._n

    def extend(self, vectors: np.ndarray) -> np.ndarray:
        """Append vectors; returns their rows."""
        n = vectors.shape[0]
        if self._n + n > self._data.shape[0]:
            grown = np.zeros(
                (max(self._n + n, 2 * self._data.shape[0]), self.dim), dtype=np.float32
            )
            grown[: self._n] = self._data[: self._n]
            self._data = grown
        self._data[self._n : self._n + n] = vectors
        rows = np.arange(self._n, self._n + n, dtype=np.int64)
        self._n += n
        return rows

    def view(self) -> np.ndarray:
        """The stored rows (a view: valid until the next ``extend``)."""
        return self._data[: self._n]

    def take(self, rows: np.ndarray) -> np.ndarray:
        return self._data[: self._n][rows]

    @property
    def nbytes(self) -> int:
        return self._n * self.dim * 4
