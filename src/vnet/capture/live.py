"""What a device carries, from the kernel's side (AF_PACKET, as tcpdump reads it), into a
``PcapWriter``: both directions, TSO super-packets whole. The link type follows the
device: raw IP for a TUN (ARPHRD_NONE), Ethernet for a TAP, a veth or a bridge.
"""

from __future__ import annotations

import errno
import select
import socket
import time
from dataclasses import dataclass

from vnet.capture.writer import LINKTYPE_ETHERNET, LINKTYPE_RAW, PcapWriter
from vnet.errors import ConfigError, KernelError
from vnet.names import validate_ifname

ETH_P_ALL = 0x0003
ARPHRD_ETHER = 1
ARPHRD_LOOPBACK = 772
ARPHRD_NONE = 0xFFFE  # a TUN: packets without a link header


def open_device(device: str) -> tuple[socket.socket, int]:
    """An AF_PACKET socket on ``device`` (this namespace's) and the pcap link type of its
    frames; ConfigError for a device that is not there or has another link header."""
    validate_ifname(device)
    try:
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    except PermissionError:
        raise KernelError("capturing needs CAP_NET_RAW (run as root)") from None
    try:
        sock.bind((device, 0))
    except OSError as e:
        sock.close()
        if e.errno == errno.ENODEV:
            raise ConfigError(f"no device {device!r} here (another namespace?)") from None
        raise KernelError(f"cannot capture on {device}: {e.strerror}", e.errno) from None
    kind = sock.getsockname()[3]  # the device's ARPHRD type
    if kind in (ARPHRD_ETHER, ARPHRD_LOOPBACK):
        return sock, LINKTYPE_ETHERNET
    if kind == ARPHRD_NONE:
        return sock, LINKTYPE_RAW
    sock.close()
    raise ConfigError(f"{device}: link type {kind} is neither Ethernet nor raw IP")


@dataclass
class Limits:
    count: int = 0  # packets; 0: no limit
    seconds: float = 0.0  # 0: no limit


def capture(sock: socket.socket, writer: PcapWriter, limits: Limits, stop: list[bool]) -> int:
    """Packets from ``sock`` (``open_device``) into ``writer`` until a limit is reached
    or ``stop[0]`` is set (a signal handler's flag); returns how many were written."""
    sock.setblocking(False)
    deadline = time.monotonic() + limits.seconds if limits.seconds else None
    buf = bytearray(262144)
    written = 0
    while not stop[0]:
        wait = 0.2 if deadline is None else min(0.2, deadline - time.monotonic())
        if wait <= 0:
            break
        try:
            if not select.select([sock], [], [], wait)[0]:
                continue
        except InterruptedError:
            continue
        for _ in range(256):
            try:
                n = sock.recv_into(buf)
            except BlockingIOError:
                break
            writer.write(memoryview(buf)[:n])
            written += 1
            if limits.count and written >= limits.count:
                return written
        writer.flush()
    return written
