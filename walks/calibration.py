"""Accuracy calibration: which PPR method and parameters serve ``accuracy=<name>`` on a graph.

For each setting of ``ACCURACY_CANDIDATES`` (a precision@k bar and a latency budget),
:func:`calibrate_accuracy` runs every candidate on sampled sources against a reference and
picks the cheapest that reaches the bar within the budget, measured in counted work
(:func:`work_units`), never by the clock. ``Graph.build_fingerprints`` records the choice in the
fingerprint store's stats; queries with ``accuracy=`` then run the chosen method.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
from shardwalk.walks.fingerprints import FingerprintStore
from shardwalk.walks.graph import CSRGraph
from shardwalk.walks.ppr import Method, PPRIndex

__all__ = [
    "ACCURACY_CANDIDATES",
    "AccuracySetting",
    "calibrate_accuracy",
    "precision_at_k",
    "work_units",
]

log = logging.getLogger(__name__)

# accuracy= with fingerprints. Calibration compares candidates by counted work (PPRResult.work:
# pushed out-edges, fingerprint entries composed, nodes touched), never by wall-clock time,
# so its choice depends only on the graph, the fingerprints and the seed. A setting's latency
# budget becomes a work budget at WORK_NS nanoseconds per unit, a fixed model, not a
# measurement taken at calibration. A unit is one out-edge pushed or one entry composed
# (5-7 ns of CPU each on the 2-core machine of bench/README.md). A node a query touches costs
# one unit while its scratch (about SCRATCH_BYTES_PER_NODE a node) fits a core's cache, and
# TOUCH_UNITS_UNCACHED beyond: its first touch misses the cache in each array it is kept in
# (55-70 ns measured on soc-Epinions1, 76K nodes, by least squares over 12 settings of push,
# fingerprint and hybrid; issue 22's pruned fast query there touched 18K nodes, and the plain
# sum of its units put it at 0.7 ms where it took 2.5).
WORK_NS = 8.0
TOUCH_UNITS_UNCACHED = 8.0
CACHE_BYTES = 1 << 20  # a core's L2
SCRATCH_BYTES_PER_NODE = 45


def work_units(work: np.ndarray, num_nodes: int) -> np.ndarray:
    """The cost of queries in work units (see ``WORK_NS``) from their counted work
    (``PPRResult.work``, (q, 3)): pushed + composed + touched x the touch weight for a graph
    of ``num_nodes`` nodes (1 while a query's scratch fits the cache, else
    ``TOUCH_UNITS_UNCACHED``)."""
    cached = num_nodes * SCRATCH_BYTES_PER_NODE <= CACHE_BYTES
    weights = np.array([1.0, 1.0, 1.0 if cached else TOUCH_UNITS_UNCACHED])
    return np.asarray(work, np.float64) @ weights


@dataclass(frozen=True)
class AccuracySetting:
    """What ``accuracy=<name>`` promises and the candidates calibration chooses from.

    Attributes
    ----------
    precision : float
        The bar: precision@k against the reference on the sampled sources (judged by its
        one-sided 95% lower confidence bound, so a small sample does not pass by luck).
    budget_ms : float
        The latency budget of a query (p50), as counted work at ``WORK_NS`` per unit.
    candidates : tuple of (method, params)
    """

    precision: float
    budget_ms: float
    candidates: tuple[tuple[Method, dict[str, Any]], ...]

    @property
    def work_budget(self) -> int:
        return int(self.budget_ms * 1e6 / WORK_NS)


# Candidates measured with bench/ppr.py on every real graph of ../shared/data and generated
# Holme-Kim graphs (bench/README.md): the hybrid with contribution pruning (``prune``: rows
# composed exactly down to prune x the k-th score, sampled below) answers "fast" at 6-12x less
# work than without, and "high" at about a quarter.
ACCURACY_CANDIDATES: dict[str, AccuracySetting] = {
    "fast": AccuracySetting(
        0.8,
        2.0,
        (
            # (hubs absorbing, r_max 5e-5, prune 0.1: 40% less work, but precision 0.82-0.87
            # with single sources at 0.5-0.66 on four real graphs: too close to the bar)
            ("hybrid", {"r_max": 2e-5, "absorb": False, "prune": 0.1}),
            # coarser pruning: on soc-Epinions1 half the touched nodes of prune 0.1 (the cost
            # of a graph beyond the cache), at 0.83-0.85 against 0.90
            ("hybrid", {"r_max": 2e-5, "absorb": False, "prune": 0.3}),
            ("hybrid", {"r_max": 5e-5, "absorb": False, "prune": 0.3}),
            ("hybrid", {"r_max": 1e-5, "absorb": False, "prune": 0.1}),
            ("hybrid", {"r_max": 1e-5, "absorb": False, "prune": 0.03}),
            ("fingerprint", {"rounds": 5, "threshold": 1e-4}),
        ),
    ),
    "high": AccuracySetting(
        0.95,
        25.0,
        (
            ("hybrid", {"r_max": 3e-6, "absorb": False, "prune": 0.01}),
            ("hybrid", {"r_max": 1e-6, "absorb": False, "prune": 0.01}),
            ("hybrid", {"r_max": 3e-6, "absorb": False}),
            ("push", {"r_max": 1e-6}),
        ),
    ),
}
# the reference of calibration: power iteration to a certified l1 error <= 1e-5 (cheaper than
# push to 1e-7 on social graphs, whose bound is a few percent)
CALIBRATION_REFERENCE: dict[str, Any] = {"method": "exact", "tol": 1e-5}


def precision_at_k(
    found: np.ndarray, found_scores: np.ndarray, ref: np.ndarray, ref_scores: np.ndarray
) -> float:
    """|found & ref| / |ref| over the nodes with a positive score on each side (``ref``: a
    reference top-k). A source that reaches fewer than k nodes is scored over the nodes it
    reaches: padding and zero-score nodes count on neither side."""
    want = set(ref[(ref >= 0) & (ref_scores > 0)].tolist())
    if not want:
        return float("nan")
    got = set(found[(found >= 0) & (found_scores > 0)].tolist())
    return len(got & want) / len(want)


def calibrate_accuracy(
    graph: CSRGraph, store: FingerprintStore, *, sources: int = 24, k: int = 100, seed: int = 0
) -> dict[str, dict[str, Any]]:
    """For each accuracy setting, the method that serves this graph.

    ``sources`` nodes with out-edges are sampled with ``seed``; every candidate of the setting
    (``ACCURACY_CANDIDATES``) answers them, scored by precision@k (:func:`precision_at_k`)
    against power iteration to l1 <= 1e-5 (``CALIBRATION_REFERENCE``) and by its
    counted work (the median over the sources of :func:`work_units`). Among the candidates
    within the work budget,
    the cheapest whose precision reaches the bar (its one-sided 95% lower confidence bound
    does) wins. When none does, the most precise candidate within the budget is taken (the
    cheapest one when none fits the budget) and a warning is logged; ``met`` is False and
    ``note`` says why. The choice depends only on the graph, the fingerprints and ``seed``:
    no clock is read. Kept in the store's stats (``Graph.stats()``).
    """
    index = PPRIndex(graph, store)
    live = np.flatnonzero(np.diff(graph.indptr) > 0)
    out: dict[str, dict[str, Any]] = {}
    if live.size == 0:
        for name, setting in ACCURACY_CANDIDATES.items():
            method, params = setting.candidates[0]
            out[name] = {"method": method, "params": dict(params), "sources": 0}
        return out
    rng = np.random.default_rng(seed)
    picked = graph.to_external(rng.choice(live, size=min(sources, live.size), replace=False))
    queries = [int(s) for s in picked]
    k = min(k, graph.num_nodes)
    ref_method = CALIBRATION_REFERENCE["method"]
    ref_params = {key: v for key, v in CALIBRATION_REFERENCE.items() if key != "method"}
    ref = index.query_batch(queries, k=k, method=ref_method, **ref_params)
    for name, setting in ACCURACY_CANDIDATES.items():
        measured: list[dict[str, Any]] = []
        for method, params in setting.candidates:
            res = index.query_batch(queries, k=k, method=method, **params)
            hits = np.array([
                precision_at_k(res.ids[i], res.scores[i], ref.ids[i], ref.scores[i])
                for i in range(len(queries))
            ])  # fmt: skip
            hits = hits[~np.isnan(hits)]
            mean = float(hits.mean()) if hits.size else 1.0
            spread = float(hits.std(ddof=1)) if hits.size > 1 else 0.0
            lcb = mean - 1.645 * spread / np.sqrt(max(hits.size, 1))
            work = work_units(res.work, graph.num_nodes)
            measured.append({
                "method": method,
                "params": dict(params),
                "precision": mean,
                "precision_lcb": float(lcb),
                "work_p50": int(np.median(work)),
                "work_mean": float(work.mean()),
            })  # fmt: skip
        budget = setting.work_budget
        within = [m for m in measured if m["work_p50"] <= budget]
        good = [m for m in within if m["precision_lcb"] >= setting.precision]
        note = None
        if good:
            chosen = min(good, key=lambda m: m["work_p50"])
        elif within:
            chosen = max(within, key=lambda m: m["precision"])
            note = (
                f"no candidate reached precision@{k} {setting.precision} within the budget of "
                f"{budget} work units ({setting.budget_ms} ms); took the most precise within it"
            )
        else:
            chosen = min(measured, key=lambda m: m["work_p50"])
            note = (
                f"no candidate fits the budget of {budget} work units ({setting.budget_ms} ms); "
                "took the cheapest"
            )
        if note is not None:
            log.warning(
                "accuracy=%r calibration on a graph of %d nodes: %s (%s %s, precision %.3f)",
                name, graph.num_nodes, note, chosen["method"], chosen["params"],
                chosen["precision"],
            )  # fmt: skip
        out[name] = {
            "method": chosen["method"],
            "params": dict(chosen["params"]),
            "precision": chosen["precision"],
            "work_p50": chosen["work_p50"],
            "met": note is None,
            "note": note,
            "precision_bar": setting.precision,
            "work_budget": budget,
            "budget_ms": setting.budget_ms,
            "candidates": measured,
            "reference": f"{ref_method} {ref_params}",
            "sources": len(queries),
            "seed": seed,
            "k": k,
        }
    return out
