"""What a decrypted transport message may deliver (whitepaper §5.4.6 and §2).

One rule, ``inner_packet``: the plaintext must start with a whole IPv4 or IPv6 packet
(its header's length within the plaintext; what follows is WireGuard's zero padding,
trimmed), and the packet's source must be an address the sending peer owns in the
allowed-ips table. The batch receive path applies the same rule to rows of decrypted
packets (``vnet.packet.rows``): ``check_rows`` row by row, and ``uniform`` at once for
the usual run, in which every row shares the first row's version, length and source.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from vnet import native
from vnet.packet.rows import PacketRows

IPV4_HEADER = 20
IPV6_HEADER = 40
Lookup = Callable[[bytes], object]  # address -> the peer that owns it (or None)
_native = native.datapath


def inner_packet(
    packet: bytes | bytearray | memoryview, available: int | None = None
) -> tuple[int, bytes] | None:
    """(length of the IP packet at the start of ``packet``, its source address), or None
    when it is not a whole IPv4/IPv6 packet. ``available``: how many bytes of plaintext
    there are, when ``packet`` holds only the first ones (at least the IP header)."""
    n = len(packet) if available is None else available
    if not n or not packet:
        return None
    version = packet[0] >> 4
    if version == 4 and n >= IPV4_HEADER:
        length = packet[2] << 8 | packet[3]
        if not IPV4_HEADER <= length <= n:
            return None
        return length, bytes(packet[12:16])
    if version == 6 and n >= IPV6_HEADER:
        length = IPV6_HEADER + (packet[4] << 8 | packet[5])
        if length > n:
            return None
        return length, bytes(packet[8:24])
    return None


def _mask(width: int, keep: dict[int, int]) -> npt.NDArray[np.uint8]:
    return np.array([keep.get(i, 0) for i in range(width)], dtype=np.uint8)


# the header bits the rule reads: version, length, source address
_RULE_BITS4 = _mask(16, {0: 0xF0, 2: 0xFF, 3: 0xFF, 12: 0xFF, 13: 0xFF, 14: 0xFF, 15: 0xFF})
_RULE_BITS6 = _mask(24, {0: 0xF0, 4: 0xFF, 5: 0xFF, **{i: 0xFF for i in range(8, 24)}})
_RULE_BYTES = {4: _RULE_BITS4.tobytes(), 6: _RULE_BITS6.tobytes()}


def uniform(rows: PacketRows, peer: object, lookup: Lookup) -> bool:
    """The usual run, checked at once: the first and last rows pass the rule with the
    same version and a source the peer owns, and every row between has the first row's
    length and the same rule bits as the first row (so the same verdict). Trims the
    padding and returns True; False, with nothing changed, for anything else."""
    lengths = rows.lengths
    last = len(lengths) - 1
    n = lengths[0]
    n_last = lengths[last]
    if last < 1 or lengths.count(n) + (n_last != n) != last + 1:
        return False
    stride = rows.stride
    head = bytes(rows.buf[:IPV6_HEADER])
    tail = bytes(rows.buf[last * stride : last * stride + IPV6_HEADER])
    first = inner_packet(head, n)
    final = inner_packet(tail, n_last)
    if first is None or final is None or head[0] >> 4 != tail[0] >> 4:
        return False
    (length, source), (tail_length, tail_source) = first, final
    if tail_source != source or lookup(source) is not peer:
        return False
    bits = _RULE_BITS4 if head[0] >> 4 == 4 else _RULE_BITS6
    if _native is not None:  # the same two steps in C
        if not _native.rows_agree(rows.buf, stride, last, _RULE_BYTES[head[0] >> 4]):
            return False
        if length < n:
            _native.zero_span(rows.buf, stride, last, length, n)
            lengths[:last] = [length] * last
    else:
        grid = rows.grid()
        differs = grid[:last, : len(bits)] ^ grid[0, : len(bits)]
        differs &= bits
        if differs.any():
            return False
        if length < n:  # WireGuard's zero padding: trimmed, and zeroed (the rows' invariant)
            grid[:last, length:n] = 0
            lengths[:last] = [length] * last
    if tail_length < n_last:
        rows.truncate(last, tail_length)
    return True


def check_rows(
    rows: PacketRows, packets: list[int], peer: object, lookup: Lookup
) -> tuple[int, int]:
    """The rule row by row for the rows ``packets``: each keeps its IP packet trimmed of
    padding, or is emptied. Returns (rows not IP, rows from a source the peer does not
    own)."""
    invalid = foreign = 0
    owners: dict[bytes, object] = {}  # a run holds few sources: one lookup each
    stride = rows.stride
    buf = rows.buf
    for i in packets:
        n = rows.lengths[i]
        verdict = inner_packet(buf[i * stride : i * stride + IPV6_HEADER], n)
        if verdict is None:
            invalid += 1
            rows.truncate(i, 0)
            continue
        length, source = verdict
        if source not in owners:
            owners[source] = lookup(source)
        if owners[source] is not peer:
            foreign += 1
            rows.truncate(i, 0)
        elif length < n:
            rows.truncate(i, length)
    return invalid, foreign
