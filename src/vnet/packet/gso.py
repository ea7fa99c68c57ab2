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

import numpy as np
import numpy.typing as npt

from vnet.errors import PacketError
from vnet.packet.checksum import checksum, fold_array, row_sums
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
_H = struct.Struct("!H")


def finish_checksum(packet: bytearray, start: int, offset: int, end: int | None = None) -> None:
    """Complete a partial checksum (NEEDS_CSUM): sum from ``start`` to ``end`` (the end of
    the packet), where the field at ``start + offset`` already holds the pseudo-header sum."""
    end = len(packet) if end is None else end
    if start < 0 or start + offset + 2 > end:
        raise PacketError("checksum offsets outside the packet")
    _H.pack_into(packet, start + offset, checksum(memoryview(packet)[start:end]))


def split_rows(
    hdr: VirtioNetHdr, packet: bytes | bytearray | memoryview, align: int = 4
) -> PacketRows:
    """``split`` into rows: segment ``i`` at ``i * stride``, with the stride a multiple of
    ``align`` (16 leaves room for WireGuard's padding in place) and of 4."""
    gso = hdr.gso_type & ~VIRTIO_NET_HDR_GSO_ECN
    if gso == VIRTIO_NET_HDR_GSO_NONE:
        rows = PacketRows.from_packets([packet], _round_up(len(packet), align))
        if hdr.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM:
            finish_checksum(rows.buf, hdr.csum_start, hdr.csum_offset, len(packet))
        return rows
    if gso not in (VIRTIO_NET_HDR_GSO_TCPV4, VIRTIO_NET_HDR_GSO_TCPV6):
        raise PacketError(f"unsupported GSO type {hdr.gso_type}")
    return _split_tcp(packet, gso == VIRTIO_NET_HDR_GSO_TCPV4, hdr.gso_size, align)


def split(hdr: VirtioNetHdr, packet: bytes | bytearray | memoryview) -> list[bytes]:
    """Full IP packets from one TUN read; ``packet`` excludes the virtio_net_hdr."""
    return split_rows(hdr, packet).packets()


def _round_up(n: int, align: int) -> int:
    return -(-n // align) * align


def split_frame(hdr: VirtioNetHdr, frame: bytes | bytearray | memoryview) -> list[bytes]:
    """``split`` for a TAP read: Ethernet frames, each with the super-frame's link header.

    virtio_net_hdr offsets count from the start of the frame, so they move by the
    link header's length."""
    link = Ethernet.decode(frame)[0].header_length  # 14, or 18 with an 802.1Q tag
    if hdr.csum_start < link and hdr.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM:
        raise PacketError("checksum start inside the Ethernet header")
    inner = VirtioNetHdr(
        hdr.flags,
        hdr.gso_type,
        max(hdr.hdr_len - link, 0),
        hdr.gso_size,
        max(hdr.csum_start - link, 0),
        hdr.csum_offset,
    )
    head = bytes(frame[:link])
    return [head + p for p in split(inner, memoryview(frame)[link:])]


def _put16(grid: npt.NDArray[np.uint8], col: int, values: npt.NDArray[np.int64]) -> None:
    grid[:, col : col + 2].view(">u2")[:, 0] = values


def _put32(grid: npt.NDArray[np.uint8], col: int, values: npt.NDArray[np.int64]) -> None:
    grid[:, col : col + 4].view(">u4")[:, 0] = values


def _split_tcp(
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
    # every segment is the header template plus its slice of the payload; the fields
    # that differ per segment are then written column-wise, and both checksums summed
    # over whole rows (bytes past a segment are zero)
    rows = PacketRows.empty(count, _round_up(headers + mss, align))
    grid = rows.grid()
    data = np.frombuffer(view, dtype=np.uint8)
    grid[:, :headers] = data[:headers]
    grid[:full, headers : headers + mss] = data[headers : headers + full * mss].reshape(full, mss)
    grid[full, headers : headers + last] = data[headers + full * mss :]
    index = np.arange(count, dtype=np.int64)
    tcp_len = np.full(count, tcph + mss, dtype=np.int64)
    tcp_len[full] = tcph + last
    seq0 = int.from_bytes(view[iph + 4 : iph + 8], "big")
    _put32(grid, iph + 4, (seq0 + index * mss) & 0xFFFFFFFF)
    flags0 = view[iph + 13]
    flags = np.full(count, flags0 & ~(FIN | PSH), dtype=np.uint8)  # FIN/PSH: last only
    flags[full] = flags0
    flags[1:] &= ~CWR & 0xFF  # CWR: first only
    grid[:, iph + 13] = flags
    grid[:, iph + 16 : iph + 18] = 0
    if v4:
        # the header's sum without length, id and checksum, plus those per segment
        fixed = bytearray(view[:iph])
        fixed[2:6] = bytes(4)
        fixed[10:12] = bytes(2)
        ident = (int.from_bytes(view[4:6], "big") + index) & 0xFFFF
        length = iph + tcp_len
        _put16(grid, 2, length)
        _put16(grid, 4, ident)
        ip_sum = int.from_bytes(fixed, "big") % 0xFFFF + length + ident
        _put16(grid, 10, ~fold_array(ip_sum) & 0xFFFF)
        addresses = int.from_bytes(view[12:20], "big") % 0xFFFF
    else:
        _put16(grid, 4, tcp_len)
        addresses = int.from_bytes(view[8:40], "big") % 0xFFFF
    tcp_sum = row_sums(grid, iph) + (addresses + IPPROTO_TCP) + tcp_len
    _put16(grid, iph + 16, ~fold_array(tcp_sum) & 0xFFFF)
    rows.lengths = (iph + tcp_len).tolist()
    return rows
