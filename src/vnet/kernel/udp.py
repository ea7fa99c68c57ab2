"""UDP segmentation offloads: many datagrams per syscall.

``UDP_SEGMENT`` (GSO, Linux 4.18) sends one buffer that the kernel cuts into
equal datagrams (the last may be shorter); ``UDP_GRO`` (Linux 5.0) hands back
several datagrams of one flow as one buffer plus their size. Both are probed
and can be turned off when the kernel or a device refuses them (EIO/EINVAL).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import socket
import struct

from vnet.errors import KernelError

log = logging.getLogger("vnet.udp")

SOL_UDP = 17
UDP_SEGMENT = 103
UDP_GRO = 104
UDP_MAX_SEGMENTS = 64  # include/linux/udp.h
MAX_GSO_BYTES = 65000  # stay under the 64 KiB IP datagram limit with headers

# asm-generic/socket.h and linux/in.h: Python's socket module lacks these
SO_SNDBUFFORCE = 32
SO_RCVBUFFORCE = 33
SO_MARK = 36
IP_MTU_DISCOVER = 10
IP_PMTUDISC_DONT = 0
SOCKET_BUFFER = 4 << 20  # a burst of GSO/GRO-sized datagrams overflows the ~200 KiB default

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


def gso_chunks(data: bytes | bytearray | memoryview, size: int) -> list[memoryview]:
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


def open_socket(
    port: int, host: str | None = None, *, dual_stack: bool = False, fragment: bool = False
) -> socket.socket:
    """A bound, non-blocking UDP socket with 4 MiB buffers.

    ``dual_stack``: one IPv6 socket that takes IPv4 too (IPv4 only where the kernel has no
    IPv6); otherwise the family of ``host`` (default the IPv4 wildcard). ``fragment``: let
    the kernel fragment an oversized IPv4 datagram rather than refuse it (EMSGSIZE).
    Raises KernelError (its errno kept) when the port cannot be bound.
    """
    if dual_stack:
        try:
            sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            address = "::"
        except OSError:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            address = "0.0.0.0"
    else:
        v6 = host is not None and ":" in host
        sock = socket.socket(socket.AF_INET6 if v6 else socket.AF_INET, socket.SOCK_DGRAM)
        address = host or "0.0.0.0"
    try:
        sock.bind((address, port))
    except OSError as e:
        sock.close()
        if e.errno == errno.EADDRINUSE:
            raise KernelError(f"UDP port {port} is in use", e.errno) from None
        raise KernelError(f"cannot bind UDP port {port}: {e.strerror}", e.errno) from None
    # the *FORCE variants pass net.core.[rw]mem_max (we hold CAP_NET_ADMIN)
    for force, plain in ((SO_RCVBUFFORCE, socket.SO_RCVBUF), (SO_SNDBUFFORCE, socket.SO_SNDBUF)):
        try:
            sock.setsockopt(socket.SOL_SOCKET, force, SOCKET_BUFFER)
        except OSError:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, plain, SOCKET_BUFFER)
    if fragment and sock.family == socket.AF_INET:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_DONT)
    sock.setblocking(False)
    return sock


def set_fwmark(sock: socket.socket, mark: int) -> None:
    """SO_MARK (needs CAP_NET_ADMIN); clearing it is never an error."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_MARK, mark)
    except OSError as e:
        if mark:
            raise KernelError(f"cannot set fwmark: {e.strerror}", e.errno) from None


class UdpSocket:
    """A bound UDP socket and its offloads, probed once: GRO on receive, GSO on send until
    the kernel or the outgoing device refuses it, then one datagram per call."""

    def __init__(self, sock: socket.socket, offload: bool = True) -> None:
        self.sock = sock
        self.family = int(sock.family)  # read per send: the property builds an enum each time
        self.gso = offload and gso_supported(sock)
        self.gro = offload and enable_gro(sock)

    def fileno(self) -> int:
        return self.sock.fileno()

    def close(self) -> None:
        self.sock.close()

    def send_segments(
        self, data: bytes | bytearray | memoryview, size: int, address: tuple[str, int]
    ) -> None:
        """Datagrams of ``size`` bytes back to back (the last may be shorter); OSError
        when the kernel refuses a send (nothing then is retried)."""
        sock = self.sock
        if len(data) <= size:  # one datagram
            sock.sendto(data, address)
            return
        for chunk in gso_chunks(data, size):
            if self.gso:
                try:
                    send_gso(sock, chunk, size, address)
                    continue
                except GsoUnsupportedError as e:
                    log.info("UDP GSO refused (%s): sending one datagram per call", e.strerror)
                    self.gso = False
            for start in range(0, len(chunk), size):
                sock.sendto(chunk[start : start + size], address)

    def send_datagrams(self, datagrams: list[bytes], address: tuple[str, int]) -> None:
        """Datagrams to one address: each GSO-able run (equal sizes, a shorter last) as
        segments of one send."""
        for run in runs(datagrams):
            self.send_segments(
                run[0] if len(run) == 1 else b"".join(run), len(run[0]), address
            )
