"""encode/decode round trips: header -> bytes -> header, and bytes -> header -> bytes."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address

from hypothesis import given
from hypothesis import strategies as st

from vnet.packet import tcp as tcp_mod
from vnet.packet import udp as udp_mod
from vnet.packet.arp import ARP
from vnet.packet.ethernet import Ethernet, mac_bytes, mac_str
from vnet.packet.icmp import ICMP, checksum6_ok, checksum_ok
from vnet.packet.ipv4 import IPv4, header_ok
from vnet.packet.ipv6 import IPv6
from vnet.packet.tcp import TCP
from vnet.packet.udp import UDP
from vnet.packet.virtio import VirtioNetHdr

from .strategies import (
    arp_packets,
    ethernet_headers,
    icmp_headers,
    ipv4,
    ipv4_headers,
    ipv6,
    ipv6_headers,
    mac,
    payload,
    tcp_headers,
    udp_headers,
    virtio_headers,
)


@given(ipv4_headers, payload)
def test_ipv4(hdr: IPv4, data: bytes) -> None:
    wire = hdr.encode(data)
    back, body = IPv4.decode(wire)
    assert bytes(body) == data
    assert back.src == hdr.src and back.dst == hdr.dst and back.options == hdr.options
    assert (back.proto, back.ttl, back.tos, back.ident, back.flags, back.frag_offset) == (
        hdr.proto, hdr.ttl, hdr.tos, hdr.ident, hdr.flags, hdr.frag_offset)
    assert back.total_length == len(wire)
    assert header_ok(wire)
    assert back.encode(body) == wire  # decoded header re-encodes bit for bit


@given(ipv4_headers, payload, st.binary(max_size=40))
def test_ipv4_ignores_ethernet_padding(hdr: IPv4, data: bytes, pad: bytes) -> None:
    wire = hdr.encode(data)
    _, body = IPv4.decode(wire + pad)
    assert bytes(body) == data


@given(ipv6_headers, payload)
def test_ipv6(hdr: IPv6, data: bytes) -> None:
    wire = hdr.encode(data)
    back, body = IPv6.decode(wire)
    assert bytes(body) == data
    assert back.encode(body) == wire
    assert (back.src, back.dst, back.next_header, back.hop_limit, back.traffic_class,
            back.flow_label) == (hdr.src, hdr.dst, hdr.next_header, hdr.hop_limit,
                                 hdr.traffic_class, hdr.flow_label)


@given(udp_headers, payload, ipv4, ipv4)
def test_udp_v4(hdr: UDP, data: bytes, src: IPv4Address, dst: IPv4Address) -> None:
    wire = hdr.encode(data, src, dst)
    back, body = UDP.decode(wire)
    assert bytes(body) == data and back.encode(body) == wire
    assert (back.src_port, back.dst_port) == (hdr.src_port, hdr.dst_port)
    assert udp_mod.checksum_ok(wire, src, dst)


@given(udp_headers, payload, ipv6, ipv6)
def test_udp_v6(hdr: UDP, data: bytes, src: IPv6Address, dst: IPv6Address) -> None:
    wire = hdr.encode(data, src, dst)
    assert wire[6:8] != b"\0\0"  # IPv6 forbids a zero UDP checksum
    assert udp_mod.checksum_ok(wire, src, dst)


@given(tcp_headers, payload, ipv6, ipv6)
def test_tcp(hdr: TCP, data: bytes, src: IPv6Address, dst: IPv6Address) -> None:
    wire = hdr.encode(data, src, dst)
    back, body = TCP.decode(wire)
    assert bytes(body) == data and back.encode(body) == wire
    assert (back.seq, back.ack, back.flags, back.window, back.urgent, back.options) == (
        hdr.seq, hdr.ack, hdr.flags, hdr.window, hdr.urgent, hdr.options)
    assert tcp_mod.checksum_ok(wire, src, dst)


@given(icmp_headers, payload)
def test_icmp(hdr: ICMP, data: bytes) -> None:
    wire = hdr.encode(data)
    back, body = ICMP.decode(wire)
    assert bytes(body) == data and back.encode(body) == wire
    assert checksum_ok(wire)


@given(icmp_headers, payload, ipv6, ipv6)
def test_icmpv6(hdr: ICMP, data: bytes, src: IPv6Address, dst: IPv6Address) -> None:
    wire = hdr.encode(data, src, dst)
    assert checksum6_ok(wire, src, dst)


@given(ethernet_headers, payload)
def test_ethernet(hdr: Ethernet, data: bytes) -> None:
    wire = hdr.encode(data)
    back, body = Ethernet.decode(wire)
    assert back == hdr and bytes(body) == data


@given(arp_packets)
def test_arp(pkt: ARP) -> None:
    assert ARP.decode(pkt.encode()) == pkt


@given(virtio_headers)
def test_virtio(hdr: VirtioNetHdr) -> None:
    back, rest = VirtioNetHdr.decode(hdr.encode(), hdr.size)
    assert back == hdr and not rest


@given(mac)
def test_mac_text(raw: bytes) -> None:
    assert mac_bytes(mac_str(raw)) == raw
