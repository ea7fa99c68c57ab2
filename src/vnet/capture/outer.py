"""vnet-wg's outer datagrams as packets a capture file can hold: the UDP payload a socket
hands over, with the IP and UDP headers the kernel added or removed put back (addresses,
ports, lengths, checksums), so that tcpdump shows them as the wire carried them - and
Wireshark's WireGuard dissector reads them."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address, ip_address

from vnet.packet.ipv4 import IPv4
from vnet.packet.ipv6 import IPv6
from vnet.packet.udp import UDP

IPPROTO_UDP = 17


def udp_packet(
    payload: bytes | bytearray | memoryview,
    source: tuple[str, int],
    destination: tuple[str, int],
) -> bytes:
    """An IPv4 or IPv6 packet of one UDP datagram; an empty address (one of ours that the
    socket did not report) is written as the unspecified address of the other's family."""
    src_host, dst_host = source[0], destination[0]
    v6 = ":" in (src_host or dst_host)
    unspecified = "::" if v6 else "0.0.0.0"
    src = ip_address(src_host or unspecified)
    dst = ip_address(dst_host or unspecified)
    segment = UDP(source[1], destination[1]).encode(payload, src, dst)
    if isinstance(src, IPv6Address) and isinstance(dst, IPv6Address):
        return IPv6(src, dst, IPPROTO_UDP).encode(segment)
    assert isinstance(src, IPv4Address) and isinstance(dst, IPv4Address)
    return IPv4(src, dst, IPPROTO_UDP).encode(segment)
