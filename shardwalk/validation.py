"""All input checks of the public API, in one place, run once at the boundary.

Kernels and indexes trust their inputs (numba does not bounds-check); everything a user passes
comes through here first and leaves as C-contiguous arrays of the right dtype, or raises an
error that says what was expected, what came, and a hint. A leaf module (it imports only
``shardwalk.errors``): the collection side and ``shardwalk.walks`` share these checks, so ids,
k, integers and choices are judged by one rule with one message (walks/_check.py adds the
checks only graphs have: alpha, dangling rules, edge weights, seed mappings).
"""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from shardwalk.errors import InvalidArgumentError, ResourceExhaustedError

__all__ = [
    "MAX_K",
    "METRICS",
    "as_ids",
    "check_choice",
    "check_float",
    "check_ids",
    "check_int",
    "check_seed",
    "check_index_params",
    "check_k",
    "check_name",
    "check_vectors",
    "edge_pairs",
]

METRICS = ("l2", "ip", "cosine")
MAX_K = 100_000  # results are (n, k) arrays: a larger k is almost surely a mistake
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


def check_choice(what: str, value: Any, choices: Iterable[str]) -> str:
    choices = tuple(choices)
    if not isinstance(value, str) or value not in choices:
        raise InvalidArgumentError(
            f"{what} must be one of {', '.join(repr(c) for c in choices)}; got {value!r}"
        )
    return value


def check_int(what: str, value: Any, *, minimum: int = 0, maximum: int | None = None) -> int:
    """An integer (not a bool) in [minimum, maximum]."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise InvalidArgumentError(f"{what} must be an integer >= {minimum}; got {value!r}")
    v = int(value)
    if v < minimum or (maximum is not None and v > maximum):
        bounds = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
        raise InvalidArgumentError(f"{what} must be an integer {bounds}; got {v}")
    return v


def check_float(
    what: str, value: Any, *, minimum: float = 0.0, inclusive: bool = True, hint: str = ""
) -> float:
    """A finite real number (not a bool) >= minimum (> minimum if not ``inclusive``)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise InvalidArgumentError(f"{what} must be a number; got {value!r}")
    v = float(value)
    if not (math.isfinite(v) and (v >= minimum if inclusive else v > minimum)):
        op = ">=" if inclusive else ">"
        raise InvalidArgumentError(f"{what} must be finite and {op} {minimum}; got {value!r}{hint}")
    return v


def check_seed(seed: Any) -> int:
    """Random seeds are non-negative integers below 2**63."""
    return check_int("seed", seed, minimum=0, maximum=2**63 - 1)


def check_name(what: str, name: Any) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise InvalidArgumentError(
            f"{what} name must be 1-128 characters of letters, digits, '_', '.', '-', starting "
            f"with a letter or digit; got {name!r}"
        )
    return name


def _preview(values: np.ndarray, limit: int = 5) -> str:
    shown = ", ".join(str(v) for v in values[:limit].tolist())
    return shown + (f", ... ({values.size} in all)" if values.size > limit else "")


def as_ids(
    values: Any, *, what: str = "ids", distinct: bool = False, allow_empty: bool = True
) -> np.ndarray:
    """A 1-D C-contiguous int64 array of non-negative ids (a scalar becomes one id).

    One rule for collection ids and graph node ids (they share one id space, so kNN hits can
    seed PPR): integer dtypes only (floats are refused, not rounded: cast explicitly), within
    int64, never negative (-1 marks padding in results).
    """
    arr = np.asarray(values)
    if arr.ndim == 0:
        arr = arr.reshape(1)
    if arr.ndim != 1:
        raise InvalidArgumentError(
            f"{what} must be a 1-D sequence of integers; got shape {arr.shape}"
        )
    if arr.size == 0:
        if allow_empty:
            return np.zeros(0, dtype=np.int64)
        raise InvalidArgumentError(f"{what} is empty; pass at least one id")
    if arr.dtype.kind not in "iu":
        hint = (
            "; cast with .astype(np.int64) if the values are whole numbers"
            if arr.dtype.kind == "f"
            else ""
        )
        raise InvalidArgumentError(
            f"{what} must be integers (int64); got dtype {arr.dtype} (first values: "
            f"{_preview(arr)}){hint}"
        )
    if arr.dtype == np.uint64 and np.any(arr > np.iinfo(np.int64).max):
        raise InvalidArgumentError(f"{what} must fit in int64; got values above 2**63-1")
    arr = np.ascontiguousarray(arr, dtype=np.int64)
    negative = arr[arr < 0]
    if negative.size:
        raise InvalidArgumentError(
            f"{what} must be non-negative int64 (-1 marks padding in results); got "
            f"{_preview(negative)}"
        )
    if distinct and arr.size > 1:
        sorted_ids = np.sort(arr)
        dup = sorted_ids[1:][sorted_ids[1:] == sorted_ids[:-1]]
        if dup.size:
            raise InvalidArgumentError(
                f"{what} contain duplicates: {_preview(np.unique(dup))}; each id may appear "
                "once per call (the last write of an id is ambiguous)"
            )
    return arr


def check_ids(ids: Any, *, what: str = "ids", allow_empty: bool = False) -> np.ndarray:
    """Distinct ids for one write or read of a collection (see :func:`as_ids`)."""
    return as_ids(ids, what=what, distinct=True, allow_empty=allow_empty)


def check_vectors(
    vectors: Any,
    *,
    dim: int | None,
    what: str = "vectors",
    owner: str = "",
    rows: int | None = None,
) -> np.ndarray:
    """A C-contiguous float32 (n, dim) array of finite values; a 1-D vector becomes one row.
    ``dim`` None: any dimension (a remote client, which leaves that check to the server)."""
    try:
        arr = np.asarray(vectors)
    except (ValueError, TypeError) as exc:
        raise InvalidArgumentError(f"{what} must be a 2-D array of numbers: {exc}") from exc
    if arr.ndim == 1 and arr.size:
        arr = arr.reshape(1, -1)
    if arr.ndim != 2:
        raise InvalidArgumentError(f"{what} must be a 2-D array (n, {dim}); got shape {arr.shape}")
    if arr.dtype.kind not in "fiu" or arr.dtype == np.bool_:
        raise InvalidArgumentError(
            f"{what} must be numeric (float32 preferred); got dtype {arr.dtype}"
        )
    if arr.shape[0] == 0:
        raise InvalidArgumentError(f"{what} is empty; pass at least one vector")
    if dim is not None and arr.shape[1] != dim:
        target = f" {owner}" if owner else ""
        raise InvalidArgumentError(f"{what} have dimension {arr.shape[1]};{target} expects {dim}")
    if rows is not None and arr.shape[0] != rows:
        raise InvalidArgumentError(f"{what} has {arr.shape[0]} rows; expected {rows} (one per id)")
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    finite = np.isfinite(arr)
    if not finite.all():
        bad = np.flatnonzero(~finite.all(axis=1))
        raise InvalidArgumentError(
            f"{what} contain NaN or infinite values (or values beyond float32 range) in rows "
            f"{_preview(bad)}; clean or drop them before this call"
        )
    return arr


def edge_pairs(
    edges: Any, *, what: tuple[str, str] = ("src", "dst")
) -> tuple[np.ndarray, np.ndarray]:
    """(src, dst) int64 node ids from an (E, 2) array of (src, dst) ids or a (src, dst) pair
    of sequences (``what`` names the two columns in messages), as :func:`as_ids` judges ids.
    The graphs' and the client's one rule for edges."""
    if isinstance(edges, tuple) and len(edges) == 2:
        src, dst = np.asarray(edges[0]), np.asarray(edges[1])
    else:
        arr = np.asarray(edges)
        if arr.ndim != 2 or arr.shape[1] != 2:
            raise InvalidArgumentError(
                f"edges must be an (E, 2) array of (src, dst) ids or a (src, dst) pair of "
                f"arrays; got shape {arr.shape}"
            )
        src, dst = arr[:, 0], arr[:, 1]
    src, dst = as_ids(src, what=what[0]), as_ids(dst, what=what[1])
    if src.shape != dst.shape:
        raise InvalidArgumentError(
            f"src and dst must have the same length; got {src.shape[0]} and {dst.shape[0]}"
        )
    return src, dst


def check_k(k: Any, *, what: str = "k") -> int:
    """A result count in [1, MAX_K] (``what`` names the argument in the message)."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise InvalidArgumentError(f"{what} must be a positive integer; got {k!r}")
    if k <= 0:
        raise InvalidArgumentError(f"{what} must be a positive integer; got {k}")
    if k > MAX_K:
        raise ResourceExhaustedError(
            f"{what}={k} is above the limit of {MAX_K}; results are dense (n, k) arrays, so ask "
            "for fewer neighbours or page through an exact scan"
        )
    return int(k)


# name -> (type, lowest, highest) of every index parameter, per index kind
_HNSW_PARAMS: dict[str, tuple[type, float, float]] = {
    "m": (int, 2, 256),
    "ef_construction": (int, 1, 100_000),
    "ef": (int, 1, 100_000),
    "threads": (int, 1, 1024),
    "seed": (int, 0, 2**63 - 1),
}
INDEX_PARAMS: dict[str, dict[str, tuple[type, float, float]]] = {
    "flat": {},
    "hnsw": _HNSW_PARAMS,
    "partitioned": {
        **_HNSW_PARAMS,
        "partitions": (int, 1, 4096),
        "train_size": (int, 1, 2**40),
    },
    "multitenant": {
        "quantization": (str, ("none", "sq8"), None),  # type: ignore[dict-item]
        "rerank": (int, 1, 1000),
        "leaves": (int, 1, 65_536),
        "nprobe": (int, 1, 65_536),
        "candidates": (int, 1, 10_000_000),
        "probe_ratio": (float, 0.0, 100.0),
        "train_size": (int, 1, 2**40),
        "seed": (int, 0, 2**63 - 1),
    },
    "spann": {
        "max_list_size": (int, 2, 1_000_000),
        "eps_build": (float, 0.0, 100.0),
        "max_replicas": (int, 1, 64),
        "eps_search": (float, 0.0, 1000.0),
        "max_probes": (int, 1, 1_000_000),
        "m": (int, 2, 256),
        "ef_construction": (int, 1, 100_000),
        "ef": (int, 0, 100_000),  # 0: twice the lists fetched
        "maintenance": (str, ("background", "inline"), None),  # type: ignore[dict-item]
        "io": (str, ("mmap", "pread"), None),  # type: ignore[dict-item]
        "train_size": (int, 1, 2**40),
        "threads": (int, 1, 1024),
        "seed": (int, 0, 2**63 - 1),
    },
}
SEARCH_PARAMS: dict[str, dict[str, tuple[type, float, float]]] = {
    "flat": {},
    "hnsw": {"ef": (int, 1, 100_000)},
    "partitioned": {"ef": (int, 1, 100_000), "nprobe": (int, 1, 4096)},
    "multitenant": {
        "nprobe": (int, 1, 65_536),
        "candidates": (int, 1, 10_000_000),
        "probe_ratio": (float, 0.0, 100.0),
    },
    "spann": {
        "eps_search": (float, 0.0, 1000.0),
        "max_probes": (int, 1, 1_000_000),
        "ef": (int, 1, 100_000),
    },
}


def _check_params(
    context: str, table: dict[str, tuple[type, float, float]], params: Mapping[str, Any]
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in params.items():
        if value is None:
            continue
        if name not in table:
            known = ", ".join(sorted(table)) or "none"
            raise InvalidArgumentError(
                f"unknown parameter {name!r} for {context}; known parameters: {known}"
            )
        kind, low, high = table[name]
        if kind is str:
            out[name] = check_choice(f"{context} parameter {name}", value, low)  # type: ignore[arg-type]
            continue
        numbers = (int, np.integer, float, np.floating) if kind is float else (int, np.integer)
        if isinstance(value, bool) or not isinstance(value, numbers):
            what = "a number" if kind is float else "an integer"
            raise InvalidArgumentError(f"{context} parameter {name} must be {what}; got {value!r}")
        if not low <= value <= high:  # also refuses NaN
            raise InvalidArgumentError(
                f"{context} parameter {name} must be in [{low}, {high}]; got {value}"
            )
        out[name] = kind(value)
    return out


def check_index_params(kind: Any, params: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """Validate an index kind and its build parameters."""
    kind = check_choice("index", kind, tuple(INDEX_PARAMS))
    return kind, _check_params(f"index {kind!r}", INDEX_PARAMS[kind], params)


def check_search_params(kind: str, params: Mapping[str, Any]) -> dict[str, Any]:
    return _check_params(f"search on a {kind!r} index", SEARCH_PARAMS[kind], params)
