"""All input checks of shardwalk.walks in one place.

Kernels do not bounds-check, so every public entry point validates here once: types, ranges,
finite values, known node ids. Messages say what was expected, what came, and a hint.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from shardwalk.errors import InvalidArgumentError

DANGLING_RULES = ("self_loop", "drop", "restart")
DANGLING_MODES = {"self_loop": 0, "drop": 1, "restart": 2}
# the rules fingerprints are built with ("restart" queries compose from a "drop" store)
STORE_RULES = ("self_loop", "drop")


def check_choice(name: str, value: Any, choices: Iterable[str]) -> str:
    choices = tuple(choices)
    if not isinstance(value, str) or value not in choices:
        raise InvalidArgumentError(
            f"{name} must be one of {', '.join(repr(c) for c in choices)}; got {value!r}"
        )
    return value


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


def check_int(name: str, value: Any, *, minimum: int = 0, maximum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise InvalidArgumentError(f"{name} must be an integer >= {minimum}; got {value!r}")
    v = int(value)
    if v < minimum or (maximum is not None and v > maximum):
        rng = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
        raise InvalidArgumentError(f"{name} must be an integer {rng}; got {v}")
    return v


def check_float(
    name: str, value: Any, *, minimum: float = 0.0, inclusive: bool = True, hint: str = ""
) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InvalidArgumentError(f"{name} must be a number; got {value!r}")
    v = float(value)
    ok = math.isfinite(v) and (v >= minimum if inclusive else v > minimum)
    if not ok:
        op = ">=" if inclusive else ">"
        raise InvalidArgumentError(f"{name} must be finite and {op} {minimum}; got {value!r}{hint}")
    return v


def check_seed(seed: Any) -> int:
    """Random seeds are non-negative integers below 2**63."""
    return check_int("seed", seed, minimum=0, maximum=2**63 - 1)


def as_id_array(name: str, values: Any) -> np.ndarray:
    """A 1-D int64 array of node ids (accepts any integer dtype; rejects floats and bools)."""
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise InvalidArgumentError(f"{name} must be 1-D; got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise InvalidArgumentError(
            f"{name} must hold integer node ids; got dtype {arr.dtype} (cast explicitly if the "
            "values are integral)"
        )
    if arr.dtype == np.uint64 and arr.size and arr.max() > np.iinfo(np.int64).max:
        raise InvalidArgumentError(f"{name} holds ids above 2**63 - 1; node ids are int64")
    return np.ascontiguousarray(arr, dtype=np.int64)


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
            ids = as_id_array("seed ids", list(seeds.keys()))
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
    ids = as_id_array("seeds", list(seeds) if not isinstance(seeds, np.ndarray) else seeds)
    if ids.size == 0:
        raise InvalidArgumentError("seeds is empty; give at least one node id")
    return ids, np.full(ids.size, 1.0 / ids.size)
