"""One tenant's flood against another tenant's searches, with the background lane off and on.

Tenant a keeps 32 exact-PPR calls coming (about 0.1-0.3 s of solve each; its key allows one
in flight, the rest are refused and retried after 20 ms) from a process of its own at nice 19
(a client on another machine in real life); tenant b runs single-query searches through the
same server. For each ``[limits] background_nice`` given, a server is started and b's search
latency measured in interleaved rounds, alone and flooded (40 searches each, 10 rounds a
setting, the settings alternated ``--repeat`` times): p50 and p99 alone and flooded, and the
ratio of the p99s, which issue 20 asks to stay within 3x. Steady load, back to back, in one
run; results JSON under bench/results/ with the commit and the machine's load::

    python bench/flood.py --nice 0,10 --repeat 3

``--queued 32``: a's key also has ``max_queued = 32``: its calls past the one in flight wait
in its line instead of being refused. ``--calls search --quota 0``: a floods with single-query
searches like b's and no quota at all.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
from shardwalk.server.app import Server
from shardwalk.server.config import parse_config
from shardwalk.walks.generators import power_law_graph

import shardwalk
from shardwalk._wire import params_to_pb
from shardwalk.v1 import shardwalk_pb2 as pb

RESULTS = Path(__file__).parent / "results"
KEYS = {"t0": "flooding-tenant-key-0000", "t1": "searching-tenant-key-111"}


def flooder(
    address: str,
    key: str,
    request: bytes,
    callers: int,
    jitter: bool,
    method: str = "PersonalizedPageRank",
) -> None:
    """Tenant a's process: ``callers`` concurrent calls while stdin's last line is "on"
    (answers "on" once a call is in flight, "idle" after "off" once its calls drained); a
    refused call retries after 20 ms (10-30 ms with ``jitter``); prints its counts at "quit"."""
    import random

    import grpc

    os.nice(19)
    on = threading.Event()
    state = {"stop": False, "in_flight": 0, "ok": 0, "refused": 0}

    def commands() -> None:
        for line in sys.stdin:
            word = line.strip()
            if word == "quit":
                state["stop"] = True
                on.set()
                return
            if word == "on":
                on.set()
            else:
                on.clear()
            while bool(state["in_flight"]) != (word == "on"):
                time.sleep(0.002)
            print("on" if word == "on" else "idle", flush=True)

    async def main() -> None:
        async with grpc.aio.insecure_channel(address) as channel:
            call = channel.unary_unary(f"/shardwalk.v1.Shardwalk/{method}")
            metadata = (("authorization", "Bearer " + key),)

            async def worker() -> None:
                while not state["stop"]:
                    if not on.is_set():
                        await asyncio.sleep(0.002)
                        continue
                    state["in_flight"] += 1
                    try:
                        await call(request, metadata=metadata, timeout=30)
                        state["ok"] += 1
                    except grpc.aio.AioRpcError as exc:
                        if exc.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
                            raise
                        state["refused"] += 1
                        await asyncio.sleep(0.01 + 0.02 * random.random() if jitter else 0.02)
                    finally:
                        state["in_flight"] -= 1

            threading.Thread(target=commands, daemon=True).start()
            await asyncio.gather(*[worker() for _ in range(callers)])
        print(state["ok"], state["refused"], flush=True)

    asyncio.run(main())


def measure(engine: shardwalk.Engine, nice: int, args: argparse.Namespace) -> dict:
    config = parse_config(
        {
            "api_keys": [
                {"key": KEYS["t0"], "tenant": "t0"}
                | ({"max_concurrent": args.quota, "max_queued": args.queued} if args.quota else {}),
                {"key": KEYS["t1"], "tenant": "t1"},
            ],
            "limits": {"background_nice": nice},
        }
    )
    server = Server(engine, config, host="127.0.0.1", port=0).start()
    address = f"127.0.0.1:{server.port}"
    code = f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import flood; " \
        f"flood.flooder({address!r}, {KEYS['t0']!r}, open({_REQUEST!r}, 'rb').read(), " \
        f"{args.callers}, {args.jitter}, {_METHODS[args.calls]!r})"  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    b = shardwalk.Client(address, api_key=KEYS["t1"]).collection("docs")
    query = np.random.default_rng(1).random((1, 8), dtype=np.float32)

    def sample(out: list[float]) -> None:
        for _ in range(40):
            start = time.perf_counter()
            b.search(query, 10)
            out.append(time.perf_counter() - start)

    def command(word: str) -> str:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(word + "\n")
        proc.stdin.flush()
        return proc.stdout.readline().strip()

    alone: list[float] = []
    flooded: list[float] = []
    try:
        for _ in range(50):
            b.search(query, 10)
        for _ in range(args.rounds):
            sample(alone)
            assert command("on") == "on"
            sample(flooded)
            assert command("off") == "idle"
        ok, refused = map(int, command("quit").split())  # its counts
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        server.stop(grace=1)
    ms = lambda xs, q: float(np.percentile(xs, q) * 1e3)  # noqa: E731
    return {
        "background_nice": nice,
        "calls": args.calls,
        "quota": args.quota,
        "queued": args.queued,
        "callers": args.callers,
        "jitter": args.jitter,
        "alone_p50_ms": ms(alone, 50),
        "alone_p99_ms": ms(alone, 99),
        "flooded_p50_ms": ms(flooded, 50),
        "flooded_p99_ms": ms(flooded, 99),
        "p99_ratio": ms(flooded, 99) / ms(alone, 99),
        "a_solves": ok,
        "a_refused": refused,
    }


_REQUEST = str(RESULTS / "flood-request.bin.tmp")
_METHODS = {"ppr": "PersonalizedPageRank", "search": "Search"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nice", default="0,10", help="background_nice values (default 0,10)")
    parser.add_argument("--repeat", type=int, default=3, help="alternations (default 3)")
    parser.add_argument("--rounds", type=int, default=10, help="rounds a setting (default 10)")
    parser.add_argument("--callers", type=int, default=32, help="a's concurrent calls (32)")
    parser.add_argument("--jitter", action="store_true", help="a retries after 10-30 ms")
    parser.add_argument(
        "--calls", choices=sorted(_METHODS), default="ppr",
        help="a's calls: exact PPR solves (default) or single-query searches like b's",
    )  # fmt: skip
    parser.add_argument(
        "--quota", type=int, default=1, help="a's key's max_concurrent (default 1; 0: none)"
    )
    parser.add_argument(
        "--queued", type=int, default=0,
        help="a's key's max_queued: calls that wait for a slot, past it refused (default 0)",
    )  # fmt: skip
    parser.add_argument("--tag", default="", help="results file bench/results/flood[-TAG].json")
    args = parser.parse_args()
    settings = [int(x) for x in args.nice.split(",")]
    load_start = os.getloadavg()[0]
    n = 20_000
    engine = shardwalk.Engine.memory()
    rng = np.random.default_rng(0)
    docs = engine.create_collection("docs", dim=8, index="flat")
    owners = ["t0" if i % 2 else "t1" for i in range(n)]
    docs.upsert(np.arange(n), rng.random((n, 8), dtype=np.float32), owners)
    engine.create_graph("g", power_law_graph(n, 5 * n, directed=False, seed=0))
    engine.graph("g").ppr([1], 10, method="exact", tol=1e-12)  # compiled before the clock
    if args.calls == "ppr":
        request = pb.PersonalizedPageRankRequest(
            graph="g", collection="docs", queries=[pb.Seeds(nodes=[1])], k=10, method="exact",
            params=params_to_pb({"tol": 1e-12}),
        )  # fmt: skip
    else:
        request = pb.SearchRequest(
            collection="docs", k=10,
            queries=pb.Vectors(dim=8, data=rng.random((1, 8), dtype=np.float32).tobytes()),
        )  # fmt: skip
    Path(_REQUEST).write_bytes(request.SerializeToString())
    runs = []
    for _ in range(args.repeat):
        for nice in settings:
            runs.append(measure(engine, nice, args))
            r = runs[-1]
            print(
                f"background_nice {nice:2d}: b's p99 alone {r['alone_p99_ms']:.2f} ms, flooded "
                f"{r['flooded_p99_ms']:.2f} ms ({r['p99_ratio']:.1f}x); p50 "
                f"{r['alone_p50_ms']:.2f} -> {r['flooded_p50_ms']:.2f} ms; a: {r['a_solves']} "
                f"solves, {r['a_refused']} refused",
                flush=True,
            )
    Path(_REQUEST).unlink()
    commit = subprocess.run(
        ["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=Path(__file__).parent
    ).stdout.strip()
    out = {
        "command": "python bench/flood.py " + " ".join(sys.argv[1:]),
        "commit": commit,
        "load_start": load_start,
        "load_end": os.getloadavg()[0],
        "cores": os.cpu_count(),
        "runs": runs,
    }
    (RESULTS / f"flood{'-' + args.tag if args.tag else ''}.json").write_text(
        json.dumps(out, indent=1) + "\n"
    )


if __name__ == "__main__":
    main()
