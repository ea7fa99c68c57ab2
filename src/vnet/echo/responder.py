"""The seed's first lesson as a sans-IO core: answer ping on a TUN or a TAP.

``L3Responder`` sees IP packets (TUN) and answers ICMP and ICMPv6 echo
requests. ``L2Responder`` sees Ethernet frames (TAP) and also answers ARP
and IPv6 neighbour solicitations, so the kernel can resolve the hosts it
pretends to be. Bytes in, bytes (or None) out; no I/O here.

The responders answer for every address inside their prefixes except the
kernel's own addresses (``own``), or for any address when no prefix is given.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_interface

from vnet.errors import PacketError
from vnet.packet import icmp, ndp
from vnet.packet.arp import ARP, ARPOP_REPLY, ARPOP_REQUEST
from vnet.packet.ethernet import BROADCAST, ETH_P_ARP, ETH_P_IP, ETH_P_IPV6, Ethernet
from vnet.packet.icmp import ICMP
from vnet.packet.ipv4 import IPPROTO_ICMP, IPPROTO_ICMPV6, IPv4, header_ok
from vnet.packet.ipv6 import IPv6

IPAddress = IPv4Address | IPv6Address
IPNetwork = IPv4Network | IPv6Network
REPLY_TTL = 64


@dataclass
class EchoStats:
    packets_in: int = 0
    packets_out: int = 0
    echo_v4: int = 0
    echo_v6: int = 0
    arp_replies: int = 0
    ndp_replies: int = 0
    ignored: int = 0
    malformed: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


class AddressSet:
    """Which destination addresses this responder pretends to be."""

    def __init__(self, interfaces: Iterable[str] = ()) -> None:
        self.networks: list[IPNetwork] = []
        self.own: set[IPAddress] = set()
        for text in interfaces:
            iface = ip_interface(text)
            self.networks.append(iface.network)
            self.own.add(iface.ip)

    def answers_for(self, addr: IPAddress) -> bool:
        if addr in self.own or addr.is_multicast or addr.is_unspecified:
            return False
        if not self.networks:
            return True
        for net in self.networks:
            if addr in net:
                # an IPv4 subnet's network and broadcast addresses are nobody's
                edge = isinstance(net, IPv4Network) and net.prefixlen < 31
                return not (edge and addr in (net.network_address, net.broadcast_address))
        return False


class L3Responder:
    """Answers ICMP/ICMPv6 echo requests found in IP packets."""

    def __init__(self, addresses: AddressSet | None = None) -> None:
        self.addresses = addresses or AddressSet()
        self.stats = EchoStats()

    def handle(self, packet: bytes | bytearray | memoryview) -> bytes | None:
        self.stats.packets_in += 1
        try:
            reply = self._reply(packet)
        except PacketError:
            self.stats.malformed += 1
            return None
        if reply is None:
            self.stats.ignored += 1
            return None
        self.stats.packets_out += 1
        return reply

    def _reply(self, packet: bytes | bytearray | memoryview) -> bytes | None:
        if not packet:
            raise PacketError("empty packet")
        version = packet[0] >> 4
        if version == 4:
            return self._echo4(packet)
        if version == 6:
            return self._echo6(packet)
        raise PacketError(f"IP version {version}")

    def _echo4(self, packet: bytes | bytearray | memoryview) -> bytes | None:
        ip, body = IPv4.decode(packet)
        if ip.proto != IPPROTO_ICMP or ip.frag_offset or ip.flags & 1:
            return None  # not ICMP, or a fragment: not ours to reassemble
        if not self.addresses.answers_for(ip.dst):
            return None
        if not header_ok(packet):
            raise PacketError("bad IPv4 header checksum")
        msg, data = ICMP.decode(body)
        if msg.type != icmp.ICMP_ECHO or msg.code != 0:
            return None
        if not icmp.checksum_ok(body):
            raise PacketError("bad ICMP checksum")
        reply = ICMP(icmp.ICMP_ECHOREPLY, 0, msg.rest).encode(data)
        self.stats.echo_v4 += 1
        return IPv4(src=ip.dst, dst=ip.src, proto=IPPROTO_ICMP, ttl=REPLY_TTL).encode(reply)

    def _echo6(self, packet: bytes | bytearray | memoryview) -> bytes | None:
        ip, body = IPv6.decode(packet)
        if ip.next_header != IPPROTO_ICMPV6 or not self.addresses.answers_for(ip.dst):
            return None
        msg, data = ICMP.decode(body)
        if msg.type != icmp.ICMPV6_ECHO_REQUEST or msg.code != 0:
            return None
        if not icmp.checksum6_ok(body, ip.src, ip.dst):
            raise PacketError("bad ICMPv6 checksum")
        reply = ICMP(icmp.ICMPV6_ECHO_REPLY, 0, msg.rest).encode(data, ip.dst, ip.src)
        self.stats.echo_v6 += 1
        return IPv6(src=ip.dst, dst=ip.src, next_header=IPPROTO_ICMPV6, hop_limit=REPLY_TTL).encode(
            reply
        )


class L2Responder:
    """Answers ARP, neighbour solicitations and pings found in Ethernet frames."""

    def __init__(self, mac: bytes, addresses: AddressSet | None = None) -> None:
        if len(mac) != 6 or mac[0] & 1:
            raise PacketError("the responder needs a 6-byte unicast MAC")
        self.mac = mac
        self.l3 = L3Responder(addresses)
        self.stats = self.l3.stats  # one set of counters for both layers

    @property
    def addresses(self) -> AddressSet:
        return self.l3.addresses

    def handle(self, frame: bytes | bytearray | memoryview) -> bytes | None:
        self.stats.packets_in += 1
        try:
            reply = self._reply(frame)
        except PacketError:
            self.stats.malformed += 1
            return None
        if reply is None:
            self.stats.ignored += 1
            return None
        self.stats.packets_out += 1
        return reply

    def _reply(self, frame: bytes | bytearray | memoryview) -> bytes | None:
        eth, payload = Ethernet.decode(frame)
        if eth.vlan_tci is not None:
            return None  # untagged access port
        if eth.dst not in (self.mac, BROADCAST) and not eth.dst[0] & 1:
            return None
        if eth.ethertype == ETH_P_ARP:
            return self._arp(eth, payload)
        if eth.ethertype == ETH_P_IPV6:
            advert = self._ndp(eth, payload)
            if advert is not None:
                return advert
        if eth.ethertype not in (ETH_P_IP, ETH_P_IPV6) or eth.dst != self.mac:
            return None
        inner = self.l3._reply(payload)
        if inner is None:
            return None
        return Ethernet(eth.src, self.mac, eth.ethertype).encode(inner)

    def _arp(self, eth: Ethernet, payload: memoryview) -> bytes | None:
        req = ARP.decode(payload)
        if req.op != ARPOP_REQUEST or req.spa == req.tpa:  # gratuitous ARP: nothing to say
            return None
        if not self.addresses.answers_for(req.tpa):
            return None
        reply = ARP(ARPOP_REPLY, self.mac, req.tpa, req.sha, req.spa).encode()
        self.stats.arp_replies += 1
        return Ethernet(req.sha, self.mac, ETH_P_ARP).encode(reply)

    def _ndp(self, eth: Ethernet, payload: memoryview) -> bytes | None:
        ip, body = IPv6.decode(payload)
        if ip.next_header != IPPROTO_ICMPV6 or len(body) < 4:
            return None
        if body[0] != icmp.ND_NEIGHBOR_SOLICIT:
            return None
        msg, rest = ICMP.decode(body)
        if ip.hop_limit != ndp.NDP_HOP_LIMIT or msg.code != 0:
            raise PacketError("neighbour solicitation with hop limit != 255 or code != 0")
        if not icmp.checksum6_ok(body, ip.src, ip.dst):
            raise PacketError("bad ICMPv6 checksum")
        ns = ndp.NeighborSolicitation.decode(rest)
        if not self.addresses.answers_for(ns.target):
            return None
        dad = ip.src.is_unspecified
        dst = IPv6Address("ff02::1") if dad else ip.src
        na = ICMP(icmp.ND_NEIGHBOR_ADVERT, 0, ndp.advertisement_rest(False, not dad, True)).encode(
            ndp.advertisement_body(ns.target, self.mac), ns.target, dst
        )
        packet = IPv6(
            src=ns.target, dst=dst, next_header=IPPROTO_ICMPV6, hop_limit=ndp.NDP_HOP_LIMIT
        ).encode(na)
        dst_mac = ndp.multicast_mac(dst) if dad else (ns.source_lladdr or eth.src)
        self.stats.ndp_replies += 1
        return Ethernet(dst_mac, self.mac, ETH_P_IPV6).encode(packet)
