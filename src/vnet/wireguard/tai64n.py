"""TAI64N timestamps (whitepaper §5.4.2): 8 bytes of seconds, 4 of nanoseconds, big-endian.

Only their order matters to the protocol: a responder rejects an initiation
whose timestamp is not newer than the last one it accepted from that peer.
"""

from __future__ import annotations

import struct

TAI64_BASE = 0x400000000000000A  # 2**62 + 10: TAI64 label of 1970 plus the TAI-UTC offset
_TAI64N = struct.Struct("!QI")
WHITENING = 0x1000000  # ~16.8 ms: round nanoseconds down so timestamps do not leak fine time


def encode(unix_time: float) -> bytes:
    seconds = int(unix_time)
    nanos = int((unix_time - seconds) * 1e9)
    nanos -= nanos % WHITENING
    return _TAI64N.pack(TAI64_BASE + seconds, nanos)


def after(a: bytes, b: bytes) -> bool:
    """True when timestamp ``a`` is strictly later than ``b`` (big-endian compares as bytes)."""
    return a > b
