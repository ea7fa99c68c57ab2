"""UDP segmentation offloads: many datagrams per syscall.

``UDP_SEGMENT`` (GSO, Linux 4.18) sends one buffer that the kernel cuts into
equal datagrams (the last may be shorter); ``UDP_GRO`` (Linux 5.0) hands back
several datagrams of one flow as one buffer plus their size. Both are probed
and can be turned off when the kernel or a device refuses them (EIO/EINVAL).
"""

from __future__ import annotations

import errno
import socket
import struct

SOL_UDP = 17
UDP_SEGMENT = 103
UDP_GRO = 104
UDP_MAX_SEGMENTS = 64  # include/linux/udp.h
MAX_GSO_BYTES = 65000  # stay under the 64 KiB IP datagram limit with headers

_GSO_SIZE = struct.Struct("=H")
_GRO_SIZE = struct.Struct("=i")
_CMSG_SPACE = socket.CMSG_SPACE(_GRO_SIZE.size)


class GsoUnsupportedError(OSError):
    """The kernel or the outgoing device refused a GSO send: fall back to one per call."""


def enable_gro(sock: socket.socket) -> bool:
    try:
        sock.setsockopt(SOL_UDP, UDP_GRO, 1)
    except OSError:
        return False
    return True


def gso_supported(sock: socket.socket) -> bool:
    try:
        sock.setsockopt(SOL_UDP, UDP_SEGMENT, 0)  # 0: per-call sizes via cmsg only
    except OSError:
        return False
    return True


def runs(datagrams: list[bytes]) -> list[list[bytes]]:
    """Cut a list into GSO-able runs: equal sizes, a shorter last one ends a run."""
    out: list[list[bytes]] = []
    current: list[bytes] = []
    size = 0
    total = 0
    for d in datagrams:
        if current and (
            len(d) > size or len(current) >= UDP_MAX_SEGMENTS or total + len(d) > MAX_GSO_BYTES
        ):
            out.append(current)
            current = []
        if not current:
            size = len(d)
            total = 0
        current.append(d)
        total += len(d)
        if len(d) < size:
            out.append(current)
            current = []
    if current:
        out.append(current)
    return out


def send_run(sock: socket.socket, run: list[bytes], address: tuple[str, int]) -> None:
    """One sendmsg for a run from ``runs`` (a single datagram goes as a plain sendto)."""
    if len(run) == 1:
        sock.sendto(run[0], address)
        return
    send_gso(sock, b"".join(run), len(run[0]), address)


def send_gso(
    sock: socket.socket, data: bytes | bytearray | memoryview, size: int, address: tuple[str, int]
) -> None:
    """One sendmsg: ``data`` cut by the kernel into datagrams of ``size`` bytes (the last
    may be shorter); at most UDP_MAX_SEGMENTS of them and MAX_GSO_BYTES in all."""
    if len(data) <= size:
        sock.sendto(data, address)
        return
    try:
        sock.sendmsg([data], [(SOL_UDP, UDP_SEGMENT, _GSO_SIZE.pack(size))], 0, address)
    except OSError as e:
        if e.errno in (errno.EIO, errno.EINVAL, errno.EOPNOTSUPP):
            raise GsoUnsupportedError(e.errno, e.strerror) from None
        raise


def segments_per_send(size: int) -> int:
    """How many datagrams of ``size`` bytes one GSO send carries."""
    return max(1, min(UDP_MAX_SEGMENTS, MAX_GSO_BYTES // max(size, 1)))


def gso_chunks(data: bytes | bytearray, size: int) -> list[memoryview]:
    """Datagrams of ``size`` bytes back to back, cut into pieces one ``send_gso`` takes."""
    step = segments_per_send(size) * max(size, 1)
    view = memoryview(data)
    return [view[i : i + step] for i in range(0, len(view), step)]


def recv_into(
    sock: socket.socket, buf: bytearray
) -> tuple[int, int, tuple[str, int] | tuple[str, int, int, int]]:
    """One receive into ``buf``: (bytes, GRO datagram size or 0 for one datagram, source)."""
    n, ancdata, _, address = sock.recvmsg_into([buf], _CMSG_SPACE)
    size = 0
    for level, kind, value in ancdata:
        if level == SOL_UDP and kind == UDP_GRO and len(value) >= _GRO_SIZE.size:
            size = _GRO_SIZE.unpack_from(value)[0]
    return n, size if 0 < size < n else 0, address


def recv_many(
    sock: socket.socket, bufsize: int = 65535
) -> tuple[list[bytes], tuple[str, int] | tuple[str, int, int, int]]:
    """One receive: the datagrams it held (several with GRO) and their source."""
    data, ancdata, _, address = sock.recvmsg(bufsize, _CMSG_SPACE)
    size = 0
    for level, kind, value in ancdata:
        if level == SOL_UDP and kind == UDP_GRO and len(value) >= _GRO_SIZE.size:
            size = _GRO_SIZE.unpack_from(value)[0]
    if size <= 0 or len(data) <= size:
        return [data], address
    return [data[i : i + size] for i in range(0, len(data), size)], address
