"""The GRE codec: round trips, refused bits, and arbitrary bytes."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vnet.errors import PacketError
from vnet.packet import gre


@given(st.sampled_from([gre.PROTO_TEB, gre.PROTO_IPV4, gre.PROTO_IPV6]),
       st.one_of(st.none(), st.integers(0, gre.MAX_KEY)), st.binary(max_size=64))
def test_round_trip(protocol: int, key: int | None, payload: bytes) -> None:
    header = gre.encode(protocol, key)
    assert len(header) == gre.header_length(key)
    got_protocol, got_key, got_payload = gre.decode(header + payload)
    assert (got_protocol, got_key, bytes(got_payload)) == (protocol, key, payload)


def test_the_kernels_gretap_header() -> None:
    # what `ip link add type gretap key 100` sends: K set, TEB, key 100
    assert gre.encode(gre.PROTO_TEB, 100) == bytes.fromhex("2000655800000064")


@pytest.mark.parametrize(
    ("header", "problem"),
    [
        ("8000655800000000", "checksum"),  # C
        ("1000655800000001", "sequence"),  # S
        ("4000655800000000", "routing"),  # R
        ("0001655800000000", "version 1"),
        ("2000", "shorter than 4"),
        ("20006558", "shorter than 8"),
    ],
)
def test_refused(header: str, problem: str) -> None:
    with pytest.raises(PacketError, match=problem):
        gre.decode(bytes.fromhex(header))


def test_ipv4_header_is_stripped() -> None:
    packet = bytes([0x46]) + bytes(23) + b"gre!"  # IHL 6: 24 bytes of header
    assert bytes(gre.strip_ipv4(packet)) == b"gre!"
    with pytest.raises(PacketError):
        gre.strip_ipv4(bytes([0x4F]) + bytes(30))  # IHL 60 > 31 bytes
    with pytest.raises(PacketError):
        gre.strip_ipv4(bytes([0x60]) + bytes(40))  # IPv6


@given(st.binary(max_size=80))
def test_arbitrary_bytes_raise_only_packet_error(data: bytes) -> None:
    with contextlib.suppress(PacketError):
        gre.decode(gre.strip_ipv4(data))
