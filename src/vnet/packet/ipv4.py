"""IPv4 header (RFC 791)."""

from __future__ import annotations

import struct
from dataclasses import dataclass, replace
from ipaddress import IPv4Address

from vnet.errors import PacketError
from vnet.packet.checksum import checksum, verify

IPPROTO_ICMP = 1
IPPROTO_TCP = 6
IPPROTO_UDP = 17
IPPROTO_ICMPV6 = 58

IP_DF = 0x2
IP_MF = 0x1

_HDR = struct.Struct("!BBHHHBBH4s4s")
MIN_HEADER = 20


@dataclass(frozen=True, slots=True)
class IPv4:
    src: IPv4Address
    dst: IPv4Address
    proto: int
    ttl: int = 64
    tos: int = 0
    ident: int = 0
    flags: int = 0  # 3 bits: reserved, DF, MF
    frag_offset: int = 0  # in 8-byte units
    options: bytes = b""
    total_length: int | None = None  # None: computed by encode()
    checksum: int | None = None  # None: computed by encode()

    @property
    def header_length(self) -> int:
        return MIN_HEADER + len(self.options)

    @classmethod
    def decode(cls, buf: bytes | bytearray | memoryview) -> tuple[IPv4, memoryview]:
        """Header and payload; the payload stops at total_length (Ethernet pads)."""
        view = memoryview(buf)
        if len(view) < MIN_HEADER:
            raise PacketError(f"IPv4 packet of {len(view)} bytes is shorter than {MIN_HEADER}")
        vihl, tos, total, ident, frag, ttl, proto, csum, src, dst = _HDR.unpack_from(view)
        if vihl >> 4 != 4:
            raise PacketError(f"IP version {vihl >> 4} in an IPv4 header")
        hlen = (vihl & 0xF) * 4
        if hlen < MIN_HEADER:
            raise PacketError(f"IPv4 header length {hlen} is below {MIN_HEADER}")
        if total < hlen:
            raise PacketError(f"IPv4 total length {total} is below its header length {hlen}")
        if len(view) < total:
            raise PacketError(f"IPv4 packet truncated: {len(view)} of {total} bytes")
        hdr = cls(
            src=IPv4Address(src),
            dst=IPv4Address(dst),
            proto=proto,
            ttl=ttl,
            tos=tos,
            ident=ident,
            flags=frag >> 13,
            frag_offset=frag & 0x1FFF,
            options=bytes(view[MIN_HEADER:hlen]),
            total_length=total,
            checksum=csum,
        )
        return hdr, view[hlen:total]

    def encode(self, payload: bytes | bytearray | memoryview = b"") -> bytes:
        hlen = self.header_length
        if len(self.options) % 4 or hlen > 60:
            raise PacketError(
                f"IPv4 options must be a multiple of 4 bytes, at most 40 (got {len(self.options)})"
            )
        total = self.total_length if self.total_length is not None else hlen + len(payload)
        try:
            head = bytearray(
                _HDR.pack(
                    0x40 | hlen // 4,
                    self.tos,
                    total,
                    self.ident,
                    self.flags << 13 | self.frag_offset,
                    self.ttl,
                    self.proto,
                    0,
                    self.src.packed,
                    self.dst.packed,
                )
            )
        except struct.error as e:
            raise PacketError(f"IPv4 field out of range: {e}") from None
        if not 0 <= self.flags <= 7 or not 0 <= self.frag_offset <= 0x1FFF:
            raise PacketError("IPv4 flags/fragment offset out of range")
        head += self.options
        csum = self.checksum if self.checksum is not None else checksum(head)
        struct.pack_into("!H", head, 10, csum)
        return bytes(head) + bytes(payload)

    def with_fresh_checksum(self) -> IPv4:
        return replace(self, checksum=None, total_length=None)


def header_ok(buf: bytes | bytearray | memoryview) -> bool:
    """True when the IPv4 header checksum verifies."""
    hlen = (buf[0] & 0xF) * 4
    return len(buf) >= hlen >= MIN_HEADER and verify(memoryview(buf)[:hlen])
