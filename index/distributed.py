"""Ray for batch jobs: connecting, tasks with thread budgets, and Parquet scans on Ray Data.

With :mod:`shardwalk.walks.distributed`, the only modules of shardwalk that import ray
(``pip install 'shardwalk[ray]'``). :class:`RayExecutor` runs a job's parallel steps
(``map``) as Ray tasks and its Parquet scans (``scan_parquet``) on Ray Data, with the same
interface as the thread executor of ``shardwalk.jobs``, so one pipeline serves both and gives
the same bytes.

Every task runs with one CPU and ``NUMBA_NUM_THREADS``/``OMP_NUM_THREADS`` set through
``runtime_env`` (numba reads its variable at import, so it must be in the worker's environment
before anything imports numba; Ray sets only ``OMP_NUM_THREADS``). Tasks are retried when their
worker dies (``max_retries``); they write their files atomically and deterministically, so a
retry writes the same bytes. Large inputs go to the object store once (:meth:`put`); a task
reads them there zero-copy (read-only).

A local Ray binds to 127.0.0.1 only (``ray.init(_node_ip_address="127.0.0.1")``).
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import ray

from shardwalk._threads import available_cores
from shardwalk.errors import FailedPreconditionError, ShardwalkError

__all__ = ["RayExecutor", "connect", "disconnect", "loopback_only", "thread_env"]

MAX_RETRIES = 3  # tasks rerun after their worker or node died (Ray's default, made explicit)


def thread_env(threads: int = 1) -> dict[str, Any]:
    """The runtime_env of a task that may use ``threads`` threads in numba and OpenMP."""
    n = str(max(1, int(threads)))
    return {"env_vars": {"NUMBA_NUM_THREADS": n, "OMP_NUM_THREADS": n, "MKL_NUM_THREADS": n}}


def connect(address: str | None = None, num_workers: int | None = None) -> bool:
    """Join the Ray cluster at ``address``, or start a local one bound to 127.0.0.1 with
    ``num_workers`` CPUs (default: the cores of this process). Returns whether this call started
    (or joined) Ray, so the caller knows to :func:`disconnect`; an initialised Ray is kept."""
    if ray.is_initialized():
        return False
    try:
        if address is not None:
            if address.split(":")[0] in ("127.0.0.1", "localhost"):
                loopback_only()  # the driver joins as 127.0.0.1 too
            ray.init(address=address, logging_level="warning", log_to_driver=False)
        else:
            loopback_only()
            ray.init(
                _node_ip_address="127.0.0.1",
                num_cpus=num_workers or available_cores(),
                include_dashboard=False,
                logging_level="warning",
                log_to_driver=False,
            )
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = f"the Ray cluster at {address!r}" if address else "a local Ray"
        raise FailedPreconditionError(
            f"could not start or join {where}: {exc}; check the address (ray status) or run "
            "without Ray"
        ) from exc
    _quiet_data()
    return True


def loopback_only() -> None:
    """Make a Ray started from here bind to 127.0.0.1: ``ray.init`` replaces a loopback
    ``_node_ip_address`` by the machine's outward address unless Ray believes it cannot form
    a cluster, which ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` tells it (read at import, hence
    the constant too; the processes Ray starts inherit the variable)."""
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    ray._private.ray_constants.ENABLE_RAY_CLUSTER = False


def disconnect(started: bool) -> None:
    if started:
        ray.shutdown()


def _quiet_data() -> None:
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    # a small input makes fewer read tasks than workers: expected, not worth a warning
    warnings.filterwarnings("ignore", "The maximum number of concurrent tasks", UserWarning)
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False


def _unwrap(exc: BaseException) -> BaseException:
    """The shardwalk error a task raised, without Ray's wrapper (it pickles unchanged)."""
    cause = getattr(exc, "cause", None)
    return cause if isinstance(cause, ShardwalkError) else exc


@ray.remote(max_retries=MAX_RETRIES)
def _call(fn: Callable[..., Any], item: Any, shared: dict[str, Any]) -> Any:
    # values put by RayExecutor.put: read from the object store (zero-copy, read-only)
    resolved = {k: ray.get(v) if isinstance(v, ray.ObjectRef) else v for k, v in shared.items()}
    return fn(item, **resolved)


class RayExecutor:
    """Runs ``fn(item, **shared)`` for each item as Ray tasks, at most ``workers`` at once.

    ``cpus`` per task (default 1) also sets the task's numba and OpenMP threads.
    """

    kind = "ray"

    def __init__(self, workers: int | None = None, *, cpus: int = 1) -> None:
        total = int(ray.cluster_resources().get("CPU", 1))
        self.workers = max(1, min(workers or total, total))
        self.cpus = cpus
        self.object_store_bytes = 0  # put by the driver, and returned by tasks to it

    def put(self, value: Any) -> Any:
        self.object_store_bytes += _nbytes(value)
        return ray.put(value)

    def map(
        self, fn: Callable[..., Any], items: Sequence[Any], *, name: str | None = None, **shared
    ) -> list[Any]:
        """Results in the order of ``items``; the first task error is raised (unwrapped)."""
        shared_ref = ray.put(shared)
        remote = _call.options(
            num_cpus=self.cpus,
            runtime_env=thread_env(self.cpus),
            name=f"shardwalk-{name or fn.__name__}",
        )
        results: list[Any] = [None] * len(items)
        pending: dict[Any, int] = {}
        next_item = 0
        try:
            while next_item < len(items) or pending:
                while next_item < len(items) and len(pending) < self.workers:
                    pending[remote.remote(fn, items[next_item], shared_ref)] = next_item
                    next_item += 1
                done, _ = ray.wait(list(pending), num_returns=1)
                for ref in done:
                    results[pending.pop(ref)] = value = ray.get(ref)
                    self.object_store_bytes += _nbytes(value)
        except ray.exceptions.RayTaskError as exc:
            for ref in pending:
                ray.cancel(ref, force=True)
            raise _unwrap(exc) from None
        return results

    def scan_parquet(
        self,
        files: Sequence[str],
        select: Sequence[str],
        fn: Callable[..., pa.Table],
        **kwargs: Any,
    ) -> Iterator[pa.Table]:
        """``fn(block, **kwargs)`` over the blocks of the Parquet ``files`` (Ray Data reads them
        in blocks on the workers, with a ``path`` column); yields what ``fn`` returns, as it
        comes (the driver never holds more than a few of them)."""
        # Ray Data packs row groups into read tasks of up to this many decoded bytes (128 MiB
        # by default, read from the environment when the read is planned): about four tasks
        # per worker, so that every worker reads and a block stays small.
        decoded = sum(_decoded_bytes(path) for path in files)
        per_task = min(128 << 20, max(256 << 10, decoded // (4 * self.workers)))
        os.environ["RAY_DATA_PARQUET_BIN_PACKING_BYTES"] = str(per_task)
        dataset = (
            ray.data.read_parquet(list(files), include_paths=True)
            .select_columns([*select, "path"])
            .map_batches(
                fn,
                fn_kwargs=kwargs,
                batch_format="pyarrow",
                batch_size=None,
                zero_copy_batch=True,
                compute=ray.data.TaskPoolStrategy(size=self.workers),
                num_cpus=1,
                runtime_env=thread_env(1),
            )
        )
        try:
            for block in dataset.iter_batches(batch_size=None, batch_format="pyarrow"):
                self.object_store_bytes += block.nbytes
                yield block
        except ray.exceptions.RayTaskError as exc:
            raise _unwrap(exc) from None


def _decoded_bytes(path: str) -> int:
    """The uncompressed size of a Parquet file's row groups (from its footer)."""
    meta = pq.ParquetFile(path).metadata
    return sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups))


def _nbytes(value: Any) -> int:
    """Bytes of the arrays and tables in ``value`` (what crosses the object store)."""
    if isinstance(value, np.ndarray):
        return int(value.nbytes)
    if isinstance(value, (pa.Table, pa.RecordBatch, pa.Array)):
        return int(value.nbytes)
    if isinstance(value, dict):
        return sum(_nbytes(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(_nbytes(v) for v in value)
    return 0
