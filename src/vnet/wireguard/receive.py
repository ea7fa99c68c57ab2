"""The device's receive path (wireguard-go's receive.go): UDP datagrams in, handshakes
answered, transport data opened, checked and queued for the TUN.

Two ways in, one set of rules: ``on_datagram`` takes one datagram, ``on_datagram_run``
a UDP GRO run (datagrams of one size back to back, the last possibly shorter) whose
transport messages are decrypted straight into the rows of one PacketRows. Either way
a transport message is accepted by the same steps: a known receiver index with a
keypair still valid for receiving (``_receiving``), authentication, the replay window,
then ``_authenticated`` (roaming, counters, the §6 hooks) and the inner-packet rule
(``vnet.wireguard.inner``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vnet import native
from vnet.errors import ProtocolError
from vnet.packet.rows import PacketRows
from vnet.wireguard import inner, noise
from vnet.wireguard.constants import (
    MESSAGE_COOKIE_REPLY,
    MESSAGE_INITIATION,
    MESSAGE_RESPONSE,
    MESSAGE_TRANSPORT,
    REJECT_AFTER_MESSAGES,
    REKEY_AFTER_TIME,
)
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
    wireguard_datagrams,
)
from vnet.wireguard.noise import HandshakeError
from vnet.wireguard.peer import Endpoint, Peer

if TYPE_CHECKING:
    from vnet.wireguard.device import Device

_TRANSPORT_TAG = bytes([4, 0, 0, 0])  # type 4, reserved zeros
_wireguard_datagrams = (
    native.datapath.wireguard_datagrams if native.datapath is not None else wireguard_datagrams
)


def _source_key(source: Endpoint) -> bytes:
    return f"{source[0]}|{source[1]}".encode()


class _Use:
    """The rows of one run that one keypair opened, and their counters."""

    __slots__ = ("counters", "keypair", "peer", "rows")

    def __init__(self, peer: Peer, keypair: Keypair) -> None:
        self.peer = peer
        self.keypair = keypair
        self.rows: list[int] = []
        self.counters: list[int] = []


def on_datagram(
    device: Device, data: bytes, source: Endpoint, now: float, under_load: bool | None = None
) -> None:
    """One datagram. ``under_load`` None: decided by the rate of handshake messages."""
    if len(data) < 4 or not 1 <= data[0] <= 4 or data[1] or data[2] or data[3]:
        device.stats.rx_malformed += 1  # no message at all (garbage): dropped at once
        return
    try:
        if len(data) >= TRANSPORT_MIN_SIZE and data[:4] == _TRANSPORT_TAG:
            _on_transport(device, data, source, now)  # the hot path: no general parsing
            return
        kind = message_type(data)
        if kind in (MESSAGE_INITIATION, MESSAGE_RESPONSE):
            if under_load is None:
                under_load = device.under_load(now)
            _on_handshake(device, kind, data, source, now, under_load)
        elif kind == MESSAGE_COOKIE_REPLY:
            _on_cookie_reply(device, data, now)
        else:
            _on_transport(device, data, source, now)
    except MessageError:
        device.stats.rx_malformed += 1
    except DecryptError:
        device.stats.rx_decrypt_failed += 1
    except HandshakeError:
        device.stats.rx_handshake_rejected += 1
    except ProtocolError:
        device.stats.rx_malformed += 1


# --- handshakes (whitepaper §5.4.2-§5.4.4, cookies §5.4.7) ---------------------


def _on_handshake(
    device: Device, kind: int, data: bytes, source: Endpoint, now: float, under_load: bool
) -> None:
    checker = device.cookie_checker
    if checker is None or device.identity is None:
        device.stats.rx_unknown_peer += 1
        return
    if not checker.check_mac1(data):
        device.stats.rx_bad_mac += 1
        return
    if under_load:
        src = _source_key(source)
        if not checker.check_mac2(data, src, now):
            sender = int.from_bytes(data[4:8], "little")
            reply = checker.create_reply(
                data, sender, src, now, device.random(32), device.random(24)
            )
            device.outbox(reply.encode(), source)
            device.stats.cookie_replies_sent += 1
            return
        if not device.rate_limiter.allow(source[0].encode(), now):
            device.stats.rx_rate_limited += 1
            return
    if kind == MESSAGE_INITIATION:
        _on_initiation(device, Initiation.decode(data), len(data), source, now)
    else:
        _on_response(device, Response.decode(data), len(data), source, now)


def _on_initiation(
    device: Device, msg: Initiation, size: int, source: Endpoint, now: float
) -> None:
    assert device.identity is not None
    decoded = noise.open_initiation(device.identity, msg)
    peer = device.peers.get(decoded.remote_static)
    if peer is None:
        device.stats.rx_unknown_peer += 1
        return
    hs = peer.handshake
    pending = hs.local_index if hs.state is noise.State.INITIATION_CREATED else None
    noise.consume_initiation(hs, decoded, now)
    if pending is not None:
        device.drop_index(pending)
    device.stats.handshake_initiations_received += 1
    peer.endpoint = source
    peer.rx_bytes += size
    peer.timers_any_authenticated_packet_traversal(now)
    peer.timers_any_authenticated_packet_received()
    peer.send_response(now)


def _on_response(device: Device, msg: Response, size: int, source: Endpoint, now: float) -> None:
    assert device.identity is not None
    entry = device.indices.get(msg.receiver)
    if entry is None or entry[1] is not None:
        device.stats.rx_unknown_index += 1
        return
    peer = entry[0]
    noise.consume_response(device.identity, peer.handshake, msg)
    device.stats.handshake_responses_received += 1
    peer.endpoint = source
    peer.rx_bytes += size
    peer.timers_any_authenticated_packet_traversal(now)
    peer.timers_any_authenticated_packet_received()
    keypair = noise.derive_keypair(peer.handshake, now)
    peer.install_initiator_keypair(keypair, now)


def _on_cookie_reply(device: Device, data: bytes, now: float) -> None:
    reply = CookieReply.decode(data)
    entry = device.indices.get(reply.receiver)
    if entry is None:
        device.stats.rx_unknown_index += 1
        return
    entry[0].cookies.consume_reply(reply, now)
    device.stats.cookie_replies_received += 1


# --- transport data (whitepaper §5.4.6) -------------------------------------------


def _receiving(
    device: Device,
    receiver: int,
    now: float,
    count: bool = True,
    source: Endpoint | None = None,
) -> tuple[Peer, Keypair] | None:
    """The peer and keypair of a receiver index, if that keypair may still receive;
    None otherwise (counted, unless ``count`` is False; an unknown index from ``source``
    may start a handshake, see ``_lost_session``)."""
    entry = device.indices.get(receiver)
    keypair = entry[1] if entry is not None else None
    if entry is None or keypair is None:
        if count:
            device.stats.rx_unknown_index += 1
        if source is not None and entry is None:
            _lost_session(device, source, now)
        return None
    if not keypair.can_receive(now):
        if count:
            device.stats.rx_expired_key += 1
        return None
    return entry[0], keypair


def _authenticated(
    device: Device,
    peer: Peer,
    keypair: Keypair,
    size: int,
    data: bool,
    source: Endpoint,
    now: float,
) -> None:
    """What authenticated transport messages (``size`` bytes on the wire; ``data``: not
    only keepalives) do to their peer: roaming (the last authenticated source wins),
    counters, key confirmation and the §6 hooks."""
    peer.endpoint = source
    peer.rx_bytes += size
    peer.received_transport(keypair, now)
    if data:
        peer.timers_data_received(now)


def _lost_session(device: Device, source: Endpoint, now: float) -> None:
    """Transport data under an index we do not know, from where a peer of ours without a
    session is: most likely we restarted and that peer still sends with the keys we lost.
    It would wait out KEEPALIVE_TIMEOUT + REKEY_TIMEOUT (15 s) of silence before a new
    handshake; we offer one now. Forged data costs at most one look a second and, per
    peer, one initiation per REKEY_TIMEOUT (send_initiation's own limit); a peer with a
    working session is left alone."""
    if now < device.next_lost_session_check:
        return
    device.next_lost_session_check = now + 1.0
    host, port = source.host, source.port
    for peer in device.peers.values():
        end = peer.endpoint
        if end is not None and end.port == port and end.host == host and peer.current is None:
            peer.send_initiation(now, retry=False)


def receive_one(device: Device, data: bytes, source: Endpoint, now: float) -> bytes | None:
    """The latency path (an idle ping): one datagram of transport data under a session
    younger than REKEY_AFTER_TIME, taken as ``on_datagram`` takes it, its IP packet
    returned for the TUN; b"" when the datagram ended here (it did not authenticate, or
    replayed: counted). None, with nothing done, for anything else - another message, an
    unknown or aging index, a keepalive, an inner packet the rules refuse: then
    ``on_datagram``, which also counts and logs those."""
    if len(data) < TRANSPORT_MIN_SIZE or data[:4] != _TRANSPORT_TAG:
        return None
    _, receiver, counter = TRANSPORT_HEADER.unpack_from(data)
    entry = device.indices.get(receiver)
    keypair = entry[1] if entry is not None else None
    # younger than REKEY_AFTER_TIME: receiving cannot start a rekey (keep_key_fresh_receiving)
    if entry is None or keypair is None or now - keypair.created >= REKEY_AFTER_TIME:
        return None
    peer = entry[0]
    try:
        plaintext = keypair.open(counter, memoryview(data)[TRANSPORT_HEADER_SIZE:])
    except DecryptError:
        device.stats.rx_decrypt_failed += 1
        return b""
    verdict = inner.inner_packet(plaintext) if plaintext else None
    if verdict is None or device.allowed_ips.lookup(verdict[1]) is not peer:
        return None
    if not keypair.replay.check(counter, REJECT_AFTER_MESSAGES):
        device.stats.rx_replayed += 1
        return b""
    _authenticated(device, peer, keypair, len(data), True, source, now)
    length = verdict[0]
    return plaintext if length == len(plaintext) else plaintext[:length]


def _on_transport(device: Device, data: bytes, source: Endpoint, now: float) -> None:
    _, receiver, counter = TRANSPORT_HEADER.unpack_from(data)
    found = _receiving(device, receiver, now, source=source)
    if found is None:
        return
    peer, keypair = found
    plaintext = keypair.open(counter, memoryview(data)[TRANSPORT_HEADER_SIZE:])
    if not keypair.replay.check(counter, REJECT_AFTER_MESSAGES):
        device.stats.rx_replayed += 1
        return
    _authenticated(device, peer, keypair, len(data), bool(plaintext), source, now)
    if not plaintext:
        device.stats.rx_keepalives += 1
        return
    verdict = inner.inner_packet(plaintext)
    if verdict is None:
        device.stats.rx_invalid_inner += 1
        return
    length, src = verdict
    if device.allowed_ips.lookup(src) is not peer:
        device.stats.rx_invalid_source += 1
        return
    device._delivered.append(plaintext if length == len(plaintext) else plaintext[:length])


def on_datagram_run(
    device: Device,
    data: bytes | bytearray | memoryview,
    size: int,
    source: Endpoint,
    now: float,
) -> None:
    """A UDP GRO run from ``source``: datagrams of ``size`` bytes back to back, the
    last possibly shorter. Transport data is decrypted straight into the rows of one
    PacketRows (delivered as a whole); any other message goes through on_datagram."""
    view = memoryview(data)
    total = len(view)
    if size <= 0 or size >= total:
        on_datagram(device, bytes(view), source, now)
        return
    count = -(-total // size)
    rows = PacketRows.empty(count, max(size - TRANSPORT_MIN_SIZE, 0))
    uniform = _open_uniform(device, view, size, rows, now)
    used = [uniform] if uniform is not None else _open_each(device, view, size, rows, source, now)
    for use in used:
        _accept_run(device, use, rows, size, total, source, now)
    if any(rows.lengths):
        device._delivered.append(rows)


def _open_uniform(
    device: Device, view: memoryview, size: int, rows: PacketRows, now: float
) -> _Use | None:
    """The usual run - transport data to one receiver index of a usable keypair -
    opened in one call. None, with nothing done, otherwise."""
    if len(view) < TRANSPORT_MIN_SIZE:
        return None
    prefix = int.from_bytes(view[:8], "little")  # the type, reserved bytes and receiver
    if prefix & 0xFFFFFFFF != MESSAGE_TRANSPORT:
        return None
    found = _receiving(device, prefix >> 32, now, count=False)  # the general way counts
    if found is None:
        return None
    opened = found[1].open_run(view, size, prefix, rows)
    if opened is None:
        return None
    use = _Use(*found)
    counters, failed = opened
    count = len(rows)
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
    device.stats.rx_decrypt_failed += len(failed)
    return use


def _open_each(
    device: Device,
    view: memoryview,
    size: int,
    rows: PacketRows,
    source: Endpoint,
    now: float,
) -> list[_Use]:
    """Any other run, message by message: transport data opened into its row, any
    other message handed to on_datagram. Returns what each keypair opened."""
    total = len(view)
    out = memoryview(rows.buf)
    stride = rows.stride
    lengths = rows.lengths
    unpack = TRANSPORT_HEADER.unpack_from
    cached = -1  # the receiver index whose (peer, keypair) is at hand
    found: tuple[Peer, Keypair] | None = None
    used: list[_Use] = []  # per keypair, in order of use
    # what is no message at all (a flood of garbage) is dropped in one step
    wellformed = _wireguard_datagrams(view, size)
    device.stats.rx_malformed += len(rows) - len(wellformed)
    for i in wellformed:
        start = i * size
        end = min(start + size, total)
        kind, receiver, counter = unpack(view, start)
        if kind != MESSAGE_TRANSPORT:  # type 4 with zero reserved bytes only
            on_datagram(device, bytes(view[start:end]), source, now)
            continue
        if receiver != cached:
            found = _receiving(device, receiver, now, source=source)
            cached = receiver if found is not None else -1
        if found is None:
            continue
        peer, keypair = found
        n = end - start - TRANSPORT_MIN_SIZE
        row = i * stride
        try:
            keypair.open_into(
                counter, view[start + TRANSPORT_HEADER_SIZE : end], out[row : row + n]
            )
        except DecryptError:
            device.stats.rx_decrypt_failed += 1
            out[row : row + n] = bytes(n)  # keep the rows' zero padding invariant
            continue
        if not used or used[-1].keypair is not keypair:
            used.append(_Use(peer, keypair))
        used[-1].rows.append(i)
        used[-1].counters.append(counter)
        lengths[i] = n
    return used


def _accept_run(
    device: Device,
    use: _Use,
    rows: PacketRows,
    size: int,
    total: int,
    source: Endpoint,
    now: float,
) -> None:
    """The replay window for what one keypair opened in a run, then what _on_transport
    does per message, once for them all (they share ``now``)."""
    stats = device.stats
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
    # bytes on the wire: ``size`` per message, but the last of the run may be shorter
    last = len(rows) - 1
    wire = len(accepted) * size
    if accepted[-1] == last:
        wire -= size - (total - last * size)
    packets = [i for i in accepted if lengths[i]] if 0 in lengths else accepted
    stats.rx_keepalives += len(accepted) - len(packets)
    _authenticated(device, use.peer, use.keypair, wire, bool(packets), source, now)
    if not packets:
        return
    lookup = device.allowed_ips.lookup
    if len(packets) == len(rows) > 1 and inner.uniform(rows, use.peer, lookup):
        return
    invalid, foreign = inner.check_rows(rows, packets, use.peer, lookup)
    stats.rx_invalid_inner += invalid
    stats.rx_invalid_source += foreign
