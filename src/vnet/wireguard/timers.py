"""The timers of whitepaper §6, per peer (wireguard-go's timers.go, itself a port of the
kernel's timers.c).

Timers are absolute deadlines on the caller's monotonic clock, None when not pending;
the hooks below (``Peer.timers_*``) set and clear them as packets and handshakes pass,
``expire`` runs the due ones and ``next_deadline`` tells the device when to call it
again:

- retransmit: a handshake initiation unanswered for REKEY_TIMEOUT (+ jitter) is sent
  again, up to MAX_TIMER_HANDSHAKES times, then staged packets are dropped;
- send keepalive: data received and nothing sent back for KEEPALIVE_TIMEOUT;
- new handshake: data sent and nothing received for KEEPALIVE_TIMEOUT + REKEY_TIMEOUT;
- zero keys: no new session for 3 x REJECT_AFTER_TIME: every key is forgotten;
- persistent keepalive: the user's interval passed without an authenticated packet.

The device keeps its peers in a ``TimerQueue`` by their earliest deadline, so that the
loop's question "when next?" costs the same with 10,000 peers as with one.
"""

from __future__ import annotations

import heapq
import itertools
from typing import TYPE_CHECKING

from vnet.wireguard.constants import (
    KEEPALIVE_TIMEOUT,
    MAX_TIMER_HANDSHAKES,
    REJECT_AFTER_TIME,
    REKEY_TIMEOUT,
)

if TYPE_CHECKING:
    from vnet.wireguard.peer import Peer


class TimerQueue:
    """Peers by their earliest deadline (a heap). A deadline enters only when it is
    earlier than the peer's queued one (``Peer.t_queued``): every pending timer of a peer
    is at or after its queued time. Timers that stopped or moved later leave their entry
    behind; when it comes due the peer is looked at once and queued again at its real
    next deadline. So ``next_deadline`` may be early, never late."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Peer]] = []
        self._order = itertools.count()  # ties never compare peers

    def arm(self, peer: Peer, when: float) -> None:
        queued = peer.t_queued
        if queued is None or when < queued:
            peer.t_queued = when
            heapq.heappush(self._heap, (when, next(self._order), peer))

    def requeue(self, peer: Peer) -> None:
        """After ``peer``'s timers ran: queue it at its next deadline, if any."""
        when = next_deadline(peer)
        if when is not None:
            self.arm(peer, when)

    def next_deadline(self) -> float | None:
        heap = self._heap
        while heap and heap[0][2].t_queued != heap[0][0]:
            heapq.heappop(heap)  # superseded by an earlier entry of the same peer
        return heap[0][0] if heap else None

    def due(self, now: float) -> list[Peer]:
        """The peers whose queued deadline is at or before ``now``, taken out."""
        heap = self._heap
        out = []
        while heap and heap[0][0] <= now:
            when, _, peer = heapq.heappop(heap)
            if peer.t_queued == when:
                peer.t_queued = None
                out.append(peer)
        return out


def _arm(peer: Peer, when: float) -> float:
    peer.device.timer_queue.arm(peer, when)
    return when


def _jitter(peer: Peer) -> float:
    return peer.device.jitter.random() * 0.333


def data_sent(peer: Peer, now: float) -> None:
    if peer.t_new_handshake is None:
        peer.t_new_handshake = _arm(peer, now + KEEPALIVE_TIMEOUT + REKEY_TIMEOUT + _jitter(peer))


def data_received(peer: Peer, now: float) -> None:
    if peer.t_send_keepalive is None:
        peer.t_send_keepalive = _arm(peer, now + KEEPALIVE_TIMEOUT)
    else:
        peer.need_another_keepalive = True


def any_authenticated_packet_sent(peer: Peer) -> None:
    peer.t_send_keepalive = None


def any_authenticated_packet_received(peer: Peer) -> None:
    peer.t_new_handshake = None


def handshake_initiated(peer: Peer, now: float) -> None:
    peer.t_retransmit = _arm(peer, now + REKEY_TIMEOUT + _jitter(peer))


def handshake_complete(peer: Peer, now: float) -> None:
    peer.t_retransmit = None
    peer.handshake_attempts = 0
    peer.sent_lastminute_handshake = False
    peer.last_handshake_unix = peer.device.unix_time(now)


def session_derived(peer: Peer, now: float) -> None:
    peer.t_zero_keys = _arm(peer, now + REJECT_AFTER_TIME * 3)


def any_authenticated_packet_traversal(peer: Peer, now: float) -> None:
    if peer.persistent_keepalive > 0:
        peer.t_persistent = _arm(peer, now + peer.persistent_keepalive)


def next_deadline(peer: Peer) -> float | None:
    times = [
        t
        for t in (
            peer.t_retransmit,
            peer.t_send_keepalive,
            peer.t_new_handshake,
            peer.t_zero_keys,
            peer.t_persistent,
        )
        if t is not None
    ]
    return min(times) if times else None


def expire(peer: Peer, now: float) -> None:
    """Run ``peer``'s due timers (the device queues it again afterwards)."""
    if peer.t_retransmit is not None and now >= peer.t_retransmit:
        peer.t_retransmit = None
        _retransmit(peer, now)
    if peer.t_send_keepalive is not None and now >= peer.t_send_keepalive:
        peer.t_send_keepalive = None
        peer.send_keepalive(now)
        if peer.need_another_keepalive:
            peer.need_another_keepalive = False
            peer.t_send_keepalive = now + KEEPALIVE_TIMEOUT
    if peer.t_new_handshake is not None and now >= peer.t_new_handshake:
        peer.t_new_handshake = None
        peer.send_initiation(now, retry=False)
    if peer.t_zero_keys is not None and now >= peer.t_zero_keys:
        peer.t_zero_keys = None
        peer.zero_all()
    if peer.t_persistent is not None and now >= peer.t_persistent:
        peer.t_persistent = None
        if peer.persistent_keepalive > 0:
            peer.send_keepalive(now)


def _retransmit(peer: Peer, now: float) -> None:
    if peer.handshake_attempts > MAX_TIMER_HANDSHAKES:
        # give up: drop what waited for a session, and forget partial state later
        peer.t_send_keepalive = None
        peer.staged.clear()
        if peer.t_zero_keys is None:
            peer.t_zero_keys = now + REJECT_AFTER_TIME * 3
        peer.device.stats.handshakes_abandoned += 1
        return
    peer.handshake_attempts += 1
    peer.send_initiation(now, retry=True)
