"""TCP header (RFC 9293 §3.1)."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address

from vnet.errors import PacketError
from vnet.packet.checksum import checksum, pseudo_header_sum, verify
from vnet.packet.ipv4 import IPPROTO_TCP

MIN_HEADER = 20
FIN, SYN, RST, PSH, ACK, URG, ECE, CWR = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80

_HDR = struct.Struct("!HHIIHHHH")


@dataclass(frozen=True, slots=True)
class TCP:
    src_port: int
    dst_port: int
    seq: int
    ack: int
    flags: int  # the 12 bits after the data offset: reserved bits, AE/NS, CWR..FIN
    window: int = 65535
    urgent: int = 0
    options: bytes = b""
    checksum: int | None = None  # None: computed by encode() (needs the addresses)

    @property
    def header_length(self) -> int:
        return MIN_HEADER + len(self.options)

    @classmethod
    def decode(cls, buf: bytes | bytearray | memoryview) -> tuple[TCP, memoryview]:
        view = memoryview(buf)
        if len(view) < MIN_HEADER:
            raise PacketError(f"TCP segment of {len(view)} bytes is shorter than {MIN_HEADER}")
        sport, dport, seq, ack, off_flags, window, csum, urg = _HDR.unpack_from(view)
        hlen = (off_flags >> 12) * 4
        if hlen < MIN_HEADER:
            raise PacketError(f"TCP data offset {hlen} is below {MIN_HEADER}")
        if len(view) < hlen:
            raise PacketError(f"TCP header truncated: {len(view)} of {hlen} bytes")
        hdr = cls(
            sport,
            dport,
            seq,
            ack,
            off_flags & 0xFFF,
            window,
            urg,
            bytes(view[MIN_HEADER:hlen]),
            csum,
        )
        return hdr, view[hlen:]

    def encode(
        self,
        payload: bytes | bytearray | memoryview = b"",
        src: IPv4Address | IPv6Address | None = None,
        dst: IPv4Address | IPv6Address | None = None,
    ) -> bytes:
        hlen = self.header_length
        if len(self.options) % 4 or hlen > 60:
            raise PacketError(
                f"TCP options must be a multiple of 4 bytes, at most 40 (got {len(self.options)})"
            )
        if not 0 <= self.flags <= 0xFFF:
            raise PacketError(f"TCP flags {self.flags:#x} out of range")
        try:
            head = bytearray(
                _HDR.pack(
                    self.src_port,
                    self.dst_port,
                    self.seq,
                    self.ack,
                    (hlen // 4) << 12 | self.flags,
                    self.window,
                    0,
                    self.urgent,
                )
            )
        except struct.error as e:
            raise PacketError(f"TCP field out of range: {e}") from None
        head += self.options
        csum = self.checksum
        if csum is None:
            if src is None or dst is None:
                raise PacketError("TCP checksum needs the IP source and destination")
            init = pseudo_header_sum(src, dst, IPPROTO_TCP, hlen + len(payload))
            csum = checksum(bytes(head) + bytes(payload), init)
        struct.pack_into("!H", head, 16, csum)
        return bytes(head) + bytes(payload)


def checksum_ok(
    segment: bytes | bytearray | memoryview,
    src: IPv4Address | IPv6Address,
    dst: IPv4Address | IPv6Address,
) -> bool:
    return verify(segment, pseudo_header_sum(src, dst, IPPROTO_TCP, len(segment)))
