"""The native TSO split (vnet._datapath.split_tcp) against the numpy reference
(gso.reference_split_tcp): identical rows for any TCP super-packet, and None exactly where the
reference raises PacketError."""

from __future__ import annotations

import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from vnet import _datapath
from vnet.errors import PacketError
from vnet.packet import gso


@st.composite
def super_packets(draw: st.DrawFn, plain: bool = False) -> tuple[bytes, bool]:
    """A TCP super-packet (IPv4 or IPv6) and whether it is IPv4; ``plain``: what GRO
    merges - ACK or ACK|PSH, no IPv4 options."""
    v4 = draw(st.booleans())
    payload = draw(st.binary(min_size=1, max_size=3000))
    tcp_options = draw(st.integers(0, 10)) * 4
    tcp = struct.pack("!HHIIBBHHH", draw(st.integers(0, 65535)), 80,
                      draw(st.integers(0, 2**32 - 1)), 7, (5 + tcp_options // 4) << 4,
                      draw(st.sampled_from([0x10, 0x18]) if plain else st.integers(0, 255)),
                      512, draw(st.integers(0, 65535)), 0)
    tcp += draw(st.binary(min_size=tcp_options, max_size=tcp_options))
    if v4:
        options = 0 if plain else draw(st.integers(0, 10)) * 4
        ip = struct.pack("!BBHHHBBH4s4s", 0x45 + options // 4, 0, 0,
                         draw(st.integers(0, 65535)), 0x4000, 64, 6, 0,
                         bytes([198, 18, 0, 1]), bytes([198, 18, 0, 2]))
        ip += draw(st.binary(min_size=options, max_size=options))
    else:
        ip = struct.pack("!IHBB16s16s", 0x60000000, 0, 6, 64,
                         bytes.fromhex("fd00" + "00" * 13 + "01"),
                         draw(st.binary(min_size=16, max_size=16)))
    return ip + tcp + payload, v4


@settings(max_examples=300, deadline=None)
@given(super_packets(), st.integers(1, 1600), st.sampled_from([1, 4, 16]))
def test_native_split_equals_the_reference(packet: tuple[bytes, bool], mss: int,
                                           align: int) -> None:
    data, v4 = packet
    reference = gso.reference_split_tcp(data, v4, mss, align)
    native = _datapath.split_tcp(data, v4, mss, align)
    assert native is not None
    buf, stride, lengths = native
    assert (stride, lengths) == (reference.stride, reference.lengths)
    assert buf == reference.buf


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=120), st.booleans(), st.integers(-3, 100), st.sampled_from([1, 16]))
def test_native_split_declines_what_the_reference_refuses(data: bytes, v4: bool, mss: int,
                                                           align: int) -> None:
    try:
        reference = gso.reference_split_tcp(data, v4, mss, align)
    except PacketError:
        assert _datapath.split_tcp(data, v4, mss, align) is None
        return
    native = _datapath.split_tcp(data, v4, mss, align)
    assert native is not None and native[0] == reference.buf


@settings(max_examples=200, deadline=None)
@given(super_packets(), st.integers(1, 1600), st.binary(max_size=40))
def test_segments_behind_a_prefix_back_to_back(packet: tuple[bytes, bool], mss: int,
                                               prefix: bytes) -> None:
    """``packed`` with a prefix: each segment of the reference split behind the prefix,
    with nothing between them (one GSO send's buffer)."""
    data, v4 = packet
    reference = gso.reference_split_tcp(data, v4, mss, 1).packets()
    native = _datapath.split_tcp(data, v4, mss, 1, prefix, True)
    assert native is not None
    buf, size, lengths = native
    assert buf == b"".join(prefix + p for p in reference)
    assert lengths == [len(prefix) + len(p) for p in reference]
    # the segment size: every segment's but the last's (a lone one may be shorter)
    assert size == len(prefix) + len(reference[0]) if len(reference) > 1 else len(buf) <= size
