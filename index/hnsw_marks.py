"""Which positions of an HNSW graph a search may return, as faiss reads them: the graph's
tombstones (:class:`Marks`, copied on write, so a search keeps one consistent set) and a
caller's filter (:class:`Admitted`). Each is a packed little-endian bitmap by position, faiss's
``IDSelectorBitmap`` over it and faiss's search parameters per ef, built once (a
``SearchParametersHNSW`` costs ~10 us, a fifth of a search).
"""

from __future__ import annotations

from typing import Any

import faiss
import numpy as np

__all__ = ["Admitted", "Marks"]

_BIT = (1 << np.arange(8)).astype(np.uint8)  # a position's bit in its byte (little-endian)


def _search_params(cache: dict[int, Any], ef: int, selector: Any) -> Any:
    """faiss's search parameters for ``ef`` and ``selector`` (None: every position), from
    ``cache`` or built into it (built, then inserted: concurrent searches at most build one
    twice)."""
    params = cache.get(ef)
    if params is None:
        params = faiss.SearchParametersHNSW()  # type: ignore[attr-defined]  # (not in the stubs)
        params.efSearch = ef
        if selector is not None:
            params.sel = selector
        if len(cache) < 64:  # bounded: callers choose ef freely
            cache[ef] = params
    return params


class Admitted:
    """The positions of a graph a search may return (a filter the graph search applies as it
    goes: faiss's HNSW traverses every node but admits only these to its results): a packed
    little-endian bitmap by position, faiss's selector over it and the search parameters per
    ef, built once (a ``SearchParametersHNSW`` costs ~10 us, a fifth of a search). faiss keeps
    a raw pointer to the bitmap: this object holds it; whoever made the bitmap keeps it
    unchanged while a search holds the object (a collection changes its scope masks only
    under its exclusive lock).

    ``count`` and ``positions`` (how many are admitted, and which, ascending: an exact scan
    over them completes a query the graph leaves short) are given per search: the bitmap
    may admit positions past the graph (rows not yet inserted), which no search meets.
    """

    __slots__ = ("bits", "params", "selector")

    def __init__(self, bits: np.ndarray) -> None:
        self.bits = bits
        self.selector = faiss.IDSelectorBitmap(bits.size, faiss.swig_ptr(bits))
        self.params: dict[int, Any] = {}

    def search_params(self, ef: int) -> Any:
        return _search_params(self.params, ef, self.selector)


class Marks:
    """A graph's tombstones as its searches read them: a packed little-endian bitmap of the
    live positions (``bits``; None while every position is live), faiss's selector over it,
    the search parameters per ef (building one costs ~10 us, a fifth of a search) and the
    live count. A delete never changes one a search may hold: it copies the bits, clears
    its positions in the copy and swaps a new ``Marks`` in (so a search reads one consistent
    set of tombstones, and a collection can publish it with the rest of a write group's
    state); only an insert, which excludes every search, sets the bits of its new positions
    in place. Whoever holds it holds its bitmap (faiss keeps only a raw pointer)."""

    __slots__ = ("bits", "live", "params", "selector")

    def __init__(self, bits: np.ndarray | None, live: int) -> None:
        self.bits = bits
        self.live = live
        self.selector = (
            None if bits is None else faiss.IDSelectorBitmap(bits.size, faiss.swig_ptr(bits))
        )
        self.params: dict[int, Any] = {}

    def search_params(self, ef: int) -> Any:
        return _search_params(self.params, ef, self.selector)

    def live_positions(self, slots: int) -> np.ndarray:
        """The live positions among the first ``slots`` (ascending)."""
        if self.bits is None:
            return np.arange(slots, dtype=np.int64)
        count = min(slots, self.bits.size * 8)
        return np.flatnonzero(np.unpackbits(self.bits, count=count, bitorder="little"))
