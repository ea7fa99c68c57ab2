"""IP over GRE between two hosts (sans-IO): what Linux's ``ip tunnel add NAME mode gre
local A remote B [key K]`` does, as a userspace endpoint over a TUN.

In: an IP packet the kernel routed into the TUN (``encapsulate``), or a GRE packet that
arrived (its IP header already stripped) with the address it came from
(``decapsulate``). Out: the GRE packet to send to the remote, or the IP packet to write
to the TUN; None for anything refused, counted by reason in ``drops``. As the kernel's
tunnel does, only packets from the configured remote, with the configured key (or none,
when none is configured), are taken.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from vnet.errors import PacketError
from vnet.packet import gre

# what a 1500-byte underlay leaves for the inner packet: outer IPv4 and the GRE header
UNDERLAY_MTU = 1500
IPV4_HEADER = 20


def default_mtu(key: int | None) -> int:
    """1476 without a key, 1472 with one: Linux's gre device's defaults."""
    return UNDERLAY_MTU - IPV4_HEADER - gre.header_length(key)


@dataclass
class GreIpEndpoint:
    remote: str
    key: int | None = None
    rx_packets: int = 0
    rx_bytes: int = 0
    tx_packets: int = 0
    tx_bytes: int = 0
    drops: Counter[str] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        self._v4 = gre.encode(gre.PROTO_IPV4, self.key)
        self._v6 = gre.encode(gre.PROTO_IPV6, self.key)

    def encapsulate(self, packet: bytes | memoryview) -> bytes | None:
        """The GRE packet for an IP packet from the TUN (None: not IP)."""
        version = packet[0] >> 4 if len(packet) else 0
        if version == 4:
            header = self._v4
        elif version == 6:
            header = self._v6
        else:
            self.drops["tun-not-ip"] += 1
            return None
        self.tx_packets += 1
        self.tx_bytes += len(packet)
        return header + bytes(packet)

    def decapsulate(self, source: str, packet: bytes | memoryview) -> bytes | None:
        """The IP packet inside a GRE packet from ``source`` (None: refused)."""
        if source != self.remote:
            self.drops["unknown-source"] += 1
            return None
        try:
            protocol, key, inner = gre.decode(packet)
        except PacketError:
            self.drops["malformed"] += 1
            return None
        if key != self.key:
            self.drops["wrong-key"] += 1
            return None
        want = 4 if protocol == gre.PROTO_IPV4 else 6 if protocol == gre.PROTO_IPV6 else 0
        if not want or not len(inner) or inner[0] >> 4 != want:
            self.drops["not-ip"] += 1
            return None
        self.rx_packets += 1
        self.rx_bytes += len(inner)
        return bytes(inner)
