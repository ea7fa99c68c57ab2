"""The Internet checksum (RFC 1071) and the TCP/UDP/ICMPv6 pseudo-headers.

The one's-complement sum of 16-bit words equals the buffer read as one big
integer modulo 0xffff (because 2**16 == 1 mod 0xffff), which CPython computes
in C: far faster than a Python loop over words. For many packets at once,
laid out as rows (a TSO split, a GRO run), ``row_sums`` adds the words of
every row in one numpy call.
"""

from __future__ import annotations

import struct
from ipaddress import IPv4Address, IPv6Address

import numpy as np
import numpy.typing as npt

_PSEUDO4 = struct.Struct("!4s4sxBH")
_PSEUDO6 = struct.Struct("!16s16sI3xB")


def fold(total: int) -> int:
    """The one's-complement sum of 16-bit words from their plain integer sum (or from the
    words read as one big-endian integer: its value mod 0xffff is the same)."""
    if total == 0:
        return 0
    return total % 0xFFFF or 0xFFFF


def ones_sum(data: bytes | bytearray | memoryview, initial: int = 0) -> int:
    """16-bit one's-complement sum of ``data`` (odd length padded with a zero byte)."""
    if len(data) % 2:
        data = bytes(data) + b"\0"
    return fold(int.from_bytes(data, "big") + initial)


def row_sums(
    grid: npt.NDArray[np.uint8], start: int, stop: int | None = None
) -> npt.NDArray[np.int64]:
    """Per row of a (count, width) byte array: a plain sum congruent mod 0xffff to the sum
    of the big-endian 16-bit words in columns [start, stop), a whole number of 32-bit
    words (0 mod 0xffff: they sum to all ones). The words are summed as little-endian
    32-bit integers, each congruent to its two 16-bit halves, and times 256 the
    little-endian sum is the big-endian one mod 0xffff (2**16 == 1, so 256 swaps the
    bytes of a word)."""
    total: npt.NDArray[np.int64] = grid[:, start:stop].view("<u4").sum(axis=1, dtype=np.int64)
    return total * 256


def checksums(sums: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """``checksum`` for many positive plain sums at once (a column of ``row_sums`` plus
    pseudo-headers): the complement of each sum's fold. Folding keeps a nonzero sum
    nonzero (0xffff, not 0), i.e. fold(x) = (x - 1) % 0xffff + 1, so the checksum
    0xffff - fold(x) is 0xfffe - (x - 1) % 0xffff."""
    out: npt.NDArray[np.int64] = 0xFFFE - (sums - 1) % 0xFFFF
    return out


def checksum(data: bytes | bytearray | memoryview, initial: int = 0) -> int:
    """The Internet checksum of ``data``: ~ones_sum, as placed in a header."""
    return ~ones_sum(data, initial) & 0xFFFF


def verify(data: bytes | bytearray | memoryview, initial: int = 0) -> bool:
    """True when ``data`` (with its checksum field filled in) sums to all ones."""
    return ones_sum(data, initial) == 0xFFFF


def pseudo_header_sum(
    src: IPv4Address | IPv6Address, dst: IPv4Address | IPv6Address, proto: int, length: int
) -> int:
    """Sum of the IPv4 (RFC 793 §3.1) or IPv6 (RFC 8200 §8.1) pseudo-header."""
    if src.version == 4:
        pseudo = _PSEUDO4.pack(src.packed, dst.packed, proto, length)
    else:
        pseudo = _PSEUDO6.pack(src.packed, dst.packed, length, proto)
    return ones_sum(pseudo)
