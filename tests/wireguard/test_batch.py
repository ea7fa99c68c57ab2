"""The batch data path: TSO segments sealed into one GSO run, GRO runs opened into rows.

Each batch result is checked against the one-packet-at-a-time path of an identical pair
(same seed: same keys, indices and counters), which the rest of the suite covers.
"""

from __future__ import annotations

import contextlib
import dataclasses

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.packet.builders import TS_OPTION, stream
from vnet.errors import PacketError
from vnet.packet import gro, gso
from vnet.packet.rows import PacketRows
from vnet.packet.virtio import VirtioNetHdr
from vnet.wireguard import inner
from vnet.wireguard.allowedips import parse_prefix
from vnet.wireguard.constants import MESSAGE_TRANSPORT, PADDING_MULTIPLE

from .harness import A_INNER, B_INNER, EA, EB, Pair, make_pair, packet

MTU = 1420


def session(seed: int = 1) -> Pair:
    p = make_pair(seed)
    p.a.allowed_ips.insert(parse_prefix("fd00:19::2/128"), p.peer_ab)
    p.b.allowed_ips.insert(parse_prefix("fd00:19::1/128"), p.peer_ba)
    p.send_a()
    p.settle()
    p.delivered_b.clear()
    return p


def segments(v6: bool, mss: int, count: int, psh: bool = True) -> tuple[PacketRows, list[bytes]]:
    """A TSO super-packet's rows as the daemon makes them, and the segments they hold."""
    original = stream(v6, mss, mss * count, psh, 77, 5, TS_OPTION)
    if count == 1:
        return PacketRows.from_packets(original, -(-len(original[0]) // 16) * 16), original
    vnet, super_packet = gro.coalesce(original)[0]
    return gso.split_rows(VirtioNetHdr.decode(vnet)[0], super_packet, PADDING_MULTIPLE), original


def run_of(p: Pair, rows: PacketRows) -> tuple[bytes | bytearray, int]:
    p.a.on_tun_segments(rows, p.now)
    runs = p.a.runs_to_send()
    assert len(runs) == 1
    data, size, endpoint = runs[0]
    assert endpoint == EB
    return data, size


def cut(data: bytes | bytearray, size: int) -> list[bytes]:
    return [bytes(data[i : i + size]) for i in range(0, len(data), size)]


@settings(max_examples=40, deadline=None)
@given(v6=st.booleans(), mss=st.integers(1, MTU - 72), count=st.integers(1, 44))
def test_a_sealed_run_equals_packets_sealed_one_by_one(v6: bool, mss: int, count: int) -> None:
    batch, one = session(), session()
    rows, original = segments(v6, mss, count)
    data, size = run_of(batch, rows)
    one.a.on_tun_packets(original, one.now)
    singles = [d for d, _ in one.a.datagrams_to_send()]
    assert cut(data, size) == singles
    assert batch.peer_ab.tx_bytes == one.peer_ab.tx_bytes


@settings(max_examples=40, deadline=None)
@given(v6=st.booleans(), mss=st.integers(1, MTU - 72), count=st.integers(2, 44))
def test_a_super_packet_sealed_whole_equals_its_rows_sealed(v6: bool, mss: int,
                                                           count: int) -> None:
    """``on_tun_super`` (split and sealed in one call) sends what ``on_tun_segments``
    sends for the same super-packet's rows, with the same counters used."""
    whole, rows_pair = session(), session()
    original = stream(v6, mss, mss * count, True, 77, 5, TS_OPTION)
    vnet, super_packet = gro.coalesce(original)[0]
    hdr = VirtioNetHdr.decode(vnet)[0]
    assert whole.a.on_tun_super(memoryview(super_packet), not v6, hdr.gso_size, whole.now)
    [(data, size, endpoint)] = whole.a.runs_to_send()
    assert endpoint == EB
    rows_data, rows_size = run_of(rows_pair, gso.split_rows(hdr, super_packet, PADDING_MULTIPLE))
    assert (bytes(data), size) == (bytes(rows_data), rows_size)
    assert whole.peer_ab.current is not None and rows_pair.peer_ab.current is not None
    assert whole.peer_ab.current.send_counter == rows_pair.peer_ab.current.send_counter
    assert whole.peer_ab.tx_bytes == rows_pair.peer_ab.tx_bytes


def test_a_super_packet_is_left_to_the_rows_path_when_it_cannot_go_whole() -> None:
    """No session, no route, or a segment longer than the MTU: ``on_tun_super`` does
    nothing and says so; the caller's rows path stages, counts or names it."""
    original = stream(False, 1000, 3000, True, 77, 5, TS_OPTION)
    vnet, super_packet = gro.coalesce(original)[0]
    mss = VirtioNetHdr.decode(vnet)[0].gso_size
    fresh = make_pair(1)  # no session yet
    fresh.a.allowed_ips.insert(parse_prefix("fd00:19::2/128"), fresh.peer_ab)
    assert not fresh.a.on_tun_super(memoryview(super_packet), True, mss, fresh.now)
    p = session()
    assert p.peer_ab.current is not None
    counter = p.peer_ab.current.send_counter
    assert not p.a.on_tun_super(memoryview(super_packet), True, MTU, p.now)  # segment > MTU
    p.a.allowed_ips.remove_owner(p.peer_ab)
    assert not p.a.on_tun_super(memoryview(super_packet), True, mss, p.now)  # no route
    assert p.a.runs_to_send() == [] and p.peer_ab.current.send_counter == counter


@settings(max_examples=40, deadline=None)
@given(v6=st.booleans(), mss=st.integers(1, MTU - 72), count=st.integers(2, 44))
def test_an_opened_run_equals_datagrams_opened_one_by_one(v6: bool, mss: int, count: int) -> None:
    batch, one = session(), session()
    rows, original = segments(v6, mss, count)
    data, size = run_of(batch, rows)
    run_of(one, rows)
    batch.b.on_datagram_run(data, size, EA, batch.now)
    for datagram in cut(data, size):
        one.b.on_datagram(datagram, EA, one.now)
    delivered = batch.b.deliveries()
    assert len(delivered) == 1 and isinstance(delivered[0], PacketRows)
    assert delivered[0].packets() == original == one.b.packets_to_deliver()
    assert batch.b.stats == one.b.stats
    assert batch.peer_ba.rx_bytes == one.peer_ba.rx_bytes
    # and the decrypted rows coalesce back into the super-packet they came from
    merged = gro.coalesce_rows(delivered[0])
    assert [seg for v, sp in merged for seg in gso.split(VirtioNetHdr.decode(v)[0], sp)] == original


def test_bad_datagrams_in_a_run_are_dropped_alone() -> None:
    p = session()
    rows, original = segments(False, 1000, 6, psh=False)
    data, size = run_of(p, rows)
    dgrams = cut(data, size)
    tampered = bytearray(dgrams[1])
    tampered[40] ^= 1
    unknown = bytearray(dgrams[3])
    unknown[4:8] = b"\xff\xff\xff\xff"  # receiver index nobody has
    keepalive_counter = int.from_bytes(dgrams[-1][8:16], "little") + 1
    p.peer_ab.current.send_counter = keepalive_counter  # type: ignore[union-attr]
    p.peer_ab.send_keepalive(p.now)
    keepalive = p.a.datagrams_to_send()[0][0]
    run = [dgrams[0], bytes(tampered), dgrams[2], bytes(unknown), dgrams[2], dgrams[4], keepalive]
    p.b.on_datagram_run(b"".join(run), size, EA, p.now)
    stats = p.b.stats
    assert (stats.rx_decrypt_failed, stats.rx_unknown_index, stats.rx_replayed) == (1, 1, 1)
    assert stats.rx_keepalives == 1
    assert p.b.packets_to_deliver() == [original[0], original[2], original[4]]


def test_inner_packets_are_checked_per_row() -> None:
    p = session()
    stranger = packet("198.19.9.9", "198.19.0.2", size=1000)  # not A's address
    own = packet("198.19.0.1", "198.19.0.2", size=1000)
    overlong = bytearray(own)
    overlong[2:4] = (1100).to_bytes(2, "big")  # an IPv4 length past the padded plaintext
    rows = PacketRows.from_packets([own, stranger, overlong, own], 1040)
    # one run regardless of content: the sender path trusts its own kernel's segments
    data, size = run_of(p, rows)
    p.b.on_datagram_run(data, size, EA, p.now)
    assert p.b.stats.rx_invalid_source == 1 and p.b.stats.rx_invalid_inner == 1
    assert p.b.packets_to_deliver() == [own, own]


def test_segments_wait_for_a_session_then_go() -> None:
    p = make_pair()
    rows, original = segments(False, 500, 5)
    p.a.on_tun_segments(rows, p.now)
    assert p.a.datagrams_to_send()[0][0][0] != MESSAGE_TRANSPORT  # an initiation first
    p.a.on_tun_segments(rows, p.now)  # staged again behind the first ones
    p.settle()  # the initiation was taken off the wire above: retransmit
    p.advance(6)
    assert p.delivered_b[:5] == original


def test_segments_for_nobody_are_counted() -> None:
    p = session()
    rows = PacketRows.from_packets([packet("198.19.0.1", "198.19.5.5")], 64)
    p.a.on_tun_segments(rows, p.now)
    assert p.a.stats.tx_no_route == 1 and not p.a.runs_to_send()


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=700), st.integers(0, 800))
def test_garbage_runs_are_dropped_and_counted(data: bytes, size: int) -> None:
    p = session()
    before = sum(p.b.stats.as_dict().values())
    with contextlib.suppress(PacketError):
        p.b.on_datagram_run(data, size, EA, p.now)
    assert not p.b.packets_to_deliver()
    assert sum(p.b.stats.as_dict().values()) > before or not data


@settings(max_examples=200, deadline=None)
@given(v6=st.booleans(), mss=st.integers(1, MTU - 72), count=st.integers(2, 44),
       tail=st.integers(1, MTU - 72), stranger=st.booleans(),
       edits=st.lists(st.tuples(st.integers(0, 43), st.integers(0, 39), st.integers(1, 255)),
                      max_size=2))
def test_the_whole_run_inner_check_agrees_with_the_row_by_row_one(
    v6: bool, mss: int, count: int, tail: int, stranger: bool,
    edits: list[tuple[int, int, int]],
) -> None:
    """Decrypted rows (padded to 16, as WireGuard sends them), clean or with IP header
    bytes flipped: when the whole-run check takes them, it leaves exactly what the
    row-by-row check leaves, with nothing counted; when not, nothing is changed."""
    p = session()
    total = mss * (count - 1) + min(tail, mss)
    packets = [bytearray(x) for x in stream(v6, mss, total, True, 1, 1, TS_OPTION)]
    if stranger:  # a source A does not own, in every row
        for x in packets:
            x[15 if not v6 else 23] ^= 0x40
    for row, byte, xor in edits:
        packets[row % len(packets)][byte] ^= xor
    padded = [len(x) + (-len(x)) % PADDING_MULTIPLE for x in packets]
    fast = PacketRows.from_packets(packets, max(padded))
    fast.lengths = list(padded)
    slow = PacketRows(bytearray(fast.buf), fast.stride, list(padded))
    before = bytes(fast.buf)
    stats = dataclasses.replace(p.b.stats)
    lookup = p.b.allowed_ips.lookup
    if inner.uniform(fast, p.peer_ba, lookup):
        inner.check_rows(slow, list(range(len(packets))), p.peer_ba, lookup)
        assert (fast.buf, fast.lengths) == (slow.buf, slow.lengths)
        assert p.b.stats == stats
        assert edits or fast.packets() == [bytes(x) for x in packets]
    else:
        assert (bytes(fast.buf), fast.lengths) == (before, padded)
        assert edits or stranger, "a clean run of the peer's must take the fast path"


@settings(max_examples=40, deadline=None)
@given(sizes=st.lists(st.integers(0, MTU - 28), min_size=1, max_size=8))
def test_packets_sent_at_once_equal_packets_sent_staged(sizes: list[int]) -> None:
    # Peer.send_packet (one packet, session up: the latency path) against stage +
    # send_staged (Device.on_tun_packets): same datagrams, counters and timers
    direct, staged = session(), session()
    packets = [packet(A_INNER, B_INNER, seq, size) for seq, size in enumerate(sizes)]
    for item in packets:
        direct.a.on_tun_packet(item, direct.now)
    staged.a.on_tun_packets(packets, staged.now)
    sent = direct.a.datagrams_to_send()
    assert sent == staged.a.datagrams_to_send()
    for attribute in ("tx_bytes", "t_new_handshake", "t_send_keepalive", "t_persistent"):
        assert getattr(direct.peer_ab, attribute) == getattr(staged.peer_ab, attribute)
    assert direct.peer_ab.current is not None and staged.peer_ab.current is not None
    assert direct.peer_ab.current.send_counter == staged.peer_ab.current.send_counter
    for datagram, endpoint in sent:
        assert endpoint == EB
        direct.b.on_datagram(datagram, EA, direct.now)
    assert direct.b.packets_to_deliver() == packets
