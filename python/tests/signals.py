"""Waiting on what engines do, without sleeping: FIFOs between a test and the local engines.

- ``Signals``: an engine writes a line (``signal(path, text)``) when it reaches a point; the
  test waits for that many lines (``select`` with a deadline, so a lost signal fails the test
  instead of hanging it).
- ``Gate``: engines block in ``through(path)`` until the test opens the gate. Closing the gate's
  FIFO releases whoever still waits (they read end-of-file), so no engine stays stuck.

The engines run on this machine, so they open the same FIFOs. This module's functions travel
to them by value (they cannot import it).
"""

from __future__ import annotations

import os
import select
import sys
import time
from pathlib import Path
from typing import Any

import cloudpickle

cloudpickle.register_pickle_by_value(sys.modules[__name__])

NL = b"\n"


def signal(path: str, text: str = "") -> None:
    """In an engine: tells the test it got here (one line; dropped if the test is gone)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
    except OSError:
        return
    try:
        os.write(fd, f"{text}\n".encode())
    finally:
        os.close(fd)


def through(path: str, value: Any = None) -> Any:
    """In an engine: waits until the gate at ``path`` opens (or is closed), then returns
    ``value``. A gate closed before the engine got here lets it through at once: a FIFO
    opened after its last writer left never reads end-of-file, so closing also leaves a
    mark (``PATH.closed``) that is looked for between waits."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        while not os.path.exists(path + ".closed"):
            ready, _, _ = select.select([fd], [], [], 0.05)
            if not ready:
                continue
            try:
                os.read(fd, 1)  # a pass, or end-of-file: the gate was closed
                return value
            except BlockingIOError:
                continue
        return value
    finally:
        os.close(fd)


class Signals:
    def __init__(self, path: Path) -> None:
        self.path = str(path)
        os.mkfifo(self.path)
        # Read and write: opening never blocks, and the FIFO never reads end-of-file between
        # two engines' signals.
        self._fd = os.open(self.path, os.O_RDWR | os.O_NONBLOCK)
        self._buf = b""

    def wait(self, n: int = 1, timeout: float = 60) -> list[str]:
        """The next ``n`` lines engines signalled (``AssertionError`` after ``timeout``)."""
        deadline = time.monotonic() + timeout
        while self._buf.count(NL) < n:
            left = deadline - time.monotonic()
            assert left > 0, f"{self._buf.count(NL)} of {n} signals came"
            ready, _, _ = select.select([self._fd], [], [], left)
            if ready:
                self._buf += os.read(self._fd, 1 << 16)
        lines = self._buf.split(NL)
        self._buf = NL.join(lines[n:])
        return [line.decode() for line in lines[:n]]

    def close(self) -> None:
        os.close(self._fd)


class Gate:
    def __init__(self, path: Path) -> None:
        self.path = str(path)
        os.mkfifo(self.path)
        # Held open for writing: engines' opens for reading do not block, their reads do.
        self._fd: int | None = os.open(self.path, os.O_RDWR)

    def open(self, passes: int = 10_000) -> None:
        """Lets ``passes`` waiters through (now and later)."""
        assert self._fd is not None
        os.write(self._fd, b"x" * passes)

    def close(self) -> None:
        """Releases every waiter, now and later."""
        if self._fd is not None:
            open(self.path + ".closed", "w").close()  # noqa: SIM115
            os.close(self._fd)
            self._fd = None
