"""``shardwalk keys new``: a random API key and the ``[[api_keys]]`` entry that admits it."""

from __future__ import annotations

import argparse
import json
from typing import Any

from shardwalk.cli.common import add_command, add_group

__all__ = ["add_keys", "cmd_keys_new"]


def cmd_keys_new(args: argparse.Namespace) -> int:
    """A new random API key and its SHA-256, with the [[api_keys]] entry that admits it."""
    import hashlib
    import secrets

    key = secrets.token_urlsafe(32)  # 256 random bits
    digest = hashlib.sha256(key.encode()).hexdigest()
    if args.json:
        print(json.dumps({"key": key, "key_sha256": digest}))
        return 0
    who = 'role = "admin"' if args.admin else f"tenant = {json.dumps(args.tenant or 'TENANT')}"
    print(f"key        {key}")
    print(f"key_sha256 {digest}")
    print()
    print("# the server's config (--config) keeps only the hash; the client sends the key")
    print("[[api_keys]]")
    print(f'key_sha256 = "{digest}"')
    print(who + ("" if args.admin or args.tenant else '  # or role = "admin"'))
    return 0


def add_keys(sub: Any) -> None:
    k = add_command(
        add_group(sub, "keys", "API keys: new"),
        "new",
        "make a random API key and its key_sha256",
        "Print a new random API key (256 bits) and its SHA-256, with the [[api_keys]] entry for "
        "the server's config: the config keeps only key_sha256, the client sends the key.",
        run=cmd_keys_new,
    )
    who = k.add_mutually_exclusive_group()
    who.add_argument("--tenant", help="the tenant the key's calls are scoped to")
    who.add_argument("--admin", action="store_true", help="an admin key")
    k.add_argument("--json", action="store_true", help='print {"key": ..., "key_sha256": ...}')
