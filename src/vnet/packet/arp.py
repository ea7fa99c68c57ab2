"""ARP for Ethernet and IPv4 (RFC 826)."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from ipaddress import IPv4Address

from vnet.errors import PacketError

ARPHRD_ETHER = 1
ARPOP_REQUEST = 1
ARPOP_REPLY = 2
ARP_LEN = 28

_ARP = struct.Struct("!HHBBH6s4s6s4s")


@dataclass(frozen=True, slots=True)
class ARP:
    op: int
    sha: bytes
    spa: IPv4Address
    tha: bytes
    tpa: IPv4Address
    htype: int = ARPHRD_ETHER
    ptype: int = 0x0800

    @classmethod
    def decode(cls, buf: bytes | bytearray | memoryview) -> ARP:
        if len(buf) < ARP_LEN:
            raise PacketError(f"ARP packet of {len(buf)} bytes is shorter than {ARP_LEN}")
        htype, ptype, hlen, plen, op, sha, spa, tha, tpa = _ARP.unpack_from(buf)
        if hlen != 6 or plen != 4:
            raise PacketError(f"ARP with hlen={hlen} plen={plen}: only Ethernet/IPv4 is supported")
        return cls(op, sha, IPv4Address(spa), tha, IPv4Address(tpa), htype, ptype)

    def encode(self) -> bytes:
        if len(self.sha) != 6 or len(self.tha) != 6:
            raise PacketError("ARP hardware addresses are 6 bytes")
        try:
            return _ARP.pack(
                self.htype,
                self.ptype,
                6,
                4,
                self.op,
                self.sha,
                self.spa.packed,
                self.tha,
                self.tpa.packed,
            )
        except struct.error as e:
            raise PacketError(f"ARP field out of range: {e}") from None
