"""Run a command with its stderr on a pseudo-terminal, as a person at a terminal would."""

from __future__ import annotations

import fcntl
import os
import pty
import select
import struct
import subprocess
import termios
from collections.abc import Sequence
from pathlib import Path


def on_a_terminal(argv: Sequence[str], cwd: Path, *, timeout: float = 120) -> tuple[int, str]:
    """Run ``argv`` in ``cwd`` with stderr on a new pseudo-terminal 100 columns wide (a new
    pty has 0, where tqdm draws nothing) and stdout dropped; returns (exit code, everything
    the terminal received)."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    process = subprocess.Popen(
        list(argv), cwd=cwd, stdout=subprocess.DEVNULL, stderr=follower, stdin=subprocess.DEVNULL
    )
    os.close(follower)
    drawn = b""
    while True:
        ready, _, _ = select.select([leader], [], [], timeout)
        if not ready:
            break
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # EIO: the process closed the terminal, all was read
            break
        if not chunk:
            break
        drawn += chunk
    os.close(leader)
    return process.wait(timeout=timeout), drawn.decode(errors="replace")
