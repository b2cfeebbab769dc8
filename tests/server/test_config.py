"""The server's TOML config: every mistake named with where it is; keys compared as digests."""

from __future__ import annotations

import hashlib

import pytest
from shardwalk.server.config import load_config, parse_config

from shardwalk.errors import InvalidArgumentError, UnauthenticatedError

ADMIN = {"key": "admin-secret", "role": "admin"}


def test_keys_map_to_tenants_and_admins() -> None:
    digest = hashlib.sha256(b"acme-secret").hexdigest()
    config = parse_config({"api_keys": [ADMIN, {"key_sha256": digest, "tenant": "acme"}]})
    assert config.principal("admin-secret").admin
    acme = config.principal("acme-secret")
    assert acme.tenant == "acme" and not acme.admin
    with pytest.raises(UnauthenticatedError, match="unknown API key"):
        config.principal("acme-secreT")
    with pytest.raises(UnauthenticatedError, match="no API key"):
        config.principal(None)
    assert config.limits.max_k == 1000  # defaults


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({}, "at least one"),
        ({"api_keys": [{"role": "admin"}]}, "exactly one of key, key_sha256"),
        ({"api_keys": [{"key": "short", "role": "admin"}]}, "8\\+ characters"),
        ({"api_keys": [{"key_sha256": "abc", "role": "admin"}]}, "64 hex digits"),
        ({"api_keys": [{"key": "long-enough"}]}, "exactly one of tenant"),
        ({"api_keys": [{"key": "long-enough", "role": "root"}]}, 'role must be "admin"'),
        ({"api_keys": [ADMIN, ADMIN]}, "twice"),
        ({"api_keys": [{**ADMIN, "tenat": "x"}]}, "unknown setting\\(s\\) tenat"),
        ({"api_keys": [ADMIN], "limits": {"max_k": 0}}, "max_k must be a positive integer"),
        ({"api_keys": [ADMIN], "limits": {"max_kk": 5}}, "unknown setting"),
        ({"api_keys": [ADMIN], "tls": {"cert": "a.pem"}}, "both cert and key"),
        ({"api_keys": [ADMIN], "port": 1}, "unknown setting\\(s\\) port"),
    ],
)
def test_config_mistakes_are_named(raw: dict, message: str) -> None:
    with pytest.raises(InvalidArgumentError, match=message):
        parse_config(raw)


def test_config_files(tmp_path) -> None:
    with pytest.raises(InvalidArgumentError, match="does not exist"):
        load_config(tmp_path / "missing.toml")
    (tmp_path / "bad.toml").write_text("[[api_keys]\n")
    with pytest.raises(InvalidArgumentError, match="not TOML"):
        load_config(tmp_path / "bad.toml")
    (tmp_path / "tls.toml").write_text(
        '[[api_keys]]\nkey = "admin-secret"\nrole = "admin"\n[tls]\ncert = "c.pem"\nkey = "k.pem"\n'
    )
    with pytest.raises(InvalidArgumentError, match="cannot read"):
        load_config(tmp_path / "tls.toml")
