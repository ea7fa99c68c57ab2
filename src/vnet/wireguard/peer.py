"""A peer (wireguard-go's peer.go): its keypairs, handshake, staged packets, endpoint and
counters; the §6 timer rules it calls are in timers.py."""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, NamedTuple

from vnet.packet.rows import PacketRows
from vnet.wireguard import crypto, noise, timers
from vnet.wireguard.constants import (
    KEEPALIVE_TIMEOUT,
    MAX_STAGED_PACKETS,
    REJECT_AFTER_MESSAGES,
    REJECT_AFTER_TIME,
    REKEY_AFTER_MESSAGES,
    REKEY_TIMEOUT,
)
from vnet.wireguard.cookie import CookieGenerator
from vnet.wireguard.keys import Keypair
from vnet.wireguard.messages import padding, transport_header
from vnet.wireguard.noise import Handshake, State

if TYPE_CHECKING:
    from vnet.wireguard.device import Device



class Endpoint(NamedTuple):
    """Where a peer is, and which address of ours it last wrote to (``local``, on the
    interface ``ifindex``): replies leave from that address, WireGuard's sticky source,
    so that a multi-homed host answers from the address the peer knows. An empty
    ``local`` leaves the source to the kernel (an endpoint set by configuration)."""

    host: str
    port: int
    local: str = ""
    ifindex: int = 0

ZERO_KEY = bytes(32)


class Peer:
    """One remote WireGuard peer of a Device.

    In: packets to seal (``send_packet``, ``stage`` + ``send_staged``, ``send_rows`` for
    the segments of one super-packet), and from the device's receive path the handshake
    and key events (``send_response``, ``install_initiator_keypair``,
    ``received_transport``). Out: datagrams put in the device's outbox for
    ``endpoint``. Timers it asks for (timers.py): retransmit, send keepalive, new
    handshake, zero keys, persistent keepalive; ``next_deadline`` is the earliest.
    """

    def __init__(self, device: Device, public_key: bytes) -> None:
        self.device = device
        self.public_key = public_key
        self.handshake = Handshake(remote_static=public_key)
        self.handshake.precompute(device.identity)
        self.cookies = CookieGenerator(public_key)
        self.endpoint: Endpoint | None = None
        self.persistent_keepalive = 0
        self.previous: Keypair | None = None
        self.current: Keypair | None = None
        self.next: Keypair | None = None
        self.staged: deque[bytes] = deque()
        # timers (timers.py): monotonic deadlines, None when not pending
        self.t_retransmit: float | None = None
        self.t_send_keepalive: float | None = None
        self.t_new_handshake: float | None = None
        self.t_zero_keys: float | None = None
        self.t_persistent: float | None = None
        self.t_queued: float | None = None  # its entry in the device's TimerQueue
        self.handshake_attempts = 0
        self.need_another_keepalive = False
        self.sent_lastminute_handshake = False
        # counters
        self.rx_bytes = 0
        self.tx_bytes = 0
        self.last_handshake_unix: float | None = None

    @property
    def preshared_key(self) -> bytes:
        return self.handshake.preshared_key

    @preshared_key.setter
    def preshared_key(self, key: bytes) -> None:
        self.handshake.preshared_key = key

    def __repr__(self) -> str:
        from base64 import b64encode

        return f"peer({b64encode(self.public_key).decode()[:8]}…)"

    # --- sending -------------------------------------------------------------

    def _transmit(self, datagram: bytes) -> bool:
        if self.endpoint is None:
            return False
        self.device.outbox(datagram, self.endpoint)
        self.tx_bytes += len(datagram)
        return True

    def stage(self, packet: bytes) -> None:
        if len(self.staged) >= MAX_STAGED_PACKETS:
            self.staged.popleft()
            self.device.stats.tx_staged_dropped += 1
        self.staged.append(packet)

    def send_keepalive(self, now: float) -> None:
        if not self.staged:
            self.staged.append(b"")
        self.send_staged(now)

    def send_packet(self, packet: bytes, now: float) -> None:
        """One packet from the TUN: sealed and sent at once while a session is up and
        nothing waits before it (the usual case, kept short for latency); staged
        otherwise."""
        kp = self.current
        if self.staged or kp is None or self.endpoint is None or not kp.can_send(now):
            self.stage(packet)
            self.send_staged(now)
            return
        self._transmit(self._seal(kp, packet))
        self.sent_transport(kp, now, bool(packet))

    def send_now(self, packet: bytes, now: float) -> tuple[bytes, Endpoint] | None:
        """``send_packet``'s usual case, for the latency path: the packet's transport
        message and its endpoint, counted, with the §6 hooks of data sent run. None, with
        nothing done, unless a session is up, nothing is staged and the keypair is short
        of its rekey limits (so that nothing else is queued: no initiation)."""
        kp = self.current
        endpoint = self.endpoint
        if kp is None or endpoint is None or self.staged:
            return None
        counter = kp.send_counter
        age = now - kp.created
        if counter >= REKEY_AFTER_MESSAGES or age >= REJECT_AFTER_TIME or (
            age >= self.device.rekey_after_time
        ):
            return None
        kp.send_counter = counter + 1
        datagram = kp.seal_message(counter, packet, self.device.mtu)
        self.tx_bytes += len(datagram)
        self.sent_transport(kp, now, True)
        return datagram, endpoint

    def _seal(self, kp: Keypair, packet: bytes) -> bytes:
        """One transport message (§5.4.6): the packet padded, sealed, framed."""
        counter = kp.next_counter()
        pad = padding(len(packet), self.device.mtu)
        plaintext = packet + bytes(pad) if pad else packet
        return transport_header(kp.remote_index, counter) + kp.seal(counter, plaintext)

    def send_staged(self, now: float) -> None:
        if not self.staged:
            return
        kp = self.current
        if kp is None or not kp.can_send(now) or self.endpoint is None:
            self.send_initiation(now, retry=False)
            return
        data_sent = False
        staged = self.staged
        while staged:
            if kp.send_counter >= REJECT_AFTER_MESSAGES:
                self.send_initiation(now, retry=False)
                return
            packet = staged.popleft()
            self._transmit(self._seal(kp, packet))
            if packet:
                data_sent = True
        self.sent_transport(kp, now, data_sent)

    def send_rows(self, rows: PacketRows, now: float) -> None:
        """The segments of one super-packet, sealed from their rows (padding in place)
        into one buffer of equal datagrams, the last possibly shorter: one GSO send."""
        kp = self.current
        lengths = rows.lengths
        count = len(lengths)
        full = lengths[0] if lengths else 0
        padded = full + padding(full, self.device.mtu)
        last = lengths[-1] + padding(lengths[-1], self.device.mtu) if lengths else 0
        if (
            self.staged
            or kp is None
            or self.endpoint is None
            or not kp.can_send(now)
            or kp.send_counter + count > REJECT_AFTER_MESSAGES
            or not 0 < last <= padded <= rows.stride
            or lengths.count(full) + (lengths[-1] != full) != count  # all but the last equal
        ):
            for packet in rows.packets():  # the general path: one by one, or staged
                self.stage(packet)
            self.send_staged(now)
            return
        self._send_run(kp, *kp.seal_run(rows, padded, last), now)

    def send_super(self, packet: memoryview, v4: bool, mss: int, now: float) -> bool:
        """A TSO super-packet (``mss`` payload bytes per segment) split, padded and sealed
        in one call while a session is up and nothing waits before it. False, nothing
        done, otherwise or when the call declines it: the caller then splits it into rows
        (``send_rows``)."""
        kp = self.current
        if self.staged or kp is None or self.endpoint is None or not kp.can_send(now):
            return False
        done = kp.seal_tso(packet, v4, mss, self.device.mtu)
        if done is None:
            return False
        self._send_run(kp, *done, now)
        return True

    def _send_run(self, kp: Keypair, out: bytearray, size: int, now: float) -> None:
        """A buffer of sealed data messages (``size`` bytes apart) to the endpoint: one
        GSO send, counted, and the §6 hooks of data sent."""
        assert self.endpoint is not None
        self.device.outbox_run(out, size, self.endpoint)
        self.tx_bytes += len(out)
        self.sent_transport(kp, now, True)

    def sent_transport(self, kp: Keypair, now: float, data: bool) -> None:
        """After transport messages left with ``kp`` (``data``: not only keepalives): the
        §6 hooks of an authenticated packet sent, in one call, and the initiator's rekey
        when the keypair grows old."""
        self.timers_any_authenticated_packet_traversal(now)
        self.timers_any_authenticated_packet_sent()
        if data:
            self.timers_data_sent(now)
        age = now - kp.created
        if kp.is_initiator and (
            kp.send_counter > REKEY_AFTER_MESSAGES or age > self.device.rekey_after_time
        ):
            self.send_initiation(now, retry=False)

    def received_transport(self, keypair: Keypair, now: float) -> None:
        """After transport messages with ``keypair`` authenticated: key confirmation, the
        §6 hooks of an authenticated packet received, and the initiator's last-minute
        rekey, in one call."""
        if keypair is self.next:
            self.received_with_keypair(keypair, now)
        self.timers_any_authenticated_packet_traversal(now)
        self.timers_any_authenticated_packet_received()
        self.keep_key_fresh_receiving(now)

    def keep_key_fresh_receiving(self, now: float) -> None:
        """Near the end of an initiator's session, rekey once before it expires."""
        kp = self.current
        if (
            kp is not None
            and kp.is_initiator
            and not self.sent_lastminute_handshake
            and now - kp.created > REJECT_AFTER_TIME - KEEPALIVE_TIMEOUT - REKEY_TIMEOUT
        ):
            self.sent_lastminute_handshake = True
            self.send_initiation(now, retry=False)

    def send_initiation(self, now: float, retry: bool) -> None:
        if not retry:
            self.handshake_attempts = 0
        hs = self.handshake
        if hs.last_sent is not None and now - hs.last_sent < REKEY_TIMEOUT:
            return  # at most one initiation per REKEY_TIMEOUT
        device = self.device
        if device.identity is None or self.endpoint is None:
            return
        if hs.precomputed_static_static == ZERO_KEY:
            return
        hs.last_sent = now
        if hs.state is State.INITIATION_CREATED:
            device.drop_index(hs.local_index)
        index = device.new_index(self, None)
        ephemeral = crypto.generate_private_key(device.random(32))
        msg = noise.create_initiation(device.identity, hs, index, ephemeral, device.unix_time(now))
        self.timers_any_authenticated_packet_traversal(now)
        self.timers_any_authenticated_packet_sent()
        self._transmit(self.cookies.add_macs(msg.encode(), now))
        device.stats.handshake_initiations_sent += 1
        self.timers_handshake_initiated(now)

    def send_response(self, now: float) -> None:
        device = self.device
        hs = self.handshake
        index = device.new_index(self, None)
        ephemeral = crypto.generate_private_key(device.random(32))
        msg = noise.create_response(hs, index, ephemeral)
        keypair = noise.derive_keypair(hs, now)
        device.bind_index(index, self, keypair)
        # responder: the new keypair waits in `next` until the initiator confirms it
        if self.next is not None:
            device.drop_index(self.next.local_index)
        if self.previous is not None:
            device.drop_index(self.previous.local_index)
        self.next = keypair
        self.previous = None
        self.timers_session_derived(now)
        hs.last_sent = now
        self.timers_any_authenticated_packet_traversal(now)
        self.timers_any_authenticated_packet_sent()
        self._transmit(self.cookies.add_macs(msg.encode(), now))

    def install_initiator_keypair(self, keypair: Keypair, now: float) -> None:
        device = self.device
        device.bind_index(keypair.local_index, self, keypair)
        if self.previous is not None:
            device.drop_index(self.previous.local_index)
        if self.next is not None:
            self.previous = self.next
            self.next = None
            if self.current is not None:
                device.drop_index(self.current.local_index)
        else:
            self.previous = self.current
        self.current = keypair
        self.timers_session_derived(now)
        self.timers_handshake_complete(now)
        self.send_keepalive(now)  # confirms the session to the responder

    def received_with_keypair(self, keypair: Keypair, now: float) -> None:
        """First data on `next` is the key confirmation: rotate it in."""
        if keypair is not self.next:
            return
        if self.previous is not None:
            self.device.drop_index(self.previous.local_index)
        self.previous = self.current
        self.current = keypair
        self.next = None
        self.timers_handshake_complete(now)
        self.send_staged(now)

    def zero_all(self) -> None:
        """Forget every key and the handshake; drop staged packets."""
        for kp in (self.previous, self.current, self.next):
            if kp is not None:
                self.device.drop_index(kp.local_index)
        self.previous = self.current = self.next = None
        if self.handshake.state is not State.ZEROED:
            self.device.drop_index(self.handshake.local_index)
        self.handshake.zero()
        self.staged.clear()

    def set_persistent_keepalive(self, interval: int, now: float) -> None:
        self.persistent_keepalive = interval
        if interval > 0:
            self.send_keepalive(now)  # as wireguard-go: open the path at once
        else:
            self.t_persistent = None

    # --- timers (whitepaper §6): the hooks and rules live in timers.py ------------------

    timers_data_sent = timers.data_sent
    timers_data_received = timers.data_received
    timers_any_authenticated_packet_sent = timers.any_authenticated_packet_sent
    timers_any_authenticated_packet_received = timers.any_authenticated_packet_received
    timers_any_authenticated_packet_traversal = timers.any_authenticated_packet_traversal
    timers_handshake_initiated = timers.handshake_initiated
    timers_handshake_complete = timers.handshake_complete
    timers_session_derived = timers.session_derived
    next_deadline = timers.next_deadline
    expire = timers.expire
