"""Readers of the vector file formats users bring: .npy, Parquet, ann-benchmarks HDF5, and the
texmex .fvecs / .ivecs / .bvecs files. Each streams batches, so files larger than memory ingest.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from shardwalk.errors import InvalidArgumentError, NotFoundError

__all__ = ["FORMATS", "VectorBatch", "VectorSource", "open_vectors", "read_texmex"]

FORMATS = ("auto", "npy", "parquet", "hdf5", "fvecs", "ivecs", "bvecs")


@dataclass
class VectorBatch:
    ids: np.ndarray
    vectors: np.ndarray
    tenants: list[Any] | None = None
    attributes: dict[str, list[Any]] = field(default_factory=dict)


@dataclass
class VectorSource:
    """A file opened for streaming: its size, dimension, and a batch iterator."""

    count: int
    dim: int
    batches: Iterator[VectorBatch]


def _detect(path: str) -> str:
    name = path.lower()
    for ext, fmt in (
        (".npy", "npy"),
        (".parquet", "parquet"),
        (".pq", "parquet"),
        (".hdf5", "hdf5"),
        (".h5", "hdf5"),
        (".fvecs", "fvecs"),
        (".ivecs", "ivecs"),
        (".bvecs", "bvecs"),
    ):
        if name.endswith(ext):
            return fmt
    raise InvalidArgumentError(
        f"cannot tell the format of {path!r} from its extension; pass format= one of "
        f"{', '.join(FORMATS[1:])}"
    )


def read_texmex(path: str) -> np.ndarray:
    """Memory-map a texmex file: each vector is an int32 dimension then its components
    (float32 for .fvecs, int32 for .ivecs, uint8 for .bvecs). Returns an (n, dim) view."""
    fmt = _detect(path)
    component = {"fvecs": np.float32, "ivecs": np.int32, "bvecs": np.uint8}.get(fmt)
    if component is None:
        raise InvalidArgumentError(f"{path!r} is not a .fvecs, .ivecs or .bvecs file")
    raw = np.memmap(path, dtype=np.uint8, mode="r")
    if raw.size < 4:
        raise InvalidArgumentError(f"{path!r} is empty or truncated (no dimension header)")
    dim = int(raw[:4].view(np.int32)[0])
    width = 4 + dim * np.dtype(component).itemsize
    if dim <= 0 or raw.size % width:
        raise InvalidArgumentError(
            f"{path!r} is not a valid {fmt} file: dimension {dim} and {raw.size} bytes do not "
            f"make whole records of {width} bytes (truncated?)"
        )
    records = raw.reshape(-1, width)
    dims = records[:, :4].copy().view(np.int32)[:, 0]
    if np.any(dims != dim):
        raise InvalidArgumentError(f"{path!r} has vectors of different dimensions")
    return records[:, 4:].view(component)


def open_vectors(
    path: str,
    *,
    format: str = "auto",
    batch_size: int = 10_000,
    limit: int | None = None,
    id_column: str = "id",
    vector_column: str = "vector",
    tenant_column: str | None = None,
    hdf5_dataset: str = "train",
) -> VectorSource:
    """Open a vector file for streaming ingestion.

    Ids: the ``id_column`` of a Parquet file; otherwise the row number (0, 1, ...).
    Parquet columns other than ids, vectors and tenants become attributes.
    """
    if not os.path.exists(path):
        raise NotFoundError(f"no such file: {path!r}")
    fmt = _detect(path) if format == "auto" else format
    if fmt not in FORMATS[1:]:
        raise InvalidArgumentError(f"format must be one of {', '.join(FORMATS)}; got {format!r}")
    if fmt == "parquet":
        return _open_parquet(path, batch_size, limit, id_column, vector_column, tenant_column)
    if fmt == "npy":
        array = np.load(path, mmap_mode="r")
    elif fmt == "hdf5":
        try:
            import h5py
        except ImportError:
            raise InvalidArgumentError(
                "reading HDF5 needs h5py: pip install 'shardwalk[hdf5]'"
            ) from None
        handle = h5py.File(path, "r")
        if hdf5_dataset not in handle:
            raise NotFoundError(
                f"{path!r} has no dataset {hdf5_dataset!r}; it has {sorted(handle.keys())}"
            )
        array = handle[hdf5_dataset]
    else:
        array = read_texmex(path)
    if array.ndim != 2:
        raise InvalidArgumentError(
            f"{path!r} holds an array of shape {array.shape}; expected (n, dim)"
        )
    count = array.shape[0] if limit is None else min(limit, array.shape[0])

    def batches() -> Iterator[VectorBatch]:
        for start in range(0, count, batch_size):
            stop = min(count, start + batch_size)
            yield VectorBatch(
                ids=np.arange(start, stop, dtype=np.int64),
                vectors=np.asarray(array[start:stop], dtype=np.float32),
            )

    return VectorSource(count=count, dim=int(array.shape[1]), batches=batches())


def _open_parquet(
    path: str,
    batch_size: int,
    limit: int | None,
    id_column: str,
    vector_column: str,
    tenant_column: str | None,
) -> VectorSource:
    import pyarrow.parquet as pq

    file = pq.ParquetFile(path)
    names = file.schema_arrow.names
    if vector_column not in names:
        raise InvalidArgumentError(
            f"{path!r} has no column {vector_column!r}; columns: {names} (set the vector column)"
        )
    vector_type = file.schema_arrow.field(vector_column).type
    dim = getattr(vector_type, "list_size", None)
    if dim is None or dim <= 0:
        first = next(file.iter_batches(batch_size=1, columns=[vector_column]), None)
        dim = len(first.column(0)[0]) if first is not None and first.num_rows else 0
    count = file.metadata.num_rows if limit is None else min(limit, file.metadata.num_rows)

    def batches() -> Iterator[VectorBatch]:
        done = 0
        for batch in file.iter_batches(batch_size=batch_size):
            if done >= count:
                return
            batch = batch.slice(0, count - done)
            start = done
            done += batch.num_rows
            column = batch.column(vector_column)
            vectors = (
                np.asarray(column.to_pylist(), dtype=np.float32)
                if column.null_count
                else (
                    np.asarray(
                        column.flatten().to_numpy(zero_copy_only=False), dtype=np.float32
                    ).reshape(batch.num_rows, -1)
                )
            )
            if id_column in batch.schema.names:
                ids = batch.column(id_column).to_numpy(zero_copy_only=False)
            else:
                ids = np.arange(start, start + batch.num_rows, dtype=np.int64)
            tenants = None
            if tenant_column is not None:
                if tenant_column not in batch.schema.names:
                    raise InvalidArgumentError(f"{path!r} has no tenant column {tenant_column!r}")
                tenants = [
                    None if t is None else str(t) for t in batch.column(tenant_column).to_pylist()
                ]
            skip = {id_column, vector_column, tenant_column}
            attributes = {
                n: batch.column(n).to_pylist() for n in batch.schema.names if n not in skip
            }
            yield VectorBatch(ids=ids, vectors=vectors, tenants=tenants, attributes=attributes)

    return VectorSource(count=count, dim=int(dim), batches=batches())
