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
    rows = gso.reference_split_tcp(data, v4, mss, 16)
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
    rows = gso.reference_split_tcp(data, v4, mss, 16)
    merged = _native(rows)
    if len(rows) < 2 or len(rows) > gro.MAX_SEGMENTS:
        assert merged is None
        return
    assert merged is not None and merged == _python(rows)
    hdr, joined = merged
    assert gso.split(VirtioNetHdr.decode(hdr + joined)[0], joined) == rows.packets()


@settings(max_examples=200, deadline=None)
@given(super_packets(plain=True) | super_packets(), st.integers(200, 1500),
       st.binary(max_size=30), st.lists(st.integers(0, 10**6), max_size=2))
def test_a_datagram_run_merges_as_its_rows_do(
    packet: tuple[bytes, bool], mss: int, prefix: bytes, flips: list[int]
) -> None:
    """coalesce_datagrams on a GRO receive buffer (prefix + segment, back to back) gives
    what the rows of the segments give; a datagram whose prefix differs: None."""
    data, v4 = packet
    segments = gso.reference_split_tcp(data, v4, mss, 1).packets()
    buffer = bytearray(b"".join(prefix + s for s in segments))
    size = len(prefix) + len(segments[0])
    for offset in flips:  # damage: a prefix, a header or a payload byte
        buffer[offset % len(buffer)] ^= 0x41
    damaged = [bytes(buffer[i : i + size]) for i in range(0, len(buffer), size)]
    prefixes_equal = all(d[: len(prefix)] == prefix for d in damaged)
    rows = PacketRows.from_packets([d[len(prefix):] for d in damaged], 64)
    expected = _native(rows) if len(segments) >= 2 and prefixes_equal else None
    done = _datapath.coalesce_datagrams(bytes(buffer), size, len(prefix))
    got = None
    if done is not None:
        merged, iph, headers, gso_size = done
        got = (gro._super_header(iph, headers, gso_size), merged)
    assert got == expected
    # keeping the last bytes of the prefix in front: the same merge behind them
    keep = len(prefix) // 2
    kept = _datapath.coalesce_datagrams(bytes(buffer), size, len(prefix), keep)
    assert (kept is None) == (done is None)
    if kept is not None and done is not None:
        assert kept[0] == bytes(buffer[len(prefix) - keep : len(prefix)]) + done[0]
        assert kept[1:] == done[1:]


@settings(max_examples=100, deadline=None)
@given(super_packets(plain=True), st.integers(200, 1500))
def test_encapsulated_runs_merge_as_their_frames_do(packet: tuple[bytes, bool],
                                                    mss: int) -> None:
    """A VXLAN GRO receive merged from the buffer: what coalesce_frames makes of its
    frames, when that is one super-frame."""
    data, v4 = packet
    segments = gso.reference_split_tcp(data, v4, mss, 1).packets()
    link = bytes.fromhex("02000000000b02000000000a") + (b"\x08\x00" if v4 else b"\x86\xdd")
    tunnel = bytes.fromhex("0800000000002a00")
    frames = [link + s for s in segments]
    buffer = b"".join(tunnel + f for f in frames)
    merged = gro.coalesce_encapsulated(buffer, len(tunnel) + len(frames[0]), len(tunnel))
    reference = gro.coalesce_frames(frames)
    if len(segments) < 2 or len(segments) > gro.MAX_SEGMENTS:
        assert merged is None
        return
    assert len(reference) == 1 and merged == reference[0]
    wrong = link[:12] + (b"\x86\xdd" if v4 else b"\x08\x00")  # the ethertype lies
    assert gro.coalesce_encapsulated(buffer.replace(link, wrong), len(tunnel) + len(frames[0]),
                                     len(tunnel)) is None
