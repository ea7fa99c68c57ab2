"""Wire formats (whitepaper §5.4.2-§5.4.7). Little-endian indices and counters.

Decoders raise ``MessageError`` (a ProtocolError) on anything malformed.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from vnet.errors import ProtocolError
from vnet.wireguard.constants import (
    MESSAGE_COOKIE_REPLY,
    MESSAGE_INITIATION,
    MESSAGE_RESPONSE,
    MESSAGE_TRANSPORT,
    PADDING_MULTIPLE,
)

INITIATION_SIZE = 148
RESPONSE_SIZE = 92
COOKIE_REPLY_SIZE = 64
TRANSPORT_HEADER_SIZE = 16
TRANSPORT_MIN_SIZE = TRANSPORT_HEADER_SIZE + 16  # header + Poly1305 tag (keepalive)
MAC_SIZE = 16

_INIT = struct.Struct("<I I 32s 48s 28s 16s 16s")
_RESP = struct.Struct("<I I I 32s 16s 16s 16s")
_COOKIE = struct.Struct("<I I 24s 32s")
TRANSPORT_HEADER = struct.Struct("<I I Q")


_SIZES = {
    MESSAGE_INITIATION: INITIATION_SIZE,
    MESSAGE_RESPONSE: RESPONSE_SIZE,
    MESSAGE_COOKIE_REPLY: COOKIE_REPLY_SIZE,
}


class MessageError(ProtocolError):
    """Bytes that are not a well-formed WireGuard message."""


def message_type(data: bytes | bytearray | memoryview) -> int:
    """The type of a datagram, after checking its size matches that type."""
    if len(data) < 4:
        raise MessageError(f"datagram of {len(data)} bytes is too short for a message")
    head = int.from_bytes(data[:4], "little")
    kind, reserved = head & 0xFF, head >> 8
    if reserved:
        raise MessageError("reserved bytes are not zero")
    expected = _SIZES.get(kind)
    if expected is not None:
        if len(data) != expected:
            raise MessageError(f"message type {kind} must be {expected} bytes, got {len(data)}")
    elif kind == MESSAGE_TRANSPORT:
        if len(data) < TRANSPORT_MIN_SIZE:
            raise MessageError(f"transport message of {len(data)} bytes is too short")
    else:
        raise MessageError(f"unknown message type {kind}")
    return kind


def wireguard_datagrams(data: bytes | bytearray | memoryview, size: int) -> list[int]:
    """Of the datagrams of ``size`` bytes back to back in ``data`` (the last may be
    shorter), the indices of those ``message_type`` takes. The reference of the native
    call of the same name, which the receive path uses to drop a flood in one step."""
    view = memoryview(data)
    out = []
    for i, start in enumerate(range(0, len(view), size)):
        try:
            message_type(view[start : start + size])
        except MessageError:
            continue
        out.append(i)
    return out


@dataclass(frozen=True, slots=True)
class Initiation:
    sender: int
    ephemeral: bytes
    encrypted_static: bytes
    encrypted_timestamp: bytes
    mac1: bytes = bytes(16)
    mac2: bytes = bytes(16)

    def encode(self) -> bytes:
        return _INIT.pack(
            MESSAGE_INITIATION,
            self.sender,
            self.ephemeral,
            self.encrypted_static,
            self.encrypted_timestamp,
            self.mac1,
            self.mac2,
        )

    @classmethod
    def decode(cls, data: bytes | bytearray | memoryview) -> Initiation:
        if len(data) != INITIATION_SIZE or message_type(data) != MESSAGE_INITIATION:
            raise MessageError("not a handshake initiation")
        _, sender, eph, static, ts, m1, m2 = _INIT.unpack(data)
        return cls(sender, eph, static, ts, m1, m2)


@dataclass(frozen=True, slots=True)
class Response:
    sender: int
    receiver: int
    ephemeral: bytes
    encrypted_nothing: bytes
    mac1: bytes = bytes(16)
    mac2: bytes = bytes(16)

    def encode(self) -> bytes:
        return _RESP.pack(
            MESSAGE_RESPONSE,
            self.sender,
            self.receiver,
            self.ephemeral,
            self.encrypted_nothing,
            self.mac1,
            self.mac2,
        )

    @classmethod
    def decode(cls, data: bytes | bytearray | memoryview) -> Response:
        if len(data) != RESPONSE_SIZE or message_type(data) != MESSAGE_RESPONSE:
            raise MessageError("not a handshake response")
        _, sender, receiver, eph, nothing, m1, m2 = _RESP.unpack(data)
        return cls(sender, receiver, eph, nothing, m1, m2)


@dataclass(frozen=True, slots=True)
class CookieReply:
    receiver: int
    nonce: bytes
    encrypted_cookie: bytes

    def encode(self) -> bytes:
        return _COOKIE.pack(MESSAGE_COOKIE_REPLY, self.receiver, self.nonce, self.encrypted_cookie)

    @classmethod
    def decode(cls, data: bytes | bytearray | memoryview) -> CookieReply:
        if len(data) != COOKIE_REPLY_SIZE or message_type(data) != MESSAGE_COOKIE_REPLY:
            raise MessageError("not a cookie reply")
        _, receiver, nonce, cookie = _COOKIE.unpack(data)
        return cls(receiver, nonce, cookie)


def transport_header(receiver: int, counter: int) -> bytes:
    return TRANSPORT_HEADER.pack(MESSAGE_TRANSPORT, receiver, counter)


def decode_transport(data: bytes | bytearray | memoryview) -> tuple[int, int]:
    """(receiver index, counter) of a transport message; the ciphertext follows byte 16."""
    if len(data) < TRANSPORT_MIN_SIZE or message_type(data) != MESSAGE_TRANSPORT:
        raise MessageError("not a transport message")
    _, receiver, counter = TRANSPORT_HEADER.unpack_from(data)
    return receiver, counter


def macs_offsets(size: int) -> tuple[int, int]:
    """Where mac1 and mac2 start in a handshake message of ``size`` bytes."""
    return size - 2 * MAC_SIZE, size - MAC_SIZE


def padding(length: int, mtu: int) -> int:
    """Bytes of zero padding: up to a multiple of 16, but never past the MTU (§5.4.6)."""
    last = length % mtu if mtu and length > mtu else length
    padded = (last + PADDING_MULTIPLE - 1) & ~(PADDING_MULTIPLE - 1)
    if mtu and padded > mtu:
        padded = mtu
    return padded - last
