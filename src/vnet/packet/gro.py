"""Coalescing of TCP segments into TUN super-packets (the reverse of ``gso.split``).

Segments merge when they are the same flow (addresses, ports), carry the same
ACK, window, TTL/hop limit, TOS and TCP options, have plain ACK(/PSH) flags,
payloads follow each other in sequence, all but the last are of equal size,
and their TCP checksums verify. PSH, a shorter segment or 64 KiB ends a group.
A merged group is written once, with a virtio_net_hdr asking the kernel for
GSO and a partial checksum (NEEDS_CSUM) it will finish.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from vnet.packet.checksum import checksum, ones_sum, verify
from vnet.packet.tcp import ACK, PSH
from vnet.packet.virtio import (
    EMPTY,
    VIRTIO_NET_HDR_F_NEEDS_CSUM,
    VIRTIO_NET_HDR_GSO_TCPV4,
    VIRTIO_NET_HDR_GSO_TCPV6,
    VirtioNetHdr,
)

IPPROTO_TCP = 6
MAX_SUPER = 65535
MAX_SEGMENTS = 64
_H = struct.Struct("!H")
_I = struct.Struct("!I")


@dataclass
class _Group:
    key: bytes
    first: bytes
    iph: int
    tcph: int
    v4: bool
    seq_next: int
    gso_size: int
    payloads: list[bytes] = field(default_factory=list)
    closed: bool = False
    psh: bool = False
    size: int = 0


def _tcp_info(packet: bytes) -> tuple[bool, int, int] | None:
    """(is_v4, ip header length, tcp header length) for a mergeable TCP segment."""
    if len(packet) < 40:
        return None
    version = packet[0] >> 4
    if version == 4:
        iph = (packet[0] & 0xF) * 4
        if iph != 20 or packet[9] != IPPROTO_TCP:
            return None
        if _H.unpack_from(packet, 6)[0] & 0x3FFF:  # MF or a fragment offset
            return None
        if _H.unpack_from(packet, 2)[0] != len(packet):
            return None
        v4 = True
    elif version == 6:
        iph = 40
        if packet[6] != IPPROTO_TCP or _H.unpack_from(packet, 4)[0] + 40 != len(packet):
            return None
        v4 = False
    else:
        return None
    if len(packet) < iph + 20:
        return None
    tcph = (packet[iph + 12] >> 4) * 4
    if tcph < 20 or len(packet) <= iph + tcph:  # no payload: nothing to merge
        return None
    if packet[iph + 13] & ~PSH != ACK or packet[iph + 12] & 0x0F:
        return None
    return v4, iph, tcph


def _checksum_ok(packet: bytes, v4: bool, iph: int) -> bool:
    if v4:
        pseudo = packet[12:20] + bytes([0, IPPROTO_TCP]) + _H.pack(len(packet) - iph)
    else:
        pseudo = packet[8:40] + _I.pack(len(packet) - iph) + bytes([0, 0, 0, IPPROTO_TCP])
    return verify(memoryview(packet)[iph:], ones_sum(pseudo))


def _flow_key(packet: bytes, v4: bool, iph: int, tcph: int) -> bytes:
    """What must be equal for two segments to merge (everything but seq, length, csum, id)."""
    # v4: TOS, TTL, addresses; v6: class/flow label, hop limit, addresses
    ip_part = packet[1:2] + packet[8:9] + packet[12:20] if v4 else packet[0:4] + packet[7:40]
    tcp = packet[iph : iph + tcph]
    return ip_part + tcp[0:4] + tcp[8:12] + tcp[14:16] + tcp[20:]


def coalesce(packets: list[bytes]) -> list[tuple[bytes, bytes]]:
    """(virtio_net_hdr, packet) pairs to write, in flow order."""
    out: list[tuple[bytes, bytes] | _Group] = []
    open_groups: dict[bytes, _Group] = {}
    for packet in packets:
        info = _tcp_info(packet)
        if info is None:
            out.append((EMPTY, packet))
            continue
        v4, iph, tcph = info
        key = _flow_key(packet, v4, iph, tcph)
        seq = _I.unpack_from(packet, iph + 4)[0]
        payload = packet[iph + tcph :]
        group = open_groups.get(key)
        if (
            group is not None
            and not group.closed
            and seq == group.seq_next
            and (
                len(payload) <= group.gso_size
                and len(group.payloads) < MAX_SEGMENTS
                and group.size + len(payload) + iph + tcph <= MAX_SUPER
                and _checksum_ok(packet, v4, iph)
            )
        ):
            group.payloads.append(payload)
            group.size += len(payload)
            group.seq_next = (seq + len(payload)) & 0xFFFFFFFF
            if len(payload) < group.gso_size or packet[iph + 13] & PSH:
                group.closed = True
                group.psh = bool(packet[iph + 13] & PSH)
            continue
        if not _checksum_ok(packet, v4, iph):
            out.append((EMPTY, packet))  # let the kernel count and drop it
            continue
        group = _Group(
            key,
            packet,
            iph,
            tcph,
            v4,
            (seq + len(payload)) & 0xFFFFFFFF,
            len(payload),
            [payload],
            closed=bool(packet[iph + 13] & PSH),
            psh=bool(packet[iph + 13] & PSH),
            size=len(payload),
        )
        open_groups[key] = group
        out.append(group)
    return [item if isinstance(item, tuple) else _emit(item) for item in out]


def _emit(group: _Group) -> tuple[bytes, bytes]:
    if len(group.payloads) == 1:
        return EMPTY, group.first
    iph, tcph = group.iph, group.tcph
    hdr = bytearray(group.first[: iph + tcph])
    tcp_len = tcph + group.size
    if group.v4:
        _H.pack_into(hdr, 2, iph + tcp_len)
        hdr[10] = hdr[11] = 0
        _H.pack_into(hdr, 10, checksum(memoryview(hdr)[:iph]))
        pseudo = bytes(hdr[12:20]) + bytes([0, IPPROTO_TCP]) + _H.pack(tcp_len)
        gso = VIRTIO_NET_HDR_GSO_TCPV4
    else:
        _H.pack_into(hdr, 4, tcp_len)
        pseudo = bytes(hdr[8:40]) + _I.pack(tcp_len) + bytes([0, 0, 0, IPPROTO_TCP])
        gso = VIRTIO_NET_HDR_GSO_TCPV6
    if group.psh:
        hdr[iph + 13] |= PSH
    # NEEDS_CSUM: the field holds the pseudo-header sum; the kernel adds the rest
    _H.pack_into(hdr, iph + 16, ones_sum(pseudo))
    vnet = VirtioNetHdr(
        flags=VIRTIO_NET_HDR_F_NEEDS_CSUM,
        gso_type=gso,
        hdr_len=iph + tcph,
        gso_size=group.gso_size,
        csum_start=iph,
        csum_offset=16,
    ).encode()
    return vnet, bytes(hdr) + b"".join(group.payloads)
