"""Coalescing of TCP segments into TUN super-packets (the reverse of ``gso.split``).

Segments merge when they are the same flow (addresses, ports), carry the same
ACK, window, TTL/hop limit, TOS and TCP options, have plain ACK(/PSH) flags,
payloads follow each other in sequence, all but the last are of equal size,
and their TCP checksums verify. PSH, a shorter segment or 64 KiB ends a group.
A merged group is written once, with a virtio_net_hdr asking the kernel for
GSO and a partial checksum (NEEDS_CSUM) it will finish.
"""

from __future__ import annotations

import functools
import itertools
import struct
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from vnet import native
from vnet.packet.checksum import checksum, fold, ones_sum, row_sums
from vnet.packet.ethernet import ETH_HLEN, ETH_P_IP, ETH_P_IPV6
from vnet.packet.rows import PacketRows, column16
from vnet.packet.tcp import ACK, PSH
from vnet.packet.virtio import (
    EMPTY,
    VIRTIO_NET_HDR_F_NEEDS_CSUM,
    VIRTIO_NET_HDR_GSO_TCPV4,
    VIRTIO_NET_HDR_GSO_TCPV6,
    VirtioNetHdr,
)

IPPROTO_TCP = 6
_native = native.datapath
_IP_TYPES = (ETH_P_IP.to_bytes(2, "big"), ETH_P_IPV6.to_bytes(2, "big"))
MAX_SUPER = 65535
MAX_SEGMENTS = 64
_H = struct.Struct("!H")


# Header bytes that differ between segments of one flow: IPv4 length, id and header
# checksum, IPv6 payload length; TCP sequence number, flags and checksum. Every other
# byte up to the end of the TCP options (addresses, ports, ACK, window, TOS/TTL or
# class/flow/hop limit, options) must be equal for two segments to merge.
_VARYING4 = [2, 3, 4, 5, 10, 11]
_VARYING6 = [4, 5]
_VARYING_TCP = [4, 5, 6, 7, 13, 16, 17]
_MIN_STRIDE = 64  # the widest header columns read below (IPv6 + TCP)
_MAX_OPTIONS = 40
_MAX_HEADERS = 40 + 60  # IPv6 + the longest TCP header


@dataclass(slots=True)
class _Span:
    """Rows being merged into one super-packet."""

    first: int  # first row
    last: int  # last row so far
    next_seq: int  # the sequence number the next segment must carry
    size: int  # segment size: every segment but the last carries exactly this much
    payload: int  # payload bytes so far


def _checksums_ok(
    grid: npt.NDArray[np.uint8], length: npt.NDArray[np.int64], iph: int
) -> npt.NDArray[np.bool_]:
    """Per row of ``length``-byte packets: the TCP checksum verifies, and for IPv4 the
    header checksum (a merge writes fresh ones). A checksum verifies when the sum it
    covers is 0 mod 0xffff (a one's-complement sum of all ones); the row sum from the
    addresses on is the pseudo-header's addresses plus the segment (zeros past each
    packet), the protocol and TCP length are added."""
    residue = (row_sums(grid, 12 if iph == 20 else 8) + (IPPROTO_TCP - iph + length)) % 0xFFFF
    if iph == 20:
        residue |= row_sums(grid, 0, 20) % 0xFFFF
    ok: npt.NDArray[np.bool_] = residue == 0
    return ok


def coalesce_rows(rows: PacketRows) -> list[tuple[bytes, bytes]]:
    """(virtio_net_hdr, packet) pairs to write, in order: runs of rows that may merge
    become one super-packet each, every other packet passes alone."""
    if len(rows) < 2 or not _two_carry_payload(rows):
        # nothing to merge with (a run of pure ACKs, say): skip the column work's fixed cost
        return [(EMPTY, bytes(rows.row(i))) for i, n in enumerate(rows.lengths) if n]
    if rows.stride < _MIN_STRIDE:
        rows = PacketRows.from_packets(rows.packets(), _MIN_STRIDE)
    if _native is not None:  # the usual run, merged in C; None: not one flow in order
        done = _native.coalesce_one_flow(rows.buf, rows.stride, rows.lengths)
        if done is not None:
            packet, iph, headers, gso_size = done
            return [(_super_header(iph, headers, gso_size), packet)]
        return _coalesce_general(rows)
    merged = _one_flow(rows)
    if merged is not None:
        return [merged]
    return _coalesce_general(rows)


def _two_carry_payload(rows: PacketRows) -> bool:
    """Whether at least two rows are TCP segments with payload, read header by header:
    for the few rows of an ACK run this costs less than one numpy operation."""
    buf, stride = rows.buf, rows.stride
    found = 0
    for i, n in enumerate(rows.lengths):
        at = i * stride
        if n < 40:
            continue
        version = buf[at] >> 4
        if version == 4:
            iph, proto = (buf[at] & 0x0F) * 4, buf[at + 9]
        elif version == 6:
            iph, proto = 40, buf[at + 6]
        else:
            continue
        if proto == IPPROTO_TCP and n >= iph + 20 and n > iph + (buf[at + iph + 12] >> 4) * 4:
            found += 1
            if found == 2:
                return True
    return False


def _coalesce_general(rows: PacketRows) -> list[tuple[bytes, bytes]]:
    grid = rows.grid()
    # each IP version is read with its own header layout: the batch is cut where the
    # version changes (a GRO batch is one flow, one cut, in practice)
    v6 = (grid[:, 0] >> 4) == 6
    cuts = [0, *(np.flatnonzero(v6[1:] != v6[:-1]) + 1).tolist(), len(rows)]
    out: list[tuple[bytes, bytes]] = []
    for first, end in itertools.pairwise(cuts):
        out += _coalesce_range(rows, grid, first, end, 40 if v6[first] else 20)
    return out


@functools.lru_cache(maxsize=32)
def _equal_masks(iph: int, headers: int) -> tuple[npt.NDArray[np.uint8], int]:
    """For one header layout: a byte mask of what must be equal in every segment but
    the last (all but the varying bytes above, less the IP length and TCP flags, which
    such segments share with the first), and as an integer (headers read big-endian)
    what must be equal in the last, which may be shorter and carry PSH."""
    varying_last = {*(_VARYING4 if iph == 20 else _VARYING6), *(iph + c for c in _VARYING_TCP)}
    varying = varying_last - ({2, 3} if iph == 20 else {4, 5}) - {iph + 13}
    mask = np.array([0 if i in varying else 0xFF for i in range(headers)], dtype=np.uint8)
    last = bytes(0 if i in varying_last else 0xFF for i in range(headers))
    return mask, int.from_bytes(last, "big")


def _one_flow(rows: PacketRows) -> tuple[bytes, bytes] | None:
    """The usual GRO run - one flow's segments in order, headers equal but for IPv4 ids,
    sequence numbers and checksums (the last may be shorter and carry PSH) - merged with
    the first and last headers read in Python and a few whole-array checks for the rest;
    None when the run is anything else (the general path then decides)."""
    count = len(rows)
    lengths = rows.lengths
    n = lengths[0]
    if count > MAX_SEGMENTS or lengths.count(n) + (lengths[-1] != n) != count:
        return None
    stride = rows.stride
    buf = rows.buf
    head = bytes(buf[: min(stride, _MAX_HEADERS)])
    if head[0] == 0x45 and head[9] == IPPROTO_TCP and not head[6] & 0x3F | head[7]:
        iph = 20
        ip_length = int.from_bytes(head[2:4], "big")
    elif head[0] >> 4 == 6 and head[6] == IPPROTO_TCP:
        iph = 40
        ip_length = 40 + int.from_bytes(head[4:6], "big")
    else:
        return None
    offset_byte = head[iph + 12]
    headers = iph + (offset_byte >> 4) * 4
    size = n - headers  # payload per segment
    if offset_byte & 0x0F or offset_byte < 0x50 or ip_length != n or size <= 0:
        return None
    if headers > len(head):
        return None
    if head[iph + 13] != ACK:
        return None
    last = count - 1
    tail = bytes(buf[last * stride : last * stride + headers])
    n_last = lengths[last]
    if iph == 20:
        tail_length = int.from_bytes(tail[2:4], "big")
    else:
        tail_length = 40 + int.from_bytes(tail[4:6], "big")
    mask, last_mask = _equal_masks(iph, headers)
    if (
        tail_length != n_last
        or not headers < n_last <= n
        or tail[iph + 13] & (0xFF ^ PSH) != ACK
        or (int.from_bytes(tail, "big") ^ int.from_bytes(head[:headers], "big")) & last_mask
    ):
        return None
    grid = rows.grid()
    differs = grid[:last, :headers] ^ grid[0, :headers]
    differs &= mask
    if differs.any():
        return None
    seq = grid[:, iph + 4 : iph + 8].view(">u4")[:, 0]
    if ((seq[1:] - seq[:-1]) != size).any():  # uint32: wraps like TCP
        return None
    if not _checksums_ok(grid, np.array(lengths, dtype=np.int64), iph).all():
        return None
    payload = size * last + n_last - headers
    if headers + payload > MAX_SUPER:
        return None
    return _emit(rows, grid, _Span(0, last, 0, size, payload), iph, headers)


def _coalesce_range(
    rows: PacketRows, whole: npt.NDArray[np.uint8], first: int, end: int, iph: int
) -> list[tuple[bytes, bytes]]:
    grid = whole[first:end]
    count = end - first
    length = np.array(rows.lengths[first:end], dtype=np.int64)
    # plain ACK(/PSH) TCP segments with payload: IPv4 without options or fragments,
    # IPv6 without extension headers, lengths consistent, checksums verified
    if iph == 40:
        ip_ok = ((grid[:, 0] >> 4) == 6) & (grid[:, 6] == IPPROTO_TCP)
        ip_ok &= column16(grid, 4) + 40 == length
        varying = _VARYING6
    else:
        ip_ok = (grid[:, 0] == 0x45) & (grid[:, 9] == IPPROTO_TCP)
        ip_ok &= ((grid[:, 6] & 0x3F) == 0) & (grid[:, 7] == 0) & (column16(grid, 2) == length)
        varying = _VARYING4
    offset_byte = grid[:, iph + 12]
    flags = grid[:, iph + 13]
    ends = iph + (offset_byte >> 4).astype(np.int64) * 4
    mergeable = (
        ip_ok
        & (offset_byte >= 0x50)
        & ((offset_byte & 0x0F) == 0)
        & (length > ends)
        & ((flags & (0xFF ^ PSH)) == ACK)
        & _checksums_ok(grid, length, iph)
    )
    same = np.zeros(count, dtype=np.bool_)
    if count > 1:
        width = min(rows.stride, iph + 20 + _MAX_OPTIONS)
        differs = grid[1:, :width] != grid[:-1, :width]
        differs[:, varying] = False
        differs[:, [iph + c for c in _VARYING_TCP]] = False
        differs &= np.arange(width) < ends[1:, None]  # options: up to the row's own end
        same[1:] = ~differs.any(axis=1)
    seq = grid[:, iph + 4 : iph + 8].view(">u4")[:, 0]
    # the merging itself is sequential (sizes, PSH and limits close a run); Python
    # lists and ints are far cheaper than numpy scalars in a loop
    out: list[tuple[bytes, bytes]] = []
    run: _Span | None = None
    closed = True
    for i, (ok, joins, n, hlen, s, fl) in enumerate(
        zip(
            mergeable.tolist(),
            same.tolist(),
            rows.lengths[first:end],
            ends.tolist(),
            seq.tolist(),
            flags.tolist(),
            strict=True,
        ),
        start=first,
    ):
        if not n:
            continue
        size = n - hlen
        if (
            run is not None
            and ok
            and joins
            and not closed
            and run.last == i - 1
            and s == run.next_seq
            and size <= run.size
            and i - run.first < MAX_SEGMENTS
            and hlen + run.payload + size <= MAX_SUPER
        ):
            run.last = i
            run.next_seq = (s + size) & 0xFFFFFFFF
            run.payload += size
            closed = size < run.size or bool(fl & PSH)
            continue
        if run is not None:
            out.append(_emit(rows, whole, run, iph, int(ends[run.first - first])))
        if ok:
            run = _Span(i, i, (s + size) & 0xFFFFFFFF, size, size)
            closed = bool(fl & PSH)
        else:
            run = None
            closed = True
            out.append((EMPTY, bytes(rows.row(i))))
    if run is not None:
        out.append(_emit(rows, whole, run, iph, int(ends[run.first - first])))
    return out


def coalesce(packets: list[bytes]) -> list[tuple[bytes, bytes]]:
    """``coalesce_rows`` for separate packets."""
    if len(packets) < 2:
        return [(EMPTY, p) for p in packets]
    return coalesce_rows(PacketRows.from_packets(packets, _MIN_STRIDE))


def _emit(
    rows: PacketRows, grid: npt.NDArray[np.uint8], run: _Span, iph: int, headers: int
) -> tuple[bytes, bytes]:
    first, last, gso_size, payload = run.first, run.last, run.size, run.payload
    if first == last:
        return EMPTY, bytes(rows.row(first))
    start = first * rows.stride
    hdr = bytearray(rows.buf[start : start + headers])
    tcp_len = headers - iph + payload
    if iph == 20:
        _H.pack_into(hdr, 2, iph + tcp_len)
        hdr[10:12] = b"\0\0"
        _H.pack_into(hdr, 10, ~fold(int.from_bytes(hdr[:iph], "big")) & 0xFFFF)
        addresses = int.from_bytes(hdr[12:20], "big")
    else:
        _H.pack_into(hdr, 4, tcp_len)
        addresses = int.from_bytes(hdr[8:40], "big")
    hdr[iph + 13] = grid[last, iph + 13]  # the last segment's flags: PSH if it ends a push
    # NEEDS_CSUM: the field holds the pseudo-header sum; the kernel adds the rest
    _H.pack_into(hdr, iph + 16, fold(addresses + IPPROTO_TCP + tcp_len))
    # all but the last segment carry exactly gso_size bytes: one 2-D slice copies them
    body = grid[first:last, headers : headers + gso_size].tobytes()
    tail = grid[last, headers : rows.lengths[last]].tobytes()
    return _super_header(iph, headers, gso_size), b"".join((hdr, body, tail))


@functools.lru_cache(maxsize=64)  # bounded: gso_size comes from the peer
def _super_header(iph: int, headers: int, gso_size: int, link: int = 0) -> bytes:
    """The virtio_net_hdr of a merged TCP super-packet (one per layout and segment size);
    ``link``: the bytes of link header before IP (a TAP's frames)."""
    return VirtioNetHdr(
        flags=VIRTIO_NET_HDR_F_NEEDS_CSUM,
        gso_type=VIRTIO_NET_HDR_GSO_TCPV4 if iph == 20 else VIRTIO_NET_HDR_GSO_TCPV6,
        hdr_len=link + headers,
        gso_size=gso_size,
        csum_start=link + iph,
        csum_offset=16,
    ).encode()


def coalesce_encapsulated(
    data: bytes | bytearray | memoryview, size: int, tunnel: int
) -> tuple[bytes, bytes] | None:
    """A UDP GRO receive of tunnelled frames - datagrams ``size`` bytes apart, each a
    ``tunnel``-byte header and an untagged Ethernet frame, all with the same tunnel and
    Ethernet header - whose frames are one flow's TCP segments in order: (virtio_net_hdr,
    super-frame), merged straight from the receive buffer by the native module. None for
    anything else, or without the native module: the frames then merge one by one
    (``coalesce_frames``), to the same result."""
    view = memoryview(data)
    if _native is None or len(view) < tunnel + ETH_HLEN:
        return None
    ethertype = bytes(view[tunnel + 12 : tunnel + ETH_HLEN])
    # merged behind the first frame's Ethernet header: the super-frame, in one copy
    done = _native.coalesce_datagrams(view, size, tunnel + ETH_HLEN, ETH_HLEN)
    if done is None or ethertype != _IP_TYPES[0 if done[1] == 20 else 1]:
        return None
    frame, iph, headers, gso_size = done
    return _super_header(iph, headers, gso_size, ETH_HLEN), frame


def coalesce_frames(frames: list[bytes]) -> list[tuple[bytes, bytes]]:
    """``coalesce`` for a TAP: (virtio_net_hdr, frame) pairs. Frames merge only with
    frames of the same untagged IPv4/IPv6 Ethernet header; the rest pass as they are."""
    by_link: dict[bytes, list[bytes]] = {}
    out: list[tuple[bytes, bytes]] = []
    for frame in frames:
        head = frame[:ETH_HLEN]
        if len(frame) > ETH_HLEN and head[12:14] in _IP_TYPES:
            by_link.setdefault(head, []).append(frame[ETH_HLEN:])
        else:
            out.append((EMPTY, frame))
    for head, packets in by_link.items():
        for vnet, packet in coalesce(packets):
            if vnet is EMPTY:
                out.append((vnet, head + packet))
                continue
            hdr, _ = VirtioNetHdr.decode(vnet)
            moved = hdr._replace(
                hdr_len=hdr.hdr_len + ETH_HLEN, csum_start=hdr.csum_start + ETH_HLEN
            )
            out.append((moved.encode(), head + packet))
    return out


# --- the reference: the same rules, one packet at a time, in plain Python -------------


@dataclass(slots=True)
class _Segment:
    """What the rules read of one TCP segment that may merge."""

    iph: int  # IP header length: 20 (IPv4 without options) or 40 (IPv6)
    headers: int  # IP + TCP header length
    seq: int
    flags: int


@dataclass(slots=True)
class _Run:
    """Segments being merged: the first and last of them, the sequence number the next
    must carry, the segment size all but the last share, and the payload so far."""

    packets: list[bytes]
    segment: _Segment
    next_seq: int
    size: int
    payload: int
    closed: bool  # PSH or a shorter segment ended it


def _mergeable(packet: bytes) -> _Segment | None:
    """A plain ACK(/PSH) TCP segment with payload and valid checksums: IPv4 without
    options or fragments, or IPv6 without extension headers. None otherwise."""
    n = len(packet)
    version = packet[0] >> 4 if packet else 0
    if version == 6:
        iph = 40
        if n < iph + 20 or packet[6] != IPPROTO_TCP or 40 + _H.unpack_from(packet, 4)[0] != n:
            return None
        addresses = packet[8:40]
    else:
        iph = 20
        if n < iph + 20 or packet[0] != 0x45 or packet[9] != IPPROTO_TCP:
            return None
        if packet[6] & 0x3F or packet[7] or _H.unpack_from(packet, 2)[0] != n:
            return None
        if ones_sum(packet[:20]) != 0xFFFF:  # the IPv4 header checksum
            return None
        addresses = packet[12:20]
    offset = packet[iph + 12]
    headers = iph + (offset >> 4) * 4
    flags = packet[iph + 13]
    if offset < 0x50 or offset & 0x0F or n <= headers or flags & ~PSH != ACK:
        return None
    pseudo = ones_sum(addresses) + IPPROTO_TCP + n - iph
    if ones_sum(packet[iph:], pseudo) != 0xFFFF:  # the TCP checksum
        return None
    return _Segment(iph, headers, int.from_bytes(packet[iph + 4 : iph + 8], "big"), flags)


def _same_flow(previous: bytes, packet: bytes, segment: _Segment) -> bool:
    """Every header byte of ``packet`` that must not vary equals ``previous``'s."""
    iph = segment.iph
    varying = {*(_VARYING4 if iph == 20 else _VARYING6), *(iph + c for c in _VARYING_TCP)}
    before = previous[: segment.headers].ljust(segment.headers, b"\0")
    return all(before[i] == packet[i] for i in range(segment.headers) if i not in varying)


def coalesce_reference(packets: list[bytes]) -> list[tuple[bytes, bytes]]:
    """``coalesce`` one packet at a time: the readable statement of the rules in the
    module docstring, which the column-wise paths must match byte for byte."""
    if len(packets) < 2:
        return [(EMPTY, p) for p in packets]
    out: list[tuple[bytes, bytes]] = []
    run: _Run | None = None
    previous = b""
    for packet in packets:
        if not packet:  # nothing to write; the run cannot go on across it
            if run is not None:
                out.append(_emit_run(run))
            run, previous = None, b""
            continue
        segment = _mergeable(packet)
        size = len(packet) - segment.headers if segment is not None else 0
        if (
            run is not None
            and segment is not None
            and not run.closed
            and _same_flow(previous, packet, segment)
            and segment.seq == run.next_seq
            and size <= run.size
            and len(run.packets) < MAX_SEGMENTS
            and segment.headers + run.payload + size <= MAX_SUPER
        ):
            run.packets.append(packet)
            run.next_seq = (segment.seq + size) & 0xFFFFFFFF
            run.payload += size
            run.closed = size < run.size or bool(segment.flags & PSH)
        else:
            if run is not None:
                out.append(_emit_run(run))
            run = None
            if segment is not None:
                run = _Run(
                    [packet],
                    segment,
                    (segment.seq + size) & 0xFFFFFFFF,
                    size,
                    size,
                    bool(segment.flags & PSH),
                )
            else:
                out.append((EMPTY, packet))
        previous = packet
    if run is not None:
        out.append(_emit_run(run))
    return out


def _emit_run(run: _Run) -> tuple[bytes, bytes]:
    first, last = run.packets[0], run.packets[-1]
    if len(run.packets) == 1:
        return EMPTY, first
    iph, headers = run.segment.iph, run.segment.headers
    hdr = bytearray(first[:headers])
    tcp_length = headers - iph + run.payload
    if iph == 20:
        _H.pack_into(hdr, 2, iph + tcp_length)
        _H.pack_into(hdr, 10, 0)
        _H.pack_into(hdr, 10, checksum(hdr[:iph]))
        addresses = hdr[12:20]
    else:
        _H.pack_into(hdr, 4, tcp_length)
        addresses = hdr[8:40]
    hdr[iph + 13] = last[iph + 13]
    _H.pack_into(hdr, iph + 16, ones_sum(addresses, IPPROTO_TCP + tcp_length))
    body = b"".join(p[headers:] for p in run.packets)
    return _super_header(iph, headers, run.size), bytes(hdr) + body
