"""The Noise_IKpsk2 handshake (whitepaper §5.4.2-§5.4.5).

Functions take the local static identity and a peer's ``Handshake`` state
and return messages or derived keys. Randomness (ephemeral keys) and time
(TAI64N timestamps, ``now``) are passed in.
"""

from __future__ import annotations

import contextlib
import enum
from dataclasses import dataclass, field

from vnet.errors import ProtocolError
from vnet.wireguard import crypto, tai64n
from vnet.wireguard.constants import CONSTRUCTION, HANDSHAKE_INITIATION_RATE, IDENTIFIER
from vnet.wireguard.crypto import aead_decrypt, aead_encrypt, dh, hash_, kdf1, kdf2, kdf3
from vnet.wireguard.keys import Keypair
from vnet.wireguard.messages import Initiation, Response

INITIAL_CHAIN_KEY = hash_(CONSTRUCTION)
INITIAL_HASH = hash_(INITIAL_CHAIN_KEY + IDENTIFIER)


class HandshakeError(ProtocolError):
    """A handshake message that fails authentication or the protocol's rules."""


class State(enum.Enum):
    ZEROED = 0
    INITIATION_CREATED = 1
    INITIATION_CONSUMED = 2
    RESPONSE_CREATED = 3
    RESPONSE_CONSUMED = 4


@dataclass
class Identity:
    """The local static key pair."""

    private: bytes
    public: bytes

    @classmethod
    def from_private(cls, private: bytes) -> Identity:
        return cls(private, crypto.public_key(private))


@dataclass
class Handshake:
    """Per-peer handshake state."""

    remote_static: bytes
    preshared_key: bytes = bytes(32)
    precomputed_static_static: bytes = bytes(32)
    state: State = State.ZEROED
    hash: bytes = b""
    chaining_key: bytes = b""
    local_ephemeral: bytes = b""
    remote_ephemeral: bytes = b""
    local_index: int = 0
    remote_index: int = 0
    last_timestamp: bytes = bytes(12)
    last_initiation_consumed: float | None = None
    last_sent: float | None = None  # for the REKEY_TIMEOUT send rate limit
    remote_static_hash: bytes = field(default=b"", repr=False)

    def precompute(self, identity: Identity | None) -> None:
        """DH(S_priv_local, S_pub_remote); all zeros (refused) when there is no identity."""
        self.precomputed_static_static = bytes(32)
        if identity is None:
            return
        # a low-order public key leaves zeros: handshakes with it are refused
        with contextlib.suppress(ProtocolError):
            self.precomputed_static_static = dh(identity.private, self.remote_static)

    def zero(self) -> None:
        self.state = State.ZEROED
        self.hash = self.chaining_key = self.local_ephemeral = self.remote_ephemeral = b""
        self.local_index = self.remote_index = 0


def _mix_hash(h: bytes, data: bytes) -> bytes:
    return hash_(h + data)


def create_initiation(
    identity: Identity, hs: Handshake, local_index: int, ephemeral_private: bytes, unix_time: float
) -> Initiation:
    """Initiator, first message. MACs are added by the cookie layer."""
    if hs.precomputed_static_static == bytes(32):
        raise HandshakeError("no usable static-static key for this peer")
    h = _mix_hash(INITIAL_HASH, hs.remote_static)
    ck = INITIAL_CHAIN_KEY
    e_pub = crypto.public_key(ephemeral_private)
    ck = kdf1(ck, e_pub)
    h = _mix_hash(h, e_pub)
    ck, key = kdf2(ck, dh(ephemeral_private, hs.remote_static))
    encrypted_static = aead_encrypt(key, 0, identity.public, h)
    h = _mix_hash(h, encrypted_static)
    ck, key = kdf2(ck, hs.precomputed_static_static)
    encrypted_timestamp = aead_encrypt(key, 0, tai64n.encode(unix_time), h)
    h = _mix_hash(h, encrypted_timestamp)
    hs.state = State.INITIATION_CREATED
    hs.hash, hs.chaining_key = h, ck
    hs.local_ephemeral = ephemeral_private
    hs.local_index = local_index
    return Initiation(local_index, e_pub, encrypted_static, encrypted_timestamp)


@dataclass
class DecodedInitiation:
    """What the responder learns before it knows whether the sender is a peer."""

    remote_static: bytes
    hash: bytes
    chaining_key: bytes
    ephemeral: bytes
    sender: int
    encrypted_timestamp: bytes


def open_initiation(identity: Identity, msg: Initiation) -> DecodedInitiation:
    """Responder, step 1: recover the initiator's static key (identifies the peer)."""
    h = _mix_hash(INITIAL_HASH, identity.public)
    ck = kdf1(INITIAL_CHAIN_KEY, msg.ephemeral)
    h = _mix_hash(h, msg.ephemeral)
    ck, key = kdf2(ck, dh(identity.private, msg.ephemeral))
    remote_static = aead_decrypt(key, 0, msg.encrypted_static, h)
    h = _mix_hash(h, msg.encrypted_static)
    return DecodedInitiation(
        remote_static, h, ck, msg.ephemeral, msg.sender, msg.encrypted_timestamp
    )


def consume_initiation(hs: Handshake, decoded: DecodedInitiation, now: float) -> None:
    """Responder, step 2, for the peer found: check the timestamp and rate, keep state."""
    if hs.precomputed_static_static == bytes(32):
        raise HandshakeError("no usable static-static key for this peer")
    ck, key = kdf2(decoded.chaining_key, hs.precomputed_static_static)
    timestamp = aead_decrypt(key, 0, decoded.encrypted_timestamp, decoded.hash)
    h = _mix_hash(decoded.hash, decoded.encrypted_timestamp)
    if not tai64n.after(timestamp, hs.last_timestamp):
        raise HandshakeError("replayed or stale initiation (timestamp not newer)")
    last = hs.last_initiation_consumed
    if last is not None and now - last <= HANDSHAKE_INITIATION_RATE:
        raise HandshakeError("initiation flood from this peer")
    hs.state = State.INITIATION_CONSUMED
    hs.hash, hs.chaining_key = h, ck
    hs.remote_ephemeral = decoded.ephemeral
    hs.remote_index = decoded.sender
    hs.last_timestamp = timestamp
    hs.last_initiation_consumed = now


def create_response(hs: Handshake, local_index: int, ephemeral_private: bytes) -> Response:
    if hs.state is not State.INITIATION_CONSUMED:
        raise HandshakeError("no consumed initiation to respond to")
    e_pub = crypto.public_key(ephemeral_private)
    ck = kdf1(hs.chaining_key, e_pub)
    h = _mix_hash(hs.hash, e_pub)
    ck = kdf1(ck, dh(ephemeral_private, hs.remote_ephemeral))
    ck = kdf1(ck, dh(ephemeral_private, hs.remote_static))
    ck, tau, key = kdf3(ck, hs.preshared_key)
    h = _mix_hash(h, tau)
    encrypted_nothing = aead_encrypt(key, 0, b"", h)
    h = _mix_hash(h, encrypted_nothing)
    hs.state = State.RESPONSE_CREATED
    hs.hash, hs.chaining_key = h, ck
    hs.local_ephemeral = ephemeral_private
    hs.local_index = local_index
    return Response(local_index, hs.remote_index, e_pub, encrypted_nothing)


def consume_response(identity: Identity, hs: Handshake, msg: Response) -> None:
    if hs.state is not State.INITIATION_CREATED or msg.receiver != hs.local_index:
        raise HandshakeError("response to no initiation of ours")
    ck = kdf1(hs.chaining_key, msg.ephemeral)
    h = _mix_hash(hs.hash, msg.ephemeral)
    ck = kdf1(ck, dh(hs.local_ephemeral, msg.ephemeral))
    ck = kdf1(ck, dh(identity.private, msg.ephemeral))
    ck, tau, key = kdf3(ck, hs.preshared_key)
    h = _mix_hash(h, tau)
    aead_decrypt(key, 0, msg.encrypted_nothing, h)
    h = _mix_hash(h, msg.encrypted_nothing)
    hs.state = State.RESPONSE_CONSUMED
    hs.hash, hs.chaining_key = h, ck
    hs.remote_index = msg.sender


def derive_keypair(hs: Handshake, now: float) -> Keypair:
    """§5.4.5: split the chaining key into the two transport keys, then forget it all."""
    if hs.state is State.RESPONSE_CONSUMED:
        send, recv = kdf2(hs.chaining_key, b"")
        initiator = True
    elif hs.state is State.RESPONSE_CREATED:
        recv, send = kdf2(hs.chaining_key, b"")
        initiator = False
    else:
        raise HandshakeError("no completed handshake to derive keys from")
    keypair = Keypair(
        send,
        recv,
        is_initiator=initiator,
        created=now,
        local_index=hs.local_index,
        remote_index=hs.remote_index,
    )
    hs.zero()
    return keypair
