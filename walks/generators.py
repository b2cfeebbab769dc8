"""Seeded synthetic graphs for tests, demos and benchmarks at scale."""

from __future__ import annotations

import numpy as np
from shardwalk.walks import _check
from shardwalk.walks.graph import CSRGraph

from shardwalk.errors import InvalidArgumentError

__all__ = ["power_law_graph"]


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
