"""Seeded Parquet datasets for the batch-build tests, and digests of what a build wrote."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from shardwalk.datasets import clustered_vectors


def write_dataset(
    directory: Path, n: int, dim: int, *, files: int = 4, seed: int = 0, tenants: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` clustered vectors under shuffled ids (3 * i + 5), split into ``files`` Parquet
    files with a tenant and an int attribute; returns (ids, vectors) in file order."""
    data = clustered_vectors(n, dim, queries=1, tenants=3, seed=seed)
    rng = np.random.default_rng(seed)
    ids = rng.permutation(n).astype(np.int64) * 3 + 5
    directory.mkdir(parents=True, exist_ok=True)
    for f, rows in enumerate(np.array_split(np.arange(n), files)):
        columns = {
            "id": pa.array(ids[rows]),
            "vector": pa.FixedSizeListArray.from_arrays(pa.array(data.vectors[rows].ravel()), dim),
            "year": pa.array(2000 + rows % 25),
        }
        if tenants:
            columns["tenant"] = pa.array([data.tenants[r] for r in rows])
        pq.write_table(pa.table(columns), directory / f"part-{f:03d}.parquet")
    return ids, data.vectors


def snapshot_digest(datadir: Path, name: str) -> dict[str, str]:
    """md5 of every file of the collection's snapshot, by path inside it."""
    snaps = sorted((datadir / "collections" / name).glob("snap-*"))
    assert len(snaps) == 1, snaps
    return {
        str(p.relative_to(snaps[0])): hashlib.md5(p.read_bytes()).hexdigest()
        for p in sorted(snaps[0].rglob("*"))
        if p.is_file()
    }


def exact_neighbours(
    vectors: np.ndarray, ids: np.ndarray, queries: np.ndarray, k: int
) -> np.ndarray:
    d = ((queries[:, None, :] - vectors[None, :, :]) ** 2).sum(-1)
    return ids[np.argsort(d, axis=1, kind="stable")[:, :k]]
