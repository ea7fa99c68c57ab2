"""Packet builders shared by the offload and WireGuard batch tests."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address

from vnet.packet.ipv4 import IPPROTO_TCP, IPv4
from vnet.packet.ipv6 import IPv6
from vnet.packet.tcp import ACK, PSH, TCP

TS_OPTION = bytes([1, 1, 8, 10]) + bytes(range(8))  # NOP NOP timestamps


def stream(v6: bool, mss: int, total: int, psh_last: bool, seq0: int, ident0: int,
           options: bytes) -> list[bytes]:
    """Segments of one TCP flow as a sender without TSO would emit them."""
    src4, dst4 = IPv4Address("198.19.0.1"), IPv4Address("198.19.0.2")
    src6, dst6 = IPv6Address("fd00:19::1"), IPv6Address("fd00:19::2")
    data = bytes((i * 7) & 0xFF for i in range(total))
    out = []
    count = (total + mss - 1) // mss
    for i in range(count):
        chunk = data[i * mss:(i + 1) * mss]
        flags = ACK | (PSH if psh_last and i == count - 1 else 0)
        tcp = TCP(40000, 5201, (seq0 + i * mss) & 0xFFFFFFFF, 12345, flags, 501,
                  options=options)
        if v6:
            out.append(IPv6(src6, dst6, IPPROTO_TCP).encode(tcp.encode(chunk, src6, dst6)))
        else:
            out.append(IPv4(src4, dst4, IPPROTO_TCP, ident=(ident0 + i) & 0xFFFF, flags=2)
                       .encode(tcp.encode(chunk, src4, dst4)))
    return out
