"""The command line a newcomer meets (issue 23, items 3-5 and 7): bad input gets one line on
stderr (what was wrong, with which file or port, what to do) and a non-zero exit code, never a
traceback; nothing is accepted without a word; progress bars on a terminal only.

Most cases run in one Python process (``DRIVER``: each command's stdout and stderr are
captured at the file-descriptor level, so grpc's and numpy's own output counts too); a few
need a process of their own (a terminal, ``--debug``)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from shardwalk.server.config import parse_config

import shardwalk
from shardwalk.cli import main
from tests.terminal import on_a_terminal

SHARDWALK = Path(sys.executable).with_name("shardwalk")

# runs shardwalk.cli.main on each argv of argv[1] (JSON), in this order, in one process
DRIVER = r"""
import json, os, sys, tempfile
from shardwalk.cli import main

results = []
for argv in json.loads(sys.argv[1]):
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        sys.stdout.flush(); sys.stderr.flush()
        saved = os.dup(1), os.dup(2)
        os.dup2(out.fileno(), 1); os.dup2(err.fileno(), 2)
        try:
            try:
                code = main(argv)
            except SystemExit as exc:
                code = exc.code
        finally:
            sys.stdout.flush(); sys.stderr.flush()
            os.dup2(saved[0], 1); os.dup2(saved[1], 2)
        out.seek(0); err.seek(0)
        results.append({"code": code, "out": out.read().decode(), "err": err.read().decode()})
print("RESULTS " + json.dumps(results))
"""


def drive(cwd: Path, *commands: list[str]) -> list[dict]:
    done = subprocess.run(
        [sys.executable, "-c", DRIVER, json.dumps([[str(a) for a in c] for c in commands])],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "SHARDWALK_DEBUG": ""},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    line = next(x for x in done.stdout.splitlines() if x.startswith("RESULTS "))
    return json.loads(line[len("RESULTS ") :])


def one_line(result: dict, *fragments: str, code: int = 2) -> str:
    """The command failed with exactly one line on stderr holding every fragment."""
    err = result["err"]
    assert result["code"] == code, result
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("shardwalk: error: "), err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Files of every kind, good and bad, and a data directory with a graph and a collection."""
    root = tmp_path_factory.mktemp("cli")
    rng = np.random.default_rng(0)
    (root / "garbage.npy").write_bytes(rng.bytes(300))
    (root / "garbage.parquet").write_bytes(rng.bytes(300))
    np.save(root / "vectors.npy", rng.random((40, 4), dtype=np.float32))
    pq.write_table(pa.table({"emb": [[1.0, 2.0]] * 3}), root / "novec.parquet")
    (root / "empty.txt").write_text("# only a comment\n\n")
    (root / "five.txt").write_text("1 2 3 4 5\n2 3 4 5 6\n")
    (root / "ragged.txt").write_text("1 2\n2 3\n3 4 0.5 7 1\n")
    (root / "weights.txt").write_text("1 2 0.5\n2 3 0.25\n")
    # 6 lines: (1, 2) twice, (2, 1) (a duplicate once undirected), a self-loop twice
    (root / "dups.txt").write_text("1 2\n1 2\n2 1\n3 3\n3 3\n4 5\n")
    (root / "chain.txt").write_text("1 2\n2 3\n3 4\n")
    table = {"src": [1, 2], "dst": [2, 3], "weight": [0.5, 2.0]}
    pq.write_table(pa.table(table), root / "weighted.parquet")
    pq.write_table(pa.table(table).slice(0, 0), root / "none.parquet")
    np.save(root / "weighted.npy", np.array([[1, 2, 0.5], [2, 3, 2.0]]))
    (root / "server.toml").write_text('[[api_keys]]\nkey = "admin-key-0000"\nrole = "admin"\n')
    with shardwalk.Engine.open(root / "db") as engine:
        engine.create_graph("chain", np.array([[1, 2], [2, 3], [3, 4]]))
        engine.create_graph("empty", np.zeros((0, 2), np.int64))
        engine.create_collection("v", dim=4, index="flat").upsert(
            np.arange(10), rng.random((10, 4), dtype=np.float32)
        )
    return root


@pytest.fixture(scope="module")
def ran(workdir: Path) -> dict[str, dict]:
    """Every command below, run once, in order, in one process (fast), by name."""
    serve = "serve --data db --config server.toml"
    with socket.socket() as held:  # a port another program listens on
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        commands = {  # split on blanks (no path here has one)
            # one line for bad files and ports
            "npy": "ingest garbage.npy --data new1 --collection c",
            "parquet": "ingest garbage.parquet --data new1 --collection c",
            "hdf5": "ingest vectors.npy --format hdf5 --data new1 --collection c",
            "column": "ingest novec.parquet --data new1 --collection c",
            "port": f"{serve} --port {port}",
            "metrics": f"{serve} --port 0 --metrics-port {port}",
            "empty graph": "graph fingerprints --data db --name empty --ray",
            "file in the way": "ingest vectors.npy --data garbage.npy/sub --collection c",
            "binary edges": "graph add-edges garbage.npy --data db --name chain",
            "binary config": "serve --data db --config garbage.npy",
            "data is a file": "info --data garbage.npy",
            # nothing accepted without a word
            "empty": "graph ingest empty.txt --data g1 --name e",
            "five": "graph ingest five.txt --data g1 --name f",
            "ragged": "graph ingest ragged.txt --data g1 --name r",
            "weights": "graph ingest weights.txt --data g1 --name w",
            "dups": "graph ingest dups.txt --data g1 --name d",
            "dups undirected": "graph ingest dups.txt --data g1 --name u --undirected",
            "exists": "graph ingest chain.txt --data g1 --name d",
            "parquet weights": "graph ingest weighted.parquet --data g1 --name pw",
            "npy weights": "graph ingest weighted.npy --data g1 --name nw",
            "empty parquet": "graph ingest none.parquet --data g1 --name pe",
            "delete five": "graph delete-edges five.txt --data db --name chain",
            "mode": "graph fingerprints --data db --name chain --mode sharded",
            "workers": "graph fingerprints --data db --name chain --num-workers 2",
            "queries and id": "search --data db --collection v --queries vectors.npy --id 1",
            "typo": "serve --data typo --config server.toml --port 0",
            "method and accuracy": "ppr --data db --graph chain --seed 1 --method exact "
            "--accuracy high",
            "ray actors": f"{serve} --ray-actors 2",
            # drop, keys
            "drop graph": "graph drop --data db --name empty",
            "drop graph again": "graph drop --data db --name empty",
            "drop collection": "collection drop --data db --name v",
            "drop missing": "collection drop --data db --name nope",
            "key": "keys new --tenant acme",
            "key json": "keys new --json",
            # stderr not a terminal: no progress bars
            "piped": "ingest vectors.npy --data piped --collection p --index flat --batch 10",
        }
        results = drive(workdir, *(c.split() for c in commands.values()))
    return dict(zip(commands, results))


def test_bad_files_and_ports_get_one_line(ran: dict[str, dict], workdir: Path) -> None:
    one_line(ran["npy"], "'garbage.npy' is not a NumPy .npy file", "no NumPy header", "--format")
    one_line(ran["parquet"], "'garbage.parquet' is not a Parquet file", "magic bytes")
    one_line(ran["hdf5"], "'vectors.npy' is not an HDF5 file", "--format")
    one_line(ran["column"], "has no column 'vector'", "--vector-column")
    port = ran["port"]["err"].split("port ")[1].split()[0]
    one_line(ran["port"], f"cannot listen on 127.0.0.1:{port}: port {port} is in use", "--port")
    one_line(ran["metrics"], f"cannot serve metrics on 127.0.0.1:{port}", "--metrics-port")
    one_line(ran["empty graph"], "graph 'empty' has no nodes", "graph add-edges")
    one_line(ran["file in the way"], "'garbage.npy' is a file where a directory is needed", code=1)
    one_line(ran["binary edges"], "garbage.npy holds binary data (line 1 is not text)")
    assert "note" not in ran["binary edges"]["err"]
    one_line(ran["binary config"], "config file 'garbage.npy' is not TOML", "--config")
    one_line(ran["data is a file"], "(no manifest.json; a file is there)")
    assert not (workdir / "new1").exists()  # failed ingests leave nothing behind


def test_nothing_is_accepted_without_a_word(ran: dict[str, dict], workdir: Path) -> None:
    one_line(ran["empty"], "'empty.txt' lists no edges", "at least one")
    one_line(ran["five"], "'five.txt': line 1 has 5 columns", "'src dst weight'")
    one_line(ran["ragged"], "ragged.txt: line 3", "is not 2 integers")
    assert ran["weights"]["code"] == 0 and "Traceback" not in ran["weights"]["err"]
    assert "has a third column (line 1); it was not read: pass --weighted" in ran["weights"]["err"]
    assert ran["dups"]["code"] == 0, ran["dups"]
    assert "read 6 edges: 2 duplicates merged, 1 self-loops kept" in ran["dups"]["out"]
    merged = "read 6 edges: 3 duplicates merged ((v, u) repeats (u, v)"
    assert merged in ran["dups undirected"]["out"]
    one_line(ran["exists"], "graph 'd' already exists", "shardwalk graph drop --data g1 --name d")
    one_line(ran["delete five"], "'five.txt': line 1 has 5 columns")
    for name, what in (("parquet", "a 'weight' column"), ("npy", "a third column (weights)")):
        result = ran[f"{name} weights"]
        assert result["code"] == 0 and "read 2 edges: 0 duplicates merged" in result["out"]
        assert f"has {what}; it was not read: pass --weighted" in result["err"], result
    one_line(ran["empty parquet"], "'none.parquet' lists no edges")
    one_line(ran["mode"], "--mode applies to a build on Ray", "--ray", "--address")
    one_line(ran["workers"], "--num-workers applies to a build on Ray")
    one_line(ran["queries and id"], "give --queries FILE or --id ID, not both")
    one_line(ran["typo"], "no shardwalk data directory at 'typo'", "--create")
    one_line(ran["method and accuracy"], "give --method or --accuracy, not both")
    one_line(ran["ray actors"], "--ray-actors", "add --ray", "--address")
    assert not (workdir / "typo").exists()
    with shardwalk.Engine.open(workdir / "g1") as engine:
        assert sorted(engine.graphs()) == ["d", "nw", "pw", "u", "w"]
        assert engine.graph("w").csr.weights is None
        assert engine.graph("d").num_edges == 4  # 1->2, 2->1, 3->3, 4->5
    with shardwalk.Engine.open(workdir / "db") as engine:
        assert engine.graph("chain").num_edges == 3  # the refused delete deleted nothing


def test_drop_commands_and_keys_new(ran: dict[str, dict], workdir: Path) -> None:
    assert ran["drop graph"]["code"] == 0
    assert ran["drop graph"]["out"].strip() == "dropped graph 'empty' (0 nodes, 0 edges) from db"
    one_line(ran["drop graph again"], "no graph 'empty' to drop; graphs: 'chain'")
    assert ran["drop collection"]["out"].strip() == "dropped collection 'v' (10 vectors) from db"
    one_line(ran["drop missing"], "no collection 'nope' to drop")
    with shardwalk.Engine.open(workdir / "db") as engine:
        assert engine.graphs() == ["chain"] and engine.collections() == []
    # keys new: the key, its hash, and an [[api_keys]] entry the server accepts
    lines = ran["key"]["out"].splitlines()
    key = lines[0].split()[1]
    digest = lines[1].split()[1]
    assert len(key) >= 40 and digest == hashlib.sha256(key.encode()).hexdigest()
    import tomllib

    entry = tomllib.loads("\n".join(lines[3:]))
    assert entry == {"api_keys": [{"key_sha256": digest, "tenant": "acme"}]}
    assert parse_config(entry).principal(key).tenant == "acme"
    made = json.loads(ran["key json"]["out"])
    assert made["key_sha256"] == hashlib.sha256(made["key"].encode()).hexdigest()
    assert made["key"] != key


def test_an_unexpected_error_is_one_line_and_debug_shows_the_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from shardwalk.cli import collection

    def broken(args: object) -> int:
        raise RuntimeError("something inside broke")

    monkeypatch.setattr(collection, "cmd_info", broken)
    monkeypatch.delenv("SHARDWALK_DEBUG", raising=False)
    assert main(["info", "--data", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "unexpected RuntimeError: something inside broke" in err and "--debug" in err
    for argv in (["--debug", "info", "--data", str(tmp_path)], ["info", "--data", "x", "--debug"]):
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert "Traceback" in err and "shardwalk: error: unexpected RuntimeError" in err
    monkeypatch.setenv("SHARDWALK_DEBUG", "1")
    assert main(["info", "--data", str(tmp_path)]) == 1
    assert "Traceback" in capsys.readouterr().err


def test_ray_token_notice_is_dropped_by_the_cli(caplog: pytest.LogCaptureFixture) -> None:
    import logging

    from shardwalk.cli.errors import quiet_ray_notices

    quiet_ray_notices()
    logger = logging.getLogger("ray._private.authentication.authentication_token_setup")
    with caplog.at_level(logging.WARNING):
        logger.warning("Token authentication is enabled for this Ray cluster. Set ...")
        logger.warning("Token authentication is enabled but no token was found")
    assert [r.getMessage() for r in caplog.records] == [
        "Token authentication is enabled but no token was found"  # an error: still said
    ]


def test_help_shows_the_defaults_it_lacked(capsys: pytest.CaptureFixture) -> None:
    for argv, wanted in [
        (["graph", "fingerprints"], ["(default: keep them all)", "(default: one per CPU of"]),
        (["graph", "fingerprints"], ["(default: replicated)"]),
        (["build"], ["or per core here)"]),
        (["serve"], ["(default: no metrics endpoint)", "--engine-threads", "--create"]),
    ]:
        with pytest.raises(SystemExit):
            main([*argv, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        for fragment in wanted:
            assert fragment in text, (argv, fragment)
        assert "--threads" not in text.replace("--engine-threads", "")


def test_progress_on_a_terminal_and_none_when_piped(ran: dict[str, dict], tmp_path: Path) -> None:
    assert ran["piped"]["code"] == 0 and "ingested 40 vectors" in ran["piped"]["out"]
    assert ran["piped"]["err"] == ""  # piped: no bars, no carriage returns
    np.save(tmp_path / "v.npy", np.random.default_rng(0).random((300, 8), dtype=np.float32))
    argv = [str(SHARDWALK), "ingest", "v.npy", "--collection", "v", "--batch", "10"]
    argv += ["--index", "flat"]
    # stderr a terminal: tqdm draws the checking and writing bars there
    code, text = on_a_terminal([*argv, "--data", "b"], tmp_path)
    assert code == 0, text
    assert "check v.npy" in text and "ingest v.npy" in text and "vectors/s" in text, text
    assert "\r" in text  # redrawn in place


def test_quickstart_prints_distances_rounded(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    argv = ["quickstart", "--data", str(tmp_path / "q"), "--n", "2000", "--queries", "50"]
    assert main([*argv, "--edges-per-node", "0", "--index", "flat"]) == 0
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if x.startswith("query 0: top-3 ids"))
    # float32 values printed as Python floats showed spurious digits (4.624000072479248)
    assert re.search(r"distances \[\d+\.\d{1,3}, \d+\.\d{1,3}, \d+\.\d{1,3}\]$", line), line


def test_counts_are_checked_with_the_flag_named(capsys: pytest.CaptureFixture) -> None:
    for argv in (
        ["graph", "fingerprints", "--data", "d", "--name", "g", "--num-workers", "0"],
        ["search", "--data", "d", "--collection", "c", "--id", "1", "--k", "-3"],
        ["serve", "--data", "d", "--config", "c", "--engine-threads", "x"],
    ):
        with pytest.raises(SystemExit) as exited:
            main(argv)
        assert exited.value.code == 2
        flag = argv[-2]
        assert f"argument {flag}: expected an integer >= 1; got {argv[-1]!r}" in (
            capsys.readouterr().err
        )
