"""The Backup RPC on a real server: admin keys only, an absolute destination on the server's
machine, the library's errors; the copy opens while the server goes on serving."""

from __future__ import annotations

import numpy as np
import pytest

import shardwalk

from .conftest import Running, key_of


def test_backup_over_grpc(running: Running, tmp_path) -> None:
    admin = running.client(timeout=120)
    name = f"backed_{id(running)}"  # the server (one per module and model) is shared
    admin.create_collection(name, dim=4, index="flat")
    vectors = np.random.default_rng(0).standard_normal((30, 4)).astype(np.float32)
    admin.collection(name).upsert(np.arange(30), vectors, tenants="t0")

    tenant = running.client(key_of("t0"))
    with pytest.raises(shardwalk.PermissionDeniedError, match="Backup needs an admin API key"):
        tenant.backup(str(tmp_path / "by-tenant"))
    assert not (tmp_path / "by-tenant").exists()
    with pytest.raises(shardwalk.InvalidArgumentError, match="must be an absolute path"):
        admin.backup("relative/copy")
    with pytest.raises(shardwalk.InvalidArgumentError, match="must be an absolute path"):
        admin.backup("")
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "file").write_text("x")
    with pytest.raises(shardwalk.AlreadyExistsError, match="is not empty"):
        admin.backup(str(tmp_path / "taken"))
    with pytest.raises(shardwalk.InvalidArgumentError, match="inside the data directory"):
        admin.backup(f"{running.engine.path}/collections/x")

    report = admin.backup(str(tmp_path / "copy"))
    assert name in report["collections"] and report["destination"] == str(tmp_path / "copy")
    copied = admin.backup(str(tmp_path / "copied"), link=False)
    assert copied["linked"] == 0 and copied["copied"] == copied["files"]
    admin.collection(name).upsert([99], vectors[:1], tenants="t0")  # still serving writes
    for path in ("copy", "copied"):
        with shardwalk.Engine.open(tmp_path / path) as engine:
            restored = engine.collection(name)
            assert len(restored) == 30 and 99 not in restored
            np.testing.assert_array_equal(restored.get(np.arange(30)).vectors, vectors)
