"""One thread budget per engine: numba and faiss draw from the same N thread slots.

Each library sizes its parallelism to the machine on its own (numba's and faiss's OpenMP teams
to every core), so eight callers searching at once would run
eight teams of one thread per core. A :class:`ThreadBudget` holds N slots instead. A call always
runs on its caller's thread (that one is the caller's, not the budget's) and takes as many of
the N - 1 other slots as are free, up to what it can use: it never waits. So eight threads
searching one query each run at once on their own threads (making them queue for slots
measured 0.5x the QPS of one thread: a convoy on the lock), while eight batch searches do not
start eight teams: the first gets N threads, the others run on their own. For its duration the
calling thread's numba and faiss thread counts are set to its grant (a block that runs neither
skips setting them, which costs a few microseconds: ``take(n, kernels=False)``). A call that already holds a grant (say a
partitioned search calling each partition's search) takes nothing more: nested calls run within
the outer grant, from whichever budget they ask. Worker threads started on behalf of a grant
run under :func:`delegated`.

What this relies on (checked with numba 0.68, faiss-cpu 1.15 with libgomp):

- ``numba.set_num_threads`` is per calling thread; a new thread starts at NUMBA_NUM_THREADS.
- ``faiss.omp_set_num_threads`` sets the calling thread's OpenMP team size (libgomp gives a
  thread that OpenMP did not start its own), not the process's; faiss's bundled OpenBLAS is the
  OpenMP build, so its BLAS calls follow the same setting.
- faiss's searches and inserts (the HNSW graphs' too) release the GIL; a single-query HNSW
  search starts no OpenMP team (faiss parallelises over queries only).

numba's threading layer: 'workqueue' is not safe when several Python threads launch parallel
kernels at once (it detects that and terminates the process: "Concurrent access has been
detected"); 'omp' and 'tbb' are, and the index kernels release the GIL (``nogil=True``), so
concurrent searches do launch them at once. :func:`check_threading_layer` (run by every
engine and every first grant, before the first parallel kernel) loads numba's layer: unless the
user chose one (NUMBA_THREADING_LAYER, or ``numba.config.THREADING_LAYER``), it asks for a
thread-safe one ('threadsafe': tbb, else omp; the default order would fall back to workqueue
silently) for that one load and then puts the setting back, so importing shardwalk changes no
process-wide setting; it refuses to go on with an unsafe layer, naming what to install.

This module is a leaf: it imports nothing of the package but ``errors``.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import faiss
import numba

from shardwalk.errors import FailedPreconditionError, InvalidArgumentError

__all__ = [
    "MAX_THREADS",
    "SAFE_LAYERS",
    "ThreadBudget",
    "available_cores",
    "check_threading_layer",
    "default_budget",
    "delegated",
    "in_thread",
]

MAX_THREADS = 1024
SAFE_LAYERS = ("omp", "tbb")

_local = threading.local()  # .held: slots this thread's call holds (0 or absent: none)
_layer_ok = False
_launch_lock = threading.Lock()  # one launch of numba's threads sets the layer at a time


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity), at least 1."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def check_threading_layer() -> str:
    """The numba threading layer in use (loading it if no parallel kernel ran yet).

    Raises
    ------
    FailedPreconditionError
        No thread-safe layer (omp, tbb) could be loaded, or another one was chosen.
    """
    global _layer_ok
    if _layer_ok:
        return str(numba.threading_layer())
    hint = (
        "install TBB (pip install tbb) or an OpenMP runtime (libgomp; on macOS: pip install "
        "intel-openmp), and leave NUMBA_THREADING_LAYER unset or set it to 'omp' or 'tbb'"
    )
    try:
        _launch_threadsafe()
    except ValueError as error:  # numba's "No threading layer could be loaded"
        raise FailedPreconditionError(
            "numba found no thread-safe threading layer (omp or tbb), which shardwalk needs "
            f"to run parallel kernels from several threads at once; {hint} ({error})"
        ) from error
    layer = str(numba.threading_layer())
    if layer not in SAFE_LAYERS:
        raise FailedPreconditionError(
            f"numba's threading layer is {layer!r}, which is not safe when several threads run "
            f"parallel kernels at once; shardwalk needs 'omp' or 'tbb': {hint}"
        )
    _layer_ok = True
    return layer


def _launch_threadsafe() -> None:
    """Launch numba's threads (a no-op once launched: the layer is fixed at the first launch).
    When the user chose no layer, ask for a thread-safe one for this launch only; the setting
    is put back after (it is read at the launch alone)."""
    chosen = str(numba.config.THREADING_LAYER).lower() != "default" or os.environ.get(
        "NUMBA_THREADING_LAYER"
    )
    if chosen:
        numba.get_num_threads()
        return
    with _launch_lock:
        before = numba.config.THREADING_LAYER
        numba.config.THREADING_LAYER = "threadsafe"
        try:
            numba.get_num_threads()  # launches numba's threads: loads the layer if not yet
        finally:
            numba.config.THREADING_LAYER = before


class _Within:
    """The calling thread runs within ``threads`` slots for a block: nested takes take nothing
    more and, with ``kernels``, numba's and faiss's per-thread counts are set (restored after;
    each set only when it changes something: these calls cost about a microsecond each)."""

    __slots__ = ("_before", "_faiss", "_kernels", "_numba", "threads")

    def __init__(self, threads: int, kernels: bool) -> None:
        self.threads = threads
        self._kernels = kernels

    def __enter__(self) -> int:
        self._before = getattr(_local, "held", 0)
        _local.held = self.threads
        self._numba = self._faiss = 0
        if self._kernels:
            current, wanted = numba.get_num_threads(), min(self.threads, _numba_threads())
            if current != wanted:
                numba.set_num_threads(wanted)
                self._numba = current
            current = faiss.omp_get_max_threads()
            if current != self.threads:
                faiss.omp_set_num_threads(self.threads)
                self._faiss = current
        return self.threads

    def __exit__(self, *exc: object) -> None:
        _local.held = self._before
        if self._numba:
            numba.set_num_threads(self._numba)
        if self._faiss:
            faiss.omp_set_num_threads(self._faiss)


def _numba_threads() -> int:
    return int(numba.config.NUMBA_NUM_THREADS)  # numba's pool size: its counts cannot exceed it


def delegated(threads: int, *, kernels: bool = True) -> AbstractContextManager[int]:
    """Run the calling thread within ``threads`` slots that another thread's grant already
    counts (for the workers a call starts): nested :meth:`ThreadBudget.take` calls take
    nothing more, and (``kernels``) numba's and faiss's thread counts are set to ``threads``."""
    return _Within(max(1, int(threads)), kernels)


class _Take:
    """``ThreadBudget.take``'s context manager (a class: it runs on every search)."""

    __slots__ = ("_budget", "_granted", "_kernels", "_want", "_within")

    def __init__(self, budget: ThreadBudget, want: int, kernels: bool) -> None:
        self._budget, self._want, self._kernels = budget, want, kernels

    def __enter__(self) -> int:
        held = getattr(_local, "held", 0)
        if held:  # nested in a call that holds a grant (of any budget): run within it
            self._granted = 0
            self._within = _Within(min(max(1, self._want), held), self._kernels)
            return self._within.__enter__()
        if not _layer_ok:
            check_threading_layer()
        self._granted = granted = self._budget._acquire(self._want)
        self._within = _Within(granted, self._kernels)
        try:
            return self._within.__enter__()
        except BaseException:
            self._budget._release(granted)
            raise

    def __exit__(self, *exc: object) -> None:
        try:
            self._within.__exit__(*exc)
        finally:
            if self._granted:
                self._budget._release(self._granted)


class ThreadBudget:
    """N thread slots that every parallel call of an engine shares.

    Parameters
    ----------
    threads : int, optional
        N, 1-1024 (default: the cores available, :func:`available_cores`).

    Examples
    --------
    >>> budget = ThreadBudget(2)
    >>> with budget.take(8) as granted:   # a batch: its own thread and the free slots, here 2
    ...     granted
    2
    >>> with budget.take(1) as granted:   # one query: one slot, no thread started
    ...     granted, numba.get_num_threads(), faiss.omp_get_max_threads()
    (1, 1, 1)
    """

    def __init__(self, threads: int | None = None) -> None:
        if threads is None:
            threads = available_cores()
        if isinstance(threads, bool) or not isinstance(threads, int):
            raise InvalidArgumentError(
                f"threads must be an integer in [1, {MAX_THREADS}]; got {threads!r}"
            )
        if not 1 <= threads <= MAX_THREADS:
            raise InvalidArgumentError(
                f"threads must be an integer in [1, {MAX_THREADS}]; got {threads}"
            )
        self.threads = threads
        self._free = threads - 1  # slots besides a caller's own thread
        self._lock = threading.Lock()
        self._in_use = 0  # threads held by calls granted more than one (their own included)
        self._parallel = 0
        self._largest = 1
        self._peak = 0
        self._squeezed = 0

    def __repr__(self) -> str:
        return f"ThreadBudget(threads={self.threads}, in_use={self._in_use})"

    def take(self, want: int, *, kernels: bool = True) -> AbstractContextManager[int]:
        """Run a call on its caller's thread plus up to ``want - 1`` free slots (never waits);
        the block gets the number of threads granted (at least 1).

        With ``kernels`` (default), numba's and faiss's thread counts on the calling thread are
        the grant until the block ends; ``kernels=False`` skips setting them, for a block that
        runs neither (or sets nothing itself: nested takes set them). A thread that already
        holds a grant (from any budget) takes nothing more: it gets ``min(want, held)`` of it.
        """
        return _Take(self, int(want), kernels)

    def _acquire(self, want: int) -> int:
        if want <= 1:  # one thread, the caller's: nothing to count (the common single query)
            return 1
        with self._lock:
            extra = min(want - 1, self.threads - 1, self._free)
            self._free -= extra
            if extra + 1 < min(want, self.threads):
                self._squeezed += 1
            if extra:
                self._parallel += 1
                self._in_use += extra + 1
                self._largest = max(self._largest, extra + 1)
                self._peak = max(self._peak, self._in_use)
        return extra + 1

    def _release(self, granted: int) -> None:
        if granted > 1:
            with self._lock:
                self._free += granted - 1
                self._in_use -= granted

    def stats(self) -> dict[str, Any]:
        """Counters since creation: ``threads`` (N); ``in_use`` and ``peak``: threads held
        now and at most by calls granted more than one (their callers' own included);
        ``parallel_calls`` (calls granted more than one); ``largest_grant``; ``squeezed``
        (calls granted fewer than they could use because other calls held the slots)."""
        with self._lock:
            return {
                "threads": self.threads,
                "in_use": self._in_use,
                "peak": self._peak,
                "parallel_calls": self._parallel,
                "largest_grant": self._largest,
                "squeezed": self._squeezed,
            }


_default: ThreadBudget | None = None
_default_lock = threading.Lock()


def default_budget() -> ThreadBudget:
    """The process's budget for indexes used outside an engine (the cores available)."""
    global _default
    if _default is None:
        with _default_lock:
            if _default is None:
                _default = ThreadBudget()
    return _default


def in_thread(fn: Callable[[], object], name: str, *, daemon: bool = False) -> Callable[[], None]:
    """Run ``fn()`` in a new thread (called ``name``) now; returns the wait for it, which
    raises what ``fn`` raised (a thread's exception is otherwise lost)."""
    failed: list[BaseException] = []

    def run() -> None:
        try:
            fn()
        except BaseException as exc:
            failed.append(exc)

    thread = threading.Thread(target=run, name=name, daemon=daemon)
    thread.start()

    def wait() -> None:
        thread.join()
        if failed:
            raise failed[0]

    return wait


def thread_env(threads: int = 1) -> dict[str, Any]:
    """The Ray ``runtime_env`` of a task or actor that may use ``threads`` threads in numba and
    OpenMP (numba reads its variable at import, so it must be in the worker's environment)."""
    n = str(max(1, int(threads)))
    return {"env_vars": {"NUMBA_NUM_THREADS": n, "OMP_NUM_THREADS": n, "MKL_NUM_THREADS": n}}


def rss_bytes() -> int:
    """This process's resident memory now (VmRSS; 0 where /proc has none)."""
    return _status_bytes("VmRSS:")


def peak_rss_bytes() -> int:
    """This process's peak resident memory: VmHWM where /proc has it (ru_maxrss on Linux keeps
    the peak of whatever the process ran before its exec, e.g. a parent's), else ru_maxrss."""
    found = _status_bytes("VmHWM:")
    if found:
        return found
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def _status_bytes(field: str) -> int:
    """A memory field of /proc/self/status in bytes (0 where there is none)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0
