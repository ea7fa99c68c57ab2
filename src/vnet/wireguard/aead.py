"""The transport cipher's per-message work (whitepaper §5.4.6): seal and open one
message or a run of them, with the keys and counters the caller gives.

Two implementations with one interface: the native module ``vnet._datapath`` (C over
libcrypto, the batch calls without the GIL) and the readable reference below, one
message at a time over pyca/cryptography. ``VNET_DATAPATH=python`` selects the
reference; so does a missing native module (``vnet.native``). Tests hold the two to
identical bytes, counters and verdicts.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from vnet import native
from vnet.errors import PacketError
from vnet.packet import gso
from vnet.wireguard.constants import MESSAGE_TRANSPORT
from vnet.wireguard.crypto import nonce
from vnet.wireguard.messages import TRANSPORT_HEADER as _HEADER
from vnet.wireguard.messages import TRANSPORT_HEADER_SIZE as HEADER_SIZE
from vnet.wireguard.messages import TRANSPORT_MIN_SIZE as MESSAGE_MIN
from vnet.wireguard.messages import padding

TAG_SIZE = MESSAGE_MIN - HEADER_SIZE  # Poly1305
MAX_PLAINTEXT = 1 << 20  # the native module's bound on any length it computes
_PREFIX = struct.Struct("<Q")  # a transport message's type, reserved bytes and receiver

if TYPE_CHECKING:
    from typing_extensions import Buffer  # collections.abc.Buffer from Python 3.12


class Sealer(Protocol):
    def seal(self, counter: int, plaintext: Buffer) -> bytes: ...

    def seal_message(self, packet: Buffer, mtu: int, remote_index: int, counter: int) -> bytes: ...

    def seal_run(
        self,
        plain: Buffer,
        stride: int,
        count: int,
        padded: int,
        last: int,
        remote_index: int,
        first_counter: int,
        out: Buffer,
    ) -> None: ...

    def seal_tso(
        self,
        packet: Buffer,
        v4: bool,
        mss: int,
        mtu: int,
        remote_index: int,
        first_counter: int,
        max_count: int,
    ) -> tuple[bytearray, int, int] | None: ...


class Opener(Protocol):
    def open(self, counter: int, ciphertext: Buffer) -> bytes | None: ...

    def open_into(self, counter: int, ciphertext: Buffer, out: Buffer) -> bool: ...

    def open_run(
        self, data: Buffer, size: int, prefix: int, out: Buffer, stride: int
    ) -> tuple[list[int], list[int]] | None: ...


class PySealer:
    """The reference of ``_datapath.Sealer``."""

    def __init__(self, key: bytes) -> None:
        self._aead = ChaCha20Poly1305(key)

    def seal(self, counter: int, plaintext: Buffer) -> bytes:
        return self._aead.encrypt(nonce(counter), bytes(plaintext), None)

    def seal_message(self, packet: Buffer, mtu: int, remote_index: int, counter: int) -> bytes:
        """One transport message: the header, then ``packet`` padded with zeros (up to a
        multiple of 16, not past ``mtu``; 0: no limit) and sealed with ``counter``."""
        plain = bytes(packet)
        if len(plain) > MAX_PLAINTEXT or not 0 <= remote_index <= 0xFFFFFFFF or mtu < 0:
            raise ValueError("seal_message: bad packet length, mtu or receiver index")
        plain += bytes(padding(len(plain), mtu))
        return _HEADER.pack(MESSAGE_TRANSPORT, remote_index, counter) + self.seal(counter, plain)

    def seal_run(
        self,
        plain: Buffer,
        stride: int,
        count: int,
        padded: int,
        last: int,
        remote_index: int,
        first_counter: int,
        out: Buffer,
    ) -> None:
        """Row i of ``plain`` (at i * stride: ``padded`` bytes, the last row ``last``) as
        transport message i of ``out``, 32 + padded bytes apart, counter first + i."""
        rows, dst = memoryview(plain), memoryview(out)
        size = MESSAGE_MIN + padded
        if not (count >= 1 and 0 <= last <= padded <= stride) or len(dst) != (
            (count - 1) * size + MESSAGE_MIN + last
        ):
            raise ValueError("seal_run: inconsistent sizes or counters")
        for i in range(count):
            n = last if i == count - 1 else padded
            counter = first_counter + i
            start = i * size
            _HEADER.pack_into(dst, start, MESSAGE_TRANSPORT, remote_index, counter)
            sealed = dst[start + HEADER_SIZE : start + MESSAGE_MIN + n]
            self._aead.encrypt_into(
                nonce(counter), rows[i * stride : i * stride + n], None, sealed
            )

    def seal_tso(
        self,
        packet: Buffer,
        v4: bool,
        mss: int,
        mtu: int,
        remote_index: int,
        first_counter: int,
        max_count: int,
    ) -> tuple[bytearray, int, int] | None:
        """A TSO super-packet (IPv4 or IPv6 TCP, ``mss`` payload bytes per segment) split
        (``gso``'s reference), each segment padded (§5.4.6) and sealed as transport
        message i, counter first + i, into one GSO send's buffer; returns it, the message
        size and the count. None, nothing done, for a packet the split refuses, a segment
        longer than ``mtu`` or more than ``max_count`` segments."""
        try:
            rows = gso.reference_split_tcp(memoryview(packet), v4, mss, 1)
        except PacketError:
            return None
        lengths = rows.lengths
        count = len(lengths)
        if (not 0 < count <= max_count or first_counter + count > 2**64 - 1
                or (mtu and max(lengths) > mtu)):
            return None
        padded = [n + padding(n, mtu) for n in lengths]
        size = MESSAGE_MIN + padded[0]
        out = bytearray(size * (count - 1) + MESSAGE_MIN + padded[-1])
        plain = bytearray(padded[0] * count)  # row i at i * padded[0], zero past the segment
        for i, n in enumerate(lengths):
            plain[i * padded[0] : i * padded[0] + n] = rows.row(i)
        self.seal_run(plain, padded[0], count, padded[0], padded[-1], remote_index,
                      first_counter, out)
        return out, size, count


class PyOpener:
    """The reference of ``_datapath.Opener``."""

    def __init__(self, key: bytes) -> None:
        self._aead = ChaCha20Poly1305(key)

    def open(self, counter: int, ciphertext: Buffer) -> bytes | None:
        try:
            return self._aead.decrypt(nonce(counter), bytes(ciphertext), None)
        except InvalidTag:
            return None

    def open_into(self, counter: int, ciphertext: Buffer, out: Buffer) -> bool:
        sealed, dst = memoryview(ciphertext), memoryview(out)
        if len(sealed) < TAG_SIZE or len(dst) != len(sealed) - TAG_SIZE:
            raise ValueError("open_into: wrong lengths")
        try:
            self._aead.decrypt_into(nonce(counter), sealed, None, dst)
        except InvalidTag:
            dst[:] = bytes(len(dst))
            return False
        return True

    def open_run(
        self, data: Buffer, size: int, prefix: int, out: Buffer, stride: int
    ) -> tuple[list[int], list[int]] | None:
        """Transport messages ``size`` bytes apart (the last possibly shorter), each
        starting with the 8 bytes ``prefix`` (else None, nothing done), opened into the
        rows of ``out``; their counters and the rows that did not authenticate (zero)."""
        view, rows = memoryview(data), memoryview(out)
        if size < MESSAGE_MIN or stride < size - MESSAGE_MIN or len(view) < MESSAGE_MIN:
            raise ValueError("open_run: inconsistent sizes")
        count = -(-len(view) // size)
        if len(rows) < count * stride:
            raise ValueError("open_run: the rows buffer is too small")
        starts = range(0, len(view), size)
        if len(view) - starts[-1] < MESSAGE_MIN or any(
            _PREFIX.unpack_from(view, start)[0] != prefix for start in starts
        ):
            return None
        counters: list[int] = []
        failed: list[int] = []
        for i, start in enumerate(starts):
            end = min(start + size, len(view))
            counter = _HEADER.unpack_from(view, start)[2]
            counters.append(counter)
            n = end - start - MESSAGE_MIN
            if not self.open_into(counter, view[start + HEADER_SIZE : end],
                                  rows[i * stride : i * stride + n]):
                failed.append(i)
        return counters, failed


_native = native.datapath
new_sealer: Callable[[bytes], Sealer] = _native.Sealer if _native is not None else PySealer
new_opener: Callable[[bytes], Opener] = _native.Opener if _native is not None else PyOpener
