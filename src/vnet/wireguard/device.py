"""The WireGuard device: configuration, peers, the index table and the output queues
(sans-IO). Its send and receive paths live in send.py and receive.py, the peers'
timers in timers.py, as wireguard-go splits its device/ package.
"""

from __future__ import annotations

import secrets
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass
from random import Random

from vnet.errors import ProtocolError
from vnet.packet.rows import PacketRows
from vnet.wireguard import receive, send
from vnet.wireguard.allowedips import AllowedIPs
from vnet.wireguard.constants import REKEY_AFTER_TIME
from vnet.wireguard.cookie import CookieChecker
from vnet.wireguard.keys import Keypair
from vnet.wireguard.noise import Identity
from vnet.wireguard.peer import Endpoint, Peer
from vnet.wireguard.ratelimit import RateLimiter
from vnet.wireguard.timers import TimerQueue


@dataclass
class DeviceStats:
    rx_malformed: int = 0
    rx_bad_mac: int = 0
    rx_unknown_peer: int = 0
    rx_handshake_rejected: int = 0
    rx_unknown_index: int = 0
    rx_decrypt_failed: int = 0
    rx_replayed: int = 0
    rx_expired_key: int = 0
    rx_invalid_source: int = 0
    rx_invalid_inner: int = 0
    rx_rate_limited: int = 0
    rx_keepalives: int = 0
    tx_no_route: int = 0
    tx_invalid: int = 0
    tx_staged_dropped: int = 0
    cookie_replies_sent: int = 0
    cookie_replies_received: int = 0
    handshake_initiations_sent: int = 0
    handshake_initiations_received: int = 0
    handshake_responses_received: int = 0
    handshakes_abandoned: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


UNDER_LOAD_HANDSHAKES = 64  # handshake messages in one second that switch cookies on


class Device:
    """A WireGuard interface without its I/O (whitepaper §5; wireguard-go's device/).

    In: ``on_tun_packet``/``on_tun_packets``/``on_tun_super``/``on_tun_segments`` (IP
    packets the kernel routed into the TUN: send.py), ``on_datagram``/``on_datagram_run``
    (UDP datagrams and their source: receive.py), ``on_timers(now)`` when
    ``next_deadline()`` passes (the peers' §6 timers: timers.py), and configuration (keys,
    peers, allowed-ips: uapi.apply_set). Out: ``runs_to_send()`` (datagrams for
    endpoints, one or a GSO run each) and ``deliveries()`` (packets and decrypted runs for
    the TUN). ``now`` is a monotonic clock; ``wall_offset`` maps it to Unix time for
    TAI64N timestamps and the handshake times shown to users.
    """

    # the paths, written as functions of the device in their own modules
    on_tun_packet = send.on_tun_packet
    send_one = send.send_one
    on_tun_packets = send.on_tun_packets
    on_tun_super = send.on_tun_super
    on_tun_segments = send.on_tun_segments
    on_datagram = receive.on_datagram
    receive_one = receive.receive_one
    on_datagram_run = receive.on_datagram_run

    def __init__(
        self, *, random: Callable[[int], bytes] = secrets.token_bytes, mtu: int = 1420
    ) -> None:
        self.random = random
        # timer jitter needs no secrecy; a seeded generator spares the packet path a
        # getrandom() call per data packet after a quiet spell
        self.jitter = Random(random(16))
        self.mtu = mtu
        self.wall_offset = 0.0
        self.identity: Identity | None = None
        self.cookie_checker: CookieChecker | None = None
        self.listen_port = 0
        self.fwmark = 0
        self.peers: dict[bytes, Peer] = {}
        self.timer_queue = TimerQueue()
        self.allowed_ips: AllowedIPs[Peer] = AllowedIPs()
        self.indices: dict[int, tuple[Peer, Keypair | None]] = {}
        self.rate_limiter = RateLimiter()
        self.stats = DeviceStats()
        # outputs: (datagrams back to back, datagram size, endpoint): one datagram, or a
        # run of equal ones (the last may be shorter) that one GSO send can carry
        self._outbox: list[tuple[bytes | bytearray, int, Endpoint]] = []
        self._delivered: list[bytes | PacketRows] = []
        self._handshake_times: deque[float] = deque()
        self._under_load_until = 0.0
        self.next_lost_session_check = 0.0  # receive._lost_session looks once a second
        # a sender's rekey age; shorter only through the runtime's test-only option
        self.rekey_after_time = REKEY_AFTER_TIME

    # --- plumbing -------------------------------------------------------------

    def unix_time(self, now: float) -> float:
        return now + self.wall_offset

    def outbox(self, datagram: bytes, endpoint: Endpoint) -> None:
        self._outbox.append((datagram, len(datagram), endpoint))

    def outbox_run(self, datagrams: bytearray, size: int, endpoint: Endpoint) -> None:
        self._outbox.append((datagrams, size, endpoint))

    def runs_to_send(self) -> list[tuple[bytes | bytearray, int, Endpoint]]:
        """The outputs as they are: (buffer, datagram size, endpoint)."""
        out, self._outbox = self._outbox, []
        return out

    def datagrams_to_send(self) -> list[tuple[bytes, Endpoint]]:
        """The outputs one datagram each."""
        return [
            (bytes(buf[i : i + size]), endpoint)
            for buf, size, endpoint in self.runs_to_send()
            for i in range(0, max(len(buf), 1), max(size, 1))
        ]

    def source_gone(self, endpoint: Endpoint) -> None:
        """The runtime could not send from ``endpoint.local`` (the address is no longer
        ours): peers there fall back to the kernel's choice until they write again."""
        if not endpoint.local:
            return
        plain = endpoint._replace(local="", ifindex=0)
        for peer in self.peers.values():
            if peer.endpoint == endpoint:
                peer.endpoint = plain

    def deliveries(self) -> list[bytes | PacketRows]:
        """Packets for the TUN as they are: single packets and decrypted runs."""
        out, self._delivered = self._delivered, []
        return out

    def packets_to_deliver(self) -> list[bytes]:
        out: list[bytes] = []
        for item in self.deliveries():
            if isinstance(item, PacketRows):
                out += item.packets()
            else:
                out.append(item)
        return out

    def under_load(self, now: float) -> bool:
        """Count a handshake message; True while more than UNDER_LOAD_HANDSHAKES arrived
        within a second (and for a second after): then cookies are demanded."""
        times = self._handshake_times
        times.append(now)
        while times and now - times[0] > 1.0:
            times.popleft()
        if len(times) > UNDER_LOAD_HANDSHAKES:
            self._under_load_until = now + 1.0
        return now < self._under_load_until

    def new_index(self, peer: Peer, keypair: Keypair | None) -> int:
        while True:
            index = int.from_bytes(self.random(4), "little")
            if index not in self.indices:
                self.indices[index] = (peer, keypair)
                return index

    def bind_index(self, index: int, peer: Peer, keypair: Keypair) -> None:
        self.indices[index] = (peer, keypair)

    def drop_index(self, index: int) -> None:
        self.indices.pop(index, None)

    # --- configuration ----------------------------------------------------------

    def set_private_key(self, private: bytes | None) -> None:
        if private is None or private == bytes(32):
            self.identity = None
            self.cookie_checker = None
        else:
            self.identity = Identity.from_private(private)
            self.cookie_checker = CookieChecker(self.identity.public)
            own = self.peers.get(self.identity.public)
            if own is not None:  # a peer with our own key makes no sense (wireguard-go too)
                self.remove_peer(own.public_key)
        for peer in self.peers.values():
            peer.zero_all()
            peer.handshake.precompute(self.identity)

    def add_peer(self, public_key: bytes) -> Peer:
        if len(public_key) != 32:
            raise ProtocolError("a public key is 32 bytes")
        peer = self.peers.get(public_key)
        if peer is None:
            peer = Peer(self, public_key)
            self.peers[public_key] = peer
        return peer

    def remove_peer(self, public_key: bytes) -> None:
        peer = self.peers.pop(public_key, None)
        if peer is None:
            return
        peer.zero_all()
        # the object may outlive its removal (a timer entry, a caller's reference): it
        # keeps no secret and no deadline
        peer.handshake.precompute(None)
        peer.preshared_key = bytes(32)
        peer.t_queued = None
        self.allowed_ips.remove_owner(peer)

    def remove_all_peers(self) -> None:
        for key in list(self.peers):
            self.remove_peer(key)

    # --- input: time --------------------------------------------------------------------

    def on_timers(self, now: float) -> None:
        """Run the timers due at ``now``: only the due peers' are looked at."""
        queue = self.timer_queue
        for peer in queue.due(now):
            if self.peers.get(peer.public_key) is peer:  # not removed meanwhile
                peer.expire(now)
                queue.requeue(peer)

    def next_deadline(self) -> float | None:
        """When ``on_timers`` should run next (perhaps early, never late)."""
        return self.timer_queue.next_deadline()
