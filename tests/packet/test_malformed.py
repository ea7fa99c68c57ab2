"""Fuzz: any bytes either decode or raise PacketError; nothing else escapes."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vnet.errors import PacketError
from vnet.packet import ndp
from vnet.packet.arp import ARP
from vnet.packet.ethernet import Ethernet, mac_bytes
from vnet.packet.icmp import ICMP
from vnet.packet.ipv4 import IPv4
from vnet.packet.ipv6 import IPv6
from vnet.packet.tcp import TCP
from vnet.packet.udp import UDP
from vnet.packet.virtio import VirtioNetHdr

DECODERS: list[Callable[[bytes], Any]] = [
    IPv4.decode, IPv6.decode, UDP.decode, TCP.decode, ICMP.decode, Ethernet.decode,
    ARP.decode, VirtioNetHdr.decode, ndp.decode_options, ndp.NeighborSolicitation.decode,
]


@pytest.mark.parametrize("decode", DECODERS, ids=lambda f: f.__qualname__)
@given(data=st.binary(max_size=120))
def test_decoders_raise_only_packet_error(decode: Callable[[bytes], Any], data: bytes) -> None:
    with contextlib.suppress(PacketError):
        decode(data)


@given(st.text(max_size=30))
def test_mac_parser(text: str) -> None:
    try:
        raw = mac_bytes(text)
    except PacketError:
        return
    assert len(raw) == 6


@pytest.mark.parametrize(
    ("decode", "data", "needle"),
    [
        (IPv4.decode, b"\x45" + bytes(10), "shorter than 20"),
        (IPv4.decode, b"\x65" + bytes(19), "IP version 6"),
        (IPv4.decode, b"\x44" + bytes(19), "header length 16"),
        (IPv4.decode, b"\x45\x00\x00\x30" + bytes(16), "truncated"),
        (IPv6.decode, b"\x60" + bytes(3) + b"\x00\x10" + bytes(34), "truncated"),
        (UDP.decode, b"\x00\x01\x00\x02\x00\x04\x00\x00", "below 8"),
        (TCP.decode, bytes(12) + b"\x40" + bytes(7), "data offset 16"),
        (Ethernet.decode, bytes(13), "shorter than 14"),
        (ARP.decode, bytes(4) + b"\x08\x04" + bytes(22), "only Ethernet/IPv4"),
        (ndp.decode_options, b"\x01\x00" + bytes(6), "length 0"),
    ],
)
def test_errors_name_the_problem(decode: Callable[[bytes], Any], data: bytes, needle: str) -> None:
    with pytest.raises(PacketError, match=needle):
        decode(data)


def test_encode_rejects_out_of_range() -> None:
    from ipaddress import IPv4Address

    with pytest.raises(PacketError):
        IPv4(IPv4Address("198.18.0.1"), IPv4Address("198.18.0.2"), proto=300).encode()
    with pytest.raises(PacketError):
        IPv4(IPv4Address("198.18.0.1"), IPv4Address("198.18.0.2"), 6, options=b"abc").encode()
    with pytest.raises(PacketError):
        UDP(70000, 1).encode()
