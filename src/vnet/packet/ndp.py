"""IPv6 neighbour discovery (RFC 4861 §4.3, §4.4): solicitations and advertisements."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from ipaddress import IPv6Address

from vnet.errors import PacketError

OPT_SOURCE_LLADDR = 1
OPT_TARGET_LLADDR = 2
NA_ROUTER = 0x80
NA_SOLICITED = 0x40
NA_OVERRIDE = 0x20
NDP_HOP_LIMIT = 255  # RFC 4861 §7.1: anything else was forwarded and must be dropped


def solicited_node(addr: IPv6Address) -> IPv6Address:
    """ff02::1:ffXX:XXXX for ``addr`` (RFC 4291 §2.7.1)."""
    return IPv6Address(b"\xff\x02" + b"\0" * 9 + b"\x01\xff" + addr.packed[13:])


def multicast_mac(addr: IPv6Address) -> bytes:
    """33:33:xx:xx:xx:xx for an IPv6 multicast address (RFC 2464 §7)."""
    return b"\x33\x33" + addr.packed[12:]


def decode_options(buf: bytes | bytearray | memoryview) -> list[tuple[int, bytes]]:
    out = []
    view = memoryview(buf)
    i = 0
    while i < len(view):
        if len(view) - i < 2:
            raise PacketError("NDP option truncated")
        typ, units = view[i], view[i + 1]
        if units == 0:
            raise PacketError("NDP option with length 0")  # RFC 4861 §4.6: must drop
        end = i + units * 8
        if end > len(view):
            raise PacketError("NDP option runs past the message")
        out.append((typ, bytes(view[i + 2 : end])))
        i = end
    return out


def encode_options(options: list[tuple[int, bytes]]) -> bytes:
    out = bytearray()
    for typ, body in options:
        size = 2 + len(body)
        pad = -size % 8
        if (size + pad) // 8 > 255:
            raise PacketError("NDP option too long")
        out += bytes([typ, (size + pad) // 8]) + body + b"\0" * pad
    return bytes(out)


@dataclass(frozen=True, slots=True)
class NeighborSolicitation:
    """The body after the ICMPv6 header's first 4 bytes (which are reserved)."""

    target: IPv6Address
    options: tuple[tuple[int, bytes], ...] = ()

    @classmethod
    def decode(cls, body: bytes | bytearray | memoryview) -> NeighborSolicitation:
        if len(body) < 16:
            raise PacketError("neighbour solicitation shorter than its target address")
        target = IPv6Address(bytes(body[:16]))
        if target.is_multicast:
            raise PacketError("neighbour solicitation for a multicast target")
        return cls(target, tuple(decode_options(body[16:])))

    def encode(self) -> bytes:
        return self.target.packed + encode_options(list(self.options))

    @property
    def source_lladdr(self) -> bytes | None:
        for typ, body in self.options:
            if typ == OPT_SOURCE_LLADDR:
                return body[:6]
        return None


def advertisement_rest(router: bool, solicited: bool, override: bool) -> bytes:
    """The 4 bytes after the ICMPv6 checksum of a neighbour advertisement."""
    flags = (NA_ROUTER if router else 0) | (NA_SOLICITED if solicited else 0)
    flags |= NA_OVERRIDE if override else 0
    return struct.pack("!B3x", flags)


def advertisement_body(target: IPv6Address, lladdr: bytes) -> bytes:
    return target.packed + encode_options([(OPT_TARGET_LLADDR, lladdr)])
