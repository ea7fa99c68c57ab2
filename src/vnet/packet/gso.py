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

from vnet.errors import PacketError
from vnet.packet.checksum import checksum, fold, ones_sums
from vnet.packet.ethernet import Ethernet
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
_I = struct.Struct("!I")


def finish_checksum(packet: bytearray, start: int, offset: int) -> None:
    """Complete a partial checksum (NEEDS_CSUM): sum from ``start`` to the end, where the
    field at ``start + offset`` already holds the pseudo-header sum."""
    end = start + offset + 2
    if start < 0 or end > len(packet):
        raise PacketError("checksum offsets outside the packet")
    _H.pack_into(packet, start + offset, checksum(memoryview(packet)[start:]))


def split(hdr: VirtioNetHdr, packet: bytes | bytearray | memoryview) -> list[bytes]:
    """Full IP packets from one TUN read; ``packet`` excludes the virtio_net_hdr."""
    gso = hdr.gso_type & ~VIRTIO_NET_HDR_GSO_ECN
    if gso == VIRTIO_NET_HDR_GSO_NONE:
        if hdr.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM:
            buf = bytearray(packet)
            finish_checksum(buf, hdr.csum_start, hdr.csum_offset)
            return [bytes(buf)]
        return [bytes(packet)]
    if gso not in (VIRTIO_NET_HDR_GSO_TCPV4, VIRTIO_NET_HDR_GSO_TCPV6):
        raise PacketError(f"unsupported GSO type {hdr.gso_type}")
    return _split_tcp(packet, gso == VIRTIO_NET_HDR_GSO_TCPV4, hdr.gso_size)


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


def _split_tcp(packet: bytes | bytearray | memoryview, v4: bool, mss: int) -> list[bytes]:
    view = memoryview(packet)
    if v4:
        if len(view) < 20 or view[0] >> 4 != 4:
            raise PacketError("TSO4 super-packet is not IPv4")
        iph = (view[0] & 0xF) * 4
        if view[9] != IPPROTO_TCP:
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
    # Checksums are summed as integers from parts that do not change per segment
    # (computed once) plus the few fields that do: no per-segment byte copies to sum.
    template = bytearray(view[:headers])
    seq0 = _I.unpack_from(template, iph + 4)[0]
    flags0 = template[iph + 13]
    ident0 = _H.unpack_from(template, 4)[0] if v4 else 0
    if v4:
        template[2:6] = b"\0\0\0\0"  # length and id: per segment
        template[10:12] = b"\0\0"
        ip_base = int.from_bytes(template[:iph], "big")
        addresses = int.from_bytes(view[12:16], "big") + int.from_bytes(view[16:20], "big")
    else:
        template[4:6] = b"\0\0"
        ip_base = 0
        addresses = int.from_bytes(view[8:24], "big") + int.from_bytes(view[24:40], "big")
    template[iph + 4 : iph + 8] = b"\0\0\0\0"  # seq
    template[iph + 13] = 0  # flags
    template[iph + 16 : iph + 18] = b"\0\0"  # checksum
    tcp_base = int.from_bytes(template[iph:headers], "big") + addresses + IPPROTO_TCP
    payload = view[headers:]
    count = (total + mss - 1) // mss
    last = count - 1
    pack_h = _H.pack_into
    pack_i = _I.pack_into
    segments = [payload[i * mss : (i + 1) * mss] for i in range(count)]
    bodies = ones_sums(segments)
    out = []
    for i, seg in enumerate(segments):
        seg_len = len(seg)
        tcp_len = tcph + seg_len
        seq = (seq0 + i * mss) & 0xFFFFFFFF
        flags = flags0
        if i != last:
            flags &= ~(FIN | PSH)
        if i:
            flags &= ~CWR
        hdr = bytearray(template)
        if v4:
            ident = (ident0 + i) & 0xFFFF
            length = iph + tcp_len
            pack_h(hdr, 2, length)
            pack_h(hdr, 4, ident)
            pack_h(hdr, 10, ~fold(ip_base + (length << 32) + (ident << 16)) & 0xFFFF)
        else:
            pack_h(hdr, 4, tcp_len)
        pack_i(hdr, iph + 4, seq)
        hdr[iph + 13] = flags
        # seq sits at word offsets 2-3 and flags in the low byte of word 6 of the header;
        # the header's own position in the big integer does not matter mod 0xffff
        csum = fold(tcp_base + tcp_len + (seq >> 16) + (seq & 0xFFFF) + flags + bodies[i])
        pack_h(hdr, iph + 16, ~csum & 0xFFFF)
        hdr += seg
        out.append(bytes(hdr))
    return out
