"""Segmentation of TUN super-packets (IFF_VNET_HDR + TUNSETOFFLOAD TSO).

With TSO on, one TUN read can return a TCP "super-packet" of up to 64 KiB
described by a virtio_net_hdr: ``gso_size`` bytes of payload per segment, the
TCP checksum left partial (NEEDS_CSUM). ``split`` turns it into MTU-sized IP
packets with their own IPv4 id/length/header checksum or IPv6 payload length,
TCP sequence number, flags (FIN/PSH only on the last, CWR only on the first)
and full TCP checksum - the rules of wireguard-go's tun/offload_linux.go.
"""

from __future__ import annotations

import struct
from typing import Any

import numpy as np
import numpy.typing as npt

from vnet import native
from vnet.errors import PacketError
from vnet.packet.checksum import checksum, checksums, row_sums
from vnet.packet.ethernet import Ethernet
from vnet.packet.rows import PacketRows
from vnet.packet.tcp import CWR, FIN, PSH
from vnet.packet.virtio import (
    VIRTIO_NET_HDR_F_NEEDS_CSUM,
    VIRTIO_NET_HDR_GSO_ECN,
    VIRTIO_NET_HDR_GSO_NONE,
    VIRTIO_NET_HDR_GSO_TCPV4,
    VIRTIO_NET_HDR_GSO_TCPV6,
    VirtioNetHdr,
)

IPPROTO_TCP = 6
_native = native.datapath
_H = struct.Struct("!H")


def finish_checksum(packet: bytearray, start: int, offset: int) -> None:
    """Complete a partial checksum (NEEDS_CSUM): sum from ``start`` to the end of the
    packet, where the field at ``start + offset`` already holds the pseudo-header sum."""
    if start < 0 or start + offset + 2 > len(packet):
        raise PacketError("checksum offsets outside the packet")
    _H.pack_into(packet, start + offset, checksum(memoryview(packet)[start:]))


def finished(hdr: VirtioNetHdr, packet: bytes | bytearray | memoryview) -> bytes:
    """A packet read without GSO as it goes on the wire: a partial checksum
    (NEEDS_CSUM) completed. The cheap way for single packets (ACKs, pings)."""
    if hdr.gso:
        raise PacketError("a GSO super-packet is split, not finished")
    if not hdr.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM:
        return bytes(packet)
    out = bytearray(packet)
    finish_checksum(out, hdr.csum_start, hdr.csum_offset)
    return bytes(out)


def split_rows(
    hdr: VirtioNetHdr, packet: bytes | bytearray | memoryview, align: int = 4
) -> PacketRows:
    """``split`` into rows: segment ``i`` at ``i * stride``, with the stride a multiple of
    ``align`` (16 leaves room for WireGuard's padding in place) and of 4."""
    gso = hdr.gso_type & ~VIRTIO_NET_HDR_GSO_ECN
    if gso == VIRTIO_NET_HDR_GSO_NONE:
        return PacketRows.from_packets([finished(hdr, packet)], _round_up(len(packet), align))
    if gso not in (VIRTIO_NET_HDR_GSO_TCPV4, VIRTIO_NET_HDR_GSO_TCPV6):
        raise PacketError(f"unsupported GSO type {hdr.gso_type}")
    v4 = gso == VIRTIO_NET_HDR_GSO_TCPV4
    if _native is not None:  # the same rows from C; None: the reference names the problem
        done = _native.split_tcp(packet, v4, hdr.gso_size, align)
        if done is not None:
            return PacketRows(*done)
    return reference_split_tcp(packet, v4, hdr.gso_size, align)


def split(hdr: VirtioNetHdr, packet: bytes | bytearray | memoryview) -> list[bytes]:
    """Full IP packets from one TUN read; ``packet`` excludes the virtio_net_hdr."""
    return split_rows(hdr, packet).packets()


def _round_up(n: int, align: int) -> int:
    return -(-n // align) * align


def split_frame(hdr: VirtioNetHdr, frame: bytes | bytearray | memoryview) -> list[bytes]:
    """``split`` for a TAP read: Ethernet frames, each with the super-frame's link header."""
    link, inner = _behind_link(hdr, frame)
    head = bytes(frame[:link])
    return [head + p for p in split(inner, memoryview(frame)[link:])]


def split_frame_segments(
    hdr: VirtioNetHdr, frame: bytes | bytearray | memoryview, prefix: bytes
) -> tuple[bytes | bytearray, int]:
    """``split_frame``'s frames, each behind ``prefix`` (a tunnel header), back to back:
    the buffer of one UDP GSO send and its segment size (the last may be shorter)."""
    link, inner = _behind_link(hdr, frame)
    view = memoryview(frame)
    head = prefix + bytes(view[:link])
    gso = inner.gso_type & ~VIRTIO_NET_HDR_GSO_ECN
    if gso == VIRTIO_NET_HDR_GSO_NONE:  # one frame (an ACK): its checksum finished
        one = head + finished(inner, view[link:])
        return one, len(one)
    if _native is not None and gso in (VIRTIO_NET_HDR_GSO_TCPV4, VIRTIO_NET_HDR_GSO_TCPV6):
        v4 = gso == VIRTIO_NET_HDR_GSO_TCPV4
        done = _native.split_tcp(view[link:], v4, inner.gso_size, 1, head, True)
        if done is not None:
            return done[0], done[1]
    frames = [head + p for p in split(inner, view[link:])]
    return b"".join(frames), len(frames[0])


def _behind_link(
    hdr: VirtioNetHdr, frame: bytes | bytearray | memoryview
) -> tuple[int, VirtioNetHdr]:
    """The length of a frame's link header and its virtio_net_hdr for the IP packet behind
    it: the header's offsets count from the start of the frame, so they move by that
    length."""
    link = Ethernet.decode(frame)[0].header_length  # 14, or 18 with an 802.1Q tag
    if hdr.csum_start < link and hdr.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM:
        raise PacketError("checksum start inside the Ethernet header")
    return link, VirtioNetHdr(
        hdr.flags,
        hdr.gso_type,
        max(hdr.hdr_len - link, 0),
        hdr.gso_size,
        max(hdr.csum_start - link, 0),
        hdr.csum_offset,
    )


def _put16(grid: npt.NDArray[np.uint8], col: int, values: npt.NDArray[np.integer[Any]]) -> None:
    grid[:, col : col + 2].view(">u2")[:, 0] = values


def _put32(grid: npt.NDArray[np.uint8], col: int, values: npt.NDArray[np.integer[Any]]) -> None:
    grid[:, col : col + 4].view(">u4")[:, 0] = values


def reference_split_tcp(
    packet: bytes | bytearray | memoryview, v4: bool, mss: int, align: int
) -> PacketRows:
    view = memoryview(packet)
    if v4:
        if len(view) < 20 or view[0] >> 4 != 4:
            raise PacketError("TSO4 super-packet is not IPv4")
        iph = (view[0] & 0xF) * 4
        if iph < 20 or view[9] != IPPROTO_TCP:
            raise PacketError("TSO4 super-packet is not TCP")
    else:
        if len(view) < 40 or view[0] >> 4 != 6 or view[6] != IPPROTO_TCP:
            raise PacketError("TSO6 super-packet is not IPv6/TCP without extension headers")
        iph = 40
    if len(view) < iph + 20:
        raise PacketError("super-packet shorter than its headers")
    tcph = (view[iph + 12] >> 4) * 4
    if tcph < 20 or len(view) < iph + tcph:
        raise PacketError("bad TCP header length in super-packet")
    if mss <= 0:
        raise PacketError("GSO segment size 0")
    headers = iph + tcph
    total = len(view) - headers
    if total <= 0:
        raise PacketError("super-packet without payload")
    count = (total + mss - 1) // mss
    full = count - 1
    last = total - full * mss
    # every segment is a header template (a full segment's lengths, middle flags, zero
    # checksums) plus its slice of the payload; sequence numbers, IPv4 ids and both
    # checksums are then written column-wise, the first and last rows' own lengths and
    # flags patched in between (bytes past a segment are zero, so row sums are sums)
    rows = PacketRows.empty(count, _round_up(headers + mss, align))
    flags0 = view[iph + 13]
    template = bytearray(view[:headers])
    template[iph + 13] = flags0 & ~(FIN | PSH | CWR)  # FIN/PSH: last only; CWR: first only
    template[iph + 16 : iph + 18] = b"\0\0"
    if v4:
        _H.pack_into(template, 2, headers + mss)
        template[4:6] = template[10:12] = b"\0\0"  # id and checksum: per row
    else:
        _H.pack_into(template, 4, tcph + mss)
    grid = rows.grid()
    data = np.frombuffer(view, dtype=np.uint8)
    grid[:, :headers] = np.frombuffer(template, dtype=np.uint8)
    grid[:full, headers : headers + mss] = data[headers : headers + full * mss].reshape(full, mss)
    grid[full, headers : headers + last] = data[headers + full * mss :]
    seq0 = np.uint32(int.from_bytes(view[iph + 4 : iph + 8], "big"))
    _put32(grid, iph + 4, np.arange(0, count * mss, mss, dtype=np.uint32) + seq0)  # wraps
    buf = rows.buf
    if count > 1:
        buf[iph + 13] = flags0 & ~(FIN | PSH)
    end = full * rows.stride
    buf[end + iph + 13] = flags0 & ~CWR if count > 1 else flags0
    if v4:
        _H.pack_into(buf, end + 2, iph + tcph + last)
        ident = np.arange(count, dtype=np.uint16) + np.uint16(int.from_bytes(view[4:6], "big"))
        _put16(grid, 4, ident)  # wraps
        # each header's sum is the template's plus its id; the last row's length differs
        fixed = int.from_bytes(template[:iph], "big") % 0xFFFF
        _put16(grid, 10, checksums(ident.astype(np.int64) + fixed))
        buf[end + 10 : end + 12] = b"\0\0"
        _H.pack_into(buf, end + 10, checksum(memoryview(buf)[end : end + iph]))
        addresses = int.from_bytes(view[12:20], "big")
    else:
        _H.pack_into(buf, end + 4, tcph + last)
        addresses = int.from_bytes(view[8:40], "big")
    # TCP checksums: the row sums from the TCP header on plus the pseudo-header; the last
    # row's TCP length differs
    tcp_sum = row_sums(grid, iph)
    tcp_sum += addresses % 0xFFFF + IPPROTO_TCP + tcph + mss
    tcp_sum[full] -= mss - last
    _put16(grid, iph + 16, checksums(tcp_sum))
    rows.lengths = [iph + tcph + mss] * full + [iph + tcph + last]
    return rows
