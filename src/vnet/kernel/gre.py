"""The socket a userspace GRE endpoint needs: raw IPv4, protocol 47 (GRE has no ports).

It receives a copy of every GRE packet that reaches the namespace, IPv4 header first
(``vnet.packet.gre.strip_ipv4``), whether or not the kernel has GRE tunnels of its own
(without them it answers nothing either: a raw socket took the packet). What it sends
gets its IPv4 header from the kernel. Needs CAP_NET_RAW.
"""

from __future__ import annotations

import contextlib
import socket

from vnet.errors import KernelError
from vnet.kernel import udp
from vnet.packet.gre import IPPROTO_GRE


def open_socket(local: str | None = None) -> socket.socket:
    """A non-blocking raw GRE socket, bound to ``local`` (an address of ours) if given:
    then only packets to that address arrive, and what leaves comes from it."""
    try:
        sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, IPPROTO_GRE)
    except PermissionError:
        raise KernelError("a GRE endpoint needs CAP_NET_RAW (run as root)") from None
    except OSError as e:
        raise KernelError(f"cannot open a raw GRE socket: {e.strerror}", e.errno) from None
    try:
        if local is not None:
            sock.bind((local, 0))
    except OSError as e:
        sock.close()
        raise KernelError(f"cannot bind GRE to {local}: {e.strerror}", e.errno) from None
    udp.size_buffers(sock)
    # an oversized packet is better fragmented than refused (EMSGSIZE), as for VXLAN
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.IPPROTO_IP, udp.IP_MTU_DISCOVER, udp.IP_PMTUDISC_DONT)
    sock.setblocking(False)
    return sock
