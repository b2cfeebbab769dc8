"""RowTable's (owner, id) -> row map (sorted runs searched with searchsorted) against a plain
dict model: appends that repeat ids across calls and owners (each owner its own namespace),
kills in one namespace or all, lookups, missing ids, Parquet round trips, and readers in many
threads between writes."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

from shardwalk.errors import CorruptionError
from shardwalk.rows import ALIVE, ANY_OWNER, ID, TENANT, RowTable

# Mostly a small range, so ids come back across calls; now and then anywhere in int64.
IDS = st.one_of(st.integers(0, 40), st.integers(0, 2**63 - 1))
TENANTS = st.sampled_from(["a", "b", None])


class EagerRowTable(RowTable):
    """Merges all runs as soon as any entry is dead, so small tests reach that path too."""

    _dead_fraction = 0.0
    _dead_minimum = 0


def _append(table: RowTable, ids: list[int], tenant: str | None) -> np.ndarray:
    arr = np.array(ids, dtype=np.int64)
    return table.append(arr, pa.array([tenant] * len(ids), pa.string()), pa.table({}))


def _owners(names: set[str | None]) -> list[str | None]:
    """An id's owners in the order the table lists them: the ownerless first, then by name."""
    return sorted(names, key=lambda t: (t is not None, t or ""))


class Model:
    """What the table should answer: (owner, id) -> live row, and the tenant of every row."""

    def __init__(self) -> None:
        self.row_of: dict[tuple[str | None, int], int] = {}
        self.tenant_of_row: list[str | None] = []
        self.owners_of: dict[int, set[str | None]] = {}  # id -> its live rows' owners

    def holders(self, id_: int) -> list[str | None]:
        return _owners(self.owners_of.get(id_, set()))

    @property
    def ids(self) -> list[int]:
        return sorted(i for i, owners in self.owners_of.items() if owners)

    def append(self, ids: list[int], tenant: str | None) -> tuple[list[int], list[int]]:
        replaced = [self.row_of[(tenant, i)] for i in ids if (tenant, i) in self.row_of]
        start = len(self.tenant_of_row)
        rows = list(range(start, start + len(ids)))
        self.row_of.update(zip([(tenant, i) for i in ids], rows))
        for i in ids:
            self.owners_of.setdefault(i, set()).add(tenant)
        self.tenant_of_row += [tenant] * len(ids)
        return replaced, rows

    def kill(self, ids: list[int], owner: object = ANY_OWNER) -> list[int]:
        died = []
        for i in ids:
            for t in self.holders(i) if owner is ANY_OWNER else [owner]:
                if (t, i) in self.row_of:
                    died.append(self.row_of.pop((t, i)))
                    self.owners_of[i].discard(t)
        return died


def check_reads(table: RowTable, model: Model, ids: list[int]) -> None:
    """Every read method on ``ids`` (in this order, repeats allowed) agrees with the model."""
    arr = np.array(ids, dtype=np.int64)
    held = {i: model.holders(i) for i in ids}
    absent = [i for i in ids if not held[i]]
    assert table.missing(arr).tolist() == absent
    assert table.missing(arr).dtype == np.int64
    assert table.contains(arr).tolist() == [bool(held[i]) for i in ids]
    assert [i in table for i in ids] == [bool(held[i]) for i in ids]
    for tenant in ("a", "b", None, "never"):
        in_ns = [(tenant, i) in model.row_of for i in ids]
        assert table.contains(arr, tenant).tolist() == in_ns
        assert table.missing(arr, tenant).tolist() == [i for i, y in zip(ids, in_ns) if not y]
        expected = [model.row_of.get((tenant, i), -1) for i in ids]
        assert table.lookup(arr, tenant).tolist() == expected
        assert table.replaced_rows(arr, tenant).tolist() == [r for r in expected if r >= 0]
    at, rows = table.find(arr)
    assert at.dtype == rows.dtype == np.int64
    pairs = [(k, model.row_of[(t, i)]) for k, i in enumerate(ids) for t in held[i]]
    assert list(zip(at.tolist(), rows.tolist())) == pairs
    tenants = table.columns(rows).column(TENANT).to_pylist()
    assert tenants == [model.tenant_of_row[r] for r in rows.tolist()] == table.owners(rows)


def check_state(table: RowTable, model: Model) -> None:
    assert len(table) == len(model.row_of)
    assert table.rows == len(model.tenant_of_row)
    assert sorted(np.flatnonzero(table.alive).tolist()) == sorted(model.row_of.values())
    live = np.flatnonzero(table.alive)
    keys = zip(table.owners(live), table.ids[live].tolist())
    assert dict(zip(keys, live.tolist())) == model.row_of
    # the map holds the live ids plus at most the allowed dead entries, 16 bytes each
    allowed_dead = max(table._dead_fraction * len(table), table._dead_minimum)
    assert table.map_nbytes <= 16 * (len(table) + allowed_dead)


class RowsMachine(RuleBasedStateMachine):
    directory: Path  # set by the test (pytest's tmp_path)

    def __init__(self) -> None:
        super().__init__()
        self.model = Model()
        self.table: RowTable = RowTable()
        self.known: list[int] = []  # every id ever appended, so lookups hit as well as miss

    @initialize(eager=st.booleans())
    def choose_table(self, eager: bool) -> None:
        self.table = EagerRowTable() if eager else RowTable()

    @rule(ids=st.lists(IDS, unique=True, max_size=12), tenant=TENANTS)
    def append(self, ids: list[int], tenant: str | None) -> None:
        before = self.table.replaced_rows(np.array(ids, dtype=np.int64), tenant)
        replaced, rows = self.model.append(ids, tenant)
        assert before.tolist() == replaced
        assert _append(self.table, ids, tenant).tolist() == rows
        self.known += ids

    @rule(
        data=st.data(),
        fresh=st.lists(IDS, max_size=4),
        owner=st.one_of(st.just(ANY_OWNER), TENANTS),
    )
    def kill(self, data: st.DataObject, fresh: list[int], owner: object) -> None:
        old = data.draw(st.lists(st.sampled_from(self.known), max_size=6)) if self.known else []
        ids = old + fresh  # repeats and unknown ids included
        expected = self.model.kill(ids, owner)
        died = self.table.kill(np.array(ids, dtype=np.int64), owner)
        assert died.dtype == np.int64
        assert died.tolist() == expected

    @rule(data=st.data(), fresh=st.lists(IDS, max_size=7))
    def look_up(self, data: st.DataObject, fresh: list[int]) -> None:
        old = data.draw(st.lists(st.sampled_from(self.known), max_size=12)) if self.known else []
        ids = data.draw(st.permutations(old + fresh))
        check_reads(self.table, self.model, ids)

    @rule()
    def look_up_everything_known(self) -> None:
        check_reads(self.table, self.model, sorted(set(self.known)))  # past _FEW: the array path

    @rule()
    def parquet_round_trip(self) -> None:
        path = str(self.directory / "rows.parquet")
        self.table.write_parquet(path)
        self.table = type(self.table).read_parquet(path)

    @invariant()
    def matches_the_model(self) -> None:
        check_state(self.table, self.model)


def test_rows_match_a_dict_model(tmp_path: Path) -> None:
    class Machine(RowsMachine):
        directory = tmp_path

    run_state_machine_as_test(
        Machine,
        settings=settings(
            max_examples=60,
            stateful_step_count=30,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )


@pytest.mark.parametrize("cls", [RowTable, EagerRowTable])
def test_many_batches_with_upserts_and_kills_match_the_model(cls: type[RowTable]) -> None:
    # Batches large enough for the real thresholds: runs merge, dead entries pass 4096.
    rng = np.random.default_rng(3)
    table, model = cls(), Model()
    pool = rng.choice(2**40, 60_000, replace=False)
    for step in range(40):
        size = int(rng.integers(1, 3000))
        ids = rng.choice(pool[: 2_000 * (step + 1)], size, replace=False).tolist()
        assert _append(table, ids, "t").tolist() == model.append(ids, "t")[1]
        if step % 3 == 2:
            gone = rng.choice(pool[: 2_000 * (step + 1)], 1500).tolist()  # repeats, unknowns
            assert table.kill(np.array(gone, dtype=np.int64)).tolist() == model.kill(gone)
        check_state(table, model)
    check_reads(table, model, rng.choice(pool, 5000).tolist())
    check_reads(table, model, rng.choice(model.ids, 5000).tolist())


def test_single_id_appends_keep_few_runs() -> None:
    # Each append adds a run; the merge rule keeps ~log2(entries) of them, so lookups stay cheap.
    table = RowTable()
    ids = [i * 7919 % 2003 for i in range(2000)]  # distinct, in no order
    for i, id_ in enumerate(ids):
        _append(table, [id_], None)
        assert len(table._runs) <= int(np.log2(i + 1)) + 1
    assert len(table) == 2000
    assert table.lookup(np.array(ids), None).tolist() == list(range(2000))


def test_map_is_at_most_20_bytes_per_live_id(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    table = RowTable()
    ids = rng.choice(2**50, 50_000, replace=False)
    for start in range(0, ids.size, 1_000):
        _append(table, ids[start : start + 1_000].tolist(), None)
    assert table.map_nbytes == 16 * len(table)
    _append(table, ids[:5_000].tolist(), None)  # upserts
    table.kill(ids[5_000:10_000])
    assert table.map_nbytes <= 20 * len(table)
    table.write_parquet(str(tmp_path / "rows.parquet"))
    back = RowTable.read_parquet(str(tmp_path / "rows.parquet"))
    assert back.map_nbytes == 16 * len(back) == 16 * 45_000


def test_contains_refuses_what_is_not_an_int64() -> None:
    table = RowTable()
    _append(table, [0, 1, 5], None)
    assert 5 in table
    assert np.int32(1) in table
    assert 2 not in table
    assert True not in table  # bools are not ids
    assert "5" not in table
    assert 5.0 not in table
    assert 2**64 not in table
    assert -(2**64) not in table
    assert table.contains(np.array([], dtype=np.int64)).tolist() == []
    assert table.missing(np.array([], dtype=np.int64)).tolist() == []
    assert table.lookup(np.array([], dtype=np.int64), "x").tolist() == []


def test_empty_table() -> None:
    table = RowTable()
    assert len(table) == 0
    assert 0 not in table
    assert table.kill(np.array([1, 2], dtype=np.int64)).tolist() == []
    assert table.missing(np.array([3, 1, 3], dtype=np.int64)).tolist() == [3, 1, 3]
    assert table.map_nbytes == 0


def test_read_parquet_refuses_an_id_alive_in_two_rows(tmp_path: Path) -> None:
    path = tmp_path / "rows.parquet"
    pq.write_table(
        pa.table(
            {
                ID: pa.array([4, 9, 4, 9, 3], pa.int64()),
                ALIVE: pa.array([True, False, True, True, True]),
                TENANT: pa.nulls(5, pa.string()),
            }
        ),
        str(path),
    )
    with pytest.raises(CorruptionError, match=r"ids alive in more than one row of one owner: 4;"):
        RowTable.read_parquet(str(path))
    # one id alive for two owners: two namespaces, two rows
    pq.write_table(
        pa.table(
            {
                ID: pa.array([4, 4, 4], pa.int64()),
                ALIVE: pa.array([True, True, True]),
                TENANT: pa.array(["a", None, "b"]),
            }
        ),
        str(path),
    )
    table = RowTable.read_parquet(str(path))
    _, rows = table.find(np.array([4]))
    assert rows.tolist() == [1, 0, 2] and table.lookup(np.array([4, 4]), "b").tolist() == [2, 2]


class SharedExclusiveLock:
    """The collection's protocol: many readers at once, or one writer (writers go first)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writing = False
        self._writers_waiting = 0

    @contextmanager
    def shared(self) -> Iterator[None]:
        with self._cond:
            while self._writing or self._writers_waiting:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                self._cond.notify_all()

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        with self._cond:
            self._writers_waiting += 1
            while self._writing or self._readers:
                self._cond.wait()
            self._writers_waiting -= 1
            self._writing = True
        try:
            yield
        finally:
            with self._cond:
                self._writing = False
                self._cond.notify_all()


def test_readers_in_8_threads_between_writes_agree_with_the_model() -> None:
    lock = SharedExclusiveLock()
    table, model = RowTable(), Model()
    pool = np.random.default_rng(11).choice(2**40, 20_000, replace=False)
    writing = threading.Event()
    writing.set()
    errors: list[BaseException] = []
    checks = [0] * 8

    def write() -> None:
        rng = np.random.default_rng(12)
        try:
            for step in range(120):
                ids = rng.choice(pool[: 150 * (step + 3)], int(rng.integers(1, 400)), replace=False)
                tenant = f"t{step % 5}"
                with lock.exclusive():
                    _append(table, ids.tolist(), tenant)
                    model.append(ids.tolist(), tenant)
                    if step % 4 == 3:
                        gone = rng.choice(pool[: 150 * (step + 3)], 200).tolist()
                        table.kill(np.array(gone, dtype=np.int64))
                        model.kill(gone)
        except BaseException as exc:  # surfaced by the main thread
            errors.append(exc)
        finally:
            writing.clear()

    def read(k: int) -> None:
        rng = np.random.default_rng(100 + k)
        try:
            while writing.is_set() or checks[k] < 5:
                with lock.shared():  # the model and the table stay still while we hold it
                    if model.row_of:
                        present = rng.choice(model.ids, 50).tolist()
                        check_reads(table, model, present)  # lookup, find, contains, ...
                    check_reads(table, model, rng.choice(pool, 30).tolist())
                    check_reads(table, model, rng.choice(pool, 3).tolist())  # few-id path
                    assert len(table) == len(model.row_of)
                checks[k] += 1
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=read, args=(k,)) for k in range(8)]
    threads.append(threading.Thread(target=write))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads)
    if errors:
        raise errors[0]
    assert min(checks) >= 5
    check_state(table, model)


def test_table_merged_by_8_readers_at_once() -> None:
    # table() merges the Arrow chunks lazily on a read path: readers arriving together must all
    # get the same, complete table, and the merge must happen once (the others take its result).
    table = RowTable()
    for start in range(0, 3000, 10):
        ids = list(range(start, start + 10))
        table.append(
            np.array(ids, dtype=np.int64),
            pa.array([f"t{start % 7}"] * 10, pa.string()),
            pa.table({"n": pa.array(ids, pa.int64())}),
        )
    barrier = threading.Barrier(8)
    results: list[pa.Table] = []
    errors: list[BaseException] = []

    def read() -> None:
        try:
            barrier.wait()
            results.append(table.table().take(pa.array(np.arange(2999, -1, -1))))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=read) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    if errors:
        raise errors[0]
    assert len(results) == 8
    for got in results:
        assert got.column("n").to_pylist() == list(range(2999, -1, -1))
    assert len(table._chunks) == 1
