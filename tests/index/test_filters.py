"""Typed predicates: construction, validation against attribute types, evaluation."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from shardwalk.index import filters
from shardwalk.index.filters import And, Eq, In, Not, Or, Range, evaluate, validate

from shardwalk import F, InvalidArgumentError

SCHEMA = {
    "year": pa.int64(),
    "score": pa.float64(),
    "lang": pa.string(),
    "tags": pa.list_(pa.string()),
    "ok": pa.bool_(),
}


def table(rows: list[dict]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=pa.schema([(n, t) for n, t in SCHEMA.items()]))


def test_operators_build_a_tree():
    where = (F("year") >= 2020) & F("lang").isin(["en", "de"]) | ~F("tags").contains("spam")
    assert isinstance(where, Or) and isinstance(where.terms[0], And)
    assert where.terms[0].terms[0] == Range("year", low=2020)
    assert where.terms[0].terms[1] == In("lang", ("en", "de"))
    assert where.terms[1] == Not(Eq("tags", "spam"))
    assert F("score").between(0.1, 0.9) == Range("score", 0.1, 0.9)
    assert (F("year") < 3) == Range("year", high=3, high_inclusive=False)


def test_python_boolean_operators_are_refused():
    with pytest.raises(TypeError, match=r"combine predicates with &, \| and ~"):
        (F("year") >= 1) and (F("year") <= 3)


@pytest.mark.parametrize(
    "where, message",
    [
        (
            F("yr") == 1,
            r"filter on unknown attribute 'yr'; this collection's attributes: lang, ok, score, tags, year",
        ),
        (
            F("year") == "2020",
            r"attribute 'year' holds int64; the filter compares it with '2020' \(str\), expected an integer",
        ),
        (
            F("lang") >= "a",
            r"range comparison on 'lang', which holds string; ranges apply to int and float",
        ),
        (F("lang").isin([]), r"isin on 'lang' needs at least one value"),
        (F("tags") != "x", r"!= on the list attribute 'tags' is ambiguous"),
        (F("score") == float("nan"), r"expected a number"),
        (F("ok") == 1, r"expected True or False"),
        ("year > 3", r"a filter must be built from F\(...\) terms"),
    ],
)
def test_validation_errors(where, message):
    with pytest.raises(InvalidArgumentError, match=message):
        validate(where, SCHEMA)


def test_isin_refuses_a_bare_string():
    with pytest.raises(
        InvalidArgumentError, match="isin takes a list of values; got the string 'en'"
    ):
        F("lang").isin("en")


ROW = st.fixed_dictionaries(
    {
        "year": st.none() | st.integers(2000, 2005),
        "score": st.none() | st.floats(0, 1),
        "lang": st.none() | st.sampled_from(["en", "de", "fr"]),
        "tags": st.none() | st.lists(st.sampled_from(["a", "b", "c"]), max_size=3),
        "ok": st.none() | st.booleans(),
    }
)
LEAF = st.one_of(
    st.builds(lambda v: F("year") == v, st.integers(2000, 2005)),
    st.builds(lambda v: F("year") != v, st.integers(2000, 2005)),
    st.builds(
        lambda a, b: F("year").between(min(a, b), max(a, b)),
        st.integers(2000, 2005),
        st.integers(2000, 2005),
    ),
    st.builds(lambda v: F("score") < v, st.floats(0, 1)),
    st.builds(
        lambda v: F("lang").isin(v), st.lists(st.sampled_from(["en", "de", "fr", "xx"]), min_size=1)
    ),
    st.builds(lambda v: F("tags").contains(v), st.sampled_from(["a", "b", "z"])),
    st.builds(lambda v: F("tags").isin(v), st.lists(st.sampled_from(["a", "b", "z"]), min_size=1)),
    st.builds(lambda v: F("ok") == v, st.booleans()),
    st.sampled_from(["year", "lang", "tags"]).map(lambda f: F(f).exists()),
)


def combined(leaf: st.SearchStrategy, max_leaves: int) -> st.SearchStrategy:
    """Predicates of ``leaf`` terms under &, | and ~."""
    return st.recursive(
        leaf,
        lambda inner: st.one_of(
            st.builds(lambda a, b: a & b, inner, inner),
            st.builds(lambda a, b: a | b, inner, inner),
            inner.map(lambda a: ~a),
        ),
        max_leaves=max_leaves,
    )


PREDICATE = combined(LEAF, 6)


def reference(p, row) -> bool:
    """Whether a row matches: where its three-valued truth is True (:func:`truth`)."""
    return truth(p, row) is True


def truth(p, row) -> bool | None:
    """A plain-Python reading of the documented semantics: SQL's three-valued logic, None
    for unknown (a comparison with a missing value)."""
    if isinstance(p, And):
        values = [truth(t, row) for t in p.terms]
        return False if False in values else None if None in values else True
    if isinstance(p, Or):
        values = [truth(t, row) for t in p.terms]
        return True if True in values else None if None in values else False
    if isinstance(p, Not):
        value = truth(p.term, row)
        return None if value is None else not value
    value = row[p.field]
    name = type(p).__name__
    if name == "Exists":
        return value is not None and (not isinstance(value, list) or len(value) > 0)
    if value is None:
        return None
    if isinstance(value, list):
        wanted = {p.value} if name == "Eq" else set(p.values)
        return bool(wanted & set(value))
    if name == "Eq":
        return value == p.value
    if name == "Ne":
        return value != p.value
    if name == "In":
        return value in p.values
    lo_ok = p.low is None or (value >= p.low if p.low_inclusive else value > p.low)
    hi_ok = p.high is None or (value <= p.high if p.high_inclusive else value < p.high)
    return lo_ok and hi_ok


@settings(max_examples=150, deadline=None)
@given(rows=st.lists(ROW, min_size=1, max_size=30), predicate=PREDICATE)
def test_evaluation_matches_the_reference(rows, predicate):
    validate(predicate, SCHEMA)
    got = evaluate(predicate, table(rows))
    expect = np.array([reference(predicate, r) for r in rows])
    np.testing.assert_array_equal(got, expect)


COMPARISON = st.one_of(
    st.tuples(st.just("year"), st.integers(2000, 2005)),
    st.tuples(st.just("lang"), st.sampled_from(["en", "de", "xx"])),
    st.tuples(st.just("ok"), st.booleans()),
)


@settings(max_examples=60, deadline=None)
@given(rows=st.lists(ROW, min_size=1, max_size=30), comparison=COMPARISON)
def test_not_equal_and_negated_equal_agree_and_skip_missing_values(rows, comparison):
    """``~(F(x) == v)`` is ``F(x) != v``: NOT of unknown is unknown, so neither matches a row
    whose x is missing (once ``~`` matched them); only an explicit exists test reaches them."""
    name, value = comparison
    negated = evaluate(validate(~(F(name) == value), SCHEMA), table(rows))
    differs = evaluate(validate(F(name) != value, SCHEMA), table(rows))
    missing = np.array([r[name] is None for r in rows])
    np.testing.assert_array_equal(negated, differs)
    assert not negated[missing].any()
    expect = np.array([r[name] is not None and r[name] != value for r in rows])
    np.testing.assert_array_equal(negated, expect)
    # the explicit way to keep the missing ones
    either = evaluate(validate(~F(name).exists() | (F(name) != value), SCHEMA), table(rows))
    np.testing.assert_array_equal(either, expect | missing)


def test_an_attribute_no_row_has_is_unknown_under_not():
    rows = table([{"year": 2001, "score": None, "lang": None, "tags": None, "ok": None}])
    assert not evaluate(~(F("lang") == "en"), rows).any()
    assert evaluate(~F("lang").exists(), rows).all()
    schema = {**SCHEMA, "new": pa.int64()}  # declared, never written: not a column yet
    assert not evaluate(validate(~(F("new") == 1), schema), rows).any()
    assert evaluate(validate(~F("new").exists(), schema), rows).all()


WIDE_INT = st.none() | st.integers(-(2**63), 2**63 - 1) | st.integers(-3, 3)
WIDE_FLOAT = (
    st.none() | st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from([0.5, 2.0])
)
WIDE_ROW = st.fixed_dictionaries(
    {
        "year": WIDE_INT,
        "score": WIDE_FLOAT,
        "lang": st.none() | st.sampled_from(["en", "de", ""]),
        "tags": st.none() | st.lists(st.none() | st.sampled_from(["a", "b"]), max_size=3),
        "ok": st.none() | st.booleans(),
    }
)
NUMBER = (
    st.integers(-(2**63), 2**63 - 1) | st.integers(-3, 3) | st.floats(-4, 4) | st.just(2**53 + 1)
)
WIDE_LEAF = st.one_of(
    LEAF,
    st.builds(lambda v: F("year") == v, NUMBER.filter(lambda v: isinstance(v, int))),
    st.builds(lambda v: F("score") != v, NUMBER),
    st.builds(lambda v: F("score").isin([v, 1]), NUMBER),
    st.builds(lambda v: F("year").isin([v, 2]), NUMBER.filter(lambda v: isinstance(v, int))),
    st.builds(lambda a, b: Range("year", a, b), NUMBER | st.none(), NUMBER | st.none()),
    st.builds(
        lambda a, b, i, j: Range("score", a, b, i, j),
        NUMBER | st.none(),
        NUMBER,
        st.booleans(),
        st.booleans(),
    ),
    st.builds(lambda v: F("ok") != v, st.booleans()),
    st.sampled_from(["score", "ok", "nothing"]).map(lambda f: F(f).exists()),
    st.builds(lambda v: F("nothing") == v, st.integers(0, 2)),
)
WIDE = combined(WIDE_LEAF, 5)


@settings(max_examples=300, deadline=None)
@given(rows=st.lists(WIDE_ROW, min_size=1, max_size=12), predicate=WIDE)
def test_a_few_rows_are_evaluated_as_arrow_evaluates_them(rows, predicate):
    """Tables of a few rows (a write group's) are evaluated in Python, not with Arrow's
    kernels: the same mask on every value (missing, NaN, ints past 2**53 beside floats), or
    the same error where Arrow refuses a comparison."""
    t = table(rows)
    assert t.num_rows <= filters._SMALL
    try:
        expect = filters._truth(predicate, t)[0]
    except (pa.ArrowException, TypeError, OverflowError) as exc:
        with pytest.raises(type(exc)):
            evaluate(predicate, t)
        return
    np.testing.assert_array_equal(evaluate(predicate, t), expect)
