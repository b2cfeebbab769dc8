"""What the parts of :class:`~shardwalk.index.spann.SpannIndex` (its build, upkeep and
snapshot, in :mod:`.build`, :mod:`.maintenance` and :mod:`.format`) use of the index: a
:class:`typing.Protocol` their methods take as ``self``. A type only: the class itself holds
the state and the methods (mypy checks at every call that it has all of these).

mypy takes an attribute that a part's method assigns for one of the part's own, typed by the
value: where that value is narrower than the attribute (``_open``, ``_worker``: None or not),
the assignment names the attribute's type, as declared here."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

if TYPE_CHECKING:
    from shardwalk.index.base import IndexMetric
    from shardwalk.index.hnsw_graph import HNSWGraph
    from shardwalk.index.spann.format import _Generation, _PrimaryPlaces, _Staged
    from typing_extensions import Self

    from shardwalk._sync import RWLock
    from shardwalk._threads import ThreadBudget

__all__ = ["SpannParts"]


class SpannParts(Protocol):
    """The attributes and methods of a SpannIndex its parts read, write or call (each
    documented where SpannIndex sets or defines it)."""

    # parameters
    kind: str
    dim: int
    metric: IndexMetric
    seed: int
    vdim: int
    words: int
    max_list_size: int
    eps_build: float
    max_replicas: int
    maintenance: str
    train_size: int
    workdir: str
    garbage_min: int
    # the centroid graph, the list table, the generations and the rows
    _graph: HNSWGraph
    _lists: int
    _list_gen: np.ndarray
    _list_start: np.ndarray
    _list_count: np.ndarray
    _list_capacity: np.ndarray
    _norm_cap: float
    _gens: dict[int, _Generation]
    _files: list[_Generation]
    _open: _Generation | None
    _next_gen: int
    _places: _PrimaryPlaces
    _version: np.ndarray
    _live: int
    _garbage: int
    _counters: dict[str, int]
    # locks, the split queue and the worker
    _mutex: threading.RLock
    _closed: threading.Event
    _rw: RWLock
    _idle: threading.Condition
    _pending: deque[int]
    _queued: set[int]
    _failed: set[int]
    _running: bool
    _worker: threading.Thread | None
    _failures: int
    _last_failure: str

    @classmethod
    def from_meta(
        cls,
        meta: Mapping[str, Any],
        *,
        threads: int | None = None,
        budget: ThreadBudget | None = None,
    ) -> Self: ...

    def params(self) -> dict[str, Any]: ...

    # defined in SpannIndex (index.py)
    @property
    def _centroids(self) -> np.ndarray: ...

    def _new_graph(self) -> HNSWGraph: ...

    def _augment(self, vectors: np.ndarray, norm_cap: float | None = None) -> np.ndarray: ...

    def _new_gen(self) -> _Generation: ...

    def _next_versions(self, labels: np.ndarray) -> np.ndarray: ...

    def _write_rows(self, labels: np.ndarray, versions: np.ndarray) -> None: ...

    def _alive(self) -> np.ndarray: ...

    def _live_vectors(self, exclude: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...

    def _targets(self, vectors: np.ndarray) -> np.ndarray: ...

    def _stage_appends(
        self, labels: np.ndarray, versions: np.ndarray, vectors: np.ndarray, targets: np.ndarray
    ) -> _Staged: ...

    def _stage_list(
        self,
        staged: _Staged,
        lst: int,
        records: np.ndarray,
        old: tuple[int, int, int] | None = None,
        *,
        carried: int | None = None,
    ) -> int: ...

    def _publish(self, staged: _Staged) -> list[int]: ...

    def _read_current(self, lst: int) -> np.ndarray: ...

    def _live_lists(self) -> np.ndarray: ...

    # defined in the parts themselves (called across them)
    def _build(
        self,
        labels: np.ndarray,
        vectors: np.ndarray,
        versions: np.ndarray,
        *,
        fresh: tuple[np.ndarray, np.ndarray],
    ) -> None: ...

    def _queue_split(self, lst: int) -> None: ...

    def _work(self) -> None: ...

    def _report_failure(self, what: str, exc: BaseException) -> None: ...

    def _run_splits(self) -> None: ...

    def _collect_garbage(self) -> None: ...

    def wait_idle(self, timeout: float | None = None) -> bool: ...

    def _split(self, lst: int) -> None: ...

    def _reassign(
        self,
        lst: int,
        old_centroid: np.ndarray,
        new: np.ndarray,
        records: np.ndarray,
        assignment: np.ndarray,
    ) -> None: ...

    def _primary_lists(self, labels: np.ndarray) -> np.ndarray: ...

    def _compact(self) -> None: ...

    def _drop_unused_gens(self) -> None: ...

    def _labels_end(self) -> int: ...
