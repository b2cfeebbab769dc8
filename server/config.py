"""The server's TOML configuration: API keys, limits, TLS.

    [[api_keys]]
    key = "change-me"            # or key_sha256 = "<hex digest of the key>"
    role = "admin"

    [[api_keys]]
    key_sha256 = "9f86d08..."
    tenant = "acme"              # every read of this key is scoped to tenant "acme"
    collections = ["docs"]       # optional: the collections this key sees (default: all)
    graphs = ["links"]           # optional: the graphs this key sees (default: all)
    max_concurrent = 8           # optional quota: calls in flight for this key
    max_queued = 8               # and calls waiting for a slot (default 0: refused at once)
    requests_per_second = 100.0  # optional quota: a token bucket refilled at this rate,
    burst = 200                  # holding up to burst calls (default: one second's worth)

    [limits]                     # all optional; the defaults are shown
    max_message_bytes = 67108864
    max_batch = 1024             # queries per Search/Compose/PPR request
    max_k = 1000                 # k, knn_k, ppr_k
    max_ids = 100000             # ids per Get/Delete, rows per Upsert chunk, PPR seeds
    max_ef = 4096                # search parameter ef (also a collection's default ef)
    max_candidates = 16384       # search parameter candidates
    max_probes = 1024            # search parameters max_probes and nprobe
    min_r_max = 1e-7             # PPR r_max floor ("push", "hybrid"): smaller is more work
    max_rounds = 32              # PPR "fingerprint" rounds (its kernel has no deadline check)
    max_walks = 10000            # fingerprint walks_per_node and hub_walks (CreateGraph)
    max_filter_terms = 1024      # nodes of a filter tree (eq, range, all, any, not, ...)
    max_filter_values = 65536    # values of a filter's in-lists, all together
    max_deadline_s = 60.0        # a call's deadline when the client sends none, and the cap
                                 # of a longer one
    max_concurrent_requests = 64 # beyond it: RESOURCE_EXHAUSTED
    rpc_threads = 4              # threads running calls (default: 2 per core, at least 4;
                                 # `threads`, its old name, still works with a warning; the
                                 # engine's own budget is `serve --engine-threads`)
    background_nice = 10         # graph solves and maintenance run this much nicer than
                                 # searches (0: at the same priority; server/lanes.py)

    [tls]                        # optional: serve TLS instead of plaintext
    cert = "server.crt"
    key = "server.key"
    client_ca = "ca.pem"         # optional: mutual TLS, clients need a certificate it signed

    [server]                     # optional
    reflection = false           # gRPC server reflection (answers without an API key)
    coalesce_window_us = 0       # > 0: concurrent single-query Searches of one collection,
                                 # scope, filter and parameters share one batch call, each
                                 # waiting at most this long for it to start (0: off;
                                 # server/coalesce.py)
    coalesce_max_queries = 32    # queries per coalesced batch at most

Keys are kept as SHA-256 digests and compared in constant time. A request above a limit, and
a call past its key's quota, is refused with RESOURCE_EXHAUSTED naming the setting, before any
work (see :mod:`shardwalk.server.limits`).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import sys
from dataclasses import dataclass, field
from typing import Any

from shardwalk.errors import InvalidArgumentError, UnauthenticatedError

log = logging.getLogger("shardwalk.server")

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["Config", "Limits", "Principal", "Quota", "load_config"]


@dataclass(frozen=True, kw_only=True)
class Quota:
    """Per-key quotas of an ``[[api_keys]]`` entry (None: unlimited). ``requests_per_second``
    is a token bucket: it holds up to ``burst`` tokens (default: one second's worth, at least
    1), refills at that rate, and every call takes one."""

    max_concurrent: int | None = None
    # calls past max_concurrent that wait for a slot (queued without a thread) before more
    # are refused
    max_queued: int = 0
    requests_per_second: float | None = None
    burst: int | None = None


@dataclass(frozen=True)
class Principal:
    """Who is calling: an admin, or a tenant whose reads are scoped to it."""

    tenant: str | None  # None for admins
    admin: bool = False
    quota: Quota | None = field(default=None, compare=False)  # this key's, if it has one
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
    # every other dimension of a request (server/limits.py checks them before any work)
    max_ids: int = 100_000
    max_ef: int = 4096
    max_candidates: int = 16_384
    max_probes: int = 1024
    min_r_max: float = 1e-7
    max_rounds: int = 32
    max_walks: int = 10_000
    max_filter_terms: int = 1024
    max_filter_values: int = 65_536
    max_deadline_s: float = 60.0
    max_concurrent_requests: int = 64
    # handlers hold the GIL for their Python parts: more threads than this only add contention
    # (bench/README.md, "The gRPC service": server-sync-16threads against the default); a
    # client-streaming Upsert holds a thread while its chunks arrive: raise it for many uploaders
    rpc_threads: int = field(default_factory=lambda: max(4, 2 * (os.cpu_count() or 1)))
    # PPR, Compose and the maintenance RPCs run on threads this much nicer (server/lanes.py)
    background_nice: int = 10

    @property
    def threads(self) -> int:
        """The old name of :attr:`rpc_threads`."""
        return self.rpc_threads


@dataclass(frozen=True, kw_only=True)
class Config:
    keys: dict[bytes, Principal] = field(default_factory=dict)  # sha256(key) -> principal
    limits: Limits = field(default_factory=Limits)
    tls_cert: bytes | None = None
    tls_key: bytes | None = None
    tls_client_ca: bytes | None = None  # mutual TLS: the CA (PEM) client certificates chain to
    # reflection answers anyone (it sits outside the API key check) and lists the service's
    # schema: off unless asked for (grpcurl and other generic tools need it)
    reflection: bool = False
    # coalescing of concurrent single-query searches (server/coalesce.py): 0 is off
    coalesce_window_s: float = 0.0
    coalesce_max_queries: int = 32

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
    except UnicodeDecodeError:
        raise InvalidArgumentError(
            f"config file {os.fspath(path)!r} is not TOML: it is not UTF-8 text (check --config)"
        ) from None
    return parse_config(raw, where=os.fspath(path), base=os.path.dirname(os.fspath(path)))


def parse_config(raw: dict[str, Any], *, where: str = "config", base: str = ".") -> Config:
    _known(raw, {"api_keys", "limits", "tls", "server"}, where)
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
        _known(entry, {"key", "key_sha256", "tenant", "role", "collections", "graphs", *_QUOTA}, at)
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
        keys[digest] = Principal(
            tenant=None if role else tenant,
            admin=bool(role),
            quota=_quota(entry, at),
            **scoped,
        )

    limits_raw = dict(raw.get("limits", {}))
    if "threads" in limits_raw:  # renamed: "threads" read like the engine's thread budget
        if "rpc_threads" in limits_raw:
            raise InvalidArgumentError(
                f"{where}: [limits] threads is the old name of rpc_threads; give only rpc_threads"
            )
        log.warning(
            "%s: [limits] threads is deprecated: it is now rpc_threads (the threads running "
            "calls; the engine's thread budget is `serve --engine-threads`)",
            where,
        )
        limits_raw["rpc_threads"] = limits_raw.pop("threads")
    _known(limits_raw, set(Limits.__dataclass_fields__), f"{where}: [limits]")
    for name, value in limits_raw.items():
        if name in _FLOAT_LIMITS:
            _positive_number(value, f"{where}: [limits] {name}")
        elif name == "background_nice":
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 19:
                raise InvalidArgumentError(
                    f"{where}: [limits] background_nice must be an integer from 0 (off) to 19;"
                    f" got {value!r}"
                )
        elif isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InvalidArgumentError(
                f"{where}: [limits] {name} must be a positive integer; got {value!r}"
            )
    values: dict[str, Any] = {
        n: float(v) if n in _FLOAT_LIMITS else v for n, v in limits_raw.items()
    }
    limits = Limits(**values)

    tls = raw.get("tls")
    cert = key = client_ca = None
    if tls is not None:
        _known(tls, {"cert", "key", "client_ca"}, f"{where}: [tls]")
        if not {"cert", "key"} <= set(tls):
            raise InvalidArgumentError(
                f"{where}: [tls] needs both cert and key (PEM files); client_ca is optional"
            )
        cert, key = (
            _read(os.path.join(base, tls[n]), f"{where}: [tls] {n}") for n in ("cert", "key")
        )
        if "client_ca" in tls:
            client_ca = _read(os.path.join(base, tls["client_ca"]), f"{where}: [tls] client_ca")

    server = raw.get("server", {})
    _known(
        server, {"reflection", "coalesce_window_us", "coalesce_max_queries"}, f"{where}: [server]"
    )
    reflection = server.get("reflection", False)
    if not isinstance(reflection, bool):
        raise InvalidArgumentError(
            f"{where}: [server] reflection must be true or false; got {reflection!r}"
        )
    window = server.get("coalesce_window_us", 0)
    if isinstance(window, bool) or not isinstance(window, int | float) or not 0 <= window <= 1e6:
        raise InvalidArgumentError(
            f"{where}: [server] coalesce_window_us must be a number of microseconds from 0 (off) "
            f"to 1000000; got {window!r}"
        )
    most = server.get("coalesce_max_queries", 32)
    if isinstance(most, bool) or not isinstance(most, int) or most < 2:
        raise InvalidArgumentError(
            f"{where}: [server] coalesce_max_queries must be an integer >= 2; got {most!r}"
        )
    return Config(
        keys=keys,
        limits=limits,
        tls_cert=cert,
        tls_key=key,
        tls_client_ca=client_ca,
        reflection=reflection,
        coalesce_window_s=window / 1e6,
        coalesce_max_queries=most,
    )


_FLOAT_LIMITS = {"min_r_max", "max_deadline_s"}
_QUOTA = ("max_concurrent", "max_queued", "requests_per_second", "burst")


def _quota(entry: dict[str, Any], at: str) -> Quota | None:
    """The quotas of an [[api_keys]] entry (None when it sets none)."""
    if not any(name in entry for name in _QUOTA):
        return None
    for name in ("max_concurrent", "burst"):
        value = entry.get(name)
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or value < 1
        ):
            raise InvalidArgumentError(f"{at}: {name} must be a positive integer; got {value!r}")
    queued = entry.get("max_queued", 0)
    if isinstance(queued, bool) or not isinstance(queued, int) or queued < 0:
        raise InvalidArgumentError(
            f"{at}: max_queued must be an integer >= 0 (the calls that may wait for a "
            f"max_concurrent slot); got {queued!r}"
        )
    if queued and entry.get("max_concurrent") is None:
        raise InvalidArgumentError(
            f"{at}: max_queued is the line of calls waiting for a max_concurrent slot; set "
            "max_concurrent too"
        )
    rate = entry.get("requests_per_second")
    if rate is not None:
        rate = _positive_number(rate, f"{at}: requests_per_second")
    elif "burst" in entry:
        raise InvalidArgumentError(
            f"{at}: burst is the size of the requests_per_second bucket; set requests_per_second too"
        )
    return Quota(
        max_concurrent=entry.get("max_concurrent"),
        max_queued=queued,
        requests_per_second=rate,
        burst=entry.get("burst"),
    )


def _positive_number(value: Any, what: str) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not 0 < value < float("inf")
    ):
        raise InvalidArgumentError(f"{what} must be a positive number; got {value!r}")
    return float(value)


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
