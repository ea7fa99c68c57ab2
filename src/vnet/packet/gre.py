"""GRE header (RFC 2784, with RFC 2890's key): 4 or 8 bytes before the payload, carried
straight over IP (protocol 47), not over UDP.

As Linux's gretap and Neutron's GRE tenant networks use it: version 0, the K bit with a
32-bit key naming the tenant network, payload type 0x6558 (Transparent Ethernet
Bridging) for Ethernet frames or the EtherType of the IP packet. Checksums (C), sequence
numbers (S) and the obsolete routing field are not supported: a packet with one of those
bits is refused (PacketError, which the caller counts), never misread.
"""

from __future__ import annotations

import struct

from vnet.errors import PacketError

IPPROTO_GRE = 47
PROTO_TEB = 0x6558  # Transparent Ethernet Bridging: an Ethernet frame follows (gretap)
PROTO_IPV4 = 0x0800
PROTO_IPV6 = 0x86DD
FLAG_C = 0x8000  # checksum present
FLAG_R = 0x4000  # routing present (RFC 1701, obsolete)
FLAG_K = 0x2000  # key present (RFC 2890)
FLAG_S = 0x1000  # sequence number present (RFC 2890)
VERSION_MASK = 0x0007
UNSUPPORTED = FLAG_C | FLAG_R | FLAG_S
MAX_KEY = (1 << 32) - 1

_BASE = struct.Struct("!HH")
_KEYED = struct.Struct("!HHI")


def header_length(key: int | None) -> int:
    return _BASE.size if key is None else _KEYED.size


def encode(protocol: int, key: int | None = None) -> bytes:
    """The header for a payload of ``protocol`` (an EtherType), with ``key`` if given."""
    if key is None:
        return _BASE.pack(0, protocol)
    if not 0 <= key <= MAX_KEY:
        raise PacketError(f"GRE key {key} is out of range 0..{MAX_KEY}")
    return _KEYED.pack(FLAG_K, protocol, key)


def decode(packet: bytes | bytearray | memoryview) -> tuple[int, int | None, memoryview]:
    """(protocol, key or None, payload) of a GRE packet (the bytes after the IP header)."""
    if len(packet) < _BASE.size:
        raise PacketError(f"GRE packet of {len(packet)} bytes is shorter than 4")
    flags, protocol = _BASE.unpack_from(packet)
    if flags & VERSION_MASK:
        raise PacketError(f"GRE version {flags & VERSION_MASK}: only version 0 is supported")
    if flags & UNSUPPORTED:
        raise PacketError("GRE checksum, routing or sequence number: not supported")
    if not flags & FLAG_K:
        return protocol, None, memoryview(packet)[_BASE.size :]
    if len(packet) < _KEYED.size:
        raise PacketError(f"keyed GRE packet of {len(packet)} bytes is shorter than 8")
    return protocol, _KEYED.unpack_from(packet)[2], memoryview(packet)[_KEYED.size :]


def strip_ipv4(packet: bytes | bytearray | memoryview) -> memoryview:
    """What follows the IPv4 header of a packet read from a raw IPv4 socket (which hands
    the header too): its length from the IHL, checked against what was read."""
    if len(packet) < 20 or packet[0] >> 4 != 4:
        raise PacketError("not an IPv4 packet")
    ihl = (packet[0] & 0x0F) * 4
    if ihl < 20 or ihl > len(packet):
        raise PacketError(f"IPv4 header length {ihl} does not fit {len(packet)} bytes")
    return memoryview(packet)[ihl:]
