"""Graph loaders: SNAP edge lists (plain or .gz), Parquet/Arrow tables, numpy arrays.

Every loader ends in :meth:`CSRGraph.from_edges`, so self-loops, duplicates and weights follow
the rules documented in ``shardwalk.walks.graph``; extra keyword arguments (``directed``,
``self_loops``, ``duplicates``, ``node_ids``) are passed through.
"""

from __future__ import annotations

import gzip
import os
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from shardwalk.walks._check import as_id_array
from shardwalk.walks.graph import CSRGraph

from shardwalk.errors import InvalidArgumentError, NotFoundError

__all__ = ["from_arrow", "load_edge_list", "load_npy_dir", "load_numpy", "load_parquet"]

_MAX_EXACT_FLOAT = 2**53


def _read_bytes(path: Path) -> bytes:
    if not path.exists():
        raise NotFoundError(f"edge list {path} does not exist")
    with open(path, "rb") as f:
        head = f.read(2)
    if head == b"\x1f\x8b":  # gzip magic, whatever the suffix
        with gzip.open(path, "rb") as f:
            return f.read()
    return path.read_bytes()


def load_edge_list(
    path: str | os.PathLike[str],
    *,
    weighted: bool = False,
    comment: str = "#%",
    delimiter: str | None = None,
    skip_rows: int = 0,
    columns: tuple[int, ...] | None = None,
    **graph_options: Any,
) -> CSRGraph:
    """Load a SNAP-style edge list: one edge per line, ``src dst [weight] [more columns]``.

    Parameters
    ----------
    path : path
        Plain text or gzip (detected from the content, not the suffix).
    weighted : bool
        Read the third used column as the edge weight (must be finite and > 0).
    comment : str
        Lines whose first non-blank character is one of these are skipped (SNAP uses "#").
    delimiter : str, optional
        Column separator; default: any whitespace. "," reads CSV without quotes.
    skip_rows : int
        Data lines to skip after removing comments (headers such as "source,target,weight"
        or a node-count line).
    columns : tuple of int, optional
        Which columns hold (src, dst[, weight]); default (0, 1[, 2]). Other columns are ignored.
    **graph_options
        Passed to :meth:`CSRGraph.from_edges` (``directed``, ``self_loops``, ``duplicates``...).

    Raises
    ------
    NotFoundError
        The file does not exist.
    InvalidArgumentError
        Ragged or non-numeric lines (the first offending line is named), bad weights.
    """
    data = _read_bytes(Path(path))
    if comment:
        cls = re.escape(comment)
        data = re.sub(rb"(?m)^[ \t]*[" + cls.encode() + rb"][^\n]*", b"", data)
    if delimiter is not None and delimiter.strip():
        data = data.replace(delimiter.encode(), b" ")
    data = data.replace(b"\r", b"")
    lines = [ln for ln in data.split(b"\n") if ln.strip()]
    lines = lines[skip_rows:]
    if not lines:
        return CSRGraph.from_edges(np.zeros(0, np.int64), np.zeros(0, np.int64), **graph_options)
    ncols = len(lines[0].split())
    cols = columns if columns is not None else ((0, 1, 2) if weighted else (0, 1))
    need = 3 if weighted else 2
    if len(cols) != need:
        raise InvalidArgumentError(
            f"columns must name {need} columns (src, dst{', weight' if weighted else ''}); got {cols}"
        )
    if max(cols) >= ncols:
        raise InvalidArgumentError(
            f"{path}: the first data line has {ncols} columns but columns={cols} "
            f"(line: {lines[0][:80].decode(errors='replace')!r})"
        )
    body = b"\n".join(lines)
    dtype = np.float64 if weighted else np.int64
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        try:
            flat = np.fromstring(body, dtype=dtype, sep=" ")
        except (DeprecationWarning, ValueError):
            flat = None
    if flat is None or flat.size != ncols * len(lines):
        for i, ln in enumerate(lines):
            parts = ln.split()
            ok = len(parts) == ncols
            if ok:
                try:
                    [dtype(p) if dtype is np.float64 else int(p) for p in parts]
                except ValueError:
                    ok = False
            if not ok:
                raise InvalidArgumentError(
                    f"{path}: data line {i + 1 + skip_rows} (after comments) is not {ncols} "
                    f"{'numbers' if weighted else 'integers'}: {ln[:80].decode(errors='replace')!r} "
                    "(use skip_rows for headers, comment= for comment markers)"
                )
        raise InvalidArgumentError(f"{path}: could not parse the edge list")  # pragma: no cover
    table = flat.reshape(len(lines), ncols)
    if weighted:
        ids = table[:, list(cols[:2])]
        if np.any(np.abs(ids) >= _MAX_EXACT_FLOAT) or np.any(ids != np.round(ids)):
            raise InvalidArgumentError(
                f"{path}: node ids in a weighted edge list must be integers below 2**53"
            )
        src, dst = ids[:, 0].astype(np.int64), ids[:, 1].astype(np.int64)
        return CSRGraph.from_edges(src, dst, table[:, cols[2]], **graph_options)
    return CSRGraph.from_edges(table[:, cols[0]], table[:, cols[1]], **graph_options)


def from_arrow(
    table: Any,
    *,
    src: str = "src",
    dst: str = "dst",
    weight: str | None = None,
    **graph_options: Any,
) -> CSRGraph:
    """Build a graph from a ``pyarrow.Table`` (or RecordBatch) with integer columns ``src``,
    ``dst`` and an optional float column ``weight``.

    Raises
    ------
    InvalidArgumentError
        A named column is missing (the message lists the available ones) or has nulls.
    """
    names = list(table.schema.names)
    for c in (src, dst) + ((weight,) if weight else ()):
        if c not in names:
            raise InvalidArgumentError(f"column {c!r} not found; the table has {names}")

    def col(name: str) -> np.ndarray:
        arr = table.column(name)
        if arr.null_count:
            raise InvalidArgumentError(f"column {name!r} has {arr.null_count} nulls")
        return arr.to_numpy() if hasattr(arr, "to_numpy") else np.asarray(arr)

    w = col(weight) if weight else None
    return CSRGraph.from_edges(col(src), col(dst), w, **graph_options)


def load_parquet(
    path: str | os.PathLike[str],
    *,
    src: str = "src",
    dst: str = "dst",
    weight: str | None = None,
    **graph_options: Any,
) -> CSRGraph:
    """Load a Parquet file (or directory of files) with columns (src, dst[, weight])."""
    import pyarrow.parquet as pq

    p = Path(path)
    if not p.exists():
        raise NotFoundError(f"parquet edge table {p} does not exist")
    cols = [src, dst] + ([weight] if weight else [])
    try:
        table = pq.read_table(p, columns=cols)
    except (KeyError, ValueError) as exc:  # pyarrow raises these for missing columns
        raise InvalidArgumentError(
            f"{p}: cannot read columns {cols}: {exc} (schema: {pq.read_schema(p).names})"
        ) from exc
    return from_arrow(table, src=src, dst=dst, weight=weight, **graph_options)


def load_numpy(edges: Any, weights: Any = None, **graph_options: Any) -> CSRGraph:
    """Build a graph from an (E, 2) integer array of (src, dst) external ids (or a .npy path)."""
    if isinstance(edges, (str, os.PathLike)):
        p = Path(edges)
        if not p.exists():
            raise NotFoundError(f"edge array {p} does not exist")
        edges = np.load(p, mmap_mode="r", allow_pickle=False)
    e = np.asarray(edges)
    if e.ndim != 2 or e.shape[1] != 2:
        raise InvalidArgumentError(f"edges must have shape (E, 2); got {e.shape}")
    return CSRGraph.from_edges(e[:, 0], e[:, 1], weights, **graph_options)


def load_npy_dir(
    directory: str | os.PathLike[str], *, use_weights: bool = True, **graph_options: Any
) -> CSRGraph:
    """Load the ``edges.npy`` (positions 0..n-1) + ``ids.npy`` (external ids) [+ ``weights.npy``]
    layout of the project's converted datasets. Isolated nodes listed in ids.npy are kept."""
    d = Path(directory)
    if not (d / "edges.npy").exists():
        raise NotFoundError(f"{d} has no edges.npy")
    edges = np.load(d / "edges.npy", allow_pickle=False)
    ids = (
        as_id_array("ids", np.load(d / "ids.npy", allow_pickle=False))
        if (d / "ids.npy").exists()
        else None
    )
    w = None
    if use_weights and (d / "weights.npy").exists():
        w = np.load(d / "weights.npy", allow_pickle=False)
    if ids is not None:
        edges = ids[edges]
        graph_options.setdefault("node_ids", ids)
    return load_numpy(edges, w, **graph_options)
