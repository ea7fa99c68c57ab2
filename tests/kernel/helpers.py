"""Packets for kernel tests: an echo request toward the kernel's own address."""

from __future__ import annotations

import select
import time
from collections.abc import Callable
from ipaddress import IPv4Address

from vnet.kernel.tun import TunQueue
from vnet.packet.icmp import ICMP, ICMP_ECHO
from vnet.packet.ipv4 import IPPROTO_ICMP, IPv4

KERNEL = "198.18.0.1"
PEER = "198.18.0.2"


def echo_request(seq: int = 1, src: str = PEER, dst: str = KERNEL) -> bytes:
    icmp = ICMP.echo(ICMP_ECHO, 0x1234, seq).encode(b"vnet-test-payload")
    return IPv4(IPv4Address(src), IPv4Address(dst), IPPROTO_ICMP).encode(icmp)


def is_echo_reply(packet: bytes, seq: int = 1) -> bool:
    """An IPv4 ICMP echo reply from the kernel to PEER with our id/seq."""
    if len(packet) < 28 or packet[0] >> 4 != 4 or packet[9] != IPPROTO_ICMP:
        return False
    hlen = (packet[0] & 0xF) * 4
    return packet[hlen] == 0 and packet[hlen + 4:hlen + 8] == bytes([0x12, 0x34, 0, seq])


def read_until(q: TunQueue, match: Callable[[bytes], bool], timeout: float = 3.0,
               limit: int = 200) -> bytes:
    """Read packets (bounded in count and time) until one matches."""
    deadline = time.monotonic() + timeout
    for _ in range(limit):
        left = deadline - time.monotonic()
        if left <= 0:
            break
        ready, _, _ = select.select([q.fileno()], [], [], left)
        if not ready:
            break
        data = q.read()
        if match(data):
            return data
    raise AssertionError("no matching packet arrived")
