"""The native transport cipher (vnet._datapath) against the Python reference: identical
bytes, counters and verdicts for valid runs, corrupted, truncated, garbage, wrong keys."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.packet.test_native_split import super_packets
from vnet import _datapath, native
from vnet.packet import gso
from vnet.wireguard import aead
from vnet.wireguard.messages import padding

KEY = bytes(range(32))
OTHER = bytes(range(1, 33))


def test_the_native_module_is_built_and_chosen() -> None:
    assert _datapath.LIBCRYPTO.startswith("OpenSSL 3")
    # the module is chosen unless VNET_DATAPATH=python, and what runs is named
    assert (native.datapath is _datapath) != native.IMPLEMENTATION.startswith("python")


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 2**64 - 1), st.binary(max_size=300))
def test_one_message(counter: int, plaintext: bytes) -> None:
    native, reference = _datapath.Sealer(KEY), aead.PySealer(KEY)
    sealed = native.seal(counter, plaintext)
    assert sealed == reference.seal(counter, plaintext)
    for opener in (_datapath.Opener(KEY), aead.PyOpener(KEY)):
        assert opener.open(counter, sealed) == plaintext
        assert opener.open(counter ^ 1, sealed) is None
        assert _datapath.Opener(OTHER).open(counter, sealed) is None
        out = bytearray(len(plaintext))
        assert opener.open_into(counter, sealed, out) and out == plaintext


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=1600), st.sampled_from([0, 16, 60, 1280, 1420, 1500]),
       st.integers(0, 2**32 - 1), st.integers(0, 2**64 - 1))
def test_one_whole_message(packet: bytes, mtu: int, remote: int, counter: int) -> None:
    sealed = _datapath.Sealer(KEY).seal_message(packet, mtu, remote, counter)
    assert sealed == aead.PySealer(KEY).seal_message(packet, mtu, remote, counter)
    # the header, then the packet padded by the rule of messages.padding, sealed
    assert sealed[:16] == struct.pack("<IIQ", 4, remote, counter)
    plain = _datapath.Opener(KEY).open(counter, sealed[16:])
    assert plain == packet + bytes(padding(len(packet), mtu))


@pytest.mark.parametrize("args", [
    (b"", -1, 1, 0),  # negative mtu
    (b"", 0, 2**32, 0),  # receiver index wider than 32 bits
    (bytes((1 << 20) + 1), 0, 1, 0),  # longer than any message
])
def test_bad_whole_messages_are_refused_alike(args: tuple[bytes, int, int, int]) -> None:
    for sealer in (_datapath.Sealer(KEY), aead.PySealer(KEY)):
        with pytest.raises((ValueError, OverflowError)):
            sealer.seal_message(*args)


def _run(
    draw: st.DrawFn,
) -> tuple[bytearray, int, int, int, int, int, int]:
    count = draw(st.integers(1, 12))
    padded = draw(st.integers(0, 20)) * 16
    last = draw(st.integers(0, padded // 16)) * 16
    stride = padded + draw(st.sampled_from([0, 4, 16]))
    plain = bytearray(draw(st.binary(min_size=count * stride, max_size=count * stride)))
    return plain, stride, count, padded, last, draw(st.integers(0, 2**32 - 1)), draw(
        st.integers(0, 2**40))


runs = st.composite(_run)()


@settings(max_examples=200, deadline=None)
@given(runs, st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=4),
       st.integers(0, 40), st.booleans())
def test_runs_seal_and_open_alike(
    run: tuple[bytearray, int, int, int, int, int, int],
    flips: list[tuple[int, int]],
    cut: int,
    wrong_key: bool,
) -> None:
    plain, stride, count, padded, last, remote, first = run
    size = 32 + padded
    outs = []
    for sealer in (_datapath.Sealer(KEY), aead.PySealer(KEY)):
        out = bytearray((count - 1) * size + 32 + last)
        sealer.seal_run(plain, stride, count, padded, last, remote, first, out)
        outs.append(out)
    assert outs[0] == outs[1]
    wire = outs[0]
    for offset, xor in flips:  # damage: some messages no longer authenticate
        wire[offset % len(wire)] ^= xor
    wire = wire[: len(wire) - min(cut, len(wire) - 1)]  # a cut run: its last may be too short
    prefix = struct.unpack_from("<Q", wire)[0] if len(wire) >= 8 else 0
    key = OTHER if wrong_key else KEY
    results = []
    for opener in (_datapath.Opener(key), aead.PyOpener(key)):
        rows = bytearray(count * max(stride, padded))
        try:
            opened = opener.open_run(wire, size, prefix, rows, max(stride, padded))
        except ValueError as e:
            opened = ("ValueError", str(e).split(":")[0])  # type: ignore[assignment]
        results.append((opened, rows))
    assert results[0] == results[1]
    opened = results[0][0]
    if not flips and not cut and not wrong_key:
        assert opened == (list(range(first, first + count)), [])
        rows = results[0][1]
        for i in range(count):
            n = last if i == count - 1 else padded
            assert rows[i * max(stride, padded) : i * max(stride, padded) + n] == \
                plain[i * stride : i * stride + n]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200), st.integers(-5, 100), st.integers(0, 2**64 - 1),
       st.integers(-5, 100))
def test_garbage_runs_give_the_same_verdict(
    data: bytes, size: int, prefix: int, stride: int
) -> None:
    """Whatever bytes and sizes come in: the same answer, or a ValueError from both."""
    answers = []
    for opener in (_datapath.Opener(KEY), aead.PyOpener(KEY)):
        rows = bytearray(max(0, 4 * max(stride, 0)))
        try:
            answers.append((opener.open_run(data, size, prefix, rows, stride), bytes(rows)))
        except ValueError:
            answers.append(("ValueError", b""))  # type: ignore[arg-type]
    assert answers[0] == answers[1]


@pytest.mark.parametrize("args", [
    (b"", 16, 2, 16, 0, 1, 0),  # plain too short
    (bytes(64), 16, 2, 32, 0, 1, 0),  # padded beyond the stride
    (bytes(64), 32, 0, 16, 0, 1, 0),  # no rows
    (bytes(64), 32, 2, 16, 32, 1, 0),  # last longer than padded
])
def test_inconsistent_seal_runs_are_refused_alike(args: tuple[bytes, int, int, int, int, int,
                                                              int]) -> None:
    for sealer in (_datapath.Sealer(KEY), aead.PySealer(KEY)):
        with pytest.raises(ValueError):
            sealer.seal_run(*args, bytearray(80))


def test_bad_keys_are_refused() -> None:
    for kind in (_datapath.Sealer, _datapath.Opener):
        with pytest.raises(ValueError, match="32 bytes"):
            kind(b"short")


@settings(max_examples=300, deadline=None)
@given(super_packets(), st.integers(1, 1600), st.integers(0, 1700) | st.sampled_from([0, 1420]),
       st.integers(0, 2**32 - 1), st.integers(0, 2**64 - 1) | st.integers(0, 100),
       st.integers(0, 80) | st.just(2**64 - 1))
def test_seal_tso_equals_the_reference(packet: tuple[bytes, bool], mss: int, mtu: int,
                                       remote: int, first: int, max_count: int) -> None:
    """A super-packet split and sealed in one call: the same buffer as the reference, and
    each message opens to the reference split's segment with its §5.4.6 padding."""
    data, v4 = packet
    native = _datapath.Sealer(KEY).seal_tso(data, v4, mss, mtu, remote, first, max_count)
    assert native == aead.PySealer(KEY).seal_tso(data, v4, mss, mtu, remote, first, max_count)
    segments = gso.reference_split_tcp(data, v4, mss, 1).packets()
    fits = not mtu or max(map(len, segments)) <= mtu
    room = len(segments) <= max_count and first + len(segments) <= 2**64 - 1
    assert (native is not None) == (fits and room)
    if native is None:
        return
    out, size, count = native
    assert count == len(segments)
    for i, segment in enumerate(segments):
        message = out[i * size : (i + 1) * size]
        assert struct.unpack_from("<IIQ", message) == (4, remote, first + i)
        opened = aead.PyOpener(KEY).open(first + i, message[16:])
        assert opened == segment + bytes(padding(len(segment), mtu))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200), st.booleans(), st.integers(-5, 100), st.integers(0, 1500))
def test_seal_tso_declines_what_the_split_refuses(data: bytes, v4: bool, mss: int,
                                                  mtu: int) -> None:
    native = _datapath.Sealer(KEY).seal_tso(data, v4, mss, mtu, 1, 0, 64)
    assert native == aead.PySealer(KEY).seal_tso(data, v4, mss, mtu, 1, 0, 64)
    if _datapath.split_tcp(data, v4, mss, 1) is None:
        assert native is None
