"""The daemon base on socket pairs: dispatch, timers, stop, signals, start-up rollback,
and a control socket that never blocks the loop (no root needed)."""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.runtime.fakes import running
from vnet.errors import KernelError
from vnet.kernel import unixsock
from vnet.runtime.control import MAX_CLIENTS, ControlServer
from vnet.runtime.daemon import Daemon

log = logging.getLogger("test.daemon")


class Echo(Daemon):
    """Echoes datagrams on one socket pair; a control socket answers 'upper TEXT' and
    'big N' (N bytes of reply); one timer counts its runs."""

    def __init__(self, control: Path | None = None, timer_at: float | None = None,
                 terminator: bytes = b"\n", max_request: int = 100) -> None:
        super().__init__("echo", log)
        self.outside, self.inside = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.inside.setblocking(False)
        self.outside.settimeout(5)
        self.timer_at = timer_at
        self.timer_runs = 0
        self.control = (
            ControlServer(self, str(control), self.answer, terminator=terminator,
                          max_request=max_request, what="an echo daemon")
            if control is not None
            else None
        )

    def open(self) -> None:
        self.watch(self.inside.fileno(), self.echo)
        if self.control is not None:
            self.control.claim()
            self.control.listen()

    def echo(self, events: int) -> None:
        while True:
            try:
                data = self.inside.recv(1500)
            except BlockingIOError:
                return
            self.inside.send(data)

    def answer(self, request: bytes) -> bytes:
        verb, _, arg = request.partition(b" ")
        if verb == b"big":
            return b"x" * int(arg) + b"\n"
        return arg.upper() + b"\n"

    def next_deadline(self) -> float | None:
        return self.timer_at

    def on_timers(self, now: float) -> None:
        self.timer_runs += 1
        self.timer_at = None

    def close(self) -> None:
        self.inside.close()
        self.outside.close()
        super().close()


def test_dispatch_and_stop() -> None:
    daemon = Echo()
    daemon.start()
    with running(daemon):
        daemon.outside.send(b"ping")
        assert daemon.outside.recv(100) == b"ping"
    assert daemon.outside.fileno() == -1  # closed by close()


def test_a_due_timer_runs_once() -> None:
    daemon = Echo(timer_at=time.monotonic() + 0.05)
    daemon.start()
    with running(daemon):
        for _ in range(100):  # bounded wait for the loop to pass the deadline
            if daemon.timer_runs:
                break
            time.sleep(0.02)
        daemon.outside.send(b"after")
        assert daemon.outside.recv(100) == b"after"
    assert daemon.timer_runs == 1


class Failing(Echo):
    def open(self) -> None:
        self.undone: list[str] = []
        super().open()
        self.on_close(lambda: self.undone.append("socket"))
        raise KernelError("the device is busy")


def test_failed_start_undoes_what_it_made(tmp_path: Path) -> None:
    daemon = Failing(control=tmp_path / "echo.sock")
    with pytest.raises(KernelError, match="busy"):
        daemon.start()
    assert daemon.undone == ["socket"]
    assert daemon.inside.fileno() == -1
    assert not (tmp_path / "echo.sock").exists()


def test_sigterm_stops_the_loop_and_restores_handlers() -> None:
    daemon = Echo(timer_at=time.monotonic())
    daemon.on_timers = lambda now: os.kill(os.getpid(), signal.SIGTERM)  # type: ignore[method-assign]
    daemon.start()
    before = signal.getsignal(signal.SIGTERM)
    try:
        daemon.run()  # main thread: the loop's handler takes SIGTERM
    finally:
        daemon.close()
    assert signal.getsignal(signal.SIGTERM) is before


def test_a_second_daemon_on_the_same_control_path_is_refused(tmp_path: Path) -> None:
    first = Echo(control=tmp_path / "echo.sock")
    first.start()
    with running(first):
        second = Echo(control=tmp_path / "echo.sock")
        with pytest.raises(KernelError, match="in use: an echo daemon"):
            second.start()
        assert first.control is not None
        assert unixsock.request(first.control.path, b"upper still\n", b"\n") == b"STILL\n"
    assert not (tmp_path / "echo.sock").exists()


def test_control_socket_never_blocks_the_loop(tmp_path: Path) -> None:
    path = str(tmp_path / "echo.sock")
    daemon = Echo(control=tmp_path / "echo.sock")
    daemon.start()
    with running(daemon):
        # a client asks for far more than a socket buffer holds and does not read
        slow = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        slow.connect(path)
        slow.sendall(b"big 8000000\n")
        # a request in pieces is put together; another client and packets go on
        partial = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        partial.connect(path)
        partial.settimeout(5)
        partial.sendall(b"upper hel")
        for i in range(20):
            daemon.outside.send(b"packet %d" % i)
            assert daemon.outside.recv(100) == b"packet %d" % i
        assert unixsock.request(path, b"upper other\n", b"\n") == b"OTHER\n"
        partial.sendall(b"lo\n")
        assert partial.recv(100) == b"HELLO\n"
        # the slow client still gets its whole reply once it reads
        slow.settimeout(5)
        got = 0
        while got < 8000001:
            chunk = slow.recv(1 << 20)
            assert chunk
            got += len(chunk)
        assert got == 8000001
        slow.close()
        partial.close()


def test_oversized_request_drops_the_connection(tmp_path: Path) -> None:
    path = str(tmp_path / "echo.sock")
    daemon = Echo(control=tmp_path / "echo.sock")
    daemon.start()
    with running(daemon):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as c:
            c.connect(path)
            c.settimeout(5)
            c.sendall(b"y" * 500)  # no terminator within max_request
            assert c.recv(100) == b""  # closed by the daemon
        assert unixsock.request(path, b"upper fine\n", b"\n") == b"FINE\n"


def test_big_requests_in_odd_pieces(tmp_path: Path) -> None:
    """Megabytes in pieces that cut the two-byte terminator in half, and two requests in
    one piece: each answered once, whole."""
    path = str(tmp_path / "echo.sock")
    daemon = Echo(control=tmp_path / "echo.sock", terminator=b"\n\n", max_request=8 << 20)
    daemon.start()
    body = b"a" * 3_000_000
    stream = b"upper " + body + b"\n\n" + b"upper b\n\nupper c\n\n"
    with running(daemon), socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as c:
        c.connect(path)
        c.settimeout(10)
        cut = len(body) + 7  # after the first byte of the first terminator
        for piece in (stream[:65537], stream[65537:cut], stream[cut:cut + 3], stream[cut + 3:]):
            c.sendall(piece)
        want = b"A" * len(body) + b"\n" + b"B\n" + b"C\n"
        got = b""
        while len(got) < len(want):
            chunk = c.recv(1 << 20)
            assert chunk
            got += chunk
        assert got == want


def test_clients_beyond_the_cap_are_turned_away(tmp_path: Path) -> None:
    path = str(tmp_path / "echo.sock")
    daemon = Echo(control=tmp_path / "echo.sock")
    daemon.start()
    clients = []
    with running(daemon):
        for _ in range(MAX_CLIENTS):
            c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            c.connect(path)
            clients.append(c)
        assert clients[0].send(b"upper a\n")
        clients[0].settimeout(5)
        assert clients[0].recv(10) == b"A\n"  # all 64 are being served
        extra = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        extra.connect(path)
        extra.settimeout(5)
        assert extra.recv(10) == b""  # closed at once
        extra.close()
        for c in clients:
            c.close()


def test_work_posted_from_another_thread_runs_in_the_loop() -> None:
    daemon = Echo()
    daemon.start()
    ran_in: list[str] = []
    with running(daemon) as thread:
        done = threading.Event()

        def work() -> None:
            ran_in.append(threading.current_thread().name)
            done.set()

        threading.Thread(target=daemon.post, args=(work,)).start()
        assert done.wait(5)
        assert ran_in == [thread.name]
        daemon.outside.send(b"still echoing")
        assert daemon.outside.recv(100) == b"still echoing"


def test_lone_event_tells_a_lone_wake_from_a_busy_one() -> None:
    """Handlers learn whether their event came alone from its poll."""
    daemon = Daemon("lone", log)
    pairs = [socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM) for _ in range(2)]
    seen: list[bool] = []

    def handler(sock: socket.socket) -> Callable[[int], None]:
        def read(events: int) -> None:
            sock.recv(64)
            seen.append(daemon.lone_event)
            if len(seen) == 1:  # both ready before the next poll
                for outside, _ in pairs:
                    outside.send(b"together")
            elif len(seen) == 3:
                daemon.stop()

        return read

    for _, inside in pairs:
        daemon.watch(inside.fileno(), handler(inside))
    pairs[0][0].send(b"alone")
    daemon.run()
    daemon.close()
    for outside, inside in pairs:
        outside.close()
        inside.close()
    assert seen == [True, False, False]
