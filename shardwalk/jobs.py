"""Batch jobs: collections built from Parquet, graph fingerprints, on threads or on Ray.

``build_collection`` builds in this process's threads, or on Ray (``ray=True`` for a local
Ray bound to 127.0.0.1, ``address=`` for a cluster); ``build_fingerprints`` runs on Ray. Ray is
imported only when a job asks for it (``pip install 'shardwalk[ray]'``).

On a cluster, every worker writes into the data directory: it must be on a filesystem that
every node sees (the same machine, or a shared mount).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from shardwalk._progress import Progress, check_progress
from shardwalk.build import Columns, ThreadExecutor, run_pipeline
from shardwalk.errors import FailedPreconditionError
from shardwalk.validation import check_choice, check_int

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from shardwalk.walks.fingerprints import FingerprintOptions

__all__ = ["Progress", "build_collection", "build_fingerprints"]

_MODES = ("replicated", "sharded")


def _ray_layer() -> Any:
    try:
        from shardwalk.index import distributed
    except ImportError as exc:
        raise FailedPreconditionError(
            f"this job runs on Ray, which is not installed ({exc}); pip install "
            "'shardwalk[ray]', or run without --ray/--address"
        ) from exc
    return distributed


def build_collection(
    path: str | os.PathLike[str],
    name: str,
    source: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    *,
    index: str = "partitioned",
    metric: str = "l2",
    id_column: str = "id",
    vector_column: str = "vector",
    tenant_column: str | None = None,
    shared_with_column: str | None = None,
    attribute_columns: Sequence[str] | None = None,
    num_workers: int | None = None,
    address: str | None = None,
    ray: bool = False,
    progress: Progress | None = None,
    **index_params: Any,
) -> dict[str, Any]:
    """Build collection ``name`` of the data directory ``path`` from a Parquet dataset.

    A new collection is created; an existing one is replaced by the new version as a whole
    (with one manifest commit: readers that open the directory see the old version or the new
    one). Rows are numbered in id order; the same input and parameters give the same files
    whatever the number of workers, on threads or on Ray.

    Parameters
    ----------
    path : str or path-like
        The data directory (created if missing; not open by another process).
    name : str
        The collection.
    source : path or list of paths
        A Parquet file, a directory of them (searched recursively), or a list. The work is
        split into blocks of row groups (about 32 MB decoded each, one file's): write large
        files with several row groups, or split the dataset into several files.
    index : {"partitioned", "hnsw", "spann", "flat", "multitenant"}
        "partitioned" builds each partition in a task of its own; the other kinds build their
        one index in one task (spann: clustering, replication and its posting files there).
    metric : {"l2", "ip", "cosine"}
    id_column, vector_column : str
        The int64 ids (distinct, >= 0) and the vectors (lists of numbers, all of one length).
    tenant_column, shared_with_column : str, optional
        Owner tenant (string) and further tenants (list of strings) of each row.
    attribute_columns : list of str, optional
        Attribute columns (default: every other column).
    num_workers : int, optional
        Tasks (or threads) at once; default: the CPUs of the Ray cluster, or the cores here.
    address : str, optional
        A Ray cluster to run on (``ray start --head --node-ip-address=127.0.0.1`` prints it);
        implies ``ray=True``.
    ray : bool, default False
        Run on Ray (a local one bound to 127.0.0.1 unless ``address`` or Ray is initialised).
    progress : callable, optional
        ``progress(stage, done, total)``, called in this thread as the work advances (on Ray
        too): stage ``"scan"`` (rows read and checked, of all rows), then ``"assign"`` (rows
        assigned to their partitions and spilled), then ``"build"`` (indexes built, of the
        partitions; 1 for the other kinds). Each stage starts at 0 and ends at its total.
        If it raises, the job stops as on a bad row (nothing committed) and the exception
        propagates: raise to cancel.
    **index_params
        As for :meth:`shardwalk.Engine.create_collection`: ``partitions``, ``m``,
        ``ef_construction``, ``ef``, ``seed``, and ``train_size`` (rows in the training sample
        of the partitioning; default ``max(1000, 256 * partitions)``).

    Returns
    -------
    dict
        rows, dim, partitions and their sizes, ``seconds`` per stage (start: the workers up;
        scan, train, assign, build, commit, total), ``driver_cpu_seconds`` per stage (this
        process, all its threads: on threads, the workers' CPU too), ``start`` (Ray: each
        worker's pid, node and CPU seconds spent starting), ``stages`` (where the scan and
        assign passes spent their time: blocks, worker seconds reading and checking, CPU
        seconds per worker process, vector data per second per worker), ``build_schedule``
        (the build tasks' order, each worker's busy and CPU seconds, the tail from the first
        worker idle to the end), ``bytes`` (input, spilled,
        snapshot, object_store), peak memory of driver and workers, executor and workers, and
        each build task's report.

    Raises
    ------
    InvalidArgumentError
        A bad row (naming the file and the row: wrong dimension, null, NaN or infinite value,
        negative id, a duplicate id naming both rows), a missing column, bad parameters, a
        ``progress`` that is not callable. Nothing is committed: an existing collection keeps
        its previous version.
    NotFoundError
        No such input.
    FailedPreconditionError
        Ray is not installed or not reachable; the data directory is open elsewhere.
    """
    if num_workers is not None:
        num_workers = check_int("num_workers", num_workers, minimum=1, maximum=4096)
    columns = Columns(
        id=id_column,
        vector=vector_column,
        tenant=tenant_column,
        shared=shared_with_column,
        attributes=tuple(attribute_columns or ()),
    )
    progress = check_progress(progress)
    kwargs: dict[str, Any] = dict(
        index=index, metric=metric, columns=columns, index_params=index_params, progress=progress
    )
    if not (ray or address):
        return run_pipeline(path, name, source, executor=ThreadExecutor(num_workers), **kwargs)
    layer = _ray_layer()
    started = layer.connect(address, num_workers)
    try:
        executor = layer.RayExecutor(num_workers)
        return run_pipeline(path, name, source, executor=executor, **kwargs)
    finally:
        layer.disconnect(started)


def build_fingerprints(
    path: str | os.PathLike[str],
    graph: str,
    *,
    mode: str = "replicated",
    num_workers: int | None = None,
    address: str | None = None,
    progress: Progress | None = None,
    **options: Unpack[FingerprintOptions],
) -> dict[str, Any]:
    """Build (or rebuild) graph ``graph``'s fingerprints on Ray and commit them, as
    :meth:`shardwalk.Graph.build_fingerprints` does in one process (same parameters, the
    same defaults: ``hubs="auto"``).

    ``mode="replicated"``: every task reads the whole CSR from the object store and walks from
    a range of sources; the store is byte-identical to the embedded one (same seed, any number
    of workers). ``mode="sharded"``: shard actors own node ranges and pass walks between them
    in rounds, for graphs one worker cannot hold; the same distribution, not the same bytes.

    ``progress(stage, done, total)`` is called here as the tasks end (replicated) or after
    each round (sharded): stage ``"walks"`` counts the walks ended (of nodes x
    ``walks_per_node``), then, with hubs, ``"hub walks"`` (of hubs x ``hub_walks``). If it
    raises, the job stops, the graph keeps its previous fingerprints and the exception
    propagates.

    Returns the build statistics (seconds, steps, bytes, workers, tasks, object store bytes,
    peak memory of the workers; per actor in the sharded mode).
    """
    check_choice("mode", mode, _MODES)
    progress = check_progress(progress)
    if num_workers is not None:
        num_workers = check_int("num_workers", num_workers, minimum=1, maximum=4096)
    layer = _ray_layer()
    from shardwalk.engine import Engine
    from shardwalk.walks import distributed as walks_layer

    started = layer.connect(address, num_workers)
    try:
        workers = layer.RayExecutor(num_workers).workers
        with Engine.open(path) as engine:
            target = engine.graph(graph)
            options.setdefault("hubs", "auto")
            csr = target._compacted_csr()
            build = (
                walks_layer.fingerprints_replicated
                if mode == "replicated"
                else walks_layer.fingerprints_sharded
            )
            store = build(csr, workers=workers, progress=progress, **options)
            return target._adopt_fingerprints(store, store.seed)
    finally:
        layer.disconnect(started)
