"""Fixtures for shardwalk.walks: small seeded graphs and dense numpy reference solvers.

The references below are deliberately independent of the kernels: dense matrices and
``np.linalg.solve``, so every solver is checked against plain linear algebra.
"""

from __future__ import annotations

import numpy as np
import pytest
from shardwalk.walks.graph import CSRGraph


def random_graph(
    n: int,
    m: int,
    *,
    seed: int,
    weighted: bool = False,
    directed: bool = True,
    dangling: int = 0,
    ids: str = "shifted",
) -> CSRGraph:
    """A seeded random graph; the last ``dangling`` nodes get no out-edges. External ids are
    ``3 * i + 11`` (``ids="shifted"``) so tests catch internal/external mix-ups."""
    rng = np.random.default_rng(seed)
    src = rng.integers(0, n - dangling, m)
    dst = rng.integers(0, n, m)
    w = rng.uniform(0.1, 5.0, m) if weighted else None
    ext = (
        np.arange(n, dtype=np.int64) * 3 + 11 if ids == "shifted" else np.arange(n, dtype=np.int64)
    )
    return CSRGraph.from_edges(ext[src], ext[dst], w, directed=directed, node_ids=ext)


def dense_transition(graph: CSRGraph, rule: str) -> np.ndarray:
    """Row-stochastic P (n x n) under a source-independent rule (restart handled separately)."""
    n = graph.num_nodes
    P = np.zeros((n, n))
    for u in range(n):
        a, b = graph.indptr[u], graph.indptr[u + 1]
        if b == a:
            if rule == "self_loop":
                P[u, u] = 1.0
            continue
        w = np.ones(b - a) if graph.weights is None else graph.weights[a:b].astype(np.float64)
        np.add.at(P[u], graph.indices[a:b], w / w.sum())
    return P


def dense_ppr(graph: CSRGraph, seeds: dict[int, float], alpha: float, rule: str) -> np.ndarray:
    """pi_s (internal order) by a dense linear solve: pi^T = alpha s^T (I - (1 - alpha) P)^-1,
    with P's dangling rows = e_u (self_loop), 0 (drop) or s (restart)."""
    n = graph.num_nodes
    s = np.zeros(n)
    internal = graph.to_internal(np.array(list(seeds.keys())))
    w = np.array(list(seeds.values()), float)
    np.add.at(s, internal, w / w.sum())
    P = dense_transition(graph, "drop" if rule == "restart" else rule)
    if rule == "restart":
        dangling = np.diff(graph.indptr) == 0
        P[dangling] = s
    return alpha * np.linalg.solve((np.eye(n) - (1 - alpha) * P).T, s)


def as_dense(graph: CSRGraph, ids: np.ndarray, scores: np.ndarray) -> np.ndarray:
    out = np.zeros(graph.num_nodes)
    keep = ids >= 0
    out[graph.to_internal(ids[keep])] = scores[keep]
    return out


@pytest.fixture(scope="session")
def small_graph() -> CSRGraph:
    """60 nodes, 240 directed edges, 6 dangling nodes, unweighted."""
    return random_graph(60, 240, seed=1, dangling=6)


@pytest.fixture(scope="session")
def small_weighted() -> CSRGraph:
    """60 nodes, 240 directed weighted edges, 6 dangling nodes."""
    return random_graph(60, 240, seed=2, dangling=6, weighted=True)
