"""Stand-ins for kernel devices, so daemon loops run in tests without root."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from vnet.runtime.daemon import Daemon


class FakeTun:
    """A TUN or TAP: one end of a datagram socket pair (packet boundaries kept, readiness
    like a device's); the test holds the other end, ``kernel``, and plays the kernel."""

    def __init__(self) -> None:
        self.kernel, self._end = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._end.setblocking(False)
        self.kernel.settimeout(10)

    def fileno(self) -> int:
        return self._end.fileno()

    def readinto(self, buffer: bytearray | memoryview) -> int:
        return self._end.recv_into(buffer)  # BlockingIOError when empty, as a device

    def read(self) -> bytes:
        return self._end.recv(65536)

    def writev(self, parts: Sequence[bytes | bytearray | memoryview]) -> int:
        return self._end.sendmsg(list(parts))

    def close(self) -> None:
        self._end.close()
        self.kernel.close()


@contextmanager
def running(daemon: Daemon) -> Iterator[threading.Thread]:
    """The daemon's loop in a thread; stopped, joined and closed afterwards."""
    started = threading.Event()
    errors: list[BaseException] = []

    def loop() -> None:
        try:
            daemon.run(started.set)
        except BaseException as e:  # surfaced in the test's thread below
            errors.append(e)
            started.set()

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    assert started.wait(10), "the loop did not start"
    try:
        yield thread
    finally:
        daemon.stop()
        thread.join(10)
        daemon.close()
    assert not thread.is_alive(), "the loop did not stop"
    assert not errors, errors
