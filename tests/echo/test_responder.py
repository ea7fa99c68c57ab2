"""The echo cores, fed bytes built by scapy, replies checked by scapy."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from scapy.layers.inet import ICMP as SICMP
from scapy.layers.inet import IP, UDP
from scapy.layers.inet6 import (
    ICMPv6EchoReply,
    ICMPv6EchoRequest,
    ICMPv6ND_NA,
    ICMPv6ND_NS,
    ICMPv6NDOptDstLLAddr,
    ICMPv6NDOptSrcLLAddr,
    IPv6,
)
from scapy.layers.l2 import ARP, Dot1Q, Ether
from scapy.packet import Raw

from vnet.echo.responder import AddressSet, L2Responder, L3Responder
from vnet.packet.icmp import checksum6_ok, checksum_ok
from vnet.packet.ipv4 import header_ok

MAC = bytes.fromhex("02aabbccddee")
MAC_S = "02:aa:bb:cc:dd:ee"
KMAC = "02:11:22:33:44:55"  # the kernel side of the TAP
ADDRS = AddressSet(["198.18.1.1/24", "fd00:1::1/64"])


def test_echo_v4_reply_is_valid() -> None:
    r = L3Responder(ADDRS)
    req = bytes(IP(src="198.18.1.1", dst="198.18.1.2") / SICMP(id=5, seq=6) / Raw(b"x" * 56))
    out = r.handle(req)
    assert out is not None
    rep = IP(out)
    assert (rep.src, rep.dst) == ("198.18.1.2", "198.18.1.1")
    assert (rep[SICMP].type, rep[SICMP].id, rep[SICMP].seq) == (0, 5, 6)
    assert bytes(rep[Raw]) == b"x" * 56
    assert header_ok(out) and checksum_ok(out[20:])
    assert r.stats.echo_v4 == 1 and r.stats.packets_out == 1


def test_echo_v6_reply_is_valid() -> None:
    r = L3Responder(ADDRS)
    req = bytes(IPv6(src="fd00:1::1", dst="fd00:1::9") / ICMPv6EchoRequest(id=1, seq=2,
                                                                           data=b"abc"))
    out = r.handle(req)
    assert out is not None
    rep = IPv6(out)
    assert (rep.src, rep.dst) == ("fd00:1::9", "fd00:1::1")
    assert rep.haslayer(ICMPv6EchoReply) and rep[ICMPv6EchoReply].data == b"abc"
    from ipaddress import IPv6Address
    assert checksum6_ok(out[40:], IPv6Address("fd00:1::9"), IPv6Address("fd00:1::1"))
    assert r.stats.echo_v6 == 1


def test_ignores_what_is_not_ours() -> None:
    r = L3Responder(ADDRS)
    outside = bytes(IP(src="198.18.1.1", dst="198.18.9.9") / SICMP())
    own = bytes(IP(src="198.18.1.2", dst="198.18.1.1") / SICMP())
    broadcast = bytes(IP(src="198.18.1.1", dst="198.18.1.255") / SICMP())
    udp = bytes(IP(src="198.18.1.1", dst="198.18.1.2") / UDP())
    reply = bytes(IP(src="198.18.1.1", dst="198.18.1.2") / SICMP(type=0))
    fragment = bytes(IP(src="198.18.1.1", dst="198.18.1.2", flags="MF") / SICMP())
    for pkt in (outside, own, broadcast, udp, reply, fragment):
        assert r.handle(pkt) is None
    assert r.stats.ignored == 6 and r.stats.packets_out == 0


def test_bad_checksums_count_as_malformed() -> None:
    r = L3Responder(ADDRS)
    good = bytearray(bytes(IP(src="198.18.1.1", dst="198.18.1.2") / SICMP() / Raw(b"hi")))
    bad_ip = bytearray(good)
    bad_ip[10] ^= 0xFF
    bad_icmp = bytearray(good)
    bad_icmp[-1] ^= 0xFF
    assert r.handle(bytes(bad_ip)) is None
    assert r.handle(bytes(bad_icmp)) is None
    assert r.handle(b"") is None
    assert r.handle(b"\x15garbage") is None
    assert r.stats.malformed == 4


def test_answers_anything_without_prefixes() -> None:
    r = L3Responder()
    out = r.handle(bytes(IP(src="198.18.0.1", dst="198.19.200.1") / SICMP()))
    assert out is not None and IP(out).src == "198.19.200.1"


def test_arp_request_answered() -> None:
    r = L2Responder(MAC, ADDRS)
    req = bytes(Ether(src=KMAC, dst="ff:ff:ff:ff:ff:ff")
                / ARP(op=1, hwsrc=KMAC, psrc="198.18.1.1", pdst="198.18.1.7"))
    out = r.handle(req)
    assert out is not None
    rep = Ether(out)
    assert (rep.dst, rep.src) == (KMAC, MAC_S)
    arp = rep[ARP]
    assert (arp.op, arp.hwsrc, arp.psrc, arp.hwdst, arp.pdst) == (
        2, MAC_S, "198.18.1.7", KMAC, "198.18.1.1")
    # not for the kernel's own address, not gratuitous, not outside the prefix
    for pdst, psrc in (("198.18.1.1", "198.18.1.1"), ("198.18.1.3", "198.18.1.3"),
                       ("198.19.0.1", "198.18.1.1")):
        q = Ether(src=KMAC, dst="ff:ff:ff:ff:ff:ff") / ARP(op=1, hwsrc=KMAC, psrc=psrc, pdst=pdst)
        assert r.handle(bytes(q)) is None
    assert r.stats.arp_replies == 1


def test_neighbour_solicitation_answered() -> None:
    r = L2Responder(MAC, ADDRS)
    ns = (Ether(src=KMAC, dst="33:33:ff:00:00:07")
          / IPv6(src="fd00:1::1", dst="ff02::1:ff00:7", hlim=255)
          / ICMPv6ND_NS(tgt="fd00:1::7") / ICMPv6NDOptSrcLLAddr(lladdr=KMAC))
    out = r.handle(bytes(ns))
    assert out is not None
    rep = Ether(out)
    assert rep.dst == KMAC
    assert (rep[IPv6].src, rep[IPv6].dst, rep[IPv6].hlim) == ("fd00:1::7", "fd00:1::1", 255)
    na = rep[ICMPv6ND_NA]
    assert (na.tgt, na.S, na.O, na.R) == ("fd00:1::7", 1, 1, 0)
    assert rep[ICMPv6NDOptDstLLAddr].lladdr == MAC_S
    claimed = na.cksum
    del rep[ICMPv6ND_NA].cksum
    assert Ether(bytes(rep))[ICMPv6ND_NA].cksum == claimed
    assert r.stats.ndp_replies == 1


def test_duplicate_address_detection_answered_to_all_nodes() -> None:
    r = L2Responder(MAC, ADDRS)
    ns = (Ether(src=KMAC, dst="33:33:ff:00:00:07")
          / IPv6(src="::", dst="ff02::1:ff00:7", hlim=255) / ICMPv6ND_NS(tgt="fd00:1::7"))
    rep = Ether(r.handle(bytes(ns)) or b"")
    assert rep[IPv6].dst == "ff02::1" and rep.dst == "33:33:00:00:00:01"
    assert rep[ICMPv6ND_NA].S == 0


def test_forwarded_solicitation_is_dropped() -> None:
    r = L2Responder(MAC, ADDRS)
    ns = (Ether(src=KMAC, dst="33:33:ff:00:00:07")
          / IPv6(src="fd00:1::1", dst="ff02::1:ff00:7", hlim=254) / ICMPv6ND_NS(tgt="fd00:1::7"))
    assert r.handle(bytes(ns)) is None
    assert r.stats.malformed == 1


def test_ping_over_ethernet() -> None:
    r = L2Responder(MAC, ADDRS)
    req = Ether(src=KMAC, dst=MAC_S) / IP(src="198.18.1.1", dst="198.18.1.7") / SICMP(seq=3)
    rep = Ether(r.handle(bytes(req)) or b"")
    assert (rep.src, rep.dst, rep[IP].src, rep[SICMP].type) == (MAC_S, KMAC, "198.18.1.7", 0)
    # padded to the Ethernet minimum: the reply must not echo the padding as ICMP data
    small = Ether(src=KMAC, dst=MAC_S) / IP(src="198.18.1.1", dst="198.18.1.7") / SICMP()
    padded = bytes(small) + bytes(60 - len(bytes(small)))
    rep2 = Ether(r.handle(padded) or b"")
    assert rep2[IP].len == 28
    # someone else's unicast MAC, or a VLAN tag on this access port: not ours
    other = Ether(src=KMAC, dst="02:00:00:00:00:99") / IP(src="198.18.1.1", dst="198.18.1.7")
    tagged = Ether(src=KMAC, dst=MAC_S) / Dot1Q(vlan=5) / IP(src="198.18.1.1",
                                                             dst="198.18.1.7") / SICMP()
    assert r.handle(bytes(other / SICMP())) is None
    assert r.handle(bytes(tagged)) is None


@given(st.binary(max_size=200))
def test_l3_never_raises(data: bytes) -> None:
    r = L3Responder(ADDRS)
    r.handle(data)
    s = r.stats
    assert s.packets_in == 1 and s.packets_out + s.ignored + s.malformed == 1


@given(st.binary(max_size=200))
def test_l2_never_raises(data: bytes) -> None:
    r = L2Responder(MAC)
    r.handle(data)
    s = r.stats
    assert s.packets_in == 1 and s.packets_out + s.ignored + s.malformed == 1
