"""Graphs, walk kernels, fingerprints, personalized PageRank and FastRP (``shardwalk.walks``).

The public API:

* :class:`CSRGraph` (``graph.py``): CSR graphs with external int64 ids, sharding, save/load.
* loaders (``loaders.py``): SNAP edge lists, Parquet/Arrow, numpy.
* :func:`build_fingerprints` / :class:`FingerprintStore` (``fingerprints.py``): the MCFP index.
* :class:`PPRIndex` / :func:`personalized_pagerank` / :class:`PPRResult` (``ppr.py``): fingerprint, push, exact.
* ``evaluate.py``: the accuracy harness; ``fastrp.py``: FastRP node embeddings.

Importing this package compiles nothing: numba kernels compile (or load from cache) on first use.
"""

from shardwalk.walks.fingerprints import FingerprintStore, build_fingerprints, sample_walks
from shardwalk.walks.graph import CSRGraph, GraphShard
from shardwalk.walks.loaders import (
    from_arrow,
    load_edge_list,
    load_npy_dir,
    load_numpy,
    load_parquet,
)
from shardwalk.walks.ppr import METHODS, PPRIndex, PPRResult, personalized_pagerank

__all__ = [
    "METHODS",
    "CSRGraph",
    "FingerprintStore",
    "GraphShard",
    "PPRIndex",
    "PPRResult",
    "build_fingerprints",
    "from_arrow",
    "load_edge_list",
    "load_npy_dir",
    "load_numpy",
    "load_parquet",
    "personalized_pagerank",
    "sample_walks",
]
