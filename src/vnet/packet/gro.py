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
from dataclasses import dataclass, field, replace

from vnet.packet.checksum import checksum, fold, ones_sum, ones_sums
from vnet.packet.ethernet import ETH_HLEN, ETH_P_IP, ETH_P_IPV6
from vnet.packet.tcp import ACK, PSH
from vnet.packet.virtio import (
    EMPTY,
    VIRTIO_NET_HDR_F_NEEDS_CSUM,
    VIRTIO_NET_HDR_GSO_TCPV4,
    VIRTIO_NET_HDR_GSO_TCPV6,
    VirtioNetHdr,
)

IPPROTO_TCP = 6
_IP_TYPES = (ETH_P_IP.to_bytes(2, "big"), ETH_P_IPV6.to_bytes(2, "big"))
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


def _inspect(packet: bytes) -> tuple[bytes, int, int, int, bool, int] | None:
    """(flow key, ip header length, tcp header length, seq, v4, pseudo-header sum) for a
    segment that may merge - plain ACK(/PSH) TCP with payload - else None. The caller
    checks the checksum (for the whole batch at once)."""
    n = len(packet)
    if n < 40:
        return None
    b0 = packet[0]
    if b0 == 0x45:  # IPv4 without options
        if packet[9] != IPPROTO_TCP or packet[6] & 0x3F or packet[7]:
            return None  # not TCP, or a fragment
        if (packet[2] << 8 | packet[3]) != n:
            return None
        iph = 20
        v4 = True
        pseudo = int.from_bytes(packet[12:20], "big") + IPPROTO_TCP + n - 20
    elif b0 >> 4 == 6:
        if packet[6] != IPPROTO_TCP or (packet[4] << 8 | packet[5]) + 40 != n:
            return None
        iph = 40
        v4 = False
        pseudo = int.from_bytes(packet[8:40], "big") + IPPROTO_TCP + n - 40
    else:
        return None
    tcph = (packet[iph + 12] >> 4) * 4
    end = iph + tcph
    if tcph < 20 or n <= end or packet[iph + 12] & 0x0F or packet[iph + 13] & ~PSH != ACK:
        return None
    # everything that must be equal to merge: addresses, ports, ack, window, options,
    # and TOS/TTL (v4) or traffic class/flow label/hop limit (v6)
    if v4:
        key = (
            packet[12 : iph + 4]
            + packet[iph + 8 : iph + 12]
            + packet[iph + 14 : iph + 16]
            + (packet[iph + 20 : end] + packet[1:2] + packet[8:9])
        )
    else:
        key = (
            packet[8 : iph + 4]
            + packet[iph + 8 : iph + 12]
            + packet[iph + 14 : iph + 16]
            + (packet[iph + 20 : end] + packet[0:4] + packet[7:8])
        )
    seq = int.from_bytes(packet[iph + 4 : iph + 8], "big")
    return key, iph, tcph, seq, v4, pseudo


def coalesce(packets: list[bytes]) -> list[tuple[bytes, bytes]]:
    """(virtio_net_hdr, packet) pairs to write, in flow order."""
    out: list[tuple[bytes, bytes] | _Group] = []
    open_groups: dict[bytes, _Group] = {}
    infos = [_inspect(p) for p in packets]
    pairs = list(zip(packets, infos, strict=True))
    sums = iter(ones_sums([memoryview(p)[i[1] :] for p, i in pairs if i]))
    for packet, info in pairs:
        if info is None or fold(info[5] + next(sums)) != 0xFFFF:
            out.append((EMPTY, packet))  # not mergeable (or a bad checksum: the kernel drops)
            continue
        key, iph, tcph, seq, v4, _ = info
        size = len(packet) - iph - tcph
        psh = packet[iph + 13] & PSH
        group = open_groups.get(key)
        if (
            group is not None
            and not group.closed
            and seq == group.seq_next
            and size <= group.gso_size
            and len(group.payloads) < MAX_SEGMENTS
            and group.size + size + iph + tcph <= MAX_SUPER
        ):
            group.payloads.append(packet[iph + tcph :])
            group.size += size
            group.seq_next = (seq + size) & 0xFFFFFFFF
            if size < group.gso_size or psh:
                group.closed = True
                group.psh = bool(psh)
            continue
        group = _Group(
            key,
            packet,
            iph,
            tcph,
            v4,
            (seq + size) & 0xFFFFFFFF,
            size,
            [packet[iph + tcph :]],
            closed=bool(psh),
            psh=bool(psh),
            size=size,
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
            moved = replace(
                hdr, hdr_len=hdr.hdr_len + ETH_HLEN, csum_start=hdr.csum_start + ETH_HLEN
            )
            out.append((moved.encode(), head + packet))
    return out
