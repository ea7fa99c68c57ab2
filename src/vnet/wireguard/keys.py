"""Transport keypairs (whitepaper §5.4.5): one pair of ChaCha20-Poly1305 keys per session."""

from __future__ import annotations

import struct

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from vnet.packet.rows import PacketRows
from vnet.wireguard.constants import REJECT_AFTER_MESSAGES, REJECT_AFTER_TIME
from vnet.wireguard.crypto import DecryptError
from vnet.wireguard.messages import TRANSPORT_HEADER_SIZE, TRANSPORT_MIN_SIZE
from vnet.wireguard.replay import ReplayFilter

_NONCE = struct.Struct("<4xQ")


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

    def seal_into(
        self, counter: int, plaintext: bytes | bytearray | memoryview, out: bytearray | memoryview
    ) -> None:
        """``seal`` written into ``out`` (exactly len(plaintext) + 16 bytes)."""
        self._send.encrypt_into(_NONCE.pack(counter), plaintext, None, out)

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
        failed: list[int] = []
        start = row = 0
        for i, counter in enumerate(counters):
            end = min(start + size, total)
            n = end - start - TRANSPORT_MIN_SIZE
            try:
                message = data[start + TRANSPORT_HEADER_SIZE : end]
                decrypt(nonce(counter), message, None, out[row : row + n])
            except InvalidTag:
                failed.append(i)
                out[row : row + n] = bytes(n)
            start += size
            row += stride
        return failed

    def open(self, counter: int, ciphertext: bytes | bytearray | memoryview) -> bytes:
        try:
            return self._recv.decrypt(_NONCE.pack(counter), ciphertext, None)
        except InvalidTag:
            raise DecryptError("transport data did not authenticate") from None
