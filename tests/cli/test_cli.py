"""The command line against real files in tmp_path: where ingested ids come from, failed
ingests leave nothing behind, read commands never create a data directory, typed --param,
graph ingest of .npy files, --version and defaults in the help, ppr --alpha/--dangling.

Each test is named after the fault of issue 8 it pins down."""

from __future__ import annotations

import inspect
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import shardwalk
from shardwalk.cli import build_parser, main
from shardwalk.cli.common import parse_value

SHARDWALK = Path(sys.executable).with_name("shardwalk")


@pytest.fixture
def first() -> np.ndarray:
    return np.random.default_rng(1).random((25, 6), dtype=np.float32)


@pytest.fixture
def second() -> np.ndarray:
    return np.random.default_rng(2).random((25, 6), dtype=np.float32)


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def stored(data: Path, collection: str = "v") -> tuple[int, np.ndarray]:
    """How many vectors the collection holds, and the vectors of ids 0..24."""
    with shardwalk.Engine.open(data) as engine:
        c = engine.collection(collection)
        return len(c), c.get(np.arange(25)).vectors


def listing(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


# -- 1. a second ingest refuses to overwrite ids ----------------------------------------------
def test_second_npy_ingest_refuses_to_overwrite_ids(tmp_path, capsys, first, second):
    np.save(tmp_path / "a.npy", first)
    np.save(tmp_path / "b.npy", second)
    data = tmp_path / "db"
    code, out, _ = run(capsys, "ingest", tmp_path / "a.npy", "--data", data, "--collection", "v")
    assert code == 0 and "ids from row numbers (0..24)" in out

    code, out, err = run(capsys, "ingest", tmp_path / "b.npy", "--data", data, "--collection", "v")
    assert code == 2 and out == ""
    assert "collection 'v' already has 25 of the 25 ids" in err
    assert "0, 1, 2, 3, 4, ... (25 in all)" in err
    assert "--id-offset N" in err and "--upsert" in err and "nothing was written" in err
    count, vectors = stored(data)
    assert count == 25
    np.testing.assert_array_equal(vectors, first)  # untouched

    code, out, _ = run(
        capsys, "ingest", tmp_path / "b.npy", "--data", data, "--collection", "v", "--id-offset", 25
    )
    assert code == 0 and "(50 in all; ids from row numbers + id offset 25 (25..49))" in out
    with shardwalk.Engine.open(data) as engine:
        np.testing.assert_array_equal(engine.collection("v").get([25, 49]).vectors, second[[0, 24]])

    code, out, _ = run(
        capsys, "ingest", tmp_path / "b.npy", "--data", data, "--collection", "v", "--upsert"
    )
    assert code == 0 and "25 replaced" in out
    count, vectors = stored(data)
    assert count == 50
    np.testing.assert_array_equal(vectors, second)


def test_parquet_ids_come_from_the_id_column(tmp_path, capsys, first):
    table = pa.table(
        {
            "key": pa.array(np.arange(100, 125), pa.int64()),
            "vector": pa.FixedSizeListArray.from_arrays(pa.array(first.reshape(-1)), 6),
        }
    )
    pq.write_table(table, tmp_path / "v.parquet")
    data = tmp_path / "db"
    base = ["ingest", tmp_path / "v.parquet", "--data", data, "--collection", "v"]
    code, _, err = run(capsys, *base, "--id-column", "id")
    assert (
        code == 2
        and "has no column 'id'; columns: ['key', 'vector'] (name the id column with id_column=, --id-column on the command line)"
        in err
    )
    code, out, _ = run(capsys, *base, "--id-column", "key")
    assert code == 0 and "ids from column 'key'" in out
    code, _, err = run(capsys, *base, "--id-column", "key")
    assert code == 2 and "already has 25 of the 25 ids" in err and "100, 101, 102" in err
    assert "--upsert" in err and "column 'key'" in err
    code, _, err = run(capsys, *base, "--id-column", "key", "--id-offset", "5")
    assert code == 2 and "an id offset does not apply" in err
    np.save(tmp_path / "a.npy", first)
    code, _, err = run(
        capsys,
        "ingest",
        tmp_path / "a.npy",
        "--data",
        data,
        "--collection",
        "w",
        "--id-column",
        "x",
    )
    assert code == 2 and "is a npy file, which holds no ids" in err


# -- 2. a failed ingest leaves nothing behind -------------------------------------------------
def test_failed_ingest_into_a_new_data_directory_leaves_nothing(tmp_path, capsys, first):
    bad = first.copy()
    bad[[3, 17], 2] = np.nan
    np.save(tmp_path / "bad.npy", bad)
    data = tmp_path / "parent" / "db"  # neither exists yet
    code, _, err = run(capsys, "ingest", tmp_path / "bad.npy", "--data", data, "--collection", "v")
    assert code == 2 and "rows 3, 17 hold NaN or infinite values" in err
    assert not (tmp_path / "parent").exists()

    plain = tmp_path / "plain"  # an existing directory that is not a data directory
    plain.mkdir()
    (plain / "notes.txt").write_text("mine")
    code, _, _ = run(capsys, "ingest", tmp_path / "bad.npy", "--data", plain, "--collection", "v")
    assert code == 2 and listing(plain) == ["notes.txt"]


def test_failed_ingest_into_an_existing_data_directory_changes_nothing(
    tmp_path, capsys, first, second
):
    np.save(tmp_path / "a.npy", first)
    data = tmp_path / "db"
    assert run(capsys, "ingest", tmp_path / "a.npy", "--data", data, "--collection", "v")[0] == 0
    manifest = (data / "manifest.json").read_bytes()
    bad = second.copy()
    bad[22, 0] = np.inf  # in the third batch of 10: the first two would have been written
    np.save(tmp_path / "bad.npy", bad)
    for collection, options in (("new", []), ("v", ["--upsert"])):
        code, _, err = run(
            capsys,
            "ingest",
            tmp_path / "bad.npy",
            "--data",
            data,
            "--collection",
            collection,
            "--batch",
            10,
            *options,
        )
        assert code == 2 and "row 22 holds NaN or infinite values" in err
    np.save(tmp_path / "wide.npy", np.ones((3, 7), np.float32))
    code, _, err = run(capsys, "ingest", tmp_path / "wide.npy", "--data", data, "--collection", "v")
    assert code == 2 and "has vectors of dimension 7; collection 'v' expects 6" in err
    assert (data / "manifest.json").read_bytes() == manifest
    count, vectors = stored(data)
    assert count == 25
    np.testing.assert_array_equal(vectors, first)
    with shardwalk.Engine.open(data) as engine:
        assert engine.collections() == ["v"]


def test_repeated_ids_in_a_file_are_refused_before_writing(tmp_path, capsys, first):
    ids = np.arange(25)
    ids[20] = 3  # a repeat in the third batch of 10
    table = pa.table(
        {"id": ids, "vector": pa.FixedSizeListArray.from_arrays(pa.array(first.reshape(-1)), 6)}
    )
    pq.write_table(table, tmp_path / "v.parquet")
    data = tmp_path / "db"
    code, _, err = run(
        capsys, "ingest", tmp_path / "v.parquet", "--data", data, "--collection", "v", "--batch", 10
    )
    assert code == 2 and "ids (column 'id') repeat: 3" in err
    assert not data.exists()


def test_failure_while_writing_drops_the_new_collection(tmp_path, capsys, first, monkeypatch):
    np.save(tmp_path / "a.npy", first)
    data = tmp_path / "db"
    assert run(capsys, "ingest", tmp_path / "a.npy", "--data", data, "--collection", "v")[0] == 0
    calls = []
    upsert = shardwalk.Collection.upsert

    def failing(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise shardwalk.ResourceExhaustedError("disk full (simulated)")
        return upsert(self, *args, **kwargs)

    monkeypatch.setattr(shardwalk.Collection, "upsert", failing)
    code, _, err = run(
        capsys, "ingest", tmp_path / "a.npy", "--data", data, "--collection", "w", "--batch", 10
    )
    assert code == 2 and "disk full (simulated)" in err
    monkeypatch.undo()
    with shardwalk.Engine.open(data) as engine:
        assert engine.collections() == ["v"]
    assert sorted(os.listdir(data / "collections")) == ["v"]


# -- 3. read commands never create a data directory --------------------------------------------
@pytest.mark.parametrize(
    "argv",
    [
        ["info"],
        ["search", "--collection", "v", "--id", "1"],
        ["ppr", "--graph", "g", "--seed", "1"],
        ["graph", "fingerprints", "--name", "g"],
    ],
)
def test_mistyped_data_directory_is_refused(tmp_path, capsys, argv):
    typo = tmp_path / "dbb"
    code, _, err = run(capsys, *argv[:1], *argv[1:], "--data", typo)
    assert code == 2
    assert f"no shardwalk data directory at '{typo}' (no manifest.json; nothing is there)" in err
    assert not typo.exists()


def test_info_on_a_mistyped_directory_as_a_process(tmp_path):
    done = subprocess.run(
        [str(SHARDWALK), "info", "--data", str(tmp_path / "typo")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and done.stdout == ""
    assert "no shardwalk data directory at" in done.stderr and "(NOT_FOUND)" in done.stderr
    assert not (tmp_path / "typo").exists()


# -- 4. --param takes int, float, true/false and strings ---------------------------------------
def test_param_values_are_typed():
    assert [parse_value(v) for v in ["16", "-3", "0.5", "1e-4", "true", "False", "sq8", "nan"]] == [
        16,
        -3,
        0.5,
        1e-4,
        True,
        False,
        "sq8",
        "nan",
    ]
    assert type(parse_value("16")) is int and type(parse_value("true")) is bool


def test_param_quantization_sq8_and_typed_errors(tmp_path, capsys, first):
    np.save(tmp_path / "a.npy", first)
    data = tmp_path / "db"
    base = ["ingest", tmp_path / "a.npy", "--data", data]
    code, _, err = run(
        capsys, *base, "--collection", "m", "--index", "multitenant", "--param", "quantization=sq8"
    )
    assert code == 0, err
    code, out, _ = run(capsys, "info", "--data", data)
    assert json.loads(out)["collections"][0]["params"]["quantization"] == "sq8"

    code, _, err = run(capsys, *base, "--collection", "h", "--param", "m=1.5")
    assert code == 2
    assert "parameter m must be an integer; got 1.5 (--param m=1.5 was read as float 1.5)" in err
    code, _, err = run(capsys, *base, "--collection", "h", "--param", "m")
    assert code == 2 and "--param takes NAME=VALUE" in err
    code, _, err = run(
        capsys, "search", "--data", data, "--collection", "m", "--id", 1, "--param", "nprobe=all"
    )
    assert code == 2 and "(--param nprobe=all was read as str 'all')" in err
    code, _, err = run(capsys, *base, "--collection", "m", "--upsert", "--param", "leaves=4")
    assert code == 2 and "applies only when creating a collection" in err


# -- 5. graph ingest of a single .npy file -----------------------------------------------------
def test_graph_ingest_of_npy_files(tmp_path, capsys):
    np.save(tmp_path / "edges.npy", np.array([[10, 11], [11, 12], [12, 10]], np.int64))
    np.save(tmp_path / "weighted.npy", np.array([[10, 11, 0.5], [11, 12, 2.0]]))
    data = tmp_path / "db"
    code, out, err = run(
        capsys, "graph", "ingest", tmp_path / "edges.npy", "--data", data, "--name", "g"
    )
    assert code == 0, err
    assert "graph 'g': 3 nodes, 3 edges (directed)" in out
    code, out, err = run(
        capsys,
        "graph",
        "ingest",
        tmp_path / "weighted.npy",
        "--data",
        data,
        "--name",
        "w",
        "--weighted",
    )
    assert code == 0 and "3 nodes, 2 edges (directed, weighted)" in out, err
    with shardwalk.Engine.open(data) as engine:
        assert engine.graph("w").csr.weights.tolist() == [0.5, 2.0]


def test_graph_ingest_errors_name_the_file_and_real_options(tmp_path, capsys):
    data = tmp_path / "db"
    pq.write_table(pa.table({"src": [1], "dst": [2]}), tmp_path / "edges.bin")
    code, _, err = run(
        capsys,
        "graph",
        "ingest",
        tmp_path / "edges.bin",
        "--data",
        data,
        "--name",
        "g",
        "--format",
        "snap",
    )
    assert code == 2 and "is a Parquet file, not a text edge list" in err
    assert not re.search(r"\\x[0-9a-f]{2}|PAR1", err)
    (tmp_path / "r.txt").write_text("# header\nsrc dst\n1 2\n")
    code, _, err = run(capsys, "graph", "ingest", tmp_path / "r.txt", "--data", data, "--name", "g")
    assert code == 2 and "line 2 (data line 1 after comments) is not 2 integers" in err
    ingest = build_parser()._subparsers._group_actions[0].choices["graph"]
    options = ingest._subparsers._group_actions[0].choices["ingest"]._option_string_actions
    for option in re.findall(r"--[a-z][a-z-]+", err):
        assert option in options, f"the error suggests {option}, which graph ingest lacks"
    assert not data.exists()
    code, out, _ = run(
        capsys,
        "graph",
        "ingest",
        tmp_path / "r.txt",
        "--data",
        data,
        "--name",
        "g",
        "--skip-rows",
        1,
    )
    assert code == 0 and "2 nodes, 1 edges" in out


# -- 6. --version, defaults in every help -----------------------------------------------------
def test_version_as_a_process():
    done = subprocess.run(
        [str(SHARDWALK), "--version"], capture_output=True, text=True, timeout=120
    )
    from importlib.metadata import version

    assert done.returncode == 0 and done.stdout.strip() == f"shardwalk {version('shardwalk')}"


@pytest.mark.parametrize(
    "argv,default",
    [
        (["quickstart"], "--n N              vectors to generate (default: 200000)"),
        (["ingest"], "(default: 10000)"),
        (["search"], "neighbours per query (default: 10)"),
        (["info"], None),
        (["graph", "ingest"], "(default: auto)"),
        (["graph", "fingerprints"], "random seed of the walks (default: 0)"),
        (["ppr"], "top nodes to print (default: 20)"),
    ],
)
def test_help_shows_defaults(capsys, argv, default):
    with pytest.raises(SystemExit) as done:
        main([*argv, "--help"])
    assert done.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    if default is not None:
        assert " ".join(default.split()) in text
    assert "(default: None)" not in text and "(default: False)" not in text


# -- 7. ppr --alpha and --dangling ------------------------------------------------------------
@pytest.fixture
def graph_data(tmp_path, capsys) -> Path:
    # 0 -> 1 -> 2 -> 0 and 2 -> 3, where 3 is dangling
    (tmp_path / "g.txt").write_text("0 1\n1 2\n2 0\n2 3\n")
    data = tmp_path / "db"
    code, _, err = run(capsys, "graph", "ingest", tmp_path / "g.txt", "--data", data, "--name", "g")
    assert code == 0, err
    return data


def test_ppr_passes_alpha_and_dangling_only_when_given(graph_data, capsys, monkeypatch):
    seen = []
    ppr = shardwalk.Graph.ppr

    def spy(self, seeds, **kwargs):
        seen.append(kwargs)
        kwargs = {k: v for k, v in kwargs.items() if k in ("k", "method")}
        return ppr(self, seeds, **kwargs)

    monkeypatch.setattr(shardwalk.Graph, "ppr", spy)
    base = ["ppr", "--data", graph_data, "--graph", "g", "--seed", 0, "--method", "exact"]
    assert run(capsys, *base)[0] == 0
    assert run(capsys, *base, "--alpha", 0.3, "--dangling", "restart")[0] == 0
    assert seen == [
        {"k": 20, "method": "exact", "accuracy": None},
        {"k": 20, "method": "exact", "accuracy": None, "alpha": 0.3, "dangling": "restart"},
    ]


@pytest.mark.skipif(
    not {"alpha", "dangling"} <= set(inspect.signature(shardwalk.Graph.ppr).parameters),
    reason="Graph.ppr does not take alpha= and dangling= yet (another change adds them)",
)
def test_ppr_alpha_and_dangling_change_the_exact_answer(graph_data, capsys):
    base = ["ppr", "--data", graph_data, "--graph", "g", "--seed", 0, "--method", "exact"]

    def scores(*extra):
        code, out, err = run(capsys, *base, "--json", *extra)
        assert code == 0, err
        result = json.loads(out)
        return {i: x for i, x in zip(result["ids"], result["scores"]) if i >= 0}

    default = scores()
    assert scores("--alpha", 0.15, "--dangling", "self_loop") == pytest.approx(default)
    cases = ((0.5, "self_loop"), (0.15, "restart"), (0.3, "drop"))
    expected = {}
    # one owner of a data directory at a time: the engine is closed before the CLI runs
    with shardwalk.Engine.open(graph_data) as engine:
        for alpha, rule in cases:
            r = engine.graph("g").ppr(0, k=20, method="exact", alpha=alpha, dangling=rule)
            expected[alpha, rule] = {
                int(i): float(x) for i, x in zip(r.ids[0], r.scores[0]) if i >= 0
            }
    code, _, err = run(capsys, *base, "--alpha", 0.5, "--dangling", "restart")
    assert code == 0 and "exact, alpha 0.5, dangling restart: error estimate" in err
    for alpha, rule in cases:
        got = scores("--alpha", alpha, "--dangling", rule)
        assert got == pytest.approx(expected[alpha, rule], rel=1e-6)
        assert got != pytest.approx(default)


def test_ppr_accuracy_and_hub_options(graph_data, capsys):
    code, _, err = run(
        capsys, "graph", "fingerprints", "--data", graph_data, "--name", "g", "--hubs", "1"
    )
    assert code == 0, err
    base = ["ppr", "--data", graph_data, "--graph", "g", "--seed", 0, "--json"]
    for accuracy in ("fast", "high"):
        code, out, err = run(capsys, *base, "--accuracy", accuracy)
        assert code == 0, err
        assert json.loads(out)["method"] in ("hybrid", "fingerprint", "push")  # calibrated
    code, _, err = run(capsys, *base, "--accuracy", "high", "--method", "push")
    assert code == 2 and "not both" in err
    with pytest.raises(SystemExit):
        main(["graph", "fingerprints", "--data", str(graph_data), "--name", "g", "--hubs", "x"])
    assert "expected auto or a count" in capsys.readouterr().err
