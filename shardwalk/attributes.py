"""A collection's typed attributes and owners as Arrow columns: what a write's ``attributes=``,
``tenants=`` and ``shared_with=`` may hold, read into normalised columns (int64, float64, bool,
string, list<string>), checked against the collection's declared and known types.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from shardwalk.errors import InvalidArgumentError
from shardwalk.validation import check_name

__all__ = [
    "DECLARABLE",
    "attribute_table",
    "conform",
    "declared_schema",
    "merge_schema",
    "shared_array",
    "tenant_array",
]

_ATTRIBUTE_TYPES = "int64, float64, bool, string, list<string>"
# the types a collection may declare for its attributes (``attributes=`` at creation)
DECLARABLE = {
    "int64": pa.int64(),
    "float64": pa.float64(),
    "bool": pa.bool_(),
    "string": pa.string(),
    "list<string>": pa.list_(pa.string()),
}


_STORED_TYPES = (pa.int64(), pa.float64(), pa.bool_(), pa.string())


def _normalise_type(name: str, column: pa.ChunkedArray | pa.Array) -> pa.Array | pa.ChunkedArray:
    t = column.type
    if t in _STORED_TYPES:  # already as stored (a cast to the same type costs ~10 us)
        return column
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
    same = True  # every column already of its stored type: the table as it is
    for name in table.column_names:
        if name.startswith("_"):
            raise InvalidArgumentError(
                f"attribute name {name!r} starts with '_', which is reserved for shardwalk's own "
                "columns; rename it"
            )
        check_name("attribute", name)
        column = table.column(name)
        columns[name] = normalised = _normalise_type(name, column)
        same = same and normalised is column
    if same and columns and table is not attributes:  # (built here: nothing to drop)
        return table
    return pa.table(columns) if columns else pa.table({})


def declared_schema(attributes: Any) -> dict[str, str]:
    """A collection's declared attributes (name -> one of :data:`DECLARABLE`'s type names),
    checked; accepts the Arrow spellings too ("double", "list<item: string>")."""
    if not isinstance(attributes, Mapping):
        raise InvalidArgumentError(
            'attributes must be a dict of name -> type, e.g. {"year": "int64", "tags": '
            f'"list<string>"}}; got {type(attributes).__name__}'
        )
    spelled = {str(t): name for name, t in DECLARABLE.items()}
    out = {}
    for name, kind in attributes.items():
        if not isinstance(name, str) or name.startswith("_"):
            raise InvalidArgumentError(
                f"attribute name {name!r} is not a string or starts with '_' (reserved for "
                "shardwalk's own columns)"
            )
        check_name("attribute", name)
        kind = kind if kind in DECLARABLE else spelled.get(kind) if isinstance(kind, str) else None
        if kind is None:
            raise InvalidArgumentError(
                f"attribute {name!r} is declared with type {attributes[name]!r}; declarable "
                f"types: {', '.join(DECLARABLE)}"
            )
        out[name] = kind
    return out


def conform(attributes: pa.Table, declared: Mapping[str, pa.DataType]) -> pa.Table:
    """``attributes`` with each declared column cast to its declared type (ints to a float
    attribute, missing values to any); ``InvalidArgumentError`` naming the attribute when a
    column does not convert."""
    for i, column in enumerate(attributes.schema):
        want = declared.get(column.name)
        if want is None or column.type == want:
            continue
        convertible = pa.types.is_null(column.type) or (
            pa.types.is_floating(want) and pa.types.is_integer(column.type)
        )
        if not convertible:
            raise InvalidArgumentError(
                f"attribute {column.name!r} is declared {want} in this collection; got "
                f"{column.type}"
            )
        attributes = attributes.set_column(
            i, column.name, attributes.column(i).cast(want, safe=False)
        )
    return attributes


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
    try:  # each name once (in order: the first bad one is named)
        names: Any = dict.fromkeys(values)
    except TypeError:  # an unhashable value: check_name says what it is
        names = values
    for value in names:
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


def merge_schema(schema: dict[str, pa.DataType], attributes: pa.Table) -> None:
    """Check ``attributes`` against ``schema`` (name -> type, as ``RowTable.schema`` gives it)
    and add their new columns to it, so several writes can be checked in turn before any is
    appended. An attribute keeps its first non-null type."""
    for column in attributes.schema:
        known = schema.get(column.name)
        if known is None or pa.types.is_null(known):
            schema[column.name] = column.type
        elif known != column.type and not pa.types.is_null(column.type):
            raise InvalidArgumentError(
                f"attribute {column.name!r} holds {known} in this collection; got {column.type}"
            )
