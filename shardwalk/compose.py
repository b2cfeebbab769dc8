"""Composed retrieval: kNN in a collection seeds personalized PageRank over a graph, and the
two rankings are fused, in one call (kNN-seeded PPR, as in HippoRAG).

Stages of :func:`compose` (``Engine.compose`` is its entry point):

1. **kNN**: ``collection.search(queries, knn_k, tenant=, where=, **knn_params)``, the ordinary
   scoped, filtered search.
2. **Seeds**: each query's kNN hits that are nodes of the graph (collections and graphs share
   one id space) seed its PPR, weighted by similarity: without ``temperature``, ``(1 + s) /
   2`` where ``s`` is the hit's normalised similarity (below), so the nearest hit weighs
   twice the farthest of the list; with ``temperature`` T, a softmax ``exp(s / T)`` (T 0.1:
   the nearest hit weighs e^10 times the farthest; T 1: e times). PPR then scales the
   weights to sum 1: one PPR restarting to the whole weighted seed set, which by linearity is
   exactly the weighted sum of the per-seed PPR vectors. Hits that are not graph nodes cannot
   seed: ``seeds_dropped`` counts them. A query left with no seed runs no PPR; its PPR stage
   contributes nothing and its results are its kNN hits.
3. **PPR**: ``graph.ppr_batch`` of every seeded query in one pass, with stop probability
   ``alpha`` (default 0.5, as HippoRAG) and ``ppr_params`` (``method``, ``dangling``,
   ``rounds``, ``threshold``, ``r_max``, ...). When ``ppr_params`` names no method and no
   method parameter, compose runs its own (:func:`default_ppr`): Forward Push to ``r_max =
   PUSH_WORK / alpha``, about ``1 / PUSH_WORK`` pushes per query at any graph size, precise
   enough for the few dozen nodes fusion reads, and the PPR the calibration scores settings
   with; ``ppr_params={"accuracy": "fast"}`` runs the graph's own choice instead (its
   fingerprints when they serve the alpha), ``{"method": ...}`` a given method.
4. **Filter**: the PPR list is cut to the nodes the caller may see (live rows of the collection,
   visible to ``tenant``, matching ``where``; :meth:`Collection.visible`) before it is ranked,
   and its first ``ppr_k`` visible nodes form the PPR list. If fewer than ``ppr_k`` were
   visible and PPR had more to give, the query's PPR is fetched again 4x deeper.
5. **Fuse**: over the union of the kNN list and the PPR list, then top-k.

Output ids are always live rows of the collection that the caller may see, also without tenant
and filter: graph nodes without a row carry PPR mass through the graph but are never returned
(every returned id can be passed to ``collection.get``).

Normalisation (per query, over its own lists):

- similarity ``s = (d_max - d) / (d_max - d_min)`` over the query's kNN hits (d the
  distances; 1 for the nearest, 0 for the farthest, 1 for all when they are equal); a node
  that is not a kNN hit has no similarity (contributes 0).
- PPR ``p = score / max score`` over the query's visible PPR list; a node not in it
  contributes 0.

Fusion: ``"rrf"`` sums ``1 / (rank_constant + rank)`` over the lists a node is in (ranks from
1; ``rank_constant`` 60 as in Cormack et al. 2009); the weighted fusions are ``weight * a +
(1 - weight) * b`` (``weight`` default 0.5) with a the kNN term and b the PPR term:

- ``"weighted"``: a = ``s``, b = ``p`` (both in [0, 1]; 0 where the node is not in the list);
- ``"weighted_rank"``: a = ``s``, b = ``1 - (rank - 1) / ppr_k`` by the node's rank in the
  visible PPR list (0 beyond it): robust to PPR's heavy-tailed scores;
- ``"weighted_z"``: both terms z-scored per query over their own list (a over the kNN
  similarities ``-d``, b over the visible PPR scores; 0 when a list's values are all equal),
  a node absent from a list taking that list's lowest z.

Ties go to a kNN hit (the nearer first), then to the higher PPR score, then to the smaller id
(so with ``weight=1`` the kNN order stands, though the farthest hit's normalised similarity is
0).

Defaults: a parameter the caller leaves out takes the value :meth:`Engine.calibrate_compose`
chose for this collection and graph when it ran (stored with the graph), else the library's
default (``DEFAULTS``); ``ComposeResult.explain`` says which values ran and where each came
from.
"""

from __future__ import annotations

import math
import numbers
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from numpy.typing import NDArray

from shardwalk.errors import InvalidArgumentError
from shardwalk.types import Param, Report, Seeds
from shardwalk.validation import (
    MAX_K,
    check_choice,
    check_k,
    check_name,
    check_search_params,
    check_vectors,
)

if TYPE_CHECKING:
    from shardwalk.collection import Collection
    from shardwalk.graph import Graph
    from shardwalk.index.filters import Predicate
    from shardwalk.walks.ppr import PPRResult

__all__ = [
    "DEFAULTS",
    "FUSIONS",
    "RANK_CONSTANT",
    "TUNED",
    "ComposeOptions",
    "ComposeResult",
    "compose",
    "resolve",
    "scoped_depth",
    "scoped_ppr",
    "visible_ppr",
]

FUSIONS = ("rrf", "weighted", "weighted_rank", "weighted_z")
WEIGHTED = FUSIONS[1:]  # the fusions that take weight
RANK_CONSTANT = 60.0  # reciprocal rank fusion's k (Cormack, Clarke, Buettcher, SIGIR 2009)
DEFAULT_WEIGHT = 0.5
#: what compose runs with when neither the caller nor a calibration gives a value
DEFAULTS: dict[str, Any] = {
    "knn_k": 10,
    "alpha": 0.5,
    "fuse": "rrf",
    "weight": None,
    "temperature": None,
}
#: the parameters a calibration chooses (and compose takes from it when the caller omits them)
TUNED = tuple(DEFAULTS)
_DEEPER = 4  # a PPR list short of visible nodes is fetched again this many times deeper
#: compose's own PPR when the caller names no PPR method or parameter: Forward Push to
#: ``r_max = PUSH_WORK / alpha`` (at most ``MAX_R_MAX``), about ``1 / PUSH_WORK`` out-edge
#: pushes per query whatever the graph's size and alpha. It ranks the few dozen nodes that
#: fusion reads as well as a precise solve: on Cora and a generated 10K graph, recall@10 of
#: the calibrated settings moved by <= 0.01 from r_max 1e-6 (30x the work) to PUSH_WORK 3e-5
#: (bench/compose_quality.py). The calibration scores every setting with the same PPR.
PUSH_WORK = 3e-5
MAX_R_MAX = 1e-3


def default_ppr(alpha: float) -> dict[str, Any]:
    """The PPR method and parameters compose runs at ``alpha`` when the caller gives none."""
    return {"method": "push", "r_max": min(PUSH_WORK / alpha, MAX_R_MAX)}


def scoped_depth(k: int, in_scope: int, nodes: int) -> int:
    """How many PPR nodes to fetch first for ``k`` of them in a scope of ``in_scope`` rows on a
    graph of ``nodes``: twice what the scope's share of the graph predicts, at least ``4k`` (one
    fetch instead of several 4x rounds for a small tenant), at most every node and ``MAX_K``
    (what one PPR call returns at most). :func:`visible_ppr` fetches deeper when a list comes
    back short."""
    share = in_scope / max(nodes, 1)
    want = 2 * k / share if share > 0 else nodes
    return int(min(max(4 * k, want), _deepest(nodes)))


def _deepest(nodes: int) -> int:
    """The deepest PPR list worth fetching: every node of the graph, and no more than a PPR
    call returns (``MAX_K``)."""
    return min(max(nodes, 1), MAX_K)


@dataclass(frozen=True, kw_only=True)
class VisibleLists:
    """What :func:`visible_ppr` found: per query its first visible PPR nodes."""

    ids: NDArray[np.int64]  # (q, width), padded with -1
    scores: NDArray[np.float64]  # (q, width), padded with 0
    error: NDArray[np.float64]  # (q,): the PPR error of the query's last (deepest) fetch
    mass: NDArray[np.float64]  # (q,): as error
    last: PPRResult  # the last fetch (method, alpha, dangling, params of the run)
    also_visible: NDArray[np.bool_] | None  # which of ``also`` are visible (None: none asked)
    filter_seconds: float  # spent in the visibility checks


def visible_ppr(
    graph: Graph,
    collection: Collection,
    queries: Sequence[Seeds],
    width: int,
    depth: int,
    *,
    tenant: str | None = None,
    where: Predicate | None = None,
    also: NDArray[np.int64] | None = None,
    **ppr_options: Param,
) -> VisibleLists:
    """Each query's first ``width`` PPR nodes (in rank order) that are rows of ``collection``
    visible to ``tenant`` and matching ``where`` (:meth:`Collection.visible`): PPR lists of
    ``depth`` nodes first, then 4x deeper for the queries whose list came back short of
    visible nodes while PPR had more to give (a full list), up to every node or ``MAX_K``.
    ``also``: more ids whose visibility is checked in the first call (compose's kNN hits)."""
    options: dict[str, Any] = dict(ppr_options)  # checked by graph.ppr_batch
    deepest = _deepest(graph.num_nodes)
    depth = min(depth, deepest)
    n = len(queries)
    ids = np.full((n, width), -1, np.int64)
    scores = np.zeros((n, width), np.float64)
    error = np.full(n, np.nan)
    mass = np.full(n, np.nan)
    also_visible = None
    filter_seconds = 0.0
    pending = np.arange(n)
    while True:  # at least once: graph.ppr_batch judges the queries, an empty batch too
        last = graph.ppr_batch([queries[i] for i in pending.tolist()], depth, **options)
        error[pending], mass[pending] = last.error, last.mass
        t_filter = time.perf_counter()
        listed = last.ids >= 0  # rows are padded with -1 past the nodes the walks reach
        asked = last.ids[listed]
        if also is not None and also_visible is None:
            seen = collection.visible(np.concatenate([also, asked]), tenant=tenant, where=where)
            also_visible, seen = seen[: also.size], seen[also.size :]
        else:
            seen = collection.visible(asked, tenant=tenant, where=where)
        visible = np.zeros(last.ids.shape, dtype=bool)
        visible[listed] = seen
        short = _keep_visible(last.ids, last.scores, visible, pending, ids, scores)
        filter_seconds += time.perf_counter() - t_filter
        # short of visible nodes, with a full list (PPR had more to give), not yet everything
        pending = pending[short & listed[:, -1]] if depth < deepest else pending[:0]
        if not pending.size:
            break
        depth = min(depth * _DEEPER, deepest)
    return VisibleLists(
        ids=ids,
        scores=scores,
        error=error,
        mass=mass,
        last=last,
        also_visible=also_visible,
        filter_seconds=filter_seconds,
    )


def scoped_ppr(
    graph: Graph,
    collection: Collection,
    queries: Sequence[Seeds],
    k: int,
    *,
    tenant: str | None = None,
    where: Predicate | None = None,
    **ppr_options: Param,
) -> PPRResult:
    """:meth:`Graph.ppr_batch` whose results are the top-k nodes that are rows of
    ``collection`` visible to ``tenant`` (and matching ``where``): the server's PPR with
    ``collection=``. Asks for as many nodes as hold about 2k visible ones at the scope's share
    of the graph (:func:`scoped_depth`), then 4x more while a query comes back short and the
    graph has more (:func:`visible_ppr`).

    Returns
    -------
    PPRResult
        As ``graph.ppr_batch(queries, k, **ppr_options)``, ``ids`` and ``scores`` (q, k) the
        visible nodes (padded with -1 / 0), ``error`` and ``mass`` each query's deepest
        fetch's, ``seconds`` the whole call's.

    Raises
    ------
    InvalidArgumentError, ResourceExhaustedError, NotFoundError
        As :meth:`Graph.ppr_batch` (k checked here: the fetch depth is not k).
    """
    t0 = time.perf_counter()
    k = check_k(k)
    depth = scoped_depth(k, collection.scope_size(tenant, where), graph.num_nodes)
    options: dict[str, Any] = dict(ppr_options)  # checked by graph.ppr_batch
    lists = visible_ppr(graph, collection, queries, k, depth, tenant=tenant, where=where, **options)
    return replace(
        lists.last,
        ids=lists.ids,
        scores=lists.scores.astype(np.float32),
        error=lists.error,
        mass=lists.mass,
        seconds=time.perf_counter() - t0,
        work=np.zeros((0, 3), np.int64),
    )


@dataclass(frozen=True, kw_only=True)
class ComposeResult:
    """Fused top-k of a batch of composed queries (row i answers query i).

    Padding (a row with fewer than k results) is each field's worst value: ids -1, scores
    -inf, distances +inf, ppr_scores 0. NaN means "this stage did not rank this node".

    Attributes
    ----------
    ids : ndarray int64 (q, k)
        Collection ids by decreasing fused score (ties: kNN hits first, nearer first, then
        higher PPR, then smaller id).
    scores : ndarray float32 (q, k)
        Fused scores (RRF sums, or the weighted sum in [0, 1]).
    distances : ndarray float32 (q, k)
        kNN distance in the collection's metric; NaN when the node was not a kNN hit.
    ppr_scores : ndarray float32 (q, k)
        PPR score; NaN when the node was not in the query's visible PPR list (no seed, no
        mass, or beyond ``ppr_k``).
    seeds : ndarray int64 (q,)
        kNN hits that seeded PPR.
    seeds_dropped : ndarray int64 (q,)
        kNN hits that could not seed: not nodes of the graph.
    ppr_error : ndarray float64 (q,)
        The PPR method's l1 error (an estimate for fingerprints, a bound for push and exact);
        NaN where no PPR ran.
    ppr_method : str or None
        The PPR method that ran ("fingerprint", "push", "exact"); None when no query had a seed.
    alpha : float
        PPR stop probability.
    fuse : str
        The fusion that ran (one of ``FUSIONS``).
    explain : dict
        Which tuned parameters ran and where each came from: per ``knn_k``, ``alpha``,
        ``fuse``, ``weight``, ``temperature``, ``{"value": ..., "source": "request" |
        "calibrated" | "default"}`` (``weight`` None under rrf, ``temperature`` None for
        linear seed weights).
    knn_seconds, ppr_seconds, fuse_seconds : float
        Wall time of the stages for the whole batch: the kNN search; seeding and PPR; the
        visibility filter, fusion and top-k.
    seconds : float
        Wall time of the whole call (validation included).
    """

    ids: NDArray[np.int64]
    scores: NDArray[np.float32]
    distances: NDArray[np.float32]
    ppr_scores: NDArray[np.float32]
    seeds: NDArray[np.int64]
    seeds_dropped: NDArray[np.int64]
    ppr_error: NDArray[np.float64]
    ppr_method: str | None
    alpha: float
    fuse: str
    knn_seconds: float
    ppr_seconds: float
    fuse_seconds: float
    seconds: float
    explain: dict[str, Report] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.ids.shape[0])


@dataclass(frozen=True, kw_only=True)
class ComposeOptions:
    """The checked scalar options of a compose call (see :func:`check_options`)."""

    k: int
    knn_k: int
    ppr_k: int
    alpha: float
    fuse: Literal["rrf", "weighted", "weighted_rank", "weighted_z"]
    weight: float
    temperature: float | None
    rank_constant: float
    knn_params: dict[str, Any]
    ppr_params: dict[str, Any]


def _number(what: str, value: Any) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise InvalidArgumentError(f"{what} must be a number; got {value!r}")
    return float(value)


def _params(what: str, value: Any, example: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping) or not all(isinstance(key, str) for key in value):
        raise InvalidArgumentError(
            f"{what} must be a dict of parameter names to values, e.g. {example}; got {value!r}"
        )
    return dict(value)


def resolve(
    given: Mapping[str, Any], calibrated: Mapping[str, Any] | None
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """The tuned parameters a call runs with, and where each came from: the caller's value
    (not None), else the calibration's (``weight`` only when both the calibrated fusion and
    the fusion that runs are weighted ones), else ``DEFAULTS``. Returns ``(values,
    explain)``, explain as :attr:`ComposeResult.explain` (values before checking)."""
    cal = dict(calibrated or {})
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for name in ("knn_k", "alpha", "fuse", "temperature"):
        if given.get(name) is not None:
            values[name], sources[name] = given[name], "request"
        elif name in cal:
            values[name], sources[name] = cal[name], "calibrated"
        else:
            values[name], sources[name] = DEFAULTS[name], "default"
    if given.get("weight") is not None:
        values["weight"], sources["weight"] = given["weight"], "request"
    elif (
        cal.get("weight") is not None and cal.get("fuse") in WEIGHTED and values["fuse"] in WEIGHTED
    ):
        values["weight"], sources["weight"] = cal["weight"], "calibrated"
    else:
        values["weight"], sources["weight"] = DEFAULTS["weight"], "default"
    return values, {n: {"value": values[n], "source": sources[n]} for n in TUNED}


def check_temperature(value: Any) -> float | None:
    if value is None:
        return None
    t = _number("temperature", value)
    if not (math.isfinite(t) and t > 0):
        raise InvalidArgumentError(
            f"temperature must be finite and > 0 (seed weights are a softmax exp(s / T) of the "
            f"normalised similarity s in [0, 1]; 0.1-1 is the useful range); got {value!r}"
        )
    return t


def check_options(
    *,
    k: Any,
    knn_k: Any,
    ppr_k: Any,
    alpha: Any,
    fuse: Any,
    weight: Any,
    rank_constant: Any,
    knn_params: Any,
    ppr_params: Any,
    unexpected: Mapping[str, Any],
    temperature: Any = None,
) -> ComposeOptions:
    """Check everything of a compose call that needs neither the collection nor the graph."""
    from shardwalk.walks._check import check_alpha

    if unexpected:
        names = ", ".join(sorted(unexpected))
        raise InvalidArgumentError(
            f"compose got unexpected parameter(s) {names}; search parameters go in "
            "knn_params (e.g. knn_params={'ef': 128}), PPR parameters in ppr_params (e.g. "
            "ppr_params={'method': 'push', 'r_max': 1e-5})"
        )
    k = check_k(k)
    knn_k = check_k(knn_k, what="knn_k")
    ppr_k = max(k, knn_k) if ppr_k is None else check_k(ppr_k, what="ppr_k")
    alpha = check_alpha(alpha)
    fuse = check_choice("fuse", fuse, FUSIONS)
    temperature = check_temperature(temperature)
    if fuse == "rrf":
        if weight is not None:
            raise InvalidArgumentError(
                f"weight applies to the weighted fusions ({', '.join(WEIGHTED)}) only; got "
                f"weight={weight!r} with fuse='rrf' (reciprocal rank fusion takes "
                "rank_constant)"
            )
        constant = (
            RANK_CONSTANT if rank_constant is None else _number("rank_constant", rank_constant)
        )
        if not (math.isfinite(constant) and constant >= 0):
            raise InvalidArgumentError(
                f"rank_constant must be finite and >= 0 (reciprocal rank fusion adds "
                f"1 / (rank_constant + rank), 60 by default); got {rank_constant!r}"
            )
        share = DEFAULT_WEIGHT
    else:
        if rank_constant is not None:
            raise InvalidArgumentError(
                f"rank_constant applies to fuse='rrf' only; got rank_constant={rank_constant!r} "
                f"with fuse={fuse!r} (which takes weight)"
            )
        share = DEFAULT_WEIGHT if weight is None else _number("weight", weight)
        if not 0.0 <= share <= 1.0:  # also refuses NaN
            raise InvalidArgumentError(
                f"weight is the similarity's share of the fused score and must be in [0, 1] "
                f"(1: kNN only, 0: PPR only); got {weight!r}"
            )
        constant = RANK_CONSTANT
    knn = _params("knn_params", knn_params, "{'ef': 128}")
    ppr = _params("ppr_params", ppr_params, "{'method': 'push', 'r_max': 1e-5}")
    for name, hint in (("alpha", "compose(..., alpha=...)"), ("k", "compose(..., ppr_k=...)")):
        if name in ppr:
            raise InvalidArgumentError(
                f"ppr_params may not hold {name!r}; pass it as {hint} (it is also used outside "
                "the PPR call)"
            )
    return ComposeOptions(
        k=k,
        knn_k=knn_k,
        ppr_k=ppr_k,
        alpha=alpha,
        fuse=fuse,
        weight=share,
        temperature=temperature,
        rank_constant=constant,
        knn_params=knn,
        ppr_params=ppr,
    )


def compose(
    collection: Collection,
    graph: Graph,
    queries: Any,
    options: ComposeOptions,
    *,
    tenant: str | None = None,
    where: Any = None,
    explain: dict[str, dict[str, Any]] | None = None,
) -> ComposeResult:
    """Run a composed query (arguments checked by :func:`check_options`; see the module
    docstring and :meth:`shardwalk.Engine.compose`)."""
    t0 = time.perf_counter()
    o = options
    arr = check_vectors(
        queries, dim=collection.dim, what="queries", owner=f"collection {collection.name!r}"
    )
    knn_params = check_search_params(collection.index_kind, o.knn_params)
    ppr_params = dict(o.ppr_params)
    if not set(ppr_params) - {"dangling"}:  # no method chosen: compose's own (default_ppr)
        ppr_params.update(default_ppr(o.alpha))
    graph.ppr_method(alpha=o.alpha, **ppr_params)  # a bad PPR parameter fails before any work
    if tenant is not None:
        check_name("tenant", tenant)

    # -- kNN
    t_knn = time.perf_counter()
    hits = collection.search(arr, o.knn_k, tenant=tenant, where=where, **knn_params)
    knn_ids, knn_dist = hits.ids, hits.distances.astype(np.float64)
    nq = knn_ids.shape[0]
    knn_seconds = time.perf_counter() - t_knn

    # -- seeds and PPR
    t_ppr = time.perf_counter()
    hit = knn_ids >= 0
    similarity = _normalised_similarity(knn_dist, hit)
    seeding = hit & graph.csr.contains(knn_ids)
    seeds = seeding.sum(axis=1)
    dropped = hit.sum(axis=1) - seeds
    seed_weights = weigh_seeds(similarity, o.temperature)
    specs = {
        int(i): {
            int(node): float(w)
            for node, w in zip(knn_ids[i, seeding[i]].tolist(), seed_weights[i, seeding[i]])
        }
        for i in np.flatnonzero(seeds)
    }
    ppr_ids = np.full((nq, o.ppr_k), -1, np.int64)
    ppr_scores = np.zeros((nq, o.ppr_k), np.float64)
    ppr_error = np.full(nq, np.nan)
    method: str | None = None
    alpha = o.alpha
    filter_seconds = 0.0
    # which kNN hits are still visible (a write may have landed since the search): checked
    # with the first PPR list, in one call
    knn_ok: np.ndarray | None = None
    rows = np.array(sorted(specs), dtype=np.int64)
    if rows.size:
        depth = o.ppr_k
        if tenant is not None or where is not None:
            depth = scoped_depth(o.ppr_k, collection.scope_size(tenant, where), graph.num_nodes)
        lists = visible_ppr(
            graph, collection, [specs[i] for i in rows.tolist()], o.ppr_k, depth,
            tenant=tenant, where=where, also=knn_ids[hit], alpha=o.alpha, **ppr_params,
        )  # fmt: skip
        ppr_ids[rows], ppr_scores[rows], ppr_error[rows] = lists.ids, lists.scores, lists.error
        method, alpha = lists.last.method, lists.last.alpha
        filter_seconds = lists.filter_seconds
        knn_ok = np.zeros(knn_ids.shape, dtype=bool)
        knn_ok[hit] = lists.also_visible
    ppr_seconds = time.perf_counter() - t_ppr - filter_seconds

    # -- fuse, top-k
    t_fuse = time.perf_counter()
    if knn_ok is None:  # no PPR ran
        knn_ok = np.zeros(knn_ids.shape, dtype=bool)
        knn_ok[hit] = collection.visible(knn_ids[hit], tenant=tenant, where=where)
    out = _fuse(candidates(knn_ids, knn_dist, similarity, knn_ok, ppr_ids, ppr_scores), o)
    fuse_seconds = time.perf_counter() - t_fuse + filter_seconds
    return ComposeResult(
        **out,
        seeds=seeds.astype(np.int64),
        seeds_dropped=dropped.astype(np.int64),
        ppr_error=ppr_error,
        ppr_method=method,
        alpha=alpha,
        fuse=o.fuse,
        knn_seconds=knn_seconds,
        ppr_seconds=ppr_seconds,
        fuse_seconds=fuse_seconds,
        seconds=time.perf_counter() - t0,
        explain=explain or {},
    )


def weigh_seeds(similarity: np.ndarray, temperature: float | None) -> np.ndarray:
    """Seed weights from normalised similarities (NaN where no hit; NaN stays NaN): linear
    ``(1 + s) / 2`` without a temperature, else ``exp((s - 1) / T)`` (a softmax once PPR
    scales the weights to sum 1; the shift keeps the exponent <= 0)."""
    if temperature is None:
        return 0.5 * (1.0 + similarity)
    return np.exp((similarity - 1.0) / temperature)


def _normalised_similarity(distances: np.ndarray, hit: np.ndarray) -> np.ndarray:
    """Per query, min-max over its kNN hits: 1 nearest, 0 farthest (1 when all are equal);
    NaN where there is no hit."""
    low = np.where(hit, distances, np.inf).min(axis=1, keepdims=True)
    high = np.where(hit, distances, -np.inf).max(axis=1, keepdims=True)
    span = high - low
    with np.errstate(invalid="ignore", divide="ignore"):
        similarity = np.where(span > 0, (high - distances) / np.where(span > 0, span, 1.0), 1.0)
    return np.where(hit, similarity, np.nan)


def _keep_visible(
    ids: np.ndarray,
    scores: np.ndarray,
    visible: np.ndarray,
    rows: np.ndarray,
    out_ids: np.ndarray,
    out_scores: np.ndarray,
) -> np.ndarray:
    """Write each row's first visible PPR nodes (in rank order, up to the output's width) into
    ``out_*[rows]``; returns per row whether it has fewer visible nodes than that width."""
    width = out_ids.shape[1]
    position = np.cumsum(visible, axis=1) - 1
    keep = visible & (position < width)
    r, c = np.nonzero(keep)
    out_ids[rows] = -1
    out_scores[rows] = 0.0
    out_ids[rows[r], position[r, c]] = ids[r, c]
    out_scores[rows[r], position[r, c]] = scores[r, c]
    short: NDArray[np.bool_] = visible.sum(axis=1) < width
    return short


@dataclass(frozen=True, kw_only=True)
class Candidates:
    """A batch's fusion candidates: per query the union of its kNN list (its hits still
    visible) and its visible PPR list, columns in tie order (a kNN hit first, the nearer
    first, then the higher PPR score, then the smaller id), with each candidate's place in
    either list. Built once, it ranks any fusion and weight (:func:`fused_scores`,
    :func:`top`): compose ranks one, a calibration many."""

    ids: np.ndarray  # (q, c) int64, -1: no candidate
    distances: np.ndarray  # (q, c) kNN distance, NaN: not a hit
    ppr: np.ndarray  # (q, c) PPR score, NaN: not in the visible PPR list
    knn_col: np.ndarray  # (q, c) the candidate's column in the kNN list, -1: not a hit
    ppr_col: np.ndarray  # (q, c) its column in the PPR list, -1: not listed
    knn_dist: np.ndarray  # (q, knn_k)
    similarity: np.ndarray  # (q, knn_k) normalised, NaN: no hit
    ppr_scores: np.ndarray  # (q, ppr_k)
    listed: np.ndarray  # (q, ppr_k) bool

    @property
    def valid(self) -> np.ndarray:
        return self.ids >= 0


def candidates(
    knn_ids: np.ndarray,
    knn_dist: np.ndarray,
    similarity: np.ndarray,
    knn_ok: np.ndarray,
    ppr_ids: np.ndarray,
    ppr_scores: np.ndarray,
) -> Candidates:
    """The union of each query's kNN list and visible PPR list (see :class:`Candidates`)."""
    nq, n_knn = knn_ids.shape
    n_ppr = ppr_ids.shape[1]
    listed = ppr_ids >= 0
    # match[i, p, j]: PPR entry p of query i is its kNN hit j (each id is once in each list)
    match = (ppr_ids[:, :, None] == knn_ids[:, None, :]) & listed[:, :, None]
    knn_in_ppr = match.any(axis=1)  # (q, n_knn)
    ppr_pos = match.argmax(axis=1)  # where in the PPR list, when knn_in_ppr
    ppr_in_knn = match.any(axis=2)  # (q, ppr_k)
    rows = np.arange(nq)[:, None]
    ids = np.concatenate(
        [np.where(knn_ok, knn_ids, -1), np.where(listed & ~ppr_in_knn, ppr_ids, -1)], axis=1
    )
    distances = np.concatenate([knn_dist, np.full(ppr_ids.shape, np.nan)], axis=1)
    ppr_of_knn = np.where(knn_in_ppr, ppr_scores[rows, ppr_pos], np.nan)
    ppr = np.concatenate([ppr_of_knn, np.where(listed, ppr_scores, np.nan)], axis=1)
    knn_col = np.concatenate(
        [np.broadcast_to(np.arange(n_knn), (nq, n_knn)), np.full((nq, n_ppr), -1)], axis=1
    )
    ppr_col = np.concatenate(
        [np.where(knn_in_ppr, ppr_pos, -1), np.broadcast_to(np.arange(n_ppr), (nq, n_ppr))],
        axis=1,
    )
    # tie order: a kNN hit first (nearer first), then higher PPR, then smaller id
    nearer = np.where(np.isnan(distances), np.inf, distances)
    higher = np.where(np.isnan(ppr), np.inf, -ppr)
    tie = np.lexsort((ids, higher, nearer), axis=-1)
    take = (rows, tie)
    return Candidates(
        ids=ids[take],
        distances=distances[take],
        ppr=ppr[take],
        knn_col=knn_col[take],
        ppr_col=ppr_col[take],
        knn_dist=knn_dist,
        similarity=similarity,
        ppr_scores=ppr_scores,
        listed=listed,
    )


def fused_scores(
    c: Candidates, fuse: str, weights: Sequence[float], rank_constant: float = RANK_CONSTANT
) -> np.ndarray:
    """Fused scores of the candidates, (len(weights), q, c), -inf where there is no
    candidate: ``a + b`` for "rrf" (``weights`` ignored but for their count), ``w * a + (1 -
    w) * b`` per weight w for the weighted fusions (module docstring), a and b the kNN and PPR
    terms (a list's "absent" value where the candidate is not in it)."""
    rows = np.arange(c.ids.shape[0])[:, None]
    in_knn, in_ppr = c.knn_col >= 0, c.ppr_col >= 0
    if fuse == "rrf":
        # an absent candidate's column is -1: clipped so that rank_constant 0 divides by 1
        a = np.where(in_knn, 1.0 / (rank_constant + 1.0 + np.maximum(c.knn_col, 0)), 0.0)
        b = np.where(in_ppr, 1.0 / (rank_constant + 1.0 + np.maximum(c.ppr_col, 0)), 0.0)
        fused = np.broadcast_to(a + b, (len(weights), *a.shape))
    else:
        knn_term, ppr_term = _terms(fuse, c.knn_dist, c.similarity, c.ppr_scores, c.listed)
        if fuse == "weighted_z":  # absent from a list: that list's lowest z (0 if it is empty)
            knn_absent = np.min(np.where(np.isnan(knn_term), np.inf, knn_term), 1, keepdims=True)
            ppr_absent = np.min(np.where(c.listed, ppr_term, np.inf), axis=1, keepdims=True)
            knn_absent = np.where(np.isfinite(knn_absent), knn_absent, 0.0)
            ppr_absent = np.where(np.isfinite(ppr_absent), ppr_absent, 0.0)
        else:
            knn_absent = ppr_absent = np.zeros((c.ids.shape[0], 1))
        a = np.where(in_knn, knn_term[rows, np.maximum(c.knn_col, 0)], knn_absent)
        b = np.where(in_ppr, ppr_term[rows, np.maximum(c.ppr_col, 0)], ppr_absent)
        w = np.asarray(weights, dtype=np.float64)[:, None, None]
        fused = w * a + (1.0 - w) * b
    return np.where(c.valid, fused, -np.inf)


def top(fused: np.ndarray, k: int) -> np.ndarray:
    """Columns of the top-k candidates by fused score (ties in :class:`Candidates`' order),
    (..., q, min(k, c)) for fused scores (..., q, c)."""
    return np.argsort(-fused, axis=-1, kind="stable")[..., :k]


def _fuse(c: Candidates, o: ComposeOptions) -> dict[str, np.ndarray]:
    """Fused top-k over the candidates (the union of each query's kNN list and visible PPR
    list)."""
    fused = fused_scores(c, o.fuse, [o.weight], o.rank_constant)[0]
    order = top(fused, o.k)
    take = (np.arange(c.ids.shape[0])[:, None], order)
    ids, fused, valid = c.ids[take], fused[take], c.valid[take]
    distances, ppr = c.distances[take], c.ppr[take]
    width = ids.shape[1]
    if width < o.k:  # fewer candidates than k in all: pad
        pad = o.k - width
        ids = np.pad(ids, ((0, 0), (0, pad)), constant_values=-1)
        valid = np.pad(valid, ((0, 0), (0, pad)), constant_values=False)
        fused, distances, ppr = (np.pad(a, ((0, 0), (0, pad))) for a in (fused, distances, ppr))
    return {
        "ids": np.where(valid, ids, -1).astype(np.int64),
        "scores": np.where(valid, fused, -np.inf).astype(np.float32),
        "distances": np.where(valid, distances, np.inf).astype(np.float32),
        "ppr_scores": np.where(valid, ppr, 0.0).astype(np.float32),
    }


def _zscore(values: np.ndarray, present: np.ndarray) -> np.ndarray:
    """Per row, z-scores of the present values (0 when they are all equal); NaN where a
    value is absent."""
    count = np.maximum(present.sum(axis=1, keepdims=True), 1)
    v = np.where(present, values, 0.0)
    mean = v.sum(axis=1, keepdims=True) / count
    spread = np.sqrt(
        (np.where(present, values - mean, 0.0) ** 2).sum(axis=1, keepdims=True) / count
    )
    z = np.where(spread > 0, (v - mean) / np.where(spread > 0, spread, 1.0), 0.0)
    return np.where(present, z, np.nan)


def _terms(
    fuse: str,
    knn_dist: np.ndarray,
    similarity: np.ndarray,
    ppr_scores: np.ndarray,
    listed: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """The kNN and PPR terms of a weighted fusion (see the module docstring), (q, knn_k) and
    (q, ppr_k); a node absent from a list gets 0 (the caller gives it the lowest z for
    "weighted_z")."""
    hit = ~np.isnan(similarity)
    if fuse == "weighted_z":
        return _zscore(-knn_dist, hit), _zscore(ppr_scores, listed)  # NaN: absent
    knn_term = np.where(hit, similarity, 0.0)
    if fuse == "weighted_rank":
        width = ppr_scores.shape[1]
        ppr_term = np.where(listed, 1.0 - np.arange(width) / width, 0.0)
    else:
        top = ppr_scores[:, :1]  # lists are in decreasing score order
        ppr_term = ppr_scores / np.where(top > 0, top, 1.0)  # 0 where nothing is listed
    return knn_term, ppr_term
