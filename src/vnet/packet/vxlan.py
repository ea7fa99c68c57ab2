"""VXLAN header (RFC 7348 §5): 8 bytes before the inner Ethernet frame, over UDP."""

from __future__ import annotations

import struct

from vnet.errors import PacketError

VXLAN_PORT = 4789  # IANA (RFC 7348 §5)
VXLAN_PORT_LINUX = 8472  # the Linux kernel's historical default
HEADER_LENGTH = 8
FLAG_VNI = 0x08  # the I flag: the VNI is valid

_HDR = struct.Struct("!B3xI")


def encode(vni: int) -> bytes:
    if not 0 <= vni < 1 << 24:
        raise PacketError(f"VNI {vni} is out of range 0..16777215")
    return _HDR.pack(FLAG_VNI, vni << 8)


def decode(datagram: bytes | bytearray | memoryview) -> tuple[int, memoryview]:
    """(VNI, inner frame). Reserved bits are ignored on receipt, as §5 says."""
    if len(datagram) < HEADER_LENGTH:
        raise PacketError(f"VXLAN datagram of {len(datagram)} bytes is shorter than 8")
    flags, word = _HDR.unpack_from(datagram)
    if not flags & FLAG_VNI:
        raise PacketError("VXLAN header without the I (valid VNI) flag")
    return word >> 8, memoryview(datagram)[HEADER_LENGTH:]
