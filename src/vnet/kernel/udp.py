"""UDP segmentation offloads: many datagrams per syscall.

``UDP_SEGMENT`` (GSO, Linux 4.18) sends one buffer that the kernel cuts into
equal datagrams (the last may be shorter); ``UDP_GRO`` (Linux 5.0) hands back
several datagrams of one flow as one buffer plus their size. Both are probed
and can be turned off when the kernel or a device refuses them (EIO/EINVAL).
"""

from __future__ import annotations

import contextlib
import errno
import functools
import logging
import socket
import struct
from collections.abc import Iterable

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

IP_PKTINFO = 8  # linux/in.h
# errors of a send whose source address (IP_PKTINFO / IPV6_PKTINFO) is no longer ours:
# IPv4 routing answers ENETUNREACH (Linux 6; EINVAL before), IPv6 EINVAL
SOURCE_ERRORS = frozenset(
    {errno.EINVAL, errno.ENETUNREACH, errno.EADDRNOTAVAIL, errno.ENODEV, errno.ENXIO}
)

_GSO_SIZE = struct.Struct("=H")
_GRO_SIZE = struct.Struct("=i")
_IN_PKTINFO = struct.Struct("=i4s4s")  # ifindex, spec_dst (our address), addr (header's)
_IN6_PKTINFO = struct.Struct("=16sI")  # address, ifindex
_V4_MAPPED = bytes(10) + b"\xff\xff"  # the first 12 bytes of an IPv4-mapped IPv6 address
_CMSG_SPACE = socket.CMSG_SPACE(_GRO_SIZE.size) + socket.CMSG_SPACE(_IN_PKTINFO.size + 8)

Local = tuple[str, int]  # our address a datagram arrived at, and the interface's index
Control = tuple[tuple[int, int, bytes], ...]  # ancillary data of a send


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


def enable_pktinfo(sock: socket.socket) -> bool:
    """Have every receive report our address it arrived at (read by ``recv_into``). On a
    dual-stack socket IPv4 arrivals come as IPv4-mapped IPV6_PKTINFO."""
    try:
        if sock.family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVPKTINFO, 1)
        else:
            sock.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
    except OSError:
        return False
    return True


@functools.lru_cache(maxsize=256)  # a handful of local addresses: decoded once each
def _arrived_at(level: int, kind: int, value: bytes) -> Local | None:
    if level == socket.IPPROTO_IPV6 and kind == socket.IPV6_PKTINFO:
        if len(value) < _IN6_PKTINFO.size:
            return None
        raw, ifindex = _IN6_PKTINFO.unpack_from(value)
        if raw[:12] == _V4_MAPPED:
            return socket.inet_ntop(socket.AF_INET, raw[12:]), ifindex
        return socket.inet_ntop(socket.AF_INET6, raw), ifindex
    if level == socket.IPPROTO_IP and kind == IP_PKTINFO and len(value) >= _IN_PKTINFO.size:
        ifindex, spec_dst, _ = _IN_PKTINFO.unpack_from(value)
        return socket.inet_ntop(socket.AF_INET, spec_dst), ifindex
    return None


@functools.lru_cache(maxsize=1024)
def source_control(family: int, local: str, ifindex: int) -> Control:
    """The ancillary data that makes a send leave from ``local`` (an address of ours; the
    interface index counts only for an IPv6 link-local one, which needs its scope)."""
    v6 = ":" in local
    if family == socket.AF_INET6:
        raw = socket.inet_pton(socket.AF_INET6, local if v6 else "::ffff:" + local)
        scope = ifindex if v6 and local.lower().startswith("fe80:") else 0
        return ((socket.IPPROTO_IPV6, socket.IPV6_PKTINFO, _IN6_PKTINFO.pack(raw, scope)),)
    if v6:
        raise ValueError(f"an IPv4 socket cannot send from {local}")
    raw = socket.inet_pton(socket.AF_INET, local)
    return ((socket.IPPROTO_IP, IP_PKTINFO, _IN_PKTINFO.pack(0, raw, bytes(4))),)


def send_one(
    sock: socket.socket,
    data: bytes | bytearray | memoryview,
    address: tuple[str, int],
    control: Control = (),
) -> None:
    if control:
        sock.sendmsg([data], control, 0, address)
    else:
        sock.sendto(data, address)


def send_gso(
    sock: socket.socket,
    data: bytes | bytearray | memoryview,
    size: int,
    address: tuple[str, int],
    control: Control = (),
) -> None:
    """One sendmsg: ``data`` cut by the kernel into datagrams of ``size`` bytes (the last
    may be shorter); at most UDP_MAX_SEGMENTS of them and MAX_GSO_BYTES in all."""
    if len(data) <= size:
        send_one(sock, data, address, control)
        return
    try:
        sock.sendmsg([data], [(SOL_UDP, UDP_SEGMENT, _GSO_SIZE.pack(size)), *control], 0, address)
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
) -> tuple[int, int, tuple[str, int] | tuple[str, int, int, int], Local | None]:
    """One receive into ``buf``: (bytes, GRO datagram size or 0 for one datagram, source,
    our address it arrived at when ``enable_pktinfo`` asked for it)."""
    n, ancdata, _, address = sock.recvmsg_into([buf], _CMSG_SPACE)
    size = 0
    local = None
    for level, kind, value in ancdata:
        if level == SOL_UDP and kind == UDP_GRO and len(value) >= _GRO_SIZE.size:
            size = _GRO_SIZE.unpack_from(value)[0]
        else:
            local = _arrived_at(level, kind, value)
    return n, size if 0 < size < n else 0, address, local


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
    size_buffers(sock)
    if fragment and sock.family == socket.AF_INET:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_DONT)
    sock.setblocking(False)
    return sock


def size_buffers(sock: socket.socket) -> None:
    # the *FORCE variants pass net.core.[rw]mem_max (we hold CAP_NET_ADMIN)
    for force, plain in ((SO_RCVBUFFORCE, socket.SO_RCVBUF), (SO_SNDBUFFORCE, socket.SO_SNDBUF)):
        try:
            sock.setsockopt(socket.SOL_SOCKET, force, SOCKET_BUFFER)
        except OSError:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, plain, SOCKET_BUFFER)


def share_port(sock: socket.socket) -> None:
    """Let this process's ``open_connected`` sockets join ``sock``'s port. Set after
    ``sock`` was bound: the bind itself stayed exclusive (another program asking for the
    port was refused, EADDRINUSE), while a later socket that sets SO_REUSEPORT, belongs
    to the same user (the socket's owner: see privileges.hand_over) and is connected to
    one remote address takes that address's datagrams into a queue of its own: the
    kernel prefers a connected socket to a wildcard one."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)


def open_connected(bound: socket.socket, remote: tuple[str, int]) -> socket.socket:
    """A non-blocking socket on ``bound``'s address and port (``share_port`` was called
    on it) that receives only what ``remote`` sends there. OSError when the kernel
    refuses (another owner, no route)."""
    sock = socket.socket(bound.family, socket.SOCK_DGRAM)
    try:
        if bound.family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(bound.getsockname()[:2])
        sock.connect(remote)
        size_buffers(sock)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
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
        self,
        data: bytes | bytearray | memoryview,
        size: int,
        address: tuple[str, int],
        control: Control = (),
    ) -> bool:
        """Datagrams of ``size`` bytes back to back (the last may be shorter), from the
        source ``control`` names (``source_control``) if any. False: the kernel refused
        that source (no longer our address), and they left from its own choice. OSError
        when it refuses a send otherwise (nothing then is retried)."""
        kept = True
        chunks = [memoryview(data)] if len(data) <= size else gso_chunks(data, size)
        for chunk in chunks:
            while True:
                try:
                    self._send_chunk(chunk, size, address, control)
                    break
                except OSError as e:
                    if not control or e.errno not in SOURCE_ERRORS:
                        raise
                    control, kept = (), False  # the kernel chooses from now on
        return kept

    def _send_chunk(
        self, chunk: memoryview, size: int, address: tuple[str, int], control: Control
    ) -> None:
        sock = self.sock
        if len(chunk) <= size or size <= 0:  # one datagram
            send_one(sock, chunk, address, control)
            return
        if self.gso:
            try:
                send_gso(sock, chunk, size, address, control)
                return
            except GsoUnsupportedError as e:
                if control and e.errno in SOURCE_ERRORS:
                    raise  # perhaps the source's fault: tried again without it first
                log.info("UDP GSO refused (%s): sending one datagram per call", e.strerror)
                self.gso = False
        for start in range(0, len(chunk), size):
            send_one(sock, chunk[start : start + size], address, control)

    def send_runs(
        self,
        buffers: Iterable[tuple[bytes | bytearray | memoryview, int]],
        address: tuple[str, int],
        control: Control = (),
    ) -> bool:
        """``send_segments`` for each (buffer, datagram size) in turn. False as there:
        once the source is refused, the rest leave from the kernel's choice too."""
        kept = True
        for data, size in buffers:
            if not self.send_segments(data, size, address, control):
                kept, control = False, ()
        return kept

    def send_datagrams(
        self, datagrams: list[bytes], address: tuple[str, int], control: Control = ()
    ) -> bool:
        """Datagrams to one address: each GSO-able run (equal sizes, a shorter last) as
        segments of one send. False as for ``send_segments``."""
        return self.send_runs(
            ((run[0] if len(run) == 1 else b"".join(run), len(run[0])) for run in runs(datagrams)),
            address,
            control,
        )
