"""Progress on the terminal: tqdm bars on stderr while a person waits (ingest, build, graph
fingerprints, quickstart); nothing when stderr is piped or redirected."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import Any

__all__ = ["on_terminal", "progress_bar", "stage_bars", "waiting"]


def progress_bar(total: int | None, label: str, unit: str = "vectors") -> Any:
    """A tqdm progress bar on stderr, drawn only when stderr is a terminal (piped or
    redirected output gets none). Close it (or use it as a context manager) when done."""
    from tqdm import tqdm

    return tqdm(
        total=total,
        desc=label,
        unit=unit,
        unit_scale=True,
        file=sys.stderr,
        disable=not on_terminal(),
        leave=False,
        dynamic_ncols=True,
    )


def on_terminal() -> bool:
    return hasattr(sys.stderr, "isatty") and sys.stderr.isatty()


@contextlib.contextmanager
def waiting(label: str) -> Iterator[None]:
    """Seconds elapsed on stderr while one long library call runs (a build, fingerprints),
    on a terminal only: the call reports no fractions, so this shows it is alive and how long
    it has taken."""
    if not on_terminal():
        yield
        return
    import threading

    bar = progress_bar(None, label, unit="s")
    bar.bar_format = "{desc}: {elapsed}"
    done = threading.Event()

    def tick() -> None:
        while not done.wait(0.5):
            bar.refresh()

    ticker = threading.Thread(target=tick, daemon=True)
    ticker.start()
    try:
        yield
    finally:
        done.set()
        ticker.join()
        bar.close()


# what the stages of the library's progress callbacks count (shardwalk.jobs, Graph)
_STAGE_UNITS = {"scan": "rows", "assign": "rows", "build": "indexes", "walks": "walks",
                "hub walks": "walks"}  # fmt: skip


@contextlib.contextmanager
def stage_bars(label: str) -> Iterator[Any]:
    """A progress callback for a library call (``progress(stage, done, total)``) that draws
    one tqdm bar per stage on stderr, on a terminal only; None when stderr is not one (the
    library then reports nothing). The bar of a stage closes when the next stage starts, and
    the last one when the call returns or fails."""
    if not on_terminal():
        yield None
        return
    current: dict[str, Any] = {}

    def progress(stage: str, done: int, total: int) -> None:
        if current.get("stage") != stage:
            if current:
                current["bar"].close()
            current["stage"] = stage
            current["bar"] = progress_bar(total, f"{label}: {stage}", _STAGE_UNITS.get(stage, "it"))
        current["bar"].update(done - current["bar"].n)

    try:
        yield progress
    finally:
        if current:
            current["bar"].close()
