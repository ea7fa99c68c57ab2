"""The inner-packet rule, once per packet and over rows: same verdicts either way."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.wireguard.harness import packet
from vnet.packet.rows import PacketRows
from vnet.wireguard import inner

OWNER = object()
OWNED = {bytes([198, 19, 0, 1])}


def lookup(address: bytes) -> object:
    return OWNER if address in OWNED else None


def test_the_rule() -> None:
    ping = packet("198.19.0.1", "198.19.0.2", size=30)
    assert inner.inner_packet(ping) == (len(ping), bytes([198, 19, 0, 1]))
    assert inner.inner_packet(ping + bytes(10)) == (len(ping), bytes([198, 19, 0, 1]))  # padded
    assert inner.inner_packet(ping[:-1]) is None  # shorter than its header says
    assert inner.inner_packet(b"") is None
    assert inner.inner_packet(bytes([0x45]) + bytes(19)) is None  # length 0 < header
    assert inner.inner_packet(bytes([0x60]) + bytes(39)) == (40, bytes(16))  # empty IPv6
    assert inner.inner_packet(bytes([0x50]) + bytes(60)) is None  # version 5


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(
    st.binary(max_size=80),
    st.builds(lambda src, pad: packet(src, "198.19.0.2", size=20) + bytes(pad),
              st.sampled_from(["198.19.0.1", "198.19.0.7"]), st.integers(0, 15)),
), min_size=1, max_size=12))
def test_rows_follow_the_rule_row_by_row(plaintexts: list[bytes]) -> None:
    rows = PacketRows.from_packets(plaintexts, 64)
    invalid, foreign = inner.check_rows(rows, list(range(len(plaintexts))), OWNER, lookup)
    expected: list[bytes] = []
    want_invalid = want_foreign = 0
    for plaintext in plaintexts:
        verdict = inner.inner_packet(plaintext)
        if verdict is None:
            want_invalid += 1
            expected.append(b"")
        elif lookup(verdict[1]) is not OWNER:
            want_foreign += 1
            expected.append(b"")
        else:
            expected.append(plaintext[: verdict[0]])
    assert (invalid, foreign) == (want_invalid, want_foreign)
    assert [bytes(rows.row(i)) for i in range(len(rows))] == expected
    # the rows' invariant: nothing but zeros past each packet
    for i in range(len(rows)):
        start = i * rows.stride + rows.lengths[i]
        assert not any(rows.buf[start : (i + 1) * rows.stride])
