"""Transport keypairs (whitepaper §5.4.5): one pair of ChaCha20-Poly1305 keys per session."""

from __future__ import annotations

from vnet.packet.rows import PacketRows
from vnet.wireguard import aead
from vnet.wireguard.constants import REJECT_AFTER_MESSAGES, REJECT_AFTER_TIME
from vnet.wireguard.crypto import DecryptError
from vnet.wireguard.messages import TRANSPORT_MIN_SIZE
from vnet.wireguard.replay import ReplayFilter


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
        self._send = aead.new_sealer(send_key)
        self._recv = aead.new_opener(recv_key)
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
        return self._send.seal(counter, plaintext)

    def seal_message(self, counter: int, packet: bytes, mtu: int) -> bytes:
        """One whole transport message (§5.4.6): header, then ``packet`` padded (up to a
        multiple of 16, not past ``mtu``) and sealed with ``counter``."""
        return self._send.seal_message(packet, mtu, self.remote_index, counter)

    def seal_run(self, rows: PacketRows, padded: int, last: int) -> tuple[bytearray, int]:
        """Every row as one transport message (row i: ``padded`` bytes, the last row
        ``last``, padding already in place), back to back in one buffer for one GSO send;
        returns it and the message size. Uses the next len(rows) counters."""
        count = len(rows)
        size = TRANSPORT_MIN_SIZE + padded
        out = bytearray(size * (count - 1) + TRANSPORT_MIN_SIZE + last)
        first = self.send_counter
        self.send_counter += count
        self._send.seal_run(
            rows.buf, rows.stride, count, padded, last, self.remote_index, first, out
        )
        return out, size

    def seal_tso(
        self, packet: bytes | bytearray | memoryview, v4: bool, mss: int, mtu: int
    ) -> tuple[bytearray, int] | None:
        """A TSO super-packet split, padded and sealed in one call into one GSO send's
        buffer (``Sealer.seal_tso``): returns it and the message size, having used one
        counter per segment; None, nothing used, when the call declines the packet or
        the keypair has too few counters left."""
        first = self.send_counter
        done = self._send.seal_tso(
            packet, v4, mss, mtu, self.remote_index, first, REJECT_AFTER_MESSAGES - first
        )
        if done is None:
            return None
        out, size, count = done
        self.send_counter = first + count
        return out, size

    def open_into(
        self, counter: int, ciphertext: bytes | bytearray | memoryview, out: bytearray | memoryview
    ) -> None:
        """``open`` written into ``out`` (exactly len(ciphertext) - 16 bytes)."""
        if not self._recv.open_into(counter, ciphertext, out):
            raise DecryptError("transport data did not authenticate")

    def open_run(
        self, data: memoryview, size: int, prefix: int, rows: PacketRows
    ) -> tuple[list[int], list[int]] | None:
        """Open transport message i of a run (``size`` bytes apart, the last possibly
        shorter, each starting with the 8 bytes ``prefix``: type and receiver index) into
        row i. Returns the counters read and the rows that did not authenticate (left
        zero); None, with nothing done, when a message lacks the prefix or is too short."""
        return self._recv.open_run(data, size, prefix, rows.buf, rows.stride)

    def open(self, counter: int, ciphertext: bytes | bytearray | memoryview) -> bytes:
        plaintext = self._recv.open(counter, ciphertext)
        if plaintext is None:
            raise DecryptError("transport data did not authenticate")
        return plaintext
