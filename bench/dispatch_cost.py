"""What the server's own work costs per call, without the network: ``Dispatcher.call`` (auth,
parse, limits and quotas, the handler, error mapping, metrics) on an in-memory engine, back to
back in this process (best of 5 rounds of 200 calls, p50). Run it with two checkouts'
interpreters, one after the other, to see what a change adds to each RPC::

    python bench/dispatch_cost.py                      # this checkout
    /tmp/base/.venv/bin/python bench/dispatch_cost.py  # another (run from outside its folder)

Data: 20K x 32 random vectors in an hnsw collection over 50 tenants, a power-law graph of 200K
edges with fingerprints (10 walks per node); one query, k=10; tenant calls by tenant t9's key.
"""

import time

import numpy as np
from shardwalk.server.app import Dispatcher
from shardwalk.server.config import parse_config
from shardwalk.walks.generators import power_law_graph

import shardwalk
from shardwalk.v1 import shardwalk_pb2 as pb

e = shardwalk.Engine.memory()
n = 20000
rng = np.random.default_rng(0)
c = e.create_collection("c", dim=32, index="hnsw")
c.upsert(
    np.arange(n), rng.random((n, 32), dtype=np.float32), tenants=[f"t{i % 50}" for i in range(n)]
)
g = e.create_graph("g", power_law_graph(n, 10 * n, directed=False, seed=0))
g.build_fingerprints(walks_per_node=10)
d = Dispatcher(
    e,
    parse_config(
        {
            "api_keys": [
                {"key": "tenant-key-9", "tenant": "t9"},
                {"key": "admin-key-0", "role": "admin"},
            ]
        }
    ),
)
q = rng.random((1, 32), dtype=np.float32)
vec = pb.Vectors(dim=32, data=q.astype("<f4").tobytes())
reqs = {
    "Search-tenant": (
        "Search",
        pb.SearchRequest(collection="c", queries=vec, k=10).SerializeToString(),
        "tenant-key-9",
    ),
    "Search-admin": (
        "Search",
        pb.SearchRequest(collection="c", queries=vec, k=10).SerializeToString(),
        "admin-key-0",
    ),
    "Compose-tenant": (
        "Compose",
        pb.ComposeRequest(collection="c", graph="g", queries=vec, k=10).SerializeToString(),
        "tenant-key-9",
    ),
    "Compose-admin": (
        "Compose",
        pb.ComposeRequest(collection="c", graph="g", queries=vec, k=10).SerializeToString(),
        "admin-key-0",
    ),
    "PPR-tenant": (
        "PersonalizedPageRank",
        pb.PersonalizedPageRankRequest(
            graph="g", collection="c", queries=[pb.Seeds(nodes=[9])], k=10
        ).SerializeToString(),
        "tenant-key-9",
    ),
}
for name, (rpc, data, key) in reqs.items():
    md = (("authorization", "Bearer " + key),)
    for _ in range(30):
        code, msg, out = d.call(rpc, data, md, None)
        assert code.name == "OK", msg
    rounds = []
    for _round in range(5):
        t = []
        for _ in range(200):
            a = time.perf_counter()
            d.call(rpc, data, md, None)
            t.append(time.perf_counter() - a)
        rounds.append(np.median(t))
    print(f"{name:16s} p50 {min(rounds) * 1e6:7.0f} us (best of 5 x 200)")
