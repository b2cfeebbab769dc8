"""The types of the public API's arguments and results, for type checkers and readers.

Arrays follow numpy.typing: an argument is :data:`numpy.typing.ArrayLike` (a numpy array, a
list of lists, anything ``np.asarray`` takes) and a result is ``NDArray[np.int64]`` (ids) or
``NDArray[np.float32]`` (distances, scores). The aliases below name what the rest takes:
parameters of an index or a method, seeds of a PPR query, edges, attributes, and the
JSON-shaped reports (statistics, update reports) that ``stats()`` and friends return.

A leaf module: it imports nothing of the package.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TypeAlias, TypedDict

import numpy as np
import pyarrow as pa
from numpy.typing import ArrayLike, NDArray

__all__ = [
    "JSON",
    "ArrayLike",
    "AttributeValue",
    "Attributes",
    "BackupReport",
    "Edges",
    "NDArray",
    "Param",
    "Report",
    "Seeds",
    "SharedWith",
    "Tenants",
]

#: a value of an index, search or method parameter (``ef=128``, ``r_max=1e-6``,
#: ``maintenance="background"``, ``absorb=False``)
Param: TypeAlias = bool | int | float | str | None

#: a JSON value: what statistics and reports hold (they pass through ``json.dumps`` as they are)
JSON: TypeAlias = bool | int | float | str | Sequence["JSON"] | Mapping[str, "JSON"] | None

#: a report or statistics: a JSON object (``Collection.stats()``, ``Graph.upsert_edges(...)``)
Report: TypeAlias = dict[str, JSON]

#: one PPR query's seeds: a node, nodes (equal weights) or a personalization {node: weight}
Seeds: TypeAlias = int | np.integer | Sequence[int] | NDArray[np.integer] | Mapping[int, float]

#: edges as an (E, 2) array of (src, dst) node ids, or a (src, dst) pair of arrays
Edges: TypeAlias = ArrayLike | tuple[ArrayLike, ArrayLike]

#: one row's value of an attribute (int, float, bool, string, list of strings; None: missing)
AttributeValue: TypeAlias = bool | int | float | str | Sequence[str] | None

#: attributes of n rows: columns {name: n values}, n dicts (one per row), or a pyarrow.Table
Attributes: TypeAlias = (
    Mapping[str, Sequence[AttributeValue] | NDArray[np.generic]]
    | Sequence[Mapping[str, AttributeValue]]
    | pa.Table
)

#: owner tenant of rows: one name for all, or one per row (None: no owner)
Tenants: TypeAlias = str | Sequence[str | None]

#: per row, further tenants that may see it besides its owner (None: none)
SharedWith: TypeAlias = Sequence[Sequence[str] | None]


class BackupReport(TypedDict):
    """What :meth:`shardwalk.Engine.backup` did."""

    destination: str
    collections: list[str]
    graphs: list[str]
    files: int
    linked: int
    copied: int
    bytes_copied: int
    max_locked_seconds: float
    seconds: float
