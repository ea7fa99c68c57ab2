"""Private control sockets: a Unix stream socket at a fixed path, 0600 in a 0755 directory.

``claim`` removes a stale socket left by a dead daemon and refuses a live one;
``listen`` binds with a tight umask so the socket is never briefly open to all.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import stat

from vnet.errors import KernelError


def claim(path: str, what: str) -> None:
    os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
    if not os.path.exists(path):
        return
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except OSError:
        os.unlink(path)  # stale: its daemon is gone
        return
    finally:
        probe.close()
    raise KernelError(f"{path} is in use: {what}", errno.EADDRINUSE)


def listen(path: str, backlog: int = 16) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o077)
    try:
        sock.bind(path)
    finally:
        os.umask(old)
    os.chmod(path, stat.S_IRUSR | stat.S_IWUSR)
    sock.listen(backlog)
    sock.setblocking(False)
    return sock


def remove(sock: socket.socket, path: str) -> None:
    sock.close()
    # PermissionError: the daemon dropped root; its root helper removes the file
    with contextlib.suppress(FileNotFoundError, PermissionError):
        os.unlink(path)


def request(path: str, data: bytes, terminator: bytes, timeout: float = 5.0) -> bytes:
    """Send one request to a control socket and read until ``terminator`` (or EOF)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(path)
        s.sendall(data)
        reply = b""
        while not reply.endswith(terminator):
            chunk = s.recv(65536)
            if not chunk:
                break
            reply += chunk
    return reply
