"""Retrieval quality of composed queries, measured on the graph's own edges, and the
calibration of compose's defaults that is built on it.

The task (no labels needed): hold out a sample of nodes that are rows of the collection and
have at least ``min_degree`` edges; remove their edges from the graph and their rows from
the candidates; query with each held-out node's own vector, and score recall@k of its
held-out neighbours (``|top-k & neighbours| / |neighbours|``, averaged over the queries). On a
citation graph this is "find the papers a new paper cites from its text"
(bench/compose_quality.py runs it on Cora).

Nothing is copied or changed: the kNN stage is the collection's ordinary search with the
held-out ids dropped from its hits; PPR runs by Forward Push over an in-memory copy of the
CSR without the held-out nodes' edges (fingerprints of the full graph would leak them); seeds
and fusion are compose's own code (:mod:`shardwalk.compose`), so a setting scores here what it
does in :meth:`Engine.compose`.

- :func:`heldout_edges`: recall@k of kNN alone and of any compose settings, on one sample.
- :func:`calibrate`: successive halving over :data:`GRID` for the setting of highest recall,
  what :meth:`Engine.calibrate_compose` stores as the pair's defaults.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, TypedDict

import numpy as np

from shardwalk.compose import (
    DEFAULT_WEIGHT,
    DEFAULTS,
    FUSIONS,
    MAX_R_MAX,
    PUSH_WORK,
    TUNED,
    WEIGHTED,
    Candidates,
    _keep_visible,
    _normalised_similarity,
    candidates,
    check_options,
    fused_scores,
    top,
    weigh_seeds,
)
from shardwalk.errors import FailedPreconditionError, InvalidArgumentError

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from shardwalk.collection import Collection
    from shardwalk.graph import Graph

__all__ = ["GRID", "HeldOut", "calibrate", "heldout_edges", "held_out"]

#: the values a calibration tries per parameter (weight only with a weighted fusion;
#: temperature None is the linear seed weighting)
GRID: dict[str, tuple[Any, ...]] = {
    "knn_k": (5, 10, 20, 40),
    "alpha": (0.05, 0.1, 0.2, 0.3, 0.5),
    "temperature": (None, 0.1, 0.2, 0.35, 0.6, 1.0),
    "fuse": FUSIONS,
    "weight": (0.2, 0.35, 0.5, 0.65, 0.8),
}
#: fewest held-out queries a calibration accepts
MIN_QUERIES = 30


class Sample(TypedDict, total=False):
    """Which nodes a task holds out, as keywords (:func:`held_out` says what each means and
    holds the defaults): every function here that samples a task takes them."""

    queries: int
    min_degree: int
    seed: int


@dataclass(frozen=True, kw_only=True)
class HeldOut:
    """A held-out-neighbour task over one collection and graph (see the module docstring).

    Attributes
    ----------
    query_ids : ndarray int64 (q,)
        The held-out nodes (each also a row of the collection).
    truth : list of ndarray int64
        Per query, its neighbours that are neither held out nor hidden rows.
    knn_ids, knn_dist : ndarray (q, depth)
        Each query's kNN hits without held-out ids (padded -1 / +inf), deepest knn_k of the
        task.
    """

    query_ids: np.ndarray
    truth: list[np.ndarray]
    knn_ids: np.ndarray
    knn_dist: np.ndarray
    reduced: Any  # CSRGraph without the held-out nodes' edges
    index: Any  # PPRIndex over it
    visible: np.ndarray  # sorted ids a result may be: live rows that are not held out
    dangling: str | None
    seconds: float
    seed: int  # the sample's

    def __len__(self) -> int:
        return int(self.query_ids.shape[0])

    def subset(self, rows: np.ndarray) -> HeldOut:
        """The same task on some of its queries (the same graph and candidates)."""
        return replace(
            self,
            query_ids=self.query_ids[rows],
            truth=[self.truth[i] for i in rows.tolist()],
            knn_ids=self.knn_ids[rows],
            knn_dist=self.knn_dist[rows],
        )


def held_out(
    collection: Collection,
    graph: Graph,
    *,
    queries: int = 300,
    min_degree: int = 3,
    knn_depth: int = 40,
    seed: int = 0,
    knn_params: Mapping[str, Any] | None = None,
    nodes: Any = None,
) -> HeldOut:
    """Sample the task: ``queries`` nodes of ``graph`` that are rows of ``collection`` with at
    least ``min_degree`` (out-)edges, by ``seed``; or hold out exactly ``nodes`` (ids; those
    that are no such node are left out).

    Raises
    ------
    FailedPreconditionError
        Fewer than :data:`MIN_QUERIES` such nodes (the collection and graph share too few ids).
    InvalidArgumentError
        A bad ``queries``, ``min_degree`` or ``knn_depth``.
    """
    from shardwalk.walks import CSRGraph, PPRIndex

    t0 = time.perf_counter()
    for what, value, low in (("queries", queries, 1), ("min_degree", min_degree, 1)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise InvalidArgumentError(f"{what} must be an int >= {low}; got {value!r}")
    csr = graph.csr
    node_ids = np.asarray(csr.node_ids)
    degree = np.diff(np.asarray(csr.indptr))
    named = np.flatnonzero(node_ids >= 0)  # deleted nodes keep a negative placeholder
    rows = np.zeros(node_ids.shape[0], dtype=bool)
    rows[named] = collection.visible(node_ids[named])
    eligible = np.flatnonzero(rows & (degree >= min_degree))
    if eligible.size < MIN_QUERIES:
        raise FailedPreconditionError(
            f"collection {collection.name!r} and graph {graph.name!r} share {eligible.size} ids "
            f"of nodes with >= {min_degree} edges; the held-out task needs at least "
            f"{MIN_QUERIES} (it queries with such a node's vector and looks for its "
            "neighbours); are they in one id space?"
        )
    if nodes is None:
        rng = np.random.default_rng(seed)
        held = np.sort(rng.choice(eligible, min(queries, eligible.size), replace=False))
    else:
        asked = np.asarray(nodes, dtype=np.int64).ravel()
        named_asked = asked[csr.contains(asked)]
        held = np.intersect1d(csr.to_internal(named_asked), eligible)
    is_held = np.zeros(node_ids.shape[0], dtype=bool)
    is_held[held] = True

    # the graph without the held-out nodes' edges (internal numbering kept)
    indptr, indices = np.asarray(csr.indptr), np.asarray(csr.indices)
    src = np.repeat(np.arange(node_ids.shape[0]), degree)
    keep = ~(is_held[src] | is_held[indices])
    kept_degree = np.bincount(src[keep], minlength=node_ids.shape[0])
    reduced = CSRGraph(
        indptr=np.concatenate([[0], np.cumsum(kept_degree)]).astype(np.int64),
        indices=np.ascontiguousarray(indices[keep]),
        weights=None if csr.weights is None else np.ascontiguousarray(csr.weights[keep]),
        node_ids=node_ids,
        directed=csr.directed,
    )
    shown = rows & ~is_held
    truth = [node_ids[nb[shown[nb]]] for nb in (indices[indptr[u] : indptr[u + 1]] for u in held)]
    with_truth = np.asarray([t.size > 0 for t in truth], dtype=bool)
    held = held[with_truth]
    truth = [t for t, ok in zip(truth, with_truth) if ok]
    query_ids = node_ids[held]

    # kNN: the ordinary search, held-out ids dropped (they are "not in the collection")
    records = collection.get(query_ids)
    first = np.unique(records.ids, return_index=True)[1]  # one row per id (several owners)
    order = np.searchsorted(records.ids[first], query_ids)
    vectors = np.asarray(records.vectors)[first][order]
    margin = max(16, 3 * math.ceil(knn_depth * held.size / max(int(rows.sum()), 1)))
    hits = collection.search(vectors, knn_depth + margin, **dict(knn_params or {}))
    drop = np.isin(hits.ids, query_ids) | (hits.ids < 0)
    knn_ids = np.full((held.size, knn_depth), -1, np.int64)
    knn_dist = np.full((held.size, knn_depth), np.inf)
    position = np.cumsum(~drop, axis=1) - 1
    r, c = np.nonzero(~drop & (position < knn_depth))
    knn_ids[r, position[r, c]] = hits.ids[r, c]
    knn_dist[r, position[r, c]] = hits.distances[r, c]
    fp = graph.stats()["fingerprints"]
    assert fp is None or isinstance(fp, Mapping)  # Graph.stats: None without fingerprints
    return HeldOut(
        index=PPRIndex(reduced),
        query_ids=query_ids,
        truth=truth,
        knn_ids=knn_ids,
        knn_dist=knn_dist,
        reduced=reduced,
        visible=np.sort(node_ids[shown]),
        dangling=None if fp is None else str(fp["dangling"]),
        seconds=time.perf_counter() - t0,
        seed=seed,
    )


def recall(found: np.ndarray, truth: Sequence[np.ndarray]) -> float:
    """Mean over queries of ``|found[i] & truth[i]| / |truth[i]|`` (ids unique per row)."""
    return _Truth(truth)(found)


class _Truth:
    """The held-out neighbours as one sorted array of (query, id) keys: a recall is one
    ``np.searchsorted`` however many queries and settings (a calibration computes
    thousands)."""

    def __init__(self, truth: Sequence[np.ndarray]) -> None:
        self.sizes = np.array([t.size for t in truth], dtype=np.float64)
        self.width = int(max((int(t.max()) for t in truth if t.size), default=0)) + 2
        rows = np.repeat(np.arange(len(truth)), self.sizes.astype(np.int64))
        ids = np.concatenate(truth) if len(truth) else np.zeros(0, np.int64)
        self.keys = np.sort(rows * self.width + ids)

    def many(self, found: np.ndarray) -> np.ndarray:
        """Recall of each of a stack of result sets, found (..., q, k) -> (...)."""
        rows = np.arange(found.shape[-2])[:, None]
        keys = np.where((found >= 0) & (found < self.width), rows * self.width + found, -1)
        if self.keys.size == 0:
            return np.zeros(found.shape[:-2])
        at = np.minimum(np.searchsorted(self.keys, keys), self.keys.size - 1)
        hits = ((self.keys[at] == keys) & (keys >= 0)).sum(axis=-1)
        return np.mean(hits / self.sizes, axis=-1)

    def __call__(self, found: np.ndarray) -> float:
        return float(self.many(found))


class _Scorer:
    """Scores settings on one task: per (knn_k, alpha, temperature) one PPR batch and one
    candidate set, which then ranks every fusion and weight at once."""

    def __init__(self, task: HeldOut, k: int, push_work: float = PUSH_WORK) -> None:
        self.task, self.k, self.push_work = task, k, push_work
        self.truth = _Truth(task.truth)
        self.cache: dict[tuple[Any, ...], Candidates] = {}
        self.scored: dict[tuple[Any, ...], float] = {}
        self.ppr_seconds = 0.0

    def _candidates(self, knn_k: int, alpha: float, temperature: float | None) -> Candidates:
        key = (knn_k, alpha, temperature)
        if key in self.cache:
            return self.cache[key]
        task = self.task
        if task.knn_ids.shape[1] < knn_k:
            raise InvalidArgumentError(
                f"knn_k {knn_k} is deeper than the task's kNN lists ({task.knn_ids.shape[1]}); "
                "sample the task with a larger knn_depth"
            )
        t0 = time.perf_counter()
        ids, dist = task.knn_ids[:, :knn_k], task.knn_dist[:, :knn_k]
        hit = ids >= 0
        similarity = _normalised_similarity(dist, hit)
        weights = weigh_seeds(similarity, temperature)
        seeding = hit & task.reduced.contains(ids)
        nq, ppr_k = len(task), max(self.k, knn_k)  # compose's ppr_k
        ppr_ids = np.full((nq, ppr_k), -1, np.int64)
        ppr_scores = np.zeros((nq, ppr_k))
        rows = np.flatnonzero(seeding.any(axis=1))
        if rows.size:
            specs = [
                dict(zip(ids[i, seeding[i]].tolist(), weights[i, seeding[i]].tolist()))
                for i in rows
            ]
            depth = min(2 * ppr_k + 16, task.reduced.num_nodes)
            found = task.index.query_batch(
                specs, k=depth, method="push", alpha=alpha, dangling=task.dangling,
                r_max=min(self.push_work / alpha, MAX_R_MAX),
            )  # fmt: skip
            at = np.minimum(np.searchsorted(task.visible, found.ids), task.visible.size - 1)
            visible = (found.ids >= 0) & (task.visible[at] == found.ids)
            _keep_visible(found.ids, found.scores, visible, rows, ppr_ids, ppr_scores)
        self.ppr_seconds += time.perf_counter() - t0
        self.cache[key] = c = candidates(ids, dist, similarity, hit, ppr_ids, ppr_scores)
        return c

    def fusions(self, base: Mapping[str, Any], fusions: Sequence[Mapping[str, Any]]) -> list[float]:
        """Recall@k of ``base`` (knn_k, alpha, temperature) under each of ``fusions`` (fuse and
        weight), the weights of one fusion ranked in one pass."""
        c = self._candidates(base["knn_k"], float(base["alpha"]), base["temperature"])
        out: dict[int, float] = {}
        for fuse in dict.fromkeys(f["fuse"] for f in fusions):
            which = [i for i, f in enumerate(fusions) if f["fuse"] == fuse]
            weights = [DEFAULT_WEIGHT if fusions[i]["weight"] is None else fusions[i]["weight"]
                       for i in which]  # fmt: skip
            fused = fused_scores(c, fuse, [float(w) for w in weights])
            # c.ids is -1 exactly where fused is -inf: no candidate
            ids = np.take_along_axis(np.broadcast_to(c.ids, fused.shape), top(fused, self.k), -1)
            for i, value in zip(which, self.truth.many(ids).tolist()):
                out[i] = value
        return [out[i] for i in range(len(fusions))]

    def __call__(self, setting: Mapping[str, Any]) -> float:
        o = check_options(
            k=self.k, knn_k=setting["knn_k"], ppr_k=None, alpha=setting["alpha"],
            fuse=setting["fuse"], weight=setting["weight"] if setting["fuse"] in WEIGHTED else None,
            rank_constant=None, knn_params=None, ppr_params=None, unexpected={},
            temperature=setting["temperature"],
        )  # fmt: skip
        weight = o.weight if o.fuse in WEIGHTED else None
        key = (o.knn_k, o.alpha, o.temperature, o.fuse, weight)
        if key not in self.scored:
            base = {"knn_k": o.knn_k, "alpha": o.alpha, "temperature": o.temperature}
            self.scored[key] = self.fusions(base, [{"fuse": o.fuse, "weight": weight}])[0]
        return self.scored[key]

    def knn(self) -> float:
        return self.truth(self.task.knn_ids[:, : self.k])


def _complete(setting: Mapping[str, Any]) -> dict[str, Any]:
    out = {**DEFAULTS, **setting}
    unknown = sorted(set(setting) - set(TUNED))
    if unknown:
        raise InvalidArgumentError(
            f"a setting names {', '.join(unknown)}; settings take {', '.join(TUNED)}"
        )
    if out["fuse"] in WEIGHTED and out["weight"] is None:
        out["weight"] = 0.5
    return out


def heldout_edges(
    collection: Collection,
    graph: Graph,
    settings: Mapping[str, Mapping[str, Any]] | None = None,
    *,
    k: int = 10,
    task: HeldOut | None = None,
    **sample: Unpack[Sample],
) -> dict[str, Any]:
    """Recall@k of kNN alone and of compose under each of ``settings`` on the held-out
    neighbour task (module docstring), one sample for all.

    Parameters
    ----------
    collection, graph : Collection, Graph
        ``engine.collection(name)``, ``engine.graph(name)``: one id space.
    settings : dict of name -> setting, optional
        A setting maps some of ``knn_k``, ``alpha``, ``fuse``, ``weight``, ``temperature``
        to values (the rest: compose's defaults). Default: ``{"defaults": {}}``, plus
        ``"calibrated"`` when the pair has a stored calibration.
    queries, min_degree, seed
        The sample (:func:`held_out`); ``task`` reuses one instead.
    k : int
        Recall@k.

    Returns
    -------
    dict
        ``{"knn": recall, "<name>": recall, ..., "queries": q, "k": k, "seconds": s}``.

    Raises
    ------
    FailedPreconditionError
        The collection and graph share too few ids (fewer than 30 usable queries).
    """
    t0 = time.perf_counter()
    if settings is None:
        settings = {"defaults": {}}
        stored = graph.compose_defaults(collection.name)
        if stored is not None:
            settings["calibrated"] = {n: stored[n] for n in TUNED}
    full = {name: _complete(s) for name, s in settings.items()}
    depth = max([40, k, *(int(s["knn_k"]) for s in full.values())])
    if task is None:
        task = held_out(collection, graph, knn_depth=depth, **sample)
    score = _Scorer(task, k)
    out: dict[str, Any] = {"knn": score.knn()}
    for name, setting in full.items():
        out[name] = score(setting)
    out.update(queries=len(task), k=k, seconds=time.perf_counter() - t0)
    return out


def calibrate(
    collection: Collection,
    graph: Graph,
    *,
    k: int = 10,
    grid: Mapping[str, Sequence[Any]] | None = None,
    keep: int = 10,
    **sample: Unpack[Sample],
) -> dict[str, Any]:
    """Choose compose's ``knn_k``, ``alpha``, ``fuse``, ``weight`` and ``temperature`` for
    this pair by successive halving on the held-out task (Jamieson and Talwalkar, AISTATS
    2016): every (knn_k, alpha, temperature) of ``grid`` (default :data:`GRID`) is scored
    at its best fusion and weight (fusion needs no new PPR) on a small share of the queries;
    the best ``1 / keep`` go on to three times as many queries, and so on until one is left
    on all of them (ties: the earlier in the grid). Most of the PPR work goes to the few
    settings that deserve it: with the default grid, 120 settings on 1/9 of the queries,
    then 12 on 1/3, then 2 on all. Deterministic for a seed and a graph and collection.
    ``sample``: the held-out nodes (:class:`Sample`; ``min_degree`` defaults to 2 here).

    Returns
    -------
    dict
        The chosen values, ``recall`` (recall@k they reached on all the queries),
        ``knn_recall`` and ``default_recall`` (library defaults) on the same queries,
        ``queries``, ``k``, ``seed``, ``settings`` (settings scored), ``seconds``, and the
        graph's ``edges`` and collection's ``rows`` at the time.
    """
    t0 = time.perf_counter()
    space = {**GRID, **(grid or {})}
    unknown = sorted(set(space) - set(TUNED))
    if unknown:
        raise InvalidArgumentError(f"grid names {', '.join(unknown)}; it takes {', '.join(TUNED)}")
    if isinstance(keep, bool) or not isinstance(keep, int) or keep < 2:
        raise InvalidArgumentError(f"keep must be an int >= 2; got {keep!r}")
    sample.setdefault("min_degree", 2)
    task = held_out(collection, graph, knn_depth=max(max(space["knn_k"]), k), **sample)
    fusions = [{"fuse": "rrf", "weight": None}] * ("rrf" in space["fuse"]) + [
        {"fuse": f, "weight": w} for f in space["fuse"] if f in WEIGHTED for w in space["weight"]
    ]
    if not fusions:
        raise InvalidArgumentError(f"grid['fuse'] names no fusion; fusions: {FUSIONS}")
    configs = [
        {"knn_k": kk, "alpha": a, "temperature": t}
        for kk in space["knn_k"]
        for a in space["alpha"]
        for t in space["temperature"]
    ]
    order = np.random.default_rng(task.seed).permutation(len(task))
    size = len(task)
    sizes = [size]
    while len(configs) > keep ** (len(sizes) - 1) and sizes[-1] >= 3 * MIN_QUERIES:
        sizes.append(sizes[-1] // 3)
    sizes.reverse()  # e.g. 33, 100, 300 queries
    scored = ppr_seconds = 0.0
    best: dict[str, Any] = {}
    best_recall = -1.0
    for step, n in enumerate(sizes):
        score = _Scorer(task.subset(np.sort(order[:n])), k)
        ranked = []
        for config in configs:
            values = score.fusions(config, fusions)
            best_fusion = int(np.argmax(values))  # ties: the earlier fusion
            ranked.append((values[best_fusion], config, fusions[best_fusion]))
        ranked.sort(key=lambda r: -r[0])  # stable: ties keep the grid's order
        scored += len(configs) * len(fusions)
        ppr_seconds += score.ppr_seconds
        if step == len(sizes) - 1:
            best_recall, winner, fusion = ranked[0]
            best = {**winner, **fusion}
            knn_recall, default_recall = score.knn(), score(_complete({}))
        else:
            configs = [c for _, c, _ in ranked[: max(1, -(-len(ranked) // keep))]]
    return {
        **{n: best[n] for n in TUNED},
        "recall": best_recall,
        "knn_recall": knn_recall,
        "default_recall": default_recall,
        "queries": len(task),
        "k": k,
        "seed": task.seed,
        "settings": int(scored),
        "rounds": [int(n) for n in sizes],
        "seconds": time.perf_counter() - t0,
        "ppr_seconds": ppr_seconds,
        "edges": int(graph.num_edges),
        "rows": len(collection),
    }
