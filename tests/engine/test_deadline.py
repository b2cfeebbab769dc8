"""Deadlines: ``shardwalk.deadline`` bounds engine calls, and long PPR solves stop at it."""

from __future__ import annotations

import time

import numpy as np
import pytest
from shardwalk.walks.generators import power_law_graph

import shardwalk


@pytest.fixture(scope="module")
def big_graph() -> shardwalk.Graph:
    engine = shardwalk.Engine.memory()
    return engine.create_graph("g", power_law_graph(100_000, 500_000, directed=False, seed=0))


def test_a_passed_deadline_stops_a_search_before_it_runs() -> None:
    engine = shardwalk.Engine.memory()
    docs = engine.create_collection("docs", dim=4, index="flat")
    docs.upsert([1, 2], np.eye(2, 4))
    with shardwalk.deadline(0), pytest.raises(shardwalk.DeadlineExceededError, match="search"):
        docs.search(np.ones(4))
    assert docs.search(np.ones(4), k=1).ids.shape == (1, 1)  # no deadline outside the block


@pytest.mark.parametrize("method", ["exact", "push"])
def test_long_ppr_solves_stop_at_the_deadline(big_graph: shardwalk.Graph, method: str) -> None:
    params = {"tol": 1e-15} if method == "exact" else {"r_max": 1e-11}  # ~0.5 s each
    big_graph.ppr([0, 1, 2], 10, method=method, **params)  # compiled and warm
    start = time.perf_counter()
    full = big_graph.ppr([0, 1, 2], 10, method=method, **params)
    took = time.perf_counter() - start
    with (
        shardwalk.deadline(took / 20),
        pytest.raises(
            shardwalk.DeadlineExceededError, match=f"{method} PPR stopped at its deadline"
        ),
    ):
        big_graph.ppr([0, 1, 2], 10, method=method, **params)
    # the stop flag is per call: the next call without a deadline runs to the end
    again = big_graph.ppr([0, 1, 2], 10, method=method, **params)
    np.testing.assert_array_equal(again.ids, full.ids)


def test_the_sooner_of_nested_deadlines_holds() -> None:
    from shardwalk._deadline import remaining

    with shardwalk.deadline(10):
        with shardwalk.deadline(100):
            assert remaining() is not None and remaining() <= 10
        with shardwalk.deadline(None):
            assert remaining() is not None and remaining() <= 10
    assert remaining() is None


def test_one_watcher_raises_each_flag_at_its_own_deadline_and_never_a_cancelled_one() -> None:
    """Stop flags from many threads, with deadlines in any order: each raised no sooner than
    its deadline, the ones whose block ended first never; the watcher keeps no garbage."""
    from concurrent.futures import ThreadPoolExecutor

    from shardwalk._deadline import _WATCHER, stop_flag

    def solve(i: int) -> tuple[float, float | None]:
        budget = 0.05 + 0.01 * (i % 7)
        finishes = i % 3 == 0  # a third of the blocks end before their deadline
        start = time.monotonic()
        raised_at = None
        try:
            with shardwalk.deadline(budget), stop_flag("solve") as stop:
                while not stop[0]:
                    if finishes and time.monotonic() - start > budget / 2:
                        break
                    time.sleep(0.001)
                raised_at = time.monotonic() - start if stop[0] else None
        except shardwalk.DeadlineExceededError:
            assert not finishes
        return budget, raised_at

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(solve, range(48)))
    for i, (budget, raised_at) in enumerate(results):
        if i % 3 == 0:
            assert raised_at is None
        else:
            assert raised_at is not None and raised_at >= budget
    # a cancelled entry left in the heap: far in the future, then dropped by compaction
    with shardwalk.deadline(3600), stop_flag("long"):
        pass
    assert all(entry[2] is None for entry in _WATCHER._heap)
    assert len(_WATCHER._heap) <= 64 + 1
