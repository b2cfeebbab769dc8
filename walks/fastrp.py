"""FastRP node embeddings (Chen, Sultan, Tian, Chen, Skiena, CIKM 2019).

1. M = D^-1 A: the row-normalised (weighted) adjacency, i.e. the walk transition matrix; rows of
   nodes without out-edges are 0.
2. R: a very sparse random projection (n x dim; Achlioptas, Li-Hastie-Church): each entry is
   +-sqrt(1/density) with probability density/2 each, else 0; row j is scaled by
   max(deg(j), 1)^beta (``normalization_strength`` = beta, tuned in [-1, 0] in the paper).
3. N_1 = M R, N_i = M N_(i-1) (never forming M^i).
4. E = self_influence * normalize(R) + sum_i w_i * normalize(N_i), rows L2-normalised, then
   optionally L2-normalised again so cosine similarity = inner product in a vector index.

Cost O(len(weights) * nnz * dim); memory about 4 n * dim float32. For a directed graph the
embedding summarises out-neighbourhoods; the paper (and GDS) recommend an undirected graph.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from shardwalk.walks import _check
from shardwalk.walks.graph import CSRGraph
from shardwalk.walks.kernels.fastrp import add_normalized_rows, propagate, sparse_projection_rows

from shardwalk.errors import InvalidArgumentError

__all__ = ["fastrp"]


def fastrp(
    graph: CSRGraph,
    *,
    dim: int = 128,
    iteration_weights: Sequence[float] = (0.0, 1.0, 1.0),
    normalization_strength: float = 0.0,
    self_influence: float = 0.0,
    density: float | None = None,
    seed: int = 0,
    normalize: bool = True,
) -> np.ndarray:
    """FastRP embeddings, one row per internal node (row i is ``graph.node_ids[i]``).

    Parameters
    ----------
    graph : CSRGraph
    dim : int
        Embedding dimension d (128-1024 typical; >= 256 advised around 1e5 nodes).
    iteration_weights : sequence of float
        w_1..w_K, the weights of N_1..N_K (GDS default (0, 1, 1)); K = len(iteration_weights).
    normalization_strength : float
        beta: R's row j is scaled by deg(j)^beta; negative values down-weight hubs.
    self_influence : float
        Weight of the node's own random vector normalize(R) (GDS nodeSelfInfluence).
    density : float in (0, 1], optional
        Fraction of non-zero entries of R. Default max(1/sqrt(n), 8/dim): Li et al.'s very
        sparse 1/sqrt(n) (as in the reference code), but never so sparse that a row has fewer
        than ~8 non-zeros expected (at n = 1M, dim = 128, 1/sqrt(n) alone gives 0.13 per row,
        leaving most first iterates zero).
    seed : int
        Entry (j, c) of R is drawn from the counter (seed, j, c): reproducible on any threads.
    normalize : bool
        L2-normalise the final rows (zero rows stay zero).

    Returns
    -------
    ndarray float32 (n, dim)

    Raises
    ------
    InvalidArgumentError
        dim < 1, empty or non-finite weights, density outside (0, 1].
    """
    if not isinstance(graph, CSRGraph):
        raise InvalidArgumentError(f"graph must be a CSRGraph; got {type(graph).__name__}")
    dim = _check.check_int("dim", dim, minimum=1, maximum=1 << 16)
    weights = [float(w) for w in iteration_weights]
    if not weights or not all(np.isfinite(weights)):
        raise InvalidArgumentError(
            f"iteration_weights must be a non-empty sequence of finite numbers; got {iteration_weights!r}"
        )
    beta = _check.check_float("normalization_strength", normalization_strength, minimum=-np.inf)
    self_w = _check.check_float("self_influence", self_influence, minimum=-np.inf)
    seed = _check.check_seed(seed)
    n = graph.num_nodes
    if density is None:
        density = min(1.0, max(1.0 / np.sqrt(max(n, 1)), 8.0 / dim))
    density = _check.check_float("density", density, minimum=0.0, inclusive=False)
    if density > 1.0:
        raise InvalidArgumentError(f"density must be in (0, 1]; got {density}")
    scale = np.zeros(0, np.float64)
    if beta != 0.0:
        if graph.weights is not None:
            deg = np.bincount(
                np.repeat(np.arange(n), np.diff(graph.indptr)), weights=graph.weights, minlength=n
            )
        else:
            deg = np.diff(graph.indptr).astype(np.float64)
        scale = np.power(np.maximum(deg, 1.0), beta)
    proj = sparse_projection_rows(n, dim, density, seed, scale)
    out = np.zeros((n, dim), np.float32)
    if self_w != 0.0:
        add_normalized_rows(out, proj, self_w)
    indptr = np.ascontiguousarray(graph.indptr)
    indices = np.ascontiguousarray(graph.indices)
    probs = graph.transition_probs()
    cur = proj
    nxt = np.empty_like(proj)
    for w in weights:
        propagate(indptr, indices, probs, graph.weighted, cur, nxt)
        cur, nxt = nxt, cur
        if w != 0.0:
            add_normalized_rows(out, cur, w)
    del cur, nxt, proj
    if normalize:
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        np.divide(out, norms, out=out, where=norms > 0)
    return out
