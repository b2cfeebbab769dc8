"""Seeded synthetic graphs for tests, demos and benchmarks at scale."""

from __future__ import annotations

import numpy as np
from shardwalk.walks import _check
from shardwalk.walks.graph import CSRGraph

from shardwalk.errors import InvalidArgumentError

__all__ = ["power_law_graph", "social_graph"]


def power_law_graph(
    num_nodes: int,
    num_edges: int,
    *,
    exponent: float = 2.5,
    directed: bool = True,
    weighted: bool = False,
    seed: int = 0,
) -> CSRGraph:
    """A Chung-Lu style power-law graph: ``num_edges`` endpoint pairs drawn independently with
    P(u) proportional to (rank(u) + 1)^(-1 / (exponent - 1)), separately shuffled for sources and
    targets (so out- and in-hubs differ); self-loops dropped and duplicates collapsed, so the
    graph has slightly fewer than ``num_edges`` edges. Low-weight nodes often get no out-edge
    (dangling), as in real graphs. Node ids are 0..n-1; weights, if asked, are uniform in
    [0.5, 5)."""
    n = _check.check_int("num_nodes", num_nodes, minimum=1)
    m = _check.check_int("num_edges", num_edges, minimum=0)
    gamma = _check.check_float("exponent", exponent, minimum=1.0, inclusive=False)
    rng = np.random.default_rng(_check.check_seed(seed))
    if n > 2**31 - 1:
        raise InvalidArgumentError("num_nodes must be < 2**31 for the generator")
    p = (np.arange(n, dtype=np.float64) + 1.0) ** (-1.0 / (gamma - 1.0))
    cdf = np.cumsum(p)
    cdf /= cdf[-1]
    perm_out = rng.permutation(n)
    perm_in = rng.permutation(n)
    src = perm_out[np.minimum(np.searchsorted(cdf, rng.random(m)), n - 1)]
    dst = perm_in[np.minimum(np.searchsorted(cdf, rng.random(m)), n - 1)]
    w = rng.uniform(0.5, 5.0, m) if weighted else None
    return CSRGraph.from_edges(
        src, dst, w, directed=directed, node_ids=np.arange(n, dtype=np.int64), self_loops="drop"
    )


def social_graph(
    num_nodes: int, edges_per_node: int = 10, *, closure: float = 0.6, seed: int = 0
) -> CSRGraph:
    """An undirected social-network-like graph (Holme and Kim 2002): preferential attachment
    with triadic closure, so neighbourhoods are dense and flat (many triangles, hubs that are
    less dominant than in a plain power law), as in real social graphs where Monte Carlo PPR
    is hardest.

    Node t (after the first ``edges_per_node + 1``, which form a clique) links to
    ``edges_per_node`` earlier nodes: the first by preferential attachment (probability
    proportional to degree), each next one, with probability ``closure``, to a random
    neighbour of the node it linked just before (closing a triangle), else again by
    preferential attachment. Node ids are 0..n-1.
    """
    n = _check.check_int("num_nodes", num_nodes, minimum=2)
    m = _check.check_int("edges_per_node", edges_per_node, minimum=1, maximum=n - 1)
    p = _check.check_float("closure", closure, minimum=0.0)
    if p > 1.0:
        raise InvalidArgumentError(f"closure is a probability in [0, 1]; got {closure!r}")
    rng = np.random.default_rng(_check.check_seed(seed))
    core = min(n, m + 1)
    neighbours: list[list[int]] = [[j for j in range(core) if j != i] for i in range(core)]
    ends = [i for i in range(core) for _ in range(core - 1)]  # one entry per edge endpoint
    src: list[int] = [i for i in range(core) for j in range(i + 1, core)]
    dst: list[int] = [j for i in range(core) for j in range(i + 1, core)]
    for t in range(core, n):
        chosen: list[int] = []
        last = -1
        draws = rng.random(4 * m)
        picks = rng.integers(0, 1 << 62, 4 * m)
        for d in range(4 * m):  # at most 4m tries to find m distinct targets
            if len(chosen) == m:
                break
            if last >= 0 and draws[d] < p:
                options = neighbours[last]
                target = options[picks[d] % len(options)]
            else:
                target = ends[picks[d] % len(ends)]
            if target not in chosen:
                chosen.append(target)
                last = target
        neighbours.append(chosen)
        for target in chosen:
            neighbours[target].append(t)
            ends.extend((t, target))
            src.append(t)
            dst.append(target)
    return CSRGraph.from_edges(
        np.asarray(src, np.int64),
        np.asarray(dst, np.int64),
        directed=False,
        node_ids=np.arange(n, dtype=np.int64),
    )
