"""A collection's write groups on their way into its index: the upserts of a group coalesced
into one (one index insert: its rows are linked in parallel).

Functions of a :class:`shardwalk.collection.Collection` (which keeps the read and write paths
and calls them).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from shardwalk.snapshot import Upsert


def _coalesce(writes: list[Any]) -> list[Any]:
    """Consecutive upserts of distinct ids (and of one kind: unscoped or in their owners'
    namespaces) as one (one index insert for a group: its rows are linked in parallel);
    anything else as it came, in order."""
    out: list[Any] = []
    run: list[Upsert] = []

    def flush() -> None:
        if len(run) == 1:
            out.append(run[0])
        elif run:
            out.append(_concat(run))
        run.clear()

    seen: set[int] = set()
    for write in writes:
        if isinstance(write, Upsert):
            ids = set(write.ids.tolist())
            if seen.isdisjoint(ids) and (not run or run[0].everywhere == write.everywhere):
                run.append(write)
                seen |= ids
                continue
            flush()
            run.append(write)
            seen = ids
        else:
            flush()
            seen = set()
            out.append(write)
    flush()
    return out


def _concat(upserts: list[Upsert]) -> Upsert:
    n = [u.ids.size for u in upserts]
    shared = None
    if any(u.shared is not None for u in upserts):
        shared = pa.concat_arrays(
            [
                u.shared if u.shared is not None else pa.nulls(size, pa.list_(pa.string()))
                for u, size in zip(upserts, n)
            ]
        )
    attributes = [u.attributes for u in upserts]
    return Upsert(
        ids=np.concatenate([u.ids for u in upserts]),
        vectors=np.concatenate([u.vectors for u in upserts]),
        tenants=pa.concat_arrays([u.tenants.cast(pa.string()) for u in upserts]),
        attributes=_concat_attributes(attributes, n),
        shared=shared,
        everywhere=upserts[0].everywhere,  # (a run is of one kind: see _coalesce)
    )


def _concat_attributes(tables: list[pa.Table], sizes: list[int]) -> pa.Table:
    if not any(t.num_columns for t in tables):
        return pa.table({})
    filled = [
        t if t.num_columns else pa.table({"__rows__": pa.nulls(size)})
        for t, size in zip(tables, sizes)
    ]
    merged = pa.concat_tables(filled, promote_options="default")
    return merged.drop_columns(["__rows__"]) if "__rows__" in merged.column_names else merged
