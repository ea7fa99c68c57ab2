"""bench/floor.py's in-memory session: the two relays of `python-floor-core` each build
it alone, and must end with one session between them."""

from __future__ import annotations

import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

import floor  # noqa: E402 - bench/floor.py, found through BENCH
import run  # noqa: E402

from tests.wireguard.harness import packet  # noqa: E402


def test_both_relays_derive_one_session() -> None:
    a, to_b = floor.core_session(run.UA, run.UB)
    b, to_a = floor.core_session(run.UB, run.UA)
    assert a is not b
    now = time.monotonic()
    ping, pong = packet(run.IA, run.IB, seq=7), packet(run.IB, run.IA, seq=7)
    for sender, receiver, source, data in ((a, b, to_a, ping), (b, a, to_b, pong)):
        ready = sender.send_one(data, now)
        assert ready is not None  # the latency path takes it: a session is up
        assert receiver.receive_one(ready[0], source, now) == data
    assert a.stats.rx_decrypt_failed == b.stats.rx_decrypt_failed == 0


def test_the_session_keeps_its_replay_window() -> None:
    a, _ = floor.core_session(run.UA, run.UB)
    b, to_a = floor.core_session(run.UB, run.UA)
    now = time.monotonic()
    ready = a.send_one(packet(run.IA, run.IB), now)
    assert ready is not None
    assert b.receive_one(ready[0], to_a, now)
    assert b.receive_one(ready[0], to_a, now) == b""  # the same datagram again
    assert b.stats.rx_replayed == 1
