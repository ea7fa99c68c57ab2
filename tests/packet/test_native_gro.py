"""The native GRO of one flow (vnet._datapath.coalesce_one_flow) against the Python
rule (gro._one_flow): the same super-packet, or None, for runs split from a super-packet
and then damaged in any byte, length or order."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.packet.test_native_split import super_packets
from vnet import _datapath
from vnet.packet import gro, gso
from vnet.packet.rows import PacketRows
from vnet.packet.virtio import VirtioNetHdr


def _python(rows: PacketRows) -> tuple[bytes, bytes] | None:
    return gro._one_flow(rows)


def _native(rows: PacketRows) -> tuple[bytes, bytes] | None:
    done = _datapath.coalesce_one_flow(rows.buf, rows.stride, rows.lengths)
    if done is None:
        return None
    packet, iph, headers, size = done
    return gro._super_header(iph, headers, size), packet


@settings(max_examples=400, deadline=None)
@given(super_packets(plain=True) | super_packets(), st.integers(200, 1500),
       st.lists(st.tuples(st.integers(0, 10**6), st.integers(1, 255)), max_size=3),
       st.one_of(st.none(), st.tuples(st.integers(0, 70), st.integers(0, 1600))),
       st.booleans())
def test_native_one_flow_equals_the_python_rule(
    packet: tuple[bytes, bool], mss: int, flips: list[tuple[int, int]],
    relength: tuple[int, int] | None, swap: bool,
) -> None:
    data, v4 = packet
    rows = gso._split_tcp(data, v4, mss, 16)
    if len(rows) < 2:
        return
    if rows.stride < 64:
        rows = PacketRows.from_packets(rows.packets(), 64)
    for offset, xor in flips:  # any byte of any row
        rows.buf[offset % len(rows.buf)] ^= xor
    if relength is not None:
        i, n = relength
        rows.lengths[i % len(rows)] = min(n, rows.stride)
    if swap:
        a = bytes(rows.row(0))
        rows.buf[: rows.stride] = bytes(rows.buf[rows.stride : 2 * rows.stride])
        rows.buf[rows.stride : rows.stride + len(a)] = a
        rows.buf[rows.stride + len(a) : 2 * rows.stride] = bytes(rows.stride - len(a))
        rows.lengths[0], rows.lengths[1] = rows.lengths[1], rows.lengths[0]
    assert _native(rows) == _python(rows)


@settings(max_examples=100, deadline=None)
@given(super_packets(plain=True), st.integers(200, 1500))
def test_an_intact_run_merges_back_into_its_super_packet(packet: tuple[bytes, bool],
                                                         mss: int) -> None:
    data, v4 = packet
    rows = gso._split_tcp(data, v4, mss, 16)
    merged = _native(rows)
    if len(rows) < 2 or len(rows) > gro.MAX_SEGMENTS:
        assert merged is None
        return
    assert merged is not None and merged == _python(rows)
    hdr, joined = merged
    assert gso.split(VirtioNetHdr.decode(hdr + joined)[0], joined) == rows.packets()
