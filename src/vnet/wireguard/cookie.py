"""mac1, mac2 and cookie replies (whitepaper §5.4.4, §5.4.7): DoS mitigation.

mac1 proves the sender knows our public key; it is always checked. Under
load, mac2 must also be valid: it is keyed with a cookie bound to the
sender's address that only we can mint, handed out in an XChaCha20-Poly1305
sealed cookie reply.
"""

from __future__ import annotations

from vnet.wireguard.constants import COOKIE_REFRESH_TIME, LABEL_COOKIE, LABEL_MAC1
from vnet.wireguard.crypto import (
    DecryptError,
    equal,
    hash_,
    mac,
    xaead_decrypt,
    xaead_encrypt,
)
from vnet.wireguard.messages import MAC_SIZE, CookieReply, macs_offsets

ZERO_MAC = bytes(MAC_SIZE)


class CookieChecker:
    """The receiving side, keyed by our own static public key."""

    def __init__(self, local_public: bytes) -> None:
        self.mac1_key = hash_(LABEL_MAC1 + local_public)
        self.encryption_key = hash_(LABEL_COOKIE + local_public)
        self._secret = b""
        self._secret_born: float | None = None

    def check_mac1(self, msg: bytes) -> bool:
        mac1_at, _ = macs_offsets(len(msg))
        return equal(mac(self.mac1_key, msg[:mac1_at]), msg[mac1_at : mac1_at + MAC_SIZE])

    def _cookie(self, source: bytes, now: float, random: bytes) -> bytes:
        born = self._secret_born
        if born is None or now - born >= COOKIE_REFRESH_TIME:
            self._secret = random
            self._secret_born = now
        return mac(self._secret, source)

    def check_mac2(self, msg: bytes, source: bytes, now: float) -> bool:
        born = self._secret_born
        if born is None or now - born >= COOKIE_REFRESH_TIME:
            return False
        _, mac2_at = macs_offsets(len(msg))
        return equal(mac(mac(self._secret, source), msg[:mac2_at]), msg[mac2_at:])

    def create_reply(
        self,
        msg: bytes,
        receiver: int,
        source: bytes,
        now: float,
        secret_random: bytes,
        nonce: bytes,
    ) -> CookieReply:
        """A cookie for ``source`` sealed to the mac1 of the message that asked for it."""
        mac1_at, _ = macs_offsets(len(msg))
        cookie = self._cookie(source, now, secret_random)
        sealed = xaead_encrypt(
            self.encryption_key, nonce, cookie, msg[mac1_at : mac1_at + MAC_SIZE]
        )
        return CookieReply(receiver, nonce, sealed)


class CookieGenerator:
    """The sending side for one peer, keyed by that peer's static public key."""

    def __init__(self, remote_public: bytes) -> None:
        self.mac1_key = hash_(LABEL_MAC1 + remote_public)
        self.decryption_key = hash_(LABEL_COOKIE + remote_public)
        self.cookie = b""
        self.cookie_time: float | None = None
        self.last_mac1 = b""

    def add_macs(self, msg: bytes, now: float) -> bytes:
        mac1_at, mac2_at = macs_offsets(len(msg))
        mac1 = mac(self.mac1_key, msg[:mac1_at])
        self.last_mac1 = mac1
        body = msg[:mac1_at] + mac1
        if (
            self.cookie
            and self.cookie_time is not None
            and (now - self.cookie_time < COOKIE_REFRESH_TIME)
        ):
            return body + mac(self.cookie, body[:mac2_at])
        return body + ZERO_MAC

    def consume_reply(self, reply: CookieReply, now: float) -> None:
        """Store the cookie (raises DecryptError when it is not for our last mac1)."""
        if not self.last_mac1:
            raise DecryptError("cookie reply without a handshake message of ours")
        self.cookie = xaead_decrypt(
            self.decryption_key, reply.nonce, reply.encrypted_cookie, self.last_mac1
        )
        self.cookie_time = now
