"""Cross-check against scapy's dissectors and builders (a test dependency only)."""

from __future__ import annotations

from dataclasses import replace
from ipaddress import IPv4Address, IPv6Address

from hypothesis import given, settings
from scapy.layers.inet import ICMP as SICMP
from scapy.layers.inet import IP
from scapy.layers.inet import TCP as STCP
from scapy.layers.inet import UDP as SUDP
from scapy.layers.inet6 import ICMPv6EchoRequest, in6_chksum
from scapy.layers.inet6 import IPv6 as SIPv6
from scapy.layers.l2 import ARP as SARP
from scapy.layers.l2 import Dot1Q, Ether
from scapy.packet import Raw

from vnet.packet.arp import ARP
from vnet.packet.ethernet import Ethernet, mac_str
from vnet.packet.icmp import ICMP, checksum6_ok
from vnet.packet.ipv4 import IPPROTO_TCP, IPPROTO_UDP, IPv4
from vnet.packet.ipv6 import IPv6
from vnet.packet.tcp import TCP
from vnet.packet.udp import UDP

from .strategies import (
    arp_packets,
    ethernet_headers,
    ipv4,
    ipv4_headers,
    ipv6,
    payload,
    tcp_headers,
    udp_headers,
)

SETTINGS = settings(max_examples=60, deadline=None)


@SETTINGS
@given(ipv4_headers, payload)
def test_ipv4_read_by_scapy(hdr: IPv4, data: bytes) -> None:
    wire = hdr.encode(data)
    pkt = IP(wire)
    assert pkt.src == str(hdr.src) and pkt.dst == str(hdr.dst)
    assert (pkt.proto, pkt.ttl, pkt.tos, pkt.id, int(pkt.flags), pkt.frag) == (
        hdr.proto, hdr.ttl, hdr.tos, hdr.ident, hdr.flags, hdr.frag_offset)
    assert pkt.len == len(wire) and pkt.ihl * 4 == hdr.header_length
    # scapy's own checksum of the same header equals ours
    assert IP(bytes(IP(wire[:hdr.header_length]))).chksum is not None
    del pkt.chksum
    assert IP(bytes(pkt)).chksum == IP(wire).chksum


@SETTINGS
@given(ipv4, ipv4, udp_headers, payload)
def test_udp_built_by_scapy(src: IPv4Address, dst: IPv4Address, hdr: UDP, data: bytes) -> None:
    wire = bytes(IP(src=str(src), dst=str(dst)) / SUDP(sport=hdr.src_port, dport=hdr.dst_port)
                 / Raw(data))
    ip, body = IPv4.decode(wire)
    assert ip.proto == IPPROTO_UDP
    udp, inner = UDP.decode(body)
    assert bytes(inner) == data
    ours = UDP(hdr.src_port, hdr.dst_port).encode(data, src, dst)
    assert ours == bytes(body)  # same checksum as scapy's
    assert udp.length == len(body)


@SETTINGS
@given(ipv6, ipv6, tcp_headers, payload)
def test_tcp_v6_matches_scapy(src: IPv6Address, dst: IPv6Address, hdr: TCP, data: bytes) -> None:
    ours = IPv6(src, dst, IPPROTO_TCP).encode(hdr.encode(data, src, dst))
    pkt = SIPv6(ours)
    seg = pkt[STCP]
    assert (seg.sport, seg.dport, seg.seq, seg.ack, seg.window, seg.urgptr) == (
        hdr.src_port, hdr.dst_port, hdr.seq, hdr.ack, hdr.window, hdr.urgent)
    assert seg.dataofs * 4 == hdr.header_length
    raw = bytearray(ours[40:])
    raw[16:18] = b"\0\0"
    assert seg.chksum == in6_chksum(IPPROTO_TCP, pkt, bytes(raw))  # scapy's checksum agrees


def test_icmp_echo_both_ways() -> None:
    wire = bytes(IP(src="198.18.0.1", dst="198.18.0.2") / SICMP(id=7, seq=9) / Raw(b"hello"))
    _, body = IPv4.decode(wire)
    msg, data = ICMP.decode(body)
    assert (msg.type, msg.echo_id, msg.echo_seq, bytes(data)) == (8, 7, 9, b"hello")
    assert ICMP.echo(8, 7, 9).encode(b"hello") == bytes(body)


def test_icmpv6_echo_checksum_matches_scapy() -> None:
    wire = bytes(SIPv6(src="fd00::1", dst="fd00::2") / ICMPv6EchoRequest(id=3, seq=4,
                                                                         data=b"ping"))
    ip, body = IPv6.decode(wire)
    assert checksum6_ok(body, ip.src, ip.dst)
    assert ICMP.echo(128, 3, 4).encode(b"ping", ip.src, ip.dst) == bytes(body)


@SETTINGS
@given(ethernet_headers.filter(lambda h: h.ethertype >= 0x600), payload)  # below: 802.3 length
def test_ethernet_read_by_scapy(hdr: Ethernet, data: bytes) -> None:
    pkt = Ether(hdr.encode(data))
    assert pkt.dst == mac_str(hdr.dst) and pkt.src == mac_str(hdr.src)
    if hdr.vlan_tci is None:
        assert pkt.type == hdr.ethertype
    else:
        tag = pkt[Dot1Q]
        assert (tag.prio << 13 | tag.dei << 12 | tag.vlan) == hdr.vlan_tci
        assert tag.type == hdr.ethertype


@SETTINGS
@given(arp_packets)
def test_arp_read_by_scapy(pkt: ARP) -> None:
    pkt = replace(pkt, htype=1, ptype=0x0800)  # what scapy dissects as Ethernet/IPv4
    s = SARP(pkt.encode())
    assert (s.hwtype, s.ptype, s.op, s.hwsrc, s.psrc, s.hwdst, s.pdst) == (
        pkt.htype, pkt.ptype, pkt.op, mac_str(pkt.sha), str(pkt.spa), mac_str(pkt.tha),
        str(pkt.tpa))
