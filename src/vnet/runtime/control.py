"""A control socket served from a daemon's loop without ever blocking it.

Requests end with a terminator (``\\n\\n`` for WireGuard's UAPI, ``\\n`` for the
switch); each is handed to the daemon and its reply queued. Accept, receive and send
are non-blocking: a client that reads its replies slowly is written to as it reads
(no new request of its is read meanwhile), and one that sends an oversized request,
or lets too much output pile up, is dropped. Nothing a client does stops the packets.
"""

from __future__ import annotations

import functools
import select
import socket
from collections.abc import Callable

from vnet.kernel import unixsock
from vnet.runtime.daemon import BATCH, Daemon

MAX_CLIENTS = 64  # more at once are turned away: an fd each
RECV_SIZE = 65536


class _Client:
    __slots__ = ("eof", "inbox", "outbox", "scanned", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.inbox = bytearray()
        self.scanned = 0  # inbox bytes already searched for a terminator
        self.outbox = b""
        self.eof = False


class ControlServer:
    def __init__(
        self,
        daemon: Daemon,
        path: str,
        handle: Callable[[bytes], bytes],
        *,
        terminator: bytes,
        max_request: int,
        max_backlog: int = 64 << 20,
        what: str,
    ) -> None:
        """``handle`` turns one request (without its terminator) into its whole reply.
        ``what`` says who holds the path, for the error a second daemon gets."""
        self.daemon = daemon
        self.path = path
        self.handle = handle
        self.terminator = terminator
        self.max_request = max_request
        self.max_backlog = max_backlog
        self.what = what
        self.sock: socket.socket | None = None
        self.clients: dict[int, _Client] = {}

    def claim(self) -> None:
        """Refuse to start when a live daemon serves the path; remove a stale socket."""
        unixsock.claim(self.path, self.what)

    def listen(self) -> None:
        self.sock = unixsock.listen(self.path)
        self.daemon.watch(self.sock.fileno(), self._accept)
        self.daemon.on_close(self.close)

    def close(self) -> None:
        for client in list(self.clients.values()):
            self._drop(client)
        if self.sock is not None:
            self.daemon.unwatch(self.sock.fileno())
            unixsock.remove(self.sock, self.path)
            self.sock = None

    def _accept(self, events: int) -> None:
        assert self.sock is not None
        for _ in range(BATCH):
            try:
                conn, _ = self.sock.accept()
            except BlockingIOError:
                return
            except OSError:  # e.g. EMFILE: the client waits in the backlog
                return
            if len(self.clients) >= MAX_CLIENTS:
                conn.close()
                continue
            conn.setblocking(False)
            client = _Client(conn)
            self.clients[conn.fileno()] = client
            self.daemon.watch(conn.fileno(), functools.partial(self._ready, client))

    def _ready(self, client: _Client, events: int) -> None:
        if events & select.EPOLLOUT:
            self._write(client)
        elif events & (select.EPOLLIN | select.EPOLLHUP | select.EPOLLERR):
            self._read(client)

    def _read(self, client: _Client) -> None:
        try:
            chunk = client.sock.recv(RECV_SIZE)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if not chunk:
            client.eof = True
        else:
            client.inbox += chunk
        replies = []
        terminator = self.terminator
        # a request of megabytes arrives in many chunks: search only what is new
        # (and the terminator's width before it), so reading it stays linear
        inbox = client.inbox
        start = max(0, client.scanned - len(terminator) + 1)
        while (end := inbox.find(terminator, start)) >= 0:
            replies.append(self.handle(bytes(inbox[:end])))
            del inbox[: end + len(terminator)]
            start = 0
        client.scanned = len(inbox)
        if len(client.inbox) > self.max_request:
            self.daemon.log.warning(
                "%s: control request over %d bytes: connection dropped",
                self.daemon.name,
                self.max_request,
            )
            self._drop(client)
            return
        if replies:
            client.outbox += b"".join(replies)
        self._write(client)

    def _write(self, client: _Client) -> None:
        if client.outbox:
            try:
                sent = client.sock.send(client.outbox)
            except BlockingIOError:
                sent = 0
            except OSError:
                self._drop(client)
                return
            client.outbox = client.outbox[sent:]
        if len(client.outbox) > self.max_backlog:
            self._drop(client)
            return
        if client.outbox:
            # wait until the client reads; read nothing more from it meanwhile
            self.daemon.modify(client.sock.fileno(), select.EPOLLOUT)
        elif client.eof:
            self._drop(client)
        else:
            self.daemon.modify(client.sock.fileno(), select.EPOLLIN)

    def _drop(self, client: _Client) -> None:
        fd = client.sock.fileno()
        self.daemon.unwatch(fd)
        self.clients.pop(fd, None)
        client.sock.close()
