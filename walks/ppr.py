"""Personalized PageRank queries: fingerprint composition, forward push, exact.

Definitions
-----------
alpha is the stop (teleport) probability. For a personalization vector s (a distribution over
seed nodes) the PPR vector is ``pi_s = sum_j alpha (1 - alpha)^j s^T P^j``: the distribution of
where an alpha-terminated walk started from s stops. P is the row-stochastic transition matrix:
``P[u, v] = w_uv / sum_v' w_uv'`` (1 / outdeg(u) unweighted). PPR is linear in its seeds,
``pi_{sum_i w_i e_i} = sum_i w_i pi_{e_i}`` (weights normalised to sum 1).

Dangling nodes (no out-edges): one rule per query, honoured by every method
-----------------------------------------------------------------------------
``"self_loop"`` (default)
    A dangling node links to itself: a walk that reaches it stays until it stops, so all mass
    reaching it ends there. Mass is conserved (scores sum to 1). Independent of the source, so
    fingerprint composition is exact in expectation.
``"drop"``
    A dangling row of P is zero: a walk reaching the node stops there, and the (1 - alpha)
    share of the mass that would have moved on leaves the system, so scores sum to < 1 (the
    PowerWalk online code's behaviour). Also source-independent and composition-exact.
``"restart"``
    A dangling node links back to the personalization s (networkx's and BiPPR's default; the
    PowerWalk paper's artificial edge back to the source). This depends on the source, but the
    segments of such a walk between restarts are independent drop-rule walks from s, so
    ``pi_restart = pi_drop / ||pi_drop||_1`` exactly. Every method therefore computes the
    drop-rule answer and rescales it; the exact solver iterates the restart chain itself
    (an independent check of the identity). Effect on accuracy: no composition bias, but the
    drop-rule error is amplified by 1 / ||pi_drop||_1 (large when walks often reach dangling
    nodes), and the ratio estimate is slightly biased for the fingerprint method.

alpha and the rule are chosen per query (:class:`PPRIndex` holds the defaults). "exact" and
"push" take any alpha in (0, 1) and any rule. "fingerprint" takes only what its store was built
for: the store's alpha and rule, or "restart" from a "drop" store; otherwise it refuses with
InvalidArgumentError (use "exact" / "push", or rebuild the fingerprints).

Methods
-------
``"fingerprint"`` (PowerWalk VERD composition)
    Push the query mass for T = ``rounds`` synchronous rounds (keep alpha * f at each node,
    spread (1 - alpha) * f over its out-edges), then add ``f(v) * p_hat_v`` for the flow f left
    at each node v, using the stored fingerprints. Flow below ``threshold`` is not pushed: by
    default (``drop_below = threshold``, PowerWalk's pruning) it is dropped; flow in
    [``drop_below``, ``threshold``) is instead composed with its node's fingerprint at once,
    which keeps its mass for the cost of one fingerprint row. Error: an *estimate*, the dropped mass (flow and top-K truncation,
    a certain l1 loss) plus sqrt(2/pi) * sum_x sd(x), the expected l1 deviation under a Poisson
    model of the visit counts. The Monte Carlo part is scaled by (1 - alpha)^T.
``"push"`` (Forward Push, Andersen-Chung-Lang)
    Push until every residual r(u) < r_max * max(outdeg(u), 1). Error: a *bound*, the l1 norm
    of the residual left (times 2 / ||p||_1 under restart).
``"exact"`` (power iteration, Neumann-series form)
    ``x += alpha * v; v <- (1 - alpha) P^T v`` until ``||v||_1 <= tol`` (default 1e-10): a
    *bound* on the l1 error, since the remaining terms sum to at most ||v||_1.

Batches: ``query_batch`` answers many queries in one parallel kernel call that reuses one set of
dense scratch arrays per thread (reset sparsely), so no query pays O(n) set-up.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, cast

import numba
import numpy as np
from shardwalk.walks import _check
from shardwalk.walks.fingerprints import FingerprintStore
from shardwalk.walks.graph import CSRGraph
from shardwalk.walks.kernels.compose import compose_batch, compose_chunk, compose_one
from shardwalk.walks.kernels.exact import exact_batch, exact_chunk, exact_one
from shardwalk.walks.kernels.hybrid import hybrid_batch, hybrid_chunk, hybrid_one
from shardwalk.walks.kernels.push import push_batch, push_chunk, push_one
from shardwalk.walks.kernels.query import (
    STATS_COLUMNS,
    WORK_PUSHED,
    count_runs,
    row_max_count,
    sort_rows_by_count,
)

from shardwalk._deadline import stop_flag
from shardwalk.errors import InvalidArgumentError

__all__ = [
    "HYBRID_R_MAX",
    "METHODS",
    "PPRIndex",
    "PPRResult",
    "personalized_pagerank",
]

METHODS = ("fingerprint", "hybrid", "push", "exact")
HYBRID_R_MAX = 5e-5  # the hybrid method's default push threshold (residual per out-edge)
# The Monte Carlo part of an error estimate is sqrt(2/pi) * sum_x sd(x) (the expected l1 if
# each entry were normal), with sd from the overdispersed variance of full-path counts. It
# still misses the mass of nodes no walk reached; this factor, measured on the real graphs of
# ../shared/data and generated power-law graphs (bench/ppr.py reports the coverage per
# graph), makes the estimate cover the measured l1 in at least 90% of queries.
NOISE_CALIBRATION = 1.75
Method = Literal["fingerprint", "hybrid", "push", "exact"]
_FINGERPRINT_METHODS = ("fingerprint", "hybrid")  # the methods that read the fingerprints


def _check_method(method: object) -> Method:
    """``method`` if it is one of METHODS, else InvalidArgumentError listing them."""
    return cast(Method, _check.check_choice("method", method, METHODS))


@dataclass(frozen=True, kw_only=True)
class PPRResult:
    """Top-k answers of a batch of PPR queries (one row per query).

    Attributes
    ----------
    ids : ndarray int64 (q, k)
        External node ids by decreasing score, padded with -1 when fewer than k nodes score.
    scores : ndarray float32 (q, k)
        PPR estimates, padded with 0.
    error : ndarray float64 (q,)
        l1 error of the whole vector: a bound for "push"/"exact", an estimate for "fingerprint"
        (``error_is_bound`` says which).
    mass : ndarray float64 (q,)
        Sum of the whole estimated vector (1 under self_loop/restart up to the error; < 1 under
        drop).
    error_is_bound : bool
    method : str
        The method that ran ("hybrid", "fingerprint", "push" or "exact"), also when the caller
        let the engine choose (``accuracy=``).
    alpha : float
        The stop probability the query used (the index's default unless given).
    dangling : str
        The dangling rule the query used (the index's default unless given).
    seconds : float
        Wall time of the call.
    params : dict
        The method parameters the engine chose (``accuracy=``) or was given.
    work : ndarray int64 (q, 3)
        The counted work of each query: out-edge updates of pushes (and of the fingerprint
        method's rounds), fingerprint entries composed, nodes touched. It depends only on the
        graph, the fingerprints and the query, never on the machine's load (what
        :func:`shardwalk.walks.calibration.calibrate_accuracy` compares); zeros for "exact".
    """

    ids: np.ndarray
    scores: np.ndarray
    error: np.ndarray
    mass: np.ndarray
    error_is_bound: bool
    method: str
    alpha: float
    dangling: str
    seconds: float
    params: dict[str, Any] = field(default_factory=dict)
    work: np.ndarray = field(default_factory=lambda: np.zeros((0, 3), np.int64))

    def __len__(self) -> int:
        return int(self.ids.shape[0])


class _Scratch:
    """Dense per-thread arrays for the query kernels, reused between calls (kept zeroed), one
    row per chunk of a batch. Named for the fingerprint method's composition (flow pushed round
    by round, then composed); push and hybrid keep their estimates p in ``score``, their
    residuals r (the flow not yet pushed) in ``flow`` and their FIFO queue in ``frontier``."""

    def __init__(self, n: int, chunks: int) -> None:
        self.chunks = chunks
        shape = (chunks, n)
        self.flow = np.zeros(shape, np.float64)  # this round's flow / push's residuals
        self.flow_next = np.zeros(shape, np.float64)  # the next round's flow
        self.score = np.zeros(shape, np.float64)  # the estimates
        self.var = np.zeros(shape, np.float64)  # their MC variance proxy (fingerprint rows)
        idx = np.int32 if n <= np.iinfo(np.int32).max else np.int64
        self.frontier = np.zeros(shape, idx)  # nodes with flow this round / push's queue
        self.frontier_next = np.zeros(shape, idx)  # nodes with flow next round
        self.touched = np.zeros(shape, idx)  # nodes with an estimate (reset after each query)
        self.flag = np.zeros(shape, np.int8)  # push: bit 1 queued, bit 2 touched


class PPRIndex:
    """PPR queries over one graph. alpha and the dangling rule are per query; the index holds
    the defaults.

    Parameters
    ----------
    graph : CSRGraph
    fingerprints : FingerprintStore, optional
        Needed for ``method="fingerprint"``; must be built on ``graph``. Its alpha and rule
        become the index's defaults.
    alpha : float, optional
        Default stop (teleport) probability in (0, 1); default the store's, else 0.15.
    dangling : {"self_loop", "drop", "restart"}, optional
        Default rule; default the store's rule, else "self_loop". With a store, the defaults
        must be ones the store serves (see below), since "fingerprint" is the default method.

    Every query may pass its own ``alpha`` and ``dangling``: "exact" and "push" take any alpha
    in (0, 1) and any rule. "fingerprint" takes only what its store was built for: the store's
    alpha, and its rule ("self_loop" or "drop"), or "restart" from a "drop" store (restart is
    composed from drop); anything else raises InvalidArgumentError naming what the store was
    built with (see :meth:`fingerprint_mismatch`).

    Thread safety: calls may come from several threads; each call takes a scratch set from a
    pool (a new one is allocated when all are busy), so calls never share scratch. Scratch
    costs about 45 bytes per node per query thread, so the pool keeps at most
    ``max_pooled_scratch`` idle sets (the extras of a burst of concurrent calls are freed).

    Examples
    --------
    >>> from shardwalk.walks.graph import CSRGraph
    >>> g = CSRGraph.from_edges([1, 2, 3], [2, 3, 1])   # a directed 3-cycle
    >>> idx = PPRIndex(g, alpha=0.5)
    >>> r = idx.query(1, k=3, method="exact")
    >>> r.ids[0].tolist(), [round(float(x), 4) for x in r.scores[0]]
    ([1, 2, 3], [0.5714, 0.2857, 0.1429])
    >>> r = idx.query(1, k=3, method="exact", alpha=0.25)   # another alpha, same index
    >>> [round(float(x), 4) for x in r.scores[0]]
    [0.4324, 0.3243, 0.2432]
    """

    def __init__(
        self,
        graph: CSRGraph,
        fingerprints: FingerprintStore | None = None,
        *,
        alpha: float | None = None,
        dangling: str | None = None,
    ) -> None:
        if not isinstance(graph, CSRGraph):
            raise InvalidArgumentError(f"graph must be a CSRGraph; got {type(graph).__name__}")
        if fingerprints is not None and not isinstance(fingerprints, FingerprintStore):
            raise InvalidArgumentError(
                f"fingerprints must be a FingerprintStore; got {type(fingerprints).__name__}"
            )
        if fingerprints is not None:
            fingerprints.check_graph(graph)
        default_alpha = fingerprints.alpha if fingerprints is not None else 0.15
        self.alpha = _check.check_alpha(default_alpha if alpha is None else alpha)
        default_rule = fingerprints.dangling if fingerprints is not None else "self_loop"
        self.dangling = _check.check_dangling(default_rule if dangling is None else dangling)
        self.graph = graph
        self.fingerprints = fingerprints
        if fingerprints is not None:
            refusal = self._mismatch(self.alpha, self.dangling)
            if refusal is not None:
                raise InvalidArgumentError(refusal)
        self._indptr = np.ascontiguousarray(graph.indptr)
        self._indices = np.ascontiguousarray(graph.indices)
        self._probs = graph.transition_probs()
        if fingerprints is not None:
            self._fp = (
                np.ascontiguousarray(fingerprints.indptr),
                np.ascontiguousarray(fingerprints.nodes),
                np.ascontiguousarray(fingerprints.counts),
                fingerprints.scale,
                np.zeros(0, np.float32)
                if fingerprints.truncated is None
                else np.ascontiguousarray(fingerprints.truncated),
                *_hub_arrays(fingerprints),
            )
            # the fingerprint method composes with the R-walk rows only: hub rows (thousands
            # of entries) would cost more than they add where T push rounds pass hubs anyway
            # (measured on soc-Epinions1: 2.6 against 4.4 ms per query)
            self._fp_rows = (*self._fp[:5], np.zeros(0, np.int32), *self._fp[6:])
        self._fp_hybrid: tuple | None = None  # the hybrid's arrays, prepared on first use
        self._pool: list[_Scratch] = []  # idle scratch, most recently used last
        self._lock = threading.Lock()
        # One idle set per core serves as many concurrent calls as can run at once; more would
        # only hold memory (a 10M-node graph: ~450 MB per set).
        self.max_pooled_scratch = max(1, numba.config.NUMBA_NUM_THREADS)

    # ----------------------------------------------------------------------------- alpha, rule

    def _resolve(self, alpha: Any, dangling: Any) -> tuple[float, str]:
        """A query's (alpha, rule): the given ones, checked, or the index's defaults."""
        a = self.alpha if alpha is None else _check.check_alpha(alpha)
        rule = self.dangling if dangling is None else _check.check_dangling(dangling)
        return a, rule

    def _mismatch(self, alpha: float, rule: str) -> str | None:
        fp = self.fingerprints
        if fp is None:
            return (
                "method='fingerprint' needs fingerprints: PPRIndex(graph, build_fingerprints(graph)) "
                "(or use method='push' / 'exact')"
            )
        built = f"the fingerprints were built with alpha={fp.alpha}, dangling={fp.dangling!r}"
        hint = "use method='exact' or method='push' (any alpha and rule)"
        if abs(fp.alpha - alpha) > 1e-12:
            return (
                f"method='fingerprint' cannot answer alpha={alpha}: {built}; {hint}, or rebuild "
                f"the fingerprints with alpha={alpha}"
            )
        need = "drop" if rule == "restart" else rule  # restart is composed from drop
        if fp.dangling != need:
            return (
                f"method='fingerprint' cannot answer dangling={rule!r}: it needs fingerprints "
                f"built with dangling={need!r}, and {built}; {hint}, or rebuild the fingerprints "
                f"with dangling={need!r}"
            )
        return None

    def fingerprint_mismatch(
        self, alpha: float | None = None, dangling: str | None = None
    ) -> str | None:
        """Why ``method="fingerprint"`` cannot answer queries with this alpha and dangling rule
        (None: the index's defaults), as the message it would raise; None when it can.

        Raises
        ------
        InvalidArgumentError
            ``alpha`` or ``dangling`` is itself invalid.
        """
        return self._mismatch(*self._resolve(alpha, dangling))

    def check_query(
        self,
        method: Method = "fingerprint",
        *,
        alpha: float | None = None,
        dangling: str | None = None,
        **params: Any,
    ) -> tuple[float, str]:
        """Check a query's method, alpha, rule and parameters without running one (seeds and
        k aside): raises what :meth:`query` would raise for them; returns (alpha, rule) the
        query would use."""
        method = _check_method(method)
        alpha, rule, _ = self._prepare(method, alpha, dangling, dict(params))
        return alpha, rule

    def _prepare(
        self, method: str, alpha: Any, dangling: Any, params: dict[str, Any]
    ) -> tuple[float, str, tuple]:
        """Check a call's alpha, rule, whether ``method`` serves them, and its parameters."""
        alpha, rule = self._resolve(alpha, dangling)
        if method in _FINGERPRINT_METHODS:
            refusal = self._mismatch(alpha, rule)
            if refusal is not None:
                raise InvalidArgumentError(refusal.replace("'fingerprint'", repr(method)))
            args: tuple = (
                self._fingerprint_params(params)
                if method == "fingerprint"
                else self._hybrid_params(params)
            )
        elif method == "push":
            args = (self._push_params(params),)
        else:
            args = self._exact_params(params)
        return alpha, rule, args

    # ----------------------------------------------------------------------------- seeds

    def _seed_arrays(self, queries: Sequence[Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        ptr = [0]
        nodes, weights = [], []
        for q in queries:
            ids, w = _check.seed_spec_to_arrays(q)
            nonzero = w > 0  # zero-weight seeds must be known nodes but carry no mass
            self.graph.to_internal(ids, what="seed")
            ids, w = ids[nonzero], w[nonzero]
            nodes.append(self.graph.to_internal(ids, what="seed"))
            weights.append(w)
            ptr.append(ptr[-1] + ids.size)
        return (
            np.asarray(ptr, np.int64),
            np.concatenate(nodes) if nodes else np.zeros(0, np.int64),
            np.concatenate(weights) if weights else np.zeros(0, np.float64),
        )

    # ----------------------------------------------------------------------------- scratch

    def _take(self, chunks: int) -> _Scratch:
        with self._lock:
            for i in range(len(self._pool) - 1, -1, -1):
                if self._pool[i].chunks == chunks:
                    return self._pool.pop(i)
        return _Scratch(self.graph.num_nodes, chunks)

    def _give(self, s: _Scratch) -> None:
        """Return scratch after a call that completed (the kernels left it zeroed); the
        least recently used sets beyond ``max_pooled_scratch`` are freed."""
        with self._lock:
            self._pool.append(s)
            del self._pool[: max(0, len(self._pool) - self.max_pooled_scratch)]

    @contextlib.contextmanager
    def _scratch(self, chunks: int) -> Iterator[_Scratch]:
        """Scratch for one call. A call that fails may leave it dirty: it is dropped, never
        pooled (a later query would start from its leftovers)."""
        s = self._take(chunks)
        yield s
        self._give(s)  # not reached when the body raised

    # ----------------------------------------------------------------------------- queries

    def query(
        self,
        seeds: Any,
        *,
        k: int = 100,
        method: Method = "fingerprint",
        alpha: float | None = None,
        dangling: str | None = None,
        **params: Any,
    ) -> PPRResult:
        """One PPR query; the result has one row.

        Parameters
        ----------
        seeds : int, sequence of int, or mapping {int: float}
            One node, several nodes (equal weights), or a personalization {node: weight}
            (weights >= 0, normalised to sum 1). External ids.
        k : int
            Number of top nodes to return (padded with -1 / 0 if fewer score).
        method : {"fingerprint", "push", "exact"}
        alpha : float, optional
            Stop (teleport) probability in (0, 1); default the index's. "fingerprint" takes
            only its store's alpha.
        dangling : {"self_loop", "drop", "restart"}, optional
            Default the index's. "fingerprint" takes only its store's rule, or "restart" from a
            "drop" store.
        **params
            ``rounds`` (T, default 5), ``threshold`` (default 1e-4) and ``drop_below``
            (default = threshold) for "fingerprint";
            ``r_max`` (default 5e-5), ``absorb`` (True), ``drop_below`` (0) and ``prune``
            (0: compose every row whole) for "hybrid";
            ``r_max`` (default 1e-6) for "push"; ``tol`` (default 1e-10) and ``max_iter``
            (default 10000) for "exact".

        Raises
        ------
        InvalidArgumentError
            Empty seeds, negative weights, bad k, alpha, rule or parameters; "fingerprint"
            without a store, or with an alpha or rule its store was not built for.
        NotFoundError
            A seed is not a node of the graph.
        """
        return self.query_batch(
            [seeds], k=k, method=method, alpha=alpha, dangling=dangling, **params
        )

    def query_batch(
        self,
        queries: Sequence[Any] | np.ndarray,
        *,
        k: int = 100,
        method: Method = "fingerprint",
        alpha: float | None = None,
        dangling: str | None = None,
        **params: Any,
    ) -> PPRResult:
        """Many queries in one parallel kernel call; row i answers ``queries[i]``.

        ``queries`` is a sequence of seed specifications (see :meth:`query`), or a 1-D integer
        array of single-node queries. Other arguments as in :meth:`query`.
        """
        t0 = time.perf_counter()
        method = _check_method(method)
        k = _check.check_k(k)
        if isinstance(queries, (str, bytes, Mapping)) or not isinstance(
            queries, (Sequence, np.ndarray)
        ):
            raise InvalidArgumentError(
                "queries must be a sequence of seed specifications (ids, lists or mappings); "
                f"got {type(queries).__name__} (use query() for a single query)"
            )
        if isinstance(queries, np.ndarray):
            queries = [int(x) for x in _check.as_ids(queries, what="queries")]
        if len(queries) == 0:
            raise InvalidArgumentError("queries is empty; give at least one query")
        q_ptr, q_nodes, q_w = self._seed_arrays(queries)
        alpha, rule, args = self._prepare(method, alpha, dangling, params)
        nq = len(queries)
        ids = np.empty((nq, k), np.int64)
        scores = np.empty((nq, k), np.float32)
        runs: dict[str, Callable[..., tuple[np.ndarray, np.ndarray, np.ndarray]]] = {
            "fingerprint": self._run_fingerprint,
            "hybrid": self._run_hybrid,
            "push": self._run_push,
        }
        run = runs.get(method, self._run_exact)
        mass, error, work = run(q_ptr, q_nodes, q_w, k, ids, scores, alpha, rule, *args)
        if rule == "restart" and method != "exact":
            # the kernels ran the drop rule; restart = drop / its mass (module docstring)
            safe = np.where(mass > 0, mass, 1.0)
            scores[:] = (scores / safe[:, None]).astype(np.float32)
            error = 2.0 * error / safe
            mass = np.where(mass > 0, 1.0, 0.0)
        ids = self.graph.to_external(ids)
        return PPRResult(
            ids=ids,
            scores=scores,
            error=error,
            mass=mass,
            error_is_bound=method not in _FINGERPRINT_METHODS,
            method=method,
            alpha=alpha,
            dangling=rule,
            seconds=time.perf_counter() - t0,
            work=work,
        )

    def vector(
        self,
        seeds: Any,
        *,
        method: Method = "fingerprint",
        alpha: float | None = None,
        dangling: str | None = None,
        k: int = 100,
        **params: Any,
    ) -> tuple[np.ndarray, np.ndarray, float]:
        """The whole estimated PPR vector of one query, sparse and in float64:
        (external ids, scores, error as in :class:`PPRResult`). Used by the accuracy harness.
        Arguments as in :meth:`query` (``k`` matters only to the hybrid's ``prune``, which
        composes what can move the top k)."""
        method = _check_method(method)
        k = _check.check_k(k)
        _, q_nodes, q_w = self._seed_arrays([seeds])
        alpha, rule, args = self._prepare(method, alpha, dangling, params)
        g = self.graph
        if method == "exact":
            tol, max_iter = args
            with stop_flag("exact PPR") as stop:
                x, tail, _ = exact_one(
                    self._indptr, self._indices, self._probs, g.weighted, q_nodes, q_w,
                    alpha, tol, max_iter, _check.DANGLING_MODES[rule], stop,
                )  # fmt: skip
            nz = np.flatnonzero(x)
            return g.to_external(nz), x[nz], float(tail)
        mode = _walk_mode(rule)
        with self._scratch(1) as s:
            if method == "push":
                (r_max,) = args
                with stop_flag("push PPR") as stop:
                    nt, err, _ = push_one(
                        self._indptr, self._indices, self._probs, g.weighted, q_nodes, q_w,
                        alpha, r_max, mode, s.score[0], s.flow[0], s.frontier[0], s.flag[0], s.touched[0],
                        stop,
                        np.zeros(3, np.int64),
                    )  # fmt: skip
                touched = s.touched[0][:nt].copy()
                vals = s.score[0][touched].copy()
                s.score[0][touched] = 0.0
            else:
                if method == "hybrid":
                    r_max, absorb, drop, prune = args
                    score = s.score[0]
                    with stop_flag("hybrid PPR") as stop:
                        nt, dropped, _ = hybrid_one(
                            self._indptr, self._indices, self._probs, g.weighted,
                            *self._hybrid_arrays(), q_nodes, q_w, alpha, r_max, absorb, drop,
                            prune, k, mode, score, s.flow[0], s.var[0], s.frontier[0], s.flag[0],
                            s.touched[0],
                            stop, np.zeros(3, np.int64),
                        )  # fmt: skip
                else:
                    rounds, thr, drop = args
                    score = s.score[0]
                    nt, dropped, _ = compose_one(
                        self._indptr, self._indices, self._probs, g.weighted, *self._fp_rows,
                        q_nodes, q_w, alpha, rounds, thr, drop, mode,
                        s.flow[0], s.flow_next[0], score, s.var[0], s.frontier[0], s.frontier_next[0],
                        s.touched[0],
                        np.zeros(3, np.int64),
                    )  # fmt: skip
                touched = s.touched[0][:nt].copy()
                vals = score[touched].copy()
                noise = float(np.sqrt(s.var[0][touched]).sum()) * np.sqrt(2.0 / np.pi)
                noise *= NOISE_CALIBRATION
                score[touched] = 0.0
                s.var[0][touched] = 0.0
                err = dropped + noise
        if rule == "restart":
            mass = vals.sum()
            if mass > 0:
                vals = vals / mass
                err = 2.0 * err / mass
        return g.to_external(touched), vals, float(err)

    # ----------------------------------------------------------------------------- methods

    @staticmethod
    def _no_extra(method: str, params: dict[str, Any], allowed: tuple[str, ...]) -> None:
        extra = sorted(set(params) - set(allowed))
        if extra:
            raise InvalidArgumentError(
                f"method {method!r} takes parameters {', '.join(allowed)}; got unexpected {', '.join(extra)}"
            )

    def _chunks(self, nq: int) -> int:
        return max(1, min(numba.get_num_threads(), nq))

    def _run_fingerprint(self, q_ptr, q_nodes, q_w, k, ids, scores, alpha, rule, rounds, thr, drop):
        nq = q_ptr.size - 1
        out = np.empty((nq, STATS_COLUMNS), np.float64)
        with self._scratch(self._chunks(nq)) as s:
            args = (
                self._indptr, self._indices, self._probs, self.graph.weighted, *self._fp_rows,
                q_ptr, q_nodes, q_w, alpha, rounds, thr, drop, _walk_mode(rule), k,
                s.flow, s.flow_next, s.score, s.var, s.frontier, s.frontier_next, s.touched, ids,
                scores, out,
            )  # fmt: skip
            if s.chunks == 1:  # no parallel region: no wait for a busy core
                compose_chunk(0, 1, *args)
            else:
                compose_batch(*args)
        mass, dropped, noise = out[:, 0], out[:, 1], out[:, 3]
        return mass, dropped + NOISE_CALIBRATION * noise, _work(out)

    def _run_hybrid(
        self, q_ptr, q_nodes, q_w, k, ids, scores, alpha, rule, r_max, absorb, drop, prune
    ):
        nq = q_ptr.size - 1
        out = np.empty((nq, STATS_COLUMNS), np.float64)
        fp = self._hybrid_arrays()
        with self._scratch(self._chunks(nq)) as s, stop_flag("hybrid PPR") as stop:
            args = (
                self._indptr, self._indices, self._probs, self.graph.weighted, *fp,
                q_ptr, q_nodes, q_w, alpha, r_max, absorb, drop, prune, _walk_mode(rule), k,
                s.score, s.flow, s.var, s.frontier, s.flag, s.touched, ids, scores, out, stop,
            )  # fmt: skip
            if s.chunks == 1:
                hybrid_chunk(0, 1, *args)
            else:
                hybrid_batch(*args)
        mass, dropped, noise = out[:, 0], out[:, 1], out[:, 3]
        return mass, dropped + NOISE_CALIBRATION * noise, _work(out)

    def _hybrid_arrays(self) -> tuple:
        """The fingerprint arrays of the hybrid kernel: ``self._fp`` with each hub row's
        entries sorted by count (descending), per row the largest R-walk count, and the hub
        rows' runs of equal count (for contribution pruning, ``kernels.hybrid.hybrid_one``). Prepared on
        first use (one parallel pass over the store), then kept."""
        fp = self._fp_hybrid
        if fp is None:
            with self._lock:
                if self._fp_hybrid is None:
                    f = self._fp
                    hub_nodes, hub_counts, _ = sort_rows_by_count(f[6], f[7], f[8])
                    runs = count_runs(f[6], hub_counts)
                    row_max = row_max_count(f[0], f[2])
                    self._fp_hybrid = (
                        *f[:7], hub_nodes, hub_counts, *f[9:], row_max, *runs,
                    )  # fmt: skip
                fp = self._fp_hybrid
        return fp

    def _hybrid_params(self, params):
        self._no_extra("hybrid", params, ("r_max", "absorb", "drop_below", "prune"))
        r_max = _check.check_float(
            "r_max", params.get("r_max", HYBRID_R_MAX), minimum=0.0, inclusive=False
        )
        absorb = params.get("absorb", True)
        if not isinstance(absorb, bool | np.bool_):
            raise InvalidArgumentError(f"absorb must be True or False; got {absorb!r}")
        drop = _check.check_float("drop_below", params.get("drop_below", 0.0), minimum=0.0)
        prune = _check.check_float("prune", params.get("prune", 0.0), minimum=0.0)
        return r_max, bool(absorb), drop, prune

    def _run_push(self, q_ptr, q_nodes, q_w, k, ids, scores, alpha, rule, r_max):
        nq = q_ptr.size - 1
        out = np.empty((nq, STATS_COLUMNS), np.float64)
        with self._scratch(self._chunks(nq)) as s, stop_flag("push PPR") as stop:
            args = (
                self._indptr, self._indices, self._probs, self.graph.weighted,
                q_ptr, q_nodes, q_w, alpha, r_max, _walk_mode(rule), k,
                s.score, s.flow, s.frontier, s.flag, s.touched, ids, scores, out, stop,
            )  # fmt: skip
            if s.chunks == 1:
                push_chunk(0, 1, *args)
            else:
                push_batch(*args)
        return out[:, 0], out[:, 1], _work(out)

    def _fingerprint_params(self, params):
        self._no_extra("fingerprint", params, ("rounds", "threshold", "drop_below"))
        rounds = _check.check_int("rounds", params.get("rounds", 5), minimum=0, maximum=10_000)
        thr = _check.check_float("threshold", params.get("threshold", 1e-4), minimum=0.0)
        drop = params.get("drop_below")
        drop = thr if drop is None else _check.check_float("drop_below", drop, minimum=0.0)
        if drop > thr:
            raise InvalidArgumentError(
                f"drop_below must be <= threshold; got drop_below={drop}, threshold={thr}"
            )
        return rounds, thr, drop

    def _push_params(self, params):
        self._no_extra("push", params, ("r_max",))
        return _check.check_float("r_max", params.get("r_max", 1e-6), minimum=0.0, inclusive=False)

    def _exact_params(self, params):
        self._no_extra("exact", params, ("tol", "max_iter"))
        tol = _check.check_float("tol", params.get("tol", 1e-10), minimum=0.0, inclusive=False)
        max_iter = _check.check_int("max_iter", params.get("max_iter", 10_000), minimum=1)
        return tol, max_iter

    def _run_exact(self, q_ptr, q_nodes, q_w, k, ids, scores, alpha, rule, tol, max_iter):
        nq = q_ptr.size - 1
        out = np.empty((nq, 3), np.float64)
        with stop_flag("exact PPR") as stop:
            args = (
                self._indptr, self._indices, self._probs, self.graph.weighted,
                q_ptr, q_nodes, q_w, alpha, tol, max_iter,
                _check.DANGLING_MODES[rule], k, ids, scores, out, stop,
            )  # fmt: skip
            if nq == 1:
                exact_chunk(0, 1, *args)
            else:
                exact_batch(*args, self._chunks(nq))
        return out[:, 0], out[:, 1], np.zeros((nq, 3), np.int64)


def _hub_arrays(store: FingerprintStore) -> tuple:
    """(hub_pos, hub_indptr, hub_nodes, hub_counts, hub_scale, var_factor) for the kernels:
    hub_pos[u] is u's row among the hub rows, -1 for nodes without one (every node when there
    are none); var_factor[x] = 2 G_xx - 1 (see ``kernels.compose._add_row``), G_xx = the
    visits of x in its own row per walk (its hub row when it has one), at least 1."""
    n = store.num_nodes
    hub_pos = np.full(n, -1, np.int32)
    own = _self_visits(store.indptr, store.nodes, store.counts, store.walks_per_node)
    if store.num_hubs == 0:
        hub = (np.zeros(1, np.int64), np.zeros(0, np.int32), np.zeros(0, np.uint16), 0.0)
    else:
        hubs = np.asarray(store.hubs)
        hub_pos[hubs] = np.arange(store.num_hubs, dtype=np.int32)
        h_ip, h_nodes, h_counts = store.hub_indptr, store.hub_nodes, store.hub_counts
        assert h_ip is not None and h_nodes is not None and h_counts is not None  # hubs: rows
        own[hubs] = _self_visits(h_ip, h_nodes, h_counts, store.hub_walks, rows=hubs)
        hub = (
            np.ascontiguousarray(store.hub_indptr),
            np.ascontiguousarray(store.hub_nodes),
            np.ascontiguousarray(store.hub_counts),
            store.alpha / store.hub_walks,
        )
    return (hub_pos, *hub, 2.0 * np.maximum(own, 1.0) - 1.0)


def _self_visits(
    indptr: np.ndarray, nodes: np.ndarray, counts: np.ndarray, walks: int, rows: Any = None
) -> np.ndarray:
    """Per row, the visits of the row's own node per walk (0 where it has no entry)."""
    owner = np.repeat(
        np.arange(indptr.size - 1) if rows is None else np.asarray(rows), np.diff(indptr)
    )
    mine = np.asarray(nodes) == owner
    out = np.zeros(indptr.size - 1, np.float64)
    out[np.searchsorted(indptr, np.flatnonzero(mine), side="right") - 1] = (
        np.asarray(counts)[mine] / walks
    )
    return out


def _work(out: np.ndarray) -> np.ndarray:
    """The counted-work columns of a kernel's ``out_stats`` as int64 (q, 3)."""
    return out[:, WORK_PUSHED : WORK_PUSHED + 3].astype(np.int64)


def _walk_mode(rule: str) -> int:
    """The kernels' dangling mode for push and composition: restart runs as drop, rescaled."""
    return _check.DANGLING_MODES["drop" if rule == "restart" else rule]


def personalized_pagerank(
    graph: CSRGraph,
    seeds: Any,
    *,
    k: int = 100,
    method: Method = "exact",
    fingerprints: FingerprintStore | None = None,
    alpha: float | None = None,
    dangling: str | None = None,
    **params: Any,
) -> PPRResult:
    """One-off PPR query (see :class:`PPRIndex`; keep an index for repeated queries, it reuses
    its scratch arrays). Parameters as in :meth:`PPRIndex.query`."""
    return PPRIndex(graph, fingerprints).query(
        seeds, k=k, method=method, alpha=alpha, dangling=dangling, **params
    )
