"""The IP-over-GRE endpoint between two in-memory peers."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from tests.wireguard.harness import packet
from vnet.packet import gre
from vnet.tunnel.gre_ip import GreIpEndpoint, default_mtu


def test_packets_cross_both_ways_with_a_key() -> None:
    a, b = GreIpEndpoint("198.18.0.2", key=7), GreIpEndpoint("198.18.0.1", key=7)
    ping = packet("198.19.0.1", "198.19.0.2", seq=1)
    wire = a.encapsulate(ping)
    assert wire is not None and wire[:8] == gre.encode(gre.PROTO_IPV4, 7)
    assert b.decapsulate("198.18.0.1", wire) == ping
    v6 = bytes([0x60]) + bytes(39)
    back = b.encapsulate(v6)
    assert back is not None and a.decapsulate("198.18.0.2", back) == v6
    assert (a.tx_packets, b.rx_packets, b.tx_packets, a.rx_packets) == (1, 1, 1, 1)
    assert default_mtu(7) == 1472 and default_mtu(None) == 1476


def test_what_is_refused_is_counted() -> None:
    b = GreIpEndpoint("198.18.0.1", key=7)
    ping = packet("198.19.0.1", "198.19.0.2", seq=1)
    cases = [
        ("198.18.0.9", gre.encode(gre.PROTO_IPV4, 7) + ping, "unknown-source"),
        ("198.18.0.1", gre.encode(gre.PROTO_IPV4, 8) + ping, "wrong-key"),
        ("198.18.0.1", gre.encode(gre.PROTO_IPV4) + ping, "wrong-key"),
        ("198.18.0.1", gre.encode(gre.PROTO_TEB, 7) + bytes(60), "not-ip"),
        ("198.18.0.1", gre.encode(gre.PROTO_IPV6, 7) + ping, "not-ip"),  # says v6, is v4
        ("198.18.0.1", bytes.fromhex("b000080000000007") + ping, "malformed"),  # C+K+S
    ]
    for source, wire, reason in cases:
        assert b.decapsulate(source, wire) is None
        assert b.drops[reason] >= 1
    assert b.encapsulate(b"\x00junk") is None and b.drops["tun-not-ip"] == 1
    assert b.rx_packets == 0


@given(st.binary(max_size=100), st.sampled_from(["198.18.0.1", "198.18.0.2"]))
def test_anything_from_the_wire_is_taken_or_counted(data: bytes, source: str) -> None:
    b = GreIpEndpoint("198.18.0.1", key=None)
    before = sum(b.drops.values()) + b.rx_packets
    b.decapsulate(source, data)
    assert sum(b.drops.values()) + b.rx_packets == before + 1
