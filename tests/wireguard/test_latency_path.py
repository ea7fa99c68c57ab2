"""The latency path (``Device.send_one``, ``Device.receive_one``) against the general one
(``on_tun_packet``, ``on_datagram``): two identical pairs take the same events, one
through the latency path wherever it answers, the other never; every datagram, delivery,
counter, timer and replay bit must agree after every event."""

from __future__ import annotations

from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st

from vnet.wireguard.constants import REKEY_AFTER_TIME
from vnet.wireguard.device import Device
from vnet.wireguard.peer import Endpoint, Peer

from .harness import A_INNER, B_INNER, EA, EB, Pair, make_pair, packet

Output = list[tuple[bytes, Endpoint]]


def _peer_state(peer: Peer) -> dict[str, Any]:
    simple = (int, float, str, Endpoint, type(None))
    state: dict[str, Any] = {k: v for k, v in vars(peer).items() if isinstance(v, simple)}
    state["staged"] = list(peer.staged)
    for name in ("current", "previous", "next"):
        kp = getattr(peer, name)
        state[name] = None if kp is None else (
            kp.local_index, kp.send_counter, kp.replay.last, list(kp.replay.ring))
    return state


def state(dev: Device) -> tuple[object, ...]:
    return (dev.stats.as_dict(), [_peer_state(p) for p in dev.peers.values()],
            sorted(dev.indices), dev.timer_queue.next_deadline())


def send(dev: Device, data: bytes, now: float, fast: bool) -> Output:
    ready = dev.send_one(data, now) if fast else None
    if ready is None:
        dev.on_tun_packet(data, now)
    out = [(bytes(ready[0]), ready[1])] if ready is not None else []
    return out + dev.datagrams_to_send()


def receive(dev: Device, data: bytes, source: Endpoint, now: float,
            fast: bool) -> tuple[list[bytes], Output]:
    delivered = dev.receive_one(data, source, now) if fast else None
    if delivered is None:
        dev.on_datagram(data, source, now)
    return ([delivered] if delivered else []) + dev.packets_to_deliver(), dev.datagrams_to_send()


# events: (kind, argument): send from A or B (packet size), deliver the oldest datagram
# on the wire, replay or corrupt the last one delivered, pass time (seconds), a datagram
# of garbage, a packet for nobody
events = st.lists(st.one_of(
    st.tuples(st.sampled_from(["send_a", "send_b"]), st.integers(0, 1500)),
    st.tuples(st.sampled_from(["deliver", "replay", "corrupt", "garbage", "nobody"]),
              st.integers(0, 40)),
    st.tuples(st.just("time"), st.sampled_from([0.5, 5.0, 11.0, 60.0, REKEY_AFTER_TIME + 1])),
), max_size=40)


@settings(max_examples=150, deadline=None)
@given(events)
@example([("send_a", 32), ("deliver", 0), ("deliver", 0), ("deliver", 0), ("send_a", 64),
          ("deliver", 0), ("send_b", 64), ("deliver", 0), ("replay", 0), ("corrupt", 3),
          ("time", REKEY_AFTER_TIME + 1), ("send_b", 64), ("deliver", 0), ("deliver", 0)])
def test_the_latency_path_does_what_the_general_path_does(
    steps: list[tuple[str, Any]],
) -> None:
    pairs = (make_pair(), make_pair())  # the same seed: identical devices
    wires: tuple[list[tuple[bytes, Endpoint, Endpoint]], ...] = ([], [])
    last: list[tuple[bytes, Endpoint, Endpoint] | None] = [None, None]
    for kind, arg in steps:
        results = []
        for side, (p, wire) in enumerate(zip(pairs, wires, strict=True)):
            fast = side == 0
            result: object = None
            if kind in ("send_a", "send_b"):
                dev, src, dst, me = ((p.a, A_INNER, B_INNER, EA) if kind == "send_a"
                                     else (p.b, B_INNER, A_INNER, EB))
                out = send(dev, packet(src, dst, seq=arg, size=arg), p.now, fast)
                wire.extend([(d, me, to) for d, to in out])
                result = out
            elif kind == "nobody":
                result = send(p.a, packet(A_INNER, "198.19.9.9", size=arg), p.now, fast)
            elif kind in ("deliver", "replay", "corrupt", "garbage"):
                if kind == "deliver" and wire:
                    item: tuple[bytes, Endpoint, Endpoint] | None = wire.pop(0)
                    last[side] = item
                elif kind == "garbage":
                    item = (bytes([4, 0, 0, 0]) + bytes(arg), EA, EB)
                else:
                    item = last[side]
                    if item is not None and kind == "corrupt":
                        flipped = bytearray(item[0])
                        flipped[arg % len(flipped)] ^= 0x40
                        item = (bytes(flipped), item[1], item[2])
                if item is not None:
                    data, source, to = item
                    dev = p.b if to == EB else p.a
                    delivered, out = receive(dev, data, source, p.now, fast)
                    reply = EB if dev is p.b else EA
                    wire.extend([(d, reply, dest) for d, dest in out])
                    result = (delivered, out)
            elif kind == "time":
                p.now += arg
                p.a.on_timers(p.now)
                p.b.on_timers(p.now)
                me_a = p.a.datagrams_to_send()
                me_b = p.b.datagrams_to_send()
                wire.extend([(d, EA, to) for d, to in me_a] + [(d, EB, to) for d, to in me_b])
                result = (me_a, me_b)
            results.append((result, state(p.a), state(p.b)))
        assert results[0] == results[1], (kind, arg)


def _session(p: Pair) -> bytes:
    """A session up both ways; returns a transport message from A to B."""
    p.send_a(seq=1)
    p.settle()
    p.send_b(seq=2)
    p.settle()
    ready = p.a.send_one(packet(A_INNER, B_INNER, seq=3), p.now)
    assert ready is not None and ready[1] == EB
    return ready[0]


def test_what_the_latency_path_takes_and_leaves() -> None:
    p = make_pair()
    assert p.a.send_one(packet(A_INNER, B_INNER), p.now) is None  # no session yet
    assert p.a.send_one(b"", p.now) is None and p.a.send_one(b"\x45", p.now) is None
    message = _session(p)
    assert p.b.receive_one(message, EA, p.now) == packet(A_INNER, B_INNER, seq=3)
    assert p.b.receive_one(message, EA, p.now) == b""  # replayed: counted, ended here
    assert p.b.stats.rx_replayed == 1
    forged = message[:-1] + bytes([message[-1] ^ 1])
    assert p.b.receive_one(forged, EA, p.now) == b""
    assert p.b.stats.rx_decrypt_failed == 1
    # left to the general path: handshakes, keepalives, unknown indices, aging keys,
    # packets to nobody, a sender with packets staged
    assert p.b.receive_one(bytes([1, 0, 0, 0]) + bytes(144), EA, p.now) is None
    assert p.b.receive_one(bytes([4, 0, 0, 0]) + bytes(40), EA, p.now) is None
    p.peer_ab.send_keepalive(p.now)
    keepalive = p.a.datagrams_to_send()[0][0]
    assert p.b.receive_one(keepalive, EA, p.now) is None
    assert p.a.send_one(packet(A_INNER, "198.19.9.9"), p.now) is None
    p.peer_ab.staged.append(packet(A_INNER, B_INNER, seq=9))
    assert p.a.send_one(packet(A_INNER, B_INNER, seq=10), p.now) is None
    p.peer_ab.staged.clear()
    p.now += REKEY_AFTER_TIME
    assert p.a.send_one(packet(A_INNER, B_INNER, seq=11), p.now) is None
    again = p.a.datagrams_to_send()
    assert again == []  # send_one declined: nothing was done
