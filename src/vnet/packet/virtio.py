"""``struct virtio_net_hdr`` (virtio spec §5.1.6), as TUN/TAP with IFF_VNET_HDR use it.

Host byte order on x86 (little-endian); TUNSETVNETLE/BE can change it.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

from vnet.errors import PacketError

VIRTIO_NET_HDR_F_NEEDS_CSUM = 1
VIRTIO_NET_HDR_F_DATA_VALID = 2
VIRTIO_NET_HDR_F_RSC_INFO = 4

VIRTIO_NET_HDR_GSO_NONE = 0
VIRTIO_NET_HDR_GSO_TCPV4 = 1
VIRTIO_NET_HDR_GSO_UDP = 3
VIRTIO_NET_HDR_GSO_TCPV6 = 4
VIRTIO_NET_HDR_GSO_UDP_L4 = 5
VIRTIO_NET_HDR_GSO_ECN = 0x80

HDR_LEN = 10
HDR_LEN_MRG = 12  # with num_buffers (VIRTIO_NET_F_MRG_RXBUF)

_HDR = struct.Struct("<BBHHHH")
_NUM_BUFFERS = struct.Struct("<H")

EMPTY = bytes(HDR_LEN)  # no GSO, no checksum to finish


def is_gso(gso_type: int) -> bool:
    """Whether a header's gso_type asks for segmentation (the ECN bit aside); for a raw
    header byte as well as a decoded one."""
    return gso_type & ~VIRTIO_NET_HDR_GSO_ECN != VIRTIO_NET_HDR_GSO_NONE


class VirtioNetHdr(NamedTuple):
    """A tuple rather than a frozen dataclass: one is built per frame, three times as fast."""

    flags: int = 0
    gso_type: int = VIRTIO_NET_HDR_GSO_NONE
    hdr_len: int = 0
    gso_size: int = 0
    csum_start: int = 0
    csum_offset: int = 0
    num_buffers: int | None = None  # present only in the 12-byte form

    @property
    def size(self) -> int:
        return HDR_LEN if self.num_buffers is None else HDR_LEN_MRG

    @classmethod
    def decode(
        cls, buf: bytes | bytearray | memoryview, size: int = HDR_LEN
    ) -> tuple[VirtioNetHdr, memoryview]:
        if size not in (HDR_LEN, HDR_LEN_MRG):
            raise PacketError(f"virtio_net_hdr size {size} is neither 10 nor 12")
        view = memoryview(buf)
        if len(view) < size:
            raise PacketError(f"{len(view)} bytes are shorter than a {size}-byte virtio_net_hdr")
        flags, gso_type, hdr_len, gso_size, csum_start, csum_offset = _HDR.unpack_from(view)
        num = _NUM_BUFFERS.unpack_from(view, HDR_LEN)[0] if size == HDR_LEN_MRG else None
        return cls(flags, gso_type, hdr_len, gso_size, csum_start, csum_offset, num), view[size:]

    def encode(self) -> bytes:
        try:
            out = _HDR.pack(
                self.flags,
                self.gso_type,
                self.hdr_len,
                self.gso_size,
                self.csum_start,
                self.csum_offset,
            )
            if self.num_buffers is not None:
                out += _NUM_BUFFERS.pack(self.num_buffers)
        except struct.error as e:
            raise PacketError(f"virtio_net_hdr field out of range: {e}") from None
        return out

    @property
    def gso(self) -> bool:
        return is_gso(self.gso_type)
