"""UDP header (RFC 768)."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address

from vnet.errors import PacketError
from vnet.packet.checksum import checksum, pseudo_header_sum, verify
from vnet.packet.ipv4 import IPPROTO_UDP

HEADER_LENGTH = 8
_HDR = struct.Struct("!HHHH")


@dataclass(frozen=True, slots=True)
class UDP:
    src_port: int
    dst_port: int
    length: int | None = None  # None: computed by encode()
    checksum: int | None = None  # None: computed by encode() (needs the addresses)

    @classmethod
    def decode(cls, buf: bytes | bytearray | memoryview) -> tuple[UDP, memoryview]:
        view = memoryview(buf)
        if len(view) < HEADER_LENGTH:
            raise PacketError(f"UDP datagram of {len(view)} bytes is shorter than {HEADER_LENGTH}")
        sport, dport, length, csum = _HDR.unpack_from(view)
        if length < HEADER_LENGTH:
            raise PacketError(f"UDP length {length} is below {HEADER_LENGTH}")
        if len(view) < length:
            raise PacketError(f"UDP datagram truncated: {len(view)} of {length} bytes")
        return cls(sport, dport, length, csum), view[HEADER_LENGTH:length]

    def encode(
        self,
        payload: bytes | bytearray | memoryview = b"",
        src: IPv4Address | IPv6Address | None = None,
        dst: IPv4Address | IPv6Address | None = None,
    ) -> bytes:
        length = self.length if self.length is not None else HEADER_LENGTH + len(payload)
        try:
            head = _HDR.pack(self.src_port, self.dst_port, length, 0)
        except struct.error as e:
            raise PacketError(f"UDP field out of range: {e}") from None
        csum = self.checksum
        if csum is None:
            if src is None or dst is None:
                csum = 0  # "no checksum": legal for IPv4 only
            else:
                init = pseudo_header_sum(src, dst, IPPROTO_UDP, HEADER_LENGTH + len(payload))
                csum = checksum(head + bytes(payload), init) or 0xFFFF  # RFC 768: 0 -> ffff
        return head[:6] + struct.pack("!H", csum) + bytes(payload)


def checksum_ok(
    segment: bytes | bytearray | memoryview,
    src: IPv4Address | IPv6Address,
    dst: IPv4Address | IPv6Address,
) -> bool:
    """Verify a UDP datagram (header + payload); a zero checksum over IPv4 means none."""
    if src.version == 4 and segment[6:8] == b"\0\0":
        return True
    return verify(segment, pseudo_header_sum(src, dst, IPPROTO_UDP, len(segment)))
