"""Super-frames through the switch core and switch.offload: tags added or removed on the
way move the virtio_net_hdr offsets, and the split of what goes out is what a host
without offloads would have sent."""

from __future__ import annotations

import pytest

from tests.packet.builders import stream
from vnet.errors import PacketError
from vnet.packet import gro, gso, vxlan
from vnet.packet.virtio import EMPTY, VirtioNetHdr
from vnet.switch import offload
from vnet.switch.core import Switch

MAC_A = bytes.fromhex("020000000001")
MAC_B = bytes.fromhex("020000000002")


def eth(dst: bytes, src: bytes, vlan: int | None = None) -> bytes:
    if vlan is None:
        return dst + src + b"\x08\x00"
    return dst + src + b"\x81\x00" + vlan.to_bytes(2, "big") + b"\x08\x00"


def super_frame(link: bytes) -> tuple[VirtioNetHdr, bytes, list[bytes]]:
    """A TSO super-frame as a TAP read gives it, and the IP segments it stands for."""
    packets = stream(False, 1000, 9500, True, 5, 9, b"")
    (vnet, sp), = gro.coalesce(packets)
    hdr, _ = VirtioNetHdr.decode(vnet)
    moved = offload.shifted(hdr, len(link))
    return moved, link + sp, packets


def switch() -> Switch:
    sw = Switch()
    sw.add_port("access", vlan=10)
    sw.add_port("trunk", mode="trunk", vlan=0, allowed=[10])
    sw.add_segment(42, 10, [("198.18.0.2", 4789)])
    # both MACs learned: A behind the access port, B behind the trunk
    sw.handle_frame("access", eth(MAC_B, MAC_A) + bytes(46), 0.0)
    sw.handle_frame("trunk", eth(MAC_A, MAC_B, 10) + bytes(46), 0.0)
    return sw


@pytest.mark.parametrize("vnet_port", [True, False])
def test_access_to_trunk_gains_a_tag(vnet_port: bool) -> None:
    hdr, frame, packets = super_frame(eth(MAC_B, MAC_A))
    (name, address, data), = switch().handle_frame("access", frame, 1.0, super_frame=True)
    assert (name, address) == ("trunk", None) and len(data) == len(frame) + 4
    writes = offload.to_port(hdr, frame, data, vnet_port)
    tagged = [eth(MAC_B, MAC_A, 10) + p for p in packets]
    if vnet_port:
        (vnet, out), = writes
        moved, _ = VirtioNetHdr.decode(vnet)
        assert moved.csum_start == hdr.csum_start + 4 and moved.hdr_len == hdr.hdr_len + 4
        assert gso.split_frame(moved, out) == tagged
    else:
        assert writes == [(EMPTY, f) for f in tagged]


def test_trunk_to_access_loses_the_tag() -> None:
    hdr, frame, packets = super_frame(eth(MAC_A, MAC_B, 10))
    (name, _, data), = switch().handle_frame("trunk", frame, 1.0, super_frame=True)
    assert name == "access"
    (vnet, out), = offload.to_port(hdr, frame, data, True)
    moved, _ = VirtioNetHdr.decode(vnet)
    assert moved.csum_start == hdr.csum_start - 4
    assert gso.split_frame(moved, out) == [eth(MAC_A, MAC_B) + p for p in packets]


def test_trunk_to_vxlan_is_split_untagged() -> None:
    mac_c = bytes.fromhex("02000000000c")  # unknown: flooded to the access port and VXLAN
    hdr, frame, packets = super_frame(eth(mac_c, MAC_B, 10))
    outputs = switch().handle_frame("trunk", frame, 1.0, super_frame=True)
    (_, remote, datagram), = [o for o in outputs if o[1] is not None]
    assert remote == ("198.18.0.2", 4789)
    segments, size = offload.to_tunnel(hdr, frame, datagram)
    datagrams = [vxlan.encode(42) + eth(mac_c, MAC_B) + p for p in packets]
    assert (bytes(segments), size) == (b"".join(datagrams), len(datagrams[0]))


def test_a_plain_frame_is_not_a_super_frame_for_the_core() -> None:
    _, frame, _ = super_frame(eth(MAC_B, MAC_A))
    sw = switch()
    assert sw.handle_frame("access", frame, 1.0) == []
    assert sw.ports["access"].stats.drops == {"oversized": 1}


def test_bad_offsets_raise_packet_error() -> None:
    hdr, frame, _ = super_frame(eth(MAC_B, MAC_A))
    bad = VirtioNetHdr(hdr.flags, hdr.gso_type, hdr.hdr_len, hdr.gso_size, 2, 16)
    with pytest.raises(PacketError):
        offload.to_port(bad, frame, frame, False)
