"""Two WireGuard devices back to back over an in-memory network with a fake clock."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from ipaddress import IPv4Address

from vnet.packet.icmp import ICMP, ICMP_ECHO
from vnet.packet.ipv4 import IPPROTO_ICMP, IPv4
from vnet.wireguard import crypto
from vnet.wireguard.allowedips import parse_prefix
from vnet.wireguard.device import Device
from vnet.wireguard.peer import Endpoint, Peer

EA = Endpoint("198.18.0.1", 51820)
EB = Endpoint("198.18.0.2", 51820)
A_INNER = "198.19.0.1"
B_INNER = "198.19.0.2"


def packet(src: str, dst: str, seq: int = 1, size: int = 32) -> bytes:
    body = ICMP.echo(ICMP_ECHO, 1, seq).encode(bytes(size))
    return IPv4(IPv4Address(src), IPv4Address(dst), IPPROTO_ICMP).encode(body)


def keypair(rng: random.Random) -> tuple[bytes, bytes]:
    private = crypto.generate_private_key(rng.randbytes(32))
    return private, crypto.public_key(private)


@dataclass
class Pair:
    a: Device
    b: Device
    peer_ab: Peer  # A's view of B
    peer_ba: Peer  # B's view of A
    now: float = 1000.0
    sources: dict[int, Endpoint] = field(default_factory=dict)
    wire: list[tuple[bytes, Endpoint, Endpoint]] = field(default_factory=list)
    log: list[tuple[str, bytes]] = field(default_factory=list)
    delivered_a: list[bytes] = field(default_factory=list)
    delivered_b: list[bytes] = field(default_factory=list)
    under_load_b: bool = False

    def endpoint_of(self, dev: Device) -> Endpoint:
        return self.sources.get(id(dev), EA if dev is self.a else EB)

    def collect(self) -> None:
        for dev in (self.a, self.b):
            for data, dest in dev.datagrams_to_send():
                self.wire.append((data, self.endpoint_of(dev), dest))
                self.log.append(("a" if dev is self.a else "b", data))
        self.delivered_a += self.a.packets_to_deliver()
        self.delivered_b += self.b.packets_to_deliver()

    def step(self, drop: Callable[[bytes, Endpoint, Endpoint], bool] | None = None) -> int:
        """Deliver what is on the wire (once). Returns how many were delivered."""
        self.collect()
        wire, self.wire = self.wire, []
        count = 0
        for data, src, dest in wire:
            if drop is not None and drop(data, src, dest):
                continue
            target = self.b if dest == EB else self.a if dest == self.endpoint_of(self.a) else None
            if target is None:
                continue
            target.on_datagram(data, src, self.now,
                               under_load=self.under_load_b and target is self.b)
            count += 1
        self.collect()
        return count

    def settle(self, drop: Callable[[bytes, Endpoint, Endpoint], bool] | None = None,
               limit: int = 50) -> None:
        for _ in range(limit):
            if not self.step(drop) and not self.wire:
                return
        raise AssertionError("network did not settle")

    def advance(self, seconds: float, tick: float = 0.5,
                drop: Callable[[bytes, Endpoint, Endpoint], bool] | None = None) -> None:
        """Move the clock forward, firing timers and carrying traffic as it goes."""
        end = self.now + seconds
        while self.now < end:
            self.now = min(end, self.now + tick)
            self.a.on_timers(self.now)
            self.b.on_timers(self.now)
            self.settle(drop)

    def send_a(self, seq: int = 1, size: int = 32) -> None:
        self.a.on_tun_packet(packet(A_INNER, B_INNER, seq, size), self.now)

    def send_b(self, seq: int = 1, size: int = 32) -> None:
        self.b.on_tun_packet(packet(B_INNER, A_INNER, seq, size), self.now)


def make_pair(seed: int = 1, psk: bytes | None = None, psk_b: bytes | None = None) -> Pair:
    rng = random.Random(seed)
    a = Device(random=rng.randbytes)
    b = Device(random=rng.randbytes)
    a_priv, a_pub = keypair(rng)
    b_priv, b_pub = keypair(rng)
    a.set_private_key(a_priv)
    b.set_private_key(b_priv)
    a.wall_offset = b.wall_offset = 1.7e9
    peer_ab = a.add_peer(b_pub)
    peer_ab.endpoint = EB
    a.allowed_ips.insert(parse_prefix(B_INNER + "/32"), peer_ab)
    peer_ba = b.add_peer(a_pub)
    peer_ba.endpoint = EA
    b.allowed_ips.insert(parse_prefix(A_INNER + "/32"), peer_ba)
    if psk is not None:
        peer_ab.preshared_key = psk
        peer_ba.preshared_key = psk if psk_b is None else psk_b
    return Pair(a, b, peer_ab, peer_ba)
