"""TSO split and GRO coalesce: the split of a coalesced stream equals the original packets."""

from __future__ import annotations

import contextlib
from ipaddress import IPv4Address

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP
from scapy.layers.inet import TCP as STCP

from vnet.errors import PacketError
from vnet.packet import gro, gso
from vnet.packet.checksum import ones_sum
from vnet.packet.ipv4 import header_ok
from vnet.packet.rows import PacketRows
from vnet.packet.tcp import FIN, PSH, checksum_ok
from vnet.packet.virtio import (
    EMPTY,
    VIRTIO_NET_HDR_F_NEEDS_CSUM,
    VIRTIO_NET_HDR_GSO_TCPV4,
    VirtioNetHdr,
)

from .builders import TS_OPTION, stream


@settings(max_examples=150, deadline=None)
@given(v6=st.booleans(), mss=st.integers(1, 1448), segments=st.integers(2, 40),
       tail=st.integers(0, 1447), psh=st.booleans(), seq0=st.integers(0, 2**32 - 1),
       ident0=st.integers(0, 0xFFFF), opts=st.sampled_from([b"", TS_OPTION]))
def test_split_of_coalesced_stream_is_the_original(
    v6: bool, mss: int, segments: int, tail: int, psh: bool, seq0: int, ident0: int, opts: bytes
) -> None:
    total = mss * (segments - 1) + (tail % mss) + 1
    hlen = (40 if v6 else 20) + 20 + len(opts)
    if total + hlen > 65535 or (total + mss - 1) // mss > gro.MAX_SEGMENTS:
        return
    original = stream(v6, mss, total, psh, seq0, ident0, opts)
    merged = gro.coalesce(original)
    assert len(merged) == 1
    vnet, super_packet = merged[0]
    hdr, _ = VirtioNetHdr.decode(vnet)
    assert hdr.flags == VIRTIO_NET_HDR_F_NEEDS_CSUM and hdr.gso_size == mss
    assert gso.split(hdr, super_packet) == original


def test_mergeability_rules() -> None:
    base = stream(False, 100, 400, False, 1, 1, b"")
    # a gap in sequence starts a new group
    assert len(gro.coalesce([base[0], base[2]])) == 2
    # a corrupted checksum is never merged (the kernel gets it alone and drops it)
    bad = bytearray(base[1])
    bad[-1] ^= 1
    out = gro.coalesce([base[0], bytes(bad), base[2]])
    assert (EMPTY, bytes(bad)) in out and len(out) == 3
    # PSH closes a group; FIN or SYN segments are not merged
    psh = stream(False, 100, 300, True, 1, 1, b"")
    more = stream(False, 100, 100, False, 301, 4, b"")
    assert len(gro.coalesce(psh + more)) == 2
    fin = bytearray(base[1])
    fin[33] |= FIN
    assert len(gro.coalesce([base[0], bytes(fin)])) == 2
    # non-TCP passes through untouched
    assert gro.coalesce([b"\x45junk"]) == [(EMPTY, b"\x45junk")]


def test_split_super_packet_read_by_scapy() -> None:
    original = stream(False, 1000, 5000, True, 7, 9, TS_OPTION)
    vnet, sp = gro.coalesce(original)[0]
    hdr, _ = VirtioNetHdr.decode(vnet)
    assert hdr.gso_type == VIRTIO_NET_HDR_GSO_TCPV4
    for i, seg in enumerate(gso.split(hdr, sp)):
        pkt = IP(seg)
        assert pkt[STCP].seq == 7 + 1000 * i and pkt.id == 9 + i
        assert header_ok(seg) and checksum_ok(seg[20:], IPv4Address(pkt.src),
                                              IPv4Address(pkt.dst))
        assert bool(pkt[STCP].flags & PSH) == (i == 4)


def test_needs_csum_without_gso_is_finished() -> None:
    seg = stream(False, 100, 100, False, 1, 1, b"")[0]
    partial = bytearray(seg)
    partial[36:38] = b"\x12\x34"  # garbage the kernel would leave as a partial sum
    pseudo = ones_sum(seg[12:20] + bytes([0, 6]) + (len(seg) - 20).to_bytes(2, "big"))
    partial[36:38] = pseudo.to_bytes(2, "big")
    hdr = VirtioNetHdr(flags=VIRTIO_NET_HDR_F_NEEDS_CSUM, csum_start=20, csum_offset=16)
    assert gso.split(hdr, partial) == [seg]
    assert gso.finished(hdr, partial) == seg  # the single-packet path: the same bytes
    assert gso.finished(VirtioNetHdr(), seg) == seg  # nothing to finish
    with pytest.raises(PacketError):
        gso.finished(VirtioNetHdr(flags=1, csum_start=len(seg) - 1, csum_offset=16), seg)


@given(st.binary(max_size=300), st.integers(0, 5), st.integers(0, 2000))
def test_split_raises_only_packet_error(data: bytes, gso_type: int, size: int) -> None:
    hdr = VirtioNetHdr(flags=1, gso_type=gso_type, gso_size=size, csum_start=size % 60,
                       csum_offset=16)
    with contextlib.suppress(PacketError):
        gso.split(hdr, data)
    with contextlib.suppress(PacketError):
        gso.finished(hdr, data)


@given(st.lists(st.binary(max_size=120), max_size=10))
def test_coalesce_never_raises(packets: list[bytes]) -> None:
    out = gro.coalesce(packets)
    assert len(out) <= len(packets)


def test_split_rejects_bad_input() -> None:
    with pytest.raises(PacketError, match="GSO type"):
        gso.split(VirtioNetHdr(gso_type=3, gso_size=100), bytes(100))


ETH_V4 = bytes.fromhex("020000000002" "020000000001" "0800")
ETH_V6 = bytes.fromhex("020000000002" "020000000001" "86dd")
ETH_TAGGED_V4 = bytes.fromhex("020000000002" "020000000001" "8100" "0064" "0800")


@settings(max_examples=60, deadline=None)
@given(v6=st.booleans(), mss=st.integers(1, 1448), segments=st.integers(2, 30),
       psh=st.booleans(), seq0=st.integers(0, 2**32 - 1))
def test_frames_coalesce_and_split_back(v6: bool, mss: int, segments: int, psh: bool,
                                        seq0: int) -> None:
    """The TAP forms: Ethernet frames merge into one super-frame whose offsets count the
    link header, and split_frame gives the original frames back."""
    total = mss * segments
    if total + 80 > 65535:
        return
    eth = ETH_V6 if v6 else ETH_V4
    frames = [eth + p for p in stream(v6, mss, total, psh, seq0, 7, b"")]
    arp = bytes.fromhex("ffffffffffff" "020000000001" "0806") + bytes(28)
    merged = gro.coalesce_frames([*frames, arp])
    assert (EMPTY, arp) in merged
    supers = [m for m in merged if m[0] != EMPTY]
    assert len(supers) == 1
    hdr, _ = VirtioNetHdr.decode(supers[0][0])
    assert hdr.csum_start == 14 + (40 if v6 else 20) and hdr.hdr_len == hdr.csum_start + 20
    assert gso.split_frame(hdr, supers[0][1]) == frames


def test_split_frame_keeps_an_802_1q_tag() -> None:
    original = stream(False, 100, 300, True, 1, 1, b"")
    (vnet, sp), = gro.coalesce(original)
    hdr, _ = VirtioNetHdr.decode(vnet)
    tagged = VirtioNetHdr(hdr.flags, hdr.gso_type, hdr.hdr_len + 18, hdr.gso_size,
                          hdr.csum_start + 18, hdr.csum_offset)
    assert gso.split_frame(tagged, ETH_TAGGED_V4 + sp) == [ETH_TAGGED_V4 + p for p in original]


def test_split_frame_rejects_bad_link_headers() -> None:
    with pytest.raises(PacketError):
        gso.split_frame(VirtioNetHdr(), b"\x00" * 10)
    with pytest.raises(PacketError):  # checksum start inside the Ethernet header
        gso.split_frame(VirtioNetHdr(flags=1, csum_start=4, csum_offset=16), ETH_V4 + bytes(40))


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=200), gso_type=st.sampled_from([0, 1, 3, 4, 5, 0x81]),
       size=st.integers(0, 70), start=st.integers(0, 80), flags=st.integers(0, 3))
def test_split_frame_raises_only_packet_error(data: bytes, gso_type: int, size: int,
                                              start: int, flags: int) -> None:
    hdr = VirtioNetHdr(flags=flags, gso_type=gso_type, gso_size=size, csum_start=start,
                       csum_offset=16)
    with contextlib.suppress(PacketError):
        gso.split_frame(hdr, data)


def test_interleaved_flows_keep_their_order_and_merge_per_run() -> None:
    a = stream(False, 100, 300, False, 1, 1, b"")
    b = stream(True, 100, 300, False, 1, 1, b"")
    mixed = [a[0], a[1], b[0], b[1], b[2], a[2]]
    out = gro.coalesce(mixed)
    assert [len(gso.split(VirtioNetHdr.decode(v)[0], p)) for v, p in out] == [2, 3, 1]
    flat = [seg for v, p in out for seg in gso.split(VirtioNetHdr.decode(v)[0], p)]
    assert flat == mixed


@settings(max_examples=80, deadline=None)
@given(v6=st.booleans(), mss=st.integers(1, 1448), segments=st.integers(1, 40),
       align=st.sampled_from([1, 4, 16]))
def test_split_rows_are_the_split_laid_out_in_rows(v6: bool, mss: int, segments: int,
                                                  align: int) -> None:
    original = stream(v6, mss, mss * segments, True, 5, 6, TS_OPTION)
    vnet, super_packet = gro.coalesce(original)[0]
    hdr, _ = VirtioNetHdr.decode(vnet)
    if not hdr.gso:  # a single segment is written as it is
        return
    rows = gso.split_rows(hdr, super_packet, align)
    assert rows.stride % align == 0 and rows.stride % 4 == 0
    assert rows.packets() == original
    for i, n in enumerate(rows.lengths):  # the rows invariant: zeros past each packet
        assert not any(rows.buf[i * rows.stride + n : (i + 1) * rows.stride])


@settings(max_examples=300, deadline=None)
@given(v6=st.booleans(), mss=st.integers(1, 1448), segments=st.integers(2, 44),
       tail=st.integers(0, 1447), psh=st.booleans(), opts=st.sampled_from([b"", TS_OPTION]),
       edits=st.lists(st.tuples(st.integers(0, 43), st.integers(0, 79), st.integers(1, 255)),
                      max_size=2))
def test_one_flow_fast_path_agrees_with_the_general_path(
    v6: bool, mss: int, segments: int, tail: int, psh: bool, opts: bytes,
    edits: list[tuple[int, int, int]],
) -> None:
    """The whole-run fast path merges exactly what the row-by-row rules merge: a stream,
    clean or with header bytes flipped (flags, lengths, seq, checksums, addresses...)."""
    total = mss * (segments - 1) + (tail % mss) + 1
    packets = [bytearray(p) for p in stream(v6, mss, total, psh, 99, 7, opts)]
    for row, byte, xor in edits:
        packet = packets[row % len(packets)]
        packet[byte % len(packet)] ^= xor
    rows = PacketRows.from_packets(packets, 64)
    fast = gro.coalesce_rows(rows)
    assert fast == gro._coalesce_general(rows)
    if not edits and total + len(opts) + (60 if v6 else 40) <= 65535:
        assert gro._one_flow(rows) is not None  # the fast path itself took the clean run
        assert len(fast) == 1 and gso.split(VirtioNetHdr.decode(fast[0][0])[0], fast[0][1]) \
            == [bytes(p) for p in packets]


def test_a_bad_ipv4_header_checksum_is_never_merged() -> None:
    packets = [bytearray(p) for p in stream(False, 100, 400, False, 1, 1, b"")]
    packets[2][10] ^= 1
    out = gro.coalesce([bytes(p) for p in packets])
    assert (EMPTY, bytes(packets[2])) in out and len(out) == 3


def _pieces(v6: bool, mss: int, count: int, seq0: int) -> list[bytes]:
    return stream(v6, mss, mss * count, False, seq0, seq0 & 0xFFFF, TS_OPTION)


@settings(max_examples=400, deadline=None)
@given(
    parts=st.lists(
        st.one_of(
            st.builds(_pieces, st.booleans(), st.integers(1, 1448), st.integers(1, 12),
                      st.sampled_from([1, 5000, 2**32 - 3000])),
            st.lists(st.binary(max_size=90), max_size=2),
        ),
        min_size=1, max_size=5,
    ),
    order=st.randoms(use_true_random=False),
    edits=st.lists(st.tuples(st.integers(0, 99), st.integers(0, 79), st.integers(1, 255)),
                   max_size=3),
)
def test_the_general_path_agrees_with_the_plain_reference(
    parts: list[list[bytes]], order: object, edits: list[tuple[int, int, int]],
) -> None:
    """Streams of both versions, interleaved or not, with garbage, empty packets and
    header bytes flipped: the column-wise paths give what the one-packet-at-a-time
    reference gives, byte for byte."""
    packets = [bytearray(p) for part in parts for p in part]
    if len(packets) > 3 and edits and edits[0][2] & 1:  # sometimes interleave flows
        order.shuffle(packets)  # type: ignore[attr-defined]
    for row, byte, xor in edits:
        if packets:
            packet = packets[row % len(packets)]
            if packet:
                packet[byte % len(packet)] ^= xor
    plain = [bytes(p) for p in packets]
    assert gro.coalesce(plain) == gro.coalesce_reference(plain)
    if len(plain) > 1:
        rows = PacketRows.from_packets(plain, 64)
        assert gro._coalesce_general(rows) == gro.coalesce_reference(plain)
