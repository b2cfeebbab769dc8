"""Accuracy harness: approximate PPR against exact power iteration with the same alpha, edge
weights and dangling rule (one :class:`PPRIndex` serves both, so they cannot disagree).

Metrics per query (the FORA / PowerWalk methodology):

* precision@k: |top-k(approx) & top-k(exact)| / k (k capped at the exact vector's support);
* NDCG@k: sum_i pi(t_hat_i) / log2(i + 2) over the approximate top-k, divided by the same sum
  over the exact top-k (relevance = exact PPR value);
* RAG@k: sum of exact values over the approximate top-k / over the exact top-k (PowerWalk's
  metric; it saturates, so never report it alone);
* l1: sum_t |pi_hat(t) - pi(t)| over all nodes;
* max relative error: max |pi_hat(t) - pi(t)| / pi(t) over the t with pi(t) > 1/n.

Sources are sampled uniformly and per out-degree bucket [2^(i-1), 2^i) (PowerWalk's buckets).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from shardwalk.walks import _check
from shardwalk.walks.graph import CSRGraph
from shardwalk.walks.ppr import Method, PPRIndex

from shardwalk.errors import InvalidArgumentError

__all__ = [
    "METRICS",
    "AccuracyReport",
    "evaluate",
    "ground_truth",
    "query_metrics",
    "sample_sources",
]

METRICS = ("precision", "ndcg", "rag", "l1", "max_rel_error")


def sample_sources(
    graph: CSRGraph, *, uniform: int = 10, per_bucket: int = 5, seed: int = 0, max_buckets: int = 12
) -> dict[str, np.ndarray]:
    """Query sources (external ids): ``"uniform"`` (``uniform`` nodes with out-edges, uniformly)
    and ``"deg[a,b)"`` (``per_bucket`` nodes with out-degree in [a, b), b = 2a, a = 1, 2, 4...).
    Buckets with no node are left out; a bucket with fewer nodes gives all of them."""
    uniform = _check.check_int("uniform", uniform, minimum=0)
    per_bucket = _check.check_int("per_bucket", per_bucket, minimum=0)
    rng = np.random.default_rng(_check.check_seed(seed))
    deg = graph.out_degrees()
    live = np.flatnonzero(deg > 0)
    out: dict[str, np.ndarray] = {}
    if uniform and live.size:
        pick = rng.choice(live, size=min(uniform, live.size), replace=False)
        out["uniform"] = graph.to_external(np.sort(pick))
    if per_bucket:
        for i in range(max_buckets):
            lo, hi = 2**i, 2 ** (i + 1)
            members = np.flatnonzero((deg >= lo) & (deg < hi))
            if members.size:
                pick = rng.choice(members, size=min(per_bucket, members.size), replace=False)
                out[f"deg[{lo},{hi})"] = graph.to_external(np.sort(pick))
    return out


def _top(ids: np.ndarray, vals: np.ndarray, k: int) -> np.ndarray:
    order = np.lexsort((ids, -vals))  # by value desc, then id
    return ids[order[:k]]


def query_metrics(
    exact_ids: np.ndarray,
    exact_vals: np.ndarray,
    approx_ids: np.ndarray,
    approx_vals: np.ndarray,
    *,
    k: int,
    n: int,
) -> dict[str, float]:
    """Metrics of one approximate sparse vector against the exact one (both: external ids and
    values; missing ids are 0). Vectorised: O((a + e) log(a + e)) for supports a and e."""
    exact_ids = np.asarray(exact_ids, np.int64)
    approx_ids = np.asarray(approx_ids, np.int64)
    keys = np.union1d(exact_ids, approx_ids)
    ex = np.zeros(keys.size)
    ap = np.zeros(keys.size)
    ex[np.searchsorted(keys, exact_ids)] = exact_vals
    ap[np.searchsorted(keys, approx_ids)] = approx_vals
    kk = min(k, int(np.count_nonzero(ex)))
    if kk == 0:
        return dict.fromkeys(METRICS, float("nan"))
    t_exact = np.lexsort((keys, -ex))[:kk]  # positions in keys, by value desc then id
    live = np.flatnonzero(ap)
    t_approx = live[np.lexsort((keys[live], -ap[live]))][:kk]
    precision = np.intersect1d(t_exact, t_approx).size / kk
    disc = 1.0 / np.log2(np.arange(kk) + 2.0)
    ideal = float(np.sum(ex[t_exact] * disc))
    got = ex[t_approx]
    dcg = float(np.sum(got * disc[: got.size]))
    rag = float(got.sum() / ex[t_exact].sum())
    l1 = float(np.abs(ap - ex).sum())
    big = ex > 1.0 / n
    max_rel = float(np.max(np.abs(ap[big] - ex[big]) / ex[big])) if big.any() else 0.0
    return {
        "precision": precision,
        "ndcg": dcg / ideal if ideal > 0 else float("nan"),
        "rag": rag,
        "l1": l1,
        "max_rel_error": max_rel,
    }


def ground_truth(
    index: PPRIndex, sources: dict[str, np.ndarray] | np.ndarray, *, tol: float = 1e-10
) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Exact vectors (external ids, values) per source by power iteration to l1 <= ``tol``,
    with the index's alpha, weights and dangling rule; pass to :func:`evaluate` to reuse them
    across methods."""
    groups = sources if isinstance(sources, dict) else {"all": np.asarray(sources)}
    out = {}
    for ids in groups.values():
        for s in np.asarray(ids).tolist():
            if int(s) not in out:
                e_ids, e_vals, _ = index.vector(int(s), method="exact", tol=tol)
                out[int(s)] = (e_ids, e_vals)
    return out


@dataclass(frozen=True, kw_only=True)
class AccuracyReport:
    """Per-query metrics and their aggregates.

    Attributes
    ----------
    method, params : the approximate method evaluated and its parameters
    k : int
    rows : list of dict
        One per query: group, source, the metrics, the reported error, seconds.
    summary : dict
        Per group ("uniform", "deg[a,b)", and "all"): mean of each metric, min precision,
        mean reported error, queries.
    """

    method: str
    params: dict[str, Any]
    k: int
    rows: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, dict[str, float]] = field(default_factory=dict)


def evaluate(
    index: PPRIndex,
    sources: dict[str, np.ndarray] | np.ndarray,
    *,
    method: Method,
    k: int = 100,
    exact_tol: float = 1e-10,
    truth: dict[int, tuple[np.ndarray, np.ndarray]] | None = None,
    **params: Any,
) -> AccuracyReport:
    """Evaluate ``index``'s ``method`` against its exact solver on the given sources.

    Parameters
    ----------
    index : PPRIndex
        Fixes alpha, the weights and the dangling rule for both sides.
    sources : dict of name -> external ids, or an array (one group "all")
        Typically from :func:`sample_sources`.
    method : {"fingerprint", "push", "exact"}
    k : int
        For precision@k, NDCG@k, RAG@k.
    exact_tol : float
        l1 tolerance of the ground truth (power iteration), default 1e-10.
    truth : dict, optional
        Precomputed :func:`ground_truth` of the same index (computed here when absent).
    **params
        Passed to the method (``rounds``, ``threshold``, ``r_max``...).
    """
    if not isinstance(index, PPRIndex):
        raise InvalidArgumentError(f"index must be a PPRIndex; got {type(index).__name__}")
    k = _check.check_k(k)
    groups = sources if isinstance(sources, dict) else {"all": np.asarray(sources)}
    n = index.graph.num_nodes
    rows: list[dict[str, Any]] = []
    for name, ids in groups.items():
        for s in np.asarray(ids).tolist():
            if truth is not None and int(s) in truth:
                e_ids, e_vals = truth[int(s)]
            else:
                e_ids, e_vals, _ = index.vector(int(s), method="exact", tol=exact_tol)
            t0 = time.perf_counter()
            a_ids, a_vals, a_err = index.vector(int(s), method=method, k=k, **params)
            sec = time.perf_counter() - t0
            m = query_metrics(e_ids, e_vals, a_ids, a_vals, k=k, n=n)
            rows.append(
                {"group": name, "source": int(s), **m, "reported_error": a_err, "seconds": sec}
            )
    summary: dict[str, dict[str, float]] = {}
    for name in [*groups] + ([] if "all" in groups else ["all"]):
        sel = [r for r in rows if name == "all" or r["group"] == name]
        if not sel:
            continue
        agg = {m: float(np.nanmean([r[m] for r in sel])) for m in METRICS}
        agg["min_precision"] = float(np.nanmin([r["precision"] for r in sel]))
        agg["reported_error"] = float(np.mean([r["reported_error"] for r in sel]))
        # share of queries whose reported error is at least the measured l1 (for estimates,
        # how honest they are; a bound always covers)
        # (1e-9 of slack: the ground truth itself is exact to l1 <= 1e-10)
        agg["error_coverage"] = float(np.mean([r["reported_error"] + 1e-9 >= r["l1"] for r in sel]))
        agg["queries"] = len(sel)
        summary[name] = agg
    return AccuracyReport(method=method, params=dict(params), k=k, rows=rows, summary=summary)
