from __future__ import annotations

import struct
from ipaddress import IPv4Address, IPv6Address

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from vnet.packet.checksum import (
    checksum,
    checksums,
    ones_sum,
    pseudo_header_sum,
    row_sums,
    verify,
)
from vnet.packet.rows import PacketRows


def naive_checksum(data: bytes) -> int:
    """RFC 1071 §4.1, word by word, as the reference."""
    if len(data) % 2:
        data += b"\0"
    total = 0
    for (word,) in struct.iter_unpack("!H", data):
        total += word
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def test_rfc1071_example() -> None:
    # RFC 1071 §3: bytes 00 01 f2 03 f4 f5 f6 f7 sum to ddf2 (checksum 220d)
    data = bytes.fromhex("0001f203f4f5f6f7")
    assert ones_sum(data) == 0xDDF2
    assert checksum(data) == 0x220D


def test_known_ipv4_header() -> None:
    # A textbook header whose checksum field is b861.
    header = bytes.fromhex("450000730000400040110000c0a80001c0a800c7")
    assert checksum(header) == 0xB861
    filled = header[:10] + b"\xb8\x61" + header[12:]
    assert verify(filled)


@given(st.binary(max_size=3000))
def test_matches_reference(data: bytes) -> None:
    assert checksum(data) == naive_checksum(data)


@given(st.binary(max_size=600).filter(lambda b: len(b) % 2 == 0))
def test_inserted_checksum_verifies(data: bytes) -> None:
    filled = data + struct.pack("!H", checksum(data))
    assert verify(filled)


def test_pseudo_headers_match_layout() -> None:
    src4, dst4 = IPv4Address("198.18.0.1"), IPv4Address("198.18.0.2")
    expected4 = ones_sum(src4.packed + dst4.packed + bytes([0, 17]) + struct.pack("!H", 42))
    assert pseudo_header_sum(src4, dst4, 17, 42) == expected4
    src6, dst6 = IPv6Address("fd00::1"), IPv6Address("fd00::2")
    expected6 = ones_sum(src6.packed + dst6.packed + struct.pack("!I3xB", 42, 58))
    assert pseudo_header_sum(src6, dst6, 58, 42) == expected6


@given(st.lists(st.binary(max_size=300), min_size=1, max_size=12), st.sampled_from([0, 4, 12]))
def test_row_sums_equal_ones_sum_of_each_row(chunks: list[bytes], start: int) -> None:
    rows = PacketRows.from_packets(chunks, start)
    sums = row_sums(rows.grid(), start).tolist()
    # congruent mod 0xffff (ones_sum gives 0 for a zero sum, 0xffff for other all-ones)
    assert [t % 0xFFFF for t in sums] == [ones_sum(c[start:]) % 0xFFFF for c in chunks]


@given(st.lists(st.binary(min_size=2, max_size=64).filter(any), min_size=1, max_size=20))
def test_checksums_of_many_sums_equal_checksum_of_each(blocks: list[bytes]) -> None:
    sums = np.array([int.from_bytes(b, "big") % (1 << 62) or 1 for b in blocks],
                    dtype=np.int64)
    expected = [checksum(b"", int(x)) for x in sums.tolist()]
    assert checksums(sums).tolist() == expected
