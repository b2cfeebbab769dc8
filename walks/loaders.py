"""Graph loaders: SNAP edge lists (plain or compressed, parsed by pyarrow.csv), Parquet/Arrow
tables, numpy arrays.

Every loader ends in :meth:`CSRGraph.from_edges`, so self-loops, duplicates and weights follow
the rules documented in ``shardwalk.walks.graph``; extra keyword arguments (``directed``,
``self_loops``, ``duplicates``, ``node_ids``) are passed through.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from shardwalk.walks._check import as_ids
from shardwalk.walks.graph import CSRGraph

from shardwalk.errors import InvalidArgumentError, NotFoundError

__all__ = [
    "edge_list_columns",
    "from_arrow",
    "load_edge_list",
    "load_npy_dir",
    "load_numpy",
    "load_parquet",
    "read_edge_list",
]

_MAX_EXACT_FLOAT = 2**53
# compressed edge lists are recognised by their first bytes, whatever the suffix
_COMPRESSION = ((b"\x1f\x8b", "gzip"), (b"BZh", "bz2"), (b"\x28\xb5\x2f\xfd", "zstd"))
_NPY_MAGIC = b"\x93NUMPY"
_INTEGER = re.compile(rb"[+-]?[0-9]+")
_ACCEPTED = (
    "accepted: text edge lists ('src dst [weight]' per line, plain, gzip, bz2 or zstd; "
    "load_edge_list, --format snap), Parquet (load_parquet, --format parquet), (E, 2) or "
    "(E, 3) .npy arrays (load_numpy, --format npy), directories of edges.npy [+ ids.npy, "
    "weights.npy] (load_npy_dir, --format npy)"
)
_HINT = "skip_rows (--skip-rows) skips header lines, comment (--comment) sets the comment markers"


def _opener(path: Path) -> Callable[[], Any]:
    """A function returning a fresh pyarrow input stream over the (decompressed) text."""
    import pyarrow as pa

    if not path.exists():
        raise NotFoundError(f"edge list {path} does not exist")
    if path.is_dir():
        raise InvalidArgumentError(f"{path} is a directory, not an edge list; {_ACCEPTED}")
    with open(path, "rb") as f:
        head = f.read(8)
    compression = next((name for magic, name in _COMPRESSION if head.startswith(magic)), None)
    if compression is not None and not pa.Codec.is_available(compression):
        raise InvalidArgumentError(
            f"{path} is {compression}-compressed, which this pyarrow cannot read; decompress it"
        )
    if head.startswith(_NPY_MAGIC):
        array = np.load(path, mmap_mode="r", allow_pickle=False)
        raise InvalidArgumentError(
            f"{path} is a NumPy .npy file ({array.dtype} array of shape {array.shape}), not a "
            f"text edge list; {_ACCEPTED}"
        )
    if head.startswith(b"PAR1"):
        raise InvalidArgumentError(f"{path} is a Parquet file, not a text edge list; {_ACCEPTED}")
    return lambda: pa.input_stream(str(path), compression=compression, buffer_size=1 << 20)


def _lines(stream: Any, chunk: int = 1 << 20) -> Iterator[bytes]:
    """The lines of a stream without their line endings, read a chunk at a time."""
    rest = b""
    while block := stream.read(chunk):
        lines = (rest + block).split(b"\n")
        rest = lines.pop()
        for line in lines:
            yield line.rstrip(b"\r")
    if rest:
        yield rest.rstrip(b"\r")


def _is_skipped(line: bytes, markers: frozenset[bytes]) -> bool:
    """Blank lines and lines whose first non-blank character is a comment marker."""
    stripped = line.lstrip(b" \t")
    return not stripped.strip() or stripped[:1] in markers


def _fields(line: bytes, delimiter: bytes | None) -> list[bytes]:
    return (line.replace(delimiter, b" ") if delimiter else line).split()


def _bad_line(path: Any, lineno: int, data_line: int, line: bytes, ncols: int, weighted: bool):
    return InvalidArgumentError(
        f"{path}: line {lineno} (data line {data_line} after comments) is not {ncols} "
        f"{'numbers' if weighted else 'integers'}: {line[:80].decode(errors='replace')!r} "
        f"({_HINT})"
    )


def _read_table(
    source: Any,
    *,
    delimiter: str,
    skip: int,
    ncols: int,
    used: tuple[int, ...],
    weighted: bool,
    comment: str,
) -> tuple[np.ndarray, ...]:
    """Parse with pyarrow.csv; the used columns as arrays. Raises pyarrow.ArrowInvalid on
    anything irregular (ragged or non-numeric rows, empty fields): the caller then normalises."""
    import pyarrow as pa
    import pyarrow.csv as csv

    markers = tuple(comment)

    def on_invalid(row: Any) -> str:
        # mid-file comments and whitespace-only lines; anything else is an error
        try:
            text = row.text.lstrip(" \t")
        except UnicodeDecodeError:  # binary further down: the line-by-line pass names it
            return "error"
        return "skip" if not text.strip() or text.startswith(markers) else "error"

    names = [f"c{i}" for i in range(ncols)]
    types = {names[c]: pa.int64() for c in used[:2]}
    if weighted:
        types[names[used[2]]] = pa.float64()
    table = csv.read_csv(
        source,
        read_options=csv.ReadOptions(skip_rows=skip, column_names=names, block_size=1 << 22),
        parse_options=csv.ParseOptions(
            delimiter=delimiter,
            quote_char=False,
            escape_char=False,
            ignore_empty_lines=True,
            invalid_row_handler=on_invalid,
        ),
        convert_options=csv.ConvertOptions(
            column_types=types,
            include_columns=[names[c] for c in used],
            null_values=[],  # an empty field is an error, never a silent null
        ),
    )
    return tuple(table.column(names[c]).to_numpy() for c in used)


def _collapse(data: bytes, pair: bytes, one: bytes) -> bytes:
    """Runs of a character made one (bytes.replace passes: C speed, unlike a regex with a
    match per line)."""
    while pair in data:
        data = data.replace(pair, one)
    return data


def _normalised(
    open_stream: Callable[[], Any], markers: frozenset[bytes], delimiter: bytes | None
) -> bytes:
    """The data lines only, fields separated by one space: comment lines, blank lines,
    carriage returns and leading/trailing blanks removed, runs of blanks (and the delimiter)
    made one space. Works on blocks of whole lines."""
    comment = (
        re.compile(rb"(?m)^[ \t]*[" + re.escape(b"".join(sorted(markers))) + rb"][^\n]*")
        if markers
        else None
    )
    blanks = bytes.maketrans(b"\t" + (delimiter or b"\t"), b"  ")

    def clean(block: bytes) -> bytes:
        if comment is not None and any(m in block for m in markers):
            block = comment.sub(b"", block)
        block = _collapse(block.replace(b"\r", b"").translate(blanks), b"  ", b" ")
        block = block.replace(b" \n", b"\n").replace(b"\n ", b"\n")
        # whole lines: a leading blank or newline belongs to the block's first line
        return _collapse(block, b"\n\n", b"\n").lstrip(b" \n")

    out = []
    rest = b""
    with open_stream() as stream:
        while block := stream.read(1 << 22):
            block = rest + block
            cut = block.rfind(b"\n") + 1
            rest = block[cut:]
            out.append(clean(block[:cut]))
    if rest:
        out.append(clean(rest + b"\n"))
    return b"".join(out)


def _raise_bad_line(
    open_stream: Callable[[], Any],
    path: Any,
    *,
    markers: frozenset[bytes],
    delimiter: bytes | None,
    skip_rows: int,
    ncols: int,
    used: tuple[int, ...],
    weighted: bool,
) -> None:
    """Find the first line that is not ``ncols`` numbers and raise, naming its line number
    (a line-by-line pass: it only runs once parsing has failed)."""
    data_line = 0
    with open_stream() as stream:
        for lineno, line in enumerate(_lines(stream), 1):
            if _is_skipped(line, markers):
                continue
            data_line += 1
            if data_line <= skip_rows:
                continue
            parts = _fields(line, delimiter)
            ok = len(parts) == ncols
            if ok:
                try:
                    for c in used[:2]:
                        if not _INTEGER.fullmatch(parts[c]) or abs(int(parts[c])) >= 2**63:
                            raise ValueError(parts[c])
                    if weighted:
                        float(parts[used[2]])
                except ValueError:
                    ok = False
            if not ok:
                raise _bad_line(path, lineno, data_line, line, ncols, weighted)


def _binary(line: bytes) -> bool:
    """A NUL byte, or bytes that are not UTF-8: not a line of a text file."""
    try:
        line.decode()
    except UnicodeDecodeError:
        return True
    return b"\0" in line


def _markers(comment: str) -> frozenset[bytes]:
    return frozenset(comment[i : i + 1].encode() for i in range(len(comment)))


def _first_data_line(
    open_stream: Callable[[], Any], markers: frozenset[bytes], skip_rows: int, path: Any
) -> tuple[int, bytes | None]:
    """The lines before the first line to parse (leading comments, blank lines and
    ``skip_rows`` data lines), and that line (None if the file has no data line). A binary
    file is refused here, saying what it is not."""
    skip, data_line = 0, 0
    with open_stream() as stream:
        for line in _lines(stream):
            if not _is_skipped(line, markers):
                data_line += 1
                if data_line > skip_rows:
                    if _binary(line):
                        raise InvalidArgumentError(
                            f"{path} holds binary data (line {skip + 1} is not text), not a "
                            f"text edge list; {_ACCEPTED}"
                        )
                    return skip, line
            skip += 1
    return skip, None


def edge_list_columns(
    path: str | os.PathLike[str],
    *,
    comment: str = "#%",
    delimiter: str | None = None,
    skip_rows: int = 0,
) -> tuple[int, int] | None:
    """(line number, column count) of the first data line of a text edge list, read as
    :func:`read_edge_list` reads it; None when the file has no data line. Lets a caller that
    expects ``src dst [weight]`` refuse a wider file (or note an unused weight column) before
    reading it all; :func:`read_edge_list` itself ignores columns it is not told to use."""
    open_stream = _opener(Path(path))
    sep = delimiter.encode() if delimiter is not None and delimiter.strip() else None
    skip, first = _first_data_line(open_stream, _markers(comment), skip_rows, path)
    return None if first is None else (skip + 1, len(_fields(first, sep)))


def load_edge_list(
    path: str | os.PathLike[str],
    *,
    weighted: bool = False,
    comment: str = "#%",
    delimiter: str | None = None,
    skip_rows: int = 0,
    columns: tuple[int, ...] | None = None,
    **graph_options: Any,
) -> CSRGraph:
    """Load a SNAP-style edge list into a graph (:func:`read_edge_list` reads it; the
    ``graph_options`` go to :meth:`CSRGraph.from_edges`: ``directed``, ``self_loops``,
    ``duplicates``...)."""
    src, dst, w = read_edge_list(
        path, weighted=weighted, comment=comment, delimiter=delimiter, skip_rows=skip_rows,
        columns=columns,
    )  # fmt: skip
    return CSRGraph.from_edges(src, dst, w, **graph_options)


def read_edge_list(
    path: str | os.PathLike[str],
    *,
    weighted: bool = False,
    comment: str = "#%",
    delimiter: str | None = None,
    skip_rows: int = 0,
    columns: tuple[int, ...] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Read a SNAP-style edge list: one edge per line, ``src dst [weight] [more columns]``;
    returns (src, dst, weights or None) as they are in the file.

    Parsed by ``pyarrow.csv`` in parallel, streaming the (decompressed) file in blocks.
    Files it cannot take as they are (fields separated by runs of blanks, comment lines that
    look like data) are normalised into one in-memory copy first; when parsing fails, a
    line-by-line pass names the first bad line.

    Parameters
    ----------
    path : path
        Plain text, gzip, bz2 or zstd (detected from the content, not the suffix).
    weighted : bool
        Read the third used column as the edge weight (must be finite and > 0).
    comment : str
        Lines whose first non-blank character is one of these are skipped (SNAP uses "#",
        KONECT "%").
    delimiter : str, optional
        Column separator; default: any whitespace (tabs or spaces). "," reads CSV without
        quotes.
    skip_rows : int
        Data lines to skip after removing comments (headers such as "source,target,weight"
        or a node-count line).
    columns : tuple of int, optional
        Which columns hold (src, dst[, weight]); default (0, 1[, 2]). Other columns are ignored.

    Raises
    ------
    NotFoundError
        The file does not exist.
    InvalidArgumentError
        A binary file (.npy, Parquet: the message says what it is and what loads it), ragged
        or non-numeric lines (the first offending line is named by its line number), bad
        weights.
    """
    open_stream = _opener(Path(path))
    cols = columns if columns is not None else ((0, 1, 2) if weighted else (0, 1))
    need = 3 if weighted else 2
    if len(cols) != need:
        raise InvalidArgumentError(
            f"columns must name {need} columns (src, dst{', weight' if weighted else ''}); "
            f"got {cols}"
        )
    if isinstance(skip_rows, bool) or not isinstance(skip_rows, int) or skip_rows < 0:
        raise InvalidArgumentError(f"skip_rows must be a non-negative integer; got {skip_rows!r}")
    sep = delimiter.encode() if delimiter is not None and delimiter.strip() else None
    if sep is not None and len(sep) != 1:
        raise InvalidArgumentError(f"delimiter must be one character; got {delimiter!r}")
    marks = _markers(comment)
    skip, first = _first_data_line(open_stream, marks, skip_rows, path)
    if first is None:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0) if weighted else None
    ncols = len(_fields(first, sep))
    if max(cols) >= ncols:
        raise InvalidArgumentError(
            f"{path}: the first data line (line {skip + 1}) has {ncols} columns but "
            f"columns={cols} (line: {first[:80].decode(errors='replace')!r})"
        )
    # the fast path needs one separator character that splits the first line exactly as
    # "any whitespace" does
    fast = sep.decode() if sep is not None else ("\t" if b"\t" in first else " ")
    arrays = None
    if len(first.split(fast.encode())) == ncols and not (sep is None and first != first.strip()):
        import pyarrow as pa

        try:
            with open_stream() as stream:
                arrays = _read_table(
                    stream,
                    delimiter=fast,
                    skip=skip,
                    ncols=ncols,
                    used=tuple(cols),
                    weighted=weighted,
                    comment=comment,
                )
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            arrays = None
    if arrays is None:  # runs of blanks, comments that look like data, or a bad line
        import pyarrow as pa

        try:
            arrays = _read_table(
                pa.py_buffer(_normalised(open_stream, marks, sep)),
                delimiter=" ",
                skip=skip_rows,
                weighted=weighted,
                comment="",
                ncols=ncols,
                used=tuple(cols),
            )
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            _raise_bad_line(
                open_stream,
                path,
                markers=marks,
                delimiter=sep,
                skip_rows=skip_rows,
                ncols=ncols,
                used=tuple(cols),
                weighted=weighted,
            )
            raise InvalidArgumentError(f"{path}: could not parse the edge list: {exc}") from exc
    return arrays[0], arrays[1], arrays[2] if weighted else None


def from_arrow(
    table: Any,
    *,
    src: str = "src",
    dst: str = "dst",
    weight: str | None = None,
    **graph_options: Any,
) -> CSRGraph:
    """Build a graph from a ``pyarrow.Table`` (or RecordBatch) with integer columns ``src``,
    ``dst`` and an optional float column ``weight``.

    Raises
    ------
    InvalidArgumentError
        A named column is missing (the message lists the available ones) or has nulls.
    """
    names = list(table.schema.names)
    for c in (src, dst) + ((weight,) if weight else ()):
        if c not in names:
            raise InvalidArgumentError(f"column {c!r} not found; the table has {names}")

    def col(name: str) -> np.ndarray:
        arr = table.column(name)
        if arr.null_count:
            raise InvalidArgumentError(f"column {name!r} has {arr.null_count} nulls")
        return arr.to_numpy() if hasattr(arr, "to_numpy") else np.asarray(arr)

    w = col(weight) if weight else None
    return CSRGraph.from_edges(col(src), col(dst), w, **graph_options)


def load_parquet(
    path: str | os.PathLike[str],
    *,
    src: str = "src",
    dst: str = "dst",
    weight: str | None = None,
    **graph_options: Any,
) -> CSRGraph:
    """Load a Parquet file (or directory of files) with columns (src, dst[, weight])."""
    import pyarrow.parquet as pq

    p = Path(path)
    if not p.exists():
        raise NotFoundError(f"parquet edge table {p} does not exist")
    cols = [src, dst] + ([weight] if weight else [])
    try:
        table = pq.read_table(p, columns=cols)
    except (KeyError, ValueError) as exc:  # pyarrow raises these for missing columns
        raise InvalidArgumentError(
            f"{p}: cannot read columns {cols}: {exc} (schema: {pq.read_schema(p).names})"
        ) from exc
    return from_arrow(table, src=src, dst=dst, weight=weight, **graph_options)


def load_numpy(
    edges: Any, weights: Any = None, *, use_weights: bool = True, **graph_options: Any
) -> CSRGraph:
    """Build a graph from an (E, 2) array of (src, dst) external ids, or an (E, 3) array of
    (src, dst, weight) rows, or a .npy file holding either.

    Parameters
    ----------
    edges : array-like or path
        Integer ids; a float array (as ``np.column_stack`` makes from ids and weights) must hold
        whole numbers below 2**53 in its id columns.
    weights : array-like, optional
        One weight per edge (not together with a weight column).
    use_weights : bool
        Use the third column of an (E, 3) array as weights (False: ignore it).

    Raises
    ------
    NotFoundError
        The file does not exist.
    InvalidArgumentError
        Not a .npy file, a shape other than (E, 2) or (E, 3), fractional ids, bad weights.
    """
    if isinstance(edges, (str, os.PathLike)):
        p = Path(edges)
        if not p.exists():
            raise NotFoundError(f"edge array {p} does not exist")
        if p.is_dir():
            raise InvalidArgumentError(f"{p} is a directory; load_npy_dir reads edges.npy layouts")
        with open(p, "rb") as f:
            if not f.read(6).startswith(_NPY_MAGIC):
                raise InvalidArgumentError(f"{p} is not a .npy file; {_ACCEPTED}")
        edges = np.load(p, mmap_mode="r", allow_pickle=False)
    e = np.asarray(edges)
    if e.ndim != 2 or e.shape[1] not in (2, 3):
        raise InvalidArgumentError(
            f"edges must have shape (E, 2) or (E, 3) (src, dst[, weight]); got {e.shape}"
        )
    if e.shape[1] == 3:
        if weights is not None and use_weights:
            raise InvalidArgumentError(
                "edges have a weight column and weights were passed too; give one of them"
            )
        if use_weights:
            weights = e[:, 2]
        e = e[:, :2]
    if e.dtype.kind == "f":
        if np.any(np.abs(e) >= _MAX_EXACT_FLOAT) or np.any(e != np.round(e)):
            raise InvalidArgumentError(
                "edge ids in a float array must be whole numbers below 2**53 (the first two "
                "columns are ids)"
            )
        e = e.astype(np.int64)
    return CSRGraph.from_edges(e[:, 0], e[:, 1], weights, **graph_options)


def load_npy_dir(
    directory: str | os.PathLike[str], *, use_weights: bool = True, **graph_options: Any
) -> CSRGraph:
    """Load the ``edges.npy`` (positions 0..n-1) + ``ids.npy`` (external ids) [+ ``weights.npy``]
    layout of the project's converted datasets. Isolated nodes listed in ids.npy are kept."""
    d = Path(directory)
    if not (d / "edges.npy").exists():
        raise NotFoundError(f"{d} has no edges.npy")
    edges = np.load(d / "edges.npy", allow_pickle=False)
    ids = (
        as_ids(np.load(d / "ids.npy", allow_pickle=False), what="ids")
        if (d / "ids.npy").exists()
        else None
    )
    w = None
    if use_weights and (d / "weights.npy").exists():
        w = np.load(d / "weights.npy", allow_pickle=False)
    if ids is not None:
        edges = ids[edges]
        graph_options.setdefault("node_ids", ids)
    return load_numpy(edges, w, **graph_options)
