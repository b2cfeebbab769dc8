"""Numba kernels of shardwalk.walks, one module per algorithm: module-level functions on arrays
and scalars.

No classes, no validation, no I/O: every caller checks its inputs once (``_check.py``) before
calling here, because numba does not bounds-check. Seeds are passed in.

Modules
-------
* ``rng``: the counter-based generator and the dangling rules' codes; ``alias``: transition
  probabilities and alias tables; ``bitmap``: node bitmaps.
* ``walks``: walks from sources and the fingerprints built from them.
* the PPR query methods, each an algorithm for one query (``*_one``), the same over one
  chunk's share of a batch (``*_chunk``, serial: the single-query path) and over all chunks
  in parallel (``*_batch``): ``push``, ``compose`` (fingerprint), ``hybrid``, ``exact``;
  ``query`` holds what they share (top-k, statistics columns, row preparations).
* ``fastrp``; ``repair`` (kept walks repaired after graph updates) and ``visit_index`` (their
  node -> walks index); ``sharded`` (walk rounds over graph shards, walks/distributed.py).

Conventions shared by every kernel
----------------------------------
* A graph is CSR: ``indptr`` (n+1,) int64, ``indices`` (nnz,) int32 (int64 for huge graphs).
* ``weighted`` selects the weighted path. Weighted walks use per-row alias tables
  (``alias_prob`` float32, ``alias_idx`` int32 offsets inside the row); pushes use ``probs``
  (float64 transition probabilities w_uv / sum_v w_uv). Unweighted kernels receive empty arrays
  for these, so each kernel compiles once for both cases.
* ``mode`` is the dangling rule: 0 = self_loop (a node without out-edges keeps its mass or walk),
  1 = drop (the walk ends there and the (1 - alpha) share of its mass leaves the system),
  2 = restart (the walk jumps back to where it started; only the walk kernels and the exact
  solver use it, the other solvers compute restart as drop followed by renormalisation).
* Random numbers come from a counter-based generator: draw ``i`` of walk ``w`` from source ``s``
  is ``mix64(key(seed, s, w) + i * GAMMA)`` (SplitMix64's output function over a counter), so a
  walk depends only on (seed, source, walk index), never on the thread that ran it.
* alpha is the stop (teleport) probability; a walk's number of visits L is drawn up front from
  the geometric law P(L = l) = (1 - alpha)^(l-1) alpha, which is equivalent to stopping with
  probability alpha after each visit.
"""
