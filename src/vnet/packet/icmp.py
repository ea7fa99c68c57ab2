"""ICMP (RFC 792) and ICMPv6 (RFC 4443) messages: type, code, checksum, 4 bytes.

ICMPv4's checksum covers the message alone; ICMPv6's adds the IPv6
pseudo-header, so ``encode``/``checksum_ok`` take the addresses for v6.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from ipaddress import IPv6Address

from vnet.errors import PacketError
from vnet.packet.checksum import checksum, pseudo_header_sum, verify
from vnet.packet.ipv4 import IPPROTO_ICMPV6

ICMP_ECHOREPLY = 0
ICMP_DEST_UNREACH = 3
ICMP_ECHO = 8
ICMP_TIME_EXCEEDED = 11

ICMPV6_DEST_UNREACH = 1
ICMPV6_PKT_TOOBIG = 2
ICMPV6_ECHO_REQUEST = 128
ICMPV6_ECHO_REPLY = 129
ND_ROUTER_SOLICIT = 133
ND_ROUTER_ADVERT = 134
ND_NEIGHBOR_SOLICIT = 135
ND_NEIGHBOR_ADVERT = 136

HEADER_LENGTH = 8
_HDR = struct.Struct("!BBH4s")
_ECHO = struct.Struct("!HH")


@dataclass(frozen=True, slots=True)
class ICMP:
    """An ICMP or ICMPv6 header; ``rest`` is the type-specific 4 bytes."""

    type: int
    code: int = 0
    rest: bytes = b"\0\0\0\0"
    checksum: int | None = None  # None: computed by encode()

    @classmethod
    def decode(cls, buf: bytes | bytearray | memoryview) -> tuple[ICMP, memoryview]:
        view = memoryview(buf)
        if len(view) < HEADER_LENGTH:
            raise PacketError(f"ICMP message of {len(view)} bytes is shorter than {HEADER_LENGTH}")
        typ, code, csum, rest = _HDR.unpack_from(view)
        return cls(typ, code, rest, csum), view[HEADER_LENGTH:]

    @classmethod
    def echo(cls, type_: int, ident: int, seq: int) -> ICMP:
        return cls(type_, 0, _ECHO.pack(ident, seq))

    @property
    def echo_id(self) -> int:
        return int(_ECHO.unpack(self.rest)[0])

    @property
    def echo_seq(self) -> int:
        return int(_ECHO.unpack(self.rest)[1])

    def encode(
        self,
        payload: bytes | bytearray | memoryview = b"",
        src6: IPv6Address | None = None,
        dst6: IPv6Address | None = None,
    ) -> bytes:
        """Encode; pass the IPv6 addresses to compute an ICMPv6 checksum."""
        if len(self.rest) != 4:
            raise PacketError("ICMP rest-of-header is 4 bytes")
        try:
            head = bytearray(_HDR.pack(self.type, self.code, 0, self.rest))
        except struct.error as e:
            raise PacketError(f"ICMP field out of range: {e}") from None
        body = bytes(payload)
        csum = self.checksum
        if csum is None:
            init = 0
            if src6 is not None and dst6 is not None:
                init = pseudo_header_sum(src6, dst6, IPPROTO_ICMPV6, len(head) + len(body))
            csum = checksum(bytes(head) + body, init)
        struct.pack_into("!H", head, 2, csum)
        return bytes(head) + body


def checksum_ok(message: bytes | bytearray | memoryview) -> bool:
    """ICMPv4: the checksum covers the message alone."""
    return verify(message)


def checksum6_ok(
    message: bytes | bytearray | memoryview, src: IPv6Address, dst: IPv6Address
) -> bool:
    return verify(message, pseudo_header_sum(src, dst, IPPROTO_ICMPV6, len(message)))
