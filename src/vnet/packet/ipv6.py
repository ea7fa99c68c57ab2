"""IPv6 fixed header (RFC 8200 §3). Extension headers are left in the payload."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from ipaddress import IPv6Address

from vnet.errors import PacketError

HEADER_LENGTH = 40
_HDR = struct.Struct("!IHBB16s16s")


@dataclass(frozen=True, slots=True)
class IPv6:
    src: IPv6Address
    dst: IPv6Address
    next_header: int
    hop_limit: int = 64
    traffic_class: int = 0
    flow_label: int = 0
    payload_length: int | None = None  # None: computed by encode()

    header_length = HEADER_LENGTH

    @classmethod
    def decode(cls, buf: bytes | bytearray | memoryview) -> tuple[IPv6, memoryview]:
        view = memoryview(buf)
        if len(view) < HEADER_LENGTH:
            raise PacketError(f"IPv6 packet of {len(view)} bytes is shorter than {HEADER_LENGTH}")
        word, plen, nh, hop, src, dst = _HDR.unpack_from(view)
        if word >> 28 != 6:
            raise PacketError(f"IP version {word >> 28} in an IPv6 header")
        if len(view) < HEADER_LENGTH + plen:
            raise PacketError(
                f"IPv6 packet truncated: {len(view) - HEADER_LENGTH} of {plen} payload bytes"
            )
        hdr = cls(
            src=IPv6Address(src),
            dst=IPv6Address(dst),
            next_header=nh,
            hop_limit=hop,
            traffic_class=(word >> 20) & 0xFF,
            flow_label=word & 0xFFFFF,
            payload_length=plen,
        )
        return hdr, view[HEADER_LENGTH : HEADER_LENGTH + plen]

    def encode(self, payload: bytes | bytearray | memoryview = b"") -> bytes:
        plen = self.payload_length if self.payload_length is not None else len(payload)
        if not 0 <= self.traffic_class <= 0xFF or not 0 <= self.flow_label <= 0xFFFFF:
            raise PacketError("IPv6 traffic class/flow label out of range")
        try:
            head = _HDR.pack(
                6 << 28 | self.traffic_class << 20 | self.flow_label,
                plen,
                self.next_header,
                self.hop_limit,
                self.src.packed,
                self.dst.packed,
            )
        except struct.error as e:
            raise PacketError(f"IPv6 field out of range: {e}") from None
        return head + bytes(payload)
