"""The whitepaper's functions (§5.4) composed from maintained libraries.

X25519 and ChaCha20-Poly1305 come from pyca/cryptography, BLAKE2s from
hashlib, XChaCha20-Poly1305 from PyNaCl (libsodium). Nothing here implements
a primitive; it only wires them up as the protocol specifies.
"""

from __future__ import annotations

import hashlib
import hmac
import struct

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from nacl import bindings as sodium
from nacl.exceptions import CryptoError

from vnet.errors import ProtocolError

KEY_LEN = 32
TAG_LEN = 16
HASH_LEN = 32
ZERO_KEY = bytes(32)
_NONCE = struct.Struct("<4xQ")


class DecryptError(ProtocolError):
    """An AEAD tag did not verify: wrong key, or bytes altered on the way."""


def hash_(data: bytes) -> bytes:
    """HASH(input): BLAKE2s-256."""
    return hashlib.blake2s(data).digest()


def mac(key: bytes, data: bytes) -> bytes:
    """MAC(key, input): keyed BLAKE2s with a 16-byte digest."""
    return hashlib.blake2s(data, digest_size=16, key=key).digest()


def hmac_(key: bytes, data: bytes) -> bytes:
    """HMAC(key, input): HMAC over BLAKE2s-256 (RFC 2104)."""
    return hmac.new(key, data, hashlib.blake2s).digest()


def kdf(key: bytes, data: bytes, n: int) -> list[bytes]:
    """KDF_n(key, input): HKDF-style expansion into n 32-byte values."""
    t0 = hmac_(key, data)
    out: list[bytes] = []
    prev = b""
    for i in range(1, n + 1):
        prev = hmac_(t0, prev + bytes([i]))
        out.append(prev)
    return out


def kdf1(key: bytes, data: bytes) -> bytes:
    return kdf(key, data, 1)[0]


def kdf2(key: bytes, data: bytes) -> tuple[bytes, bytes]:
    a, b = kdf(key, data, 2)
    return a, b


def kdf3(key: bytes, data: bytes) -> tuple[bytes, bytes, bytes]:
    a, b, c = kdf(key, data, 3)
    return a, b, c


def nonce(counter: int) -> bytes:
    """The 96-bit ChaCha20-Poly1305 nonce: 32 zero bits, then the counter little-endian."""
    return _NONCE.pack(counter)


def aead_encrypt(key: bytes, counter: int, plaintext: bytes, aad: bytes) -> bytes:
    return ChaCha20Poly1305(key).encrypt(nonce(counter), plaintext, aad)


def aead_decrypt(key: bytes, counter: int, ciphertext: bytes, aad: bytes) -> bytes:
    try:
        return ChaCha20Poly1305(key).decrypt(nonce(counter), ciphertext, aad)
    except InvalidTag:
        raise DecryptError("authentication tag did not verify") from None


def xaead_encrypt(key: bytes, nonce24: bytes, plaintext: bytes, aad: bytes) -> bytes:
    """XAEAD: XChaCha20-Poly1305 with a 24-byte random nonce (cookie replies)."""
    out: bytes = sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(plaintext, aad, nonce24, key)
    return out


def xaead_decrypt(key: bytes, nonce24: bytes, ciphertext: bytes, aad: bytes) -> bytes:
    try:
        out: bytes = sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(
            ciphertext, aad, nonce24, key
        )
    except CryptoError:
        raise DecryptError("cookie reply did not authenticate") from None
    return out


def public_key(private: bytes) -> bytes:
    return (
        X25519PrivateKey.from_private_bytes(private)
        .public_key()
        .public_bytes(Encoding.Raw, PublicFormat.Raw)
    )


def generate_private_key(random: bytes) -> bytes:
    """Clamp 32 random bytes into a Curve25519 private key (as `wg genkey` does)."""
    if len(random) != 32:
        raise ValueError("need 32 random bytes")
    key = bytearray(random)
    key[0] &= 248
    key[31] = (key[31] & 127) | 64
    return bytes(key)


def dh(private: bytes, public: bytes) -> bytes:
    """DH(private, public): X25519. An all-zero result (low-order point) is refused."""
    try:
        shared = X25519PrivateKey.from_private_bytes(private).exchange(
            X25519PublicKey.from_public_bytes(public)
        )
    except ValueError:
        raise ProtocolError("X25519 with a low-order public key") from None
    return shared


def equal(a: bytes, b: bytes) -> bool:
    """Constant-time equality for secrets and MACs."""
    return hmac.compare_digest(a, b)


def exercise() -> None:
    """Call every primitive once. The libraries import parts of themselves on first use
    (cryptography's X25519 its backends module); a daemon about to drop root calls this
    first, since it may no longer be able to read them afterwards."""
    a, b = generate_private_key(bytes(range(32))), generate_private_key(bytes(range(1, 33)))
    shared = dh(a, public_key(b))
    key = kdf1(hash_(shared), mac(shared[:16], hmac_(shared, b"")))
    aead_decrypt(key, 1, aead_encrypt(key, 1, b"x", b""), b"")
    xaead_decrypt(key, bytes(24), xaead_encrypt(key, bytes(24), b"x", b""), b"")
