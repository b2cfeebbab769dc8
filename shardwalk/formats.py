"""Readers of the vector file formats users bring: .npy, Parquet, ann-benchmarks HDF5, and the
texmex .fvecs / .ivecs / .bvecs files. Each streams batches, so files larger than memory ingest.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
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


@dataclass(frozen=True)
class VectorSource:
    """A file opened for streaming: its size, dimension, where its ids come from, and its
    batches (each access to ``batches`` reads the file again from the start, so a caller can
    check every row before writing any).

    Attributes
    ----------
    count : int
        Rows that will be read (after ``limit``).
    dim : int
    id_column : str or None
        The column the ids come from; None when they are row numbers plus ``id_offset``.
    id_offset : int
        Added to the row number to make the id (0 when ids come from a column).
    """

    count: int
    dim: int
    read: Callable[[], Iterator[VectorBatch]] = field(repr=False)
    id_column: str | None = None
    id_offset: int = 0

    @property
    def batches(self) -> Iterator[VectorBatch]:
        return self.read()

    def describe_ids(self) -> str:
        """Where the ids come from, for messages: "column 'id'", "row numbers (0..9)" or
        "row numbers + id offset 5 (5..14)"."""
        if self.id_column is not None:
            return f"column {self.id_column!r}"
        if self.count == 0:
            return "row numbers (the file has no rows)"
        first, last = self.id_offset, self.id_offset + self.count - 1
        offset = f" + id offset {self.id_offset}" if self.id_offset else ""
        return f"row numbers{offset} ({first}..{last})"


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
        f"cannot tell the format of {path!r} from its extension; give it (format=, --format "
        f"on the command line): one of {', '.join(FORMATS[1:])}"
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
    id_column: str | None = None,
    id_offset: int | None = None,
    vector_column: str = "vector",
    tenant_column: str | None = None,
    hdf5_dataset: str = "train",
) -> VectorSource:
    """Open a vector file for streaming ingestion.

    Parameters
    ----------
    path : str
    format : {"auto", "npy", "parquet", "hdf5", "fvecs", "ivecs", "bvecs"}
        "auto" tells the format from the extension.
    batch_size : int
        Rows per batch.
    limit : int, optional
        Read only the first ``limit`` rows.
    id_column : str, optional
        Parquet only: the column holding the int64 ids. Default: ``"id"`` when the file has
        that column, else row numbers. A column named here must exist.
    id_offset : int, optional
        For files without an id column (every format but Parquet with ids): the id of row r
        is ``id_offset + r``. Default 0. Refused when the ids come from a column.
    vector_column, tenant_column : str
        Parquet columns of the vectors and of the owner tenants. Other Parquet columns become
        attributes.
    hdf5_dataset : str
        The HDF5 dataset to read (ann-benchmarks files hold "train" and "test").

    Raises
    ------
    NotFoundError
        No such file, or no such HDF5 dataset.
    InvalidArgumentError
        Unknown format, a column that does not exist, an id column for a format without one,
        an id offset together with an id column, a negative offset.
    """
    if not os.path.exists(path):
        raise NotFoundError(f"no such file: {path!r}")
    fmt = _detect(path) if format == "auto" else format
    if fmt not in FORMATS[1:]:
        raise InvalidArgumentError(f"format must be one of {', '.join(FORMATS)}; got {format!r}")
    if id_offset is not None and (
        isinstance(id_offset, bool) or not isinstance(id_offset, (int, np.integer)) or id_offset < 0
    ):
        raise InvalidArgumentError(f"id offset must be a non-negative integer; got {id_offset!r}")
    if fmt == "parquet":
        return _open_parquet(
            path, batch_size, limit, id_column, id_offset, vector_column, tenant_column
        )
    if id_column is not None:
        raise InvalidArgumentError(
            f"{path!r} is a {fmt} file, which holds no ids; its ids are row numbers plus an "
            "id offset (give an id offset, id_offset= or --id-offset, instead of an id column)"
        )
    offset = int(id_offset or 0)
    if fmt == "npy":
        with open(path, "rb") as f:
            if not f.read(6).startswith(b"\x93NUMPY"):  # numpy would call it pickled data
                raise _unreadable(path, "npy", ValueError("no NumPy header"))
        try:
            array = np.load(path, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:  # a damaged header, or objects
            raise _unreadable(path, "npy", exc) from None
        if not isinstance(array, np.ndarray) or array.dtype.kind not in "biuf":
            what = "an archive" if not isinstance(array, np.ndarray) else f"{array.dtype} values"
            raise InvalidArgumentError(
                f"{path!r} holds {what}, not an array of numbers; a vector file holds an "
                f"(n, dim) array of numbers ({_KINDS})"
            )
    elif fmt == "hdf5":
        try:
            import h5py
        except ImportError:
            raise InvalidArgumentError(
                "reading HDF5 needs h5py: pip install 'shardwalk[hdf5]'"
            ) from None
        try:
            handle = h5py.File(path, "r")
        except OSError as exc:  # "file signature not found": not an HDF5 file
            raise _unreadable(path, "hdf5", exc) from None
        if hdf5_dataset not in handle:
            raise NotFoundError(
                f"{path!r} has no dataset {hdf5_dataset!r}; it has {sorted(handle.keys())} "
                "(choose one with hdf5_dataset=, --hdf5-dataset on the command line)"
            )
        array = handle[hdf5_dataset]
    else:
        array = read_texmex(path)
    if array.ndim != 2:
        raise InvalidArgumentError(
            f"{path!r} holds an array of shape {array.shape}; expected (n, dim)"
        )
    count = array.shape[0] if limit is None else min(limit, array.shape[0])
    _check_id_range(path, offset, count)

    def batches() -> Iterator[VectorBatch]:
        for start in range(0, count, batch_size):
            stop = min(count, start + batch_size)
            yield VectorBatch(
                ids=np.arange(offset + start, offset + stop, dtype=np.int64),
                vectors=np.asarray(array[start:stop], dtype=np.float32),
            )

    return VectorSource(count=count, dim=int(array.shape[1]), read=batches, id_offset=offset)


_KINDS = ".npy, Parquet, HDF5 (ann-benchmarks), .fvecs, .ivecs, .bvecs"


def _unreadable(path: str, fmt: str, exc: BaseException) -> InvalidArgumentError:
    """The error for a file that is not in the format it was read as."""
    names = {"npy": "a NumPy .npy file", "parquet": "a Parquet file", "hdf5": "an HDF5 file"}
    reason = str(exc).split(". ")[0].rstrip(".")
    return InvalidArgumentError(
        f"{path!r} is not {names[fmt]} that can be read ({reason}); check the file, or give "
        f"its real format (format=, --format on the command line; readable: {_KINDS})"
    )


def _check_id_range(path: str, offset: int, count: int) -> None:
    if count and offset + count - 1 > np.iinfo(np.int64).max:
        raise InvalidArgumentError(
            f"id offset {offset} with {count} rows of {path!r} runs past the largest int64 id"
        )


def _open_parquet(
    path: str,
    batch_size: int,
    limit: int | None,
    id_column: str | None,
    id_offset: int | None,
    vector_column: str,
    tenant_column: str | None,
) -> VectorSource:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        file = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as exc:  # "Parquet magic bytes not found"
        raise _unreadable(path, "parquet", exc) from None
    names = file.schema_arrow.names
    for what, column in (("vector", vector_column), ("tenant", tenant_column), ("id", id_column)):
        if column is not None and column not in names:
            raise InvalidArgumentError(
                f"{path!r} has no column {column!r}; columns: {names} (name the {what} "
                f"column with {what}_column=, --{what}-column on the command line)"
            )
    if id_column is None and "id" in names:
        id_column = "id"
    if id_column is not None and id_offset is not None:
        raise InvalidArgumentError(
            f"{path!r} takes its ids from column {id_column!r}, so an id offset does not apply "
            "(it numbers the rows of files without ids)"
        )
    offset = int(id_offset or 0)
    vector_type = file.schema_arrow.field(vector_column).type
    dim = getattr(vector_type, "list_size", None)
    if dim is None or dim <= 0:
        first = next(file.iter_batches(batch_size=1, columns=[vector_column]), None)
        dim = len(first.column(0)[0]) if first is not None and first.num_rows else 0
    count = file.metadata.num_rows if limit is None else min(limit, file.metadata.num_rows)
    if id_column is None:
        _check_id_range(path, offset, count)

    def batches() -> Iterator[VectorBatch]:
        done = 0
        for batch in file.iter_batches(batch_size=batch_size):
            if done >= count:
                return
            batch = batch.slice(0, count - done)
            start = done
            done += batch.num_rows
            vectors = _vectors_of(path, batch.column(vector_column), start, dim)
            if id_column is not None:
                ids = batch.column(id_column).to_numpy(zero_copy_only=False)
            else:
                ids = np.arange(offset + start, offset + start + batch.num_rows, dtype=np.int64)
            tenants = None
            if tenant_column is not None:
                tenants = [
                    None if t is None else str(t) for t in batch.column(tenant_column).to_pylist()
                ]
            skip = {id_column, vector_column, tenant_column}
            attributes = {
                n: batch.column(n).to_pylist() for n in batch.schema.names if n not in skip
            }
            yield VectorBatch(ids=ids, vectors=vectors, tenants=tenants, attributes=attributes)

    return VectorSource(
        count=count, dim=int(dim), read=batches, id_column=id_column, id_offset=offset
    )


def _vectors_of(path: str, column: Any, start: int, dim: int) -> np.ndarray:
    """A Parquet list column as an (n, dim) float32 array; ragged rows or nulls are named."""
    lengths = None
    if column.null_count == 0 and hasattr(column, "value_lengths"):
        lengths = column.value_lengths().to_numpy(zero_copy_only=False)
    elif column.null_count == 0:  # fixed-size lists
        return np.asarray(
            column.flatten().to_numpy(zero_copy_only=False), dtype=np.float32
        ).reshape(len(column), dim)
    if lengths is None or np.any(lengths != dim):
        values = column.to_pylist()
        bad = [i for i, v in enumerate(values) if v is None or len(v) != dim]
        shown = ", ".join(str(start + i) for i in bad[:5])
        raise InvalidArgumentError(
            f"{path!r}: rows {shown}{' ...' if len(bad) > 5 else ''} of the vector column are "
            f"null or do not have {dim} components (the first row has {dim})"
        )
    return np.asarray(column.flatten().to_numpy(zero_copy_only=False), dtype=np.float32).reshape(
        len(column), dim
    )
