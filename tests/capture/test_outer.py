"""Outer datagrams rebuilt as IP packets: headers and checksums that decode and hold."""

from __future__ import annotations

from ipaddress import ip_address

from vnet.capture.outer import udp_packet
from vnet.packet import udp
from vnet.packet.ipv4 import IPv4
from vnet.packet.ipv6 import IPv6


def test_ipv4_and_ipv6() -> None:
    payload = bytes(range(64))
    v4 = udp_packet(payload, ("198.18.0.2", 51820), ("198.18.0.1", 51821))
    ip4, segment = IPv4.decode(v4)
    assert (str(ip4.src), str(ip4.dst), ip4.proto) == ("198.18.0.2", "198.18.0.1", 17)
    header, body = udp.UDP.decode(segment)
    assert (header.src_port, header.dst_port, bytes(body)) == (51820, 51821, payload)
    assert udp.checksum_ok(segment, ip4.src, ip4.dst)
    v6 = udp_packet(payload, ("", 51821), ("fd00:18::2", 51820))  # our address unknown
    ip6, segment = IPv6.decode(v6)
    assert (ip6.src, ip6.dst) == (ip_address("::"), ip_address("fd00:18::2"))
    assert udp.checksum_ok(segment, ip6.src, ip6.dst)
