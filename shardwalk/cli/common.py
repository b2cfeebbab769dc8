"""What the commands share: argparse types and the help formatter, --param parsing, and the
opening of data directories."""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import shutil
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from shardwalk.cli.errors import DEBUG_ENV
from shardwalk.errors import InvalidArgumentError, NotFoundError
from shardwalk.storage import MANIFEST

INDEXES = ["flat", "hnsw", "partitioned", "multitenant", "spann"]
METRICS = ["l2", "ip", "cosine"]
MUST_EXIST = "data directory (must exist)"
CREATED_IF_MISSING = "data directory (created if missing)"
DEBUG_HELP = f"on a failure, also print the Python traceback (or set {DEBUG_ENV}=1)"


# -- the parser -----------------------------------------------------------------------------------
class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Defaults in the help, except where there is none to show (None, False, [])."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        default = action.default
        if default is None or default is False or default == [] or action.required:
            return action.help
        return super()._get_help_string(action)


def add_command(
    group: Any,
    name: str,
    help: str,
    description: str | None = None,
    *,
    run: Callable[[argparse.Namespace], int] | None = None,
) -> Any:
    """A command of ``group`` (the subparsers of ``shardwalk`` or of a command group) that
    ``run`` carries out (None: a command group, whose subcommands do)."""
    p = group.add_parser(
        name, help=help, description=description or help, formatter_class=HelpFormatter
    )
    # also after the command; SUPPRESS keeps a --debug given before it
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=DEBUG_HELP)
    if run is not None:
        p.set_defaults(run=run)
    return p


def data_flag(p: argparse.ArgumentParser, help: str = MUST_EXIST) -> None:
    """--data, the data directory every command but quickstart requires."""
    p.add_argument("--data", required=True, help=help)


def target_flags(p: argparse.ArgumentParser, flag: str, help: str, data: str = MUST_EXIST) -> None:
    """--data and the collection or graph a command works on (``flag``: --collection, --graph
    or --name), both required."""
    data_flag(p, data)
    p.add_argument(flag, required=True, help=help)


def input_flags(
    p: argparse.ArgumentParser,
    path: str,
    flag: str,
    help: str,
    data: str = MUST_EXIST,
    *,
    formats: Sequence[str] = (),
    format_help: str = "",
) -> None:
    """What a command that loads a file into a collection or graph takes first: the file
    (``path``: its help), then :func:`target_flags`; with ``formats``, --format choosing among
    them or "auto" (the default: from the file, ``format_help`` says how)."""
    p.add_argument("path", help=path)
    target_flags(p, flag, help, data)
    if formats:
        p.add_argument("--format", default="auto", choices=["auto", *formats], help=format_help)


def flag_values(args: argparse.Namespace, *names: str) -> dict[str, Any]:
    """The values of the flags ``names`` (their dests), as the keyword arguments of a call
    whose parameters are named as those flags are."""
    return {name: getattr(args, name) for name in names}


def column_args(args: argparse.Namespace) -> dict[str, Any]:
    """The Parquet columns named by --id-column, --vector-column and --tenant-column, as the
    keyword arguments of the readers and builders that take them."""
    return flag_values(args, "id_column", "vector_column", "tenant_column")


def param_flag(p: argparse.ArgumentParser, help: str) -> None:
    """--param NAME=VALUE, repeatable (read by :func:`parse_params`)."""
    p.add_argument("--param", action="append", default=[], metavar="NAME=VALUE", help=help)


def add_group(sub: Any, name: str, help: str) -> Any:
    """A command of subcommands (``shardwalk graph ingest``): its subparsers."""
    return add_command(sub, name, help).add_subparsers(dest=f"{name}_command", required=True)


def ray_flags(p: argparse.ArgumentParser, workers: str) -> None:
    """--ray or --address (where the job runs) and --num-workers (``workers``: its help)."""
    where = p.add_mutually_exclusive_group()
    where.add_argument("--ray", action="store_true", help="run on a local Ray (127.0.0.1)")
    where.add_argument("--address", default=None, help="run on the Ray cluster at ADDR")
    p.add_argument("--num-workers", type=count_type, default=None, metavar="N", help=workers)


def count_type(text: str) -> int:
    """argparse type of a count: an integer >= 1 (said with the flag the user typed)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1; got {text!r}")
    return value


# -- parameters ---------------------------------------------------------------------------------
def parse_value(text: str) -> Any:
    """An int, else a finite float, else true/false, else the string itself."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        number = float(text)
    except ValueError:
        pass
    else:
        if math.isfinite(number):  # "nan", "inf" stay strings: no parameter takes them
            return number
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    return text


def parse_params(items: Sequence[str]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name or not value:
            raise InvalidArgumentError(
                f"--param takes NAME=VALUE (e.g. m=16, quantization=sq8); got {item!r}"
            )
        if name in params:
            raise InvalidArgumentError(f"--param {name} is given twice")
        params[name] = parse_value(value)
    return params


@contextlib.contextmanager
def param_errors(items: Sequence[str]) -> Iterator[None]:
    """Re-raise the body's InvalidArgumentError about a --param (``items``: the --param
    values) with how the command line read that value (:func:`with_param_types`)."""
    try:
        yield
    except InvalidArgumentError as exc:
        raise with_param_types(exc, items) from None


def with_param_types(exc: InvalidArgumentError, items: Sequence[str]) -> InvalidArgumentError:
    """The engine's error about a --param, plus how the command line read that value."""
    message = str(exc)
    notes = []
    for item in items:
        name, _, raw = item.partition("=")
        if f"parameter {name} " in message or f"parameter {name!r}" in message:
            value = parse_value(raw)
            notes.append(f"--param {item} was read as {type(value).__name__} {value!r}")
    if not notes:
        return exc
    return InvalidArgumentError(f"{message} ({'; '.join(notes)})")


# -- data directories ---------------------------------------------------------------------------
def open_existing(path: str) -> Any:
    """Open a data directory that must exist already (a mistyped --data creates nothing)."""
    from shardwalk import Engine

    require_data_dir(path, "create one with 'shardwalk ingest' or 'shardwalk graph ingest'")
    return Engine.open(path)


def require_data_dir(path: str, remedy: str) -> None:
    """Raise NotFoundError unless ``path`` is a data directory (has a manifest): what is there
    instead, and ``remedy`` besides checking --data."""
    if not os.path.isfile(os.path.join(path, MANIFEST)):
        raise NotFoundError(
            f"no shardwalk data directory at {path!r} (no {MANIFEST}; {what_is_there(path)}); "
            f"check --data, or {remedy}"
        )


def what_is_there(path: str) -> str:
    if os.path.isdir(path):
        return "the directory exists"
    return "a file is there" if os.path.lexists(path) else "nothing is there"


@contextlib.contextmanager
def engine_for_writing(path: str) -> Iterator[Any]:
    """Open (or create) a data directory; if the body fails, remove what opening created."""
    from shardwalk import Engine

    root = os.path.abspath(path)
    created = None  # the topmost directory this call creates (parents included)
    probe = root
    while not os.path.lexists(probe):
        created, probe = probe, os.path.dirname(probe)
    had_manifest = os.path.isfile(os.path.join(root, MANIFEST))
    engine = None
    try:
        engine = Engine.open(path)
        yield engine
    except BaseException:
        if engine is not None:
            with contextlib.suppress(Exception):
                engine.close()
        if created is not None:
            shutil.rmtree(created, ignore_errors=True)
        elif not had_manifest and os.path.isdir(root):
            # an existing directory that was not a data directory: take back only our files
            for name in (MANIFEST, "LOCK"):
                with contextlib.suppress(OSError):
                    os.remove(os.path.join(root, name))
            for name in ("collections", "graphs"):
                with contextlib.suppress(OSError):
                    os.rmdir(os.path.join(root, name))
        raise
    engine.close()
