"""Loading a SNAP edge list into a CSR graph: seconds and peak memory, plain and gzipped.

    python bench/load_graph.py                       # 3M edges over 1M node ids, seeded
    python bench/load_graph.py --edges 10000000

Each load runs in a fresh process (peak RSS is the process's, imports included), twice, back to
back. The file is generated into a temporary directory: heavy-tailed out-degrees like a SNAP
web or social graph, tab-separated, with SNAP's '#' header lines. Writes
bench/results/load-graph.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent

_ONE_LOAD = """
import resource, sys, time
import pyarrow.csv
from shardwalk.walks.loaders import load_edge_list
t = time.perf_counter()
g = load_edge_list(sys.argv[1])
seconds = time.perf_counter() - t
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(seconds, peak, g.num_nodes, g.num_edges)
"""


def write_snap(path: Path, edges: int, nodes: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    src = np.minimum((rng.pareto(1.2, edges) * 1000).astype(np.int64), nodes - 1)
    dst = rng.integers(0, nodes, edges)
    with open(path, "w") as f:
        f.write(f"# Directed graph: synthetic, seed {seed}\n# Nodes: {nodes} Edges: {edges}\n")
        f.write("# FromNodeId\tToNodeId\n")
        np.savetxt(f, np.column_stack([src, dst]), fmt="%d", delimiter="\t")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--edges", type=int, default=3_000_000)
    parser.add_argument("--nodes", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(HERE / "results" / "load-graph.json"))
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        text = Path(tmp) / "edges.txt"
        write_snap(text, args.edges, args.nodes, args.seed)
        gz = Path(tmp) / "edges.txt.gz"
        subprocess.run(["gzip", "-k", str(text)], check=True)
        for path in (text, gz, text, gz):
            out = subprocess.run(
                [sys.executable, "-c", _ONE_LOAD, str(path)],
                check=True,
                capture_output=True,
                text=True,
            ).stdout.split()
            row = {
                "file": path.name,
                "bytes": path.stat().st_size,
                "seconds": round(float(out[0]), 3),
                "peak_rss_mib": round(float(out[1])),
                "nodes": int(out[2]),
                "edges": int(out[3]),
            }
            print(row, flush=True)
            results.append(row)
    Path(args.out).write_text(json.dumps({"args": vars(args), "loads": results}, indent=1))


if __name__ == "__main__":
    main()
