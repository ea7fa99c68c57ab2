"""Fuzzing what takes frames and packets from TAP, TUN and the wire (atheris): every packet
codec, VXLAN, GRE, the virtio_net_hdr, the echo responders and the switch core. A decoder may
raise only PacketError (the project's own); the responders and the switch take anything.

    python fuzz/packets.py [-runs=N] [corpus dir]   (make fuzz)
"""

from __future__ import annotations

import contextlib
import sys

import atheris  # type: ignore[import-untyped]

with atheris.instrument_imports():
    from vnet.echo.responder import L2Responder, L3Responder
    from vnet.errors import PacketError
    from vnet.packet import arp, ethernet, gre, icmp, ipv4, ipv6, ndp, tcp, udp, virtio, vxlan
    from vnet.switch.core import Switch

DECODERS = (
    arp.ARP.decode, ethernet.Ethernet.decode, icmp.ICMP.decode, ipv4.IPv4.decode,
    ipv6.IPv6.decode, ndp.decode_options, ndp.NeighborSolicitation.decode, tcp.TCP.decode,
    udp.UDP.decode, vxlan.decode, virtio.VirtioNetHdr.decode, gre.decode, gre.strip_ipv4,
)
L2 = L2Responder(bytes([2, 0, 0, 0, 0, 1]))
L3 = L3Responder()
SWITCH = Switch()
for _name, _mode in (("p1", "access"), ("p2", "trunk"), ("p3", "access")):
    SWITCH.add_port(_name, _mode, vlan=0 if _mode == "trunk" else 10)
SWITCH.add_segment(42, 10, [("198.18.0.2", 4789)])
SWITCH.add_segment(43, 20, [("198.18.0.3", 0)], kind="gre")
SOURCE = ("198.18.0.2", 4789)


def one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    choice = fdp.ConsumeIntInRange(0, 6)
    payload = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 2000))
    if choice == 0:
        decode = DECODERS[fdp.ConsumeIntInRange(0, len(DECODERS) - 1)]
        with contextlib.suppress(PacketError):
            decode(payload)
    elif choice == 1:
        L2.handle(payload)
    elif choice == 2:
        L3.handle(payload)
    elif choice == 3:
        SWITCH.handle_frame(("p1", "p2", "p3")[fdp.ConsumeIntInRange(0, 2)], payload, 1.0)
    elif choice == 4:
        SWITCH.handle_vxlan(payload, SOURCE, 1.0)
    elif choice == 6:
        SWITCH.handle_gre(payload, "198.18.0.3", 1.0)
    else:
        size = fdp.ConsumeIntInRange(1, 300)
        SWITCH.handle_vxlan_batch([payload[i : i + size] for i in range(0, len(payload), size)],
                                  SOURCE, 1.0)


if __name__ == "__main__":
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()
