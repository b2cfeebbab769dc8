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


def test_limits_and_quotas_parse() -> None:
    config = parse_config(
        {
            "api_keys": [
                ADMIN,
                {"key": "acme-secret", "tenant": "acme", "max_concurrent": 4,
                 "requests_per_second": 2.5, "burst": 10},
                {"key": "beta-secret", "tenant": "beta", "requests_per_second": 50},
            ],
            "limits": {"max_ids": 5, "min_r_max": 1e-6, "max_deadline_s": 2, "max_ef": 64},
        }
    )  # fmt: skip
    acme = config.principal("acme-secret")
    assert (acme.quota.max_concurrent, acme.quota.requests_per_second, acme.quota.burst) == (
        4,
        2.5,
        10,
    )
    assert config.principal("beta-secret").quota.max_concurrent is None
    assert config.principal("admin-secret").quota is None
    limits = config.limits
    assert (limits.max_ids, limits.min_r_max, limits.max_deadline_s, limits.max_ef) == (
        5,
        1e-6,
        2.0,
        64,
    )
    assert isinstance(limits.max_deadline_s, float)
    defaults = parse_config({"api_keys": [ADMIN]}).limits
    assert defaults.max_deadline_s == 60.0 and defaults.max_filter_terms == 1024


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"max_concurrent": 0}, "max_concurrent must be a positive integer"),
        ({"max_concurrent": 1.5}, "max_concurrent must be a positive integer"),
        ({"requests_per_second": 0}, "requests_per_second must be a positive number"),
        ({"requests_per_second": "fast"}, "requests_per_second must be a positive number"),
        ({"requests_per_second": float("inf")}, "requests_per_second must be a positive number"),
        ({"requests_per_second": 5, "burst": 0}, "burst must be a positive integer"),
        ({"burst": 5}, "set requests_per_second too"),
        ({"max_concurent": 5}, "unknown setting\\(s\\) max_concurent"),
    ],
)
def test_quota_mistakes_are_named(entry: dict, message: str) -> None:
    with pytest.raises(InvalidArgumentError, match=message):
        parse_config({"api_keys": [{"key": "acme-secret", "tenant": "acme", **entry}]})


@pytest.mark.parametrize(
    ("limits", "message"),
    [
        ({"max_deadline_s": 0}, "max_deadline_s must be a positive number"),
        ({"min_r_max": -1e-6}, "min_r_max must be a positive number"),
        ({"max_ids": 2.5}, "max_ids must be a positive integer"),
        ({"max_filter_terms": True}, "max_filter_terms must be a positive integer"),
    ],
)
def test_limit_mistakes_are_named(limits: dict, message: str) -> None:
    with pytest.raises(InvalidArgumentError, match=message):
        parse_config({"api_keys": [ADMIN], "limits": limits})


def test_documented_config_parses(tmp_path) -> None:
    """The example in server/config.py's docstring is a valid config with every [limits]
    setting (the README's lists the same)."""
    import textwrap

    from shardwalk.server import config as module
    from shardwalk.server.config import Limits

    doc = module.__doc__
    example = textwrap.dedent(doc[doc.index("    [[api_keys]]") : doc.index("    [tls]")])
    example = example.replace('key_sha256 = "9f86d08..."', 'key = "another-key"')
    (tmp_path / "server.toml").write_text(example)
    config = load_config(tmp_path / "server.toml")
    assert config.principal("another-key").quota.burst == 200
    documented = {line.split("=")[0].strip() for line in example.split("[limits]")[1].splitlines()}
    assert set(Limits.__dataclass_fields__) <= documented
