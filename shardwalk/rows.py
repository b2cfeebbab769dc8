"""The rows of a collection: id, liveness, owner tenant and typed attributes of each vector.

Row numbers are the labels the vector index knows: append-only, so an upsert of an existing id
kills its old row and appends a new one, and the index never has to renumber. Tenants and
attributes are Arrow columns (compact, typed, written as Parquet), appended in chunks.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from shardwalk.errors import CorruptionError, InvalidArgumentError, NotFoundError
from shardwalk.validation import check_name

__all__ = ["SHARED", "TENANT", "RowTable", "attribute_table", "shared_array", "tenant_array"]

ID, ALIVE, TENANT, SHARED = "_id", "_alive", "_tenant", "_shared"
_ATTRIBUTE_TYPES = "int64, float64, bool, string, list<string>"


def _normalise_type(name: str, column: pa.ChunkedArray | pa.Array) -> pa.Array | pa.ChunkedArray:
    t = column.type
    if pa.types.is_integer(t):
        return column.cast(pa.int64())
    if pa.types.is_floating(t):
        return column.cast(pa.float64())
    if pa.types.is_boolean(t):
        return column
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_dictionary(t):
        return column.cast(pa.string())
    if (pa.types.is_list(t) or pa.types.is_large_list(t)) and (
        pa.types.is_string(t.value_type)
        or pa.types.is_large_string(t.value_type)
        or pa.types.is_null(t.value_type)  # only empty lists so far
    ):
        return column.cast(pa.list_(pa.string()))
    if pa.types.is_null(t):
        return column  # every value missing: the type is whatever the collection knows
    raise InvalidArgumentError(
        f"attribute {name!r} has type {t}; supported attribute types: {_ATTRIBUTE_TYPES}"
    )


def attribute_table(attributes: Any, n: int) -> pa.Table:
    """Attributes as an Arrow table of ``n`` rows with normalised types.

    Accepts a mapping of column name -> sequence of n values, a list of n dicts (one per vector),
    or a ``pyarrow.Table``.
    """
    if attributes is None:
        return pa.table({})
    try:
        if isinstance(attributes, pa.Table):
            table = attributes
        elif isinstance(attributes, Mapping):
            columns = {}
            for name, values in attributes.items():
                values = values.tolist() if isinstance(values, np.ndarray) else values
                columns[name] = pa.array(values)
            table = pa.table(columns)
        elif isinstance(attributes, Sequence) and not isinstance(attributes, (str, bytes)):
            table = pa.Table.from_pylist(list(attributes))
        else:
            raise InvalidArgumentError(
                "attributes must be a dict of columns {name: [n values]}, a list of n dicts, "
                f"or a pyarrow.Table; got {type(attributes).__name__}"
            )
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError) as exc:
        raise InvalidArgumentError(
            f"attributes could not be read as typed columns: {exc}; each attribute must hold "
            f"one type ({_ATTRIBUTE_TYPES})"
        ) from exc
    if table.num_rows != n and table.num_columns:
        raise InvalidArgumentError(
            f"attributes have {table.num_rows} rows; expected {n} (one per id)"
        )
    columns = {}
    for name in table.column_names:
        if name.startswith("_"):
            raise InvalidArgumentError(
                f"attribute name {name!r} starts with '_', which is reserved for shardwalk's own "
                "columns; rename it"
            )
        check_name("attribute", name)
        columns[name] = _normalise_type(name, table.column(name))
    return pa.table(columns) if columns else pa.table({})


def tenant_array(tenants: Any, n: int) -> pa.Array:
    """Owner tenant per row as an Arrow string array (null: no owner)."""
    if tenants is None:
        return pa.nulls(n, pa.string())
    if isinstance(tenants, str):
        check_name("tenant", tenants)
        return pa.array([tenants] * n, pa.string())
    values = tenants.tolist() if isinstance(tenants, np.ndarray) else list(tenants)
    if len(values) != n:
        raise InvalidArgumentError(f"tenants has {len(values)} entries; expected {n} (one per id)")
    for value in values:
        if value is not None:
            check_name("tenant", value)
    return pa.array(values, pa.string())


def shared_array(shared_with: Any, n: int) -> pa.Array | None:
    """Per row, the further tenants it is shared with (an access list, as in Curator)."""
    if shared_with is None:
        return None
    values = shared_with.tolist() if isinstance(shared_with, np.ndarray) else list(shared_with)
    if len(values) != n:
        raise InvalidArgumentError(
            f"shared_with has {len(values)} entries; expected {n} (one list of tenants per id)"
        )
    for entry in values:
        if entry is None:
            continue
        if isinstance(entry, str) or not isinstance(entry, Sequence):
            raise InvalidArgumentError(
                f"shared_with must hold a list of tenant names per id; got {entry!r}"
            )
        for tenant in entry:
            check_name("tenant", tenant)
    return pa.array(values, pa.list_(pa.string()))


class RowTable:
    """Append-only rows: ids, liveness, the id -> live row map, and the Arrow columns."""

    def __init__(self) -> None:
        self._n = 0
        self._ids = np.zeros(1024, dtype=np.int64)
        self._alive = np.zeros(1024, dtype=bool)
        self._row_of: dict[int, int] = {}
        self._chunks: list[pa.Table] = []
        self._schema: dict[str, pa.DataType] = {}

    # -- sizes ------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._row_of)

    @property
    def rows(self) -> int:
        return self._n

    @property
    def ids(self) -> np.ndarray:
        return self._ids[: self._n]

    @property
    def alive(self) -> np.ndarray:
        return self._alive[: self._n]

    @property
    def schema(self) -> dict[str, pa.DataType]:
        """Attribute name -> type (``null`` for attributes whose values were all missing)."""
        return dict(self._schema)

    # -- writes -----------------------------------------------------------------------------
    def check_schema(self, attributes: pa.Table) -> None:
        for field in attributes.schema:
            known = self._schema.get(field.name)
            if (
                known is not None
                and known != field.type
                and not pa.types.is_null(known)
                and not pa.types.is_null(field.type)
            ):
                raise InvalidArgumentError(
                    f"attribute {field.name!r} holds {known} in this collection; got {field.type}"
                )

    def append(
        self,
        ids: np.ndarray,
        tenants: pa.Array,
        attributes: pa.Table,
        shared: pa.Array | None = None,
    ) -> np.ndarray:
        """Add rows for ``ids`` (killing the rows they replace); returns the new rows."""
        n = ids.size
        if self._n + n > self._ids.shape[0]:
            capacity = max(self._n + n, 2 * self._ids.shape[0])
            self._ids = np.resize(self._ids, capacity)
            alive = np.zeros(capacity, dtype=bool)
            alive[: self._n] = self._alive[: self._n]
            self._alive = alive
        rows = np.arange(self._n, self._n + n, dtype=np.int64)
        self._ids[rows] = ids
        self._alive[rows] = True
        self._n += n
        for row, id_ in zip(rows.tolist(), ids.tolist()):
            old = self._row_of.get(id_)
            if old is not None:
                self._alive[old] = False
            self._row_of[id_] = row
        for i, field in enumerate(attributes.schema):
            known = self._schema.get(field.name)
            if pa.types.is_null(field.type) and known is not None and not pa.types.is_null(known):
                column = attributes.column(i).cast(known)
                attributes = attributes.set_column(i, field.name, column)
        chunk = (
            attributes.append_column(TENANT, tenants)
            if attributes.num_columns
            else pa.table({TENANT: tenants})
        )
        if shared is not None:
            chunk = chunk.append_column(SHARED, shared)
        self._chunks.append(chunk)
        for field in attributes.schema:
            if not pa.types.is_null(self._schema.get(field.name, pa.null())):
                continue
            self._schema[field.name] = field.type  # null until a typed value arrives
        return rows

    def replaced_rows(self, ids: np.ndarray) -> np.ndarray:
        """The live rows currently holding these ids (those that exist)."""
        rows = [self._row_of.get(i) for i in ids.tolist()]
        return np.array([r for r in rows if r is not None], dtype=np.int64)

    def kill(self, ids: np.ndarray) -> np.ndarray:
        """Delete ids; returns the rows that died (unknown ids are skipped)."""
        rows = []
        for id_ in ids.tolist():
            row = self._row_of.pop(id_, None)
            if row is not None:
                rows.append(row)
        out = np.array(rows, dtype=np.int64)
        self._alive[out] = False
        return out

    # -- reads ------------------------------------------------------------------------------
    def rows_of(self, ids: np.ndarray, *, owner: str) -> np.ndarray:
        rows = np.fromiter((self._row_of.get(i, -1) for i in ids.tolist()), np.int64, ids.size)
        missing = ids[rows < 0]
        if missing.size:
            shown = ", ".join(str(v) for v in missing[:5].tolist())
            more = f" and {missing.size - 5} more" if missing.size > 5 else ""
            raise NotFoundError(f"{owner} has no ids {shown}{more}")
        return rows

    def missing(self, ids: np.ndarray) -> np.ndarray:
        return np.array([i for i in ids.tolist() if i not in self._row_of], dtype=np.int64)

    def table(self) -> pa.Table:
        """All rows' Arrow columns (tenant, shared, attributes) as one table, row-aligned."""
        if not self._chunks:
            return pa.table({TENANT: pa.array([], pa.string())})
        if len(self._chunks) > 1:
            merged = pa.concat_tables(self._chunks, promote_options="default")
            self._chunks = [merged.combine_chunks()]
        return self._chunks[0]

    def columns(self, rows: np.ndarray) -> pa.Table:
        return self.table().take(pa.array(rows))

    # -- persistence ------------------------------------------------------------------------
    def to_arrow(self) -> pa.Table:
        table = self.table()
        return table.add_column(0, ID, pa.array(self.ids)).add_column(
            1, ALIVE, pa.array(self.alive)
        )

    def write_parquet(self, path: str) -> None:
        pq.write_table(self.to_arrow(), path)

    @classmethod
    def read_parquet(cls, path: str) -> RowTable:
        try:
            table = pq.read_table(path)
        except (OSError, pa.ArrowException) as exc:
            raise CorruptionError(f"cannot read rows file {path!r}: {exc}") from exc
        out = cls()
        n = table.num_rows
        out._n = n
        out._ids = np.resize(table.column(ID).to_numpy().astype(np.int64), max(n, 1024))
        out._alive = np.zeros(max(n, 1024), dtype=bool)
        out._alive[:n] = table.column(ALIVE).to_numpy(zero_copy_only=False)
        live = np.flatnonzero(out._alive[:n])
        out._row_of = dict(zip(out._ids[live].tolist(), live.tolist()))
        rest = table.drop_columns([ID, ALIVE])
        out._chunks = [rest]
        out._schema = {f.name: f.type for f in rest.schema if f.name not in (TENANT, SHARED)}
        return out
