"""The server's TOML configuration: API keys, limits, TLS.

    [[api_keys]]
    key = "change-me"            # or key_sha256 = "<hex digest of the key>"
    role = "admin"

    [[api_keys]]
    key_sha256 = "9f86d08..."
    tenant = "acme"              # every read of this key is scoped to tenant "acme"
    collections = ["docs"]       # optional: the collections this key sees (default: all)
    graphs = ["links"]           # optional: the graphs this key sees (default: all)

    [limits]                     # all optional; the defaults are shown
    max_message_bytes = 67108864
    max_batch = 1024             # queries per Search/Compose/PPR request
    max_k = 1000
    max_concurrent_requests = 64 # beyond it: RESOURCE_EXHAUSTED
    threads = 4                  # handler threads (default: 2 per core, at least 4)

    [tls]                        # optional: serve TLS instead of plaintext
    cert = "server.crt"
    key = "server.key"

Keys are kept as SHA-256 digests and compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import sys
from dataclasses import dataclass, field
from typing import Any

from shardwalk.errors import InvalidArgumentError, UnauthenticatedError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["Config", "Limits", "Principal", "load_config"]


@dataclass(frozen=True)
class Principal:
    """Who is calling: an admin, or a tenant whose reads are scoped to it."""

    tenant: str | None  # None for admins
    admin: bool = False
    # the collections and graphs this key sees and names (None: every one)
    collections: frozenset[str] | None = None
    graphs: frozenset[str] | None = None

    def may_see_collection(self, name: str) -> bool:
        return self.collections is None or name in self.collections

    def may_see_graph(self, name: str) -> bool:
        return self.graphs is None or name in self.graphs

    @property
    def label(self) -> str:
        """For logs and metrics."""
        return "admin" if self.admin else str(self.tenant)


@dataclass(frozen=True, kw_only=True)
class Limits:
    max_message_bytes: int = 64 * 2**20
    max_batch: int = 1024
    max_k: int = 1000
    max_concurrent_requests: int = 64
    # handlers hold the GIL for their Python parts: more threads than this only add contention
    # (bench/server.py on 2 cores: 16 threads 1,534 QPS at 8 clients, 4 threads 2,454); a
    # client-streaming Upsert holds a thread while its chunks arrive: raise it for many uploaders
    threads: int = field(default_factory=lambda: max(4, 2 * (os.cpu_count() or 1)))


@dataclass(frozen=True, kw_only=True)
class Config:
    keys: dict[bytes, Principal] = field(default_factory=dict)  # sha256(key) -> principal
    limits: Limits = field(default_factory=Limits)
    tls_cert: bytes | None = None
    tls_key: bytes | None = None

    def principal(self, key: str | None) -> Principal:
        """The caller of an API key; ``UnauthenticatedError`` for a missing or unknown one."""
        if not key:
            raise UnauthenticatedError(
                "no API key: send it in the 'authorization' metadata ('Bearer <key>')"
            )
        digest = hashlib.sha256(key.encode()).digest()
        found = None
        for known, principal in self.keys.items():  # all compared: constant time per key
            if hmac.compare_digest(known, digest):
                found = principal
        if found is None:
            raise UnauthenticatedError("unknown API key")
        return found


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read and check a configuration file (``InvalidArgumentError`` naming the entry)."""
    try:
        with open(path, "rb") as f:
            raw = tomllib.load(f)
    except FileNotFoundError:
        raise InvalidArgumentError(f"config file {os.fspath(path)!r} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise InvalidArgumentError(f"config file {os.fspath(path)!r} is not TOML: {exc}") from None
    return parse_config(raw, where=os.fspath(path), base=os.path.dirname(os.fspath(path)))


def parse_config(raw: dict[str, Any], *, where: str = "config", base: str = ".") -> Config:
    _known(raw, {"api_keys", "limits", "tls"}, where)
    keys: dict[bytes, Principal] = {}
    entries = raw.get("api_keys", [])
    if not isinstance(entries, list) or not entries:
        raise InvalidArgumentError(
            f"{where}: needs at least one [[api_keys]] entry (key or key_sha256, and tenant or "
            'role = "admin")'
        )
    for i, entry in enumerate(entries):
        at = f"{where}: api_keys[{i}]"
        if not isinstance(entry, dict):
            raise InvalidArgumentError(f"{at} must be a table")
        _known(entry, {"key", "key_sha256", "tenant", "role", "collections", "graphs"}, at)
        if ("key" in entry) == ("key_sha256" in entry):
            raise InvalidArgumentError(f"{at} needs exactly one of key, key_sha256")
        if "key" in entry:
            if not isinstance(entry["key"], str) or len(entry["key"]) < 8:
                raise InvalidArgumentError(f"{at}: key must be a string of 8+ characters")
            digest = hashlib.sha256(entry["key"].encode()).digest()
        else:
            try:
                digest = bytes.fromhex(entry["key_sha256"])
            except (TypeError, ValueError):
                digest = b""
            if len(digest) != 32:
                raise InvalidArgumentError(f"{at}: key_sha256 must be 64 hex digits")
        role, tenant = entry.get("role"), entry.get("tenant")
        if (role is None) == (tenant is None):
            raise InvalidArgumentError(f'{at} needs exactly one of tenant = "...", role = "admin"')
        if role is not None and role != "admin":
            raise InvalidArgumentError(f'{at}: role must be "admin"; got {role!r}')
        if tenant is not None and (not isinstance(tenant, str) or not tenant):
            raise InvalidArgumentError(f"{at}: tenant must be a non-empty string")
        if digest in keys:
            raise InvalidArgumentError(f"{at}: the same key appears twice")
        scoped = {
            n: _names(entry[n], f"{at}: {n}") for n in ("collections", "graphs") if n in entry
        }
        if role and scoped:
            raise InvalidArgumentError(
                f"{at}: {', '.join(scoped)} scope tenant keys; an admin key sees every "
                "collection and graph (remove them, or make it a tenant key)"
            )
        keys[digest] = Principal(tenant=None, admin=True) if role else Principal(tenant, **scoped)

    limits_raw = raw.get("limits", {})
    _known(limits_raw, set(Limits.__dataclass_fields__), f"{where}: [limits]")
    for name, value in limits_raw.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InvalidArgumentError(
                f"{where}: [limits] {name} must be a positive integer; got {value!r}"
            )
    limits = Limits(**limits_raw)

    tls = raw.get("tls")
    cert = key = None
    if tls is not None:
        _known(tls, {"cert", "key"}, f"{where}: [tls]")
        if set(tls) != {"cert", "key"}:
            raise InvalidArgumentError(f"{where}: [tls] needs both cert and key (PEM files)")
        cert, key = (
            _read(os.path.join(base, tls[n]), f"{where}: [tls] {n}") for n in ("cert", "key")
        )
    return Config(keys=keys, limits=limits, tls_cert=cert, tls_key=key)


def _names(value: Any, where: str) -> frozenset[str]:
    """A key's ``collections`` or ``graphs``: a list of names."""
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise InvalidArgumentError(
            f'{where} must be a list of names, e.g. ["docs", "notes"]; got {value!r}'
        )
    return frozenset(value)


def _known(table: Any, allowed: set[str], where: str) -> None:
    if not isinstance(table, dict):
        raise InvalidArgumentError(f"{where} must be a table")
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise InvalidArgumentError(
            f"{where}: unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(allowed))}"
        )


def _read(path: str, what: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise InvalidArgumentError(f"{what}: cannot read {path!r} ({exc.strerror})") from None
