"""The native screen of a received run against messages.wireguard_datagrams."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vnet import native
from vnet.wireguard.messages import wireguard_datagrams

pytestmark = pytest.mark.skipif(native.datapath is None, reason="the native module is not built")

HEADERS = [bytes([k, 0, 0, 0]) for k in (1, 2, 3, 4)] + [bytes([4, 0, 1, 0]), bytes([9, 0, 0, 0])]


def message(kind: bytes, size: int) -> bytes:
    return kind + bytes(max(size - 4, 0))


datagram = st.builds(
    message, st.sampled_from(HEADERS), st.sampled_from([0, 3, 4, 31, 32, 64, 92, 148, 200])
)


@settings(max_examples=500, deadline=None)
@given(st.lists(datagram, max_size=20), st.integers(1, 300))
def test_agrees_with_the_reference_on_laid_out_runs(datagrams: list[bytes], size: int) -> None:
    data = b"".join(d[:size].ljust(size, b"\0") for d in datagrams)
    assert native.datapath is not None
    assert native.datapath.wireguard_datagrams(data, size) == wireguard_datagrams(data, size)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=2000), st.integers(1, 400))
def test_agrees_with_the_reference_on_garbage(data: bytes, size: int) -> None:
    assert native.datapath is not None
    assert native.datapath.wireguard_datagrams(data, size) == wireguard_datagrams(data, size)


def test_each_kind_at_its_size() -> None:
    run = message(bytes([1, 0, 0, 0]), 148) + message(bytes([4, 0, 0, 0]), 100)
    assert wireguard_datagrams(run, 148) == [0, 1]  # the last, shorter, is transport data
    assert wireguard_datagrams(message(bytes([2, 0, 0, 0]), 92) * 2, 92) == [0, 1]
    assert wireguard_datagrams(message(bytes([3, 0, 0, 0]), 64) + b"\4\0\0", 64) == [0]
    with pytest.raises(ValueError):
        assert native.datapath is not None
        native.datapath.wireguard_datagrams(b"x", 0)
