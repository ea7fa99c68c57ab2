"""AF_PACKET sockets: a switch port on an interface someone else holds (a QEMU guest's
TAP, a veth), every frame in both directions, optionally with a virtio_net_hdr."""

from __future__ import annotations

import socket
import struct

from vnet.errors import KernelError

# linux/if_ether.h and linux/if_packet.h
ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_ADD_MEMBERSHIP = 1
PACKET_MR_PROMISC = 1
PACKET_OUTGOING = 4  # sll_pkttype of a frame this host sent
PACKET_VNET_HDR = 15
_MREQ = struct.Struct("iHH8s")  # struct packet_mreq


def open_port(name: str) -> socket.socket:
    """A non-blocking raw socket bound to ``name``, the interface in promiscuous mode."""
    try:
        index = socket.if_nametoindex(name)
    except OSError:
        raise KernelError(f"port {name!r}: no such interface to attach to") from None
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    try:
        sock.bind((name, ETH_P_ALL))
        mreq = _MREQ.pack(index, PACKET_MR_PROMISC, 0, b"")
        sock.setsockopt(SOL_PACKET, PACKET_ADD_MEMBERSHIP, mreq)
    except OSError as e:
        sock.close()
        raise KernelError(f"port {name!r}: cannot attach: {e.strerror}", e.errno) from None
    sock.setblocking(False)
    return sock


def enable_vnet_hdr(sock: socket.socket) -> None:
    """Every read and write then starts with a virtio_net_hdr (PACKET_VNET_HDR)."""
    try:
        sock.setsockopt(SOL_PACKET, PACKET_VNET_HDR, 1)
    except OSError as e:
        raise KernelError(f"no vnet_hdr on AF_PACKET: {e.strerror}", e.errno) from None


def outgoing(address: tuple[object, ...]) -> bool:
    """A frame this host sent (seen by the socket on its way out), from recvfrom's address."""
    return address[2] == PACKET_OUTGOING
