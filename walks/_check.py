"""The input checks only graphs and PPR have: alpha, dangling rules, edge weights, seeds.

Kernels do not bounds-check, so every public entry point validates once: types, ranges, finite
values, known node ids. The checks shared with collections (ids, k, integers, choices) are
``shardwalk.validation``'s, re-exported here, so both sides judge an input by one rule.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from shardwalk.errors import InvalidArgumentError
from shardwalk.validation import (
    as_ids,
    check_choice,
    check_float,
    check_int,
    check_k,
    check_seed,
)

__all__ = [
    "DANGLING_MODES",
    "DANGLING_RULES",
    "STORE_RULES",
    "as_ids",
    "check_alpha",
    "check_choice",
    "check_dangling",
    "check_float",
    "check_int",
    "check_k",
    "check_seed",
    "check_store_dangling",
    "check_weights",
    "seed_spec_to_arrays",
]

DANGLING_RULES = ("self_loop", "drop", "restart")
DANGLING_MODES = {"self_loop": 0, "drop": 1, "restart": 2}
# the rules fingerprints are built with ("restart" queries compose from a "drop" store)
STORE_RULES = ("self_loop", "drop")


def check_alpha(alpha: Any) -> float:
    """alpha is the stop (teleport) probability: a finite real number strictly between 0 and 1.

    Every bad value (wrong type, bool, nan, inf, out of range) gets the same message.
    """
    a = math.nan
    if not isinstance(alpha, (bool, np.bool_)) and isinstance(alpha, numbers.Real):
        try:
            a = float(alpha)
        except OverflowError:  # an int or Fraction beyond float range
            pass
    if not (math.isfinite(a) and 0.0 < a < 1.0):
        raise InvalidArgumentError(
            f"alpha is the stop (teleport) probability and must be in (0, 1); got {alpha!r} "
            "(a damping factor d such as networkx's alpha=0.85 corresponds to alpha = 1 - d = 0.15)"
        )
    return a


def check_weights(weights: Any, n_edges: int, *, name: str = "edge weights") -> np.ndarray:
    """Finite, strictly positive weights, one per edge; returned as float64."""
    w = np.asarray(weights)
    if w.ndim != 1 or w.shape[0] != n_edges:
        raise InvalidArgumentError(f"{name} must have shape ({n_edges},); got {w.shape}")
    if w.size and not (np.issubdtype(w.dtype, np.floating) or np.issubdtype(w.dtype, np.integer)):
        raise InvalidArgumentError(f"{name} must be numeric; got dtype {w.dtype}")
    w = w.astype(np.float64, copy=False)
    bad = ~(np.isfinite(w) & (w > 0))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise InvalidArgumentError(
            f"{name} must be finite and > 0; got {float(w[i])!r} at edge {i} ({int(bad.sum())} bad in "
            "total; signed graphs need a transform by the caller, e.g. weights - min + 1, "
            "or drop the non-positive edges)"
        )
    return w


def check_dangling(dangling: Any) -> str:
    """A query's dangling rule: one of DANGLING_RULES."""
    return check_choice("dangling", dangling, DANGLING_RULES)


def check_store_dangling(dangling: Any) -> str:
    """The dangling rule fingerprints are built with: one of STORE_RULES. "restart" is refused
    because restart walks depend on the source and would not compose; a "drop" store serves
    restart queries instead (restart = drop / its mass, see ``ppr.py``)."""
    if dangling == "restart":
        raise InvalidArgumentError(
            "fingerprints cannot be built with dangling='restart': fingerprints for restart are "
            "built with dangling='drop'; queries with dangling='restart' compose from them"
        )
    return check_choice("dangling", dangling, STORE_RULES)


def seed_spec_to_arrays(seeds: Any) -> tuple[np.ndarray, np.ndarray]:
    """One query's seeds -> (external ids int64, weights float64 summing to 1).

    Accepts a node id, a sequence/array of ids (equal weights), or a {node: weight} mapping
    (a personalization vector; weights finite, >= 0, not all 0, normalised to sum 1).
    Repeated ids add their weights.
    """
    if isinstance(seeds, Mapping):
        if not seeds:
            raise InvalidArgumentError("seeds is empty; give at least one node id")
        try:
            ids = as_ids(list(seeds.keys()), what="seed ids")
        except (TypeError, ValueError) as exc:  # pragma: no cover - numpy message varies
            raise InvalidArgumentError(f"seed ids must be integers; got {list(seeds)[:3]}") from exc
        w = np.asarray(list(seeds.values()))
        if not (np.issubdtype(w.dtype, np.floating) or np.issubdtype(w.dtype, np.integer)):
            raise InvalidArgumentError(
                f"seed weights must be numbers; got {list(seeds.values())[:3]}"
            )
        w = w.astype(np.float64)
        bad = ~(np.isfinite(w) & (w >= 0))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise InvalidArgumentError(
                f"seed weights must be finite and >= 0; got {float(w[i])!r} for node {ids[i]} "
                "(a personalization vector is a distribution over seeds)"
            )
        total = w.sum()
        if not total > 0:
            raise InvalidArgumentError("seed weights are all 0; at least one must be > 0")
        return ids, w / total
    if isinstance(seeds, (bool, np.bool_)):
        raise InvalidArgumentError(f"seeds must be a node id, ids or a mapping; got {seeds!r}")
    if isinstance(seeds, numbers.Integral):
        return np.array([int(seeds)], np.int64), np.ones(1)
    if isinstance(seeds, (str, bytes)) or not isinstance(seeds, (Iterable, np.ndarray)):
        raise InvalidArgumentError(
            f"seeds must be a node id, a list of ids or a {{node: weight}} mapping; got {type(seeds).__name__}"
        )
    ids = as_ids(list(seeds) if not isinstance(seeds, np.ndarray) else seeds, what="seeds")
    if ids.size == 0:
        raise InvalidArgumentError("seeds is empty; give at least one node id")
    return ids, np.full(ids.size, 1.0 / ids.size)
