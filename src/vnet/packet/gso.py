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
from vnet.packet.checksum import checksum, ones_sum
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
    payload = view[headers:]
    total = len(payload)
    if total == 0:
        raise PacketError("super-packet without payload")
    template = bytearray(view[:headers])
    src_dst = bytes(view[12:20]) if v4 else bytes(view[8:40])
    seq0 = _I.unpack_from(template, iph + 4)[0]
    flags0 = template[iph + 13]
    ident0 = _H.unpack_from(template, 4)[0] if v4 else 0
    # pseudo-header sum without the length, which changes per segment
    pseudo = ones_sum(src_dst + bytes([0, IPPROTO_TCP]))
    out = []
    count = (total + mss - 1) // mss
    for i in range(count):
        seg = payload[i * mss : (i + 1) * mss]
        hdr = bytearray(template)
        seg_tcp_len = tcph + len(seg)
        if v4:
            _H.pack_into(hdr, 2, iph + seg_tcp_len)
            _H.pack_into(hdr, 4, (ident0 + i) & 0xFFFF)
            hdr[10] = hdr[11] = 0
            _H.pack_into(hdr, 10, checksum(memoryview(hdr)[:iph]))
        else:
            _H.pack_into(hdr, 4, seg_tcp_len)
        _I.pack_into(hdr, iph + 4, (seq0 + i * mss) & 0xFFFFFFFF)
        flags = flags0
        if i != count - 1:
            flags &= ~(FIN | PSH)
        if i != 0:
            flags &= ~CWR
        hdr[iph + 13] = flags
        hdr[iph + 16] = hdr[iph + 17] = 0
        segment = hdr + seg
        _H.pack_into(
            segment,
            iph + 16,
            checksum(memoryview(segment)[iph:], ones_sum(_H.pack(seg_tcp_len), pseudo)),
        )
        out.append(bytes(segment))
    return out
