"""What to write for a frame that arrived with a virtio_net_hdr (sans-IO).

A TSO super-frame, or a frame whose checksum the sender left partial, crosses
the switch as one unit; only its way out decides its form. The core may add
or remove an 802.1Q tag on the way, which moves the offsets of the header
(they count from the start of the frame) by the same 4 bytes.
"""

from __future__ import annotations

from vnet.packet import gso
from vnet.packet.virtio import EMPTY, VirtioNetHdr
from vnet.packet.vxlan import HEADER_LENGTH as VXLAN_HLEN
from vnet.switch.core import Frame


def shifted(hdr: VirtioNetHdr, delta: int) -> VirtioNetHdr:
    """The header for the same frame with ``delta`` bytes more (a tag) or fewer before IP."""
    if delta == 0:
        return hdr
    return hdr._replace(
        hdr_len=max(hdr.hdr_len + delta, 0), csum_start=max(hdr.csum_start + delta, 0)
    )


def to_port(
    hdr: VirtioNetHdr, frame_in: Frame, frame_out: Frame, vnet_port: bool
) -> list[tuple[bytes, Frame]]:
    """(virtio_net_hdr, frame) writes for a local port: the super-frame as it is for a
    port that takes a virtio_net_hdr, MTU frames with full checksums for any other."""
    moved = shifted(hdr, len(frame_out) - len(frame_in))
    if vnet_port:
        return [(moved.encode(), frame_out)]
    return [(EMPTY, f) for f in gso.split_frame(moved, frame_out)]


def to_tunnel(
    hdr: VirtioNetHdr, frame_in: Frame, packet: Frame, head_len: int = VXLAN_HLEN
) -> tuple[bytes | bytearray, int]:
    """Tunnel packets (its ``head_len``-byte VXLAN or GRE header + one MTU frame each) for
    a super-frame the core encapsulated as one ``packet``: back to back, with their
    size, for one GSO send (VXLAN) or one send each (GRE)."""
    view = memoryview(packet)  # slices of a super-frame are not copied
    inner = view[head_len:]
    head = bytes(view[:head_len])
    return gso.split_frame_segments(shifted(hdr, len(inner) - len(frame_in)), inner, head)
