"""The device's send path (wireguard-go's send.go): IP packets from the TUN routed to
their peer by destination (cryptokey routing, whitepaper §2), then sealed by the peer
(``Peer.send_packet``, ``send_staged``, ``send_rows``) or staged until a session is up.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vnet.packet.rows import PacketRows
from vnet.wireguard.peer import Endpoint, Peer

if TYPE_CHECKING:
    from vnet.wireguard.device import Device


def destination(packet: bytes) -> bytes | None:
    """The destination address of an IPv4 or IPv6 packet, or None when it is neither."""
    if not packet:
        return None
    version = packet[0] >> 4
    if version == 4 and len(packet) >= 20:
        return packet[16:20]
    if version == 6 and len(packet) >= 40:
        return packet[24:40]
    return None


def on_tun_packet(device: Device, packet: bytes, now: float) -> None:
    """One packet: sealed at once when its peer has a session (the latency path)."""
    dst = destination(packet)
    if dst is None:
        device.stats.tx_invalid += 1
        return
    peer = device.allowed_ips.lookup(dst)
    if peer is None:
        device.stats.tx_no_route += 1
        return
    peer.send_packet(packet, now)


def send_one(device: Device, packet: bytes, now: float) -> tuple[bytes, Endpoint] | None:
    """The latency path (an idle ping): one packet's transport message and where it goes,
    sealed at once when its peer's session is up, nothing waits before it and no rekey is
    near (``Peer.send_now``). None, with nothing done, otherwise: ``on_tun_packet`` then
    takes the packet the general way."""
    dst = destination(packet)
    peer = device.allowed_ips.lookup(dst) if dst is not None else None
    return peer.send_now(packet, now) if peer is not None else None


def on_tun_packets(device: Device, packets: list[bytes], now: float) -> None:
    """Several packets: staged per peer, then one send pass per peer."""
    touched: list[Peer] = []
    lookup = device.allowed_ips.lookup
    for packet in packets:
        dst = destination(packet)
        if dst is None:
            device.stats.tx_invalid += 1
            continue
        peer = lookup(dst)
        if peer is None:
            device.stats.tx_no_route += 1
            continue
        peer.stage(packet)
        if peer not in touched:
            touched.append(peer)
    for peer in touched:
        peer.send_staged(now)


def on_tun_super(device: Device, packet: memoryview, v4: bool, mss: int, now: float) -> bool:
    """A TCP super-packet read with TSO (``mss`` payload bytes per segment), sealed whole
    by its peer (``Peer.send_super``). False when that path does not take it: the caller
    splits it into rows (``on_tun_segments``), which also names any problem."""
    dst = destination(bytes(packet[:40]))
    peer = device.allowed_ips.lookup(dst) if dst is not None else None
    return peer is not None and peer.send_super(packet, v4, mss, now)


def on_tun_segments(device: Device, rows: PacketRows, now: float) -> None:
    """The segments of one TUN super-packet (one flow: one destination)."""
    if not rows.lengths:
        return
    dst = destination(bytes(rows.row(0)[:40]))
    if dst is None:
        device.stats.tx_invalid += len(rows)
        return
    peer = device.allowed_ips.lookup(dst)
    if peer is None:
        device.stats.tx_no_route += len(rows)
        return
    peer.send_rows(rows, now)
