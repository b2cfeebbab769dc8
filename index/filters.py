"""Typed attribute predicates, built in Python and never parsed from a string.

    from shardwalk import F
    where = (F("year") >= 2020) & F("lang").isin(["en", "de"]) & ~F("tags").contains("spam")

A predicate is a small frozen tree (Eq, Ne, In, Range, Exists, And, Or, Not). ``validate``
checks it against a collection's attribute types (unknown field, wrong value type, an operator
the type does not support) before anything runs; ``evaluate`` turns it into a boolean mask over
Arrow columns with pyarrow.compute.

Missing values follow SQL's three-valued logic: a comparison (``==``, ``!=``, ``isin``,
``contains``, ranges) with a missing value (null, or an attribute a row never had) is unknown,
not false; ``~`` of unknown is unknown; ``a & b`` is false if either is false, and ``a | b``
true if either is true; a row matches only where the whole predicate is true. So a missing
value never matches a comparison, negated or not: ``~(F("x") == 1)`` and ``F("x") != 1`` both
leave out the rows without ``x``, and only an explicit ``exists`` test (never unknown) reaches
them: ``~F("x").exists() | (F("x") != 1)``. An empty list is a value (it holds nothing), not a
missing one: ``~F("tags").contains("spam")`` matches it, though ``F("tags").exists()`` does not.

On list-of-strings attributes (tags), ``==`` / ``contains`` means "the list holds the value" and
``isin`` means "the list holds any of the values".
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from shardwalk.errors import InvalidArgumentError

__all__ = [
    "And",
    "Eq",
    "Exists",
    "F",
    "In",
    "Ne",
    "Not",
    "Or",
    "Predicate",
    "Range",
    "evaluate",
    "validate",
]

Scalar = int | float | str | bool


class _Node:
    """Operators shared by every predicate: ``&``, ``|``, ``~``."""

    def __and__(self, other: Predicate) -> Predicate:
        return And((self, _check_node(other)))  # type: ignore[arg-type]

    def __or__(self, other: Predicate) -> Predicate:
        return Or((self, _check_node(other)))  # type: ignore[arg-type]

    def __invert__(self) -> Predicate:
        return Not(self)  # type: ignore[arg-type]

    def __bool__(self) -> bool:
        raise TypeError(
            "a predicate has no truth value: combine predicates with &, | and ~ "
            "(not 'and', 'or', 'not'), and compare one field per term"
        )


@dataclass(frozen=True)
class Eq(_Node):
    field: str
    value: Scalar


@dataclass(frozen=True)
class Ne(_Node):
    field: str
    value: Scalar


@dataclass(frozen=True)
class In(_Node):
    field: str
    values: tuple[Scalar, ...]


@dataclass(frozen=True)
class Range(_Node):
    """``low <= field <= high`` (each bound optional, each inclusive or not)."""

    field: str
    low: float | int | None = None
    high: float | int | None = None
    low_inclusive: bool = True
    high_inclusive: bool = True


@dataclass(frozen=True)
class Exists(_Node):
    field: str


@dataclass(frozen=True)
class And(_Node):
    terms: tuple[Predicate, ...]


@dataclass(frozen=True)
class Or(_Node):
    terms: tuple[Predicate, ...]


@dataclass(frozen=True)
class Not(_Node):
    term: Predicate


Predicate = Eq | Ne | In | Range | Exists | And | Or | Not
_NODES = (Eq, Ne, In, Range, Exists, And, Or, Not)


def _check_node(value: Any) -> Predicate:
    if not isinstance(value, _NODES):
        raise InvalidArgumentError(
            f"a filter must be built from F(...) terms (e.g. F('year') >= 2020); got "
            f"{type(value).__name__}"
        )
    return value


class F:
    """A field reference: ``F("year") >= 2020``, ``F("lang").isin([...])``, ``F("x").exists()``."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        if not isinstance(name, str) or not name:
            raise InvalidArgumentError(f"F() takes an attribute name; got {name!r}")
        self.name = name

    def __eq__(self, value: Any) -> Eq:  # type: ignore[override]
        return Eq(self.name, value)

    def __ne__(self, value: Any) -> Ne:  # type: ignore[override]
        return Ne(self.name, value)

    def __ge__(self, value: Any) -> Range:
        return Range(self.name, low=value)

    def __gt__(self, value: Any) -> Range:
        return Range(self.name, low=value, low_inclusive=False)

    def __le__(self, value: Any) -> Range:
        return Range(self.name, high=value)

    def __lt__(self, value: Any) -> Range:
        return Range(self.name, high=value, high_inclusive=False)

    def __hash__(self) -> int:
        return hash(("F", self.name))

    def isin(self, values: Iterable[Any]) -> In:
        if isinstance(values, (str, bytes)):
            raise InvalidArgumentError(f"isin takes a list of values; got the string {values!r}")
        return In(self.name, tuple(values))

    def contains(self, value: Any) -> Eq:
        """For list attributes: the list holds ``value``."""
        return Eq(self.name, value)

    def between(self, low: Any, high: Any) -> Range:
        """``low <= field <= high``."""
        return Range(self.name, low=low, high=high)

    def exists(self) -> Exists:
        return Exists(self.name)


# -- validation -------------------------------------------------------------------------------
def _kind(t: pa.DataType) -> str:
    if pa.types.is_integer(t):
        return "int"
    if pa.types.is_floating(t):
        return "float"
    if pa.types.is_boolean(t):
        return "bool"
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return "string"
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return "list"
    return str(t)


def _value_ok(kind: str, value: Any) -> bool:
    if kind == "int":
        return isinstance(value, (int, np.integer)) and not isinstance(value, bool)
    if kind == "float":
        return (
            isinstance(value, (int, float, np.integer, np.floating))
            and not isinstance(value, bool)
            and np.isfinite(value)
        )
    if kind == "bool":
        return isinstance(value, (bool, np.bool_))
    if kind in ("string", "list"):
        return isinstance(value, str)
    return False


def validate(predicate: Any, schema: Mapping[str, pa.DataType]) -> Predicate:
    """Check a predicate against attribute types; returns it unchanged or raises."""
    node = _check_node(predicate)
    known = ", ".join(sorted(schema)) or "none"
    if isinstance(node, (And, Or)):
        if not node.terms:
            raise InvalidArgumentError(f"{type(node).__name__} needs at least one term")
        for term in node.terms:
            validate(term, schema)
        return node
    if isinstance(node, Not):
        validate(node.term, schema)
        return node
    if node.field not in schema:
        raise InvalidArgumentError(
            f"filter on unknown attribute {node.field!r}; this collection's attributes: {known}"
        )
    if pa.types.is_null(schema[node.field]):
        return node  # every value so far is missing: nothing to check, nothing will match
    kind = _kind(schema[node.field])
    expect = {
        "int": "an integer",
        "float": "a number",
        "bool": "True or False",
        "string": "a string",
        "list": "a string (lists hold strings)",
    }.get(kind, kind)
    if isinstance(node, (Eq, Ne)):
        values: tuple[Any, ...] = (node.value,)
    elif isinstance(node, In):
        if not node.values:
            raise InvalidArgumentError(f"isin on {node.field!r} needs at least one value")
        values = node.values
    elif isinstance(node, Range):
        if kind not in ("int", "float"):
            raise InvalidArgumentError(
                f"range comparison on {node.field!r}, which holds {schema[node.field]}; ranges "
                "apply to int and float attributes (use == or isin)"
            )
        values = tuple(v for v in (node.low, node.high) if v is not None)
        if not values:
            raise InvalidArgumentError(f"range on {node.field!r} needs a low or a high bound")
        kind = "float"  # int attributes may be compared with float bounds
    else:  # Exists
        return node
    for value in values:
        if not _value_ok(kind, value):
            raise InvalidArgumentError(
                f"attribute {node.field!r} holds {schema[node.field]}; the filter compares it "
                f"with {value!r} ({type(value).__name__}), expected {expect}"
            )
    if isinstance(node, Ne) and kind == "list":
        raise InvalidArgumentError(
            f"!= on the list attribute {node.field!r} is ambiguous; use ~F({node.field!r}).contains(...)"
        )
    return node


# -- evaluation -------------------------------------------------------------------------------
def _list_any(column: pa.ChunkedArray, values: pa.Array) -> np.ndarray:
    """Row mask: the row's list holds any of ``values``."""
    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    flat = pc.list_flatten(arr)
    parents = pc.list_parent_indices(arr).to_numpy()
    hit = pc.is_in(flat, value_set=values).to_numpy(zero_copy_only=False)
    out = np.zeros(len(arr), dtype=bool)
    out[parents[hit]] = True
    return out


def _mask(result: pa.ChunkedArray | pa.Array) -> np.ndarray:
    filled = pc.fill_null(result, False)
    if isinstance(filled, pa.ChunkedArray):
        filled = filled.combine_chunks()
    return filled.to_numpy(zero_copy_only=False)


def evaluate(predicate: Predicate, table: pa.Table) -> np.ndarray:
    """Boolean mask of the table's rows matching a *validated* predicate (where it is true;
    unknown, a comparison with a missing value, does not match: see the module docstring)."""
    if table.num_rows <= _SMALL:
        try:
            truth = _small(predicate, table, {})
        except _Arrow:
            pass
        else:
            return np.array([value is True for value in truth], dtype=bool)
    return _truth(predicate, table)[0]


# Tables of at most this many rows (a write group's new rows) are evaluated in Python on their
# values: each Arrow kernel call costs ~3-10 us whatever the size (a range on 10 rows ~45 us,
# against ~5 in Python). The same answers: where Arrow's comparison of an int with a float
# would refuse a value (ints beyond 2**53, where a float is inexact), it is left to Arrow.
_SMALL = 32
_EXACT = 2**53
_INT64 = (-(2**63), 2**63 - 1)


class _Arrow(Exception):
    """A case the Python evaluation leaves to Arrow's (which then answers or raises)."""


def _small(predicate: Predicate, table: pa.Table, values: dict[str, list[Any]]) -> list[Any]:
    """The predicate's three-valued truth per row (True, False, None: unknown), as
    :func:`_truth` gives it, from the rows' values in Python (``values``: a column's, by
    name, read once). Raises ``_Arrow`` where it cannot answer as Arrow does."""
    n = table.num_rows
    if isinstance(predicate, (And, Or)):
        # AND: false if any term is false, else unknown if any is, else true; OR: the dual
        stop = isinstance(predicate, Or)  # the value that decides: True for OR
        out: list[Any] = [not stop] * n
        for term in predicate.terms:
            truth = _small(term, table, values)
            out = [
                stop if a is stop or b is stop else None if a is None or b is None else a
                for a, b in zip(out, truth)
            ]
        return out
    if isinstance(predicate, Not):
        return [None if t is None else not t for t in _small(predicate.term, table, values)]
    if predicate.field not in table.column_names:
        return [False if isinstance(predicate, Exists) else None] * n
    column = table.column(predicate.field)
    kind = _STORED.get(column.type)
    if kind is None:
        if pa.types.is_null(column.type):
            return [False if isinstance(predicate, Exists) else None] * n
        raise _Arrow
    rows = values.get(predicate.field)
    if rows is None:
        rows = values[predicate.field] = column.to_pylist()
    if isinstance(predicate, Exists):
        if kind == "list":
            return [v is not None and len(v) > 0 for v in rows]
        return [v is not None for v in rows]
    if isinstance(predicate, Range):
        return _range(predicate, kind, rows)
    if isinstance(predicate, In):
        wanted = set(_cast_values(predicate.values, column.type))
    else:
        wanted = {_operand(predicate.value, kind)}
    if kind == "list":
        return [None if v is None else not wanted.isdisjoint(v) for v in rows]
    if isinstance(predicate, Ne):
        (value,) = wanted
        return [None if v is None else v != value for v in rows]
    return [None if v is None else v in wanted for v in rows]


_STORED = {
    pa.int64(): "int",
    pa.float64(): "float",
    pa.bool_(): "bool",
    pa.string(): "string",
    pa.list_(pa.string()): "list",
}


def _operand(value: Any, kind: str) -> Any:
    """A comparison's operand as Arrow compares it with a column of ``kind`` (an int with a
    float column as a float); ``_Arrow`` where Arrow would refuse it or cast the column."""
    if isinstance(value, (bool, np.bool_)):
        if kind == "bool":
            return bool(value)
    elif kind == "bool":
        pass
    elif isinstance(value, (int, np.integer)):
        if kind == "float" and abs(int(value)) <= _EXACT:
            return float(value)
        if kind == "int" and _INT64[0] <= int(value) <= _INT64[1]:
            return int(value)
    elif isinstance(value, (float, np.floating)):
        if kind == "float":
            return float(value)
    elif isinstance(value, str) and kind in ("string", "list"):
        return value
    raise _Arrow


def _cast_values(values: tuple[Any, ...], type_: pa.DataType) -> list[Any]:
    """``isin``'s values as :func:`_compare` casts them to the column's (value) type."""
    try:
        return (
            pa.array(list(values))
            .cast(type_.value_type if pa.types.is_list(type_) else type_)
            .to_pylist()
        )
    except (pa.ArrowException, OverflowError, TypeError) as exc:
        raise _Arrow from exc


def _range(predicate: Range, kind: str, rows: list[Any]) -> list[Any]:
    """A range's truth per row, each bound compared as Arrow compares it (an int column with
    a float bound as floats: exact up to 2**53, beyond which Arrow refuses)."""
    out: list[Any] = [None if v is None else True for v in rows]
    for bound, low, inclusive in (
        (predicate.low, True, predicate.low_inclusive),
        (predicate.high, False, predicate.high_inclusive),
    ):
        if bound is None:
            continue
        if kind == "int" and isinstance(bound, (float, np.floating)):
            if any(v is not None and abs(v) > _EXACT for v in rows):
                raise _Arrow
            bound = float(bound)
        elif kind in ("int", "float"):
            bound = _operand(bound, kind)
        else:
            raise _Arrow
        if low:
            hit = [v is not None and (v >= bound if inclusive else v > bound) for v in rows]
        else:
            hit = [v is not None and (v <= bound if inclusive else v < bound) for v in rows]
        out = [None if o is None else o and h for o, h in zip(out, hit)]
    return out


def _truth(predicate: Predicate, table: pa.Table) -> tuple[np.ndarray, np.ndarray]:
    """The predicate's three-valued truth per row as two masks ``(true, false)``; a row in
    neither is unknown."""
    n = table.num_rows
    if isinstance(predicate, And):  # false if any term is false, true if all are true
        true, false = np.ones(n, dtype=bool), np.zeros(n, dtype=bool)
        for term in predicate.terms:
            t, f = _truth(term, table)
            true &= t
            false |= f
        return true, false
    if isinstance(predicate, Or):  # true if any term is true, false if all are false
        true, false = np.zeros(n, dtype=bool), np.ones(n, dtype=bool)
        for term in predicate.terms:
            t, f = _truth(term, table)
            true |= t
            false &= f
        return true, false
    if isinstance(predicate, Not):  # NOT of unknown is unknown
        true, false = _truth(predicate.term, table)
        return false, true
    if predicate.field not in table.column_names:  # no row has the attribute (yet)
        unknown = np.zeros(n, dtype=bool)
        return unknown, (np.ones(n, dtype=bool) if isinstance(predicate, Exists) else unknown)
    column = table.column(predicate.field)
    if pa.types.is_null(column.type):  # every value missing
        unknown = np.zeros(n, dtype=bool)
        return unknown, (np.ones(n, dtype=bool) if isinstance(predicate, Exists) else unknown)
    is_list = pa.types.is_list(column.type)
    known = _mask(pc.is_valid(column))
    if isinstance(predicate, Exists):  # never unknown: it is the test for missing values
        exists = known.copy()
        if is_list:
            exists &= _mask(pc.greater(pc.list_value_length(column), 0))
        return exists, ~exists
    true = _compare(predicate, column, is_list)
    return true, known & ~true


def _compare(predicate: Eq | Ne | In | Range, column: pa.ChunkedArray, is_list: bool) -> np.ndarray:
    """Rows where a comparison is true (false where the value is missing: the caller tells
    false from unknown)."""
    if isinstance(predicate, Eq):
        if is_list:
            return _list_any(column, pa.array([predicate.value]))
        return _mask(pc.equal(column, predicate.value))
    if isinstance(predicate, Ne):
        return _mask(pc.not_equal(column, predicate.value))
    if isinstance(predicate, In):
        value_type = column.type.value_type if is_list else column.type
        values = pa.array(list(predicate.values)).cast(value_type)
        if is_list:
            return _list_any(column, values)
        return _mask(pc.is_in(column, value_set=values))
    # Range
    out = _mask(pc.is_valid(column))
    if predicate.low is not None:
        op = pc.greater_equal if predicate.low_inclusive else pc.greater
        out &= _mask(op(column, predicate.low))
    if predicate.high is not None:
        op = pc.less_equal if predicate.high_inclusive else pc.less
        out &= _mask(op(column, predicate.high))
    return out
