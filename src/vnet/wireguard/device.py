"""The WireGuard device: peers, index table, message dispatch (sans-IO).

Inputs: ``on_tun_packet`` (an IP packet the kernel routed into the TUN),
``on_datagram`` (a UDP datagram and its source), ``on_timers``. Outputs are
collected and drained with ``datagrams_to_send`` and ``packets_to_deliver``.
``now`` is a monotonic clock; ``wall_offset`` maps it to Unix time for
TAI64N timestamps and handshake times shown to users.
"""

from __future__ import annotations

import secrets
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass
from random import Random

import numpy as np
import numpy.typing as npt

from vnet.errors import ProtocolError
from vnet.packet.rows import PacketRows, column16
from vnet.wireguard import noise
from vnet.wireguard.allowedips import AllowedIPs
from vnet.wireguard.constants import (
    MESSAGE_COOKIE_REPLY,
    MESSAGE_INITIATION,
    MESSAGE_RESPONSE,
    MESSAGE_TRANSPORT,
    REJECT_AFTER_MESSAGES,
)
from vnet.wireguard.cookie import CookieChecker
from vnet.wireguard.crypto import DecryptError
from vnet.wireguard.keys import Keypair
from vnet.wireguard.messages import (
    TRANSPORT_HEADER,
    TRANSPORT_HEADER_SIZE,
    TRANSPORT_MIN_SIZE,
    CookieReply,
    Initiation,
    MessageError,
    Response,
    message_type,
)
from vnet.wireguard.noise import HandshakeError, Identity, State
from vnet.wireguard.peer import Endpoint, Peer
from vnet.wireguard.ratelimit import RateLimiter


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


_TRANSPORT_TAG = bytes([4, 0, 0, 0])  # type 4, reserved zeros
UNDER_LOAD_HANDSHAKES = 64  # handshake messages in one second that switch cookies on


def inner_source(packet: bytes) -> tuple[bytes, bytes] | None:
    """(packet trimmed to its IP length, source address), or None when not IP."""
    if not packet:
        return None
    version = packet[0] >> 4
    if version == 4 and len(packet) >= 20:
        total = packet[2] << 8 | packet[3]
        if not 20 <= total <= len(packet):
            return None
        src = packet[12:16]
    elif version == 6 and len(packet) >= 40:
        total = (packet[4] << 8 | packet[5]) + 40
        if total > len(packet):
            return None
        src = packet[8:24]
    else:
        return None
    return (packet if total == len(packet) else packet[:total]), src


def destination(packet: bytes) -> bytes | None:
    if not packet:
        return None
    version = packet[0] >> 4
    if version == 4 and len(packet) >= 20:
        return packet[16:20]
    if version == 6 and len(packet) >= 40:
        return packet[24:40]
    return None


def _source_key(source: Endpoint) -> bytes:
    return f"{source[0]}|{source[1]}".encode()


def _inner_mask(width: int, keep: dict[int, int]) -> npt.NDArray[np.uint8]:
    return np.array([keep.get(i, 0) for i in range(width)], dtype=np.uint8)


# what _inner_uniform compares between rows: IP version, length, source address
_INNER_MASK4 = _inner_mask(16, {0: 0xF0, 2: 0xFF, 3: 0xFF, 12: 0xFF, 13: 0xFF, 14: 0xFF, 15: 0xFF})
_INNER_MASK6 = _inner_mask(24, {0: 0xF0, 4: 0xFF, 5: 0xFF, **{i: 0xFF for i in range(8, 24)}})


class _Use:
    """The rows of one run that one keypair opened, and their counters."""

    __slots__ = ("counters", "keypair", "peer", "rows")

    def __init__(self, peer: Peer, keypair: Keypair) -> None:
        self.peer = peer
        self.keypair = keypair
        self.rows: list[int] = []
        self.counters: list[int] = []


class Device:
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
        self.allowed_ips.remove_owner(peer)

    def remove_all_peers(self) -> None:
        for key in list(self.peers):
            self.remove_peer(key)

    # --- input: the TUN -----------------------------------------------------------

    def on_tun_packet(self, packet: bytes, now: float) -> None:
        dst = destination(packet)
        if dst is None:
            self.stats.tx_invalid += 1
            return
        peer = self.allowed_ips.lookup(dst)
        if peer is None:
            self.stats.tx_no_route += 1
            return
        peer.send_packet(packet, now)

    def on_tun_packets(self, packets: list[bytes], now: float) -> None:
        """A batch (the segments of one super-packet): one send pass per peer."""
        touched: list[Peer] = []
        lookup = self.allowed_ips.lookup
        for packet in packets:
            dst = destination(packet)
            if dst is None:
                self.stats.tx_invalid += 1
                continue
            peer = lookup(dst)
            if peer is None:
                self.stats.tx_no_route += 1
                continue
            peer.stage(packet)
            if peer not in touched:
                touched.append(peer)
        for peer in touched:
            peer.send_staged(now)

    def on_tun_segments(self, rows: PacketRows, now: float) -> None:
        """The segments of one TUN super-packet (one flow: one destination)."""
        if not rows.lengths:
            return
        dst = destination(bytes(rows.row(0)[:40]))
        if dst is None:
            self.stats.tx_invalid += len(rows)
            return
        peer = self.allowed_ips.lookup(dst)
        if peer is None:
            self.stats.tx_no_route += len(rows)
            return
        peer.send_rows(rows, now)

    # --- input: the network -----------------------------------------------------------

    def on_datagram(
        self, data: bytes, source: Endpoint, now: float, under_load: bool | None = None
    ) -> None:
        """One datagram. ``under_load`` None: decided by the rate of handshake messages."""
        try:
            if len(data) >= TRANSPORT_MIN_SIZE and data[:4] == _TRANSPORT_TAG:
                self._on_transport(data, source, now)  # the hot path: no general parsing
                return
            kind = message_type(data)
            if kind in (MESSAGE_INITIATION, MESSAGE_RESPONSE):
                if under_load is None:
                    under_load = self.under_load(now)
                self._on_handshake(kind, data, source, now, under_load)
            elif kind == MESSAGE_COOKIE_REPLY:
                self._on_cookie_reply(data, now)
            else:
                self._on_transport(data, source, now)
        except MessageError:
            self.stats.rx_malformed += 1
        except DecryptError:
            self.stats.rx_decrypt_failed += 1
        except HandshakeError:
            self.stats.rx_handshake_rejected += 1
        except ProtocolError:
            self.stats.rx_malformed += 1

    def _on_handshake(
        self, kind: int, data: bytes, source: Endpoint, now: float, under_load: bool
    ) -> None:
        checker = self.cookie_checker
        if checker is None or self.identity is None:
            self.stats.rx_unknown_peer += 1
            return
        if not checker.check_mac1(data):
            self.stats.rx_bad_mac += 1
            return
        if under_load:
            src = _source_key(source)
            if not checker.check_mac2(data, src, now):
                sender = int.from_bytes(data[4:8], "little")
                reply = checker.create_reply(
                    data, sender, src, now, self.random(32), self.random(24)
                )
                self.outbox(reply.encode(), source)
                self.stats.cookie_replies_sent += 1
                return
            if not self.rate_limiter.allow(source[0].encode(), now):
                self.stats.rx_rate_limited += 1
                return
        if kind == MESSAGE_INITIATION:
            self._on_initiation(Initiation.decode(data), len(data), source, now)
        else:
            self._on_response(Response.decode(data), len(data), source, now)

    def _on_initiation(self, msg: Initiation, size: int, source: Endpoint, now: float) -> None:
        assert self.identity is not None
        decoded = noise.open_initiation(self.identity, msg)
        peer = self.peers.get(decoded.remote_static)
        if peer is None:
            self.stats.rx_unknown_peer += 1
            return
        hs = peer.handshake
        pending = hs.local_index if hs.state is State.INITIATION_CREATED else None
        noise.consume_initiation(hs, decoded, now)
        if pending is not None:
            self.drop_index(pending)
        self.stats.handshake_initiations_received += 1
        peer.endpoint = source
        peer.rx_bytes += size
        peer.timers_any_authenticated_packet_traversal(now)
        peer.timers_any_authenticated_packet_received()
        peer.send_response(now)

    def _on_response(self, msg: Response, size: int, source: Endpoint, now: float) -> None:
        assert self.identity is not None
        entry = self.indices.get(msg.receiver)
        if entry is None or entry[1] is not None:
            self.stats.rx_unknown_index += 1
            return
        peer = entry[0]
        noise.consume_response(self.identity, peer.handshake, msg)
        self.stats.handshake_responses_received += 1
        peer.endpoint = source
        peer.rx_bytes += size
        peer.timers_any_authenticated_packet_traversal(now)
        peer.timers_any_authenticated_packet_received()
        keypair = noise.derive_keypair(peer.handshake, now)
        peer.install_initiator_keypair(keypair, now)

    def _on_cookie_reply(self, data: bytes, now: float) -> None:
        reply = CookieReply.decode(data)
        entry = self.indices.get(reply.receiver)
        if entry is None:
            self.stats.rx_unknown_index += 1
            return
        entry[0].cookies.consume_reply(reply, now)
        self.stats.cookie_replies_received += 1

    def _on_transport(self, data: bytes, source: Endpoint, now: float) -> None:
        _, receiver, counter = TRANSPORT_HEADER.unpack_from(data)
        entry = self.indices.get(receiver)
        keypair = entry[1] if entry is not None else None
        if entry is None or keypair is None:
            self.stats.rx_unknown_index += 1
            return
        peer = entry[0]
        if not keypair.can_receive(now):
            self.stats.rx_expired_key += 1
            return
        plaintext = keypair.open(counter, memoryview(data)[TRANSPORT_HEADER_SIZE:])
        if not keypair.replay.check(counter, REJECT_AFTER_MESSAGES):
            self.stats.rx_replayed += 1
            return
        peer.endpoint = source  # roaming: the last authenticated source wins
        peer.rx_bytes += len(data)
        peer.received_transport(keypair, now)
        if not plaintext:
            self.stats.rx_keepalives += 1
            return
        peer.timers_data_received(now)
        inner = inner_source(plaintext)
        if inner is None:
            self.stats.rx_invalid_inner += 1
            return
        packet, src = inner
        if self.allowed_ips.lookup(src) is not peer:
            self.stats.rx_invalid_source += 1
            return
        self._delivered.append(packet)

    def on_datagram_run(
        self, data: bytes | bytearray | memoryview, size: int, source: Endpoint, now: float
    ) -> None:
        """A UDP GRO run from ``source``: datagrams of ``size`` bytes back to back, the
        last possibly shorter. Transport data is decrypted straight into the rows of one
        PacketRows (delivered as a whole); any other message goes through on_datagram."""
        view = memoryview(data)
        total = len(view)
        if size <= 0 or size >= total:
            self.on_datagram(bytes(view), source, now)
            return
        count = -(-total // size)
        rows = PacketRows.empty(count, max(size - TRANSPORT_MIN_SIZE, 0))
        out = memoryview(rows.buf)
        stride = rows.stride
        lengths = rows.lengths
        stats = self.stats
        unpack = TRANSPORT_HEADER.unpack_from
        cached = -1  # receiver index whose (peer, keypair) is at hand
        peer: Peer | None = None
        keypair: Keypair | None = None
        used: list[_Use] = []  # per keypair, in order of use
        uniform = self._open_uniform(view, size, rows, now)
        if uniform is not None:
            used.append(uniform)
        for i in range(count if uniform is None else 0):  # the general way, one by one
            start = i * size
            end = min(start + size, total)
            if end - start < TRANSPORT_MIN_SIZE:
                self.on_datagram(bytes(view[start:end]), source, now)
                continue
            kind, receiver, counter = unpack(view, start)
            if kind != MESSAGE_TRANSPORT:  # type 4 with zero reserved bytes only
                self.on_datagram(bytes(view[start:end]), source, now)
                continue
            if receiver != cached:
                entry = self.indices.get(receiver)
                if entry is None or entry[1] is None:
                    stats.rx_unknown_index += 1
                    continue
                peer, keypair = entry[0], entry[1]
                if not keypair.can_receive(now):
                    stats.rx_expired_key += 1
                    continue
                cached = receiver
            assert peer is not None and keypair is not None
            n = end - start - TRANSPORT_MIN_SIZE
            row = i * stride
            try:
                keypair.open_into(counter, view[start + TRANSPORT_HEADER_SIZE : end],
                                  out[row : row + n])
            except DecryptError:
                stats.rx_decrypt_failed += 1
                out[row : row + n] = bytes(n)  # keep the rows' zero padding invariant
                continue
            if not used or used[-1].keypair is not keypair:
                used.append(_Use(peer, keypair))
            used[-1].rows.append(i)
            used[-1].counters.append(counter)
            lengths[i] = n
        for use in used:
            self._accept(use, rows, size, total, source, now)
        if any(lengths):
            self._delivered.append(rows)

    def _open_uniform(
        self, view: memoryview, size: int, rows: PacketRows, now: float
    ) -> _Use | None:
        """The usual run - transport data to one receiver index of a usable keypair -
        opened with the headers read as columns. None, with nothing done, otherwise."""
        count = len(rows)
        if len(view) - (count - 1) * size < TRANSPORT_MIN_SIZE:
            return None
        # the 16-byte headers as rows of a view (the message type, reserved bytes and
        # receiver index read as one 64-bit word)
        heads = np.ndarray((count, 16), np.uint8, buffer=view, strides=(size, 1))
        kind_and_receiver = heads[:, :8].view("<u8")[:, 0]
        first = int(kind_and_receiver[0])
        if first & 0xFFFFFFFF != MESSAGE_TRANSPORT or (kind_and_receiver != first).any():
            return None
        entry = self.indices.get(first >> 32)
        if entry is None or entry[1] is None or not entry[1].can_receive(now):
            return None  # the general way counts it
        peer, keypair = entry[0], entry[1]
        counters: list[int] = heads[:, 8:16].view("<u8")[:, 0].tolist()
        failed = keypair.open_rows(view, size, counters, rows)
        use = _Use(peer, keypair)
        last = len(view) - (count - 1) * size - TRANSPORT_MIN_SIZE
        rows.lengths[:] = [size - TRANSPORT_MIN_SIZE] * (count - 1) + [last]
        if failed:
            for i in failed:
                rows.lengths[i] = 0
            use.rows = [i for i in range(count) if i not in failed]
            use.counters = [counters[i] for i in use.rows]
        else:
            use.rows = list(range(count))
            use.counters = counters
        self.stats.rx_decrypt_failed += len(failed)
        return use

    def _accept(
        self, use: _Use, rows: PacketRows, size: int, total: int, source: Endpoint, now: float
    ) -> None:
        """Replay check, counters and inner checks for what one keypair opened in a run;
        then what on_datagram does per packet, once (all at the same ``now``)."""
        stats = self.stats
        lengths = rows.lengths
        counters = use.counters
        first = counters[0]
        replay = use.keypair.replay
        if counters == list(range(first, first + len(counters))) and replay.check_run(
            first, len(counters), REJECT_AFTER_MESSAGES
        ):
            accepted = use.rows
        else:  # reordered, repeated or old counters: one at a time
            accepted = []
            for i, counter in zip(use.rows, counters, strict=True):
                if replay.check(counter, REJECT_AFTER_MESSAGES):
                    accepted.append(i)
                else:
                    stats.rx_replayed += 1
                    rows.truncate(i, 0)
        if not accepted:
            return
        peer = use.peer
        peer.endpoint = source  # roaming: the last authenticated source wins
        last = len(rows) - 1
        peer.rx_bytes += len(accepted) * size - (size - (total - last * size)) * (last in accepted)
        packets = [i for i in accepted if lengths[i]] if 0 in lengths else accepted
        stats.rx_keepalives += len(accepted) - len(packets)
        peer.received_transport(use.keypair, now)
        if packets:
            peer.timers_data_received(now)
            self._check_inner(rows, packets, peer)

    def _check_inner(self, rows: PacketRows, packets: list[int], peer: Peer) -> None:
        """Keep the rows that hold a whole IP packet from an address the peer owns, trimmed
        of their padding; empty the others."""
        if len(packets) == len(rows) > 1 and self._inner_uniform(rows, peer):
            return
        self._inner_rows(rows, packets, peer)

    def _inner_uniform(self, rows: PacketRows, peer: Peer) -> bool:
        """The usual run, checked at once: every row holds an IP packet of the first row's
        version, source and (but the last) length, and the peer owns that source. Trims
        the padding and returns True; False, with nothing changed, for anything else."""
        lengths = rows.lengths
        last = len(lengths) - 1
        n = lengths[0]
        stride = rows.stride
        if n < 40 or lengths.count(n) + (lengths[last] != n) != last + 1:
            return False
        head = bytes(rows.buf[:40])
        tail = bytes(rows.buf[last * stride : last * stride + 40])
        n_last = lengths[last]
        if head[0] >> 4 == 4 and tail[0] >> 4 == 4:
            length = int.from_bytes(head[2:4], "big")
            tail_length = int.from_bytes(tail[2:4], "big")
            source, mask = head[12:16], _INNER_MASK4
            ok = length >= 20 and tail_length >= 20 and tail[12:16] == source
        elif head[0] >> 4 == 6 and tail[0] >> 4 == 6:
            length = 40 + int.from_bytes(head[4:6], "big")
            tail_length = 40 + int.from_bytes(tail[4:6], "big")
            source, mask = head[8:24], _INNER_MASK6
            ok = tail[8:24] == source
        else:
            return False
        if not (ok and length <= n and tail_length <= n_last):
            return False
        grid = rows.grid()
        differs = grid[:last, : len(mask)] ^ grid[0, : len(mask)]
        differs &= mask  # version, length and source of every row but the last
        if differs.any() or self.allowed_ips.lookup(source) is not peer:
            return False
        if length < n:  # WireGuard's zero padding: trimmed, and zeroed (the rows' invariant)
            grid[:last, length:n] = 0
            lengths[:last] = [length] * last
        if tail_length < n_last:
            rows.truncate(last, tail_length)
        return True

    def _inner_rows(self, rows: PacketRows, packets: list[int], peer: Peer) -> None:
        """``_check_inner`` row by row: headers read as columns, sources looked up per row."""
        grid = rows.grid()
        head = grid[:, :40] if len(packets) == len(rows) else grid[packets, :40]
        n = np.array([rows.lengths[i] for i in packets], dtype=np.int64)
        version = head[:, 0] >> 4
        v4_length = column16(head, 2)
        v6_length = column16(head, 4) + 40
        v4 = (version == 4) & (n >= 20) & (v4_length >= 20) & (v4_length <= n)
        v6 = (version == 6) & (n >= 40) & (v6_length <= n)
        length = np.where(v4, v4_length, v6_length)
        source = None
        if v4.all() and (head[:, 12:16] == head[0, 12:16]).all():
            source = head[0, 12:16].tobytes()
        elif v6.all() and (head[:, 8:24] == head[0, 8:24]).all():
            source = head[0, 8:24].tobytes()
        if source is not None and self.allowed_ips.lookup(source) is peer:
            # the usual run: all valid, all from the peer; only padding to trim
            for j in np.flatnonzero(length < n).tolist():
                rows.truncate(packets[j], int(length[j]))
            return
        cache: dict[bytes, Peer | None] = {}  # mixed sources or versions: row by row
        for i, row, is4, is6, size, have in zip(
            packets, head, v4.tolist(), v6.tolist(), length.tolist(), n.tolist(), strict=True
        ):
            if not (is4 or is6):
                self.stats.rx_invalid_inner += 1
                rows.truncate(i, 0)
                continue
            src = row[12:16].tobytes() if is4 else row[8:24].tobytes()
            if src not in cache:
                cache[src] = self.allowed_ips.lookup(src)
            if cache[src] is not peer:
                self.stats.rx_invalid_source += 1
                rows.truncate(i, 0)
            elif size < have:
                rows.truncate(i, size)

    # --- input: time --------------------------------------------------------------------

    def on_timers(self, now: float) -> None:
        for peer in list(self.peers.values()):
            peer.expire(now)

    def next_deadline(self) -> float | None:
        times = [t for t in (p.next_deadline() for p in self.peers.values()) if t is not None]
        return min(times) if times else None
