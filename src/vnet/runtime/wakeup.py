"""A self-pipe for a select loop: ``stop()`` from a signal handler wakes the loop at once."""

from __future__ import annotations

import contextlib
import socket


class Wakeup:
    def __init__(self) -> None:
        self._read, self._write = socket.socketpair()

    def fileno(self) -> int:
        return self._read.fileno()

    def set(self) -> None:
        with contextlib.suppress(OSError):  # full or closed: the loop wakes anyway, or is gone
            self._write.send(b"x")

    def clear(self) -> None:
        self._read.recv(64)

    def close(self) -> None:
        self._read.close()
        self._write.close()
