"""Hypothesis strategies for valid headers."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address

from hypothesis import strategies as st

from vnet.packet.arp import ARP
from vnet.packet.ethernet import Ethernet
from vnet.packet.icmp import ICMP
from vnet.packet.ipv4 import IPv4
from vnet.packet.ipv6 import IPv6
from vnet.packet.tcp import TCP
from vnet.packet.udp import UDP
from vnet.packet.virtio import VirtioNetHdr

u8 = st.integers(0, 0xFF)
u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)
ipv4 = st.builds(IPv4Address, u32)
ipv6 = st.builds(IPv6Address, st.integers(0, (1 << 128) - 1))
mac = st.binary(min_size=6, max_size=6)
payload = st.binary(max_size=200)
options = st.integers(0, 10).flatmap(lambda n: st.binary(min_size=4 * n, max_size=4 * n))

ipv4_headers = st.builds(
    IPv4, src=ipv4, dst=ipv4, proto=u8, ttl=u8, tos=u8, ident=u16,
    flags=st.integers(0, 7), frag_offset=st.integers(0, 0x1FFF), options=options,
)
ipv6_headers = st.builds(
    IPv6, src=ipv6, dst=ipv6, next_header=u8, hop_limit=u8, traffic_class=u8,
    flow_label=st.integers(0, 0xFFFFF),
)
udp_headers = st.builds(UDP, src_port=u16, dst_port=u16)
tcp_headers = st.builds(
    TCP, src_port=u16, dst_port=u16, seq=u32, ack=u32, flags=st.integers(0, 0xFFF),
    window=u16, urgent=u16, options=options,
)
icmp_headers = st.builds(ICMP, type=u8, code=u8, rest=st.binary(min_size=4, max_size=4))
ethernet_headers = st.builds(
    Ethernet, dst=mac, src=mac, ethertype=u16.filter(lambda t: t != 0x8100),
    vlan_tci=st.none() | u16,
)
arp_packets = st.builds(ARP, op=u16, sha=mac, spa=ipv4, tha=mac, tpa=ipv4, htype=u16,
                        ptype=u16)
virtio_headers = st.builds(
    VirtioNetHdr, flags=u8, gso_type=u8, hdr_len=u16, gso_size=u16, csum_start=u16,
    csum_offset=u16, num_buffers=st.none() | u16,
)
