"""How the benchmarks measure memory: the peak resident size of a block (sampled in a thread),
resident bytes by kind, Arrow's pool, and handing freed memory back to the OS."""

from __future__ import annotations

import gc
import sys
import threading
from typing import Any

import psutil


class PeakRSS:
    """Samples this process's resident memory in a thread; reports the peak above a baseline."""

    def __init__(self) -> None:
        self.proc = psutil.Process()

    def __enter__(self) -> PeakRSS:
        gc.collect()
        self.base = self.proc.memory_info().rss
        self.peak = self.base
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, self.proc.memory_info().rss)

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self.end = self.proc.memory_info().rss
        self.peak = max(self.peak, self.end)

    @property
    def peak_mib(self) -> float:
        return (self.peak - self.base) / 2**20

    @property
    def resident_mib(self) -> float:
        return (self.end - self.base) / 2**20


def rss_parts() -> dict[str, int]:
    """Resident bytes by kind (Linux): anonymous (heap) and file-backed (mapped files)."""
    parts: dict[str, int] = {}
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(("RssAnon:", "RssFile:", "RssShmem:")):
                    key, value = line.split(":")
                    parts[key] = int(value.split()[0]) * 1024
    except OSError:
        pass
    return parts


def arrow_bytes() -> int:
    """Bytes held in Arrow's memory pool (0 when pyarrow is not loaded)."""
    pa = sys.modules.get("pyarrow")
    return int(pa.total_allocated_bytes()) if pa is not None else 0


def release_free_memory() -> bool:
    """Return freed memory to the OS (Arrow's pool, then glibc's malloc_trim); False if glibc's
    malloc_trim is unavailable."""
    pa = sys.modules.get("pyarrow")
    if pa is not None:
        pa.default_memory_pool().release_unused()
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        return False
    return True
