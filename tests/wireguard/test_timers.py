"""The device's timer queue: the loop's next deadline is never late, and a timer event
looks only at the peers that are due, whatever the number of peers."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from vnet.wireguard import timers
from vnet.wireguard.device import Device
from vnet.wireguard.peer import Peer


def device_with(n: int) -> tuple[Device, list[Peer]]:
    device = Device(random=lambda k: bytes(range(k)))
    peers = [device.add_peer(i.to_bytes(32, "big")) for i in range(1, n + 1)]
    return device, peers


def earliest(device: Device) -> float | None:
    """The reference: the earliest pending timer of any peer, by looking at all."""
    times = [t for p in device.peers.values() if (t := p.next_deadline()) is not None]
    return min(times) if times else None


class Recorder:
    """Stands in for ``Peer.expire``: notes the call and stops the due timers."""

    def __init__(self, peer: Peer, calls: list[Peer]) -> None:
        self.peer, self.calls = peer, calls

    def __call__(self, now: float) -> None:
        self.calls.append(self.peer)
        for name in ("t_retransmit", "t_send_keepalive", "t_new_handshake", "t_zero_keys"):
            when = getattr(self.peer, name)
            if when is not None and when <= now:
                setattr(self.peer, name, None)


# (operation, peer, seconds): arm a timer through its §6 hook, stop one, remove a peer,
# or let time pass and run the due timers
operations = st.lists(
    st.tuples(
        st.sampled_from(["data_sent", "data_received", "initiated", "session", "stop", "remove"]),
        st.integers(0, 7),
        st.floats(0, 30),
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(operations)
def test_the_next_deadline_is_never_late_and_every_due_peer_runs_once(
    ops: list[tuple[str, int, float]],
) -> None:
    device, peers = device_with(8)
    calls: list[Peer] = []
    for peer in peers:
        peer.expire = Recorder(peer, calls)  # type: ignore[method-assign]
    now = 0.0
    for op, i, seconds in ops:
        peer = peers[i]
        if op == "data_sent":
            timers.data_sent(peer, now)
        elif op == "data_received":
            timers.data_received(peer, now)
        elif op == "initiated":
            timers.handshake_initiated(peer, now)
        elif op == "session":
            timers.session_derived(peer, now)
        elif op == "stop":
            peer.t_retransmit = peer.t_new_handshake = None
        elif op == "remove":
            device.remove_peer(peer.public_key)
        reference = earliest(device)
        queued = device.next_deadline()
        if reference is not None:
            assert queued is not None and queued <= reference  # early at worst
        now += seconds
        due = [p for p in device.peers.values() if (t := p.next_deadline()) and t <= now]
        calls.clear()
        device.on_timers(now)
        # every due peer once; a peer whose timer stopped may get one look besides
        assert len(set(map(id, calls))) == len(calls)
        assert {id(p) for p in due} <= set(map(id, calls))


def test_a_timer_event_looks_only_at_the_due_peers() -> None:
    device, peers = device_with(10_000)
    for n, peer in enumerate(peers):
        timers.session_derived(peer, float(n))  # zero keys at n + 540 s
    calls: list[Peer] = []
    for peer in peers:
        peer.expire = Recorder(peer, calls)  # type: ignore[method-assign]
    first = device.next_deadline()
    assert first is not None and first == peers[0].t_zero_keys
    device.on_timers(first + 2.5)
    assert calls == peers[:3]
    assert device.next_deadline() == peers[3].t_zero_keys


def test_a_stopped_timer_costs_one_look_then_the_real_deadline() -> None:
    device, (peer,) = device_with(1)
    timers.data_sent(peer, 0.0)  # new handshake at 15 s + jitter
    timers.handshake_initiated(peer, 0.0)  # retransmit at 5 s + jitter: earlier
    retransmit, new_handshake = peer.t_retransmit, peer.t_new_handshake
    assert retransmit is not None and new_handshake is not None
    assert device.next_deadline() == retransmit
    timers.handshake_complete(peer, 1.0)  # the retransmit stops
    device.on_timers(retransmit)  # a look that finds nothing due
    assert peer.t_new_handshake == new_handshake
    assert device.next_deadline() == new_handshake


def test_a_removed_peer_keeps_no_deadline_and_no_secret() -> None:
    device, (peer, other) = device_with(2)
    device.set_private_key(bytes(range(1, 33)))
    peer.preshared_key = bytes(range(32))
    assert peer.handshake.precomputed_static_static != bytes(32)
    timers.session_derived(peer, 0.0)
    timers.session_derived(other, 10.0)
    device.remove_peer(peer.public_key)
    assert device.next_deadline() == other.t_zero_keys
    assert peer.handshake.precomputed_static_static == bytes(32)
    assert peer.preshared_key == bytes(32)
