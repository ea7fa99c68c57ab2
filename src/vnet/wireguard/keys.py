"""Transport keypairs (whitepaper §5.4.5): one pair of ChaCha20-Poly1305 keys per session."""

from __future__ import annotations

import struct

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from vnet.packet.rows import PacketRows
from vnet.wireguard.constants import MESSAGE_TRANSPORT, REJECT_AFTER_MESSAGES, REJECT_AFTER_TIME
from vnet.wireguard.crypto import DecryptError
from vnet.wireguard.messages import (
    TRANSPORT_HEADER,
    TRANSPORT_HEADER_SIZE,
    TRANSPORT_MIN_SIZE,
)
from vnet.wireguard.replay import ReplayFilter

_NONCE = struct.Struct("<4xQ")
_HEADER = TRANSPORT_HEADER
TAG_SIZE = TRANSPORT_MIN_SIZE - TRANSPORT_HEADER_SIZE  # Poly1305


class Keypair:
    __slots__ = (
        "_recv",
        "_send",
        "created",
        "is_initiator",
        "local_index",
        "remote_index",
        "replay",
        "send_counter",
    )

    def __init__(
        self,
        send_key: bytes,
        recv_key: bytes,
        *,
        is_initiator: bool,
        created: float,
        local_index: int,
        remote_index: int,
    ) -> None:
        self._send = ChaCha20Poly1305(send_key)
        self._recv = ChaCha20Poly1305(recv_key)
        self.is_initiator = is_initiator
        self.created = created
        self.local_index = local_index
        self.remote_index = remote_index
        self.send_counter = 0
        self.replay = ReplayFilter()

    def can_send(self, now: float) -> bool:
        return now - self.created < REJECT_AFTER_TIME and self.send_counter < REJECT_AFTER_MESSAGES

    def can_receive(self, now: float) -> bool:
        return now - self.created < REJECT_AFTER_TIME

    def next_counter(self) -> int:
        counter = self.send_counter
        self.send_counter += 1
        return counter

    def seal(self, counter: int, plaintext: bytes | bytearray | memoryview) -> bytes:
        return self._send.encrypt(_NONCE.pack(counter), plaintext, None)

    def seal_run(self, rows: PacketRows, padded: int, last: int) -> tuple[bytearray, int]:
        """Every row as one transport message (row i: ``padded`` bytes, the last row
        ``last``, padding already in place), back to back in one buffer for one GSO send;
        returns it and the message size. Uses the next len(rows) counters."""
        count = len(rows)
        size = TRANSPORT_MIN_SIZE + padded
        out = bytearray(size * (count - 1) + TRANSPORT_MIN_SIZE + last)
        view = memoryview(out)
        plain = memoryview(rows.buf)
        stride = rows.stride
        first = self.send_counter
        self.send_counter += count
        header = _HEADER.pack_into
        remote = self.remote_index
        encrypt = self._send.encrypt_into
        nonce = _NONCE.pack
        sealed = padded + TAG_SIZE
        end = first + count - 1
        # the loop is most of the send path: ranges instead of per-message arithmetic
        for counter, row, start in zip(
            range(first, end),
            range(0, count * stride, stride),
            range(0, len(out), size),
            strict=False,
        ):
            header(out, start, MESSAGE_TRANSPORT, remote, counter)
            message = view[start + TRANSPORT_HEADER_SIZE : start + TRANSPORT_HEADER_SIZE + sealed]
            encrypt(nonce(counter), plain[row : row + padded], None, message)
        start = (count - 1) * size
        row = (count - 1) * stride
        header(out, start, MESSAGE_TRANSPORT, remote, end)
        encrypt(nonce(end), plain[row : row + last], None, view[start + TRANSPORT_HEADER_SIZE :])
        return out, size

    def open_into(
        self, counter: int, ciphertext: bytes | bytearray | memoryview, out: bytearray | memoryview
    ) -> None:
        """``open`` written into ``out`` (exactly len(ciphertext) - 16 bytes)."""
        try:
            self._recv.decrypt_into(_NONCE.pack(counter), ciphertext, None, out)
        except InvalidTag:
            raise DecryptError("transport data did not authenticate") from None

    def open_rows(
        self, data: memoryview, size: int, counters: list[int], rows: PacketRows
    ) -> list[int]:
        """Open transport message i of a run (``size`` bytes apart, the last possibly
        shorter) into row i; return the indices that did not authenticate (their rows are
        left zero). One tight loop: this is most of the receive path."""
        decrypt = self._recv.decrypt_into
        nonce = _NONCE.pack
        out = memoryview(rows.buf)
        stride = rows.stride
        total = len(data)
        count = len(counters)
        sealed = size - TRANSPORT_HEADER_SIZE
        n = sealed - TAG_SIZE
        failed: list[int] = []
        for i, counter, start, row in zip(
            range(count - 1),
            counters,
            range(TRANSPORT_HEADER_SIZE, total, size),
            range(0, count * stride, stride),
            strict=False,  # counters, messages, rows: the last is opened after the loop
        ):
            try:
                decrypt(nonce(counter), data[start : start + sealed], None, out[row : row + n])
            except InvalidTag:
                failed.append(i)
                out[row : row + n] = bytes(n)
        start = (count - 1) * size + TRANSPORT_HEADER_SIZE
        row = (count - 1) * stride
        n = total - start - TAG_SIZE
        try:
            decrypt(nonce(counters[-1]), data[start:], None, out[row : row + n])
        except InvalidTag:
            failed.append(count - 1)
            out[row : row + n] = bytes(n)
        return failed

    def open(self, counter: int, ciphertext: bytes | bytearray | memoryview) -> bytes:
        try:
            return self._recv.decrypt(_NONCE.pack(counter), ciphertext, None)
        except InvalidTag:
            raise DecryptError("transport data did not authenticate") from None
