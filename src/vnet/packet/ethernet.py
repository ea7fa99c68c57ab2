"""Ethernet II frames, with an optional 802.1Q tag.

An EtherType below 0x0600 is an IEEE 802.3 length field; such frames decode with that
value as ``ethertype`` and are left to the caller.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

from vnet.errors import PacketError

ETH_P_IP = 0x0800
ETH_P_ARP = 0x0806
ETH_P_8021Q = 0x8100
ETH_P_IPV6 = 0x86DD
ETH_HLEN = 14
ETH_ZLEN = 60  # minimum frame without FCS
BROADCAST = b"\xff" * 6

_HDR = struct.Struct("!6s6sH")
_TAG = struct.Struct("!HH")


def mac_str(mac: bytes) -> str:
    return ":".join(f"{b:02x}" for b in mac)


def mac_bytes(text: str) -> bytes:
    parts = text.split(":")
    try:
        raw = bytes(int(p, 16) for p in parts)
    except ValueError:
        raise PacketError(f"invalid MAC address {text!r}") from None
    if len(raw) != 6 or any(len(p) != 2 for p in parts):
        raise PacketError(f"invalid MAC address {text!r}")
    return raw


def is_multicast(mac: bytes) -> bool:
    return bool(mac[0] & 1)


class Ethernet(NamedTuple):
    """A tuple rather than a frozen dataclass: one is built per frame, three times as fast."""

    dst: bytes
    src: bytes
    ethertype: int
    vlan_tci: int | None = None  # 802.1Q PCP/DEI/VID when tagged

    @property
    def header_length(self) -> int:
        return ETH_HLEN + (4 if self.vlan_tci is not None else 0)

    @property
    def vlan_id(self) -> int | None:
        return None if self.vlan_tci is None else self.vlan_tci & 0x0FFF

    @classmethod
    def decode(cls, buf: bytes | bytearray | memoryview) -> tuple[Ethernet, memoryview]:
        view = memoryview(buf)
        if len(view) < ETH_HLEN:
            raise PacketError(f"Ethernet frame of {len(view)} bytes is shorter than {ETH_HLEN}")
        dst, src, ethertype = _HDR.unpack_from(view)
        if ethertype == ETH_P_8021Q:
            if len(view) < ETH_HLEN + 4:
                raise PacketError("802.1Q-tagged frame is truncated")
            tci, inner = _TAG.unpack_from(view, 14)
            return cls(dst, src, inner, tci), view[18:]
        return cls(dst, src, ethertype), view[14:]

    def encode(self, payload: bytes | bytearray | memoryview = b"") -> bytes:
        if len(self.dst) != 6 or len(self.src) != 6:
            raise PacketError("MAC addresses are 6 bytes")
        if not 0 <= self.ethertype <= 0xFFFF:
            raise PacketError(f"EtherType {self.ethertype} out of range")
        if self.vlan_tci is None:
            return _HDR.pack(self.dst, self.src, self.ethertype) + bytes(payload)
        if not 0 <= self.vlan_tci <= 0xFFFF:
            raise PacketError(f"802.1Q TCI {self.vlan_tci} out of range")
        return (
            _HDR.pack(self.dst, self.src, ETH_P_8021Q)
            + _TAG.pack(self.vlan_tci, self.ethertype)
            + bytes(payload)
        )
