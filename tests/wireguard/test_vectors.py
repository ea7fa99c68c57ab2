"""Published test vectors for every primitive the protocol composes."""

from __future__ import annotations

import contextlib
import hashlib

import pytest
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from hypothesis import given
from hypothesis import strategies as st

from vnet.wireguard import crypto, tai64n

RFC8439_PLAINTEXT = (b"Ladies and Gentlemen of the class of '99: If I could offer you only one "
                     b"tip for the future, sunscreen would be it.")
KEY_80 = bytes(range(0x80, 0xA0))
AAD = bytes.fromhex("50515253c0c1c2c3c4c5c6c7")


@pytest.mark.parametrize(("key", "data", "t0", "t1", "t2"), [
    # wireguard-go device/kdf_test.go
    ("746573742d6b6579", "746573742d696e707574",
     "6f0e5ad38daba1bea8a0d213688736f19763239305e0f58aba697f9ffc41c633",
     "df1194df20802a4fe594cde27e92991c8cae66c366e8106aaa937a55fa371e8a",
     "fac6e2745a325f5dc5d11a5b165aad08b0ada28e7b4e666b7c077934a4d76c24"),
    ("776972656775617264", "776972656775617264",
     "491d43bbfdaa8750aaf535e334ecbfe5129967cd64635101c566d4caefda96e8",
     "1e71a379baefd8a79aa4662212fcafe19a23e2b609a3db7d6bcba8f560e3d25f",
     "31e1ae48bddfbe5de38f295e5452b1909a1b4e38e183926af3780b0c1e1f0160"),
    ("", "",
     "8387b46bf43eccfcf349552a095d8315c4055beb90208fb1be23b894bc2ed5d0",
     "58a0e5f6faefccf4807bff1f05fa8a9217945762040bcec2f4b4a62bdfe0e86e",
     "0ce6ea98ec548f8e281e93e32db65621c45eb18dc6f0a7ad94178610a2f7338e"),
])
def test_kdf_vectors(key: str, data: str, t0: str, t1: str, t2: str) -> None:
    k, d = bytes.fromhex(key), bytes.fromhex(data)
    assert [x.hex() for x in crypto.kdf3(k, d)] == [t0, t1, t2]
    assert [x.hex() for x in crypto.kdf2(k, d)] == [t0, t1]
    assert crypto.kdf1(k, d).hex() == t0


def test_x25519_rfc7748_section_6_1() -> None:
    a_priv = bytes.fromhex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
    b_priv = bytes.fromhex("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb")
    a_pub = crypto.public_key(a_priv)
    b_pub = crypto.public_key(b_priv)
    assert a_pub.hex() == "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"
    assert b_pub.hex() == "de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f"
    shared = "4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742"
    assert crypto.dh(a_priv, b_pub).hex() == shared == crypto.dh(b_priv, a_pub).hex()


def test_x25519_refuses_low_order_points() -> None:
    from vnet.errors import ProtocolError

    with pytest.raises(ProtocolError):
        crypto.dh(bytes(range(32)), bytes(32))


def test_chacha20poly1305_rfc8439_section_2_8_2() -> None:
    nonce = bytes.fromhex("070000004041424344454647")
    out = ChaCha20Poly1305(KEY_80).encrypt(nonce, RFC8439_PLAINTEXT, AAD)
    assert out[:16].hex() == "d31a8d34648e60db7b86afbc53ef7ec2"
    assert out[-16:].hex() == "1ae10b594f09e26a7e902ecbd0600691"


def test_transport_nonce_layout() -> None:
    # 32 zero bits, then the 64-bit counter little-endian (whitepaper §5.4.6)
    assert crypto.nonce(1) == bytes(4) + (1).to_bytes(8, "little")
    key = bytes(32)
    sealed = crypto.aead_encrypt(key, 7, b"hi", b"ad")
    assert ChaCha20Poly1305(key).decrypt(bytes(4) + (7).to_bytes(8, "little"), sealed, b"ad")
    assert crypto.aead_decrypt(key, 7, sealed, b"ad") == b"hi"
    with pytest.raises(crypto.DecryptError):
        crypto.aead_decrypt(key, 8, sealed, b"ad")


def test_xchacha20poly1305_draft_vector() -> None:
    # draft-irtf-cfrg-xchacha-03 §A.3.1
    nonce = bytes.fromhex("404142434445464748494a4b4c4d4e4f5051525354555657")
    out = crypto.xaead_encrypt(KEY_80, nonce, RFC8439_PLAINTEXT, AAD)
    assert out[:16].hex() == "bd6d179d3e83d43b9576579493c0e939"
    assert out[-16:].hex() == "c0875924c1c7987947deafd8780acf49"
    assert crypto.xaead_decrypt(KEY_80, nonce, out, AAD) == RFC8439_PLAINTEXT


def test_blake2s_rfc7693_and_keyed_mac() -> None:
    assert crypto.hash_(b"abc").hex() == (
        "508c5e8c327c14e2e1a72ba34eeb452f37458b209ed63a294d999b4c86675982")
    assert crypto.mac(b"k", b"x") == hashlib.blake2s(b"x", key=b"k", digest_size=16).digest()


def test_initial_chaining_key_and_hash() -> None:
    from vnet.wireguard import noise

    # Both are fixed by the construction and identifier strings (whitepaper §5.4)
    assert hashlib.blake2s(
        b"Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s").digest() == noise.INITIAL_CHAIN_KEY
    ident = b"WireGuard v1 zx2c4 Jason@zx2c4.com"
    assert hashlib.blake2s(noise.INITIAL_CHAIN_KEY + ident).digest() == noise.INITIAL_HASH


def test_tai64n_orders_and_whitens() -> None:
    a = tai64n.encode(1_700_000_000.0)
    b = tai64n.encode(1_700_000_000.5)
    assert len(a) == 12 and tai64n.after(b, a) and not tai64n.after(a, a)
    assert int.from_bytes(a[:8], "big") == 0x400000000000000A + 1_700_000_000
    assert int.from_bytes(b[8:], "big") % tai64n.WHITENING == 0


@given(st.binary(max_size=200))
def test_message_decoders_raise_only_message_error(data: bytes) -> None:
    from vnet.wireguard import messages

    for decode in (messages.message_type, messages.Initiation.decode, messages.Response.decode,
                   messages.CookieReply.decode, messages.decode_transport):
        with contextlib.suppress(messages.MessageError):
            decode(data)
